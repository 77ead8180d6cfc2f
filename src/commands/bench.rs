//! `ibvae bench`: training and forward speed, comparable with the reference's `bench`.

use std::path::PathBuf;

use crate::engine::{Precision, Runtime};
use crate::error::{Error, Result};
use crate::io::data;
use crate::model::bottleneck::BottleneckSpec;
use crate::training::graph::GraphMode;

/// What `ibvae bench` was asked to time.
#[derive(Debug, Clone)]
pub struct BenchRequest {
    pub preset: crate::config::Preset,
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
    /// `--cuda-graph`, if given.
    pub cuda_graph: Option<GraphMode>,
    /// Print the report as JSON too.
    pub json: bool,
    /// Profile the timed steps, writing the Chrome trace here.
    pub profile: Option<PathBuf>,
}

/// Operations listed by `--profile`.
const PROFILE_ROWS: usize = 30;

pub fn run(args: BenchRequest) -> Result<()> {
    let device = args.runtime.start()?;
    let cuda_graph = GraphMode::resolve(args.cuda_graph, device)?;
    let config = args.preset.model().with_bottleneck(args.bottleneck);
    let batch = match args.batch {
        Some(b) => b,
        None => args.preset.batch(),
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
            crate::training::bench::random_images(&config, 1000, args.seed),
            "random bytes".into(),
        ),
    };
    let config = config.with_images(images.channels, images.height);
    crate::training::ensure_trainable(&config, batch, device)?;
    if let Some(trace) = &args.profile {
        // Refused before the work: the profiler reports a failed save only in its log.
        std::fs::write(trace, b"").map_err(|e| Error::io(trace, e))?;
    }
    crate::outln!(
        "preset {} bottleneck {} batch {batch} threads {} device {} precision {} layout {} \
         data {source} ({} images)",
        args.preset,
        config.bottleneck,
        tch::get_num_threads(),
        args.runtime.device,
        args.precision,
        crate::engine::layout().resolved(device, config.nr_filters),
        images.len()
    )?;
    let options = crate::training::bench::BenchOptions {
        batch,
        steps: args.steps,
        seed: args.seed,
        device,
        precision: args.precision,
        cuda_graph,
        profile: args.profile.as_deref(),
    };
    let report =
        crate::training::bench::bench(&config, &images, options, |l| crate::logln!("{l}"))?;
    crate::outln!("params {}", report.params)?;
    let [f, b, o] = report.median_parts_s;
    if options.cuda_graph == GraphMode::On {
        crate::outln!("median step {:.4} s (one CUDA graph)", report.median_step_s)?;
    } else {
        crate::outln!(
            "median step {:.4} s (forward {f:.4}, backward {b:.4}, optimizer {o:.4})",
            report.median_step_s
        )?;
    }
    crate::outln!(
        "median forward (eval mode, no gradients) {:.4} s  forward_img_per_s {:.4}",
        report.median_forward_s,
        report.forward_img_per_s
    )?;
    if let Some(m) = report.peak_rss_mib {
        crate::outln!("peak_rss_mib {m:.1}")?;
    }
    if let (Some(events), Some(trace)) = (&report.profile, &args.profile) {
        let summary = crate::engine::profiler::summarize(events);
        crate::outln!(
            "profile of the {} timed steps (profiled, so slower than above; trace in {}):",
            args.steps,
            trace.display()
        )?;
        for line in summary.table(args.steps, PROFILE_ROWS).lines() {
            crate::outln!("{line}")?;
        }
    }
    if args.json {
        crate::outln!(
            "{}",
            serde_json::to_string(&report).expect("report serialises")
        )?;
    }
    crate::outln!("train_img_per_s {:.4}", report.train_img_per_s)?;
    Ok(())
}

/// What `ibvae bench-sample` was asked to time.
#[derive(Debug, Clone)]
pub struct BenchSampleRequest {
    pub preset: crate::config::Preset,
    pub bottleneck: BottleneckSpec,
    /// A run whose model to time instead of the preset's.
    pub run: Option<PathBuf>,
    /// Images drawn at once.
    pub n: usize,
    pub methods: Vec<crate::training::sample::Method>,
    pub seed: u64,
    pub runtime: Runtime,
    pub precision: Precision,
}

/// Draws the same `n` images with each method (the same model, latents and seed), and
/// reports the time of each, whether their images are the first method's, and the
/// speed-up of the first method over the last.
pub fn sample(args: BenchSampleRequest) -> Result<()> {
    if args.n == 0 || args.methods.is_empty() {
        return Err(Error::Config(
            "--n must be at least 1 and --methods must name a method".into(),
        ));
    }
    let device = args.runtime.start()?;
    let (label, mut model) = match &args.run {
        Some(dir) => {
            let (config, model) = crate::training::restore::load_for_inference(dir, device)?;
            (format!("run {} ({})", dir.display(), config.preset), model)
        }
        None => {
            let config = args.preset.model().with_bottleneck(args.bottleneck);
            let model = crate::model::hybrid::Hybrid::new(&config, device)?;
            (format!("preset {} (random weights)", args.preset), model)
        }
    };
    model.set_precision(args.precision);
    let m = model.config.clone();
    crate::outln!(
        "{label} bottleneck {} images {} of {}x{}x{} threads {} device {} precision {} seed {}",
        m.bottleneck,
        args.n,
        m.image_channels,
        m.image_size,
        m.image_size,
        tch::get_num_threads(),
        args.runtime.device,
        args.precision,
        args.seed
    )?;
    let draw = |method| crate::training::sample::Draw {
        channels: m.image_channels,
        size: m.image_size,
        temperature: 1.0,
        seed: args.seed,
        method,
    };
    let plane = m.image_channels * m.image_size * m.image_size;
    let mut first: Option<Vec<u8>> = None;
    let mut times = Vec::new();
    for &method in &args.methods {
        let t0 = std::time::Instant::now();
        let bytes = crate::training::sample::sample_prior(&model, args.n, &draw(method), |_, _| {});
        let secs = t0.elapsed().as_secs_f64();
        let same = match &first {
            Some(f) => {
                let equal = f
                    .chunks(plane)
                    .zip(bytes.chunks(plane))
                    .filter(|(a, b)| a == b)
                    .count();
                format!(
                    "{equal} of {} images identical to {}",
                    args.n, args.methods[0]
                )
            }
            None => String::new(),
        };
        crate::outln!(
            "{method:<7} {secs:9.2} s  {:9.3} img/s  {same}",
            args.n as f64 / secs
        )?;
        first.get_or_insert(bytes);
        times.push(secs);
    }
    let (a, b) = (args.methods[0], args.methods[args.methods.len() - 1]);
    crate::outln!(
        "speed-up {a} over {b}: {:.1}x",
        times[times.len() - 1] / times[0]
    )?;
    Ok(())
}
