//! What each `ibvae` command does, given its settings. `cli.rs` only parses the command
//! line into these requests; `main` turns an error into a message and an exit code.

pub mod bench;
pub mod evaluate;
pub mod plot;
pub mod reference;
pub mod sample;
pub mod tools;
pub mod train;

use std::path::{Path, PathBuf};

use crate::config::ExperimentConfig;
use crate::engine::Runtime;
use crate::error::Result;
use crate::io::data::Dataset;
use crate::model::hybrid::Hybrid;

/// A run's config and model (with its Polyak average when it keeps one) on the
/// runtime's device, and its data (`data`, or the run's own), checked to fit.
pub(crate) fn load_run(
    run: &Path,
    data: Option<&PathBuf>,
    runtime: &Runtime,
) -> Result<(ExperimentConfig, Hybrid, Dataset)> {
    let device = runtime.start()?;
    let (config, model) = crate::training::restore::load_for_inference(run, device)?;
    let data_dir = data.cloned().unwrap_or_else(|| config.train.data.clone());
    let dataset = crate::io::data::load_sized(&data_dir, config.train.image_size)?;
    let mut checked = config.clone();
    checked.train.data = data_dir;
    crate::training::trainer::check_images_fit(&checked, &dataset)?;
    Ok((config, model, dataset))
}

/// A progress bar over the rows of the image being drawn.
pub(crate) fn row_bar(rows: usize, what: &str) -> indicatif::ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(rows as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} row {{pos}}/{{len}} [{{elapsed_precise}} eta {{eta_precise}}]"
        ))
        .expect("a valid progress template"),
    );
    bar
}
