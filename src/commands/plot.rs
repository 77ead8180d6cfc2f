//! `ibvae plot`: the trade-off figure and the sample panel of a sweep, and the curves
//! compared at equal KL.

use std::path::{Path, PathBuf};

use super::row_bar;
use crate::config::ExperimentConfig;
use crate::engine::Runtime;
use crate::error::{Error, Result};
use crate::experiment::stats::{self, AtEqualKl, BottleneckKind, PairedBySeed};
use crate::experiment::sweep::results::{self, ResultRow};
use crate::io::run_dir::RunDir;
use crate::model::bottleneck::PlotStyle;
use crate::training::sample::{Draw, Method};

/// What `ibvae plot` was asked to draw.
#[derive(Debug, Clone)]
pub struct PlotRequest {
    /// A sweep's output directory (with `results.csv`).
    pub sweep: Option<PathBuf>,
    /// Runs whose training curves to draw (beside the sweep's members with `curves`).
    pub runs: Vec<PathBuf>,
    /// Draw the curves of the sweep's members too.
    pub curves: bool,
    pub out: PathBuf,
    /// Samples per run in `samples.png` (0 skips them).
    pub samples: usize,
    pub seed: u64,
    pub runtime: Runtime,
}

pub fn run(args: PlotRequest) -> Result<()> {
    let Some(sweep) = &args.sweep else {
        if args.runs.is_empty() {
            return Err(Error::Config(
                "give --sweep DIR (a sweep's figures) or --run DIR (a run's curves; repeat it \
                 to compare runs)"
                    .into(),
            ));
        }
        return curves(&args.runs, &args.out);
    };
    sweep_figures(&args, sweep)?;
    let mut runs = args.runs.clone();
    if args.curves {
        let rows = results::read(&results::path(sweep))?;
        runs.extend(rows.iter().map(|r| results::run_dir(sweep, r)));
    }
    match runs.is_empty() {
        true => Ok(()),
        false => curves(&runs, &args.out),
    }
}

/// `curves.svg` and `curves.png` of `runs` in `out`.
fn curves(runs: &[PathBuf], out: &Path) -> Result<()> {
    let curves = (runs.iter())
        .map(|r| crate::experiment::curves::Curve::of_run(r))
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    crate::experiment::curves::draw(&curves, out)?;
    crate::outln!(
        "wrote {} and curves.png ({} runs)",
        out.join("curves.svg").display(),
        curves.len()
    )
}

/// The trade-off figure, the comparison at equal KL and the samples of the sweep in
/// `sweep`.
fn sweep_figures(args: &PlotRequest, sweep: &Path) -> Result<()> {
    let csv = results::path(sweep);
    if !csv.exists() {
        return Err(Error::Data(format!(
            "{} has no results.csv: run `ibvae sweep --out {}` first",
            sweep.display(),
            sweep.display()
        )));
    }
    let rows = results::read(&csv)?;
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let config = rows
        .first()
        .and_then(|r| RunDir::new(results::run_dir(sweep, r)).read_config().ok());
    crate::experiment::plot::tradeoff(&rows, &args.out, &tradeoff_title(config.as_ref()))?;
    crate::outln!(
        "wrote {} and tradeoff.png",
        args.out.join("tradeoff.svg").display()
    )?;
    compare_curves(&rows, &args.out)?;
    if args.samples == 0 {
        return Ok(());
    }
    let chosen = runs_to_sample(&rows);
    if chosen.is_empty() {
        crate::outln!("no GD or VB runs: samples.png skipped")?;
        return Ok(());
    }
    let preset = config.map(|c| c.preset.to_string()).unwrap_or_default();
    // The samples' labels name the seed where the sweep has several.
    let seeded = rows.iter().any(|r| r.seed != rows[0].seed);
    samples_figure(args, sweep, &chosen, seeded, &preset)
}

/// The figure's title: the model and the images of the sweep's first run.
fn tradeoff_title(config: Option<&ExperimentConfig>) -> String {
    match config {
        Some(c) => format!(
            "Latent use against fit: {} model, {s}x{s} {} test images",
            c.preset,
            if c.model.image_channels == 1 {
                "grey"
            } else {
                "RGB"
            },
            s = c.model.image_size,
        ),
        None => "Latent use against fit, test set".to_string(),
    }
}

/// The weakest and the strongest run of each curve (two GD rates, two VB weights), of
/// the first seed when the sweep has several.
fn runs_to_sample(rows: &[ResultRow]) -> Vec<&ResultRow> {
    let first_seed = rows.iter().map(|r| r.seed).min().unwrap_or(0);
    let mut curves: Vec<PlotStyle> = Vec::new();
    for r in rows.iter().filter(|r| r.spec.plot_style().curve) {
        if !curves.contains(&r.spec.plot_style()) {
            curves.push(r.spec.plot_style());
        }
    }
    let mut chosen = Vec::new();
    for style in curves {
        let mut of_kind: Vec<&ResultRow> = rows
            .iter()
            .filter(|r| r.spec.plot_style() == style && r.seed == first_seed)
            .collect();
        of_kind.sort_by(|a, b| a.spec.value().total_cmp(&b.spec.value()));
        if let Some(first) = of_kind.first() {
            chosen.push(*first);
        }
        if of_kind.len() > 1 {
            chosen.push(of_kind[of_kind.len() - 1]);
        }
    }
    chosen
}

/// `samples.png`: `args.samples` samples from the prior of each chosen run, a row each.
fn samples_figure(
    args: &PlotRequest,
    sweep: &Path,
    chosen: &[&ResultRow],
    seeded: bool,
    preset: &str,
) -> Result<()> {
    let device = args.runtime.start()?;
    let mut panel = Vec::new();
    let (mut channels, mut size) = (3, 32);
    for row in chosen {
        let dir = results::run_dir(sweep, row);
        let (config, model) = crate::training::restore::load_for_inference(&dir, device)?;
        channels = config.model.image_channels;
        size = config.model.image_size;
        let draw = Draw {
            channels,
            size,
            temperature: 1.0,
            seed: args.seed,
            method: Method::Cached,
        };
        let bar = row_bar(size, &format!("sampling {}", row.run));
        let bytes = crate::training::sample::sample_prior(&model, args.samples, &draw, |r, _| {
            bar.set_position(r as u64)
        });
        bar.finish_and_clear();
        panel.push((sample_caption(row, seeded), bytes));
    }
    let path = args.out.join("samples.png");
    crate::experiment::plot::samples_panel(
        &panel,
        args.samples,
        channels,
        size,
        &path,
        &format!("Samples (z from the prior), {preset} model"),
    )?;
    crate::outln!("wrote {}", path.display())?;
    Ok(())
}

/// The label of a run's samples: its bottleneck, its KL, and its seed in a sweep over
/// seeds.
fn sample_caption(row: &ResultRow, seeded: bool) -> String {
    match seeded {
        true => format!(
            "{} (seed {}, KL {:.3})",
            row.spec.caption(),
            row.seed,
            row.terms.kl
        ),
        false => format!("{} (KL {:.3})", row.spec.caption(), row.terms.kl),
    }
}

/// Every VB point against the GD curve at the same KL (and the reverse), printed and
/// written to `at_equal_kl.json`: the paper's question, whether GD reaches a better
/// ELBO than VB for the same latent use.
fn compare_curves(rows: &[ResultRow], out: &Path) -> Result<()> {
    let (gd, vb) = (BottleneckKind::Gd, BottleneckKind::Vb);
    let vb_vs_gd = stats::compare_at_equal_kl(rows, vb, gd);
    let gd_vs_vb = stats::compare_at_equal_kl(rows, gd, vb);
    if vb_vs_gd.is_empty() || gd_vs_vb.is_empty() {
        return Ok(());
    }
    print_at_equal_kl(vb_vs_gd.iter().chain(&gd_vs_vb))?;
    let paired = stats::compare_by_seed(rows, vb, gd);
    if paired.iter().any(|p| p.runs.len() > 1) {
        print_by_seed(&paired)?;
    }
    let json = serde_json::json!({
        "vb_vs_gd": vb_vs_gd,
        "gd_vs_vb": gd_vs_vb,
        "vb_vs_gd_by_seed": paired,
    });
    let path = out.join("at_equal_kl.json");
    crate::io::fsutil::write_atomic_str(
        &path,
        &(serde_json::to_string_pretty(&json).expect("serialises") + "\n"),
    )?;
    crate::outln!("wrote {}", path.display())?;
    Ok(())
}

/// A table of points against the other curve at their KL.
fn print_at_equal_kl<'a>(comparisons: impl Iterator<Item = &'a AtEqualKl>) -> Result<()> {
    crate::outln!(
        "at equal KL (bits/dim; the other curve interpolated between its two neighbours; \
         spread: half the range for two seeds, one standard deviation for more):"
    )?;
    crate::outln!(
        "{:<10} {:>5} {:>8} {:>16} {:>18} {:>11}",
        "run",
        "seeds",
        "KL",
        "-ELBO +- spread",
        "other +- spread",
        "difference"
    )?;
    for c in comparisons {
        let other = match (c.other_nelbo_bpd, c.other_spread) {
            (Some(v), Some(s)) => format!("{v:.4} +- {s:.4}"),
            _ => "outside its KLs".into(),
        };
        crate::outln!(
            "{:<10} {:>5} {:>8.4} {:>16} {:>18} {:>11}",
            c.point.to_string(),
            c.seeds,
            c.kl_bpd,
            format!("{:.4} +- {:.4}", c.nelbo_bpd, c.nelbo_spread),
            other,
            c.difference.map_or("-".into(), |d| format!("{d:+.4}"))
        )?;
    }
    Ok(())
}

/// A table of VB points against the GD curve of each run's own seed.
fn print_by_seed(paired: &[PairedBySeed]) -> Result<()> {
    crate::outln!("seed by seed (each VB run against the GD curve of its own seed; bits/dim):")?;
    crate::outln!(
        "{:<10} {:>5} {:>16} {:>8}",
        "run",
        "runs",
        "mean difference",
        "sd"
    )?;
    for p in paired {
        let fmt = |v: Option<f64>, plus: bool| match v {
            Some(v) if plus => format!("{v:+.4}"),
            Some(v) => format!("{v:.4}"),
            None => "-".into(),
        };
        crate::outln!(
            "{:<10} {:>5} {:>16} {:>8}{}",
            p.point.to_string(),
            p.runs.len(),
            fmt(p.mean_difference, true),
            fmt(p.sd_difference, false),
            match p.outside {
                0 => String::new(),
                k => format!("  ({k} outside the KLs of its seed's GD runs)"),
            }
        )?;
    }
    Ok(())
}
