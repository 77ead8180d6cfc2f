//! `ibvae plot`: the paper's figures from a sweep. `tradeoff.svg` / `tradeoff.png` (its
//! Figure 2: test negative ELBO against VAE KL, GD and VB as curves ordered by strength,
//! the baselines as points) and `samples.png` (its Figure 3: samples for two GD rates
//! and two VB weights).

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{Error, Result};
use crate::experiment::stats::{Point, points};
use crate::experiment::sweep::ResultRow;
use crate::model::bottleneck::PlotStyle;

/// DejaVu Sans (Bitstream Vera licence, `assets/DejaVuSans-LICENSE.txt`), embedded so
/// that PNG text renders on machines without system fonts.
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

fn register_font() -> Result<()> {
    // Registering twice is harmless; a failure means the embedded file is broken.
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| Error::Config("the embedded font could not be read".into()))
}

pub(crate) fn plot_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Config(format!("drawing the figure failed: {e:?}"))
}

/// The label beside a point: its strength, and over how many seeds it is the mean.
fn label(p: &Point) -> String {
    match p.seeds {
        1 => p.spec.strength_label(),
        n => format!("{} ({n} seeds)", p.spec.strength_label()),
    }
}

/// The ranges of the axes: every point with its spread, and margins so that points and
/// labels (which sit to the right of their points) stay inside.
#[derive(Debug, Clone, Copy)]
struct Axes {
    x: (f64, f64),
    y: (f64, f64),
}

impl Axes {
    fn around(points: &[Point]) -> Self {
        let (mut x0, mut x1, mut y0, mut y1) = (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        );
        for p in points {
            x0 = x0.min(p.kl.lo);
            x1 = x1.max(p.kl.hi);
            y0 = y0.min(p.nelbo.lo);
            y1 = y1.max(p.nelbo.hi);
        }
        // At least 1e-3 so that a single point still has axes of some width.
        let (dx, dy) = (((x1 - x0) * 0.2).max(1e-3), ((y1 - y0) * 0.12).max(1e-3));
        // KL and the negative ELBO are never negative: neither axis starts below zero.
        Self {
            x: ((x0 - dx).max(0.0), x1 + dx),
            y: ((y0 - dy).max(0.0), y1 + dy),
        }
    }

    /// Enough decimals to tell apart the ticks of an axis from `lo` to `hi`.
    fn decimals((lo, hi): (f64, f64)) -> usize {
        (2.0 - (hi - lo).log10().floor()).clamp(2.0, 6.0) as usize
    }
}

/// The points grouped by style, in the order the points first show each style: the
/// GD curve, the VB curve, the baselines.
fn by_style(points: &[Point]) -> Vec<(PlotStyle, Vec<&Point>)> {
    let mut groups: Vec<(PlotStyle, Vec<&Point>)> = Vec::new();
    for p in points {
        let style = p.spec.plot_style();
        match groups.iter_mut().find(|(s, _)| *s == style) {
            Some((_, members)) => members.push(p),
            None => groups.push((style, vec![p])),
        }
    }
    groups
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

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
    let points = points(rows);
    let axes = Axes::around(&points);
    let (xd, yd) = (Axes::decimals(axes.x), Axes::decimals(axes.y));
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(axes.x.0..axes.x.1, axes.y.0..axes.y.1)
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
    for (style, mut pts) in by_style(&points) {
        pts.sort_by(|a, b| a.spec.value().total_cmp(&b.spec.value()));
        draw_group(&mut chart, style, &pts)?;
    }
    draw_labels(root, &chart, &points)?;
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

/// One style's points (ordered by strength) with their legend entry: a curve through
/// them or single markers, error bars where a point has several seeds, and labels.
fn draw_group<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    style: PlotStyle,
    pts: &[&Point],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (r, g, b) = style.color;
    let color = RGBColor(r, g, b);
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
    draw_error_bars(chart, color, pts)?;
    Ok(())
}

/// The label font's size in pixels, and the width of one character at that size (DejaVu
/// Sans averages about 0.6 of the size; a little more is allowed).
const LABEL_PX: i32 = 13;
const CHAR_PX: f64 = 8.0;

/// Every point's label, placed where it overlaps no other label and no marker: beside
/// its point where there is room, else further away with a thin leader line to it.
fn draw_labels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart<'_, DB>,
    points: &[Point],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let anchors: Vec<(i32, i32)> = (points.iter())
        .map(|p| chart.backend_coord(&(p.kl.mean, p.nelbo.mean)))
        .collect();
    let texts: Vec<String> = points.iter().map(label).collect();
    let sizes: Vec<(i32, i32)> = (texts.iter())
        .map(|t| ((t.chars().count() as f64 * CHAR_PX) as i32, LABEL_PX + 2))
        .collect();
    // Inside the plotting area, off the axes' tick labels.
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let placed = place_labels(&anchors, &sizes, (xs.start, ys.start, xs.end, ys.end));
    for (((p, text), &(ax, ay)), at) in points.iter().zip(&texts).zip(&anchors).zip(placed) {
        let (r, g, b) = p.spec.plot_style().color;
        let color = RGBColor(r, g, b);
        if at.leader {
            // From the point to the nearest point of the label's middle line.
            let end = (ax.clamp(at.x, at.x + at.w), at.y + at.h / 2);
            root.draw(&PathElement::new(vec![(ax, ay), end], color.mix(0.6)))
                .map_err(plot_err)?;
        }
        let font = ("sans-serif", LABEL_PX).into_font().color(&color);
        root.draw(&Text::new(text.clone(), (at.x, at.y), font))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// Where a label goes: its box's top-left corner and size in pixels, and whether it is
/// far enough from its point to need a leader line.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Placed {
    x: i32,
    y: i32,
    w: i32,
    h: i32,
    leader: bool,
}

impl Placed {
    fn overlaps(&self, o: &Placed) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
}

/// Places one label of size `sizes[i]` for each point at pixel `anchors[i]` inside the
/// rectangle `bounds` (left, top, right, bottom): the first of a list of candidate spots, nearest first, whose box
/// overlaps no label placed before and no point's marker. Labels are placed from the most
/// crowded point outwards; where every candidate collides, the last, farthest one is
/// taken (the list reaches far enough that this needs hundreds of points in one place).
fn place_labels(
    anchors: &[(i32, i32)],
    sizes: &[(i32, i32)],
    bounds: (i32, i32, i32, i32),
) -> Vec<Placed> {
    const MARKER: i32 = 7;
    let markers: Vec<Placed> = (anchors.iter())
        .map(|&(x, y)| Placed {
            x: x - MARKER,
            y: y - MARKER,
            w: 2 * MARKER,
            h: 2 * MARKER,
            leader: false,
        })
        .collect();
    // The most crowded points first: the count of others within 60 pixels.
    let crowd = |i: usize| {
        let (x, y) = anchors[i];
        (anchors.iter())
            .filter(|&&(u, v)| (u - x).abs() < 60 && (v - y).abs() < 60)
            .count()
    };
    let mut order: Vec<usize> = (0..anchors.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(crowd(i)), anchors[i].0, anchors[i].1));
    let mut placed: Vec<Option<Placed>> = vec![None; anchors.len()];
    let mut taken: Vec<Placed> = Vec::new();
    for i in order {
        let ((x, y), (w, h)) = (anchors[i], sizes[i]);
        let mut spots = vec![
            (x + 8, y - h - 2, false),
            (x + 8, y + 2, false),
            (x - 8 - w, y - h - 2, false),
            (x - 8 - w, y + 2, false),
        ];
        for k in 1..=24 {
            let d = k * (h + 2);
            for (dx, dy) in [(20, -d), (20, d), (-20 - w, -d), (-20 - w, d)] {
                spots.push((x + dx, y + dy - h / 2, true));
            }
        }
        let inside = |p: &Placed| {
            p.x >= bounds.0 && p.y >= bounds.1 && p.x + p.w <= bounds.2 && p.y + p.h <= bounds.3
        };
        let candidates: Vec<Placed> = (spots.into_iter())
            .map(|(x, y, leader)| Placed { x, y, w, h, leader })
            .collect();
        let free = |p: &Placed| {
            inside(p)
                && !taken.iter().any(|t| t.overlaps(p))
                && !markers.iter().any(|m| m.overlaps(p))
        };
        let at = match candidates.iter().find(|p| free(p)) {
            Some(p) => *p,
            None => *candidates.last().expect("candidates"),
        };
        taken.push(at);
        placed[i] = Some(at);
    }
    placed
        .into_iter()
        .map(|p| p.expect("every label placed"))
        .collect()
}

/// The spread over seeds of each point that has several, in both directions.
fn draw_error_bars<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    color: RGBColor,
    pts: &[&Point],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
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
    Ok(())
}

/// Writes `tradeoff.svg` and `tradeoff.png` into `out`.
pub fn tradeoff(rows: &[ResultRow], out: &Path, title: &str) -> Result<()> {
    if rows.is_empty() {
        return Err(Error::Data("results.csv has no runs to plot".into()));
    }
    write_figure(
        out,
        "tradeoff",
        (900, 650),
        |root| draw_tradeoff(root, rows, title),
        |root| draw_tradeoff(root, rows, title),
    )
}

/// Writes `<stem>.svg` and `<stem>.png` into `out`, the figure of `w` x `h` pixels drawn
/// by `svg` and by `png` (one drawing function, given each backend).
pub(crate) fn write_figure(
    out: &Path,
    stem: &str,
    (w, h): (u32, u32),
    svg: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<()>,
    png: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<()> {
    register_font()?;
    {
        let path = out.join(format!("{stem}.svg"));
        svg(&SVGBackend::new(&path, (w, h)).into_drawing_area())?;
    }
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    png(&BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area())?;
    let path = out.join(format!("{stem}.png"));
    crate::io::image::write_png(&path, w as usize, h as usize, &rgb, 1)
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
    use crate::experiment::stats::tests::{row, three_seeds_of_gd_and_a_vb_run};

    #[test]
    fn a_point_over_seeds_says_how_many() {
        let rows = three_seeds_of_gd_and_a_vb_run();
        let tmp = tempfile::tempdir().unwrap();
        tradeoff(&rows, tmp.path(), "seeds").unwrap();
        let svg = std::fs::read_to_string(tmp.path().join("tradeoff.svg")).unwrap();
        assert!(
            svg.contains("p=0.15 (3 seeds)"),
            "the label says how many seeds"
        );
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

    /// A cluster of points a few pixels apart, as the low-KL corner of a sweep's figure
    /// has: every label gets a box of its own, clear of every marker, inside the canvas.
    #[test]
    fn crowded_labels_never_overlap() {
        let anchors: Vec<(i32, i32)> = (0..12).map(|i| (100 + 3 * i, 300 + 2 * (i % 4))).collect();
        let sizes: Vec<(i32, i32)> = (0..12).map(|i| (40 + 5 * i, 15)).collect();
        let placed = place_labels(&anchors, &sizes, (0, 0, 900, 650));
        for (i, a) in placed.iter().enumerate() {
            assert!(a.x >= 0 && a.y >= 0 && a.x + a.w <= 900 && a.y + a.h <= 650);
            for b in &placed[i + 1..] {
                assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
            }
            for &(x, y) in &anchors {
                let marker = Placed {
                    x: x - 7,
                    y: y - 7,
                    w: 14,
                    h: 14,
                    leader: false,
                };
                assert!(!a.overlaps(&marker), "{a:?} covers the point at {x},{y}");
            }
        }
        // A lone point keeps its label beside it, without a leader line.
        let lone = place_labels(&[(400, 300)], &[(50, 15)], (0, 0, 900, 650));
        assert_eq!(
            lone[0],
            Placed {
                x: 408,
                y: 283,
                w: 50,
                h: 15,
                leader: false
            }
        );
    }
}
