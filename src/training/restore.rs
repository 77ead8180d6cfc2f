//! A run's model and optimizer: new, or restored from its checkpoint, and saved back to
//! it; and a run's model for evaluation and sampling (with its averaged weights).

use std::path::Path;

use tch::Device;

use crate::config::ExperimentConfig;
use crate::engine::Precision;
use crate::engine::random::{init_seed, seed_torch};
use crate::error::Result;
use crate::io::checkpoint::{Checkpoint, NamedTensors, TrainState};
use crate::io::run_dir::RunDir;
use crate::io::tensor_file::{Stored, load_weights};
use crate::model::hybrid::Hybrid;
use crate::training::optim::Ema;
use crate::training::step::Learner;

/// The learner of the run in `run` and where its training stands: restored from the
/// checkpoint when there is one, else freshly initialised from the run's seed (and the
/// run's metrics log started afresh).
pub fn learner(
    run: &RunDir,
    config: &ExperimentConfig,
    device: Device,
    precision: Precision,
) -> Result<(Learner, TrainState)> {
    let tc = &config.train;
    seed_torch(init_seed(tc.seed));
    let mut model = Hybrid::new(&config.model, device)?;
    model.set_precision(precision);
    let mut learner = Learner::new(model, tc.adam, tc.ema_decay);
    if !run.has_checkpoint() {
        run.clear_metrics()?;
        return Ok((learner, TrainState::fresh()));
    }
    let (checkpoint, path) = Checkpoint::load(run)?;
    checkpoint.check_architecture(config, &path)?;
    let params = learner.model.params();
    load_weights(
        params,
        &checkpoint.weights,
        &path.display().to_string(),
        &[],
    )?;
    let step = checkpoint.state.step;
    learner.adam.restore(checkpoint.adam.as_ref(), step, device);
    if let Some(e) = &mut learner.ema {
        // From the restored weights, unless the checkpoint has the average itself.
        *e = Ema::new(params, e.decay);
        if let Some(average) = &checkpoint.ema {
            e.restore(average, device);
        }
    }
    // Metric lines written after the checkpoint, by a session that died before its next
    // one, are written again, once.
    run.truncate_metrics_after(step)?;
    Ok((learner, checkpoint.state))
}

/// Writes the learner and `state` as the run's checkpoint (atomically, keeping the one
/// before it).
pub fn save(
    run: &RunDir,
    config: &ExperimentConfig,
    learner: &Learner,
    state: &TrainState,
) -> Result<()> {
    Checkpoint {
        config: Some(config.clone()),
        state: state.clone(),
        weights: stored_params(&learner.model),
        adam: Some(learner.adam.moments()),
        ema: learner.ema.as_ref().map(Ema::weights),
    }
    .save(run)
}

/// The model's parameters copied to the host, by name.
pub fn stored_params(model: &Hybrid) -> NamedTensors {
    model
        .params()
        .iter()
        .map(|(name, t)| (name.clone(), Stored::from_tensor(t)))
        .collect()
}

/// Loads the model of a run for evaluation or sampling (plain device, no autodiff),
/// with the averaged weights when the run keeps a Polyak average.
pub fn load_for_inference(dir: &Path, device: Device) -> Result<(ExperimentConfig, Hybrid)> {
    let run = RunDir::new(dir);
    let config = run.read_config()?;
    let model = Hybrid::new(&config.model, device)?;
    let (checkpoint, path) = Checkpoint::load(&run)?;
    checkpoint.check_architecture(&config, &path)?;
    load_weights(
        model.params(),
        &checkpoint.weights,
        &path.display().to_string(),
        &[],
    )?;
    if let (Some(decay), Some(average)) = (config.train.ema_decay, &checkpoint.ema) {
        let mut ema = Ema::new(model.params(), decay);
        ema.restore(average, device);
        ema.copy_to(model.params());
    }
    Ok((config, model))
}
