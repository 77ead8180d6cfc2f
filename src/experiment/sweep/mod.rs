//! `ibvae sweep`: one run per bottleneck strength (GD rates, VB weights) and per baseline,
//! each trained and evaluated exactly as `ibvae train` and `ibvae eval` would (each in its
//! own process, `--jobs` at a time), and `results.csv` with one row per run.
//!
//! The sweep writes each member's whole `config.json` (the sweep's settings with the
//! member's bottleneck, resolved as `ibvae train` resolves its flags) and starts
//! `ibvae train --run DIR --resume` on it: the config file is the only interface between
//! a sweep and its runs, so every setting of a run reaches every member. Starting the
//! same sweep again resumes the unfinished runs and skips the finished ones.
//!
//! [`plan`] resolves the members and their configs, [`members`] records them in the
//! sweep's directory, [`local`] runs them here and [`cluster`] submits them to SLURM
//! ([`slurm`]), [`status`] shows where they stand, and [`results`] is `results.csv`.

pub mod cluster;
pub mod local;
pub mod members;
pub mod plan;
pub mod results;
pub mod slurm;
pub mod status;

pub use plan::{Member, SweepPlan, members};
pub use results::ResultRow;

use crate::error::{Error, Result};

/// Runs the sweep, or with `--status` shows where it stands.
pub fn run(plan: SweepPlan) -> Result<()> {
    if plan.jobs == 0 {
        return Err(Error::Config("--jobs must be at least 1".into()));
    }
    if plan.status {
        return status::show(&plan.out, &members::recorded(&plan.out)?);
    }
    let runs = plan::planned_runs(&plan)?;
    if plan.slurm.is_none() && plan.device == crate::engine::DeviceChoice::Cpu {
        // --jobs runs at once, each as large as the largest.
        let largest = (runs.iter())
            .map(|r| crate::model::size::training_bytes(&r.config.model, r.config.train.batch))
            .max()
            .unwrap_or(0);
        crate::engine::memory::ensure_fits(
            &format!("training {} runs at once", plan.jobs),
            largest.saturating_mul(plan.jobs as u128),
            "lower --jobs, --batch or the model's sizes",
        )?;
    }
    // One sweep per directory, for as long as this process lives.
    let _lock = crate::io::lock::DirLock::acquire(&plan.out, "sweep")?;
    plan::check_saved_settings(&plan, &runs)?;
    if plan.tensorboard {
        hparams_experiment(&plan.out)?;
    }
    // Every run of the directory, this sweep's and earlier ones', for results.csv.
    let recorded = members::record(&plan.out, &plan.members)?;
    match &plan.slurm {
        Some(options) => cluster::submit(&plan, &runs, &recorded, options),
        None => local::run(&plan, &runs, &recorded),
    }
}

/// The sweep's own TensorBoard file, once: the experiment of the HParams tab, which sets
/// each run's bottleneck, strength, seed, image size and preset (written by the run) against
/// its test negative ELBO and KL, for `tensorboard --logdir` on the sweep's directory.
fn hparams_experiment(out: &std::path::Path) -> Result<()> {
    use crate::training::board::{HPARAM_KINDS, HPARAM_METRICS};
    if !crate::io::run_dir::RunDir::new(out)
        .event_files()?
        .is_empty()
    {
        return Ok(());
    }
    let mut writer = crate::io::tensorboard::EventWriter::create(out)?;
    writer.hparams_experiment(&HPARAM_KINDS, &HPARAM_METRICS)
}
