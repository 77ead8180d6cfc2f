//! `results.csv`: one row per finished run of a sweep, its test figures (bits/dim), its
//! information bound and its cost. Written after every run's evaluation and by
//! `--status`; read by `ibvae plot` (and by anything else that reads a CSV).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};

use crate::error::{Error, IoContext, Result};
use crate::experiment::sweep::plan::{Member, finished, saved_state};
use crate::io::run_dir::RunDir;
use crate::model::bottleneck::BottleneckSpec;
use crate::model::terms::Terms;

/// The columns of `results.csv`, in order: the fields of [`Record`].
pub const COLUMNS: [&str; 13] = [
    "bottleneck",
    "strength",
    "run",
    "test_nelbo_bpd",
    "kl_bpd",
    "recon_bpd",
    "vb_rate_bpd",
    "aux_nll_bpd",
    "gd_bound_bits_per_pixel",
    "epochs",
    "steps",
    "wall_s",
    "seed",
];

/// The column that files written before sweeps over seeds lack (their runs read as seed
/// 0); every other column must be there.
const OPTIONAL_COLUMN: &str = "seed";

/// The `results.csv` of the sweep in `sweep`.
pub fn path(sweep: &Path) -> PathBuf {
    sweep.join("results.csv")
}

/// One finished run: one row of `results.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub spec: BottleneckSpec,
    /// The run's directory under the sweep's, e.g. `gd-0.15-s1`.
    pub run: String,
    /// The run's seed (0 in files that predate the column).
    pub seed: u64,
    /// The test figures of the run's final evaluation, bits/dim.
    pub terms: Terms,
    /// Theorem 1's bound on what the GD layer lets through, bits per pixel (GD only).
    pub gd_bound_bits_per_pixel: Option<f64>,
    /// Passes over the training set (NaN for checkpoints that do not record an epoch's
    /// steps).
    pub epochs: f64,
    pub steps: u64,
    /// Training wall time over all sessions of the run, seconds.
    pub wall_s: f64,
}

impl ResultRow {
    /// The row of a finished run from its final evaluation and its checkpoint's state.
    fn of_run(member: &Member, run: &RunDir) -> Option<Self> {
        let report = finished(run)?;
        let state = saved_state(run)?;
        Some(Self {
            spec: member.spec,
            run: member.name.clone(),
            seed: run.read_config().ok()?.train.seed,
            terms: report.terms,
            gd_bound_bits_per_pixel: report.gd_bound.as_ref().map(|b| b.total_bits_per_pixel),
            epochs: state.epochs_done().unwrap_or(f64::NAN),
            steps: state.step,
            wall_s: state.elapsed_s,
        })
    }
}

/// The run directory of a row.
pub fn run_dir(sweep: &Path, row: &ResultRow) -> PathBuf {
    sweep.join(&row.run)
}

/// One line of `results.csv` as the file spells it: the field names are the columns,
/// and each number is written with the decimals the file has always had, so that files
/// of different versions compare line by line.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// `none`, `gd`, `vb` or `aux`.
    bottleneck: String,
    /// The bottleneck's strength as its flag gives it (`0.15`, `1`; `0` for `none`).
    #[serde(serialize_with = "shortest")]
    strength: f64,
    run: String,
    #[serde(serialize_with = "fixed::<6, _>")]
    test_nelbo_bpd: f64,
    #[serde(serialize_with = "fixed::<6, _>")]
    kl_bpd: f64,
    #[serde(serialize_with = "fixed::<6, _>")]
    recon_bpd: f64,
    #[serde(serialize_with = "fixed::<6, _>")]
    vb_rate_bpd: f64,
    #[serde(serialize_with = "fixed::<6, _>")]
    aux_nll_bpd: f64,
    /// Empty for runs without a GD layer.
    #[serde(serialize_with = "fixed_or_empty::<6, _>")]
    gd_bound_bits_per_pixel: Option<f64>,
    #[serde(serialize_with = "fixed::<3, _>")]
    epochs: f64,
    steps: u64,
    #[serde(serialize_with = "fixed::<1, _>")]
    wall_s: f64,
    #[serde(default)]
    seed: u64,
}

/// `v` with `D` decimals.
fn fixed<const D: usize, S: Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:.D$}"))
}

/// `v` with `D` decimals, or an empty field.
fn fixed_or_empty<const D: usize, S: Serializer>(
    v: &Option<f64>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match v {
        Some(v) => fixed::<D, S>(v, s),
        None => s.serialize_none(),
    }
}

/// The shortest text that reads back as `v` (`1`, not `1.0`).
fn shortest<S: Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

impl From<&ResultRow> for Record {
    fn from(r: &ResultRow) -> Self {
        Self {
            bottleneck: r.spec.kind().to_string(),
            strength: r.spec.value(),
            run: r.run.clone(),
            test_nelbo_bpd: r.terms.nelbo,
            kl_bpd: r.terms.kl,
            recon_bpd: r.terms.recon,
            vb_rate_bpd: r.terms.vb_rate,
            aux_nll_bpd: r.terms.aux_nll,
            gd_bound_bits_per_pixel: r.gd_bound_bits_per_pixel,
            epochs: r.epochs,
            steps: r.steps,
            wall_s: r.wall_s,
            seed: r.seed,
        }
    }
}

impl Record {
    fn into_row(self) -> Result<ResultRow> {
        let figures = [
            ("test_nelbo_bpd", self.test_nelbo_bpd),
            ("kl_bpd", self.kl_bpd),
            ("recon_bpd", self.recon_bpd),
            ("vb_rate_bpd", self.vb_rate_bpd),
            ("aux_nll_bpd", self.aux_nll_bpd),
            (
                "gd_bound_bits_per_pixel",
                self.gd_bound_bits_per_pixel.unwrap_or(0.0),
            ),
            ("wall_s", self.wall_s),
        ];
        for (column, v) in figures {
            if !v.is_finite() {
                return Err(Error::Data(format!(
                    "{column} of run {} is {v}: only finite figures can be plotted",
                    self.run
                )));
            }
        }
        if self.kl_bpd < 0.0 || self.vb_rate_bpd < 0.0 {
            return Err(Error::Data(format!(
                "run {} has a negative KL or VB rate ({} and {}), which no model gives",
                self.run, self.kl_bpd, self.vb_rate_bpd
            )));
        }
        Ok(ResultRow {
            spec: BottleneckSpec::from_kind_value(&self.bottleneck, self.strength)?,
            run: self.run,
            seed: self.seed,
            terms: Terms {
                nelbo: self.test_nelbo_bpd,
                kl: self.kl_bpd,
                recon: self.recon_bpd,
                vb_rate: self.vb_rate_bpd,
                aux_nll: self.aux_nll_bpd,
            },
            gd_bound_bits_per_pixel: self.gd_bound_bits_per_pixel,
            epochs: self.epochs,
            steps: self.steps,
            wall_s: self.wall_s,
        })
    }
}

/// Rows of every finished member, in the sweep's order, from the runs' `eval.json` and
/// checkpoint headers (no weights or data are read).
pub fn collect(out: &Path, members: &[Member]) -> Vec<ResultRow> {
    members
        .iter()
        .filter_map(|m| ResultRow::of_run(m, &RunDir::new(out.join(&m.name))))
        .collect()
}

/// The text of a `results.csv` of `rows`: the header, then one line per row.
fn to_csv(rows: &[ResultRow]) -> String {
    let expect = "a CSV record is written to memory";
    // The header is written by hand so that a sweep with no finished run has one too.
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    w.write_record(COLUMNS).expect(expect);
    for r in rows {
        w.serialize(Record::from(r)).expect(expect);
    }
    let bytes = w.into_inner().expect(expect);
    String::from_utf8(bytes).expect("the fields are UTF-8")
}

/// Writes `results.csv` of `rows` into the sweep's directory `out`.
pub fn write(out: &Path, rows: &[ResultRow]) -> Result<()> {
    crate::io::fsutil::write_atomic_str(&path(out), &to_csv(rows))
}

/// Reads a `results.csv` back, from this version or an earlier one.
pub fn read(path: &Path) -> Result<Vec<ResultRow>> {
    let text = std::fs::read_to_string(path).at(path)?;
    from_csv(&text).map_err(|e| Error::Data(format!("{}: {e}", path.display())))
}

/// The rows of the text of a `results.csv`; an error names the line or column at fault.
fn from_csv(text: &str) -> std::result::Result<Vec<ResultRow>, String> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().map_err(|e| e.to_string())?;
    if header.iter().all(str::is_empty) {
        return Err("the file is empty".into());
    }
    let missing = COLUMNS
        .iter()
        .filter(|c| **c != OPTIONAL_COLUMN)
        .find(|c| !header.iter().any(|h| h == **c));
    if let Some(c) = missing {
        return Err(format!("no column `{c}`: not an ibvae results.csv"));
    }
    let header = header.clone();
    let mut rows = Vec::new();
    for fields in reader.records() {
        let fields = fields.map_err(|e| e.to_string())?;
        // A field that does not parse: csv's error names its line and column.
        let record: Record = fields
            .deserialize(Some(&header))
            .map_err(|e| e.to_string())?;
        let line = fields.position().map_or(0, |p| p.line());
        let row = record.into_row().map_err(|e| format!("line {line}: {e}"))?;
        if rows.iter().any(|r: &ResultRow| r.run == row.run) {
            return Err(format!(
                "line {line}: run {} appears twice; keep one of its rows",
                row.run
            ));
        }
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first lines of `docs/results/cifar16/results.csv` (three seeds per
    /// configuration) and of `docs/results/results.csv` (written before the seed column).
    const SEEDED: &str = "\
bottleneck,strength,run,test_nelbo_bpd,kl_bpd,recon_bpd,vb_rate_bpd,aux_nll_bpd,gd_bound_bits_per_pixel,epochs,steps,wall_s,seed
gd,0.01,gd-0.01-s0,4.105105,0.056168,4.048937,0.000000,0.000000,44.076247,4.800,3000,312.8,0
gd,0.01,gd-0.01-s1,4.170158,0.103180,4.066978,0.000000,0.000000,41.560279,4.800,3000,431.3,1
vb,0.01,vb-0.01-s0,4.051467,0.024120,4.027347,10.658421,0.000000,,4.800,3000,423.7,0
none,0,none-s0,4.160081,0.071596,4.088485,0.000000,0.000000,,4.800,3000,273.2,0
aux,1,aux-s1,4.288395,0.432664,3.855730,0.000000,4.738563,,4.800,3000,294.7,1
";
    const UNSEEDED: &str = "\
bottleneck,strength,run,test_nelbo_bpd,kl_bpd,recon_bpd,vb_rate_bpd,aux_nll_bpd,gd_bound_bits_per_pixel,epochs,steps,wall_s
gd,0.05,gd-0.05,4.362570,0.020249,4.342321,0.000000,0.000000,33.011856,1.280,800,913.4
";

    #[test]
    fn files_of_today_read() {
        let rows = from_csv(SEEDED).unwrap();
        assert_eq!(rows.len(), 5);
        let gd = &rows[1];
        assert_eq!(gd.spec, BottleneckSpec::Gd { rate: 0.01 });
        assert_eq!((gd.run.as_str(), gd.seed), ("gd-0.01-s1", 1));
        assert_eq!(
            gd.terms,
            Terms::from_values([4.170158, 0.103180, 4.066978, 0.0, 0.0])
        );
        assert_eq!(gd.gd_bound_bits_per_pixel, Some(41.560279));
        assert_eq!((gd.epochs, gd.steps, gd.wall_s), (4.8, 3000, 431.3));
        assert_eq!(rows[2].terms.vb_rate, 10.658421);
        assert_eq!(rows[2].gd_bound_bits_per_pixel, None);
        assert_eq!(rows[3].spec, BottleneckSpec::None);
        assert_eq!(rows[4].spec, BottleneckSpec::Aux { weight: 1.0 });
        let blank_line = format!("{SEEDED}\n");
        assert_eq!(from_csv(&blank_line).unwrap(), rows);
        let old = from_csv(UNSEEDED).unwrap();
        assert_eq!((old[0].run.as_str(), old[0].seed), ("gd-0.05", 0));
    }

    /// What this version writes is today's file byte for byte, and reads back equal.
    #[test]
    fn written_rows_read_back_equal() {
        let rows = from_csv(SEEDED).unwrap();
        let text = to_csv(&rows);
        assert_eq!(text, SEEDED);
        assert_eq!(from_csv(&text).unwrap(), rows);
        let unfinished = ResultRow {
            epochs: f64::NAN,
            ..rows[0].clone()
        };
        let text = to_csv(&[unfinished]);
        assert!(
            text.lines().nth(1).unwrap().contains(",NaN,3000,"),
            "{text}"
        );
        assert!(from_csv(&text).unwrap()[0].epochs.is_nan());
    }

    #[test]
    fn a_sweep_without_finished_runs_has_the_header_alone() {
        assert_eq!(to_csv(&[]), COLUMNS.join(",") + "\n");
        assert_eq!(from_csv(&to_csv(&[])).unwrap(), []);
    }

    #[test]
    fn files_of_other_programs_are_refused_with_the_reason() {
        let err = from_csv("a,b\n1,2\n").unwrap_err();
        assert!(err.contains("not an ibvae results.csv"), "{err}");
        assert!(from_csv("").unwrap_err().contains("empty"));
        let malformed = SEEDED.replace("4.170158", "x");
        let err = from_csv(&malformed).unwrap_err();
        assert!(err.contains("line: 3") && err.contains("field 3"), "{err}");

        let unknown = SEEDED.replace("none,0", "nothing,0");
        let err = from_csv(&unknown).unwrap_err();
        assert!(err.contains("line 5") && err.contains("nothing"), "{err}");
    }

    /// NaN and infinite figures (which would hang the plot's axis search), a negative
    /// KL and a run counted twice (as if it were another seed) are refused by line.
    #[test]
    fn figures_no_plot_can_draw_are_refused() {
        for (from, to, says) in [
            ("4.105105", "NaN", "test_nelbo_bpd of run gd-0.01-s0 is NaN"),
            ("0.056168", "inf", "kl_bpd of run gd-0.01-s0 is inf"),
            ("0.056168", "-0.1", "negative KL"),
        ] {
            let bad = SEEDED.replacen(from, to, 1);
            let err = from_csv(&bad).unwrap_err();
            assert!(err.contains("line 2") && err.contains(says), "{err}");
        }
        let twice = format!("{SEEDED}{}\n", SEEDED.lines().nth(2).unwrap());
        let err = from_csv(&twice).unwrap_err();
        assert!(
            err.contains("line 7: run gd-0.01-s1 appears twice"),
            "{err}"
        );
    }
}
