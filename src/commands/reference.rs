//! `ibvae verify-torch` and `ibvae import-torch`: files written by the PyTorch
//! reference's `export`.

use std::path::PathBuf;

use crate::config::{ExperimentConfig, Preset, TrainConfig};
use crate::engine::Runtime;
use crate::error::{Error, Result};
use crate::io::checkpoint::{Checkpoint, TrainState};
use crate::io::data;
use crate::io::run_dir::RunDir;
use crate::training::restore::stored_params;

/// What `ibvae verify-torch` was asked to check.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    pub file: PathBuf,
    pub json: bool,
    /// The device to check; threads default to the export's own thread count.
    pub runtime: Runtime,
}

/// What `ibvae import-torch` was asked to write.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub file: PathBuf,
    /// The run directory to create.
    pub out: PathBuf,
    /// The data directory the run will use [default: the default data directory].
    pub data: Option<PathBuf>,
}

pub fn verify(args: VerifyRequest) -> Result<()> {
    let runtime = Runtime {
        threads: args
            .runtime
            .threads
            .or(crate::io::reference::Export::read(&args.file)?.threads),
        ..args.runtime
    };
    let device = runtime.start()?;
    let v = crate::io::reference::verify(&args.file, device)?;
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&v).expect("report serialises")
        )?;
    } else {
        crate::outln!("{:<14} {:>14}", "tensor", "max rel error")?;
        for (name, err) in &v.max_rel_error {
            let flag = if *err <= v.tolerance { "" } else { "  FAIL" };
            crate::outln!("{name:<14} {err:>14.3e}{flag}")?;
        }
        crate::outln!(
            "negative ELBO per image (bits/dim): {}",
            v.per_image["elbo_bpd"]
                .iter()
                .map(|x| format!("{x:.5}"))
                .collect::<Vec<_>>()
                .join(" ")
        )?;
    }
    if v.ok {
        if !args.json {
            crate::outln!(
                "ok: every tensor within {:.0e} of the reference",
                v.tolerance
            )?;
        }
        Ok(())
    } else {
        Err(Error::Checkpoint(format!(
            "{} differs from ibvae by more than {:.0e} (relative) in at least one tensor",
            args.file.display(),
            v.tolerance
        )))
    }
}

pub fn import(args: ImportRequest) -> Result<()> {
    let device = crate::engine::cpu();
    let export = crate::io::reference::Export::read(&args.file)?;
    let model = export.model(&args.file.display().to_string(), device)?;
    let run = RunDir::new(&args.out);
    if run.has_config() {
        return Err(Error::Config(format!(
            "{} already holds a run; choose another --out (nothing was changed)",
            args.out.display()
        )));
    }
    // The export's model is authoritative; its preset only names the training settings
    // (an unknown one trains as `small`).
    let preset: Preset = export.preset.parse().unwrap_or(Preset::Small);
    let config = ExperimentConfig {
        preset,
        model: export.config.clone(),
        train: TrainConfig::for_preset(preset, args.data.unwrap_or_else(data::default_data_dir)),
    };
    run.write_config(&config)?;
    Checkpoint {
        config: Some(config.clone()),
        state: TrainState::fresh(),
        weights: stored_params(&model),
        adam: None,
        ema: None,
    }
    .save(&run)?;
    crate::outln!(
        "wrote {} ({} parameters, preset {}, bottleneck {}); try `ibvae eval --run {}`",
        args.out.display(),
        model.num_params(),
        export.preset,
        config.model.bottleneck,
        args.out.display()
    )?;
    Ok(())
}
