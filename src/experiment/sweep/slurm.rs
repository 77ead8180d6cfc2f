//! Sweeps on a SLURM cluster: one array task per sweep member, each continuing its run
//! from `config.json` and its checkpoint (`ibvae train --run DIR --resume`), then
//! evaluating it. The task index is the member's position in the sweep, so a member keeps
//! its index across submissions.
//!
//! Time limits and preemption: the script asks SLURM for SIGUSR1 `warn_minutes` before
//! the time limit and passes it on to `ibvae train` (SIGTERM reaches it from SLURM
//! directly), which finishes its step, saves a checkpoint and exits. After SIGUSR1 the task requeues itself
//! (`scontrol requeue`); after SIGTERM (`scontrol requeue`, preemption, `scancel`) SLURM
//! decides. A requeued task continues from the checkpoint, exactly as `--resume` does.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::engine::{DeviceChoice, Layout, Precision};
use crate::error::{Error, IoContext, Result};
use crate::training::graph::GraphMode;

/// What a cluster needs to know about each task.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    /// Time limit per task, in SLURM's format (`HH:MM:SS`, `D-HH`, minutes...).
    pub time: Option<String>,
    pub cpus_per_task: Option<usize>,
    pub gpus_per_task: Option<usize>,
    /// A file of extra `#SBATCH` lines (account, QOS, constraints, ...).
    pub extra: Option<PathBuf>,
    /// Minutes before the time limit at which the run checkpoints and requeues.
    pub warn_minutes: u32,
    /// Write the script without submitting it.
    pub dry_run: bool,
}

/// One array task: a member's index in the sweep and its run directory.
#[derive(Debug, Clone)]
pub struct Task {
    pub index: usize,
    pub run: PathBuf,
}

/// How each task computes.
#[derive(Debug, Clone, Copy)]
pub struct TaskRuntime {
    pub threads: usize,
    pub device: DeviceChoice,
    pub precision: Precision,
    pub layout: Layout,
    /// `--cuda-graph` for the runs, if given.
    pub cuda_graph: Option<GraphMode>,
    /// The runs write TensorBoard event files.
    pub tensorboard: bool,
}

/// The folder of a sweep's SLURM files: the script, the tasks' output, the job ids.
pub fn dir(sweep: &Path) -> PathBuf {
    sweep.join("slurm")
}

fn job_ids_path(sweep: &Path) -> PathBuf {
    dir(sweep).join("job_ids")
}

/// The sbatch array script for `tasks` of the sweep in `sweep`; `exe` is the `ibvae`
/// the tasks start.
pub fn script(
    sweep: &Path,
    tasks: &[Task],
    all_runs: &[PathBuf],
    exe: &Path,
    runtime: TaskRuntime,
    options: &SlurmOptions,
) -> Result<String> {
    let head = sbatch_head(sweep, tasks, &runtime, options)?;
    let runs: Vec<String> = all_runs
        .iter()
        .map(|r| format!("  {}", shell_quote(&r.display().to_string())))
        .collect();
    let TaskRuntime {
        threads,
        device,
        precision,
        layout,
        cuda_graph,
        tensorboard,
    } = runtime;
    let board = if tensorboard { "" } else { " --no-tensorboard" };
    let graph = cuda_graph.map_or(String::new(), |g| format!(" --cuda-graph {g}"));
    Ok(format!(
        r#"#!/usr/bin/env bash
# Written by `ibvae sweep --slurm`: one array task per sweep member (the task index is the
# member's position in the sweep). Each task continues its run from config.json and its
# checkpoint, then evaluates it. SIGUSR1 (before the time limit) and SIGTERM (requeue,
# preemption, scancel) reach ibvae, which checkpoints and exits; after SIGUSR1 the task
# requeues itself.
{head}

runs=(
{runs}
)
run=${{runs[$SLURM_ARRAY_TASK_ID]}}
ibvae={exe}
signal=
child=
# SIGUSR1 reaches only this shell: pass it on. SIGTERM reaches every process of the job
# (a second one would make ibvae quit without its checkpoint): only note it.
trap 'signal=USR1; [ -n "$child" ] && kill -s USR1 "$child" 2>/dev/null' USR1
trap 'signal=TERM' TERM

echo "task $SLURM_ARRAY_TASK_ID (restart ${{SLURM_RESTART_COUNT:-0}}): $run"
"$ibvae" train --run "$run" --resume --threads {threads} --device {device} --layout {layout} --precision {precision}{graph}{board} >> "$run/train.log" 2>&1 &
child=$!
# A trapped signal interrupts `wait`: wait again until ibvae has saved and exited.
status=0
while kill -0 "$child" 2>/dev/null; do wait "$child"; status=$?; done
child=
if [ -n "$signal" ]; then
  echo "stopped by SIG$signal with a checkpoint"
  if [ "$signal" = USR1 ]; then
    scontrol requeue "${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
  fi
  exit 0
fi
[ "$status" -eq 0 ] || {{ echo "training failed ($status): see $run/train.log"; exit "$status"; }}
"$ibvae" eval --run "$run" --threads {threads} --device {device} --layout {layout} --json >> "$run/train.log" 2>&1
"#,
        head = head.join("\n"),
        runs = runs.join("\n"),
        exe = shell_quote(&exe.display().to_string()),
    ))
}

/// The `#SBATCH` lines of the script: the array, its output, the signal before the time
/// limit, the resources, and the lines of `--sbatch-extra`.
fn sbatch_head(
    sweep: &Path,
    tasks: &[Task],
    runtime: &TaskRuntime,
    options: &SlurmOptions,
) -> Result<Vec<String>> {
    let indices: Vec<String> = tasks.iter().map(|t| t.index.to_string()).collect();
    let name = sweep
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sweep".into());
    let mut head = vec![
        format!("#SBATCH --job-name=ibvae-{name}"),
        format!("#SBATCH --array={}", indices.join(",")),
        format!("#SBATCH --output={}/task-%a.out", dir(sweep).display()),
        "#SBATCH --open-mode=append".into(),
        "#SBATCH --requeue".into(),
        format!("#SBATCH --signal=B:USR1@{}", 60 * options.warn_minutes),
        format!(
            "#SBATCH --cpus-per-task={}",
            options.cpus_per_task.unwrap_or(runtime.threads)
        ),
    ];
    if let Some(p) = &options.partition {
        head.push(format!("#SBATCH --partition={p}"));
    }
    if let Some(t) = &options.time {
        head.push(format!("#SBATCH --time={t}"));
    }
    if let Some(g) = options.gpus_per_task {
        head.push(format!("#SBATCH --gpus-per-task={g}"));
    }
    if let Some(extra) = &options.extra {
        let text = std::fs::read_to_string(extra).at(extra)?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if !line.starts_with("#SBATCH") {
                return Err(Error::Config(format!(
                    "{}: every line must be an #SBATCH directive, not `{line}`",
                    extra.display()
                )));
            }
            head.push(line.to_string());
        }
    }
    Ok(head)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes the script to the sweep's `slurm/` folder and, unless `dry_run`, submits it;
/// returns the script's path and the job id.
pub fn submit(sweep: &Path, script: &str, dry_run: bool) -> Result<(PathBuf, Option<String>)> {
    let folder = dir(sweep);
    std::fs::create_dir_all(&folder).at(&folder)?;
    let path = folder.join("sweep.sbatch");
    crate::io::fsutil::write_atomic_str(&path, script)?;
    if dry_run {
        return Ok((path, None));
    }
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(&path)
        .output()
        .map_err(|e| {
            Error::Config(format!(
                "could not run sbatch ({e}): is this a SLURM login node? The script is in {}",
                path.display()
            ))
        })?;
    if !out.status.success() {
        return Err(Error::Config(format!(
            "sbatch refused {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // `--parsable` prints `id` or `id;cluster`.
    let id = text
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    let ids = job_ids_path(sweep);
    let mut all = std::fs::read_to_string(&ids).unwrap_or_default();
    all.push_str(&id);
    all.push('\n');
    crate::io::fsutil::write_atomic_str(&ids, &all)?;
    Ok((path, Some(id)))
}

/// The SLURM state of each task of the sweep's jobs that SLURM still lists, by task
/// index. Empty where SLURM cannot be asked.
pub fn task_states(sweep: &Path) -> BTreeMap<usize, TaskState> {
    let Ok(ids) = std::fs::read_to_string(job_ids_path(sweep)) else {
        return BTreeMap::new();
    };
    let ids: Vec<&str> = ids.lines().filter(|l| !l.trim().is_empty()).collect();
    if ids.is_empty() {
        return BTreeMap::new();
    }
    let Ok(out) = Command::new("squeue")
        .args([
            "--noheader",
            "--array",
            "--format=%i %T",
            "--jobs",
            &ids.join(","),
        ])
        .output()
    else {
        return BTreeMap::new();
    };
    let listed = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // `<job>_<task> <STATE>`
            let (job, state) = line.trim().split_once(' ')?;
            let (_, task) = job.split_once('_')?;
            Some((task.parse().ok()?, TaskState::from_squeue(state.trim())))
        })
        .collect::<Vec<(usize, TaskState)>>();
    // A task index listed by several submissions: the first line, as squeue orders them.
    let mut states = BTreeMap::new();
    for (index, state) in listed {
        states.entry(index).or_insert(state);
    }
    states
}

/// A task's state as `squeue` reports it (SLURM's job state codes, `%T`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Pending,
    Configuring,
    Running,
    Completing,
    Suspended,
    Stopped,
    Signaling,
    Resizing,
    StageOut,
    Requeued,
    RequeueHold,
    RequeueFed,
    ResvDelHold,
    SpecialExit,
    Preempted,
    Completed,
    Cancelled,
    Failed,
    Timeout,
    NodeFail,
    BootFail,
    OutOfMemory,
    Deadline,
    Revoked,
    /// A state this version does not know (from a newer SLURM), as `squeue` names it.
    Other(String),
}

impl TaskState {
    /// Every state this version knows, under its name in `squeue`.
    const NAMED: [(TaskState, &'static str); 24] = [
        (Self::Pending, "PENDING"),
        (Self::Configuring, "CONFIGURING"),
        (Self::Running, "RUNNING"),
        (Self::Completing, "COMPLETING"),
        (Self::Suspended, "SUSPENDED"),
        (Self::Stopped, "STOPPED"),
        (Self::Signaling, "SIGNALING"),
        (Self::Resizing, "RESIZING"),
        (Self::StageOut, "STAGE_OUT"),
        (Self::Requeued, "REQUEUED"),
        (Self::RequeueHold, "REQUEUE_HOLD"),
        (Self::RequeueFed, "REQUEUE_FED"),
        (Self::ResvDelHold, "RESV_DEL_HOLD"),
        (Self::SpecialExit, "SPECIAL_EXIT"),
        (Self::Preempted, "PREEMPTED"),
        (Self::Completed, "COMPLETED"),
        (Self::Cancelled, "CANCELLED"),
        (Self::Failed, "FAILED"),
        (Self::Timeout, "TIMEOUT"),
        (Self::NodeFail, "NODE_FAIL"),
        (Self::BootFail, "BOOT_FAIL"),
        (Self::OutOfMemory, "OUT_OF_MEMORY"),
        (Self::Deadline, "DEADLINE"),
        (Self::Revoked, "REVOKED"),
    ];

    /// The state from its name in `squeue`'s `%T` column.
    pub fn from_squeue(name: &str) -> Self {
        Self::NAMED
            .iter()
            .find(|(_, n)| *n == name)
            .map_or_else(|| Self::Other(name.to_string()), |(s, _)| s.clone())
    }

    /// The state's name in `squeue`.
    pub fn squeue_name(&self) -> &str {
        match self {
            Self::Other(name) => name,
            known => {
                Self::NAMED
                    .iter()
                    .find(|(s, _)| s == known)
                    .expect("every known state is named")
                    .1
            }
        }
    }
}

/// `pending`, `running`, ...: the state as `--status` shows it.
impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.squeue_name().to_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--status` shows a state as `squeue` names it, in lower case, known to this
    /// version or not.
    #[test]
    fn task_states_keep_squeue_names() {
        for (state, name) in TaskState::NAMED {
            assert_eq!(TaskState::from_squeue(name), state);
            assert_eq!(state.to_string(), name.to_lowercase());
        }
        assert_eq!(TaskState::from_squeue("PENDING"), TaskState::Pending);
        assert_eq!(
            TaskState::from_squeue("REQUEUE_HOLD").to_string(),
            "requeue_hold"
        );
        let newer = TaskState::from_squeue("POWER_UP_NODE");
        assert_eq!(newer, TaskState::Other("POWER_UP_NODE".into()));
        assert_eq!(newer.to_string(), "power_up_node");
    }
}
