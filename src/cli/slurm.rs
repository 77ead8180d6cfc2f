//! The flags of a sweep run as a SLURM array job.

use std::path::PathBuf;

use clap::Args;

/// Running a sweep as a SLURM array job.
#[derive(Debug, Clone, Args)]
pub struct SlurmArgs {
    /// Submit the runs to SLURM as one array job (one task per run) instead of running
    /// them here; rerun it to submit the runs that are neither done nor queued.
    #[arg(long)]
    pub slurm: bool,
    /// SLURM partition.
    #[arg(long, requires = "slurm")]
    pub partition: Option<String>,
    /// Time limit per task (SLURM's format: minutes, HH:MM:SS, D-HH...); a run stopped
    /// by it is requeued and continues from its checkpoint.
    #[arg(long, requires = "slurm")]
    pub time: Option<String>,
    /// CPUs per task [default: --threads, else 1].
    #[arg(long, requires = "slurm")]
    pub cpus_per_task: Option<usize>,
    /// GPUs per task (with --device cuda).
    #[arg(long, requires = "slurm")]
    pub gpus_per_task: Option<usize>,
    /// A file of extra #SBATCH lines for the script (account, QOS, constraints...).
    #[arg(long, requires = "slurm")]
    pub sbatch_extra: Option<PathBuf>,
    /// Minutes before the time limit at which a run checkpoints and requeues.
    #[arg(long, default_value_t = 5, requires = "slurm")]
    pub warn_minutes: u32,
    /// Write the script (in <out>/slurm/) without submitting it.
    #[arg(long, requires = "slurm")]
    pub dry_run: bool,
}
