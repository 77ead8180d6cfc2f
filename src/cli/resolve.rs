//! Each command's flags, resolved into the request the library runs.

use super::{Cli, Command, RunArgs, RuntimeArgs};
use crate::commands::{bench, evaluate, plot, reference, sample, tools, train};
use crate::config::Overrides;
use crate::engine::{DeviceChoice, Runtime};
use crate::error::Result;
use crate::experiment::sweep::slurm::SlurmOptions;
use crate::training::trainer::StartMode;

impl RuntimeArgs {
    fn resolve(&self) -> Runtime {
        Runtime {
            device: self.device,
            threads: self.threads,
        }
    }
}

impl RunArgs {
    fn overrides(&self) -> Overrides {
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
            preset: a.model.preset,
            bottleneck: a.model.bottleneck,
            data: a.settings.data.clone(),
            run: a.run,
            overrides: a.settings.overrides(),
            start: if a.force {
                StartMode::Force
            } else if a.resume {
                StartMode::Resume
            } else {
                StartMode::New
            },
            runtime: a.compute.runtime.resolve(),
            precision: a.compute.precision,
            stop_after: a.stop_after,
        }),
        Command::Sweep(a) => crate::experiment::sweep::run(crate::experiment::sweep::SweepPlan {
            members: crate::experiment::sweep::members(&a.gd, &a.vb, &a.baselines, &a.seeds)?,
            preset: a.preset,
            overrides: a.settings.overrides(),
            data: a.settings.data,
            out: a.out,
            jobs: a.jobs,
            threads: a.compute.runtime.threads,
            device: a.compute.runtime.device,
            precision: a.compute.precision,
            slurm: a.slurm.slurm.then(|| SlurmOptions {
                partition: a.slurm.partition.clone(),
                time: a.slurm.time.clone(),
                cpus_per_task: a.slurm.cpus_per_task,
                gpus_per_task: a.slurm.gpus_per_task,
                extra: a.slurm.sbatch_extra.clone(),
                warn_minutes: a.slurm.warn_minutes,
                dry_run: a.slurm.dry_run,
            }),
            status: a.status,
        }),
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
            out: a.out,
            samples: a.samples,
            seed: a.seed,
            runtime: a.runtime.resolve(),
        }),
        Command::Bench(a) => bench::run(bench::BenchRequest {
            preset: a.model.preset,
            bottleneck: a.model.bottleneck,
            batch: a.batch,
            steps: a.steps,
            data: a.data,
            seed: a.seed,
            runtime: a.compute.runtime.resolve(),
            precision: a.compute.precision,
            json: a.json,
        }),
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
