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

use serde_json::json;
use tch::{Device, Kind, Tensor};

use crate::config::ExperimentConfig;
use crate::engine::Precision;
use crate::error::{Error, Result};
use crate::io::data::{Batches, Dataset, images_to_tensor};
use crate::io::run_dir::{EpochSums, RunDir, TrainState};
use crate::model::hybrid::{Hybrid, Terms};
use crate::model::nn::Mode;
use crate::model::ops::host_f64;
use crate::model::units::{bits_per_dim, bits_per_dim_factor};
use crate::training::evaluate::{EvalOptions, EvalReport, evaluate};
use crate::training::optim::{Adam, Ema, exponential_lr, gradients};

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
    /// Show a progress bar on the terminal.
    pub progress: bool,
    /// Set to stop at the next step boundary with a checkpoint (SIGINT).
    pub stop: Arc<AtomicBool>,
    /// Stop (with a checkpoint) after this many steps of this session: for tests.
    pub max_session_steps: Option<u64>,
}

/// The seed of training step `step`.
fn step_seed(seed: u64, step: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ step.wrapping_mul(0xBF58_476D_1CE4_E5B9)
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
                if saved != config {
                    return Err(Error::Config(format!(
                        "{} holds a run with another config than these flags ask for; resume \
                         it without changing its settings (`ibvae train --run {} --resume`), \
                         or start over with --force",
                        run.path.display(),
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
    let mc = &config.model;
    // ---- data
    if data.train.is_empty() {
        return Err(Error::Data(format!(
            "{} has no training images (CIFAR-10 needs data_batch_N.bin files)",
            tc.data.display()
        )));
    }
    check_images_fit(config, data)?;
    let n_train = data.train.len();
    let steps_per_epoch = tc.steps_per_epoch(n_train);
    let total_steps = tc.total_steps(n_train);
    let dims = mc.dims();
    let shape = |b| [b, mc.image_channels, mc.image_size, mc.image_size];
    // ---- model, optimizer, average: new or from the checkpoint
    let device = session.device;
    crate::engine::seed(step_seed(tc.seed, u64::MAX));
    let mut model = Hybrid::new(mc, device)?;
    model.set_precision(session.precision);
    let mut adam = Adam::new(tc.adam);
    let mut average = Average {
        ema: tc.ema_decay.map(|d| Ema::new(&model, d)),
        model: None,
    };
    let mut state = TrainState {
        steps_per_epoch,
        ..TrainState::fresh()
    };
    if run.has_checkpoint() {
        let (file, saved) = run.load_checkpoint(config, &model)?;
        adam.load_state(&file, saved.step, device);
        if let Some(e) = &mut average.ema {
            *e = Ema::new(&model, e.decay);
            e.load_state(&file, device);
        }
        state = TrainState {
            steps_per_epoch,
            ..saved
        };
        run.truncate_metrics_after(state.step)?;
    } else {
        run.clear_metrics()?;
    }
    if state.step >= total_steps {
        state.finished = true;
        return Ok(TrainOutcome {
            state,
            last_eval: None,
            interrupted: false,
        });
    }
    let bar = progress_bar(session.progress, total_steps, state.step);
    let mut last_eval = None;
    let mut last_checkpoint = Instant::now();
    // Without a terminal (a log file, a sweep), a plain line about once a minute.
    let mut last_log = Instant::now();
    let mut session_steps = 0u64;
    let mut order_epoch = u64::MAX;
    let mut order = Batches::sequential(0, 1);
    // ---- the untrained model's test figure, once, with a checkpoint so it is not redone
    if tc.eval_first && state.step == 0 && state.best_test_nelbo_bpd.is_none() {
        let report = test_report(&mut model, &mut average, data, (tc, session.precision))?;
        say(
            &bar,
            format!(
                "step 0: test {:.4} bpd (KL {:.4}, recon {:.4}) before training",
                report.nelbo_bpd, report.kl_bpd, report.recon_bpd
            ),
        );
        run.append_metrics(&json!({
            "step": 0,
            "epoch": 0,
            "epoch_end": false,
            "lr": tc.lr_start,
            "wall_s": 0.0,
            "test": &report,
        }))?;
        state.best_test_nelbo_bpd = Some(report.nelbo_bpd);
        run.save_checkpoint(config, &model, Some(&adam), average.ema.as_ref(), &state)?;
        last_eval = Some(report);
    }
    // ---- the loop
    while state.step < total_steps {
        let step = state.step;
        let epoch = step / steps_per_epoch;
        let batch_in_epoch = (step % steps_per_epoch) as usize;
        if order_epoch != epoch {
            order = Batches::shuffled(n_train, tc.batch, tc.seed, epoch);
            order_epoch = epoch;
        }
        let idx = order.get(batch_in_epoch);
        let t0 = Instant::now();
        crate::engine::seed(step_seed(tc.seed, step));
        let x = images_to_tensor(&data.train.gather(idx), shape(idx.len()), device);
        let terms = model.forward(&x, Mode::Train);
        // Optimise the batch mean of the per-image loss in bits/dim (Adam is scale-free;
        // this keeps the logged loss readable).
        let loss = terms.loss.mean(Kind::Float) * bits_per_dim_factor(dims);
        // One transfer to the host per step: the loss and the batch's sums.
        let sums = batch_sums(&loss, &terms);
        let loss_value = sums.loss;
        if !loss_value.is_finite() {
            bar.abandon();
            return Err(Error::Training(format!(
                "the loss became {loss_value} at step {step} (epoch {epoch}); the last good \
                 checkpoint{} is kept in {}. Lower --lr-start or check the data, then resume \
                 with --resume",
                if run.has_checkpoint() {
                    ""
                } else {
                    " (none yet)"
                },
                run.path.display()
            )));
        }
        let grads = gradients(&model, &loss);
        let lr = exponential_lr(tc.lr_start, tc.lr_end, tc.lr_hold, step, total_steps);
        adam.step(&model, &grads, lr);
        drop(grads);
        if let Some(e) = &mut average.ema {
            e.update(&model);
        }
        crate::engine::sync(device);
        let seconds = t0.elapsed().as_secs_f64();
        add_terms(&mut state.epoch_sums, &sums, idx.len(), seconds);
        state.elapsed_s += seconds;
        state.step += 1;
        session_steps += 1;
        let s = &state.epoch_sums;
        bar.set_position(state.step);
        bar.set_message(format!(
            "epoch {epoch} loss {:.4} bpd  {:.1} img/s",
            bits_per_dim(s.nelbo / s.images as f64, dims),
            s.images as f64 / s.seconds.max(1e-9)
        ));
        if !session.progress && last_log.elapsed().as_secs_f64() >= 60.0 {
            eprintln!(
                "step {}/{total_steps} epoch {epoch}: train {:.4} bpd, {:.1} img/s, lr {lr:.2e}",
                state.step,
                bits_per_dim(s.nelbo / s.images as f64, dims),
                s.images as f64 / s.seconds.max(1e-9)
            );
            last_log = Instant::now();
        }
        // ---- evaluation and checkpoint cadence
        let epoch_end = state.step.is_multiple_of(steps_per_epoch) || state.step == total_steps;
        let eval_due = epoch_end || tc.eval_every.is_some_and(|k| state.step.is_multiple_of(k));
        if eval_due {
            let report = test_report(&mut model, &mut average, data, (tc, session.precision))?;
            if !report.nelbo_bpd.is_finite() {
                bar.abandon();
                return Err(Error::Training(format!(
                    "the test negative ELBO became {} at step {} (epoch {epoch}); the last \
                     good checkpoint is kept in {}. Lower --lr-start, then resume with --resume",
                    report.nelbo_bpd,
                    state.step,
                    run.path.display()
                )));
            }
            let best = state
                .best_test_nelbo_bpd
                .map_or(report.nelbo_bpd, |b| b.min(report.nelbo_bpd));
            state.best_test_nelbo_bpd = Some(best);
            let line = metrics_line(&state, epoch, epoch_end, lr, dims, &report);
            say(
                &bar,
                format!(
                    "step {} epoch {}: train {:.4} bpd, test {:.4} bpd (KL {:.4}, recon {:.4})",
                    state.step,
                    epoch + u64::from(epoch_end),
                    bits_per_dim(s.nelbo / s.images as f64, dims),
                    report.nelbo_bpd,
                    report.kl_bpd,
                    report.recon_bpd
                ),
            );
            run.append_metrics(&line)?;
            last_eval = Some(report);
        }
        if epoch_end {
            state.epoch_sums = EpochSums::default();
        }
        state.finished = state.step == total_steps;
        let stop = session.stop.load(Ordering::SeqCst)
            || session
                .max_session_steps
                .is_some_and(|m| session_steps >= m);
        let time_due = last_checkpoint.elapsed().as_secs_f64() >= tc.checkpoint_minutes * 60.0;
        if epoch_end || eval_due || time_due || stop || state.finished {
            // An update can leave non-finite weights behind a finite loss: never save them.
            if !crate::io::tensor_file::all_finite(&model) {
                bar.abandon();
                return Err(Error::Training(format!(
                    "the weights became non-finite at step {} (epoch {epoch}); the last good \
                     checkpoint is kept in {}. Lower --lr-start, then resume with --resume",
                    state.step,
                    run.path.display()
                )));
            }
            run.save_checkpoint(config, &model, Some(&adam), average.ema.as_ref(), &state)?;
            last_checkpoint = Instant::now();
        }
        if stop && !state.finished {
            bar.abandon_with_message(format!("stopped at step {}; checkpoint saved", state.step));
            return Ok(TrainOutcome {
                state,
                last_eval,
                interrupted: true,
            });
        }
    }
    bar.finish_and_clear();
    Ok(TrainOutcome {
        state,
        last_eval,
        interrupted: false,
    })
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

/// A step's loss (bits/dim) and its batch's summed terms (nats), on the host.
struct BatchSums {
    loss: f64,
    nelbo: f64,
    kl: f64,
    recon: f64,
    vb_rate: f64,
    aux_nll: f64,
}

fn batch_sums(loss: &Tensor, terms: &Terms) -> BatchSums {
    let total = |t: &Tensor| t.detach().sum(Kind::Float);
    let values = host_f64(&Tensor::stack(
        &[
            loss.detach(),
            total(&terms.nelbo),
            total(&terms.kl),
            total(&terms.recon),
            total(&terms.vb_rate),
            total(&terms.aux_nll),
        ],
        0,
    ));
    BatchSums {
        loss: values[0],
        nelbo: values[1],
        kl: values[2],
        recon: values[3],
        vb_rate: values[4],
        aux_nll: values[5],
    }
}

fn add_terms(s: &mut EpochSums, b: &BatchSums, images: usize, seconds: f64) {
    s.images += images as u64;
    s.nelbo += b.nelbo;
    s.kl += b.kl;
    s.recon += b.recon;
    s.vb_rate += b.vb_rate;
    s.aux_nll += b.aux_nll;
    s.seconds += seconds;
}

/// One line of `metrics.jsonl`.
fn metrics_line(
    state: &TrainState,
    epoch: u64,
    epoch_end: bool,
    lr: f64,
    dims: usize,
    test: &EvalReport,
) -> serde_json::Value {
    let s = &state.epoch_sums;
    let per = |v: f64| bits_per_dim(v / s.images.max(1) as f64, dims);
    json!({
        "step": state.step,
        "epoch": epoch + u64::from(epoch_end),
        "epoch_end": epoch_end,
        "lr": lr,
        "train_nelbo_bpd": per(s.nelbo),
        "train_kl_bpd": per(s.kl),
        "train_recon_bpd": per(s.recon),
        "train_vb_rate_bpd": per(s.vb_rate),
        "train_aux_nll_bpd": per(s.aux_nll),
        "train_img_per_s": s.images as f64 / s.seconds.max(1e-9),
        "wall_s": state.elapsed_s,
        "test": test,
    })
}

/// The Polyak average of the weights, when the run keeps one, and the model it is
/// evaluated in (made at the first evaluation).
struct Average {
    ema: Option<Ema>,
    model: Option<Hybrid>,
}

/// The test evaluation during training, in float32 whatever the training precision (so
/// that `ibvae eval` reproduces it): on the Polyak average when there is one, on the
/// first `eval_images` test images, with the run's seed for the `z` draws.
fn test_report(
    model: &mut Hybrid,
    average: &mut Average,
    data: &Dataset,
    session: (&crate::config::TrainConfig, Precision),
) -> Result<EvalReport> {
    let (tc, training_precision) = session;
    let options = EvalOptions {
        limit: tc.eval_images,
        batch: tc.eval_batch,
        seed: tc.seed,
        iw_samples: 1,
    };
    let report = match &average.ema {
        Some(e) => {
            if average.model.is_none() {
                average.model = Some(Hybrid::new(&model.config, model.device())?);
            }
            let m = average.model.as_ref().expect("made above");
            e.copy_to(m);
            evaluate(m, &data.test, options)
        }
        None => {
            model.set_precision(Precision::F32);
            let report = evaluate(model, &data.test, options);
            model.set_precision(training_precision);
            report
        }
    };
    Ok(report)
}

/// A line above the progress bar, or on stderr when there is no bar (a log file).
fn say(bar: &indicatif::ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

fn progress_bar(show: bool, total: u64, at: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} eta {eta_precise}]",
        )
        .expect("a valid progress template"),
    );
    bar.set_position(at);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelConfig, TrainConfig};
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
            name: "synthetic".into(),
            train: images(8, 1),
            test: images(4, 2),
        };
        let mut train = TrainConfig::for_preset("tiny", tmp.path().to_path_buf()).unwrap();
        train.steps = Some(10);
        let mut config = ExperimentConfig {
            preset: "tiny".into(),
            model: ModelConfig::tiny(),
            train,
        };
        let session = Session {
            device: crate::engine::cpu(),
            precision: Precision::F32,
            progress: false,
            stop: Arc::new(AtomicBool::new(false)),
            max_session_steps: Some(3),
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
        let model = Hybrid::new(&config.model, crate::engine::cpu()).unwrap();
        let (_, state) = run.load_checkpoint(&config_ok, &model).unwrap();
        assert!(
            state.step >= 3 && state.step <= failed_at,
            "{} vs {failed_at}",
            state.step
        );
        assert!(crate::io::tensor_file::all_finite(&model));
    }
}
