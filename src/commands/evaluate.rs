//! `ibvae eval`: a run's model on the whole test set.

use std::path::PathBuf;

use crate::engine::Runtime;
use crate::error::{Error, Result};
use crate::io::run_dir::RunDir;

/// What `ibvae eval` was asked to do.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    pub run: PathBuf,
    /// The data directory [default: the run's].
    pub data: Option<PathBuf>,
    /// Latent samples per image for the importance-weighted bound (1: the ELBO only).
    pub samples: usize,
    /// Images per batch [default: the run's evaluation batch].
    pub batch: Option<usize>,
    pub runtime: Runtime,
    /// Print the report as JSON.
    pub json: bool,
}

pub fn run(args: EvalRequest) -> Result<()> {
    if args.samples == 0 || args.batch == Some(0) {
        return Err(Error::Config(
            "--samples and --batch must be at least 1".into(),
        ));
    }
    let (config, model, data) = super::load_run(&args.run, args.data.as_ref(), &args.runtime)?;
    let batch = args.batch.unwrap_or(config.train.eval_batch);
    let options = crate::training::evaluate::EvalOptions {
        limit: None,
        batch,
        seed: config.train.seed,
        iw_samples: args.samples,
    };
    let report = crate::training::evaluate::evaluate(&model, &data.test, options);
    let run = RunDir::new(&args.run);
    let text = serde_json::to_string_pretty(&report).expect("reports serialise");
    // The figures are printed first, and saved whether or not they could be printed:
    // neither a run directory that cannot be written nor a closed output loses them.
    let printed = print_report(&args, &config, &report, &text);
    crate::io::fsutil::write_atomic_str(&run.eval_path(), &(text + "\n")).map_err(|e| {
        Error::Checkpoint(format!(
            "the evaluation above could not be saved: {e}; it is printed in full, and \
             `ibvae eval --json` writes it as JSON"
        ))
    })?;
    printed?;
    if !args.json {
        crate::outln!("wrote {}", run.eval_path().display())?;
    }
    Ok(())
}

/// The report on stdout: as JSON (`text`), or as lines under the run's name.
fn print_report(
    args: &EvalRequest,
    config: &crate::config::ExperimentConfig,
    report: &crate::training::evaluate::EvalReport,
    text: &str,
) -> Result<()> {
    if args.json {
        return crate::outln!("{text}");
    }
    crate::outln!(
        "run {} ({}, {})",
        args.run.display(),
        config.preset,
        config.model.bottleneck
    )?;
    for line in report.lines(&config.model.bottleneck) {
        crate::outln!("{line}")?;
    }
    Ok(())
}
