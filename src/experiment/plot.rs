//! `ibvae plot`: the paper's figures from a sweep. `tradeoff.svg` / `tradeoff.png` (its
//! Figure 2: test negative ELBO against VAE KL, GD and VB as curves ordered by strength,
//! the baselines as points) and `samples.png` (its Figure 3: samples for two GD rates
//! and two VB weights).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{Error, Result};
use crate::experiment::sweep::ResultRow;
use crate::model::bottleneck::{BottleneckSpec, PlotStyle};

/// DejaVu Sans (Bitstream Vera licence, `assets/DejaVuSans-LICENSE.txt`), embedded so
/// that PNG text renders on machines without system fonts.
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

fn register_font() -> Result<()> {
    // Registering twice is harmless; a failure means the embedded file is broken.
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| Error::Config("the embedded font could not be read".into()))
}

fn plot_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Config(format!("drawing the figure failed: {e:?}"))
}

/// A mean over the seeds of one configuration and its spread: the standard deviation
/// for three seeds or more, the range for two, nothing for one.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spread {
    mean: f64,
    lo: f64,
    hi: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        match values.len() {
            1 => Self {
                mean,
                lo: mean,
                hi: mean,
            },
            2 => Self {
                mean,
                lo: values[0].min(values[1]),
                hi: values[0].max(values[1]),
            },
            _ => {
                let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
                Self {
                    mean,
                    lo: mean - var.sqrt(),
                    hi: mean + var.sqrt(),
                }
            }
        }
    }
}

/// The runs of one bottleneck, one per seed, as one point of the figure.
#[derive(Debug, Clone)]
struct Point {
    spec: BottleneckSpec,
    kl: Spread,
    nelbo: Spread,
    seeds: usize,
}

impl Point {
    fn label(&self) -> String {
        match self.seeds {
            1 => self.spec.strength_label(),
            n => format!("{} ({n} seeds)", self.spec.strength_label()),
        }
    }
}

/// One point per bottleneck, in the order the rows first show it.
fn points(rows: &[ResultRow]) -> Vec<Point> {
    let mut specs: Vec<BottleneckSpec> = Vec::new();
    for r in rows {
        if !specs.contains(&r.spec) {
            specs.push(r.spec);
        }
    }
    specs
        .into_iter()
        .map(|spec| {
            let of: Vec<&ResultRow> = rows.iter().filter(|r| r.spec == spec).collect();
            let kl: Vec<f64> = of.iter().map(|r| r.kl_bpd).collect();
            let nelbo: Vec<f64> = of.iter().map(|r| r.nelbo_bpd).collect();
            Point {
                spec,
                kl: Spread::of(&kl),
                nelbo: Spread::of(&nelbo),
                seeds: of.len(),
            }
        })
        .collect()
}

/// Draws the trade-off figure on `root`.
fn draw_tradeoff<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    rows: &[ResultRow],
    title: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(plot_err)?;
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    let points = points(rows);
    for p in &points {
        x0 = x0.min(p.kl.lo);
        x1 = x1.max(p.kl.hi);
        y0 = y0.min(p.nelbo.lo);
        y1 = y1.max(p.nelbo.hi);
    }
    // Margins so that points and labels sit inside the axes.
    // Room for the labels, which sit to the right of their points.
    let (dx, dy) = (((x1 - x0) * 0.2).max(1e-3), ((y1 - y0) * 0.12).max(1e-3));
    // Enough decimals to tell the ticks apart.
    let decimals = |span: f64| (2.0 - span.log10().floor()).clamp(2.0, 6.0) as usize;
    let (xd, yd) = (decimals(x1 - x0 + 2.0 * dx), decimals(y1 - y0 + 2.0 * dy));
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((x0 - dx)..(x1 + dx), (y0 - dy)..(y1 + dy))
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("VAE KL (bits/dim)")
        .y_desc("test negative ELBO (bits/dim, lower is better)")
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 13))
        .x_label_formatter(&|v| format!("{v:.xd$}"))
        .y_label_formatter(&|v| format!("{v:.yd$}"))
        .draw()
        .map_err(plot_err)?;
    // One group per style, in the order the points first show it: curves ordered by
    // strength, points for the baselines; error bars where a point has several seeds.
    let mut groups: Vec<(PlotStyle, Vec<&Point>)> = Vec::new();
    for p in &points {
        let style = p.spec.plot_style();
        match groups.iter_mut().find(|(s, _)| *s == style) {
            Some((_, members)) => members.push(p),
            None => groups.push((style, vec![p])),
        }
    }
    for (style, mut pts) in groups {
        let (r, g, b) = style.color;
        let color = RGBColor(r, g, b);
        pts.sort_by(|a, b| a.spec.value().total_cmp(&b.spec.value()));
        let line: Vec<(f64, f64)> = pts.iter().map(|p| (p.kl.mean, p.nelbo.mean)).collect();
        if style.curve {
            chart
                .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(style.legend)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(line.iter().map(|&p| Circle::new(p, 5, color.filled())))
                .map_err(plot_err)?;
        } else {
            chart
                .draw_series(
                    line.iter()
                        .map(|&p| TriangleMarker::new(p, 8, color.filled())),
                )
                .map_err(plot_err)?
                .label(style.legend)
                .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 6, color.filled()));
        }
        let spread: Vec<&&Point> = pts.iter().filter(|p| p.seeds > 1).collect();
        let bar = color.stroke_width(1);
        chart
            .draw_series(spread.iter().map(|p| {
                let (x, y) = (p.kl.mean, p.nelbo.mean);
                ErrorBar::new_vertical(x, p.nelbo.lo, y, p.nelbo.hi, bar, 6)
            }))
            .map_err(plot_err)?;
        chart
            .draw_series(spread.iter().map(|p| {
                let (x, y) = (p.kl.mean, p.nelbo.mean);
                ErrorBar::new_horizontal(y, p.kl.lo, x, p.kl.hi, bar, 6)
            }))
            .map_err(plot_err)?;
        chart
            .draw_series(pts.iter().map(|p| {
                // The label sits a few pixels right of and above its point.
                EmptyElement::at((p.kl.mean, p.nelbo.mean))
                    + Text::new(
                        p.label(),
                        (8, -16),
                        ("sans-serif", 13).into_font().color(&color),
                    )
            }))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Writes `tradeoff.svg` and `tradeoff.png` into `out`.
pub fn tradeoff(rows: &[ResultRow], out: &Path, title: &str) -> Result<()> {
    if rows.is_empty() {
        return Err(Error::Data("results.csv has no runs to plot".into()));
    }
    register_font()?;
    let (w, h) = (900u32, 650u32);
    {
        let svg = out.join("tradeoff.svg");
        let root = SVGBackend::new(&svg, (w, h)).into_drawing_area();
        draw_tradeoff(&root, rows, title)?;
    }
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw_tradeoff(&root, rows, title)?;
    }
    crate::io::image::write_png(&out.join("tradeoff.png"), w as usize, h as usize, &rgb, 1)
}

/// One point of one curve set against another curve at the same KL: the other curve's
/// test negative ELBO interpolated linearly in KL between its two neighbouring points
/// (means over seeds), with its spread interpolated the same way.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AtEqualKl {
    /// The point's bottleneck, e.g. `vb:0.1`.
    pub point: String,
    pub seeds: usize,
    pub kl_bpd: f64,
    /// The point's mean test negative ELBO and its spread (half of hi - lo).
    pub nelbo_bpd: f64,
    pub nelbo_spread: f64,
    /// The other curve at this KL (`None` outside the KLs it covers).
    pub other_nelbo_bpd: Option<f64>,
    pub other_spread: Option<f64>,
    /// `nelbo_bpd - other_nelbo_bpd`: positive when the other curve is better.
    pub difference: Option<f64>,
}

/// Each point of the curve whose style has `legend` against the curve whose style has
/// `other` (e.g. every VB point against GD), from the means over seeds.
pub fn compare_at_equal_kl(rows: &[ResultRow], legend: &str, other: &str) -> Vec<AtEqualKl> {
    let all = points(rows);
    let half = |s: &Spread| (s.hi - s.lo) / 2.0;
    // (KL, [-ELBO, its spread]) of the other curve's points, in order of KL.
    let mut curve: Vec<(f64, [f64; 2])> = all
        .iter()
        .filter(|p| p.spec.plot_style().legend == other)
        .map(|p| (p.kl.mean, [p.nelbo.mean, half(&p.nelbo)]))
        .collect();
    curve.sort_by(|a, b| a.0.total_cmp(&b.0));
    all.iter()
        .filter(|p| p.spec.plot_style().legend == legend)
        .map(|p| {
            let kl = p.kl.mean;
            let at = interpolate(&curve, kl).map(|[nelbo, spread]| (nelbo, spread));
            AtEqualKl {
                point: p.spec.to_string(),
                seeds: p.seeds,
                kl_bpd: kl,
                nelbo_bpd: p.nelbo.mean,
                nelbo_spread: half(&p.nelbo),
                other_nelbo_bpd: at.map(|a| a.0),
                other_spread: at.map(|a| a.1),
                difference: at.map(|a| p.nelbo.mean - a.0),
            }
        })
        .collect()
}

/// One point of one curve against the other curve of the same seed, seed by seed: for
/// each run of the point, the other curve drawn through that seed's runs alone and
/// interpolated linearly at the run's KL. Paired by seed, the differences measure the
/// gap with each seed's own noise in both curves, and their spread is the seed spread of
/// the gap itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PairedBySeed {
    /// The point's bottleneck, e.g. `vb:0.1`.
    pub point: String,
    /// `(seed, KL, difference)` of each run inside the other curve's KLs of its seed:
    /// the run's test negative ELBO minus the other curve's at its KL (positive when the
    /// other curve is better).
    pub runs: Vec<(u64, f64, f64)>,
    /// Runs outside the KLs that the other curve of their seed covers.
    pub outside: usize,
    /// Mean of the differences and their standard deviation (`None` below two runs).
    pub mean_difference: Option<f64>,
    pub sd_difference: Option<f64>,
}

/// The values of `curve` (`(KL, values)` sorted by KL) at `kl`, each linearly between
/// its two neighbours; `None` outside its KLs.
fn interpolate<const N: usize>(curve: &[(f64, [f64; N])], kl: f64) -> Option<[f64; N]> {
    let w = curve.windows(2).find(|w| w[0].0 <= kl && kl <= w[1].0)?;
    let span = w[1].0 - w[0].0;
    let t = if span > 0.0 {
        (kl - w[0].0) / span
    } else {
        0.0
    };
    Some(std::array::from_fn(|i| {
        w[0].1[i] + t * (w[1].1[i] - w[0].1[i])
    }))
}

/// Each point of the curve whose style has `legend` against the curve whose style has
/// `other`, seed by seed (see [`PairedBySeed`]).
pub fn compare_by_seed(rows: &[ResultRow], legend: &str, other: &str) -> Vec<PairedBySeed> {
    let style = |r: &ResultRow| r.spec.plot_style().legend;
    let mut specs: Vec<BottleneckSpec> = Vec::new();
    for r in rows.iter().filter(|r| style(r) == legend) {
        if !specs.contains(&r.spec) {
            specs.push(r.spec);
        }
    }
    specs
        .into_iter()
        .map(|spec| {
            let mut runs = Vec::new();
            let mut outside = 0;
            for r in rows.iter().filter(|r| r.spec == spec) {
                let mut curve: Vec<(f64, [f64; 1])> = rows
                    .iter()
                    .filter(|o| style(o) == other && o.seed == r.seed)
                    .map(|o| (o.kl_bpd, [o.nelbo_bpd]))
                    .collect();
                curve.sort_by(|a, b| a.0.total_cmp(&b.0));
                match interpolate(&curve, r.kl_bpd) {
                    Some([at]) => runs.push((r.seed, r.kl_bpd, r.nelbo_bpd - at)),
                    None => outside += 1,
                }
            }
            let d: Vec<f64> = runs.iter().map(|r| r.2).collect();
            let n = d.len() as f64;
            let mean = (!d.is_empty()).then(|| d.iter().sum::<f64>() / n);
            let sd = mean
                .filter(|_| d.len() > 1)
                .map(|m| (d.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
            PairedBySeed {
                point: spec.to_string(),
                runs,
                outside,
                mean_difference: mean,
                sd_difference: sd,
            }
        })
        .collect()
}

/// A labelled panel: one row of sample images per entry, the label on its left.
/// `rows` holds `(label, bytes [n, C, S, S])`.
pub fn samples_panel(
    rows: &[(String, Vec<u8>)],
    n: usize,
    channels: usize,
    size: usize,
    path: &Path,
    title: &str,
) -> Result<()> {
    register_font()?;
    let scale = 2usize;
    let cell = size * scale + 4;
    let label_w = 250usize;
    let top = 40usize;
    let (w, h) = (label_w + n * cell + 10, top + rows.len() * cell + 10);
    let mut rgb = vec![255u8; w * h * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w as u32, h as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        root.draw(&Text::new(title.to_string(), (10, 10), ("sans-serif", 18)))
            .map_err(plot_err)?;
        let plane = size * size;
        for (r, (label, bytes)) in rows.iter().enumerate() {
            let y0 = top + r * cell;
            root.draw(&Text::new(
                label.clone(),
                (10, (y0 + cell / 2 - 8) as i32),
                ("sans-serif", 16),
            ))
            .map_err(plot_err)?;
            for i in 0..n {
                let x0 = label_w + i * cell;
                let img = &bytes[i * channels * plane..(i + 1) * channels * plane];
                for y in 0..size * scale {
                    for x in 0..size * scale {
                        let at = (y / scale) * size + x / scale;
                        let px = |c: usize| img[if channels == 3 { c } else { 0 } * plane + at];
                        root.draw_pixel(
                            ((x0 + x) as i32, (y0 + y) as i32),
                            &RGBColor(px(0), px(1), px(2)),
                        )
                        .map_err(plot_err)?;
                    }
                }
            }
        }
        root.present().map_err(plot_err)?;
    }
    crate::io::image::write_png(path, w, h, &rgb, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, strength: f64, nelbo: f64, kl: f64) -> ResultRow {
        let spec =
            crate::model::bottleneck::BottleneckSpec::from_kind_value(kind, strength).unwrap();
        ResultRow {
            spec,
            seed: 0,
            nelbo_bpd: nelbo,
            kl_bpd: kl,
            run: format!("{kind}-{strength}"),
        }
    }

    #[test]
    fn seeds_become_a_mean_with_its_spread() {
        // Two seeds: the range; three: one standard deviation (n - 1) each side; by hand.
        assert_eq!(
            Spread::of(&[2.0, 1.0]),
            Spread {
                mean: 1.5,
                lo: 1.0,
                hi: 2.0
            }
        );
        assert_eq!(
            Spread::of(&[1.0, 2.0, 3.0]),
            Spread {
                mean: 2.0,
                lo: 1.0,
                hi: 3.0
            }
        );
        assert_eq!(
            Spread::of(&[4.0]),
            Spread {
                mean: 4.0,
                lo: 4.0,
                hi: 4.0
            }
        );
        let rows: Vec<ResultRow> = [5.0, 5.2, 5.4]
            .iter()
            .enumerate()
            .map(|(i, &nelbo)| ResultRow {
                seed: i as u64,
                ..row("gd", 0.15, nelbo, 0.01 * (i + 1) as f64)
            })
            .chain([row("vb", 0.1, 5.3, 0.02)])
            .collect();
        let pts = points(&rows);
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[0].seeds, 3);
        assert!((pts[0].nelbo.mean - 5.2).abs() < 1e-12 && (pts[0].nelbo.hi - 5.4).abs() < 1e-12);
        let tmp = tempfile::tempdir().unwrap();
        tradeoff(&rows, tmp.path(), "seeds").unwrap();
        let svg = std::fs::read_to_string(tmp.path().join("tradeoff.svg")).unwrap();
        assert!(
            svg.contains("p=0.15 (3 seeds)"),
            "the label says how many seeds"
        );
    }

    /// GD at (KL 0.1, 5.0) and (KL 0.3, 4.0), two seeds each, ranges 0.2 and 0.4 (so
    /// spreads 0.1 and 0.2); VB at KL 0.2 (5.0) sits where GD's curve is 4.5 with spread
    /// 0.15 (by hand); VB at KL 0.5 is beyond GD's KLs.
    #[test]
    fn points_compared_at_equal_kl_by_hand() {
        let seeded = |kind, strength, nelbo: f64, spread: f64, kl| {
            [-spread, spread].map(|d| ResultRow {
                seed: (d > 0.0) as u64,
                ..row(kind, strength, nelbo + d, kl)
            })
        };
        let mut rows = Vec::new();
        rows.extend(seeded("gd", 0.1, 5.0, 0.1, 0.1));
        rows.extend(seeded("gd", 0.5, 4.0, 0.2, 0.3));
        rows.push(row("vb", 0.1, 5.0, 0.2));
        rows.push(row("vb", 1.0, 6.0, 0.5));
        let gd = BottleneckSpec::Gd { rate: 0.1 }.plot_style().legend;
        let vb = BottleneckSpec::Vb { beta: 0.1 }.plot_style().legend;
        let c = compare_at_equal_kl(&rows, vb, gd);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].point, "vb:0.1");
        assert!((c[0].other_nelbo_bpd.unwrap() - 4.5).abs() < 1e-12);
        assert!((c[0].other_spread.unwrap() - 0.15).abs() < 1e-12);
        assert!((c[0].difference.unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(c[1].other_nelbo_bpd, None);
    }

    /// Two seeds. Seed 0: GD (KL 0.1, 5.0), (KL 0.3, 4.0); seed 1: GD (KL 0.1, 5.2),
    /// (KL 0.2, 4.2). VB at KL 0.2 in seed 0 (4.8) meets GD's seed-0 line at 4.5:
    /// +0.3; VB at KL 0.15 in seed 1 (4.9) meets seed 1's line at 4.7: +0.2; mean 0.25,
    /// sd sqrt(0.005) (by hand). A third VB run (seed 1, KL 0.25) is beyond seed 1's
    /// GD KLs (though inside seed 0's).
    #[test]
    fn points_compared_seed_by_seed_by_hand() {
        let seeded = |kind, strength, nelbo, kl, seed| ResultRow {
            seed,
            ..row(kind, strength, nelbo, kl)
        };
        let rows = vec![
            seeded("gd", 0.1, 5.0, 0.1, 0),
            seeded("gd", 0.5, 4.0, 0.3, 0),
            seeded("gd", 0.1, 5.2, 0.1, 1),
            seeded("gd", 0.5, 4.2, 0.2, 1),
            seeded("vb", 0.1, 4.8, 0.2, 0),
            seeded("vb", 0.1, 4.9, 0.15, 1),
            seeded("vb", 1.0, 6.0, 0.25, 1),
        ];
        let gd = BottleneckSpec::Gd { rate: 0.1 }.plot_style().legend;
        let vb = BottleneckSpec::Vb { beta: 0.1 }.plot_style().legend;
        let c = compare_by_seed(&rows, vb, gd);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].point, "vb:0.1");
        assert_eq!(c[0].runs.len(), 2);
        assert!((c[0].runs[0].2 - 0.3).abs() < 1e-12, "{:?}", c[0].runs);
        assert!((c[0].runs[1].2 - 0.2).abs() < 1e-12, "{:?}", c[0].runs);
        assert!((c[0].mean_difference.unwrap() - 0.25).abs() < 1e-12);
        assert!((c[0].sd_difference.unwrap() - 0.005f64.sqrt()).abs() < 1e-12);
        assert_eq!((c[1].runs.len(), c[1].outside), (0, 1));
        assert_eq!(c[1].mean_difference, None);
    }

    #[test]
    fn tradeoff_figure_is_written_in_both_formats() {
        let tmp = tempfile::tempdir().unwrap();
        let rows = vec![
            row("gd", 0.015, 5.1, 0.01),
            row("gd", 0.15, 5.0, 0.05),
            row("vb", 0.02, 5.2, 0.02),
            row("vb", 0.08, 5.15, 0.04),
            row("none", 0.0, 5.3, 0.001),
            row("aux", 1.0, 5.25, 0.08),
        ];
        tradeoff(&rows, tmp.path(), "test").unwrap();
        let svg = std::fs::read_to_string(tmp.path().join("tradeoff.svg")).unwrap();
        assert!(
            svg.contains("VAE KL (bits/dim)")
                && svg.contains("p=0.15")
                && svg.contains("beta=0.08")
        );
        let png = std::fs::read(tmp.path().join("tradeoff.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        // Not a blank page: the figure has dark pixels (text, axes) and coloured ones.
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut buf).unwrap();
        let dark = buf
            .chunks(3)
            .filter(|p| p[0] < 80 && p[1] < 80 && p[2] < 80)
            .count();
        let blue = buf.chunks(3).filter(|p| p[2] > 150 && p[0] < 60).count();
        assert!(dark > 1000 && blue > 100, "dark {dark}, blue {blue}");
    }
}
