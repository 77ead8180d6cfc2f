//! A sweep run on this machine: each member trained, then evaluated, by a child `ibvae`
//! process (`--jobs` at a time) with its output appended to the run's `train.log`.
//! `results.csv` is refreshed after every evaluation.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{Error, IoContext, Result, exit};
use crate::experiment::sweep::plan::{
    Member, PlannedRun, SweepPlan, finished, saved_state, write_member_config,
};
use crate::experiment::sweep::results;
use crate::io::lock;

/// How often the sweep looks at its children.
const POLL: Duration = Duration::from_millis(200);

/// Trains and evaluates every unfinished run of `runs`; `recorded` (the directory's
/// members, this sweep's and earlier ones') are the rows of `results.csv`.
pub fn run(plan: &SweepPlan, runs: &[PlannedRun], recorded: &[Member]) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut sweep = LocalSweep {
        plan,
        recorded,
        threads: plan.threads.unwrap_or((cores / plan.jobs).max(1)),
        // Ctrl-C, SIGTERM, SIGUSR1 or SIGHUP: the sweep starts no more children and
        // passes the stop on to those that run (each in a process group of its own,
        // so that it gets the stop once); they checkpoint and exit, and the sweep waits.
        stop: crate::signals::stop_flag()?,
        queue: unfinished(plan, runs),
        waiting: Vec::new(),
        running: Vec::new(),
        failures: Vec::new(),
        passed_on: false,
    };
    loop {
        sweep.start_next()?;
        if sweep.running.is_empty() && (sweep.waiting.is_empty() || sweep.stopped()) {
            break;
        }
        std::thread::sleep(POLL);
        sweep.pass_on_stop();
        sweep.reap()?;
        sweep.unblock();
    }
    sweep.finish(runs.len())
}

/// The runs not finished earlier, last first (the queue pops from its end).
fn unfinished<'a>(plan: &SweepPlan, runs: &'a [PlannedRun]) -> Vec<&'a PlannedRun> {
    let mut queue = Vec::new();
    for r in runs {
        if finished(&plan.run_dir(&r.member)).is_some() {
            crate::logln!("{:<12} finished earlier, skipped", r.member.name);
        } else {
            queue.push(r);
        }
    }
    queue.reverse();
    queue
}

/// What a member's child process does.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// `ibvae train --resume`: continues (or starts) the run.
    Training,
    /// `ibvae eval`: the finished run on the whole test set.
    Evaluating,
}

/// A member's child process.
struct Running<'a> {
    run: &'a PlannedRun,
    child: Child,
    phase: Phase,
}

/// The sweep's state between two looks at its children.
struct LocalSweep<'a> {
    plan: &'a SweepPlan,
    recorded: &'a [Member],
    /// CPU threads per child.
    threads: usize,
    stop: Arc<AtomicBool>,
    /// The runs not started yet, the next one last.
    queue: Vec<&'a PlannedRun>,
    /// Runs still held by another process (the child of an earlier sweep that was
    /// killed, saving its checkpoint): started once it lets go.
    waiting: Vec<&'a PlannedRun>,
    running: Vec<Running<'a>>,
    /// The names of the members whose child failed.
    failures: Vec<String>,
    /// The stop was passed on to the children.
    passed_on: bool,
}

impl<'a> LocalSweep<'a> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Once the sweep is told to stop, tells its children too (with
    /// `signals::PASSED_ON`: each saves a checkpoint and exits, even when it got the
    /// user's signal as well, as from `pkill ibvae`).
    fn pass_on_stop(&mut self) {
        if !self.stopped() || self.passed_on {
            return;
        }
        self.passed_on = true;
        #[cfg(unix)]
        for r in &self.running {
            // SAFETY: kill(2) on the id of a child this process started and has not
            // reaped, so the id cannot have been reused.
            unsafe {
                libc::kill(r.child.id() as libc::pid_t, crate::signals::PASSED_ON);
            }
        }
    }

    /// The directory of the run of `member`.
    fn run_path(&self, member: &Member) -> PathBuf {
        self.plan.out.join(&member.name)
    }

    /// Starts training the next runs of the queue while fewer than `--jobs` children
    /// run, unless the sweep was told to stop.
    fn start_next(&mut self) -> Result<()> {
        while self.running.len() < self.plan.jobs && !self.stopped() {
            let Some(run) = self.queue.pop() else {
                break;
            };
            let path = self.run_path(&run.member);
            if let Some(holder) = lock::holder(&path) {
                crate::logln!("{:<12} in use by {holder}; waiting for it", run.member.name);
                self.waiting.push(run);
                continue;
            }
            write_member_config(&self.plan.run_dir(&run.member), &run.config)?;
            let log = path.join("train.log");
            crate::logln!("{:<12} training (log: {})", run.member.name, log.display());
            let child = spawn_logged(self.command(Phase::Training, &path), &log)?;
            self.running.push(Running {
                run,
                child,
                phase: Phase::Training,
            });
        }
        Ok(())
    }

    /// Moves the waiting runs that no other process holds now back to the queue.
    fn unblock(&mut self) {
        let (free, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|r| lock::holder(&self.run_path(&r.member)).is_none());
        self.waiting = held;
        self.queue.extend(free);
    }

    /// Takes in the children that have exited: a trained run is evaluated next, an
    /// evaluated one refreshes `results.csv`.
    fn reap(&mut self) -> Result<()> {
        let mut i = 0;
        while i < self.running.len() {
            match self.running[i].child.try_wait().at(&self.plan.out)? {
                None => i += 1,
                Some(status) => {
                    let done = self.running.remove(i);
                    if status.success() {
                        self.next_phase(done.run, done.phase)?;
                    } else if status.code() == Some(exit::INTERRUPTED) || self.stopped() {
                        // Stopped with a checkpoint, or an evaluation stopped with the
                        // sweep: resumable, done again by the next run of the sweep.
                    } else {
                        let log = self.run_path(&done.run.member).join("train.log");
                        crate::logln!(
                            "{:<12} FAILED (see {})",
                            done.run.member.name,
                            log.display()
                        );
                        self.failures.push(done.run.member.name.clone());
                    }
                }
            }
        }
        Ok(())
    }

    /// After `phase` of `run` succeeded: its evaluation after its training (when the
    /// run has done all its steps and the sweep goes on), `results.csv` after its
    /// evaluation.
    fn next_phase(&mut self, run: &'a PlannedRun, phase: Phase) -> Result<()> {
        let m = &run.member;
        let dir = self.plan.run_dir(m);
        match phase {
            Phase::Evaluating => {
                if let Some(r) = finished(&dir) {
                    crate::logln!(
                        "{:<12} test negative ELBO {:.4} bits/dim, KL {:.4}",
                        m.name,
                        r.terms.nelbo,
                        r.terms.kl
                    );
                }
                results::write(
                    &self.plan.out,
                    &results::collect(&self.plan.out, self.recorded),
                )
            }
            Phase::Training if saved_state(&dir).is_some_and(|s| s.finished) && !self.stopped() => {
                crate::logln!("{:<12} evaluating on the whole test set", m.name);
                let path = self.run_path(m);
                let command = self.command(Phase::Evaluating, &path);
                let child = spawn_logged(command, &path.join("train.log"))?;
                self.running.push(Running {
                    run,
                    child,
                    phase: Phase::Evaluating,
                });
                Ok(())
            }
            Phase::Training => Ok(()),
        }
    }

    /// The child `ibvae` of `phase` on the run in `run`.
    fn command(&self, phase: Phase, run: &Path) -> Command {
        let mut cmd = Command::new(ibvae_executable());
        cmd.arg(match phase {
            Phase::Training => "train",
            Phase::Evaluating => "eval",
        })
        .arg("--run")
        .arg(run)
        .args(["--threads", &self.threads.to_string()])
        .args(["--device", &self.plan.device.to_string()])
        .args(["--layout", &self.plan.layout.to_string()]);
        match phase {
            Phase::Training => {
                if !self.plan.tensorboard {
                    cmd.arg("--no-tensorboard");
                }
                if let Some(g) = self.plan.cuda_graph {
                    cmd.args(["--cuda-graph", &g.to_string()]);
                }
                cmd.arg("--resume")
                    .args(["--precision", &self.plan.precision.to_string()])
            }
            Phase::Evaluating => cmd.arg("--json"),
        };
        cmd
    }

    /// `results.csv` of every recorded run, then what became of this sweep's `planned`
    /// runs: all done, interrupted (to resume), or some failed.
    fn finish(self, planned: usize) -> Result<()> {
        let out = &self.plan.out;
        let rows = results::collect(out, self.recorded);
        results::write(out, &rows)?;
        if self.stopped() {
            let done = results::collect(out, &self.plan.members).len();
            return Err(Error::Interrupted(format!(
                "interrupted: {done} of {planned} runs finished; run the same command again to \
                 resume"
            )));
        }
        crate::logln!(
            "wrote {} ({} runs)",
            results::path(out).display(),
            rows.len()
        );
        let done = results::collect(out, &self.plan.members).len();
        if self.failures.is_empty() && done < planned {
            // A run stopped on its own (a signal to it alone): resumable, not done.
            return Err(Error::Interrupted(format!(
                "{done} of {planned} runs finished, the others stopped with a checkpoint; \
                 run the same command again to resume them"
            )));
        }
        if !self.failures.is_empty() {
            return Err(Error::Training(format!(
                "{} run(s) failed: {}; their train.log says why; fix and run the sweep again \
                 to resume them",
                self.failures.len(),
                self.failures.join(", ")
            )));
        }
        Ok(())
    }
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
    die_with_parent(&mut cmd);
    // A process group of its own: the terminal's Ctrl-C reaches the sweep alone, which
    // passes it on once (a second stop signal would make a run quit without saving).
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
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

/// Has the child stopped (`signals::PASSED_ON`: it saves a checkpoint and exits) when
/// the sweep dies,
/// however it dies, so that no orphan trains on beside a rerun of the sweep.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, crate::signals::PASSED_ON) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The sweep died before the call above: do not start.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the sweep has exited"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuilt_binary_is_started_from_its_path() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(undeleted(p("/x/ibvae (deleted)")), p("/x/ibvae"));
        assert_eq!(undeleted(p("/x/ibvae")), p("/x/ibvae"));
    }
}
