//! `ibvae sweep`: one run per bottleneck strength (GD rates, VB weights) and per baseline,
//! each trained and evaluated exactly as `ibvae train` and `ibvae eval` would (each in its
//! own process, `--jobs` at a time), and `results.csv` with one row per run.
//!
//! Starting the same sweep again resumes the unfinished runs and skips the finished ones.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::bottleneck::BottleneckSpec;
use crate::cli::SweepArgs;
use crate::error::{Error, IoContext, Result};
use crate::evaluate::EvalReport;
use crate::params::TensorFile;
use crate::run::{RunDir, TrainState};

/// One configuration of the sweep.
#[derive(Debug, Clone)]
pub struct Member {
    pub spec: BottleneckSpec,
    /// Directory name under the sweep's output, e.g. `gd-0.15`.
    pub name: String,
}

/// The members of a sweep in order: GD rates, VB weights, then the baselines.
pub fn members(gd: &[String], vb: &[String], baselines: &[String]) -> Result<Vec<Member>> {
    let mut out = Vec::new();
    for rate in gd.iter().filter(|v| !v.trim().is_empty()) {
        out.push(format!("gd:{}", rate.trim()).parse::<BottleneckSpec>()?);
    }
    for beta in vb.iter().filter(|v| !v.trim().is_empty()) {
        out.push(format!("vb:{}", beta.trim()).parse::<BottleneckSpec>()?);
    }
    for b in baselines.iter().filter(|b| !b.trim().is_empty()) {
        let spec: BottleneckSpec = b.parse()?;
        if !matches!(spec, BottleneckSpec::None | BottleneckSpec::Aux { .. }) {
            return Err(Error::Config(format!(
                "--baselines takes none and aux[:<weight>], not `{b}` (use --gd / --vb)"
            )));
        }
        out.push(spec);
    }
    Ok(out
        .into_iter()
        .map(|spec| Member {
            name: match spec {
                BottleneckSpec::None => "none".into(),
                BottleneckSpec::Aux { weight: 1.0 } => "aux".into(),
                _ => format!("{}-{}", spec.kind(), spec.value()),
            },
            spec,
        })
        .collect())
}

/// The training state saved in a run's checkpoint, if there is one.
fn saved_state(run: &RunDir) -> Option<TrainState> {
    let file = TensorFile::read(&run.checkpoint_path()).ok()?;
    serde_json::from_str(file.metadata.get("ibvae_state")?).ok()
}

/// Whether the run has done all its steps and has its final evaluation.
fn finished(run: &RunDir) -> Option<EvalReport> {
    if !saved_state(run)?.finished {
        return None;
    }
    let text = std::fs::read_to_string(run.eval_path()).ok()?;
    serde_json::from_str(&text).ok()
}

/// The command line of the `train` child for one member.
fn train_command(
    args: &SweepArgs,
    member: &Member,
    run: &Path,
    threads: usize,
    data: &Path,
) -> Command {
    let exe = std::env::current_exe().expect("the running executable has a path");
    let mut cmd = Command::new(exe);
    cmd.arg("train")
        .args(["--preset", &args.preset])
        .args(["--bottleneck", &member.spec.to_string()])
        .arg("--data")
        .arg(data)
        .arg("--run")
        .arg(run)
        .args(["--threads", &threads.to_string()])
        .args(["--seed", &args.seed.to_string()])
        .args(["--device", &args.device.to_string()])
        .args(["--precision", &args.precision.to_string()]);
    cmd.args(args.schedule.to_args());
    if run.join("config.json").exists() {
        cmd.arg("--resume");
    }
    cmd
}

fn eval_command(args: &SweepArgs, run: &Path, threads: usize, data: &Path) -> Command {
    let exe = std::env::current_exe().expect("the running executable has a path");
    let mut cmd = Command::new(exe);
    cmd.arg("eval")
        .arg("--run")
        .arg(run)
        .arg("--data")
        .arg(data)
        .args(["--threads", &threads.to_string()])
        .args(["--device", &args.device.to_string()])
        .arg("--json");
    cmd
}

/// Starts `cmd` with its output appended to `log`.
fn spawn_logged(mut cmd: Command, log: &Path) -> Result<Child> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .at(log)?;
    let err = file.try_clone().at(log)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .spawn()
        .at(log)
}

/// One line of `results.csv`.
#[derive(Debug, Clone)]
pub struct Row {
    pub member: Member,
    pub report: EvalReport,
    pub state: TrainState,
    pub epochs: f64,
}

pub const CSV_HEADER: &str = "bottleneck,strength,run,test_nelbo_bpd,kl_bpd,recon_bpd,\
vb_rate_bpd,aux_nll_bpd,gd_bound_bits_per_pixel,epochs,steps,wall_s";

impl Row {
    pub fn csv(&self) -> String {
        let r = &self.report;
        format!(
            "{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{},{:.3},{},{:.1}",
            self.member.spec.kind(),
            self.member.spec.value(),
            self.member.name,
            r.nelbo_bpd,
            r.kl_bpd,
            r.recon_bpd,
            r.vb_rate_bpd,
            r.aux_nll_bpd,
            r.gd_bound
                .as_ref()
                .map_or(String::new(), |b| format!("{:.6}", b.total_bits_per_pixel)),
            self.epochs,
            self.state.step,
            self.state.elapsed_s
        )
    }
}

/// Rows of every finished member, in the sweep's order.
fn collect_rows(out: &Path, members: &[Member]) -> Vec<Row> {
    members
        .iter()
        .filter_map(|m| {
            let run = RunDir::new(out.join(&m.name));
            let report = finished(&run)?;
            let state = saved_state(&run)?;
            let config = run.read_config().ok()?;
            let n_train = steps_epoch_size(&config);
            Some(Row {
                member: m.clone(),
                epochs: state.step as f64 / n_train.max(1) as f64,
                report,
                state,
            })
        })
        .collect()
}

/// Steps per epoch of a run, from its data directory.
fn steps_epoch_size(config: &crate::config::ExperimentConfig) -> u64 {
    crate::data::load(&config.train.data)
        .map(|d| config.train.steps_per_epoch(d.train.len()))
        .unwrap_or(1)
}

fn write_csv(out: &Path, rows: &[Row]) -> Result<()> {
    let mut text = String::from(CSV_HEADER);
    text.push('\n');
    for r in rows {
        text.push_str(&r.csv());
        text.push('\n');
    }
    crate::fsutil::write_atomic_str(&out.join("results.csv"), &text)
}

/// Runs the sweep.
pub fn run(args: SweepArgs) -> Result<()> {
    if args.jobs == 0 {
        return Err(Error::Config("--jobs must be at least 1".into()));
    }
    let members = members(&args.gd, &args.vb, &args.baselines)?;
    if members.is_empty() {
        return Err(Error::Config(
            "the sweep has no runs: give --gd, --vb or --baselines".into(),
        ));
    }
    crate::config::ModelConfig::preset(&args.preset)?;
    let data = args
        .data
        .clone()
        .unwrap_or_else(crate::data::default_data_dir);
    // Fail early, in this process, on data that cannot be read.
    crate::data::load(&data)?;
    let data = std::fs::canonicalize(&data).at(&data)?;
    std::fs::create_dir_all(&args.out).at(&args.out)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or((cores / args.jobs).max(1));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // The children get the same Ctrl-C, checkpoint and exit; the sweep waits for them.
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let mut queue: Vec<Member> = Vec::new();
    for m in &members {
        let run = RunDir::new(args.out.join(&m.name));
        if finished(&run).is_some() {
            println!("{:<12} finished earlier, skipped", m.name);
        } else {
            queue.push(m.clone());
        }
    }
    queue.reverse(); // pop from the front of the sweep's order
    let mut running: Vec<(Member, Child, bool)> = Vec::new(); // (member, child, is_eval)
    let mut failures: Vec<String> = Vec::new();
    loop {
        while running.len() < args.jobs && !stop.load(Ordering::SeqCst) {
            let Some(m) = queue.pop() else { break };
            let run_path = args.out.join(&m.name);
            std::fs::create_dir_all(&run_path).at(&run_path)?;
            let log = run_path.join("train.log");
            println!("{:<12} training (log: {})", m.name, log.display());
            let child = spawn_logged(train_command(&args, &m, &run_path, threads, &data), &log)?;
            running.push((m, child, false));
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut i = 0;
        while i < running.len() {
            let status = running[i].1.try_wait().at(&args.out)?;
            let Some(status) = status else {
                i += 1;
                continue;
            };
            let (m, _, is_eval) = running.remove(i);
            let run_path = args.out.join(&m.name);
            let log = run_path.join("train.log");
            if !status.success() {
                println!("{:<12} FAILED (see {})", m.name, log.display());
                failures.push(m.name.clone());
                continue;
            }
            let run = RunDir::new(&run_path);
            if is_eval {
                if let Some(r) = finished(&run) {
                    println!(
                        "{:<12} test negative ELBO {:.4} bits/dim, KL {:.4}",
                        m.name, r.nelbo_bpd, r.kl_bpd
                    );
                }
                write_csv(&args.out, &collect_rows(&args.out, &members))?;
            } else if saved_state(&run).is_some_and(|s| s.finished) && !stop.load(Ordering::SeqCst)
            {
                println!("{:<12} evaluating on the whole test set", m.name);
                let child = spawn_logged(eval_command(&args, &run_path, threads, &data), &log)?;
                running.push((m, child, true));
            }
        }
    }
    let rows = collect_rows(&args.out, &members);
    write_csv(&args.out, &rows)?;
    if stop.load(Ordering::SeqCst) {
        println!(
            "interrupted: {} of {} runs finished; run the same command again to resume",
            rows.len(),
            members.len()
        );
        return Ok(());
    }
    println!(
        "wrote {} ({} runs)",
        args.out.join("results.csv").display(),
        rows.len()
    );
    if !failures.is_empty() {
        return Err(Error::Training(format!(
            "{} run(s) failed: {}; their train.log says why; fix and run the sweep again to \
             resume them",
            failures.len(),
            failures.join(", ")
        )));
    }
    Ok(())
}

/// Reads a `results.csv` back: `(kind, strength, nelbo, kl, name)` per row.
pub fn read_results(path: &Path) -> Result<Vec<ResultRow>> {
    let text = std::fs::read_to_string(path).at(path)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| Error::Data(format!("{} is empty", path.display())))?
        .split(',')
        .collect();
    let col = |name: &str| {
        header.iter().position(|h| *h == name).ok_or_else(|| {
            Error::Data(format!(
                "{} has no column `{name}`: not an ibvae results.csv",
                path.display()
            ))
        })
    };
    let (ck, cs, cn, ckl, cr) = (
        col("bottleneck")?,
        col("strength")?,
        col("test_nelbo_bpd")?,
        col("kl_bpd")?,
        col("run")?,
    );
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let num = |c: usize| -> Result<f64> {
            f.get(c).and_then(|v| v.parse().ok()).ok_or_else(|| {
                Error::Data(format!(
                    "{} line {}: a number is missing or malformed",
                    path.display(),
                    i + 2
                ))
            })
        };
        rows.push(ResultRow {
            kind: f.get(ck).copied().unwrap_or_default().to_string(),
            strength: num(cs)?,
            nelbo_bpd: num(cn)?,
            kl_bpd: num(ckl)?,
            run: f.get(cr).copied().unwrap_or_default().to_string(),
        });
    }
    Ok(rows)
}

/// One row of `results.csv`, as the plots need it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub kind: String,
    pub strength: f64,
    pub nelbo_bpd: f64,
    pub kl_bpd: f64,
    pub run: String,
}

/// The run directory of a row.
pub fn run_dir(sweep: &Path, row: &ResultRow) -> PathBuf {
    sweep.join(&row.run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_named_and_validated() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let m = members(&s(&["0.015", "0.15"]), &s(&["0.02"]), &s(&["none", "aux"])).unwrap();
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["gd-0.015", "gd-0.15", "vb-0.02", "none", "aux"]);
        assert!(members(&s(&["1.5"]), &[], &[]).is_err());
        let err = members(&[], &[], &["gd:0.1".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--baselines"), "{err}");
    }
}
