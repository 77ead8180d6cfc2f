//! The command line: clap types, resolved into settings, then run.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use burn::module::Module;

use crate::config::ModelConfig;
use crate::data::{self, download};
use crate::error::{Error, Result};
use crate::hybrid::{self, Hybrid};
use crate::info::{self, BoundReport};

/// Information bottlenecks in hybrid VAE + PixelCNN++ image models (Rey & Mnih 2021).
#[derive(Debug, Parser)]
#[command(name = "ibvae", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch CIFAR-10 (binary version), check its MD5 and unpack it into the data directory.
    Download(DownloadArgs),
    /// Theorem 1: the GD information bound against the exact mutual information.
    InfoBound(InfoBoundArgs),
    /// Parameter count of a preset, per part; the last line is `params N`.
    Params(ParamsArgs),
    /// Rerun a `hybrid_ref.py export` file and compare every tensor with the reference.
    VerifyTorch(VerifyTorchArgs),
}

#[derive(Debug, Args)]
pub struct VerifyTorchArgs {
    /// A file written by `python hybrid_ref.py export`.
    pub file: PathBuf,
    /// Print one JSON object (per-image figures and the largest relative errors).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ParamsArgs {
    /// Model size: tiny, small or paper.
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
        Command::Download(args) => run_download(args),
        Command::InfoBound(args) => run_info_bound(args),
        Command::Params(args) => run_params(args),
        Command::VerifyTorch(args) => run_verify_torch(args),
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
    let model = Hybrid::new(&config, &crate::backend::cpu())?;
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
    let v = crate::torch::verify(&args.file, &crate::backend::cpu())?;
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
