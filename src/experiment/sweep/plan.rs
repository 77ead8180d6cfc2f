//! What a sweep runs: its members (one bottleneck, perhaps one seed, each), the settings
//! they share, each member's whole `config.json`, and where each member's run stands on
//! disk.

use std::path::PathBuf;

use crate::config::{ExperimentConfig, Overrides};
use crate::engine::{DeviceChoice, Layout, Precision};
use crate::error::{Error, IoContext, Result};
use crate::experiment::sweep::slurm::SlurmOptions;
use crate::io::checkpoint::TrainState;
use crate::io::run_dir::RunDir;
use crate::model::bottleneck::BottleneckSpec;
use crate::training::evaluate::EvalReport;
use crate::training::graph::GraphMode;

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
    pub fn new(spec: BottleneckSpec, seed: Option<u64>) -> Self {
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
    let specs = bottlenecks(gd, vb, baselines)?;
    let mut unique = seeds.to_vec();
    unique.sort_unstable();
    unique.dedup();
    if unique.len() != seeds.len() {
        return Err(Error::Config(format!("--seeds repeats a seed: {seeds:?}")));
    }
    let per_seed: Vec<Option<u64>> = if seeds.is_empty() {
        vec![None]
    } else {
        seeds.iter().map(|&s| Some(s)).collect()
    };
    Ok(specs
        .into_iter()
        .flat_map(|spec| per_seed.iter().map(move |&seed| Member::new(spec, seed)))
        .collect())
}

/// The bottlenecks of `--gd`, `--vb` and `--baselines`, in that order (empty entries
/// skipped, so that `--vb ''` sweeps no VB weight).
fn bottlenecks(gd: &[String], vb: &[String], baselines: &[String]) -> Result<Vec<BottleneckSpec>> {
    let given = |values: &[String]| -> Vec<String> {
        values
            .iter()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect()
    };
    let mut out = Vec::new();
    for rate in given(gd) {
        out.push(format!("gd:{rate}").parse::<BottleneckSpec>()?);
    }
    for beta in given(vb) {
        out.push(format!("vb:{beta}").parse::<BottleneckSpec>()?);
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
    Ok(out)
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
    /// Memory layout of every run's activations.
    pub layout: Layout,
    /// `--cuda-graph` for every run, if given.
    pub cuda_graph: Option<GraphMode>,
    /// Submit the runs to SLURM as an array job instead of running them here.
    pub slurm: Option<SlurmOptions>,
    /// Only show where each run stands (and refresh `results.csv`).
    pub status: bool,
    /// Start over the runs saved with other settings than these.
    pub force: bool,
    /// The runs write TensorBoard event files.
    pub tensorboard: bool,
}

impl SweepPlan {
    /// The run directory of `member`.
    pub fn run_dir(&self, member: &Member) -> RunDir {
        RunDir::new(self.out.join(&member.name))
    }
}

/// A member with the whole config its run trains with.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    pub member: Member,
    pub config: ExperimentConfig,
}

/// Every member's config, resolved as `ibvae train` resolves its flags, before any run
/// starts: a bad setting or unreadable data stops the sweep here, in this process.
pub fn planned_runs(plan: &SweepPlan) -> Result<Vec<PlannedRun>> {
    if plan.members.is_empty() {
        return Err(Error::Config(
            "the sweep has no runs: give --gd, --vb or --baselines".into(),
        ));
    }
    let data = plan
        .data
        .clone()
        .unwrap_or_else(crate::io::data::default_data_dir);
    let images = crate::io::data::load_sized(&data, plan.overrides.image_size)?;
    let data = std::fs::canonicalize(&data).at(&data)?;
    let shape = (images.test.channels, images.test.height);
    drop(images);
    plan.members
        .iter()
        .map(|m| {
            let overrides = Overrides {
                seed: m.seed.or(plan.overrides.seed),
                ..plan.overrides.clone()
            };
            let config =
                ExperimentConfig::resolve(plan.preset, m.spec, data.clone(), shape, &overrides)?;
            Ok(PlannedRun {
                member: m.clone(),
                config,
            })
        })
        .collect()
}

/// Checks the runs the directory already holds against `runs`: a run saved with other
/// settings is refused, naming the difference, or with `force` deleted to start over.
pub fn check_saved_settings(plan: &SweepPlan, runs: &[PlannedRun]) -> Result<()> {
    let mut changed = Vec::new();
    for r in runs {
        let dir = plan.run_dir(&r.member);
        if !dir.has_config() {
            continue;
        }
        let differences = match dir.read_config() {
            Ok(saved) => saved.differences(&r.config),
            Err(e) => vec![e.to_string()],
        };
        if !differences.is_empty() {
            changed.push((
                dir,
                format!("{}: {}", r.member.name, differences.join("; ")),
            ));
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    if !plan.force {
        let list: Vec<&str> = changed.iter().map(|(_, d)| d.as_str()).collect();
        return Err(Error::Config(format!(
            "{} holds runs made with other settings than this sweep asks for ({}); use \
             another --out, or pass --force to start those runs over",
            plan.out.display(),
            list.join(" | ")
        )));
    }
    for (dir, what) in changed {
        if let Some(holder) = crate::io::lock::holder(&dir.path) {
            return Err(Error::Locked(format!(
                "{} is in use by {holder}: stop it before --force starts it over",
                dir.path.display()
            )));
        }
        crate::logln!("starting over ({what})");
        dir.clear()?;
    }
    Ok(())
}

/// Writes the member's `config.json` unless its directory has one: one the sweep's
/// [`check_saved_settings`] found equal to `config` before any run started.
pub fn write_member_config(run: &RunDir, config: &ExperimentConfig) -> Result<()> {
    match run.has_config() {
        true => Ok(()),
        false => run.write_config(config),
    }
}

/// The training state saved in a run's checkpoint (read from its header), if any.
pub fn saved_state(run: &RunDir) -> Option<TrainState> {
    run.saved_state().ok().flatten()
}

/// The final evaluation of a run that has done all its steps; `None` until then.
pub fn finished(run: &RunDir) -> Option<EvalReport> {
    if !saved_state(run)?.finished {
        return None;
    }
    let text = std::fs::read_to_string(run.eval_path()).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
