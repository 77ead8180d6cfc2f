//! The statistics of a sweep's results: each configuration's runs (one per seed) as a
//! mean with its spread, and one bottleneck's curve against another's at equal KL, over
//! the means and seed by seed. That is the paper's question: whether GD reaches a better
//! ELBO than VB for the same latent use.

use serde::{Serialize, Serializer};

use crate::experiment::sweep::ResultRow;
use crate::model::bottleneck::BottleneckSpec;

/// Which kind of bottleneck a run has, whatever its strength: runs of one kind form one
/// curve (GD, VB) or one group of baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BottleneckKind {
    Gd,
    Vb,
    None,
    Aux,
}

impl BottleneckKind {
    pub fn of(spec: &BottleneckSpec) -> Self {
        match spec {
            BottleneckSpec::Gd { .. } => Self::Gd,
            BottleneckSpec::Vb { .. } => Self::Vb,
            BottleneckSpec::None => Self::None,
            BottleneckSpec::Aux { .. } => Self::Aux,
        }
    }
}

/// A mean over the seeds of one configuration and its spread: the standard deviation
/// for three seeds or more, the range for two, nothing for one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Self {
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

    /// Half the width of the spread: the `+-` beside the mean.
    pub fn half_width(&self) -> f64 {
        (self.hi - self.lo) / 2.0
    }
}

/// The runs of one bottleneck, one per seed, as one point of the figure.
#[derive(Debug, Clone)]
pub struct Point {
    pub spec: BottleneckSpec,
    /// VAE KL, bits/dim.
    pub kl: Spread,
    /// Test negative ELBO, bits/dim.
    pub nelbo: Spread,
    /// The runs averaged.
    pub seeds: usize,
}

/// One point per bottleneck, in the order the rows first show it.
pub fn points(rows: &[ResultRow]) -> Vec<Point> {
    specs_in_order(rows.iter())
        .into_iter()
        .map(|spec| {
            let of: Vec<&ResultRow> = rows.iter().filter(|r| r.spec == spec).collect();
            let kl: Vec<f64> = of.iter().map(|r| r.terms.kl).collect();
            let nelbo: Vec<f64> = of.iter().map(|r| r.terms.nelbo).collect();
            Point {
                spec,
                kl: Spread::of(&kl),
                nelbo: Spread::of(&nelbo),
                seeds: of.len(),
            }
        })
        .collect()
}

/// The bottlenecks of `rows`, each once, in the order the rows first show them.
fn specs_in_order<'a>(rows: impl Iterator<Item = &'a ResultRow>) -> Vec<BottleneckSpec> {
    let mut specs: Vec<BottleneckSpec> = Vec::new();
    for r in rows {
        if !specs.contains(&r.spec) {
            specs.push(r.spec);
        }
    }
    specs
}

/// The values of `curve` (`(KL, values)` sorted by KL) at `kl`, each linearly between
/// its two neighbours; `None` outside its KLs.
fn interpolate<const N: usize>(curve: &[(f64, [f64; N])], kl: f64) -> Option<[f64; N]> {
    let w = curve.windows(2).find(|w| w[0].0 <= kl && kl <= w[1].0)?;
    let span = w[1].0 - w[0].0;
    // Two points at the same KL: the first one's values.
    let t = if span > 0.0 {
        (kl - w[0].0) / span
    } else {
        0.0
    };
    Some(std::array::from_fn(|i| {
        w[0].1[i] + t * (w[1].1[i] - w[0].1[i])
    }))
}

/// One point of one curve set against another curve at the same KL: the other curve's
/// test negative ELBO interpolated linearly in KL between its two neighbouring points
/// (means over seeds), with its spread interpolated the same way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AtEqualKl {
    /// The point's bottleneck (written as `vb:0.1`).
    pub point: BottleneckSpec,
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

/// Each point of the `kind` curve against the `other` curve (e.g. every VB point against
/// GD), from the means over seeds.
pub fn compare_at_equal_kl(
    rows: &[ResultRow],
    kind: BottleneckKind,
    other: BottleneckKind,
) -> Vec<AtEqualKl> {
    let all = points(rows);
    let of = |k: BottleneckKind| all.iter().filter(move |p| BottleneckKind::of(&p.spec) == k);
    // (KL, [-ELBO, its spread]) of the other curve's points, in order of KL.
    let mut curve: Vec<(f64, [f64; 2])> = of(other)
        .map(|p| (p.kl.mean, [p.nelbo.mean, p.nelbo.half_width()]))
        .collect();
    curve.sort_by(|a, b| a.0.total_cmp(&b.0));
    of(kind)
        .map(|p| {
            let kl = p.kl.mean;
            let at = interpolate(&curve, kl);
            AtEqualKl {
                point: p.spec,
                seeds: p.seeds,
                kl_bpd: kl,
                nelbo_bpd: p.nelbo.mean,
                nelbo_spread: p.nelbo.half_width(),
                other_nelbo_bpd: at.map(|[nelbo, _]| nelbo),
                other_spread: at.map(|[_, spread]| spread),
                difference: at.map(|[nelbo, _]| p.nelbo.mean - nelbo),
            }
        })
        .collect()
}

/// One point of one curve against the other curve of the same seed, seed by seed: for
/// each run of the point, the other curve drawn through that seed's runs alone and
/// interpolated linearly at the run's KL. Paired by seed, the differences measure the
/// gap with each seed's own noise in both curves, and their spread is the seed spread of
/// the gap itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedBySeed {
    /// The point's bottleneck (written as `vb:0.1`).
    pub point: BottleneckSpec,
    /// Each run inside the other curve's KLs of its seed.
    pub runs: Vec<PairedRun>,
    /// Runs outside the KLs that the other curve of their seed covers.
    pub outside: usize,
    /// Mean of the differences and their standard deviation (`None` below two runs).
    pub mean_difference: Option<f64>,
    pub sd_difference: Option<f64>,
}

/// One run against the other curve of its seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedRun {
    pub seed: u64,
    pub kl_bpd: f64,
    /// The run's test negative ELBO minus the other curve's at its KL (positive when the
    /// other curve is better).
    pub difference: f64,
}

/// Written as `[seed, KL, difference]`, as `at_equal_kl.json` has always held it.
impl Serialize for PairedRun {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.seed, self.kl_bpd, self.difference).serialize(s)
    }
}

/// Each point of the `kind` curve against the `other` curve, seed by seed (see
/// [`PairedBySeed`]).
pub fn compare_by_seed(
    rows: &[ResultRow],
    kind: BottleneckKind,
    other: BottleneckKind,
) -> Vec<PairedBySeed> {
    let is = |r: &ResultRow, k: BottleneckKind| BottleneckKind::of(&r.spec) == k;
    specs_in_order(rows.iter().filter(|r| is(r, kind)))
        .into_iter()
        .map(|spec| {
            let mut runs = Vec::new();
            let mut outside = 0;
            for r in rows.iter().filter(|r| r.spec == spec) {
                let mut curve: Vec<(f64, [f64; 1])> = rows
                    .iter()
                    .filter(|o| is(o, other) && o.seed == r.seed)
                    .map(|o| (o.terms.kl, [o.terms.nelbo]))
                    .collect();
                curve.sort_by(|a, b| a.0.total_cmp(&b.0));
                match interpolate(&curve, r.terms.kl) {
                    Some([at]) => runs.push(PairedRun {
                        seed: r.seed,
                        kl_bpd: r.terms.kl,
                        difference: r.terms.nelbo - at,
                    }),
                    None => outside += 1,
                }
            }
            paired(spec, runs, outside)
        })
        .collect()
}

/// The point's paired runs with the mean and standard deviation of their differences.
fn paired(point: BottleneckSpec, runs: Vec<PairedRun>, outside: usize) -> PairedBySeed {
    let d: Vec<f64> = runs.iter().map(|r| r.difference).collect();
    let n = d.len() as f64;
    let mean = (!d.is_empty()).then(|| d.iter().sum::<f64>() / n);
    let sd = mean
        .filter(|_| d.len() > 1)
        .map(|m| (d.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    PairedBySeed {
        point,
        runs,
        outside,
        mean_difference: mean,
        sd_difference: sd,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::terms::Terms;

    /// GD p = 0.15 in seeds 0, 1, 2 (negative ELBO 5.0, 5.2, 5.4; KL 0.01, 0.02, 0.03)
    /// and one VB run.
    pub(crate) fn three_seeds_of_gd_and_a_vb_run() -> Vec<ResultRow> {
        [5.0, 5.2, 5.4]
            .iter()
            .enumerate()
            .map(|(i, &nelbo)| ResultRow {
                seed: i as u64,
                ..row("gd", 0.15, nelbo, 0.01 * (i + 1) as f64)
            })
            .chain([row("vb", 0.1, 5.3, 0.02)])
            .collect()
    }

    /// A finished run of `kind:strength` with its test negative ELBO and KL (bits/dim).
    pub(crate) fn row(kind: &str, strength: f64, nelbo: f64, kl: f64) -> ResultRow {
        let spec = BottleneckSpec::from_kind_value(kind, strength).unwrap();
        ResultRow {
            spec,
            run: format!("{kind}-{strength}"),
            seed: 0,
            terms: Terms {
                nelbo,
                kl,
                recon: nelbo - kl,
                ..Terms::default()
            },
            gd_bound_bits_per_pixel: None,
            epochs: 1.0,
            steps: 1,
            wall_s: 1.0,
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
        let rows = three_seeds_of_gd_and_a_vb_run();
        let pts = points(&rows);
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[0].seeds, 3);
        assert!((pts[0].nelbo.mean - 5.2).abs() < 1e-12 && (pts[0].nelbo.hi - 5.4).abs() < 1e-12);
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
        let c = compare_at_equal_kl(&rows, BottleneckKind::Vb, BottleneckKind::Gd);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].point.to_string(), "vb:0.1");
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
        let c = compare_by_seed(&rows, BottleneckKind::Vb, BottleneckKind::Gd);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].point.to_string(), "vb:0.1");
        assert_eq!(c[0].runs.len(), 2);
        assert!(
            (c[0].runs[0].difference - 0.3).abs() < 1e-12,
            "{:?}",
            c[0].runs
        );
        assert!(
            (c[0].runs[1].difference - 0.2).abs() < 1e-12,
            "{:?}",
            c[0].runs
        );
        assert!((c[0].mean_difference.unwrap() - 0.25).abs() < 1e-12);
        assert!((c[0].sd_difference.unwrap() - 0.005f64.sqrt()).abs() < 1e-12);
        assert_eq!((c[1].runs.len(), c[1].outside), (0, 1));
        assert_eq!(c[1].mean_difference, None);
    }

    /// `at_equal_kl.json` holds the bottleneck as its flag spells it and each paired run
    /// as `[seed, KL, difference]`.
    #[test]
    fn comparisons_keep_their_json() {
        let paired = PairedBySeed {
            point: BottleneckSpec::Vb { beta: 0.1 },
            runs: vec![PairedRun {
                seed: 1,
                kl_bpd: 0.25,
                difference: -0.5,
            }],
            outside: 0,
            mean_difference: Some(-0.5),
            sd_difference: None,
        };
        assert_eq!(
            serde_json::to_string(&paired).unwrap(),
            "{\"point\":\"vb:0.1\",\"runs\":[[1,0.25,-0.5]],\"outside\":0,\
             \"mean_difference\":-0.5,\"sd_difference\":null}"
        );
    }
}
