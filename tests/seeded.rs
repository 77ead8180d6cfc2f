//! Comparisons of two seeded computations, in a process of their own: each needs
//! LibTorch's global generator to itself between its seed and its draws, which the
//! library's tests, run in parallel threads of one process, share. One test function, so
//! that its parts run one after the other.

use ibvae::config::{AdamSettings, ModelConfig};
use ibvae::engine::Layout;
use ibvae::engine::random::seed_torch;
use ibvae::io::checkpoint::NamedTensors;
use ibvae::model::bottleneck::{self, BottleneckSpec};
use ibvae::model::hybrid::Hybrid;
use ibvae::model::nn::Mode;
use ibvae::model::ops::{host_f64, is_channels_last, standard_normal_like, to_channels_last};
use ibvae::training::optim::lr_tensor;
use ibvae::training::step::{Learner, step_terms};
use tch::{Device, Kind, Tensor};

#[test]
fn seeded_computations_agree() {
    the_captured_step_is_the_step();
    the_noise_does_not_depend_on_the_layout();
    training_does_not_depend_on_the_layout();
}

/// What a CUDA graph captures, `device_step` (with Adam's step count in a tensor that it
/// increments), computes what `step` does: with the same seeds, the same figures and the
/// same weights, moments and average, bit for bit (CPU, float32).
fn the_captured_step_is_the_step() {
    let make = || {
        seed_torch(3);
        let model = Hybrid::new(&ModelConfig::tiny(), Device::Cpu).unwrap();
        Learner::new(model, AdamSettings::default(), Some(0.9))
    };
    let (mut a, mut b) = (make(), make());
    let x = Tensor::rand([2, 3, 32, 32], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let lr = lr_tensor(1e-3, Device::Cpu);
    let mut t = Tensor::from(0.0f32);
    for i in 0..3 {
        seed_torch(100 + i);
        let want = a.step(&x, 1e-3, None).unwrap();
        seed_torch(100 + i);
        let figures = b.device_step(&x, &lr, &mut t);
        b.adam.t += 1;
        assert_eq!(step_terms(&host_f64(&figures), &x), want, "step {i}");
        assert_eq!(t.double_value(&[]), (i + 1) as f64);
    }
    for ((name, p), (_, q)) in a.model.params().iter().zip(b.model.params()) {
        assert!(p.equal(q), "{name} differs");
    }
    let same = |x: &NamedTensors, y: &NamedTensors| {
        assert_eq!(x.len(), y.len());
        for ((name, p), (_, q)) in x.iter().zip(y) {
            assert!(
                p.to_tensor(Device::Cpu).equal(&q.to_tensor(Device::Cpu)),
                "{name}"
            );
        }
    };
    same(
        &a.ema.as_ref().unwrap().weights(),
        &b.ema.as_ref().unwrap().weights(),
    );
    let (ma, mb) = (a.adam.moments(), b.adam.moments());
    same(&ma.m, &mb.m);
    same(&ma.v, &mb.v);
    assert_eq!(a.adam.t, b.adam.t);
}

/// One seed gives the same noise at every position of an NCHW and a channels-last map:
/// the draws themselves, the Gaussian-dropout and the VB bottlenecks in training, and a
/// whole training forward pass of the model in both layouts (the same loss, up to the
/// convolutions' sums in another order: float32 rounding).
fn the_noise_does_not_depend_on_the_layout() {
    let v = Tensor::randn([2, 6, 4, 5], (Kind::Float, Device::Cpu));
    let v_cl = to_channels_last(&v);
    assert!(is_channels_last(&v_cl) && !is_channels_last(&v));
    seed_torch(7);
    let a = standard_normal_like(&v);
    seed_torch(7);
    let b = standard_normal_like(&v_cl);
    assert!(a.equal(&b), "the draws differ between layouts");
    for spec in ["gd:0.3", "vb:0.1"] {
        let spec: BottleneckSpec = spec.parse().unwrap();
        seed_torch(8);
        let a = bottleneck::apply(&spec, &v, Mode::Train).y;
        seed_torch(8);
        let b = bottleneck::apply(&spec, &v_cl, Mode::Train).y;
        // Elementwise arithmetic on the same values; LibTorch's vectorised and scalar
        // loops (chosen by the strides) may round the softplus an ulp apart.
        let diff = (&a - &b).abs().max().double_value(&[]);
        let tol = 4.0 * f64::from(f32::EPSILON) * a.abs().max().double_value(&[]);
        assert!(diff <= tol, "{spec}: the noise differs ({diff})");
    }
    let mut model = Hybrid::new(&ModelConfig::tiny(), Device::Cpu).unwrap();
    let x = Tensor::randint(256, [2, 3, 32, 32], (Kind::Float, Device::Cpu)) / 127.5 - 1.0;
    let mut losses = Vec::new();
    for layout in [Layout::Nchw, Layout::ChannelsLast] {
        model.set_layout(layout);
        seed_torch(9);
        losses.push(host_f64(&model.forward(&x, Mode::Train).loss));
    }
    for (a, b) in losses[0].iter().zip(&losses[1]) {
        // Each image's loss is a sum over 3,072 float32 terms: a few ulps of each.
        assert!((a - b).abs() <= 1e-5 * a.abs(), "{a} against {b}");
    }
}

/// Three training steps of the model from one seed, in NCHW and in channels-last, move
/// every weight alike. The layouts' gradients differ by float32 rounding (sums in another
/// order), and Adam's update of a weight is at most about `lr` a step, so the weights
/// stay within a small fraction of `lr` of each other on average over each tensor. A
/// gradient applied to the wrong weights (walked in another memory order than the
/// weight's) moves them apart by about `lr` each.
fn training_does_not_depend_on_the_layout() {
    let lr = 1e-3;
    let mut learners = Vec::new();
    for layout in [Layout::Nchw, Layout::ChannelsLast] {
        seed_torch(4);
        let mut model = Hybrid::new(&ModelConfig::tiny(), Device::Cpu).unwrap();
        model.set_layout(layout);
        learners.push(Learner::new(model, AdamSettings::default(), None));
    }
    let x = Tensor::rand([2, 3, 32, 32], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    for learner in &mut learners {
        for i in 0..3 {
            seed_torch(200 + i);
            learner.step(&x, lr, None).unwrap();
        }
    }
    let (a, b) = (learners[0].model.params(), learners[1].model.params());
    for ((name, p), (_, q)) in a.iter().zip(b) {
        let mean_difference = (p - q).abs().mean(Kind::Double).double_value(&[]);
        assert!(
            mean_difference < 0.01 * lr,
            "{name}: the layouts' weights differ by {mean_difference:e} on average"
        );
    }
}
