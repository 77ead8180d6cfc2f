//! The command line: clap types only. Flags shared by several commands are declared
//! once, in a group; `resolve` turns each command's flags into the request the library
//! runs (`crate::commands`, `crate::experiment::sweep`).

#[cfg(test)]
mod fuzz;
mod resolve;
mod slurm;

pub use resolve::run;
pub use slurm::SlurmArgs;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engine::{DeviceChoice, Layout, Precision};
use crate::model::bottleneck::BottleneckSpec;
use crate::training::graph::GraphMode;
use crate::training::sample::Method;

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
    Sweep(Box<SweepArgs>),
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
    /// Sampling speed of each method on the same model, seed and batch; the last line
    /// states the speed-up of the first method over the last.
    BenchSample(BenchSampleArgs),
    /// Rerun a `hybrid_ref.py export` file and compare every tensor with the reference.
    VerifyTorch(VerifyTorchArgs),
    /// Turn a `hybrid_ref.py export` file into a run directory (for eval, sample, train).
    ImportTorch(ImportTorchArgs),
}

/// Where to compute.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// cpu, cuda (the first NVIDIA GPU) or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// CPU threads [default: all cores; a sweep divides them among its --jobs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Memory layout of the activations: auto, nchw or channels-last (NHWC; oneDNN's and
    /// cuDNN's fastest convolutions). auto: channels-last on a GPU, and on the CPU for
    /// models of 32 filters or more. The same numbers up to rounding.
    #[arg(long, default_value = "auto")]
    pub layout: Layout,
}

/// Where to compute, and in which precision.
#[derive(Debug, Clone, Args)]
pub struct ComputeArgs {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// f32 (float32 throughout); tf32: on NVIDIA GPUs, convolutions and matrix products
    /// with TF32 inputs (PyTorch's default for convolutions; faster, relative errors near
    /// 1e-3); or bf16: convolutions in bfloat16 (for GPUs; the likelihood, KL terms,
    /// weights and Adam state stay float32). Test evaluations run in float32.
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
}

/// Which model.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model size: tiny, mini, small or paper.
    #[arg(long, default_value = "small")]
    pub preset: crate::config::Preset,
    /// Bottleneck: none, gd:<rate in [0,1)>, vb:<beta> or aux[:<weight>].
    #[arg(long, default_value = "gd:0.15")]
    pub bottleneck: BottleneckSpec,
}

/// The settings of a run that flags can change (`train`, and every run of a `sweep`).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Data directory (CIFAR-10 binary or IDX files) [default: $IBVAE_DATA, else
    /// ~/.cache/ibvae/cifar10].
    #[arg(long)]
    pub data: Option<PathBuf>,
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
    /// Seed of the initialisation, the data order and all noise [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also evaluate on the test set every N steps (always at each epoch's end).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Evaluate the untrained model first: a step-0 line in metrics.jsonl to compare with.
    #[arg(long)]
    pub eval_first: bool,
    /// Checkpoint at least every N minutes, besides each epoch's end (0: after every step)
    /// [default: 10].
    #[arg(long)]
    pub checkpoint_minutes: Option<f64>,
    /// Keep a Polyak average of the weights with this decay and evaluate with it.
    #[arg(long)]
    pub ema_decay: Option<f64>,
    /// Stride-2 steps to the latent grid [default: the preset's 3; use 2 for 28x28 images].
    #[arg(long)]
    pub downsamples: Option<usize>,
    /// Hold the learning rate at --lr-start for this fraction of the run, then anneal
    /// [default: 0].
    #[arg(long)]
    pub lr_hold: Option<f64>,
    /// Shrink the images to this height and width by averaging blocks of pixels (16 for
    /// 16x16 CIFAR-10) [default: full size].
    #[arg(long)]
    pub image_size: Option<usize>,
    /// The PixelCNN++'s binary dropout rate [default: 0.5, PixelCNN++'s].
    #[arg(long)]
    pub dropout: Option<f64>,
    /// A JSON file of model settings over the preset's (its keys, each optional, e.g.
    /// {"nr_filters": 32, "nr_mix": 5}).
    #[arg(long)]
    pub model: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub settings: RunArgs,
    /// Run directory [default: runs/<preset>-<bottleneck>].
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Continue the run in --run from its checkpoint.
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Delete what --run holds and start over.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// on: capture the training step in one CUDA graph after a few steps and replay it
    /// (CUDA only) [default: on for CUDA, off on the CPU].
    #[arg(long)]
    pub cuda_graph: Option<GraphMode>,
    /// Stop with a checkpoint after N steps of this session (the run stays resumable).
    #[arg(long, hide = true)]
    pub stop_after: Option<u64>,
    /// Write no TensorBoard event files (by default the run directory gets them).
    #[arg(long)]
    pub no_tensorboard: bool,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Model size: tiny, mini, small or paper.
    #[arg(long, default_value = "small")]
    pub preset: crate::config::Preset,
    /// Gaussian dropout rates (comma-separated; empty for none).
    #[arg(long, value_delimiter = ',', default_value = "0.015,0.05,0.15,0.3")]
    pub gd: Vec<String>,
    /// Variational bottleneck weights beta (comma-separated; empty for none).
    #[arg(long, value_delimiter = ',', default_value = "0.005,0.02,0.08")]
    pub vb: Vec<String>,
    /// Baselines among none and aux (comma-separated; empty for none).
    #[arg(long, value_delimiter = ',', default_value = "none,aux")]
    pub baselines: Vec<String>,
    /// Seeds: every configuration once per seed (runs named gd-0.15-s1, ...); the plot
    /// shows the mean over seeds with error bars.
    #[arg(long, value_delimiter = ',', conflicts_with = "seed")]
    pub seeds: Vec<u64>,
    #[command(flatten)]
    pub settings: RunArgs,
    /// Output directory: one run directory per configuration and results.csv.
    #[arg(long)]
    pub out: PathBuf,
    /// Runs trained at the same time (each in its own process).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// on: capture the training step in one CUDA graph after a few steps and replay it
    /// (CUDA only) [default: on for CUDA, off on the CPU].
    #[arg(long)]
    pub cuda_graph: Option<GraphMode>,
    #[command(flatten)]
    pub slurm: SlurmArgs,
    /// Show where each run stands (SLURM's queue where there is one) and refresh
    /// results.csv; trains nothing.
    #[arg(long)]
    pub status: bool,
    /// Write no TensorBoard event files (by default every run directory gets them).
    #[arg(long)]
    pub no_tensorboard: bool,
    /// Start over the runs of this sweep that the directory holds with other settings
    /// (without it, such a rerun is refused and names the difference).
    #[arg(long, conflicts_with = "status")]
    pub force: bool,
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
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How samples are computed.
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// How the network is computed while drawing: cached (each activation once), rows
    /// (rerun on the rows drawn) or naive (rerun whole for every pixel): the same images
    /// but for float32 rounding, which can move a draw across a level (rarely).
    #[arg(long, default_value = "cached")]
    pub method: Method,
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
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
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
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// A sweep's output directory (with results.csv): its trade-off figure and samples.
    #[arg(long, required_unless_present = "run")]
    pub sweep: Option<PathBuf>,
    /// A run directory whose training and test curves to draw (curves.svg, curves.png);
    /// repeat it to compare runs.
    #[arg(long)]
    pub run: Vec<PathBuf>,
    /// With --sweep: draw the curves of every member of the sweep too.
    #[arg(long, requires = "sweep")]
    pub curves: bool,
    /// Where to write the figures (tradeoff.svg, tradeoff.png, samples.png, curves.svg,
    /// curves.png).
    #[arg(long)]
    pub out: PathBuf,
    /// Samples per run in samples.png (0 skips the samples).
    #[arg(long, default_value_t = 8)]
    pub samples: usize,
    /// Seed of the samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Images per step [default: the preset's].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Timed steps after 3 warm-up steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// CIFAR-10 directory to draw training images from [default: random bytes].
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// on: capture the training step in one CUDA graph after a few steps and replay it
    /// (CUDA only) [default: on for CUDA, off on the CPU].
    #[arg(long)]
    pub cuda_graph: Option<GraphMode>,
    /// Print the report as JSON (before the last line).
    #[arg(long)]
    pub json: bool,
    /// Record the timed steps with LibTorch's profiler (which slows them): write the
    /// Chrome trace to this file (chrome://tracing, ui.perfetto.dev) and print the
    /// operations that took the most time.
    #[arg(long, value_name = "TRACE.json")]
    pub profile: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchSampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A run directory: time its model instead of the preset's (random weights).
    #[arg(long, conflicts_with_all = ["preset", "bottleneck"])]
    pub run: Option<PathBuf>,
    /// Images drawn at once.
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    /// The methods to time, in order; the speed-up is the first's over the last's.
    #[arg(long, value_delimiter = ',', default_value = "cached,naive")]
    pub methods: Vec<Method>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

#[derive(Debug, Args)]
pub struct ParamsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image channels (3 for RGB, 1 for grey).
    #[arg(long, default_value_t = 3)]
    pub channels: usize,
    /// Image height = width.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
}

#[derive(Debug, Args)]
pub struct VerifyTorchArgs {
    /// A file written by `python hybrid_ref.py export`.
    pub file: PathBuf,
    /// Print one JSON object (per-image figures and the largest relative errors).
    #[arg(long)]
    pub json: bool,
    /// The device checked, and CPU threads [default: the thread count the export was made
    /// with, usually 1, so that float32 sums are split the same way].
    #[command(flatten)]
    pub runtime: RuntimeArgs,
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
