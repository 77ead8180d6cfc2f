//! `ibvae sample` and `ibvae reconstruct`: images from a run's model as PNG grids.

use std::path::PathBuf;

use super::row_bar;
use crate::config::ModelConfig;
use crate::engine::Runtime;
use crate::error::{Error, Result};
use crate::training::sample::Method;

/// What `ibvae sample` was asked to draw.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    pub run: PathBuf,
    pub n: usize,
    pub seed: u64,
    /// Scales the prior's and the logistics' noise (1: the model's distribution).
    pub temperature: f32,
    pub out: PathBuf,
    /// Images per row [default: a square grid].
    pub cols: Option<usize>,
    pub method: Method,
    pub runtime: Runtime,
}

/// What `ibvae reconstruct` was asked to draw.
#[derive(Debug, Clone)]
pub struct ReconstructRequest {
    pub run: PathBuf,
    /// Test images, one row each.
    pub n: usize,
    /// Samples of x given z ~ q(z|x) beside each image.
    pub samples: usize,
    /// The data directory [default: the run's].
    pub data: Option<PathBuf>,
    pub seed: u64,
    pub out: PathBuf,
    pub method: Method,
    pub runtime: Runtime,
}

pub fn sample(args: SampleRequest) -> Result<()> {
    if args.n == 0 {
        return Err(Error::Config("--n must be at least 1".into()));
    }
    if !(args.temperature > 0.0 && args.temperature.is_finite()) {
        return Err(Error::Config("--temperature must be positive".into()));
    }
    if args.cols == Some(0) {
        return Err(Error::Config(
            "--cols must be at least 1 (leave it out for a square grid)".into(),
        ));
    }
    let device = args.runtime.start()?;
    let (config, model) = crate::training::restore::load_for_inference(&args.run, device)?;
    let m = &config.model;
    ensure_drawable(
        m,
        args.n,
        device,
        "lower --n (images are drawn all at once)",
    )?;
    let bar = row_bar(m.image_size, "sampling");
    let t0 = std::time::Instant::now();
    let draw = crate::training::sample::Draw {
        channels: m.image_channels,
        size: m.image_size,
        temperature: args.temperature,
        seed: args.seed,
        method: args.method,
    };
    let bytes = crate::training::sample::sample_prior(&model, args.n, &draw, |r, _| {
        bar.set_position(r as u64)
    });
    bar.finish_and_clear();
    let cols = args
        .cols
        .unwrap_or_else(|| (args.n as f64).sqrt().ceil() as usize);
    let (w, h, rgb) =
        crate::io::image::grid(&bytes, args.n, m.image_channels, m.image_size, cols, 2);
    crate::io::image::write_png(&args.out, w, h, &rgb, 2)?;
    crate::outln!(
        "wrote {} ({} samples in {:.1} s)",
        args.out.display(),
        args.n,
        t0.elapsed().as_secs_f64()
    )?;
    Ok(())
}

pub fn reconstruct(args: ReconstructRequest) -> Result<()> {
    if args.n == 0 || args.samples == 0 {
        return Err(Error::Config("--n and --samples must be at least 1".into()));
    }
    let (config, model, data) = super::load_run(&args.run, args.data.as_ref(), &args.runtime)?;
    let m = &config.model;
    if args.n > data.test.len() {
        return Err(Error::Config(format!(
            "--n {} is more than the {} test images there are",
            args.n,
            data.test.len()
        )));
    }
    let n = args.n;
    ensure_drawable(
        m,
        n.saturating_mul(args.samples),
        model.device(),
        "lower --n or --samples (they are drawn all at once)",
    )?;
    let originals = data.test.take(n).pixels;
    let bar = row_bar(m.image_size, "reconstructing");
    let draw = crate::training::sample::Draw {
        channels: m.image_channels,
        size: m.image_size,
        temperature: 1.0,
        seed: args.seed,
        method: args.method,
    };
    let recon =
        crate::training::sample::reconstruct(&model, &originals, n, args.samples, &draw, |r, _| {
            bar.set_position(r as u64)
        });
    bar.finish_and_clear();
    // One row per image: the original, then its reconstructions.
    let plane = m.image_channels * m.image_size * m.image_size;
    let cells =
        crate::training::sample::beside_reconstructions(&originals, &recon, n, args.samples, plane);
    let cols = args.samples + 1;
    let (w, h, rgb) =
        crate::io::image::grid(&cells, n * cols, m.image_channels, m.image_size, cols, 2);
    crate::io::image::write_png(&args.out, w, h, &rgb, 2)?;
    crate::outln!(
        "wrote {}: each row is a test image, then {} samples of x given z ~ q(z|x)",
        args.out.display(),
        args.samples
    )?;
    Ok(())
}

/// Refuses drawing `n` images of `model` at once where they cannot fit in the host's
/// memory (on the CPU).
fn ensure_drawable(model: &ModelConfig, n: usize, device: tch::Device, hint: &str) -> Result<()> {
    if device != tch::Device::Cpu {
        return Ok(());
    }
    crate::engine::memory::ensure_fits(
        &format!("drawing {n} images at once"),
        crate::model::size::inference_bytes(model, n),
        hint,
    )
}
