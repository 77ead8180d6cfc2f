//! `ibvae train`: a run from its flags (or its saved config), trained with Ctrl-C
//! stopping at a step boundary with a checkpoint.

use std::path::PathBuf;

use crate::config::{ExperimentConfig, Overrides};
use crate::engine::{Precision, Runtime};
use crate::error::{Error, Result};
use crate::io::data::{self, Dataset};
use crate::io::lock::DirLock;
use crate::io::run_dir::RunDir;
use crate::model::bottleneck::BottleneckSpec;
use crate::training::graph::GraphMode;
use crate::training::trainer::{Session, StartMode, prepare_run};

/// What `ibvae train` was asked to do.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    pub preset: crate::config::Preset,
    pub bottleneck: BottleneckSpec,
    /// The data directory [default: `$IBVAE_DATA`, else `~/.cache/ibvae/cifar10`].
    pub data: Option<PathBuf>,
    /// The run directory [default: `runs/<preset>-<bottleneck>`].
    pub run: Option<PathBuf>,
    pub overrides: Overrides,
    pub start: StartMode,
    pub runtime: Runtime,
    pub precision: Precision,
    /// `--cuda-graph`, if given.
    pub cuda_graph: Option<GraphMode>,
    /// Stop with a checkpoint after this many steps of this session (tests).
    pub stop_after: Option<u64>,
    /// Write TensorBoard event files into the run directory.
    pub tensorboard: bool,
}

pub fn run(args: TrainRequest) -> Result<()> {
    let device = args.runtime.start()?;
    let cuda_graph = GraphMode::resolve(args.cuda_graph, device)?;
    let run_path = args.run.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "{}-{}",
            args.preset,
            args.bottleneck.to_string().replace(':', "")
        ))
    });
    let run = RunDir::new(&run_path);
    let start = args.start;
    if start == StartMode::Resume && !run.has_config() {
        return Err(Error::Checkpoint(format!(
            "there is no run to resume in {} (no config.json); check the path, or leave out \
             --resume to start a new run there",
            run.path.display()
        )));
    }
    let (config, data) = config_and_data(&args, &run)?;
    // A schedule too long to count is refused before anything is written.
    config.train.total_steps(data.train.len())?;
    // So is one that cannot fit in memory.
    crate::training::ensure_trainable(&config.model, config.train.batch, device)?;
    // One trainer per run directory, for as long as this process lives; taken before
    // --force deletes anything.
    let _lock = DirLock::acquire(&run.path, "train")?;
    let config = prepare_run(&run, config, start)?;
    // Ctrl-C, SIGTERM, SIGUSR1 or SIGHUP: finish the step, save a checkpoint, stop.
    let stop = crate::signals::stop_flag()?;
    let n_train = data.train.len();
    crate::noteln!(
        "run {}: preset {} bottleneck {} ({} parameters), {} training and {} test images, \
         {} steps of {} ({} per epoch)",
        run.path.display(),
        config.preset,
        config.model.bottleneck,
        crate::model::size::param_count(&config.model),
        n_train,
        data.test.len(),
        config.train.total_steps(n_train)?,
        config.train.batch,
        config.train.steps_per_epoch(n_train)
    );
    let session = Session {
        device,
        precision: args.precision,
        cuda_graph,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        stop,
        max_session_steps: args.stop_after,
        tensorboard: args.tensorboard,
    };
    let outcome = crate::training::trainer::train(&run, &config, &data, &session)?;
    if outcome.interrupted {
        // Stopped during the untrained model's evaluation, before any checkpoint.
        let saved = match run.has_checkpoint() {
            true => "with a checkpoint",
            false => "before its first checkpoint",
        };
        return Err(Error::Interrupted(format!(
            "stopped at step {} {saved}; resume with: ibvae train --run {} --resume",
            outcome.state.step,
            run.path.display()
        )));
    }
    match (&outcome.last_eval, outcome.state.finished) {
        (Some(e), _) => {
            crate::logln!(
                "finished {} steps in {:.0} s",
                outcome.state.step,
                outcome.state.elapsed_s
            );
            for line in e.lines(&config.model.bottleneck) {
                crate::logln!("{line}");
            }
        }
        (None, true) => crate::logln!(
            "the run in {} has already done its {} steps; see metrics.jsonl, or `ibvae eval --run {}`",
            run.path.display(),
            outcome.state.step,
            run.path.display()
        ),
        (None, false) => {}
    }
    crate::logln!("run directory: {}", run.path.display());
    Ok(())
}

/// The run's config and data: the saved config when resuming without flags, else the
/// one the flags resolve to (resuming with flags, the saved run's data stays the
/// default, so that what differs from the saved config is what the flags changed).
fn config_and_data(args: &TrainRequest, run: &RunDir) -> Result<(ExperimentConfig, Dataset)> {
    let saved = match args.start {
        StartMode::Resume => Some(run.read_config()?),
        _ => None,
    };
    match saved {
        Some(config) if !args.overrides.any() && args.data.is_none() => {
            let data = data::load_sized(&config.train.data, config.train.image_size)?;
            Ok((config, data))
        }
        _ => {
            let dir = (args.data.clone())
                .or(saved.map(|c| c.train.data))
                .unwrap_or_else(data::default_data_dir);
            let data = data::load_sized(&dir, args.overrides.image_size)?;
            let config = ExperimentConfig::resolve(
                args.preset,
                args.bottleneck,
                dir,
                (data.test.channels, data.test.height),
                &args.overrides,
            )?;
            Ok((config, data))
        }
    }
}
