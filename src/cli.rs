//! The command line: clap types, resolved into settings, then run.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::backend::{DeviceChoice, Precision};
use crate::config::{ExperimentConfig, ModelConfig, TrainConfig};
use crate::data::{self, download};
use crate::error::{Error, Result};
use crate::hybrid::{self, Hybrid};
use crate::info::{self, BoundReport};
use crate::run::RunDir;
use crate::train::{Session, StartMode, prepare_run};

/// Information bottlenecks in hybrid VAE + PixelCNN++ image models (Rey & Mnih 2021).
#[derive(Debug, Parser)]
#[command(name = "ibvae", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a hybrid model (the main job); resumable, checkpointed, evaluated each epoch.
    Train(Box<TrainArgs>),
    /// Evaluate a run on the whole test set: negative ELBO, KL, recon, rate, GD bound.
    Eval(EvalArgs),
    /// Draw images from a run's model (z from the prior, then pixel by pixel) as a PNG grid.
    Sample(SampleArgs),
    /// Test images beside samples of x given z ~ q(z|x): what the latents keep.
    Reconstruct(ReconstructArgs),
    /// Train and evaluate one run per bottleneck strength; writes results.csv.
    Sweep(SweepArgs),
    /// The trade-off figure (test negative ELBO against KL) and samples from a sweep.
    Plot(PlotArgs),
    /// Fetch CIFAR-10 (binary version), check its MD5 and unpack it into the data directory.
    Download(DownloadArgs),
    /// Theorem 1: the GD information bound against the exact mutual information.
    InfoBound(InfoBoundArgs),
    /// Parameter count of a preset, per part; the last line is `params N`.
    Params(ParamsArgs),
    /// Training and forward speed; the last line is `train_img_per_s X` (compare with
    /// `python hybrid_ref.py bench` on the same machine).
    Bench(BenchArgs),
    /// Rerun a `hybrid_ref.py export` file and compare every tensor with the reference.
    VerifyTorch(VerifyTorchArgs),
    /// Turn a `hybrid_ref.py export` file into a run directory (for eval, sample, train).
    ImportTorch(ImportTorchArgs),
}

impl Command {
    /// The device the command computes on, for those that compute.
    pub fn device(&self) -> Option<DeviceChoice> {
        match self {
            Command::Train(a) => Some(a.device),
            Command::Eval(a) => Some(a.device),
            Command::Sample(a) => Some(a.device),
            Command::Reconstruct(a) => Some(a.device),
            Command::Sweep(a) => Some(a.device),
            Command::Plot(a) => Some(a.device),
            Command::Bench(a) => Some(a.device),
            Command::VerifyTorch(a) => Some(a.device),
            _ => None,
        }
    }
}

#[derive(Debug, Args)]
pub struct ImportTorchArgs {
    /// A file written by `python hybrid_ref.py export`.
    pub file: PathBuf,
    /// The run directory to create.
    #[arg(long)]
    pub out: PathBuf,
    /// The data directory the run will use [default: $IBVAE_DATA, else
    /// ~/.cache/ibvae/cifar10].
    #[arg(long)]
    pub data: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyTorchArgs {
    /// A file written by `python hybrid_ref.py export`.
    pub file: PathBuf,
    /// Print one JSON object (per-image figures and the largest relative errors).
    #[arg(long)]
    pub json: bool,
    /// cpu, cuda or cuda:N: the device whose numbers are checked.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// CPU threads [default: the thread count the export was made with, usually 1, so
    /// that float32 sums are split the same way].
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Model size: tiny, mini, small or paper.
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Bottleneck: none, gd:<rate>, vb:<beta> or aux[:<weight>].
    #[arg(long, default_value = "gd:0.15")]
    pub bottleneck: String,
    /// Images per step [default: the preset's].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Timed steps after 3 warm-up steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// CPU threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// CIFAR-10 directory to draw training images from [default: random bytes].
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda (the first NVIDIA GPU) or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// f32, or bf16 (convolutions in bfloat16).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Print the report as JSON (before the last line).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ParamsArgs {
    /// Model size: tiny, mini, small or paper.
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Bottleneck: none, gd:<rate>, vb:<beta> or aux[:<weight>].
    #[arg(long, default_value = "gd:0.15")]
    pub bottleneck: String,
    /// Image channels (3 for RGB, 1 for grey).
    #[arg(long, default_value_t = 3)]
    pub channels: usize,
    /// Image height = width.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
}

/// How long and how fast a run trains; shared by `train` and `sweep`.
#[derive(Debug, Clone, Args)]
pub struct ScheduleArgs {
    /// Passes over the training set [default: 350, the paper's].
    #[arg(long, conflicts_with = "steps")]
    pub epochs: Option<u64>,
    /// Optimizer steps, instead of epochs.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Images per step [default: the preset's: tiny 4, mini 16, small 16, paper 32].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Learning rate at the first step [default: 1e-4] ...
    #[arg(long)]
    pub lr_start: Option<f64>,
    /// ... annealed exponentially to this at the last step [default: 4e-6].
    #[arg(long)]
    pub lr_end: Option<f64>,
    /// Evaluate on the first N test images during training [default: all]; `eval` and a
    /// sweep's final evaluation always use the whole test set.
    #[arg(long)]
    pub eval_images: Option<usize>,
}

impl ScheduleArgs {
    /// Whether any of these flags was given.
    pub fn any(&self) -> bool {
        self.epochs.is_some()
            || self.steps.is_some()
            || self.batch.is_some()
            || self.lr_start.is_some()
            || self.lr_end.is_some()
            || self.eval_images.is_some()
    }

    /// The flags again, as command-line arguments (for a sweep's `train` children).
    pub fn to_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut push = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push(flag.to_string());
                out.push(v);
            }
        };
        push("--epochs", self.epochs.map(|v| v.to_string()));
        push("--steps", self.steps.map(|v| v.to_string()));
        push("--batch", self.batch.map(|v| v.to_string()));
        push("--lr-start", self.lr_start.map(|v| v.to_string()));
        push("--lr-end", self.lr_end.map(|v| v.to_string()));
        push("--eval-images", self.eval_images.map(|v| v.to_string()));
        out
    }

    /// Applies the flags to a run's training config.
    pub fn apply(&self, train: &mut TrainConfig) {
        if let Some(e) = self.epochs {
            train.epochs = e;
        }
        train.steps = self.steps;
        if let Some(b) = self.batch {
            train.batch = b;
            train.eval_batch = 4 * b;
        }
        if let Some(v) = self.lr_start {
            train.lr_start = v;
        }
        if let Some(v) = self.lr_end {
            train.lr_end = v;
        }
        train.eval_images = self.eval_images;
    }
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Model size: tiny, mini, small or paper.
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Bottleneck: none, gd:<rate in [0,1)>, vb:<beta> or aux[:<weight>].
    #[arg(long, default_value = "gd:0.15")]
    pub bottleneck: String,
    /// Data directory (CIFAR-10 binary or IDX files) [default: $IBVAE_DATA, else
    /// ~/.cache/ibvae/cifar10].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Run directory [default: runs/<preset>-<bottleneck>].
    #[arg(long)]
    pub run: Option<PathBuf>,
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    /// Seed of the initialisation, the data order and all noise [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// CPU threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also evaluate on the test set every N steps (always at each epoch's end).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Evaluate the untrained model first: a step-0 line in metrics.jsonl to compare with.
    #[arg(long)]
    pub eval_first: bool,
    /// Checkpoint at least every N minutes, besides each epoch's end [default: 10].
    #[arg(long)]
    pub checkpoint_minutes: Option<f64>,
    /// Keep a Polyak average of the weights with this decay and evaluate with it.
    #[arg(long)]
    pub ema_decay: Option<f64>,
    /// Stride-2 steps to the latent grid [default: the preset's 3; use 2 for 28x28 images].
    #[arg(long)]
    pub downsamples: Option<usize>,
    /// Continue the run in --run from its checkpoint.
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Delete what --run holds and start over.
    #[arg(long)]
    pub force: bool,
    /// cpu, cuda (the first NVIDIA GPU) or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// f32, or bf16: convolutions in bfloat16 (for GPUs; the likelihood, KL terms,
    /// weights and Adam state stay float32).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Stop with a checkpoint after N steps of this session (the run stays resumable).
    #[arg(long, hide = true)]
    pub stop_after: Option<u64>,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Run directory (written by `ibvae train` or `ibvae import-torch`).
    #[arg(long)]
    pub run: PathBuf,
    /// Data directory [default: the one the run was trained on].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Latent samples per image for the importance-weighted NLL bound (1 = ELBO only).
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Images per batch [default: the run's evaluation batch].
    #[arg(long)]
    pub batch: Option<usize>,
    /// CPU threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu, cuda (the first NVIDIA GPU) or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Run directory.
    #[arg(long)]
    pub run: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Scales the prior's and the logistics' noise (1 = the model's distribution).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
    /// Images per row of the grid [default: a square grid].
    #[arg(long)]
    pub cols: Option<usize>,
    /// CPU threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu, cuda (the first NVIDIA GPU) or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
}

#[derive(Debug, Args)]
pub struct ReconstructArgs {
    /// Run directory.
    #[arg(long)]
    pub run: PathBuf,
    /// Test images (one row each).
    #[arg(long, default_value_t = 8)]
    pub n: usize,
    /// Samples of x given z ~ q(z|x) beside each image.
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    /// Data directory [default: the run's].
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
    /// CPU threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu, cuda (the first NVIDIA GPU) or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Model size: tiny, mini, small or paper.
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Gaussian dropout rates (comma-separated; empty for none).
    #[arg(long, value_delimiter = ',', default_value = "0.015,0.05,0.15,0.3")]
    pub gd: Vec<String>,
    /// Variational bottleneck weights beta (comma-separated; empty for none).
    #[arg(long, value_delimiter = ',', default_value = "0.005,0.02,0.08")]
    pub vb: Vec<String>,
    /// Baselines among none and aux (comma-separated; empty for none).
    #[arg(long, value_delimiter = ',', default_value = "none,aux")]
    pub baselines: Vec<String>,
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    /// Data directory [default: $IBVAE_DATA, else ~/.cache/ibvae/cifar10].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output directory: one run directory per configuration and results.csv.
    #[arg(long)]
    pub out: PathBuf,
    /// Runs trained at the same time (each in its own process).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// CPU threads per run [default: all cores divided by --jobs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of every run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda (the first NVIDIA GPU) or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// f32, or bf16 (convolutions in bfloat16) for every run.
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// A sweep's output directory (with results.csv).
    #[arg(long)]
    pub sweep: PathBuf,
    /// Where to write tradeoff.svg, tradeoff.png and samples.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Samples per run in samples.png (0 skips the samples).
    #[arg(long, default_value_t = 8)]
    pub samples: usize,
    /// Seed of the samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// cpu, cuda (the first NVIDIA GPU) or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Data directory [default: $IBVAE_DATA, else ~/.cache/ibvae/cifar10].
    #[arg(long, visible_alias = "data")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InfoBoundArgs {
    /// Gaussian dropout rate p in [0, 1); the noise is N(1, p / (1 - p)).
    #[arg(long)]
    pub rate: f64,
    /// The values of X, which is uniform on them (non-zero, comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        allow_hyphen_values = true,
        default_value = "1,2,3"
    )]
    pub values: Vec<f64>,
    /// Multiply the values by this scale. Without it, a table over scales 0.01, 1, 100.
    #[arg(long, allow_hyphen_values = true)]
    pub scale: Option<f64>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs one command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => run_train(*args),
        Command::Eval(args) => run_eval(args),
        Command::Sample(args) => run_sample(args),
        Command::Reconstruct(args) => run_reconstruct(args),
        Command::Sweep(args) => crate::sweep::run(args),
        Command::Plot(args) => run_plot(args),
        Command::Download(args) => run_download(args),
        Command::InfoBound(args) => run_info_bound(args),
        Command::Params(args) => run_params(args),
        Command::Bench(args) => run_bench(args),
        Command::VerifyTorch(args) => run_verify_torch(args),
        Command::ImportTorch(args) => run_import_torch(args),
    }
}

fn run_download(args: DownloadArgs) -> Result<()> {
    let dir = args.dir.unwrap_or_else(data::default_data_dir);
    eprintln!("fetching {} into {}", download::CIFAR10_URL, dir.display());
    match download::download(&dir, &download::Source::default(), true)? {
        download::Outcome::AlreadyThere => {
            println!("CIFAR-10 is already in {}", dir.display())
        }
        download::Outcome::Downloaded(files) => {
            println!("wrote {} files to {}", files.len(), dir.display())
        }
    }
    Ok(())
}

fn run_info_bound(args: InfoBoundArgs) -> Result<()> {
    if !(0.0..1.0).contains(&args.rate) {
        return Err(Error::Config(format!(
            "--rate must be in [0, 1) (sigma = sqrt(p / (1 - p))), got {}",
            args.rate
        )));
    }
    if args.values.is_empty() || args.values.iter().any(|v| *v == 0.0 || !v.is_finite()) {
        return Err(Error::Config(
            "--values must be finite and non-zero (log X^2 appears in the bound), e.g. 1,2,3"
                .into(),
        ));
    }
    if let Some(s) = args.scale
        && (s == 0.0 || !s.is_finite())
    {
        return Err(Error::Config(format!(
            "--scale must be finite and non-zero, got {s}"
        )));
    }
    let scales = match args.scale {
        Some(s) => vec![s],
        None => vec![0.01, 1.0, 100.0],
    };
    let reports: Vec<BoundReport> = scales
        .iter()
        .map(|&s| BoundReport::new(args.rate, &args.values, s))
        .collect();
    if args.json {
        let out = if args.scale.is_some() {
            serde_json::to_string_pretty(&reports[0])
        } else {
            serde_json::to_string_pretty(&reports)
        };
        println!("{}", out.expect("reports serialise"));
        return Ok(());
    }
    let values: Vec<String> = args.values.iter().map(|v| v.to_string()).collect();
    println!(
        "Gaussian dropout, rate p = {} (sigma = {:.6}); X uniform on {{{}}} x scale",
        args.rate,
        info::gd_sigma(args.rate),
        values.join(", ")
    );
    println!(
        "{:>10}  {:>14}  {:>14}  {:>22}",
        "scale", "GD bound", "GD exact I", "additive bound (same sigma)"
    );
    for r in &reports {
        println!(
            "{:>10}  {:>9.6} nats  {:>9.6} nats  {:>17.6} nats",
            r.scale, r.gd_bound_nats, r.gd_exact_nats, r.additive_bound_nats
        );
    }
    println!(
        "(bits = nats / ln 2; the GD figures do not change with the scale of X, the additive \
         channel's does)"
    );
    Ok(())
}

fn run_params(args: ParamsArgs) -> Result<()> {
    let config = ModelConfig::preset(&args.preset)?
        .with_bottleneck(args.bottleneck.parse()?)
        .with_images(args.channels, args.size);
    // Only shapes are needed: build on the CPU.
    let model = Hybrid::new(&config, crate::backend::cpu())?;
    for (part, n) in hybrid::param_counts(&model) {
        println!("{part:10} {n:>12}");
    }
    println!(
        "preset {} bottleneck {} channels {} size {}",
        args.preset, config.bottleneck, args.channels, args.size
    );
    println!("params {}", model.num_params());
    Ok(())
}

fn run_verify_torch(args: VerifyTorchArgs) -> Result<()> {
    let threads = args
        .threads
        .or(crate::torch::Export::read(&args.file)?.threads);
    set_threads(threads)?;
    let device = crate::backend::device(args.device)?;
    let v = crate::torch::verify(&args.file, device)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&v).expect("report serialises")
        );
    } else {
        println!("{:<14} {:>14}", "tensor", "max rel error");
        for (name, err) in &v.max_rel_error {
            let flag = if *err <= v.tolerance { "" } else { "  FAIL" };
            println!("{name:<14} {err:>14.3e}{flag}");
        }
        println!(
            "negative ELBO per image (bits/dim): {}",
            v.per_image["elbo_bpd"]
                .iter()
                .map(|x| format!("{x:.5}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if v.ok {
        if !args.json {
            println!(
                "ok: every tensor within {:.0e} of the reference",
                v.tolerance
            );
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

fn set_threads(threads: Option<usize>) -> Result<()> {
    match threads {
        Some(t) => crate::backend::set_threads(t),
        None => Ok(()),
    }
}

/// The settings of a new run from the flags.
fn experiment_from_flags(args: &TrainArgs, data: PathBuf) -> Result<ExperimentConfig> {
    let mut model = ModelConfig::preset(&args.preset)?.with_bottleneck(args.bottleneck.parse()?);
    if let Some(d) = args.downsamples {
        model.downsamples = d;
    }
    let mut train = TrainConfig::for_preset(&args.preset, data)?;
    args.schedule.apply(&mut train);
    if let Some(v) = args.seed {
        train.seed = v;
    }
    train.eval_every = args.eval_every;
    train.eval_first = args.eval_first;
    if let Some(v) = args.checkpoint_minutes {
        train.checkpoint_minutes = v;
    }
    train.ema_decay = args.ema_decay;
    train.validate()?;
    Ok(ExperimentConfig {
        preset: args.preset.clone(),
        model,
        train,
    })
}

/// Whether any flag that defines the experiment was given (resuming takes none).
fn experiment_flags_given(args: &TrainArgs) -> bool {
    args.schedule.any()
        || args.seed.is_some()
        || args.eval_every.is_some()
        || args.eval_first
        || args.checkpoint_minutes.is_some()
        || args.ema_decay.is_some()
        || args.downsamples.is_some()
        || args.data.is_some()
}

fn run_train(args: TrainArgs) -> Result<()> {
    set_threads(args.threads)?;
    let device = crate::backend::device(args.device)?;
    let run_path = args.run.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(format!(
            "{}-{}",
            args.preset,
            args.bottleneck.replace(':', "")
        ))
    });
    let run = RunDir::new(&run_path);
    let start = if args.force {
        StartMode::Force
    } else if args.resume {
        StartMode::Resume
    } else {
        StartMode::New
    };
    // Resuming a run with no flags continues it exactly as configured.
    let saved = start == StartMode::Resume && run.has_config() && !experiment_flags_given(&args);
    let mut config = if saved {
        run.read_config()?
    } else {
        experiment_from_flags(
            &args,
            args.data.clone().unwrap_or_else(data::default_data_dir),
        )?
    };
    let data = data::load(&config.train.data)?;
    if !saved {
        // The model takes the data's image shape.
        config.model = config
            .model
            .with_images(data.test.channels, data.test.height);
        config.model.validate().map_err(|e| {
            Error::Config(format!(
                "the {}x{} images in {} do not fit preset {}: {e}",
                data.test.height,
                data.test.width,
                config.train.data.display(),
                config.preset
            ))
        })?;
    }
    let config = prepare_run(&run, config, start)?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C while the checkpoint is written exits at once.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupt: finishing this step and saving a checkpoint (Ctrl-C again to quit now)"
            );
        });
    }
    let n_train = data.train.len();
    eprintln!(
        "run {}: preset {} bottleneck {} ({} parameters), {} training and {} test images, \
         {} steps of {} ({} per epoch)",
        run.path.display(),
        config.preset,
        config.model.bottleneck,
        Hybrid::new(&config.model, crate::backend::cpu())?.num_params(),
        n_train,
        data.test.len(),
        config.train.total_steps(n_train),
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
    let outcome = crate::train::train(&run, &config, &data, &session)?;
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

fn run_eval(args: EvalArgs) -> Result<()> {
    set_threads(args.threads)?;
    if args.samples == 0 {
        return Err(Error::Config("--samples must be at least 1".into()));
    }
    let device = crate::backend::device(args.device)?;
    let (config, model) = crate::run::load_for_inference(&args.run, device)?;
    let data_dir = args
        .data
        .clone()
        .unwrap_or_else(|| config.train.data.clone());
    let data = data::load(&data_dir)?;
    let mut checked = config.clone();
    checked.train.data = data_dir.clone();
    crate::train::check_images_fit(&checked, &data)?;
    let batch = args.batch.unwrap_or(config.train.eval_batch);
    let options = crate::evaluate::EvalOptions {
        limit: None,
        batch,
        seed: config.train.seed,
        iw_samples: args.samples,
    };
    let report = crate::evaluate::evaluate(&model, &data.test, options);
    let run = RunDir::new(&args.run);
    let text = serde_json::to_string_pretty(&report).expect("reports serialise");
    crate::fsutil::write_atomic_str(&run.eval_path(), &(text.clone() + "\n"))?;
    if args.json {
        println!("{text}");
    } else {
        println!(
            "run {} ({}, {})",
            args.run.display(),
            config.preset,
            config.model.bottleneck
        );
        for line in report.lines(&config.model.bottleneck) {
            println!("{line}");
        }
        println!("wrote {}", run.eval_path().display());
    }
    Ok(())
}

fn run_bench(args: BenchArgs) -> Result<()> {
    set_threads(args.threads)?;
    let device = crate::backend::device(args.device)?;
    let config = ModelConfig::preset(&args.preset)?.with_bottleneck(args.bottleneck.parse()?);
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
        args.device,
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

/// A progress bar over the rows of the image being drawn.
fn row_bar(rows: usize, what: &str) -> indicatif::ProgressBar {
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

fn run_sample(args: SampleArgs) -> Result<()> {
    set_threads(args.threads)?;
    if args.n == 0 {
        return Err(Error::Config("--n must be at least 1".into()));
    }
    if !(args.temperature > 0.0 && args.temperature.is_finite()) {
        return Err(Error::Config("--temperature must be positive".into()));
    }
    let device = crate::backend::device(args.device)?;
    let (config, model) = crate::run::load_for_inference(&args.run, device)?;
    let m = &config.model;
    let bar = row_bar(m.image_size, "sampling");
    let t0 = std::time::Instant::now();
    let draw = crate::sample::Draw {
        channels: m.image_channels,
        size: m.image_size,
        temperature: args.temperature,
        seed: args.seed,
    };
    let bytes =
        crate::sample::sample_prior(&model, args.n, &draw, |r, _| bar.set_position(r as u64));
    bar.finish_and_clear();
    let cols = args
        .cols
        .unwrap_or_else(|| (args.n as f64).sqrt().ceil() as usize);
    let (w, h, rgb) = crate::image::grid(&bytes, args.n, m.image_channels, m.image_size, cols, 2);
    crate::image::write_png(&args.out, w, h, &rgb, 2)?;
    println!(
        "wrote {} ({} samples in {:.1} s)",
        args.out.display(),
        args.n,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run_reconstruct(args: ReconstructArgs) -> Result<()> {
    set_threads(args.threads)?;
    if args.n == 0 || args.samples == 0 {
        return Err(Error::Config("--n and --samples must be at least 1".into()));
    }
    let device = crate::backend::device(args.device)?;
    let (config, model) = crate::run::load_for_inference(&args.run, device)?;
    let data_dir = args
        .data
        .clone()
        .unwrap_or_else(|| config.train.data.clone());
    let data = data::load(&data_dir)?;
    let mut checked = config.clone();
    checked.train.data = data_dir;
    crate::train::check_images_fit(&checked, &data)?;
    let m = &config.model;
    let n = args.n.min(data.test.len());
    let originals = data.test.take(n).pixels;
    let bar = row_bar(m.image_size, "reconstructing");
    let draw = crate::sample::Draw {
        channels: m.image_channels,
        size: m.image_size,
        temperature: 1.0,
        seed: args.seed,
    };
    let recon = crate::sample::reconstruct(&model, &originals, n, args.samples, &draw, |r, _| {
        bar.set_position(r as u64)
    });
    bar.finish_and_clear();
    // One row per image: the original, then its reconstructions.
    let plane = m.image_channels * m.image_size * m.image_size;
    let mut cells = Vec::with_capacity(n * (args.samples + 1) * plane);
    for i in 0..n {
        cells.extend_from_slice(&originals[i * plane..(i + 1) * plane]);
        cells.extend_from_slice(&recon[i * args.samples * plane..(i + 1) * args.samples * plane]);
    }
    let cols = args.samples + 1;
    let (w, h, rgb) = crate::image::grid(&cells, n * cols, m.image_channels, m.image_size, cols, 2);
    crate::image::write_png(&args.out, w, h, &rgb, 2)?;
    println!(
        "wrote {}: each row is a test image, then {} samples of x given z ~ q(z|x)",
        args.out.display(),
        args.samples
    );
    Ok(())
}

fn run_import_torch(args: ImportTorchArgs) -> Result<()> {
    let device = crate::backend::cpu();
    let export = crate::torch::Export::read(&args.file)?;
    let model = export.model(&args.file.display().to_string(), device)?;
    let run = RunDir::new(&args.out);
    if run.has_config() {
        return Err(Error::Config(format!(
            "{} already holds a run; choose another --out (nothing was changed)",
            args.out.display()
        )));
    }
    let preset = if ModelConfig::preset(&export.preset).is_ok() {
        export.preset.clone()
    } else {
        "small".to_string()
    };
    let config = ExperimentConfig {
        preset: export.preset.clone(),
        model: export.config.clone(),
        train: TrainConfig::for_preset(&preset, args.data.unwrap_or_else(data::default_data_dir))?,
    };
    run.write_config(&config)?;
    run.save_checkpoint(
        &config,
        &model,
        None,
        None,
        &crate::run::TrainState::fresh(),
    )?;
    println!(
        "wrote {} ({} parameters, preset {}, bottleneck {}); try `ibvae eval --run {}`",
        args.out.display(),
        model.num_params(),
        export.preset,
        config.model.bottleneck,
        args.out.display()
    );
    Ok(())
}

fn run_plot(args: PlotArgs) -> Result<()> {
    set_threads(args.threads)?;
    let csv = args.sweep.join("results.csv");
    if !csv.exists() {
        return Err(Error::Data(format!(
            "{} has no results.csv: run `ibvae sweep --out {}` first",
            args.sweep.display(),
            args.sweep.display()
        )));
    }
    let rows = crate::sweep::read_results(&csv)?;
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let preset = rows
        .first()
        .and_then(|r| {
            RunDir::new(crate::sweep::run_dir(&args.sweep, r))
                .read_config()
                .ok()
        })
        .map(|c| c.preset)
        .unwrap_or_default();
    let title = format!("Latent use against fit, {preset} model, CIFAR-10 test set");
    crate::plot::tradeoff(&rows, &args.out, &title)?;
    println!(
        "wrote {} and tradeoff.png",
        args.out.join("tradeoff.svg").display()
    );
    if args.samples == 0 {
        return Ok(());
    }
    // Two GD rates and two VB weights: the weakest and the strongest of each.
    let mut chosen = Vec::new();
    for kind in ["gd", "vb"] {
        let mut of_kind: Vec<&crate::sweep::ResultRow> =
            rows.iter().filter(|r| r.kind == kind).collect();
        of_kind.sort_by(|a, b| a.strength.total_cmp(&b.strength));
        if let Some(first) = of_kind.first() {
            chosen.push(*first);
        }
        if of_kind.len() > 1 {
            chosen.push(of_kind[of_kind.len() - 1]);
        }
    }
    if chosen.is_empty() {
        println!("no GD or VB runs: samples.png skipped");
        return Ok(());
    }
    let device = crate::backend::device(args.device)?;
    let mut panel = Vec::new();
    let (mut channels, mut size) = (3, 32);
    for row in chosen {
        let dir = crate::sweep::run_dir(&args.sweep, row);
        let (config, model) = crate::run::load_for_inference(&dir, device)?;
        channels = config.model.image_channels;
        size = config.model.image_size;
        let draw = crate::sample::Draw {
            channels,
            size,
            temperature: 1.0,
            seed: args.seed,
        };
        let bar = row_bar(size, &format!("sampling {}", row.run));
        let bytes = crate::sample::sample_prior(&model, args.samples, &draw, |r, _| {
            bar.set_position(r as u64)
        });
        bar.finish_and_clear();
        let label = match row.kind.as_str() {
            "gd" => format!("GD p = {}", row.strength),
            _ => format!("VB beta = {}", row.strength),
        };
        panel.push((format!("{label} (KL {:.3})", row.kl_bpd), bytes));
    }
    let path = args.out.join("samples.png");
    crate::plot::samples_panel(
        &panel,
        args.samples,
        channels,
        size,
        &path,
        &format!("Samples (z from the prior), {preset} model"),
    )?;
    println!("wrote {}", path.display());
    Ok(())
}
