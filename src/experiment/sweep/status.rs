//! `ibvae sweep --out DIR --status`: where each member's run stands, then `results.csv`
//! refreshed.

use std::fmt;
use std::path::Path;

use crate::error::Result;
use crate::experiment::sweep::plan::{Member, finished, saved_state};
use crate::experiment::sweep::results;
use crate::experiment::sweep::slurm::{self, TaskState};
use crate::io::run_dir::RunDir;

/// Where a member's run stands.
#[derive(Debug, Clone, PartialEq)]
enum RunState {
    /// Trained and evaluated.
    Done,
    /// Its SLURM task, as SLURM lists it.
    AtSlurm(TaskState),
    /// Training or evaluating here, in the process that holds its directory's lock.
    Running(u32),
    /// A checkpoint, and nothing that continues it.
    Stopped,
    NotStarted,
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Done => f.write_str("done"),
            Self::AtSlurm(task) => task.fmt(f),
            Self::Running(pid) => write!(f, "running ({pid})"),
            Self::Stopped => f.write_str("stopped"),
            Self::NotStarted => f.write_str("not started"),
        }
    }
}

/// One line per member: done, queued or running at SLURM, running here (with the process
/// id), stopped or not started, its
/// step and its last test figure; then `results.csv` refreshed.
pub fn show(out: &Path, members: &[Member]) -> Result<()> {
    let tasks = slurm::task_states(out);
    crate::outln!(
        "{:<12} {:<16} {:>8}  last test -ELBO (bits/dim)",
        "run",
        "state",
        "step"
    )?;
    for (index, m) in members.iter().enumerate() {
        let run = RunDir::new(out.join(&m.name));
        let saved = saved_state(&run);
        let state = if finished(&run).is_some() {
            RunState::Done
        } else if let Some(task) = tasks.get(&index) {
            RunState::AtSlurm(task.clone())
        } else if let Some(holder) = crate::io::lock::holder(&run.path) {
            RunState::Running(holder.pid)
        } else if saved.is_some() {
            RunState::Stopped
        } else {
            RunState::NotStarted
        };
        let step = saved.map_or("-".to_string(), |s| s.step.to_string());
        let last_test = run
            .read_metrics()
            .ok()
            .and_then(|m| m.last()?["test"]["nelbo_bpd"].as_f64())
            .map_or("-".to_string(), |v| format!("{v:.4}"));
        crate::outln!(
            "{:<12} {:<16} {step:>8}  {last_test}",
            m.name,
            state.to_string()
        )?;
    }
    let rows = results::collect(out, members);
    results::write(out, &rows)?;
    crate::outln!(
        "wrote {} ({} finished runs)",
        results::path(out).display(),
        rows.len()
    )?;
    Ok(())
}
