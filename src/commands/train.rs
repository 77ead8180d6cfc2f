//! `ibvae train`: a run from its flags (or its saved config), trained with Ctrl-C
//! stopping at a step boundary with a checkpoint.

use std::path::PathBuf;

use crate::config::{ExperimentConfig, Overrides};
use crate::engine::{Precision, Runtime};
use crate::error::Result;
use crate::io::data;
use crate::io::run_dir::RunDir;
use crate::model::bottleneck::BottleneckSpec;
use crate::model::hybrid::Hybrid;
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
    /// Stop with a checkpoint after this many steps of this session (tests).
    pub stop_after: Option<u64>,
}

pub fn run(args: TrainRequest) -> Result<()> {
    let device = args.runtime.start()?;
    let run_path = args.run.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "{}-{}",
            args.preset,
            args.bottleneck.to_string().replace(':', "")
        ))
    });
    let run = RunDir::new(&run_path);
    let start = args.start;
    // Resuming a run with no flags continues it exactly as configured.
    let saved = start == StartMode::Resume
        && run.has_config()
        && !args.overrides.any()
        && args.data.is_none();
    let (config, data) = if saved {
        let config = run.read_config()?;
        let data = data::load_sized(&config.train.data, config.train.image_size)?;
        (config, data)
    } else {
        let dir = args.data.clone().unwrap_or_else(data::default_data_dir);
        let data = data::load_sized(&dir, args.overrides.image_size)?;
        let config = ExperimentConfig::resolve(
            args.preset,
            args.bottleneck,
            dir,
            (data.test.channels, data.test.height),
            &args.overrides,
        )?;
        (config, data)
    };
    // A schedule too long to count is refused before anything is written.
    config.train.total_steps(data.train.len())?;
    let config = prepare_run(&run, config, start)?;
    // Ctrl-C, SIGTERM or SIGUSR1: finish the step, save a checkpoint, stop.
    let stop = crate::signals::stop_flag()?;
    let n_train = data.train.len();
    eprintln!(
        "run {}: preset {} bottleneck {} ({} parameters), {} training and {} test images, \
         {} steps of {} ({} per epoch)",
        run.path.display(),
        config.preset,
        config.model.bottleneck,
        Hybrid::new(&config.model, crate::engine::cpu())?.num_params(),
        n_train,
        data.test.len(),
        config.train.total_steps(n_train)?,
        config.train.batch,
        config.train.steps_per_epoch(n_train)
    );
    let session = Session {
        device,
        precision: args.precision,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        stop,
        max_session_steps: args.stop_after,
    };
    let outcome = crate::training::trainer::train(&run, &config, &data, &session)?;
    if outcome.interrupted {
        println!(
            "stopped at step {}; resume with: ibvae train --run {} --resume",
            outcome.state.step,
            run.path.display()
        );
        return Ok(());
    }
    match (&outcome.last_eval, outcome.state.finished) {
        (Some(e), _) => {
            println!(
                "finished {} steps in {:.0} s",
                outcome.state.step, outcome.state.elapsed_s
            );
            for line in e.lines(&config.model.bottleneck) {
                println!("{line}");
            }
        }
        (None, true) => println!(
            "the run in {} has already done its {} steps; see metrics.jsonl, or `ibvae eval --run {}`",
            run.path.display(),
            outcome.state.step,
            run.path.display()
        ),
        (None, false) => {}
    }
    println!("run directory: {}", run.path.display());
    Ok(())
}
