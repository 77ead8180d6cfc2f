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

use tch::Tensor;
use tch::nn::Path;

use super::Mode;
use super::conv::Conv2d;
use super::shifted::{Shift, ShiftedConfig, ShiftedConv2d};
use super::weight_norm::WnConv2d;
use crate::ops::concat_elu;

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
        let mut c1 = self.conv1.forward(&concat_elu(x)); // [B, nf, H, W]
        if let (Some(nin_a), Some(a)) = (&self.nin_a, a) {
            c1 += nin_a.forward(&concat_elu(a));
        }
        let mut c1 = concat_elu(&c1); // [B, 2nf, H, W]
        if self.dropout_p > 0.0 && mode.is_train() {
            c1 = c1.dropout(self.dropout_p, true);
        }
        let mut c2 = self.conv2.forward(&c1); // [B, 2nf, H, W]
        if let (Some(cond), Some(h)) = (&self.cond, h) {
            c2 += cond.forward(h);
        }
        let gates = c2.chunk(2, 1); // [B, nf, H, W] each
        x + &gates[0] * gates[1].sigmoid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::host_f32;

    #[test]
    fn dropout_keeps_half_and_scales_by_two() {
        let x = Tensor::ones([4, 16, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
        let y = host_f32(&x.dropout(0.5, true));
        let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
        // 65,536 coins: the standard error of the fraction is 0.002.
        assert!((kept - 0.5).abs() < 0.01, "kept {kept}");
        assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
    }
}
