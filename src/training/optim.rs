//! Adam (Kingma & Ba 2015) over the model's named parameters, the paper's exponential
//! learning-rate schedule (SPEC section 7), and Polyak averaging of the weights.
//!
//! Both work on a list of named parameters (the model's, under the reference's names),
//! not on the model type, and key their state by those names, so a checkpoint holds it
//! beside the weights and a resumed run continues exactly.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use crate::config::AdamSettings;
use crate::engine::ffi::{AdamConstants, AdamLists, foreach_lerp_, fused_adam_};
use crate::io::checkpoint::{AdamMoments, NamedTensors};
use crate::io::tensor_file::Stored;

/// Parameters under their reference names, in the model's order (`Hybrid::params`).
pub type NamedParams = [(String, Tensor)];

/// Adam with state per parameter name: first and second moments, float32, on the
/// model's device.
#[derive(Debug)]
pub struct Adam {
    pub settings: AdamSettings,
    /// Number of updates made so far.
    pub t: u64,
    m: BTreeMap<String, Tensor>,
    v: BTreeMap<String, Tensor>,
}

/// The gradients of a scalar `loss` with respect to every parameter in `params`, in
/// their order (undefined for a parameter the loss does not use).
pub fn gradients(params: &NamedParams, loss: &Tensor) -> Vec<Tensor> {
    let params: Vec<&Tensor> = params.iter().map(|(_, t)| t).collect();
    Tensor::run_backward(&[loss], &params, false, false)
}

/// `grad` in the memory layout of `param`. LibTorch's fused Adam walks each parameter,
/// its gradient and its moments in memory order, assuming one layout for all of them, as
/// `.grad` keeps it. A gradient asked of autograd directly keeps the layout its
/// computation gave it: a convolution's weight gradient comes out channels-last when the
/// convolution's input is, while the weight is NCHW. Such a gradient is copied into its
/// parameter's layout; any other is passed on as it is.
fn laid_out_as(grad: &Tensor, param: &Tensor) -> Tensor {
    if grad.stride() == param.stride() {
        return grad.shallow_clone();
    }
    tch::no_grad(|| {
        let mut g = param.empty_like();
        g.copy_(grad);
        g
    })
}

/// Whether every parameter is finite.
pub fn all_finite(params: &NamedParams) -> bool {
    tch::no_grad(|| {
        let flags: Vec<Tensor> = params
            .iter()
            .map(|(_, t)| t.isfinite().all().to_kind(Kind::Float))
            .collect();
        Tensor::stack(&flags, 0).min().double_value(&[]) == 1.0
    })
}

/// Named tensors copied to the host.
fn stored(tensors: &BTreeMap<String, Tensor>) -> NamedTensors {
    tensors
        .iter()
        .map(|(n, t)| (n.clone(), Stored::from_tensor(t)))
        .collect()
}

/// Named host tensors on `device`.
fn on_device(tensors: &NamedTensors, device: Device) -> BTreeMap<String, Tensor> {
    tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.to_tensor(device)))
        .collect()
}

/// The learning rate as a one-element tensor for the fused kernel on `device`: LibTorch's
/// CUDA kernel reads it as float32, the CPU kernel as a double (so a CPU run keeps the
/// rate's every bit).
pub fn lr_tensor(lr: f64, device: Device) -> Tensor {
    let kind = if device.is_cuda() {
        Kind::Float
    } else {
        Kind::Double
    };
    Tensor::from(lr).to_kind(kind).to_device(device)
}

impl Adam {
    pub fn new(settings: AdamSettings) -> Self {
        Self {
            settings,
            t: 0,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
        }
    }

    /// One update of every parameter that has a gradient in `grads` (as returned by
    /// [`gradients`]): `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
    /// `p -= lr * m_hat / (sqrt(v_hat) + eps)` with the bias corrections
    /// `m_hat = m / (1 - b1^t)`, `v_hat = v / (1 - b2^t)` (PyTorch's form, in place), by
    /// LibTorch's fused kernel over all of them at once (`torch.optim.Adam(fused=True)`):
    /// a few launches per step on a GPU instead of several per parameter.
    pub fn step(&mut self, params: &NamedParams, grads: &[Tensor], lr: f64) {
        let Some((_, first)) = params.first() else {
            return;
        };
        let device = first.device();
        self.t += 1;
        // The step number as PyTorch keeps it, a float32 scalar (the kernel only reads it);
        // exact up to 2^24 steps.
        let step = Tensor::from(self.t as f32).to_device(device);
        self.update(params, grads, &lr_tensor(lr, device), &step);
    }

    /// [`Adam::step`]'s update with the learning rate and the step number `t` (already
    /// counting this step) read from one-element tensors on the parameters' device, and
    /// `self.t` left alone: what a captured CUDA graph replays, with the caller keeping
    /// both tensors and `t` up to date.
    pub fn update(&mut self, params: &NamedParams, grads: &[Tensor], lr: &Tensor, step: &Tensor) {
        let (mut p, mut g, mut m, mut v) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((name, param), grad) in params.iter().zip(grads) {
            if !grad.defined() {
                continue;
            }
            let (m_i, v_i) = self.moments_of(name, param);
            p.push(param.shallow_clone());
            g.push(laid_out_as(grad, param));
            m.push(m_i);
            v.push(v_i);
        }
        if p.is_empty() {
            return;
        }
        let steps: Vec<Tensor> = p.iter().map(|_| step.shallow_clone()).collect();
        let lists = AdamLists {
            params: &p,
            grads: &g,
            exp_avgs: &m,
            exp_avg_sqs: &v,
            state_steps: &steps,
        };
        let AdamSettings { beta1, beta2, eps } = self.settings;
        fused_adam_(lists, lr, AdamConstants { beta1, beta2, eps })
            .expect("Adam's lists are built above with one entry per parameter");
    }

    /// The moments of parameter `name` (zeros at its first update), sharing storage with
    /// the optimizer's state.
    fn moments_of(&mut self, name: &str, param: &Tensor) -> (Tensor, Tensor) {
        let get = |map: &mut BTreeMap<String, Tensor>| {
            map.entry(name.to_string())
                .or_insert_with(|| tch::no_grad(|| param.zeros_like()))
                .shallow_clone()
        };
        (get(&mut self.m), get(&mut self.v))
    }

    /// The moments, copied to the host for a checkpoint.
    pub fn moments(&self) -> AdamMoments {
        AdamMoments {
            m: stored(&self.m),
            v: stored(&self.v),
        }
    }

    /// Continues from `moments` after `t` updates (`None`: no moments were saved, as
    /// for imported weights; they start at zero).
    pub fn restore(&mut self, moments: Option<&AdamMoments>, t: u64, device: Device) {
        self.t = t;
        if let Some(moments) = moments {
            self.m = on_device(&moments.m, device);
            self.v = on_device(&moments.v, device);
        }
    }
}

/// The learning rate at step `step` of `total`: held at `start` for the first `hold`
/// fraction of the steps, then annealed exponentially to `end` at the last step,
/// `start * (end / start)^((step - h) / (total - 1 - h))` with `h = floor(hold * total)`
/// (paper: no hold, 1e-4 to 4e-6).
pub fn exponential_lr(start: f64, end: f64, hold: f64, step: u64, total: u64) -> f64 {
    let held = ((hold.clamp(0.0, 1.0) * total as f64).floor() as u64).min(total.saturating_sub(1));
    if step < held || total <= held + 1 {
        return start;
    }
    let frac = ((step - held).min(total - 1 - held)) as f64 / (total - 1 - held) as f64;
    start * (end / start).powf(frac)
}

/// Polyak averaging: an exponential moving average of the weights,
/// `ema = decay * ema + (1 - decay) * w` after every step.
#[derive(Debug)]
pub struct Ema {
    pub decay: f64,
    weights: BTreeMap<String, Tensor>,
}

impl Ema {
    /// Starts the average at the parameters' current values.
    pub fn new(params: &NamedParams, decay: f64) -> Self {
        let weights = tch::no_grad(|| {
            params
                .iter()
                .map(|(name, t)| (name.clone(), t.detach().copy()))
                .collect()
        });
        Self { decay, weights }
    }

    pub fn update(&mut self, params: &NamedParams) {
        let (averages, values): (Vec<Tensor>, Vec<Tensor>) = params
            .iter()
            .map(|(name, w)| {
                let avg = self
                    .weights
                    .get(name)
                    .expect("the average covers every parameter");
                (avg.shallow_clone(), w.shallow_clone())
            })
            .unzip();
        // avg += (1 - decay) (w - avg), over every tensor at once
        foreach_lerp_(&averages, &values, 1.0 - self.decay)
            .expect("the average has one tensor per parameter, of its shape");
    }

    /// The averaged weights, copied to the host for a checkpoint.
    pub fn weights(&self) -> NamedTensors {
        stored(&self.weights)
    }

    /// Continues from averaged weights saved in a checkpoint.
    pub fn restore(&mut self, weights: &NamedTensors, device: Device) {
        self.weights.extend(on_device(weights, device));
    }

    /// Copies the averaged weights into `params` (of a model of the same architecture).
    pub fn copy_to(&self, params: &NamedParams) {
        tch::no_grad(|| {
            for (name, p) in params {
                let avg = self
                    .weights
                    .get(name)
                    .expect("the average covers every parameter");
                p.shallow_clone().copy_(avg);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::model::hybrid::Hybrid;
    use crate::model::nn::Mode;
    use crate::model::ops::host_f64;

    #[test]
    fn schedule_runs_from_start_to_end_exponentially() {
        assert_eq!(exponential_lr(1e-4, 4e-6, 0.0, 0, 101), 1e-4);
        assert!((exponential_lr(1e-4, 4e-6, 0.0, 100, 101) - 4e-6).abs() < 1e-18);
        // Halfway: the geometric mean.
        let mid = exponential_lr(1e-4, 4e-6, 0.0, 50, 101);
        assert!((mid - (1e-4f64 * 4e-6).sqrt()).abs() < 1e-15);
    }

    /// With half the run held (100 steps: 50 held), by hand: steps 0..49 at the start,
    /// then the anneal over steps 50..99, its midpoint (step 74.5) the geometric mean.
    #[test]
    fn a_held_phase_then_the_anneal() {
        let lr = |step| exponential_lr(1e-3, 1e-4, 0.5, step, 100);
        assert_eq!(lr(0), 1e-3);
        assert_eq!(lr(49), 1e-3);
        assert_eq!(lr(50), 1e-3);
        assert!((lr(99) - 1e-4).abs() < 1e-18);
        let want = 1e-3 * (0.1f64).powf(24.0 / 49.0);
        assert!((lr(74) - want).abs() < 1e-15, "{} vs {want}", lr(74));
        assert!(lr(51) < 1e-3 && lr(98) > 1e-4);
    }

    /// Two Adam steps on the tiny model; the mixing network's output bias is compared
    /// with the update rule evaluated by hand in float64 from the same gradients.
    #[test]
    fn adam_matches_a_hand_computation() {
        let model = Hybrid::new(&ModelConfig::tiny(), Device::Cpu).unwrap();
        let index = model
            .params()
            .iter()
            .position(|(n, _)| n == "mix.2.bias")
            .expect("the mixing network has an output bias");
        let bias = || host_f64(&model.params()[index].1);
        let x = Tensor::zeros([1, 3, 32, 32], (Kind::Float, Device::Cpu));
        let grads_now = || {
            let loss = model.forward(&x, Mode::Eval).loss.sum(None::<Kind>);
            gradients(model.params(), &loss)
        };
        let (lr, eps) = (1e-3, 1e-8);
        let mut adam = Adam::new(AdamSettings::default());
        let before = bias();
        let grads = grads_now();
        let g1 = host_f64(&grads[index]);
        adam.step(model.params(), &grads, lr);
        let after1 = bias();
        assert!(model.params()[index].1.requires_grad());
        let grads = grads_now();
        let g2 = host_f64(&grads[index]);
        adam.step(model.params(), &grads, lr);
        let after2 = bias();
        for i in 0..g1.len() {
            // First step: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps).
            let want1 = before[i] - lr * g1[i] / (g1[i].abs() + eps);
            assert!(
                (after1[i] - want1).abs() < 1e-6,
                "{i}: {} vs {want1}",
                after1[i]
            );
            // Second step: the moments of both gradients with their bias corrections.
            let m = 0.9 * 0.1 * g1[i] + 0.1 * g2[i];
            let v = 0.999 * 0.001 * g1[i] * g1[i] + 0.001 * g2[i] * g2[i];
            let step =
                lr * (m / (1.0 - 0.9f64.powi(2))) / ((v / (1.0 - 0.999f64.powi(2))).sqrt() + eps);
            let want2 = after1[i] - step;
            assert!(
                (after2[i] - want2).abs() < 1e-6,
                "{i}: {} vs {want2}",
                after2[i]
            );
        }
    }

    /// Today's per-tensor Adam, the update the fused kernel replaces, written out with
    /// LibTorch's elementwise operations.
    fn per_tensor_step(adam: &mut Adam, params: &NamedParams, grads: &[Tensor], lr: f64) {
        adam.t += 1;
        let AdamSettings { beta1, beta2, eps } = adam.settings;
        let t = adam.t as i32;
        let bc1 = 1.0 - beta1.powi(t);
        let bc2_sqrt = (1.0 - beta2.powi(t)).sqrt();
        tch::no_grad(|| {
            for ((name, param), g) in params.iter().zip(grads) {
                let (mut m, mut v) = adam.moments_of(name, param);
                let _ = m.lerp_(g, 1.0 - beta1);
                v *= beta2;
                let _ = v.addcmul_(g, &(g * (1.0 - beta2)));
                let denom = v.sqrt() / bc2_sqrt + eps;
                let mut p = param.shallow_clone();
                p -= (&m / denom) * (lr / bc1);
            }
        });
    }

    /// The fused kernel against the per-tensor update over 10 steps of the same random
    /// gradients, learning rates from 1e-2 down: the parameters agree within float32
    /// rounding. Each step rounds its moments, their square root, the quotient and the
    /// subtraction once or twice, a few units of `u = 2^-24` of `|p|` and of the update,
    /// which Adam bounds by `lr (1 - b1) / sqrt(1 - b2)` (Kingma & Ba 2015, section 2.1:
    /// 3.2 lr here); the differences add up over the steps.
    #[test]
    fn fused_adam_equals_the_per_tensor_update() {
        crate::engine::random::seed_torch(5);
        let model = Hybrid::new(&ModelConfig::tiny(), Device::Cpu).unwrap();
        let copy = || -> Vec<(String, Tensor)> {
            model
                .params()
                .iter()
                .map(|(n, t)| (n.clone(), t.detach().copy()))
                .collect()
        };
        let (fused, plain) = (copy(), copy());
        let (mut a, mut b) = (
            Adam::new(AdamSettings::default()),
            Adam::new(AdamSettings::default()),
        );
        let u = f64::from(f32::EPSILON) / 2.0;
        let (mut lr, mut lr_sum) = (1e-2, 0.0);
        let largest_update = 0.1 / 0.001f64.sqrt();
        for step in 1..=10 {
            lr_sum += lr;
            let grads: Vec<Tensor> = fused.iter().map(|(_, t)| t.randn_like()).collect();
            a.step(&fused, &grads, lr);
            per_tensor_step(&mut b, &plain, &grads, lr);
            for ((name, x), (_, y)) in fused.iter().zip(&plain) {
                for (x, y) in host_f64(x).iter().zip(host_f64(y)) {
                    let bound = 8.0 * u * (step as f64 * y.abs() + largest_update * lr_sum);
                    assert!((x - y).abs() <= bound, "{name} step {step}: {x} vs {y}");
                }
            }
            lr *= 0.7;
        }
        assert_eq!(a.t, 10);
    }

    /// A gradient in another memory layout than its parameter's (a channels-last
    /// convolution weight's) updates each weight by its own entry: the same update, bit
    /// for bit, as from the gradient's NCHW copy. Walked in memory order, the gradient's
    /// entries would land on other weights.
    #[test]
    fn a_gradient_in_another_layout_updates_its_own_weights() {
        let values = |scale: f64| {
            (Tensor::arange(270, (Kind::Float, Device::Cpu)) * scale)
                .sin()
                .reshape([6, 5, 3, 3])
        };
        let make = || vec![("w".to_string(), values(1.0))];
        let (a, b) = (make(), make());
        let grad = values(0.37);
        let grad_cl = crate::model::ops::to_channels_last(&grad);
        assert_ne!(grad_cl.stride(), a[0].1.stride());
        let (mut adam_a, mut adam_b) = (
            Adam::new(AdamSettings::default()),
            Adam::new(AdamSettings::default()),
        );
        for _ in 0..2 {
            adam_a.step(&a, std::slice::from_ref(&grad), 1e-2);
            adam_b.step(&b, std::slice::from_ref(&grad_cl), 1e-2);
        }
        assert!(a[0].1.equal(&b[0].1));
        assert!(!a[0].1.equal(&make()[0].1), "the weights moved");
    }

    /// The average after two updates, by hand: `d^2 w0 + d (1 - d) w1 + (1 - d) w2`.
    #[test]
    fn polyak_average_by_hand() {
        let model = Hybrid::new(&ModelConfig::tiny(), Device::Cpu).unwrap();
        let w = |m: &Hybrid| host_f64(&m.params()[0].1);
        let d = 0.9;
        let w0 = w(&model);
        let mut ema = Ema::new(model.params(), d);
        let shift = |delta: f64| {
            tch::no_grad(|| {
                let mut p = model.params()[0].1.shallow_clone();
                p += delta;
            })
        };
        shift(1.0);
        let w1 = w(&model);
        ema.update(model.params());
        shift(-3.0);
        let w2 = w(&model);
        ema.update(model.params());
        let other = Hybrid::new(&ModelConfig::tiny(), Device::Cpu).unwrap();
        ema.copy_to(other.params());
        let got = w(&other);
        for i in 0..w0.len() {
            let want = d * d * w0[i] + d * (1.0 - d) * w1[i] + (1.0 - d) * w2[i];
            assert!((got[i] - want).abs() < 1e-6, "{i}: {} vs {want}", got[i]);
        }
    }
}
