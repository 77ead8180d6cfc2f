//! `ibvae bench`: training and forward speed, comparable with the reference's `bench`.

use std::path::PathBuf;

use crate::backend::{Precision, Runtime};
use crate::bottleneck::BottleneckSpec;
use crate::config::ModelConfig;
use crate::data;
use crate::error::{Error, Result};

/// What `ibvae bench` was asked to time.
#[derive(Debug, Clone)]
pub struct BenchRequest {
    pub preset: String,
    pub bottleneck: BottleneckSpec,
    /// Images per step [default: the preset's].
    pub batch: Option<usize>,
    /// Timed steps after the warm-up.
    pub steps: usize,
    /// A data directory to draw training images from [default: random bytes].
    pub data: Option<PathBuf>,
    pub seed: u64,
    pub runtime: Runtime,
    pub precision: Precision,
    /// Print the report as JSON too.
    pub json: bool,
}

pub fn run(args: BenchRequest) -> Result<()> {
    let device = args.runtime.start()?;
    let config = ModelConfig::preset(&args.preset)?.with_bottleneck(args.bottleneck);
    let batch = match args.batch {
        Some(b) => b,
        None => ModelConfig::preset_batch(&args.preset)?,
    };
    if batch == 0 || args.steps == 0 {
        return Err(Error::Config("--batch and --steps must be positive".into()));
    }
    let (images, source) = match &args.data {
        Some(dir) => {
            let d = data::load(dir)?;
            let train = if d.train.is_empty() { d.test } else { d.train };
            (train, dir.display().to_string())
        }
        None => (
            crate::bench::random_images(&config, 1000, args.seed),
            "random bytes".into(),
        ),
    };
    let config = config.with_images(images.channels, images.height);
    println!(
        "preset {} bottleneck {} batch {batch} threads {} device {} precision {} data {source} \
         ({} images)",
        args.preset,
        config.bottleneck,
        tch::get_num_threads(),
        args.runtime.device,
        args.precision,
        images.len()
    );
    let options = crate::bench::BenchOptions {
        batch,
        steps: args.steps,
        seed: args.seed,
        device,
        precision: args.precision,
    };
    let report = crate::bench::bench(&config, &images, options, |l| println!("{l}"))?;
    println!("params {}", report.params);
    let [f, b, o] = report.median_parts_s;
    println!(
        "median step {:.4} s (forward {f:.4}, backward {b:.4}, optimizer {o:.4})",
        report.median_step_s
    );
    println!(
        "median forward (eval mode, no gradients) {:.4} s  forward_img_per_s {:.4}",
        report.median_forward_s, report.forward_img_per_s
    );
    if let Some(m) = report.peak_rss_mib {
        println!("peak_rss_mib {m:.1}");
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("report serialises")
        );
    }
    println!("train_img_per_s {:.4}", report.train_img_per_s);
    Ok(())
}
