//! Every random draw of a run follows from its one seed, through the functions here: a
//! resumed run repeats exactly what an uninterrupted one would have drawn, and
//! evaluation and sampling draw from generators of their own, so they neither depend on
//! nor disturb training's.
//!
//! Two kinds of generator: LibTorch's (device-side dropout masks, bottleneck noise and
//! `z` during training, initial weights), reseeded with [`seed_torch`], and seeded host
//! generators (`StdRng`) for the data order, evaluation's and sampling's `z`.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution as _, StandardNormal};
use tch::{Device, Tensor};

/// Odd 64-bit constants (from SplitMix64) that spread a small integer over all bits.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const MIX: u64 = 0xBF58_476D_1CE4_E5B9;

/// Seeds LibTorch's generators, the CPU's and every GPU's.
pub fn seed_torch(seed: u64) {
    // LibTorch takes a signed 64-bit seed and uses its bits as they are.
    tch::manual_seed(seed as i64);
}

/// The seed of LibTorch's generators for training step `step`.
pub fn step_seed(seed: u64, step: u64) -> u64 {
    seed.wrapping_mul(GOLDEN) ^ step.wrapping_mul(MIX)
}

/// The seed of LibTorch's generators when a model is initialised (a step no run reaches).
pub fn init_seed(seed: u64) -> u64 {
    step_seed(seed, u64::MAX)
}

/// The host generator of the data order of `epoch`.
pub fn epoch_rng(seed: u64, epoch: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ epoch.wrapping_add(1).wrapping_mul(GOLDEN))
}

/// The seed of evaluation batch `batch`: the `z` draws depend only on the run's seed and
/// the batch, so `ibvae eval` reproduces the figure training logged for the same weights.
pub fn eval_seed(seed: u64, batch: usize) -> u64 {
    seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xE7A1_0000_0000_0000 ^ batch as u64
}

/// The seed of the `k`-th extra `z` draw of the importance-weighted bound, from its
/// batch's seed.
pub fn iw_seed(batch_seed: u64, k: usize) -> u64 {
    batch_seed ^ ((k as u64 + 1) << 40)
}

/// The seed of the latents of ancestral samples drawn with `seed`.
pub fn sample_z_seed(seed: u64) -> u64 {
    seed ^ 0x5A5A_0000
}

/// The seed of the latents of reconstructions drawn with `seed`.
pub fn reconstruct_z_seed(seed: u64) -> u64 {
    seed ^ 0xA5A5_0000
}

/// `N(0, 1)` noise of `shape` drawn on the host from its own seeded generator, so that
/// evaluation and sampling do not depend on (or disturb) the device's random state.
pub fn host_normal(shape: [i64; 4], seed: u64, device: Device) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n: i64 = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::from_slice(&values).view(shape).to_device(device)
}
