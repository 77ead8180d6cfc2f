//! One training step as a value (SPEC section 7): forward, loss, backward, Adam and the
//! Polyak average on one batch. The training loop and the benchmark both take their
//! steps here, so a change to the step (gradient accumulation, CUDA-graph capture, data
//! parallelism) is made once.

use std::time::Instant;

use tch::{Kind, Tensor};

use crate::config::AdamSettings;
use crate::engine::sync;
use crate::model::hybrid::Hybrid;
use crate::model::nn::Mode;
use crate::model::ops::host_f64;
use crate::model::terms::Terms;
use crate::model::units::bits_per_dim_factor;
use crate::training::optim::{Adam, Ema, gradients};

/// What training updates: the model, Adam's state and the Polyak average, if kept.
#[derive(Debug)]
pub struct Learner {
    pub model: Hybrid,
    pub adam: Adam,
    pub ema: Option<Ema>,
}

/// A batch's figures after its step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepTerms {
    /// The loss the step minimised: the batch mean of the per-image loss, bits/dim.
    pub loss_bpd: f64,
    /// The batch's per-image terms, summed (nats).
    pub sums: Terms,
    pub images: usize,
}

/// A step not taken: the loss was not a finite number (its value), so neither the
/// weights nor the optimizer were touched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NonFiniteLoss(pub f64);

/// The wall-clock split of a step, for the benchmark: the device is synchronised at each
/// boundary (which the training loop does not pay for).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTimes {
    /// Forward pass and the loss on the host, seconds.
    pub forward: f64,
    pub backward: f64,
    /// Adam and the average.
    pub update: f64,
}

impl Learner {
    /// A learner for `model`, its average started at the model's weights.
    pub fn new(model: Hybrid, adam: AdamSettings, ema_decay: Option<f64>) -> Self {
        let ema = ema_decay.map(|d| Ema::new(model.params(), d));
        Self {
            model,
            adam: Adam::new(adam),
            ema,
        }
    }

    /// One step on the batch `x` (`[B, C, H, W]` in `[-1, 1]`) at learning rate `lr`,
    /// with its random draws from LibTorch's generator as seeded by the caller. With
    /// `times`, the device is synchronised between the parts and their durations kept.
    pub fn step(
        &mut self,
        x: &Tensor,
        lr: f64,
        times: Option<&mut StepTimes>,
    ) -> Result<StepTerms, NonFiniteLoss> {
        let t0 = Instant::now();
        let (loss, figures) = self.loss(x);
        // One transfer to the host per step: the loss and the batch's sums.
        let host = host_f64(&figures);
        if !host[0].is_finite() {
            return Err(NonFiniteLoss(host[0]));
        }
        let t1 = Instant::now();
        let params = self.model.params();
        let grads = gradients(params, &loss);
        if times.is_some() {
            sync(self.model.device());
        }
        let t2 = Instant::now();
        self.adam.step(params, &grads, lr);
        drop(grads);
        if let Some(e) = &mut self.ema {
            e.update(params);
        }
        sync(self.model.device());
        if let Some(times) = times {
            *times = StepTimes {
                forward: (t1 - t0).as_secs_f64(),
                backward: (t2 - t1).as_secs_f64(),
                update: t2.elapsed().as_secs_f64(),
            };
        }
        Ok(step_terms(&host, x))
    }

    /// The loss the step minimises, the batch mean of the per-image loss in bits/dim, and
    /// the step's figures on the device: `[loss, nelbo, kl, recon, vb_rate, aux_nll]`, the
    /// terms summed over the batch (nats).
    fn loss(&self, x: &Tensor) -> (Tensor, Tensor) {
        let out = self.model.forward(x, Mode::Train);
        // Optimise the batch mean of the per-image loss in bits/dim (Adam is scale-free;
        // this keeps the logged loss readable).
        let dims = self.model.config.dims();
        let loss = out.loss.mean(Kind::Float) * bits_per_dim_factor(dims); // []
        let figures = Tensor::cat(&[loss.detach().reshape([1]), out.terms.batch_sums()], 0);
        (loss, figures)
    }

    /// A whole step with no transfer to the host and no host-side state (what a CUDA
    /// graph captures): the loss, gradients, Adam's update at the learning rate in `lr`
    /// with `step` (Adam's `t`) incremented on the device first, and the average. Returns
    /// the step's figures (as [`Learner::step`] reads them), on the device. The caller
    /// keeps `self.adam.t` in step with `step`.
    pub fn device_step(&mut self, x: &Tensor, lr: &Tensor, step: &mut Tensor) -> Tensor {
        let (loss, figures) = self.loss(x);
        let params = self.model.params();
        let grads = gradients(params, &loss);
        let _ = step.g_add_scalar_(1.0);
        self.adam.update(params, &grads, lr, step);
        drop(grads);
        if let Some(e) = &mut self.ema {
            e.update(params);
        }
        figures
    }
}

/// A step's terms from its figures on the host (`[loss, nelbo, kl, recon, vb_rate,
/// aux_nll]`) for the batch `x`.
pub fn step_terms(host: &[f64], x: &Tensor) -> StepTerms {
    StepTerms {
        loss_bpd: host[0],
        sums: Terms::from_values([host[1], host[2], host[3], host[4], host[5]]),
        images: x.size()[0] as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::engine::random::seed_torch;
    use tch::Device;

    /// A step returns the batch's terms as the model computes them, and moves the
    /// weights; a non-finite loss leaves everything as it was.
    #[test]
    fn a_step_reports_its_batch_and_refuses_a_nan() {
        seed_torch(1);
        let model = Hybrid::new(&ModelConfig::tiny(), Device::Cpu).unwrap();
        let mut learner = Learner::new(model, AdamSettings::default(), Some(0.9));
        let x = Tensor::rand([2, 3, 32, 32], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let before = host_f64(&learner.model.params()[0].1);
        let mut times = StepTimes::default();
        let terms = learner.step(&x, 1e-3, Some(&mut times)).unwrap();
        assert_eq!(terms.images, 2);
        let s = terms.sums;
        assert!((s.nelbo - (s.recon + s.kl)).abs() <= 1e-5 * s.nelbo);
        // The loss is the batch mean in bits/dim: nelbo / 2 images / 3072 dims / ln 2
        // (the tiny model's `none` bottleneck adds nothing to it).
        let want = s.nelbo / 2.0 / 3072.0 / std::f64::consts::LN_2;
        assert!((terms.loss_bpd - want).abs() <= 1e-5 * want, "{terms:?}");
        assert!(times.forward > 0.0 && times.backward > 0.0);
        assert_eq!(learner.adam.t, 1);
        let after = host_f64(&learner.model.params()[0].1);
        assert_ne!(before, after);

        let nan = x.full_like(f64::NAN);
        let err = learner.step(&nan, 1e-3, None).unwrap_err();
        assert!(err.0.is_nan());
        assert_eq!(learner.adam.t, 1);
        assert_eq!(host_f64(&learner.model.params()[0].1), after);
    }
}
