//! Each command's flags, resolved into the request the library runs.

use super::{BenchArgs, Cli, Command, RunArgs, RuntimeArgs, SlurmArgs, SweepArgs, TrainArgs};
use crate::commands::{bench, evaluate, plot, reference, sample, tools, train};
use crate::config::Overrides;
use crate::engine::{DeviceChoice, Runtime};
use crate::error::Result;
use crate::experiment::sweep::slurm::SlurmOptions;
use crate::experiment::sweep::{self, SweepPlan};
use crate::training::trainer::StartMode;

impl RuntimeArgs {
    fn resolve(&self) -> Runtime {
        Runtime {
            device: self.device,
            threads: self.threads,
            layout: self.layout,
        }
    }
}

impl RunArgs {
    pub(super) fn overrides(&self) -> Overrides {
        Overrides {
            epochs: self.epochs,
            steps: self.steps,
            batch: self.batch,
            lr_start: self.lr_start,
            lr_end: self.lr_end,
            eval_images: self.eval_images,
            seed: self.seed,
            eval_every: self.eval_every,
            eval_first: self.eval_first,
            checkpoint_minutes: self.checkpoint_minutes,
            ema_decay: self.ema_decay,
            downsamples: self.downsamples,
            lr_hold: self.lr_hold,
            image_size: self.image_size,
            dropout: self.dropout,
            model_file: self.model.clone(),
        }
    }
}

impl TrainArgs {
    /// `--force` over `--resume` over a new run.
    fn start_mode(&self) -> StartMode {
        if self.force {
            StartMode::Force
        } else if self.resume {
            StartMode::Resume
        } else {
            StartMode::New
        }
    }
}

impl SlurmArgs {
    /// The cluster's settings, when the sweep goes to SLURM.
    fn resolve(&self) -> Option<SlurmOptions> {
        self.slurm.then(|| SlurmOptions {
            partition: self.partition.clone(),
            time: self.time.clone(),
            cpus_per_task: self.cpus_per_task,
            gpus_per_task: self.gpus_per_task,
            extra: self.sbatch_extra.clone(),
            warn_minutes: self.warn_minutes,
            dry_run: self.dry_run,
        })
    }
}

impl SweepArgs {
    pub(super) fn resolve(self) -> Result<SweepPlan> {
        Ok(SweepPlan {
            members: sweep::members(&self.gd, &self.vb, &self.baselines, &self.seeds)?,
            preset: self.preset,
            overrides: self.settings.overrides(),
            data: self.settings.data,
            out: self.out,
            jobs: self.jobs,
            threads: self.compute.runtime.threads,
            device: self.compute.runtime.device,
            layout: self.compute.runtime.layout,
            precision: self.compute.precision,
            cuda_graph: self.cuda_graph,
            slurm: self.slurm.resolve(),
            status: self.status,
            force: self.force,
            tensorboard: !self.no_tensorboard,
        })
    }
}

impl Command {
    /// The device the command computes on, for those that compute.
    pub fn device(&self) -> Option<DeviceChoice> {
        match self {
            Command::Train(a) => Some(a.compute.runtime.device),
            Command::Sweep(a) => Some(a.compute.runtime.device),
            Command::Bench(a) => Some(a.compute.runtime.device),
            Command::BenchSample(a) => Some(a.compute.runtime.device),
            Command::Eval(a) => Some(a.runtime.device),
            Command::Sample(a) => Some(a.runtime.device),
            Command::Reconstruct(a) => Some(a.runtime.device),
            Command::Plot(a) => Some(a.runtime.device),
            Command::VerifyTorch(a) => Some(a.runtime.device),
            _ => None,
        }
    }
}

/// Resolves the command's flags and runs it.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => train::run(train::TrainRequest {
            start: a.start_mode(),
            preset: a.model.preset,
            bottleneck: a.model.bottleneck,
            data: a.settings.data.clone(),
            run: a.run,
            overrides: a.settings.overrides(),
            runtime: a.compute.runtime.resolve(),
            precision: a.compute.precision,
            cuda_graph: a.cuda_graph,
            stop_after: a.stop_after,
            tensorboard: !a.no_tensorboard,
        }),
        Command::Sweep(a) => sweep::run(a.resolve()?),
        Command::Eval(a) => evaluate::run(evaluate::EvalRequest {
            run: a.run,
            data: a.data,
            samples: a.samples,
            batch: a.batch,
            runtime: a.runtime.resolve(),
            json: a.json,
        }),
        Command::Sample(a) => sample::sample(sample::SampleRequest {
            run: a.run,
            n: a.n,
            seed: a.seed,
            temperature: a.temperature,
            out: a.out,
            cols: a.cols,
            method: a.sampling.method,
            runtime: a.runtime.resolve(),
        }),
        Command::Reconstruct(a) => sample::reconstruct(sample::ReconstructRequest {
            run: a.run,
            n: a.n,
            samples: a.samples,
            data: a.data,
            seed: a.seed,
            out: a.out,
            method: a.sampling.method,
            runtime: a.runtime.resolve(),
        }),
        Command::Plot(a) => plot::run(plot::PlotRequest {
            sweep: a.sweep,
            runs: a.run,
            curves: a.curves,
            out: a.out,
            samples: a.samples,
            seed: a.seed,
            runtime: a.runtime.resolve(),
        }),
        Command::Bench(a) => bench::run(a.request()),
        Command::BenchSample(a) => bench::sample(bench::BenchSampleRequest {
            preset: a.model.preset,
            bottleneck: a.model.bottleneck,
            run: a.run,
            n: a.n,
            methods: a.methods,
            seed: a.seed,
            runtime: a.compute.runtime.resolve(),
            precision: a.compute.precision,
        }),
        Command::Params(a) => tools::params(tools::ParamsRequest {
            preset: a.model.preset,
            bottleneck: a.model.bottleneck,
            channels: a.channels,
            size: a.size,
        }),
        Command::VerifyTorch(a) => reference::verify(reference::VerifyRequest {
            file: a.file,
            json: a.json,
            runtime: a.runtime.resolve(),
        }),
        Command::ImportTorch(a) => reference::import(reference::ImportRequest {
            file: a.file,
            out: a.out,
            data: a.data,
        }),
        Command::Download(a) => tools::download(a.dir),
        Command::InfoBound(a) => tools::info_bound(tools::InfoBoundRequest {
            rate: a.rate,
            values: a.values,
            scale: a.scale,
            json: a.json,
        }),
    }
}

impl BenchArgs {
    fn request(self) -> bench::BenchRequest {
        bench::BenchRequest {
            preset: self.model.preset,
            bottleneck: self.model.bottleneck,
            batch: self.batch,
            steps: self.steps,
            data: self.data,
            seed: self.seed,
            runtime: self.compute.runtime.resolve(),
            precision: self.compute.precision,
            cuda_graph: self.cuda_graph,
            json: self.json,
            profile: self.profile,
        }
    }
}
