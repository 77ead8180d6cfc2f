//! `ibvae bench`: the speed of training steps, the same work as the reference's
//! `hybrid_ref.py bench` (Adam at lr 1e-4 on the batch mean of the per-image loss in
//! bits/dim, random training images, 3 warm-up steps, the median of the rest), so the two
//! can be compared as a ratio in one run. Also the speed of an evaluation-mode forward.

use std::path::Path;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use tch::{Device, Kind};

use crate::config::{AdamSettings, ModelConfig};
use crate::engine::profiler::{Event, Profiler};
use crate::engine::random::seed_torch;
use crate::engine::{Precision, sync};
use crate::error::Result;
use crate::io::data::{ImageSet, images_to_tensor};
use crate::model::hybrid::Hybrid;
use crate::model::nn::Mode;
use crate::training::graph::{GraphMode, Stepper};
use crate::training::step::{Learner, NonFiniteLoss, StepTimes};

/// Warm-up steps left out of the timing (as the reference).
pub const WARMUP: usize = 3;

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub params: usize,
    pub batch: usize,
    /// Seconds of each timed training step.
    pub step_s: Vec<f64>,
    pub median_step_s: f64,
    /// Median seconds of the step's parts: forward, backward, optimizer update.
    pub median_parts_s: [f64; 3],
    pub train_img_per_s: f64,
    /// Median seconds of an evaluation-mode forward (no gradients) of one batch.
    pub median_forward_s: f64,
    pub forward_img_per_s: f64,
    /// Peak resident memory of the process, MiB (Linux), when known.
    pub peak_rss_mib: Option<f64>,
    /// What LibTorch's profiler recorded of the timed steps, with `profile`.
    #[serde(skip)]
    pub profile: Option<Vec<Event>>,
}

/// What to time, and where.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions<'a> {
    pub batch: usize,
    /// Timed steps (after the warm-up).
    pub steps: usize,
    pub seed: u64,
    pub device: Device,
    pub precision: Precision,
    /// Steps replayed from a CUDA graph (no split of a step into its parts then).
    pub cuda_graph: GraphMode,
    /// Record the timed steps with LibTorch's profiler (which slows them), writing the
    /// Chrome trace to this file.
    pub profile: Option<&'a Path>,
}

/// Times `steps` training steps and `steps` forwards after the warm-up.
pub fn bench(
    config: &ModelConfig,
    images: &ImageSet,
    options: BenchOptions<'_>,
    mut log: impl FnMut(&str),
) -> Result<BenchReport> {
    let (batch, steps, seed, device) = (options.batch, options.steps, options.seed, options.device);
    let mut stepper = Stepper::new(options.cuda_graph, device, batch)?;
    let warmup = WARMUP.max(stepper.warmup());
    seed_torch(seed);
    let mut model = Hybrid::new(config, device)?;
    model.set_precision(options.precision);
    let params = model.num_params();
    let mut learner = Learner::new(model, AdamSettings::default(), None);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let shape = [
        batch,
        config.image_channels,
        config.image_size,
        config.image_size,
    ];
    let pick = |rng: &mut rand::rngs::StdRng| -> Vec<u8> {
        let idx: Vec<usize> = (0..batch)
            .map(|_| rng.random_range(0..images.len()))
            .collect();
        images.gather(&idx)
    };
    let mut step_s = Vec::with_capacity(steps);
    let mut parts: [Vec<f64>; 3] = Default::default();
    let mut profiler = None;
    for step in 0..warmup + steps {
        let bytes = pick(&mut rng);
        sync(device);
        if step == warmup && options.profile.is_some() {
            profiler = Some(Profiler::start(device)?);
        }
        let t0 = Instant::now();
        let x = images_to_tensor(&bytes, shape, device);
        let mut times = StepTimes::default();
        // A NaN here is a finding, not a reason to stop timing: an ordinary step is
        // skipped (a replayed graph has applied its update).
        let result = stepper.step(&mut learner, &x, 1e-4, Some(&mut times))?;
        let loss = result.map_or_else(|NonFiniteLoss(loss)| loss, |t| t.loss_bpd);
        let dt = t0.elapsed().as_secs_f64();
        let warm = step < warmup;
        if !warm {
            step_s.push(dt);
            // A replayed graph has no parts (NaN, `null` in JSON).
            let split = match stepper.is_graphed() {
                true => [f64::NAN; 3],
                false => [
                    dt - times.backward - times.update,
                    times.backward,
                    times.update,
                ],
            };
            for (list, v) in parts.iter_mut().zip(split) {
                list.push(v);
            }
        }
        log(&format!(
            "step {step:3}{} loss {loss:.6} bpd  {dt:.3} s  {:.2} img/s",
            if warm { " (warm-up)" } else { "" },
            batch as f64 / dt
        ));
    }
    sync(device);
    let profile = match profiler {
        Some(p) => Some(p.finish(options.profile)?),
        None => None,
    };
    let forward_s = time_forwards(&learner.model, steps, device, shape, || pick(&mut rng));
    let median_step_s = median(&step_s);
    let median_forward_s = median(&forward_s);
    Ok(BenchReport {
        params,
        batch,
        median_step_s,
        median_parts_s: [median(&parts[0]), median(&parts[1]), median(&parts[2])],
        train_img_per_s: batch as f64 / median_step_s,
        median_forward_s,
        forward_img_per_s: batch as f64 / median_forward_s,
        step_s,
        peak_rss_mib: peak_rss_mib(),
        profile,
    })
}

/// Seconds of `steps` evaluation-mode forwards (no gradients) after the warm-up, each of
/// the images (bytes) `pick` returns, of shape `shape` (their transfer to the device
/// included).
fn time_forwards(
    model: &Hybrid,
    steps: usize,
    device: Device,
    shape: [usize; 4],
    mut pick: impl FnMut() -> Vec<u8>,
) -> Vec<f64> {
    let mut forward_s = Vec::with_capacity(steps);
    for step in 0..WARMUP + steps {
        let bytes = pick();
        sync(device);
        let t0 = Instant::now();
        let x = images_to_tensor(&bytes, shape, device);
        let nelbo = tch::no_grad(|| {
            model
                .forward(&x, Mode::Eval)
                .terms
                .nelbo
                .sum(Kind::Float)
                .double_value(&[])
        });
        sync(device);
        let dt = t0.elapsed().as_secs_f64();
        if step >= WARMUP {
            forward_s.push(dt);
        }
        std::hint::black_box(nelbo);
    }
    forward_s
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// `VmHWM` of `/proc/self/status`: the peak resident set size.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Random images of the model's shape, for a bench without data.
pub fn random_images(config: &ModelConfig, n: usize, seed: u64) -> ImageSet {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let d = config.dims();
    ImageSet {
        pixels: (0..n * d).map(|_| rng.random()).collect(),
        labels: vec![0; n],
        channels: config.image_channels,
        height: config.image_size,
        width: config.image_size,
    }
}
