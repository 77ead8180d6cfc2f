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
    pub fn total_steps(&self, n: usize) -> Result<u64> {
        match self.steps {
            Some(steps) => Ok(steps),
            None => self
                .epochs
                .checked_mul(self.steps_per_epoch(n))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "--epochs {} of {} steps each is more steps than a run can count; ask \
                     for fewer epochs",
                        self.epochs,
                        self.steps_per_epoch(n)
                    ))
                }),
        }
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
        // Every number a run records must be finite: JSON has no NaN or infinity, and
        // `config.json` must read back as it was written.
        let positive = |v: f64| v > 0.0 && v.is_finite();
        if !(positive(self.lr_start) && positive(self.lr_end)) {
            return Err(Error::Config(format!(
                "learning rates must be positive finite numbers, got --lr-start {} and \
                 --lr-end {}",
                self.lr_start, self.lr_end
            )));
        }
        if !(self.checkpoint_minutes >= 0.0 && self.checkpoint_minutes.is_finite()) {
            return Err(Error::Config(format!(
                "--checkpoint-minutes is the time between checkpoints, a finite number of \
                 minutes >= 0 (0: after every step), got {}",
                self.checkpoint_minutes
            )));
        }
        if self.eval_every == Some(0) || self.eval_images == Some(0) {
            return Err(Error::Config(
                "--eval-every and --eval-images must be at least 1 (leave them out for an \
                 evaluation at each epoch's end on the whole test set)"
                    .into(),
            ));
        }
        let AdamSettings { beta1, beta2, eps } = self.adam;
        if !((0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2) && positive(eps)) {
            return Err(Error::Config(format!(
                "Adam's betas must be in [0, 1) and its eps a positive finite number, got \
                 {beta1}, {beta2} and {eps}"
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers that JSON cannot hold, or that no run can use, are refused with the flag
    /// they came from; the limits themselves are accepted.
    #[test]
    fn non_finite_and_out_of_range_numbers_are_refused() {
        let ok = TrainConfig::for_preset(Preset::Tiny, "data".into());
        assert!(ok.validate().is_ok());
        let refused = |change: &dyn Fn(&mut TrainConfig), flag: &str| {
            let mut c = ok.clone();
            change(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(flag), "{flag}: {err}");
        };
        for v in [f64::NAN, f64::INFINITY, -1.0, 0.0] {
            refused(&|c| c.lr_start = v, "--lr-start");
            refused(&|c| c.lr_end = v, "--lr-end");
        }
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0] {
            refused(&|c| c.checkpoint_minutes = v, "--checkpoint-minutes");
        }
        refused(&|c| c.eval_every = Some(0), "--eval-every");
        refused(&|c| c.eval_images = Some(0), "--eval-images");
        refused(&|c| c.adam.eps = f64::NAN, "eps");
        refused(&|c| c.adam.beta2 = 1.0, "betas");
        refused(&|c| c.ema_decay = Some(f64::NAN), "--ema-decay");
        refused(&|c| c.lr_hold = f64::NAN, "--lr-hold");
        let mut huge = ok.clone();
        huge.epochs = 6_148_914_691_236_517_206;
        let err = huge.total_steps(40).unwrap_err().to_string();
        assert!(err.contains("--epochs"), "{err}");
        assert_eq!(ok.total_steps(40).unwrap(), 350 * 10);
        let mut every_step = ok.clone();
        every_step.checkpoint_minutes = 0.0;
        assert!(every_step.validate().is_ok());
    }
}
