//! How a run trains (SPEC section 7): Adam, the learning-rate schedule, the evaluation
//! and checkpoint cadence, the data.

use serde::{Deserialize, Serialize};

use super::model::Preset;
use crate::error::{Error, Result};

/// Adam's settings (paper: beta1 0.9, beta2 0.999, eps 1e-8, as PyTorch's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamSettings {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamSettings {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// How a run trains (SPEC section 7) and where its data lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training set (paper: 350). Ignored when `steps` is set.
    pub epochs: u64,
    /// Total optimizer steps, when given instead of epochs.
    pub steps: Option<u64>,
    /// Images per step (the reference's batch for each preset).
    pub batch: usize,
    /// Images per evaluation batch (memory only: the result does not depend on it beyond
    /// float rounding, and the `z` draws are seeded per batch).
    pub eval_batch: usize,
    /// Learning rate at the first step (paper: 1e-4) ...
    pub lr_start: f64,
    /// ... annealed exponentially to this at the last step (paper: 4e-6).
    pub lr_end: f64,
    /// Fraction of the run held at `lr_start` before the anneal begins (paper: 0).
    #[serde(default)]
    pub lr_hold: f64,
    /// Adam's betas and epsilon (paper: 0.9, 0.999, 1e-8).
    pub adam: AdamSettings,
    /// Seed of the data order, the initialisation and all noise.
    pub seed: u64,
    /// Evaluate on the test set every this many steps, in addition to each epoch's end.
    pub eval_every: Option<u64>,
    /// Evaluate the untrained model on the test set before the first step, as a step-0
    /// line of `metrics.jsonl`: the baseline a run's progress is measured from.
    #[serde(default)]
    pub eval_first: bool,
    /// Evaluate on at most this many test images during training (all of them when
    /// unset); `ibvae eval` always uses the whole test set.
    pub eval_images: Option<usize>,
    /// Write a checkpoint at least this often, in minutes, besides every epoch.
    pub checkpoint_minutes: f64,
    /// Decay of the Polyak average of the weights; off when unset (e.g. 0.9995).
    pub ema_decay: Option<f64>,
    /// The data directory the run was trained on.
    pub data: std::path::PathBuf,
    /// The images shrunk to this height and width by box averaging (full size when unset).
    #[serde(default)]
    pub image_size: Option<usize>,
}

impl TrainConfig {
    /// The paper's optimisation settings with the preset's batch size.
    pub fn for_preset(preset: Preset, data: std::path::PathBuf) -> Self {
        let batch = preset.batch();
        Self {
            epochs: 350,
            steps: None,
            batch,
            eval_batch: 4 * batch,
            lr_start: 1e-4,
            lr_end: 4e-6,
            lr_hold: 0.0,
            adam: AdamSettings::default(),
            seed: 0,
            eval_every: None,
            eval_first: false,
            eval_images: None,
            checkpoint_minutes: 10.0,
            ema_decay: None,
            data,
            image_size: None,
        }
    }

    /// Optimizer steps in the whole run for a training set of `n` images.
    pub fn total_steps(&self, n: usize) -> u64 {
        self.steps.unwrap_or(self.epochs * self.steps_per_epoch(n))
    }

    /// Steps per pass over `n` images (the last batch may be partial).
    pub fn steps_per_epoch(&self, n: usize) -> u64 {
        n.div_ceil(self.batch).max(1) as u64
    }

    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 || self.eval_batch == 0 {
            return Err(Error::Config("batch sizes must be positive".into()));
        }
        if self.steps == Some(0) || (self.steps.is_none() && self.epochs == 0) {
            return Err(Error::Config(
                "the run needs at least one step (--epochs or --steps)".into(),
            ));
        }
        if !(self.lr_start > 0.0 && self.lr_end > 0.0) {
            return Err(Error::Config(format!(
                "learning rates must be positive, got {} and {}",
                self.lr_start, self.lr_end
            )));
        }
        if !(0.0..=1.0).contains(&self.lr_hold) {
            return Err(Error::Config(format!(
                "--lr-hold is the fraction of the run held at --lr-start, in [0, 1], got {}",
                self.lr_hold
            )));
        }
        if let Some(d) = self.ema_decay
            && !(0.0..1.0).contains(&d)
        {
            return Err(Error::Config(format!(
                "--ema-decay must be in [0, 1), got {d}"
            )));
        }
        Ok(())
    }
}
