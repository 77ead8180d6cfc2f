//! `ibvae download`, `ibvae info-bound` and `ibvae params`.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::io::data::{self, download};
use crate::model::bottleneck::BottleneckSpec;
use crate::model::hybrid::{self, Hybrid};
use crate::model::info::{self, BoundReport};

/// What `ibvae info-bound` was asked to compute.
#[derive(Debug, Clone)]
pub struct InfoBoundRequest {
    /// The Gaussian dropout rate, in `[0, 1)`.
    pub rate: f64,
    /// The values of X, which is uniform on them.
    pub values: Vec<f64>,
    /// One scale of X, or a table over 0.01, 1 and 100 when `None`.
    pub scale: Option<f64>,
    pub json: bool,
}

/// The model whose parameters `ibvae params` counts.
#[derive(Debug, Clone)]
pub struct ParamsRequest {
    pub preset: crate::config::Preset,
    pub bottleneck: BottleneckSpec,
    pub channels: usize,
    pub size: usize,
}

pub fn download(dir: Option<PathBuf>) -> Result<()> {
    let dir = dir.unwrap_or_else(data::default_data_dir);
    crate::noteln!("fetching {} into {}", download::CIFAR10_URL, dir.display());
    match download::download(&dir, &download::Source::default(), true)? {
        download::Outcome::AlreadyThere => {
            crate::outln!("CIFAR-10 is already in {}", dir.display())
        }
        download::Outcome::Downloaded(files) => {
            crate::outln!("wrote {} files to {}", files.len(), dir.display())
        }
    }
}

/// The most values `info-bound` integrates over.
const MAX_VALUES: usize = 256;

pub fn info_bound(args: InfoBoundRequest) -> Result<()> {
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
    if args.values.len() > MAX_VALUES {
        return Err(Error::Config(format!(
            "--values holds {} values; at most {MAX_VALUES} are taken, as the exact mutual \
             information's integral costs the cube of their count",
            args.values.len()
        )));
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
        crate::outln!("{}", out.expect("reports serialise"))?;
        return Ok(());
    }
    let values: Vec<String> = args.values.iter().map(|v| v.to_string()).collect();
    crate::outln!(
        "Gaussian dropout, rate p = {} (sigma = {:.6}); X uniform on {{{}}} x scale",
        args.rate,
        info::gd_sigma(args.rate),
        values.join(", ")
    )?;
    crate::outln!(
        "{:>10}  {:>14}  {:>14}  {:>22}",
        "scale",
        "GD bound",
        "GD exact I",
        "additive bound (same sigma)"
    )?;
    for r in &reports {
        crate::outln!(
            "{:>10}  {:>9.6} nats  {:>9.6} nats  {:>17.6} nats",
            r.scale,
            r.gd_bound_nats,
            r.gd_exact_nats,
            r.additive_bound_nats
        )?;
    }
    crate::outln!(
        "(bits = nats / ln 2; the GD figures do not change with the scale of X, the additive \
         channel's does)"
    )?;
    Ok(())
}

pub fn params(args: ParamsRequest) -> Result<()> {
    let config = args
        .preset
        .model()
        .with_bottleneck(args.bottleneck)
        .with_images(args.channels, args.size);
    // Only shapes are needed: build on the CPU.
    let model = Hybrid::new(&config, crate::engine::cpu())?;
    for (part, n) in hybrid::param_counts(&model) {
        crate::outln!("{part:10} {n:>12}")?;
    }
    crate::outln!(
        "preset {} bottleneck {} channels {} size {}",
        args.preset,
        config.bottleneck,
        args.channels,
        args.size
    )?;
    crate::outln!("params {}", model.num_params())?;
    Ok(())
}
