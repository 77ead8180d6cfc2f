//! `ibvae sweep`: one run per bottleneck strength (GD rates, VB weights) and per baseline,
//! each trained and evaluated exactly as `ibvae train` and `ibvae eval` would (each in its
//! own process, `--jobs` at a time), and `results.csv` with one row per run.
//!
//! The sweep writes each member's whole `config.json` (the sweep's settings with the
//! member's bottleneck, resolved as `ibvae train` resolves its flags) and starts
//! `ibvae train --run DIR --resume` on it: the config file is the only interface between
//! a sweep and its runs, so every setting of a run reaches every member. Starting the
//! same sweep again resumes the unfinished runs and skips the finished ones.

pub mod slurm;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::config::{ExperimentConfig, Overrides};
use crate::engine::{DeviceChoice, Precision};
use crate::error::{Error, IoContext, Result};
use crate::experiment::sweep::slurm::{SlurmOptions, Task, TaskRuntime};
use crate::io::checkpoint::TrainState;
use crate::io::run_dir::RunDir;
use crate::model::bottleneck::BottleneckSpec;
use crate::training::evaluate::EvalReport;

/// One configuration of the sweep.
#[derive(Debug, Clone)]
pub struct Member {
    pub spec: BottleneckSpec,
    /// The member's own seed, when the sweep repeats each configuration over seeds.
    pub seed: Option<u64>,
    /// Directory name under the sweep's output, e.g. `gd-0.15`, or `gd-0.15-s1` with
    /// seeds.
    pub name: String,
}

impl Member {
    fn new(spec: BottleneckSpec, seed: Option<u64>) -> Self {
        let name = match seed {
            Some(s) => format!("{}-s{s}", spec.run_name()),
            None => spec.run_name(),
        };
        Self { spec, seed, name }
    }
}

/// The members of a sweep in order: GD rates, VB weights, then the baselines; with
/// `seeds`, each of them once per seed.
pub fn members(
    gd: &[String],
    vb: &[String],
    baselines: &[String],
    seeds: &[u64],
) -> Result<Vec<Member>> {
    let mut out = Vec::new();
    for rate in gd.iter().filter(|v| !v.trim().is_empty()) {
        out.push(format!("gd:{}", rate.trim()).parse::<BottleneckSpec>()?);
    }
    for beta in vb.iter().filter(|v| !v.trim().is_empty()) {
        out.push(format!("vb:{}", beta.trim()).parse::<BottleneckSpec>()?);
    }
    for b in baselines.iter().filter(|b| !b.trim().is_empty()) {
        let spec: BottleneckSpec = b.parse()?;
        if !spec.is_baseline() {
            return Err(Error::Config(format!(
                "--baselines takes none and aux[:<weight>], not `{b}` (use --gd / --vb)"
            )));
        }
        out.push(spec);
    }
    let mut unique = seeds.to_vec();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != seeds.len() {
        return Err(Error::Config(format!("--seeds repeats a seed: {seeds:?}")));
    }
    Ok(out
        .into_iter()
        .flat_map(|spec| {
            let per_seed: Vec<Option<u64>> = if seeds.is_empty() {
                vec![None]
            } else {
                seeds.iter().map(|&s| Some(s)).collect()
            };
            per_seed
                .into_iter()
                .map(move |seed| Member::new(spec, seed))
        })
        .collect())
}

/// The training state saved in a run's checkpoint (read from its header), if any.
fn saved_state(run: &RunDir) -> Option<TrainState> {
    run.saved_state().ok().flatten()
}

/// Whether the run has done all its steps and has its final evaluation.
fn finished(run: &RunDir) -> Option<EvalReport> {
    if !saved_state(run)?.finished {
        return None;
    }
    let text = std::fs::read_to_string(run.eval_path()).ok()?;
    serde_json::from_str(&text).ok()
}

/// What `ibvae sweep` was asked to run.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    pub preset: crate::config::Preset,
    /// The runs, in order (see [`members`]).
    pub members: Vec<Member>,
    /// Settings of every run (the flags `ibvae train` takes).
    pub overrides: Overrides,
    /// The data directory [default: `$IBVAE_DATA`, else `~/.cache/ibvae/cifar10`].
    pub data: Option<PathBuf>,
    /// Where the run directories and `results.csv` go.
    pub out: PathBuf,
    /// Runs trained at the same time, each in its own process.
    pub jobs: usize,
    /// CPU threads per run [default: all cores divided by `jobs`].
    pub threads: Option<usize>,
    pub device: DeviceChoice,
    pub precision: Precision,
    /// Submit the runs to SLURM as an array job instead of running them here.
    pub slurm: Option<SlurmOptions>,
    /// Only show where each run stands (and refresh `results.csv`).
    pub status: bool,
}

/// The `ibvae` command line of a child process of the sweep on `run`.
fn child(plan: &SweepPlan, command: &str, run: &Path, threads: usize) -> Command {
    let mut cmd = Command::new(ibvae_executable());
    cmd.arg(command)
        .arg("--run")
        .arg(run)
        .args(["--threads", &threads.to_string()])
        .args(["--device", &plan.device.to_string()]);
    cmd
}

/// Continues (or starts) the run of `config.json` in `run`.
fn train_command(plan: &SweepPlan, run: &Path, threads: usize) -> Command {
    let mut cmd = child(plan, "train", run, threads);
    cmd.arg("--resume")
        .args(["--precision", &plan.precision.to_string()]);
    cmd
}

/// Evaluates the finished run in `run` on the whole test set.
fn eval_command(plan: &SweepPlan, run: &Path, threads: usize) -> Command {
    let mut cmd = child(plan, "eval", run, threads);
    cmd.arg("--json");
    cmd
}

/// Writes the member's `config.json`, or checks that the one there is the same run.
fn write_member_config(run: &RunDir, config: &ExperimentConfig) -> Result<()> {
    if run.has_config() {
        if run.read_config()? != *config {
            return Err(Error::Config(format!(
                "{} holds a run with other settings than this sweep gives it; use another \
                 --out, or delete that directory to start the run over",
                run.path.display()
            )));
        }
        return Ok(());
    }
    run.write_config(config)
}

/// The path of the running `ibvae`, for the sweep's children. When the binary was
/// rebuilt while the sweep runs, Linux names the running one `<path> (deleted)`: the
/// children then start the new binary at `<path>`.
pub fn ibvae_executable() -> PathBuf {
    undeleted(std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ibvae")))
}

fn undeleted(exe: PathBuf) -> PathBuf {
    match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(path) => PathBuf::from(path),
        None => exe,
    }
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
        .map_err(|e| {
            Error::Config(format!(
                "could not start {}: {e}",
                cmd.get_program().to_string_lossy()
            ))
        })
}

/// One line of `results.csv`.
#[derive(Debug, Clone)]
pub struct Row {
    pub member: Member,
    /// The run's seed.
    pub seed: u64,
    pub report: EvalReport,
    pub state: TrainState,
    pub epochs: f64,
}

pub const CSV_HEADER: &str = "bottleneck,strength,run,test_nelbo_bpd,kl_bpd,recon_bpd,\
vb_rate_bpd,aux_nll_bpd,gd_bound_bits_per_pixel,epochs,steps,wall_s,seed";

impl Row {
    pub fn csv(&self) -> String {
        let r = &self.report;
        format!(
            "{},{},{},{:.6},{:.6},{:.6},{:.6},{:.6},{},{:.3},{},{:.1},{}",
            self.member.spec.kind(),
            self.member.spec.value(),
            self.member.name,
            r.terms.nelbo,
            r.terms.kl,
            r.terms.recon,
            r.terms.vb_rate,
            r.terms.aux_nll,
            r.gd_bound
                .as_ref()
                .map_or(String::new(), |b| format!("{:.6}", b.total_bits_per_pixel)),
            self.epochs,
            self.state.step,
            self.state.elapsed_s,
            self.seed
        )
    }
}

/// Rows of every finished member, in the sweep's order, from the runs' `eval.json` and
/// checkpoint headers (no weights or data are read).
fn collect_rows(out: &Path, members: &[Member]) -> Vec<Row> {
    members
        .iter()
        .filter_map(|m| {
            let run = RunDir::new(out.join(&m.name));
            let report = finished(&run)?;
            let state = saved_state(&run)?;
            Some(Row {
                seed: run.read_config().ok()?.train.seed,
                member: m.clone(),
                epochs: state.epochs_done().unwrap_or(f64::NAN),
                report,
                state,
            })
        })
        .collect()
}

fn write_csv(out: &Path, rows: &[Row]) -> Result<()> {
    let mut text = String::from(CSV_HEADER);
    text.push('\n');
    for r in rows {
        text.push_str(&r.csv());
        text.push('\n');
    }
    crate::io::fsutil::write_atomic_str(&out.join("results.csv"), &text)
}

/// Runs the sweep.
pub fn run(plan: SweepPlan) -> Result<()> {
    let args = &plan;
    if args.jobs == 0 {
        return Err(Error::Config("--jobs must be at least 1".into()));
    }
    if args.status {
        return show_status(&args.out, &recorded_members(&args.out)?);
    }
    let members = args.members.clone();
    if members.is_empty() {
        return Err(Error::Config(
            "the sweep has no runs: give --gd, --vb or --baselines".into(),
        ));
    }
    let data = args
        .data
        .clone()
        .unwrap_or_else(crate::io::data::default_data_dir);
    // Fail early, in this process, on data that cannot be read.
    let images = crate::io::data::load_sized(&data, args.overrides.image_size)?;
    let data = std::fs::canonicalize(&data).at(&data)?;
    let shape = (images.test.channels, images.test.height);
    drop(images);
    // Every member's config, before any run starts: a bad setting stops the sweep here.
    let mut configs = Vec::with_capacity(members.len());
    for m in &members {
        let overrides = Overrides {
            seed: m.seed.or(args.overrides.seed),
            ..args.overrides.clone()
        };
        let config =
            ExperimentConfig::resolve(args.preset, m.spec, data.clone(), shape, &overrides)?;
        configs.push((m.name.clone(), config));
    }
    std::fs::create_dir_all(&args.out).at(&args.out)?;
    // Every run of the directory, this sweep's and earlier ones', for results.csv.
    let recorded = record_members(&args.out, &members)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(options) = &args.slurm {
        let runtime = TaskRuntime {
            threads: args.threads.or(options.cpus_per_task).unwrap_or(1),
            device: args.device,
            precision: args.precision,
        };
        return submit_to_slurm(args, &configs, &recorded, runtime, options);
    }
    let threads = args.threads.unwrap_or((cores / args.jobs).max(1));
    // The children get the same Ctrl-C (or SIGTERM to the process group), checkpoint and
    // exit; the sweep starts no more of them and waits.
    let stop = crate::signals::stop_flag()?;
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
            let config = &configs
                .iter()
                .find(|(name, _)| *name == m.name)
                .expect("a config per member")
                .1;
            write_member_config(&RunDir::new(&run_path), config)?;
            let log = run_path.join("train.log");
            println!("{:<12} training (log: {})", m.name, log.display());
            let child = spawn_logged(train_command(args, &run_path, threads), &log)?;
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
                        m.name, r.terms.nelbo, r.terms.kl
                    );
                }
                write_csv(&args.out, &collect_rows(&args.out, &recorded))?;
            } else if saved_state(&run).is_some_and(|s| s.finished) && !stop.load(Ordering::SeqCst)
            {
                println!("{:<12} evaluating on the whole test set", m.name);
                let child = spawn_logged(eval_command(args, &run_path, threads), &log)?;
                running.push((m, child, true));
            }
        }
    }
    let rows = collect_rows(&args.out, &recorded);
    write_csv(&args.out, &rows)?;
    if stop.load(Ordering::SeqCst) {
        let done = collect_rows(&args.out, &members).len();
        println!(
            "interrupted: {done} of {} runs finished; run the same command again to resume",
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

/// Writes every member's `config.json` and submits the members that are neither done nor
/// queued at SLURM as one array job.
///
/// The array's task `i` is member `i` of the directory's `members.txt` (`recorded`, this
/// sweep's members and earlier sweeps'), so that task numbers mean the same run in every
/// submission to the directory and in `--status`.
fn submit_to_slurm(
    plan: &SweepPlan,
    configs: &[(String, ExperimentConfig)],
    recorded: &[Member],
    runtime: TaskRuntime,
    options: &SlurmOptions,
) -> Result<()> {
    let queued: Vec<usize> = crate::experiment::sweep::slurm::task_states(&plan.out)
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    let out = std::fs::canonicalize(&plan.out).at(&plan.out)?;
    let all_runs: Vec<PathBuf> = recorded.iter().map(|m| out.join(&m.name)).collect();
    let mut tasks = Vec::new();
    for (name, config) in configs {
        let run = RunDir::new(plan.out.join(name));
        write_member_config(&run, config)?;
        let index = recorded
            .iter()
            .position(|m| &m.name == name)
            .expect("the sweep's members are recorded");
        let path = all_runs[index].clone();
        if finished(&run).is_some() {
            println!("{name:<12} finished earlier, skipped");
        } else if queued.contains(&index) {
            println!("{name:<12} already queued at SLURM, skipped");
        } else {
            tasks.push(Task { index, run: path });
        }
    }
    if tasks.is_empty() {
        println!("nothing to submit; see `ibvae sweep ... --status`");
        return Ok(());
    }
    let script =
        crate::experiment::sweep::slurm::script(&out, &tasks, &all_runs, runtime, options)?;
    let (path, job) = crate::experiment::sweep::slurm::submit(&out, &script, options.dry_run)?;
    match job {
        Some(id) => println!(
            "submitted job {id}: {} array task(s), script {}\nfollow it with `squeue -j {id}` \
             or the same sweep command with --status",
            tasks.len(),
            path.display()
        ),
        None => println!(
            "wrote {} ({} array task(s)); submit it with `sbatch {}`",
            path.display(),
            tasks.len(),
            path.display()
        ),
    }
    Ok(())
}

/// The file in a sweep's directory that lists its members' bottlenecks in order.
const MEMBERS_FILE: &str = "members.txt";

/// Records the sweep's members (in order, with their seeds), so that `--status` needs
/// only `--out`, after those recorded by earlier sweeps into the same directory (a sweep
/// run seed by seed keeps every seed's runs in `results.csv`). Returns them all.
fn record_members(out: &Path, members: &[Member]) -> Result<Vec<Member>> {
    let mut all = match out.join(MEMBERS_FILE).exists() {
        true => recorded_members(out)?,
        false => Vec::new(),
    };
    for m in members {
        if !all.iter().any(|a| a.name == m.name) {
            all.push(m.clone());
        }
    }
    let text: String = all
        .iter()
        .map(|m| match m.seed {
            Some(s) => format!("{} {s}\n", m.spec),
            None => format!("{}\n", m.spec),
        })
        .collect();
    crate::io::fsutil::write_atomic_str(&out.join(MEMBERS_FILE), &text)?;
    Ok(all)
}

/// The members recorded by [`record_members`].
fn recorded_members(out: &Path) -> Result<Vec<Member>> {
    let path = out.join(MEMBERS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|_| {
        Error::Config(format!(
            "{} is not a sweep directory (no {MEMBERS_FILE}): start the sweep first",
            out.display()
        ))
    })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut fields = l.split_whitespace();
            let spec: BottleneckSpec = fields.next().unwrap_or_default().parse()?;
            let seed = fields.next().and_then(|s| s.parse().ok());
            Ok(Member::new(spec, seed))
        })
        .collect()
}

/// One line per member: done, queued or running at SLURM, stopped or not started, its
/// step and its last test figure; then `results.csv` refreshed.
fn show_status(out: &Path, members: &[Member]) -> Result<()> {
    let states = crate::experiment::sweep::slurm::task_states(out);
    println!(
        "{:<12} {:<12} {:>8}  last test -ELBO (bits/dim)",
        "run", "state", "step"
    );
    for (index, m) in members.iter().enumerate() {
        let run = RunDir::new(out.join(&m.name));
        let saved = saved_state(&run);
        let state = if finished(&run).is_some() {
            "done".to_string()
        } else if let Some((_, s)) = states.iter().find(|(i, _)| *i == index) {
            s.to_lowercase()
        } else if saved.is_some() {
            "stopped".to_string()
        } else {
            "not started".to_string()
        };
        let step = saved.map_or("-".to_string(), |s| s.step.to_string());
        let last_test = run
            .read_metrics()
            .ok()
            .and_then(|m| m.last()?["test"]["nelbo_bpd"].as_f64())
            .map_or("-".to_string(), |v| format!("{v:.4}"));
        println!("{:<12} {state:<12} {step:>8}  {last_test}", m.name);
    }
    let rows = collect_rows(out, members);
    write_csv(out, &rows)?;
    println!(
        "wrote {} ({} finished runs)",
        out.join("results.csv").display(),
        rows.len()
    );
    Ok(())
}

/// Reads a `results.csv` back: the bottleneck, its test figures and its run per row.
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
        let kind = f.get(ck).copied().unwrap_or_default();
        let spec = BottleneckSpec::from_kind_value(kind, num(cs)?)
            .map_err(|e| Error::Data(format!("{} line {}: {e}", path.display(), i + 2)))?;
        let seed = col("seed")
            .ok()
            .and_then(|c| f.get(c)?.parse().ok())
            .unwrap_or(0);
        rows.push(ResultRow {
            spec,
            seed,
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
    pub spec: BottleneckSpec,
    /// The run's seed (0 in files that predate the column).
    pub seed: u64,
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

    /// A sweep run seed by seed into one directory keeps every seed's members, in the
    /// order they were first recorded, each once.
    #[test]
    fn members_of_successive_sweeps_are_recorded_together() {
        let tmp = tempfile::tempdir().unwrap();
        let gd: BottleneckSpec = "gd:0.1".parse().unwrap();
        let vb: BottleneckSpec = "vb:1".parse().unwrap();
        let first = [Member::new(gd, Some(0)), Member::new(vb, Some(0))];
        let second = [Member::new(gd, Some(1)), Member::new(gd, Some(0))];
        record_members(tmp.path(), &first).unwrap();
        let all = record_members(tmp.path(), &second).unwrap();
        let names: Vec<&str> = all.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["gd-0.1-s0", "vb-1-s0", "gd-0.1-s1"]);
        let read: Vec<String> = recorded_members(tmp.path())
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(read, names);
    }

    #[test]
    fn a_rebuilt_binary_is_started_from_its_path() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(undeleted(p("/x/ibvae (deleted)")), p("/x/ibvae"));
        assert_eq!(undeleted(p("/x/ibvae")), p("/x/ibvae"));
    }

    #[test]
    fn members_are_named_and_validated() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let m = members(
            &s(&["0.015", "0.15"]),
            &s(&["0.02"]),
            &s(&["none", "aux"]),
            &[],
        )
        .unwrap();
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["gd-0.015", "gd-0.15", "vb-0.02", "none", "aux"]);
        assert!(members(&s(&["1.5"]), &[], &[], &[]).is_err());
        let seeded = members(&s(&["0.1"]), &[], &s(&["none"]), &[0, 1]).unwrap();
        let names: Vec<&str> = seeded.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["gd-0.1-s0", "gd-0.1-s1", "none-s0", "none-s1"]);
        assert!(members(&s(&["0.1"]), &[], &[], &[1, 1]).is_err());
        let err = members(&[], &[], &["gd:0.1".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--baselines"), "{err}");
    }
}
