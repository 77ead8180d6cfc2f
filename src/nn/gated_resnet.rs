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

use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::sigmoid;

use super::Mode;
use super::conv::Conv2d;
use super::shifted::{Shift, ShiftedConv2d};
use super::weight_norm::WnConv2d;
use crate::ops::concat_elu;

/// Standard deviation of the initial conditioning weights (the reference's choice).
const COND_INIT_STD: f64 = 0.05;
/// Initial gain of the second convolution: the block starts close to the identity (nn.py).
const CONV2_INIT_SCALE: f64 = 0.1;

#[derive(Module, Debug)]
pub struct GatedResnet {
    pub conv1: ShiftedConv2d,
    pub nin_a: Option<WnConv2d>,
    pub conv2: ShiftedConv2d,
    pub cond: Option<Conv2d>,
    /// Probability of zeroing an element of the hidden activation in training.
    pub dropout_p: f64,
}

impl GatedResnet {
    /// `nf` filters; `aux_ch` channels in the short-cut input (0 for none); `cond_ch`
    /// channels of the conditioning map (0 for none).
    pub fn new(
        nf: usize,
        shift: Shift,
        aux_ch: usize,
        cond_ch: usize,
        dropout_p: f64,
        device: &Device,
    ) -> Self {
        let kernel = match shift {
            Shift::Down => [2, 3],
            Shift::DownRight => [2, 2],
        };
        Self {
            conv1: ShiftedConv2d::new(2 * nf, nf, kernel, shift, 1, 1.0, device),
            nin_a: (aux_ch > 0).then(|| WnConv2d::nin(2 * aux_ch, nf, device)),
            conv2: ShiftedConv2d::new(2 * nf, 2 * nf, kernel, shift, 1, CONV2_INIT_SCALE, device),
            cond: (cond_ch > 0).then(|| Conv2d::normal_1x1(cond_ch, 2 * nf, COND_INIT_STD, device)),
            dropout_p,
        }
    }

    /// # Shapes
    /// - `x`: `[B, nf, H, W]`
    /// - `a`: `[B, aux_ch, H, W]` when the block has a short-cut input
    /// - `h`: `[B, cond_ch, H, W]` when the block is conditioned
    /// - returns `[B, nf, H, W]`
    pub fn forward(
        &self,
        x: Tensor<4>,
        a: Option<Tensor<4>>,
        h: Option<&Tensor<4>>,
        mode: Mode,
    ) -> Tensor<4> {
        let [_, nf, _, _] = x.dims();
        let mut c1 = self.conv1.forward(concat_elu(x.clone())); // [B, nf, H, W]
        if let (Some(nin_a), Some(a)) = (&self.nin_a, a) {
            c1 = c1 + nin_a.forward(concat_elu(a));
        }
        let c1 = dropout(concat_elu(c1), self.dropout_p, mode); // [B, 2nf, H, W]
        let mut c2 = self.conv2.forward(c1); // [B, 2nf, H, W]
        if let (Some(cond), Some(h)) = (&self.cond, h) {
            c2 = c2 + cond.forward(h.clone());
        }
        let gate_a = c2.clone().narrow(1, 0, nf);
        let gate_b = c2.narrow(1, nf, nf);
        x + gate_a * sigmoid(gate_b)
    }
}

/// Elementwise binary dropout in training: keeps each element with probability `1 - p`
/// and scales the kept ones by `1 / (1 - p)` (PyTorch's `F.dropout`).
pub fn dropout(x: Tensor<4>, p: f64, mode: Mode) -> Tensor<4> {
    if !mode.is_train() || p == 0.0 {
        return x;
    }
    let keep = 1.0 - p;
    let mask = if keep == 0.5 {
        fair_coins(x.shape(), &x.device())
    } else {
        Tensor::<4>::random(x.shape(), Distribution::Bernoulli(keep), &x.device())
    };
    x * mask / keep
}

/// Independent fair 0/1 values, sixteen from each uniform 16-bit integer draw: the
/// dropout mask at the PixelCNN++'s rate of 0.5 for a sixteenth of the random draws
/// (on the CPU the draws are a serial loop, and one per element cost about 6% of a
/// training step).
pub fn fair_coins(shape: Shape, device: &Device) -> Tensor<4> {
    const BITS: usize = 16;
    let n = shape.num_elements();
    let words = n.div_ceil(BITS);
    let draws = Tensor::<1, Int>::random([words], Distribution::Uniform(0.0, 65536.0), device)
        .reshape([words, 1])
        .expand([words, BITS]);
    let shifts = Tensor::<1, Int>::arange(0..BITS as i64, device)
        .reshape([1, BITS])
        .expand([words, BITS]);
    let bits = draws.bitwise_right_shift(shifts).bitwise_and_scalar(1);
    bits.float()
        .reshape([words * BITS])
        .slice(0..n)
        .reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The coins are 0 or 1, each of the sixteen bit positions of a draw is fair, and
    /// neighbours (bits of the same draw, and of consecutive draws) are uncorrelated:
    /// with 2^20 coins each frequency is within 5 standard errors of 1/2.
    #[test]
    fn fair_coins_are_fair_and_independent() {
        let d = crate::backend::cpu();
        let shape = Shape::new([4, 64, 64, 64]);
        let v: Vec<f32> = fair_coins(shape, &d)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let n = v.len();
        assert_eq!(n, 1 << 20);
        assert!(v.iter().all(|&b| b == 0.0 || b == 1.0));
        let close = |count: usize, total: usize, what: &str| {
            let f = count as f64 / total as f64;
            let se = 0.5 / (total as f64).sqrt();
            assert!((f - 0.5).abs() < 5.0 * se, "{what}: {f} from {total}");
        };
        close(v.iter().filter(|&&b| b == 1.0).count(), n, "ones");
        for pos in 0..16 {
            let ones = v
                .iter()
                .skip(pos)
                .step_by(16)
                .filter(|&&b| b == 1.0)
                .count();
            close(ones, n / 16, &format!("bit {pos}"));
        }
        for lag in [1, 16] {
            let agree = v.iter().zip(&v[lag..]).filter(|(a, b)| a == b).count();
            close(agree, n - lag, &format!("agreement at lag {lag}"));
        }
        // A shape whose size is not a multiple of sixteen.
        let odd = fair_coins(Shape::new([1, 3, 5, 7]), &d);
        assert_eq!(odd.dims(), [1, 3, 5, 7]);
    }

    #[test]
    fn dropout_at_other_rates_keeps_the_expected_fraction() {
        let d = crate::backend::cpu();
        let x = Tensor::<4>::ones([2, 8, 32, 32], &d);
        let y: Vec<f32> = dropout(x, 0.25, Mode::Train)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
        assert!((kept - 0.75).abs() < 0.02, "kept {kept}");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    }
}
