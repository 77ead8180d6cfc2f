//! Adam (Kingma & Ba 2015) over the model's named parameters, the paper's exponential
//! learning-rate schedule (SPEC section 7), and Polyak averaging of the weights.
//!
//! The optimizer keys its state by the parameters' reference names, so a checkpoint holds
//! it beside the weights in one safetensors file and a resumed run continues exactly.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Gradients;

use crate::hybrid::Hybrid;
use crate::params::{ParamMut, Stored, TensorFile, visit};

/// Adam's settings (paper: beta1 0.9, beta2 0.999, eps 1e-8, as PyTorch's defaults; Burn's
/// own default eps is 1e-5, which is not used here).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// Adam with state per parameter name: first and second moments, flattened.
#[derive(Debug, Clone)]
pub struct Adam {
    pub settings: AdamSettings,
    /// Number of updates made so far.
    pub t: u64,
    m: BTreeMap<String, Tensor<1>>,
    v: BTreeMap<String, Tensor<1>>,
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

    /// One update of every parameter that has a gradient in `grads`:
    /// `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
    /// `p -= lr * m_hat / (sqrt(v_hat) + eps)` with the bias corrections
    /// `m_hat = m / (1 - b1^t)`, `v_hat = v / (1 - b2^t)` (PyTorch's form).
    pub fn step(&mut self, model: &mut Hybrid, grads: &Gradients, lr: f64) {
        self.t += 1;
        let AdamSettings { beta1, beta2, eps } = self.settings;
        let t = self.t as i32;
        let bc1 = 1.0 - beta1.powi(t);
        let bc2_sqrt = (1.0 - beta2.powi(t)).sqrt();
        let (m_all, v_all) = (&mut self.m, &mut self.v);
        let mut update = |name: &str, value: Tensor<1>, grad: Tensor<1>| -> Tensor<1> {
            let m = match m_all.remove(name) {
                Some(m) => m * beta1 + grad.clone() * (1.0 - beta1),
                None => grad.clone() * (1.0 - beta1),
            };
            let v = match v_all.remove(name) {
                Some(v) => v * beta2 + grad.powf_scalar(2.0) * (1.0 - beta2),
                None => grad.powf_scalar(2.0) * (1.0 - beta2),
            };
            let denom = v.clone().sqrt() / bc2_sqrt + eps;
            let new = value - m.clone() / denom * (lr / bc1);
            m_all.insert(name.to_string(), m);
            v_all.insert(name.to_string(), v);
            new
        };
        visit(model, &mut |name, param| match param {
            ParamMut::Rank4(p) => {
                let value = p.val();
                let Some(grad) = value.grad(grads) else {
                    return;
                };
                let shape = value.dims();
                let n: usize = shape.iter().product();
                let new = update(name, value.inner().reshape([n]), grad.reshape([n]));
                *p =
                    Param::initialized(p.id, Tensor::from_inner(new.reshape(shape)).require_grad());
            }
            ParamMut::Rank1(p) => {
                let value = p.val();
                let Some(grad) = value.grad(grads) else {
                    return;
                };
                let new = update(name, value.inner(), grad);
                *p = Param::initialized(p.id, Tensor::from_inner(new).require_grad());
            }
        });
    }

    /// The moments as stored tensors (`adam.m.<name>`, `adam.v.<name>`).
    pub fn state(&self) -> Vec<(String, Stored)> {
        let mut out = Vec::with_capacity(2 * self.m.len());
        for (prefix, map) in [("adam.m.", &self.m), ("adam.v.", &self.v)] {
            for (name, t) in map {
                out.push((format!("{prefix}{name}"), Stored::from_tensor(t.clone())));
            }
        }
        out
    }

    /// Restores the moments written by [`Adam::state`], after `t` updates.
    pub fn load_state(&mut self, file: &TensorFile, t: u64, device: &Device) {
        self.t = t;
        for (key, stored) in &file.tensors {
            let flat = |s: &Stored| {
                let data = s.to_f32();
                let n = data.len();
                Tensor::<1>::from_data(TensorData::new(data, [n]), device)
            };
            if let Some(name) = key.strip_prefix("adam.m.") {
                self.m.insert(name.to_string(), flat(stored));
            } else if let Some(name) = key.strip_prefix("adam.v.") {
                self.v.insert(name.to_string(), flat(stored));
            }
        }
    }
}

/// The learning rate at step `step` of `total`: annealed exponentially from `start` to
/// `end` over the run, `start * (end / start)^(step / (total - 1))` (paper: 1e-4 to 4e-6).
pub fn exponential_lr(start: f64, end: f64, step: u64, total: u64) -> f64 {
    if total <= 1 {
        return start;
    }
    let frac = (step.min(total - 1)) as f64 / (total - 1) as f64;
    start * (end / start).powf(frac)
}

/// Polyak averaging: an exponential moving average of the weights,
/// `ema = decay * ema + (1 - decay) * w` after every step.
#[derive(Debug, Clone)]
pub struct Ema {
    pub decay: f64,
    weights: BTreeMap<String, Tensor<1>>,
}

impl Ema {
    /// Starts the average at the model's current weights.
    pub fn new(model: &Hybrid, decay: f64) -> Self {
        let mut ema = Self {
            decay,
            weights: BTreeMap::new(),
        };
        let mut m = model.clone();
        visit(&mut m, &mut |name, p| {
            ema.weights.insert(name.to_string(), flat_inner(&p));
        });
        ema
    }

    pub fn update(&mut self, model: &Hybrid) {
        let mut m = model.clone();
        let decay = self.decay;
        let weights = &mut self.weights;
        visit(&mut m, &mut |name, p| {
            let w = flat_inner(&p);
            let avg = match weights.remove(name) {
                Some(a) => a * decay + w * (1.0 - decay),
                None => w,
            };
            weights.insert(name.to_string(), avg);
        });
    }

    /// The averaged weights as stored tensors (`ema.<name>`), flattened.
    pub fn state(&self) -> Vec<(String, Stored)> {
        self.weights
            .iter()
            .map(|(n, t)| (format!("ema.{n}"), Stored::from_tensor(t.clone())))
            .collect()
    }

    /// Restores the average from a checkpoint's `ema.*` tensors.
    pub fn load_state(&mut self, file: &TensorFile, device: &Device) {
        for (key, stored) in &file.tensors {
            if let Some(name) = key.strip_prefix("ema.") {
                let data = stored.to_f32();
                let n = data.len();
                self.weights.insert(
                    name.to_string(),
                    Tensor::from_data(TensorData::new(data, [n]), device),
                );
            }
        }
    }

    /// A copy of `model` (on `device`, without autodiff) carrying the averaged weights.
    pub fn apply_to(&self, model: &Hybrid) -> Hybrid {
        let mut out = model.valid();
        visit(&mut out, &mut |name, p| {
            let avg = self
                .weights
                .get(name)
                .expect("the average covers every parameter");
            match p {
                ParamMut::Rank4(p) => {
                    let shape = p.dims();
                    *p = Param::initialized(p.id, avg.clone().reshape(shape));
                }
                ParamMut::Rank1(p) => *p = Param::initialized(p.id, avg.clone()),
            }
        });
        out
    }
}

/// A parameter's value without autodiff, flattened.
fn flat_inner(p: &ParamMut<'_>) -> Tensor<1> {
    match p {
        ParamMut::Rank4(p) => {
            let v = p.val().inner();
            let n: usize = v.dims().iter().product();
            v.reshape([n])
        }
        ParamMut::Rank1(p) => p.val().inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_runs_from_start_to_end_exponentially() {
        assert_eq!(exponential_lr(1e-4, 4e-6, 0, 101), 1e-4);
        assert!((exponential_lr(1e-4, 4e-6, 100, 101) - 4e-6).abs() < 1e-18);
        // Halfway: the geometric mean.
        let mid = exponential_lr(1e-4, 4e-6, 50, 101);
        assert!((mid - (1e-4f64 * 4e-6).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn adam_matches_a_hand_computation() {
        // Two Adam steps on the tiny model; the mixing network's output bias is compared
        // with the update rule evaluated by hand in float64 from the same gradients.
        use crate::config::ModelConfig;
        use crate::nn::Mode;
        let device = crate::backend::cpu().autodiff();
        let mut model = Hybrid::new(&ModelConfig::tiny(), &device).unwrap();
        let bias = |m: &Hybrid| {
            m.mix
                .out
                .bias
                .as_ref()
                .expect("the mixing network has a bias")
                .val()
        };
        let host = |t: Tensor<1>| -> Vec<f64> {
            t.into_data()
                .convert::<f64>()
                .try_into_vec::<f64>()
                .unwrap()
        };
        let grads_of = |m: &Hybrid| {
            let x = Tensor::<4>::zeros([1, 3, 32, 32], &device);
            m.forward(x, Mode::Eval).loss.sum().backward()
        };
        let (lr, eps) = (1e-3, 1e-8);
        let mut adam = Adam::new(AdamSettings::default());
        let before = host(bias(&model).inner());
        let grads = grads_of(&model);
        let g1 = host(bias(&model).grad(&grads).unwrap());
        adam.step(&mut model, &grads, lr);
        let after1 = host(bias(&model).inner());
        assert!(bias(&model).is_require_grad());
        let grads = grads_of(&model);
        let g2 = host(bias(&model).grad(&grads).unwrap());
        adam.step(&mut model, &grads, lr);
        let after2 = host(bias(&model).inner());
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
}
