//! `ibvae plot`: the trade-off figure and the sample panel of a sweep.

use std::path::PathBuf;

use super::row_bar;
use crate::engine::Runtime;
use crate::error::{Error, Result};
use crate::io::run_dir::RunDir;

/// What `ibvae plot` was asked to draw.
#[derive(Debug, Clone)]
pub struct PlotRequest {
    /// A sweep's output directory (with `results.csv`).
    pub sweep: PathBuf,
    pub out: PathBuf,
    /// Samples per run in `samples.png` (0 skips them).
    pub samples: usize,
    pub seed: u64,
    pub runtime: Runtime,
}

pub fn run(args: PlotRequest) -> Result<()> {
    let csv = args.sweep.join("results.csv");
    if !csv.exists() {
        return Err(Error::Data(format!(
            "{} has no results.csv: run `ibvae sweep --out {}` first",
            args.sweep.display(),
            args.sweep.display()
        )));
    }
    let rows = crate::experiment::sweep::read_results(&csv)?;
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let config = rows.first().and_then(|r| {
        RunDir::new(crate::experiment::sweep::run_dir(&args.sweep, r))
            .read_config()
            .ok()
    });
    let preset = config
        .as_ref()
        .map(|c| c.preset.to_string())
        .unwrap_or_default();
    let title = match config {
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
    };
    crate::experiment::plot::tradeoff(&rows, &args.out, &title)?;
    println!(
        "wrote {} and tradeoff.png",
        args.out.join("tradeoff.svg").display()
    );
    compare_curves(&rows, &args.out)?;
    if args.samples == 0 {
        return Ok(());
    }
    // The weakest and the strongest run of each curve (two GD rates, two VB weights), of
    // the first seed when the sweep has several.
    let first_seed = rows.iter().map(|r| r.seed).min().unwrap_or(0);
    let seeded = rows.iter().any(|r| r.seed != first_seed);
    let mut chosen = Vec::new();
    let mut curves: Vec<crate::model::bottleneck::PlotStyle> = Vec::new();
    for r in rows.iter().filter(|r| r.spec.plot_style().curve) {
        if !curves.contains(&r.spec.plot_style()) {
            curves.push(r.spec.plot_style());
        }
    }
    for style in curves {
        let mut of_kind: Vec<&crate::experiment::sweep::ResultRow> = rows
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
    if chosen.is_empty() {
        println!("no GD or VB runs: samples.png skipped");
        return Ok(());
    }
    let device = args.runtime.start()?;
    let mut panel = Vec::new();
    let (mut channels, mut size) = (3, 32);
    for row in chosen {
        let dir = crate::experiment::sweep::run_dir(&args.sweep, row);
        let (config, model) = crate::training::restore::load_for_inference(&dir, device)?;
        channels = config.model.image_channels;
        size = config.model.image_size;
        let draw = crate::training::sample::Draw {
            channels,
            size,
            temperature: 1.0,
            seed: args.seed,
            method: crate::training::sample::Method::Cached,
        };
        let bar = row_bar(size, &format!("sampling {}", row.run));
        let bytes = crate::training::sample::sample_prior(&model, args.samples, &draw, |r, _| {
            bar.set_position(r as u64)
        });
        bar.finish_and_clear();
        panel.push((
            match seeded {
                true => format!(
                    "{} (seed {}, KL {:.3})",
                    row.spec.caption(),
                    row.seed,
                    row.kl_bpd
                ),
                false => format!("{} (KL {:.3})", row.spec.caption(), row.kl_bpd),
            },
            bytes,
        ));
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
    println!("wrote {}", path.display());
    Ok(())
}

/// Every VB point against the GD curve at the same KL (and the reverse), printed and
/// written to `at_equal_kl.json`: the paper's question, whether GD reaches a better
/// ELBO than VB for the same latent use.
fn compare_curves(
    rows: &[crate::experiment::sweep::ResultRow],
    out: &std::path::Path,
) -> Result<()> {
    use crate::model::bottleneck::BottleneckSpec;
    let gd = BottleneckSpec::Gd { rate: 0.1 }.plot_style().legend;
    let vb = BottleneckSpec::Vb { beta: 0.1 }.plot_style().legend;
    let vb_vs_gd = crate::experiment::plot::compare_at_equal_kl(rows, vb, gd);
    let gd_vs_vb = crate::experiment::plot::compare_at_equal_kl(rows, gd, vb);
    if vb_vs_gd.is_empty() || gd_vs_vb.is_empty() {
        return Ok(());
    }
    println!(
        "at equal KL (bits/dim; the other curve interpolated between its two neighbours; \
         spread: half the range for two seeds, one standard deviation for more):"
    );
    println!(
        "{:<10} {:>5} {:>8} {:>16} {:>18} {:>11}",
        "run", "seeds", "KL", "-ELBO +- spread", "other +- spread", "difference"
    );
    for c in vb_vs_gd.iter().chain(&gd_vs_vb) {
        let other = match (c.other_nelbo_bpd, c.other_spread) {
            (Some(v), Some(s)) => format!("{v:.4} +- {s:.4}"),
            _ => "outside its KLs".into(),
        };
        println!(
            "{:<10} {:>5} {:>8.4} {:>16} {:>18} {:>11}",
            c.point,
            c.seeds,
            c.kl_bpd,
            format!("{:.4} +- {:.4}", c.nelbo_bpd, c.nelbo_spread),
            other,
            c.difference.map_or("-".into(), |d| format!("{d:+.4}"))
        );
    }
    let paired = crate::experiment::plot::compare_by_seed(rows, vb, gd);
    if paired.iter().any(|p| p.runs.len() > 1) {
        println!("seed by seed (each VB run against the GD curve of its own seed; bits/dim):");
        println!(
            "{:<10} {:>5} {:>16} {:>8}",
            "run", "runs", "mean difference", "sd"
        );
        for p in &paired {
            let fmt = |v: Option<f64>, plus: bool| match v {
                Some(v) if plus => format!("{v:+.4}"),
                Some(v) => format!("{v:.4}"),
                None => "-".into(),
            };
            println!(
                "{:<10} {:>5} {:>16} {:>8}{}",
                p.point,
                p.runs.len(),
                fmt(p.mean_difference, true),
                fmt(p.sd_difference, false),
                match p.outside {
                    0 => String::new(),
                    k => format!("  ({k} outside the KLs of its seed's GD runs)"),
                }
            );
        }
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
    println!("wrote {}", path.display());
    Ok(())
}
