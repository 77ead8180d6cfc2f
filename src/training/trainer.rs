//! Training (SPEC section 7): Adam on the per-dimension loss, the learning rate annealed
//! exponentially over the run, a test evaluation at the end of every epoch, and
//! checkpoints that never lose a run.
//!
//! The loop reads top to bottom: settings, data, model (new or resumed), then per step:
//! batch, forward, NaN check, backward, Adam, Polyak average, logging, evaluation and
//! checkpoint cadence. Every random draw of step `s` comes from the device RNG seeded
//! with `(seed, s)`, and the data order from `(seed, epoch)`, so a resumed run repeats
//! exactly what an uninterrupted one would have done.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tch::{Device, Tensor};

use crate::config::{ExperimentConfig, TrainConfig};
use crate::engine::Precision;
use crate::engine::random::{seed_torch, step_seed};
use crate::error::{Error, Result};
use crate::io::checkpoint::{EpochSums, TrainState};
use crate::io::data::{Batches, Dataset, images_to_tensor};
use crate::io::run_dir::RunDir;
use crate::training::board::Board;
use crate::training::evaluate::EvalReport;
use crate::training::graph::{GraphMode, Stepper};
use crate::training::log::{MetricsLine, Progress, TrainFigures};
use crate::training::optim::{all_finite, exponential_lr};
use crate::training::restore;
use crate::training::step::{Learner, NonFiniteLoss, StepTerms};
use crate::training::tester::Tester;

/// How `train` was asked to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// A new run; refuses a directory that already holds one.
    New,
    /// Continue the run in the directory (or start it, if it has no checkpoint yet).
    Resume,
    /// Delete what the directory holds and start over.
    Force,
}

/// What a call of `train` ended with.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub state: TrainState,
    /// The last test evaluation, if one ran.
    pub last_eval: Option<EvalReport>,
    /// Whether the run stopped early on an interrupt (a checkpoint was written).
    pub interrupted: bool,
}

/// Options that do not define the experiment (they are not saved in `config.json`).
#[derive(Debug, Clone)]
pub struct Session {
    pub device: Device,
    /// The floating-point type of convolutions (bf16 on GPUs that have it).
    pub precision: Precision,
    /// Training steps replayed from a captured CUDA graph.
    pub cuda_graph: GraphMode,
    /// Show a progress bar on the terminal.
    pub progress: bool,
    /// Set to stop at the next step boundary with a checkpoint (SIGINT).
    pub stop: Arc<AtomicBool>,
    /// Stop (with a checkpoint) after this many steps of this session: for tests.
    pub max_session_steps: Option<u64>,
    /// Write TensorBoard event files into the run directory.
    pub tensorboard: bool,
}

/// Prepares the run directory for `config` according to `start`, and returns the config
/// to run with (the saved one when resuming).
pub fn prepare_run(
    run: &RunDir,
    config: ExperimentConfig,
    start: StartMode,
) -> Result<ExperimentConfig> {
    if run.has_config() {
        match start {
            StartMode::Force => run.clear()?,
            StartMode::Resume => {
                let saved = run.read_config()?;
                let differences = saved.differences(&config);
                if !differences.is_empty() {
                    return Err(Error::Config(format!(
                        "{} holds a run with other settings than these flags ask for ({}); \
                         resume it without flags (`ibvae train --run {} --resume`), or start \
                         over with --force",
                        run.path.display(),
                        crate::config::summarize_differences(&differences),
                        run.path.display()
                    )));
                }
                return Ok(saved);
            }
            StartMode::New => {
                let saved = run.read_config()?;
                let what = if saved == config {
                    "this run"
                } else {
                    "a run with another config"
                };
                return Err(Error::Config(format!(
                    "{} already holds {what}: pass --resume to continue it or --force to \
                     delete it and start over (nothing was changed)",
                    run.path.display()
                )));
            }
        }
    }
    run.write_config(&config)?;
    Ok(config)
}

/// Trains the run in `run` to the end of its schedule (or until stopped).
pub fn train(
    run: &RunDir,
    config: &ExperimentConfig,
    data: &Dataset,
    session: &Session,
) -> Result<TrainOutcome> {
    let tc = &config.train;
    // ---- data
    let mut schedule = Schedule::new(config, data)?;
    let total = schedule.total_steps;
    // ---- model, optimizer, average: new or from the checkpoint
    let (mut learner, saved) = restore::learner(run, config, session.device, session.precision)?;
    let mut state = TrainState {
        steps_per_epoch: schedule.steps_per_epoch,
        ..saved
    };
    let outcome = |state: TrainState, last_eval, interrupted| TrainOutcome {
        state,
        last_eval,
        interrupted,
    };
    // Done, unless the last evaluation is still owed.
    if state.step >= total && !state.pending_eval {
        state.finished = true;
        return Ok(outcome(state, None, false));
    }
    let mut io = RunIo {
        run,
        config,
        log: Progress::new(session.progress, total, state.step, config.model.dims()),
        tester: Tester::new(data, tc, session.precision, session.stop.clone()),
        board: match session.tensorboard {
            true => Some(Board::open(run, config, state.step)?),
            false => None,
        },
    };
    let (mut last_checkpoint, mut session_steps) = (Instant::now(), 0u64);
    let mut stepper = Stepper::new(session.cuda_graph, session.device, tc.batch)?;
    // ---- the evaluations owed before the first step
    let Some(mut last_eval) = io.catch_up(&mut learner, &mut state, &schedule)? else {
        return Ok(outcome(state, None, true));
    };
    // ---- the loop
    while state.step < total {
        let (step, epoch) = (state.step, state.step / schedule.steps_per_epoch);
        let t0 = Instant::now();
        let x = schedule.batch(step, session.device);
        seed_torch(step_seed(tc.seed, step));
        let lr = exponential_lr(tc.lr_start, tc.lr_end, tc.lr_hold, step, total);
        let batch = stepper.step(&mut learner, &x, lr, None)?;
        let batch = batch.map_err(|NonFiniteLoss(loss)| {
            io.log.abandon();
            stopped_by_nan(run, format!("the loss became {loss} at step {step}"), epoch)
        })?;
        state.epoch_sums.add(&batch, t0.elapsed().as_secs_f64());
        state.elapsed_s += t0.elapsed().as_secs_f64();
        state.step += 1;
        session_steps += 1;
        io.log.step(&state, epoch, lr);
        // ---- evaluation and checkpoint cadence
        let at = Cadence::after(state.step, &schedule, tc);
        let epoch_end = at.epoch_end;
        let eval_due = epoch_end || tc.eval_every.is_some_and(|k| state.step.is_multiple_of(k));
        if eval_due {
            match io.test(&mut learner, &mut state, Some(at))? {
                Some(report) => last_eval = Some(report),
                // A stop request during it: the checkpoint below records it as owed.
                None => state.pending_eval = true,
            }
        }
        if epoch_end && !state.pending_eval {
            state.epoch_sums = EpochSums::default();
        }
        // Not finished while an evaluation is owed: a stop during the last one leaves the
        // run to be resumed for it.
        state.finished = state.step == total && !state.pending_eval;
        let stop = session.stop.load(Ordering::SeqCst)
            || session
                .max_session_steps
                .is_some_and(|m| session_steps >= m);
        let time_due = last_checkpoint.elapsed().as_secs_f64() >= tc.checkpoint_minutes * 60.0;
        if epoch_end || eval_due || time_due || stop || state.finished {
            io.save(&learner, &state, epoch)?;
            last_checkpoint = Instant::now();
        }
        if stop && !state.finished {
            let message = format!("stopped at step {}; checkpoint saved", state.step);
            io.log.abandon_with(message);
            return Ok(outcome(state, last_eval, true));
        }
    }
    if let Some(board) = &mut io.board {
        board.finish()?;
    }
    io.log.finish();
    Ok(outcome(state, last_eval, false))
}

/// Where a step of the loop is when it evaluates: its epoch, whether the epoch ends
/// with it, and the learning rate it took.
#[derive(Debug, Clone, Copy)]
struct Cadence {
    epoch: u64,
    epoch_end: bool,
    lr: f64,
}

impl Cadence {
    /// The cadence of the step that brought the run to `done` steps (at least 1).
    fn after(done: u64, schedule: &Schedule, tc: &TrainConfig) -> Self {
        let step = done - 1;
        let total = schedule.total_steps;
        Self {
            epoch: step / schedule.steps_per_epoch,
            epoch_end: done.is_multiple_of(schedule.steps_per_epoch) || done == total,
            lr: exponential_lr(tc.lr_start, tc.lr_end, tc.lr_hold, step, total),
        }
    }
}

/// What the loop writes: the log, the test evaluations with their `metrics.jsonl` lines,
/// and the checkpoints.
struct RunIo<'a> {
    run: &'a RunDir,
    config: &'a ExperimentConfig,
    log: Progress,
    tester: Tester<'a>,
    /// The TensorBoard log, unless `--no-tensorboard`.
    board: Option<Board>,
}

impl RunIo<'_> {
    /// The evaluations owed before the next step: the untrained model's (with
    /// `--eval-first`), and the one a stop request cut short in the last session, each
    /// followed by a checkpoint so that it is done once. `None` when a stop request cuts
    /// one short again; else the last report, if there was one.
    fn catch_up(
        &mut self,
        learner: &mut Learner,
        state: &mut TrainState,
        schedule: &Schedule,
    ) -> Result<Option<Option<EvalReport>>> {
        let tc = &self.config.train;
        let mut last = None;
        if tc.eval_first && state.step == 0 && state.best_test_nelbo_bpd.is_none() {
            // Stopped during it: nothing to save, the next session does it again.
            let Some(report) = self.test(learner, state, None)? else {
                return Ok(None);
            };
            last = Some(report);
            self.save(learner, state, 0)?;
        }
        if state.pending_eval {
            let at = Cadence::after(state.step, schedule, tc);
            let Some(report) = self.test(learner, state, Some(at))? else {
                return Ok(None);
            };
            last = Some(report);
            state.pending_eval = false;
            if at.epoch_end {
                state.epoch_sums = EpochSums::default();
            }
            state.finished = state.step >= schedule.total_steps;
            self.save(learner, state, at.epoch)?;
        }
        Ok(Some(last))
    }

    /// Evaluates on the test set, logs it, keeps the best figure in `state` and appends
    /// the metrics line: after the step `at`, or for the untrained model when `None`.
    fn test(
        &mut self,
        learner: &mut Learner,
        state: &mut TrainState,
        at: Option<Cadence>,
    ) -> Result<Option<EvalReport>> {
        let Some(report) = self.tester.report(learner)? else {
            return Ok(None);
        };
        let epoch = at.as_ref().map_or(0, |a| a.epoch);
        if !report.terms.nelbo.is_finite() {
            self.log.abandon();
            let what = format!(
                "the test negative ELBO became {} at step {}",
                report.terms.nelbo, state.step
            );
            return Err(stopped_by_nan(self.run, what, epoch));
        }
        let best = state.best_test_nelbo_bpd.unwrap_or(f64::INFINITY);
        state.best_test_nelbo_bpd = Some(best.min(report.terms.nelbo));
        let tc = &self.config.train;
        let line = match at {
            None => {
                self.log
                    .say(format!("step 0: {} before training", report.summary()));
                MetricsLine {
                    step: 0,
                    epoch: 0,
                    epoch_end: false,
                    lr: tc.lr_start,
                    train: None,
                    wall_s: 0.0,
                    test: &report,
                }
            }
            Some(Cadence {
                epoch,
                epoch_end,
                lr,
            }) => {
                let epochs = epoch + u64::from(epoch_end);
                let train = TrainFigures::of(state, self.config.model.dims());
                self.log.say(format!(
                    "step {} epoch {epochs}: train {:.4} bpd, {}",
                    state.step,
                    train.terms.nelbo,
                    report.summary()
                ));
                MetricsLine {
                    step: state.step,
                    epoch: epochs,
                    epoch_end,
                    lr,
                    train: Some(train),
                    wall_s: state.elapsed_s,
                    test: &report,
                }
            }
        };
        self.run.append_metrics(&line.to_json())?;
        if let Some(board) = &mut self.board {
            board.metrics(&line)?;
            if line.step > 0 {
                self.tester.draw(learner, board, line.step, tc.seed)?;
            }
        }
        Ok(Some(report))
    }

    /// Saves the checkpoint, unless the weights went non-finite (an update can leave
    /// them so behind a finite loss): those never reach a checkpoint.
    fn save(&self, learner: &Learner, state: &TrainState, epoch: u64) -> Result<()> {
        if !all_finite(learner.model.params()) {
            self.log.abandon();
            let what = format!("the weights became non-finite at step {}", state.step);
            return Err(stopped_by_nan(self.run, what, epoch));
        }
        restore::save(self.run, self.config, learner, state)
    }
}

/// The data's images must be what the model was configured for.
pub fn check_images_fit(config: &ExperimentConfig, data: &Dataset) -> Result<()> {
    let m = &config.model;
    let t = &data.test;
    if t.channels != m.image_channels || t.height != m.image_size || t.width != m.image_size {
        return Err(Error::Data(format!(
            "the data in {} has {}x{}x{} images but the run's model takes {}x{}x{}",
            config.train.data.display(),
            t.channels,
            t.height,
            t.width,
            m.image_channels,
            m.image_size,
            m.image_size
        )));
    }
    Ok(())
}

/// The run's steps over its training images: how many, and the batch of each step (the
/// images of an epoch in an order shuffled by the run's seed and the epoch).
struct Schedule<'a> {
    data: &'a Dataset,
    batch: usize,
    seed: u64,
    /// `[C, H, W]` of the model's images.
    image: [usize; 3],
    steps_per_epoch: u64,
    total_steps: u64,
    /// The order of `order_epoch`.
    order: Batches,
    order_epoch: Option<u64>,
}

impl<'a> Schedule<'a> {
    fn new(config: &ExperimentConfig, data: &'a Dataset) -> Result<Self> {
        let (tc, mc) = (&config.train, &config.model);
        if data.train.is_empty() {
            return Err(Error::Data(format!(
                "{} has no training images (CIFAR-10 needs data_batch_N.bin files)",
                tc.data.display()
            )));
        }
        check_images_fit(config, data)?;
        let n = data.train.len();
        Ok(Self {
            data,
            batch: tc.batch,
            seed: tc.seed,
            image: [mc.image_channels, mc.image_size, mc.image_size],
            steps_per_epoch: tc.steps_per_epoch(n),
            total_steps: tc.total_steps(n)?,
            order: Batches::sequential(0, 1),
            order_epoch: None,
        })
    }

    /// The images of step `step` on `device`, `[B, C, H, W]` in `[-1, 1]`.
    fn batch(&mut self, step: u64, device: Device) -> Tensor {
        let epoch = step / self.steps_per_epoch;
        if self.order_epoch != Some(epoch) {
            self.order = Batches::shuffled(self.data.train.len(), self.batch, self.seed, epoch);
            self.order_epoch = Some(epoch);
        }
        let idx = self.order.get((step % self.steps_per_epoch) as usize);
        let [c, h, w] = self.image;
        images_to_tensor(&self.data.train.gather(idx), [idx.len(), c, h, w], device)
    }
}

impl EpochSums {
    /// Adds a step's batch, which took `seconds`.
    fn add(&mut self, batch: &StepTerms, seconds: f64) {
        self.images += batch.images as u64;
        self.terms.add(&batch.sums);
        self.seconds += seconds;
    }
}

/// The error that stops a run at a NaN or infinity: `what` happened in `epoch`, and the
/// last good checkpoint stays.
fn stopped_by_nan(run: &RunDir, what: String, epoch: u64) -> Error {
    let kept = if run.has_checkpoint() {
        "the last good checkpoint is kept"
    } else {
        "no checkpoint was written yet"
    };
    Error::Training(format!(
        "{what} (epoch {epoch}); {kept} in {}. Lower --lr-start or check the data, then \
         resume with --resume",
        run.path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelConfig, Preset};
    use crate::io::data::ImageSet;

    fn images(n: usize, salt: usize) -> ImageSet {
        ImageSet {
            pixels: (0..n * 3072)
                .map(|i| ((i * 7 + salt) % 256) as u8)
                .collect(),
            labels: vec![0; n],
            channels: 3,
            height: 32,
            width: 32,
        }
    }

    #[test]
    fn a_nan_leaves_the_last_good_checkpoint_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path().join("run"));
        let data = Dataset {
            kind: crate::io::data::DatasetKind::Cifar10,
            train: images(8, 1),
            test: images(4, 2),
        };
        let mut train = TrainConfig::for_preset(Preset::Tiny, tmp.path().to_path_buf());
        train.steps = Some(10);
        let mut config = ExperimentConfig {
            preset: Preset::Tiny,
            model: ModelConfig::tiny(),
            train,
        };
        let session = Session {
            device: crate::engine::cpu(),
            precision: Precision::F32,
            cuda_graph: GraphMode::Off,
            progress: false,
            stop: Arc::new(AtomicBool::new(false)),
            max_session_steps: Some(3),
            tensorboard: false,
        };
        let config_ok = prepare_run(&run, config.clone(), StartMode::New).unwrap();
        let out = super::train(&run, &config_ok, &data, &session).unwrap();
        assert!(out.interrupted && out.state.step == 3);
        // The same run continued with a learning rate that blows the weights up.
        config.train.lr_start = 1e30;
        config.train.lr_end = 1e30;
        let session = Session {
            max_session_steps: None,
            ..session
        };
        let err = super::train(&run, &config, &data, &session)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("became") && err.contains("--lr-start"),
            "{err}"
        );
        let failed_at: u64 = err
            .split("at step ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("the message names the step");
        // The checkpoint on disk is an earlier one, with finite weights, and it resumes.
        let (learner, state) =
            restore::learner(&run, &config_ok, crate::engine::cpu(), Precision::F32).unwrap();
        assert!(
            state.step >= 3 && state.step <= failed_at,
            "{} vs {failed_at}",
            state.step
        );
        assert!(all_finite(learner.model.params()));
    }
}
