//! Training curves: the negative ELBO and the KL of one or more runs against the step,
//! from their `metrics.jsonl` (training figures of the epoch so far as thin lines, test
//! figures as thick lines with markers), as `curves.svg` and `curves.png`.

use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::io::run_dir::RunDir;

/// One run's figures by step.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// The run's name in the legend (its directory's name).
    pub name: String,
    pub train_nelbo: Vec<(f64, f64)>,
    pub train_kl: Vec<(f64, f64)>,
    pub test_nelbo: Vec<(f64, f64)>,
    pub test_kl: Vec<(f64, f64)>,
}

impl Curve {
    /// The curves of the run in `dir`; a run without a metrics line is an error.
    pub fn of_run(dir: &Path) -> Result<Curve> {
        let run = RunDir::new(dir);
        let lines = run.read_metrics()?;
        if lines.is_empty() {
            return Err(Error::Data(format!(
                "{} has no evaluations in metrics.jsonl yet: nothing to draw",
                dir.display()
            )));
        }
        let name = dir
            .file_name()
            .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into());
        let mut curve = Curve {
            name,
            train_nelbo: Vec::new(),
            train_kl: Vec::new(),
            test_nelbo: Vec::new(),
            test_kl: Vec::new(),
        };
        for m in &lines {
            let Some(step) = m["step"].as_f64() else {
                continue;
            };
            let add = |series: &mut Vec<(f64, f64)>, v: &serde_json::Value| {
                if let Some(v) = v.as_f64().filter(|v| v.is_finite()) {
                    series.push((step, v));
                }
            };
            add(&mut curve.train_nelbo, &m["train_nelbo_bpd"]);
            add(&mut curve.train_kl, &m["train_kl_bpd"]);
            add(&mut curve.test_nelbo, &m["test"]["nelbo_bpd"]);
            add(&mut curve.test_kl, &m["test"]["kl_bpd"]);
        }
        Ok(curve)
    }
}

/// Distinct colours for up to ten runs (then repeated).
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (255, 127, 14),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Writes `curves.svg` and `curves.png` into `out`: the negative ELBO above, the KL
/// below, every run in its own colour.
pub fn draw(curves: &[Curve], out: &Path) -> Result<()> {
    if curves.is_empty() {
        return Err(Error::Config("no runs to draw curves of".into()));
    }
    crate::experiment::plot::write_figure(
        out,
        "curves",
        (900, 900),
        |root| draw_on(root, curves),
        |root| draw_on(root, curves),
    )
}

fn draw_on<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    curves: &[Curve],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    use crate::experiment::plot::plot_err;
    root.fill(&WHITE).map_err(plot_err)?;
    let (top, bottom) = root.split_vertically(root.dim_in_pixel().1 / 2);
    let panels = [
        (
            &top,
            "negative ELBO (bits/dim)",
            curves
                .iter()
                .map(|c| (&c.train_nelbo, &c.test_nelbo))
                .collect::<Vec<_>>(),
        ),
        (
            &bottom,
            "VAE KL (bits/dim)",
            curves
                .iter()
                .map(|c| (&c.train_kl, &c.test_kl))
                .collect::<Vec<_>>(),
        ),
    ];
    for (area, what, series) in panels {
        let all = series.iter().flat_map(|(a, b)| a.iter().chain(b.iter()));
        let (mut x1, mut y0, mut y1) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in all {
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if !y0.is_finite() {
            (y0, y1) = (0.0, 1.0);
        }
        let dy = ((y1 - y0) * 0.08).max(1e-3);
        // Both quantities are never negative: the axis does not start below zero.
        let (y0, y1) = ((y0 - dy).max(0.0), y1 + dy);
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{what} against the step"), ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x1 * 1.02, y0..y1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("training step")
            .y_desc(what)
            .axis_desc_style(("sans-serif", 14))
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(plot_err)?;
        for (i, (c, (train, test))) in curves.iter().zip(&series).enumerate() {
            let (r, g, b) = PALETTE[i % PALETTE.len()];
            let color = RGBColor(r, g, b);
            chart
                .draw_series(LineSeries::new(train.iter().copied(), color.mix(0.5)))
                .map_err(plot_err)?;
            chart
                .draw_series(LineSeries::new(test.iter().copied(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(c.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(test.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(plot_err)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_come_from_metrics_lines_and_are_drawn() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("gd-0.1-s0");
        let run = RunDir::new(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let line = |step: u64, train: Option<f64>, test: f64| {
            let mut m =
                serde_json::json!({"step": step, "test": {"nelbo_bpd": test, "kl_bpd": 0.1}});
            if let Some(t) = train {
                m["train_nelbo_bpd"] = t.into();
                m["train_kl_bpd"] = 0.2.into();
            }
            m
        };
        for m in [
            line(0, None, 8.0),
            line(5, Some(6.0), 5.5),
            line(10, Some(5.0), 4.5),
        ] {
            run.append_metrics(&m).unwrap();
        }
        let c = Curve::of_run(&dir).unwrap();
        assert_eq!(c.name, "gd-0.1-s0");
        assert_eq!(c.test_nelbo, [(0.0, 8.0), (5.0, 5.5), (10.0, 4.5)]);
        assert_eq!(c.train_nelbo, [(5.0, 6.0), (10.0, 5.0)]);
        assert_eq!(c.train_kl, [(5.0, 0.2), (10.0, 0.2)]);
        draw(&[c.clone(), c], tmp.path()).unwrap();
        assert!(
            std::fs::read(tmp.path().join("curves.png"))
                .unwrap()
                .starts_with(b"\x89PNG")
        );
        let svg = std::fs::read_to_string(tmp.path().join("curves.svg")).unwrap();
        assert!(svg.contains("gd-0.1-s0"));
        let empty = tmp.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let err = Curve::of_run(&empty).unwrap_err().to_string();
        assert!(err.contains("no evaluations"), "{err}");
    }
}
