//! The gated resnet of PixelCNN++ (nn.py's `gated_resnet`), conditioned on the VAE's map.
//!
//! ```text
//! c1 = conv1(concat_elu(x)) [+ nin_a(concat_elu(a))]
//! c2 = conv2(dropout(concat_elu(c1))) [+ cond(h)]
//! out = x + c2[:nf] * sigmoid(c2[nf:])
//! ```
//!
//! `a` is the short-cut input from the other stream (or the saved up-pass activation),
//! `h` the decoder's map `u` average-pooled to this resolution; `cond` is a bias-free,
//! non-normalised 1x1 convolution (the role of `hw` in nn.py).

use tch::nn::Path;
use tch::{Device, Kind, Tensor};

use super::Mode;
use super::conv::Conv2d;
use super::shifted::{Shift, ShiftedConfig, ShiftedConv2d};
use super::weight_norm::WnConv2d;
use crate::model::ops::{concat_elu, gated_residual};

/// Standard deviation of the initial conditioning weights (the reference's choice).
const COND_INIT_STD: f64 = 0.05;
/// Initial gain of the second convolution: the block starts close to the identity (nn.py).
const CONV2_INIT_SCALE: f64 = 0.1;

/// The sizes of one gated resnet.
#[derive(Debug, Clone, Copy)]
pub struct GatedResnetConfig {
    /// Filters `nf` of the block's input and output.
    pub nf: i64,
    /// Channels of the short-cut input `a` (0 for none).
    pub aux_ch: i64,
    /// Channels of the conditioning map `h` (0 for none).
    pub cond_ch: i64,
    /// Probability of zeroing an element of the hidden activation in training.
    pub dropout_p: f64,
}

#[derive(Debug)]
pub struct GatedResnet {
    pub conv1: ShiftedConv2d,
    pub nin_a: Option<WnConv2d>,
    pub conv2: ShiftedConv2d,
    pub cond: Option<Conv2d>,
    pub dropout_p: f64,
}

impl GatedResnet {
    /// Weights under `<path>.conv1`, `.nin_a`, `.conv2`, `.cond` (the reference's order).
    pub fn new(p: &Path, shift: Shift, c: GatedResnetConfig) -> Self {
        let kernel = shift.stream_kernel();
        let nf = c.nf;
        let conv2 = ShiftedConfig {
            init_scale: CONV2_INIT_SCALE,
            ..ShiftedConfig::new(2 * nf, 2 * nf, kernel)
        };
        Self {
            conv1: ShiftedConv2d::new(
                &(p / "conv1"),
                shift,
                ShiftedConfig::new(2 * nf, nf, kernel),
            ),
            nin_a: (c.aux_ch > 0).then(|| WnConv2d::nin(&(p / "nin_a"), 2 * c.aux_ch, nf)),
            conv2: ShiftedConv2d::new(&(p / "conv2"), shift, conv2),
            cond: (c.cond_ch > 0)
                .then(|| Conv2d::normal_1x1(&(p / "cond"), c.cond_ch, 2 * nf, COND_INIT_STD)),
            dropout_p: c.dropout_p,
        }
    }

    /// # Shapes
    /// - `x`: `[B, nf, H, W]`
    /// - `a`: `[B, aux_ch, H, W]` when the block has a short-cut input
    /// - `h`: `[B, cond_ch, H, W]` when the block is conditioned
    /// - returns `[B, nf, H, W]`
    pub fn forward(
        &self,
        x: &Tensor,
        a: Option<&Tensor>,
        h: Option<&Tensor>,
        mode: Mode,
    ) -> Tensor {
        let mut c1 = self.conv1.forward_concat_elu(x, |e| e); // [B, nf, H, W]
        if let (Some(nin_a), Some(a)) = (&self.nin_a, a) {
            c1 += nin_a.forward(&concat_elu(a));
        }
        let dropout_p = self.dropout_p;
        // concat_elu(c1), padded, with dropout in training: [B, 2nf, H', W'] into conv2.
        let mut c2 = self.conv2.forward_concat_elu(&c1, |e| {
            if dropout_p > 0.0 && mode.is_train() {
                dropout(&e, dropout_p)
            } else {
                e
            }
        }); // [B, 2nf, H, W]
        if let (Some(cond), Some(h)) = (&self.cond, h) {
            c2 += cond.forward(h);
        }
        gated_residual(x, &c2)
    }
}

/// Elementwise binary dropout in training: keeps each element with probability `1 - p`
/// and scales the kept ones by `1 / (1 - p)` (PyTorch's `F.dropout`).
///
/// On the CPU at PixelCNN++'s rate of 0.5 the mask is made of fair coins, 32 from each
/// random draw: LibTorch's CPU Bernoulli fill is a serial loop that draws one number per
/// element, and took about a third of a `small` training step on two threads (12 ms for
/// a million elements, against 1.3 ms this way). The mask is applied, forward and
/// backward, by one fused operation of the crate's C++ file (`engine::ffi::coin_dropout`),
/// which keeps the random words alone for the backward pass. On a GPU, LibTorch's fused
/// kernel.
pub fn dropout(x: &Tensor, p: f64) -> Tensor {
    if p == 0.5 && x.device() == Device::Cpu {
        let words = (x.numel() as i64 + COIN_BITS - 1) / COIN_BITS;
        let draws = Tensor::randint_low(0, 1 << COIN_BITS, [words], (Kind::Int64, Device::Cpu));
        crate::engine::ffi::coin_dropout(x, &draws).unwrap_or_else(|e| panic!("dropout: {e}"))
    } else {
        x.dropout(p, true)
    }
}

/// Bits per random word of [`dropout`]'s mask at rate 1/2.
const COIN_BITS: i64 = 32;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::{host_f32, to_channels_last};

    /// Bits 0 to 31 of each word of `words` (uniform in `[0, 2^32)`), in order, as the
    /// first `shape.product()` coins (int64): the mask of [`dropout`] at rate 1/2, in
    /// tensor operations.
    fn coins_from_words(words: &Tensor, shape: &[i64]) -> Tensor {
        let n: i64 = shape.iter().product();
        let shifts = Tensor::arange(COIN_BITS, (Kind::Int64, words.device())).view([1, COIN_BITS]);
        words
            .view([-1, 1])
            .bitwise_right_shift(&shifts) // [words, 32]
            .bitwise_and(1)
            .view([-1])
            .narrow(0, 0, n)
            .view(shape)
    }

    /// The fused dropout equals `x * 2 * coins` with the coins of [`coins_from_words`],
    /// values and gradients exactly, in NCHW, channels-last and a narrowed (not dense)
    /// input, in float32 and float64, for sizes that are not multiples of 32.
    #[test]
    fn coin_dropout_is_the_mask_of_the_words() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for (shape, kind) in [([2, 3, 5, 7], Kind::Float), ([3, 8, 4, 9], Kind::Double)] {
            let n: i64 = shape.iter().product();
            let words: Vec<i64> = (0..(n + 31) / 32)
                .map(|_| rng.random::<u32>() as i64)
                .collect();
            let words = Tensor::from_slice(&words);
            let mask = coins_from_words(&words, &shape).to_kind(kind) * 2;
            let base = Tensor::randn(
                [shape[0], shape[1] + 2, shape[2], shape[3]],
                (kind, Device::Cpu),
            );
            let inputs = [
                base.narrow(1, 0, shape[1]).contiguous(),
                to_channels_last(&base.narrow(1, 0, shape[1])),
                base.narrow(1, 1, shape[1]),
            ];
            for x in inputs {
                let x = x.detach().set_requires_grad(true);
                let y = crate::engine::ffi::coin_dropout(&x, &words).unwrap();
                assert_eq!(y.size(), shape);
                let want = &x * &mask;
                assert!(y.equal(&want), "values of {:?}", x.stride());
                let up = Tensor::randn(shape, (kind, Device::Cpu));
                let got = Tensor::run_backward(&[(&y * &up).sum(kind)], &[&x], false, false);
                assert!(got[0].equal(&(&up * &mask)), "gradient of {:?}", x.stride());
            }
        }
        let x = Tensor::ones([40], (Kind::Float, Device::Cpu));
        let err =
            crate::engine::ffi::coin_dropout(&x, &Tensor::zeros([1], (Kind::Int64, Device::Cpu)));
        assert!(err.unwrap_err().to_string().contains("2 int64 words"));
    }

    /// The coins are 0 or 1, each of the 32 bit positions of a draw is fair, and
    /// neighbours (bits of the same draw, and of consecutive draws) are uncorrelated:
    /// with 2^20 coins each frequency is within 5 standard errors of 1/2.
    #[test]
    fn fair_coins_are_fair_and_independent() {
        // Words from the test's own seeded generator, through the same bit extraction.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let words: Vec<i64> = (0..(1 << 20) / 32)
            .map(|_| rng.random::<u32>() as i64)
            .collect();
        let coins = coins_from_words(&Tensor::from_slice(&words), &[4, 64, 64, 64]);
        let v = host_f32(&coins.to_kind(Kind::Float));
        let n = v.len();
        assert_eq!(n, 1 << 20);
        assert!(v.iter().all(|&b| b == 0.0 || b == 1.0));
        let close = |count: usize, total: usize, what: &str| {
            let f = count as f64 / total as f64;
            let se = 0.5 / (total as f64).sqrt();
            assert!((f - 0.5).abs() < 5.0 * se, "{what}: {f} from {total}");
        };
        close(v.iter().filter(|&&b| b == 1.0).count(), n, "ones");
        for pos in 0..32 {
            let ones = v
                .iter()
                .skip(pos)
                .step_by(32)
                .filter(|&&b| b == 1.0)
                .count();
            close(ones, n / 32, &format!("bit {pos}"));
        }
        for lag in [1, 32] {
            let agree = v.iter().zip(&v[lag..]).filter(|(a, b)| a == b).count();
            close(agree, n - lag, &format!("agreement at lag {lag}"));
        }
    }

    #[test]
    fn dropout_at_other_rates_keeps_the_expected_fraction() {
        let x = Tensor::ones([2, 8, 32, 32], (Kind::Float, Device::Cpu));
        let y = host_f32(&dropout(&x, 0.25));
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
        assert!((kept - 0.75).abs() < 0.02, "kept {kept}");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    }

    #[test]
    fn dropout_keeps_half_and_scales_by_two() {
        let x = Tensor::ones([4, 16, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
        let y = host_f32(&dropout(&x, 0.5));
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
        // 65,536 coins: the standard error of the fraction is 0.002.
        assert!((kept - 0.5).abs() < 0.01, "kept {kept}");
        assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
    }
}
