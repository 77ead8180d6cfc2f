//! A sweep on a SLURM cluster: which members to submit, as one array job (see
//! [`slurm`](crate::experiment::sweep::slurm) for the script and the queue).

use std::path::PathBuf;

use crate::error::{IoContext, Result};
use crate::experiment::sweep::local::ibvae_executable;
use crate::experiment::sweep::plan::{
    Member, PlannedRun, SweepPlan, finished, write_member_config,
};
use crate::experiment::sweep::slurm::{self, SlurmOptions, Task, TaskRuntime};

/// Writes every member's `config.json` and submits the members that are neither done nor
/// queued at SLURM as one array job.
///
/// The array's task `i` is member `i` of the directory's `members.txt` (`recorded`, this
/// sweep's members and earlier sweeps'), so that task numbers mean the same run in every
/// submission to the directory and in `--status`.
pub fn submit(
    plan: &SweepPlan,
    runs: &[PlannedRun],
    recorded: &[Member],
    options: &SlurmOptions,
) -> Result<()> {
    // Every task SLURM still lists counts as queued, in whatever state: one that ended
    // (preempted, its node failed, being requeued) may be started again by SLURM itself,
    // and a run trained by two tasks at once would be lost.
    let queued = slurm::task_states(&plan.out);
    let out = std::fs::canonicalize(&plan.out).at(&plan.out)?;
    let all_runs: Vec<PathBuf> = recorded.iter().map(|m| out.join(&m.name)).collect();
    let mut tasks = Vec::new();
    for PlannedRun { member, config } in runs {
        let run = plan.run_dir(member);
        write_member_config(&run, config)?;
        let index = recorded
            .iter()
            .position(|m| m.name == member.name)
            .expect("the sweep's members are recorded");
        let name = &member.name;
        if finished(&run).is_some() {
            crate::logln!("{name:<12} finished earlier, skipped");
        } else if queued.contains_key(&index) {
            crate::logln!("{name:<12} already queued at SLURM, skipped");
        } else {
            tasks.push(Task {
                index,
                run: all_runs[index].clone(),
            });
        }
    }
    if tasks.is_empty() {
        crate::logln!("nothing to submit; see `ibvae sweep ... --status`");
        return Ok(());
    }
    let runtime = TaskRuntime {
        threads: plan.threads.or(options.cpus_per_task).unwrap_or(1),
        device: plan.device,
        precision: plan.precision,
        layout: plan.layout,
        cuda_graph: plan.cuda_graph,
        tensorboard: plan.tensorboard,
    };
    let exe = ibvae_executable();
    let script = slurm::script(&out, &tasks, &all_runs, &exe, runtime, options)?;
    let (path, job) = slurm::submit(&out, &script, options.dry_run)?;
    match job {
        Some(id) => crate::logln!(
            "submitted job {id}: {} array task(s), script {}\nfollow it with `squeue -j {id}` \
             or the same sweep command with --status",
            tasks.len(),
            path.display()
        ),
        None => crate::logln!(
            "wrote {} ({} array task(s)); submit it with `sbatch {}`",
            path.display(),
            tasks.len(),
            path.display()
        ),
    }
    Ok(())
}
