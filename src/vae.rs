//! The VAE's encoder `q(z|x)` and decoder `z -> u` (SPEC section 2, steps 1 to 3), in the
//! layout of the reference `hybrid_ref.py`:
//!
//! - encoder: `[conv 4x4 s2 p1, ELU] x downsamples` (C -> W, then W -> W),
//!   `n_blocks` bottleneck blocks, ELU, conv 1x1 W -> 2 z_channels = `[mean | logvar]`;
//! - decoder: conv 3x3 p1 z_channels -> W, `n_blocks` bottleneck blocks, ELU, then
//!   `downsamples` transposed convs 4x4 s2 p1 with ELU between them (the last W -> dec_out,
//!   no activation after it).

use burn::prelude::*;

use crate::nn::{Conv2d, ConvTranspose2d};
use crate::ops::elu;

/// `h + c3(elu(c2(elu(c1(elu(h))))))` with widths `W -> Wb -> Wb -> W` (1x1, 3x3, 1x1).
#[derive(Module, Debug)]
pub struct BottleneckBlock {
    pub c1: Conv2d,
    pub c2: Conv2d,
    pub c3: Conv2d,
}

impl BottleneckBlock {
    pub fn new(width: usize, block_width: usize, device: &Device) -> Self {
        Self {
            c1: Conv2d::new(width, block_width, 1, 1, 0, true, device),
            c2: Conv2d::new(block_width, block_width, 3, 1, 1, true, device),
            c3: Conv2d::new(block_width, width, 1, 1, 0, true, device),
        }
    }

    /// # Shapes
    /// `[B, W, h, w]` -> `[B, W, h, w]`
    pub fn forward(&self, h: Tensor<4>) -> Tensor<4> {
        let r = self.c1.forward(elu(h.clone())); // [B, Wb, h, w]
        let r = self.c2.forward(elu(r)); // [B, Wb, h, w]
        h + self.c3.forward(elu(r))
    }
}

#[derive(Module, Debug)]
pub struct Encoder {
    pub downs: Vec<Conv2d>,
    pub blocks: Vec<BottleneckBlock>,
    pub out: Conv2d,
}

impl Encoder {
    pub fn new(
        channels: usize,
        width: usize,
        block_width: usize,
        n_blocks: usize,
        z_channels: usize,
        downsamples: usize,
        device: &Device,
    ) -> Self {
        Self {
            downs: (0..downsamples)
                .map(|i| {
                    let cin = if i == 0 { channels } else { width };
                    Conv2d::new(cin, width, 4, 2, 1, true, device)
                })
                .collect(),
            blocks: (0..n_blocks)
                .map(|_| BottleneckBlock::new(width, block_width, device))
                .collect(),
            out: Conv2d::new(width, 2 * z_channels, 1, 1, 0, true, device),
        }
    }

    /// # Shapes
    /// - `x`: `[B, C, H, W]` in `[-1, 1]`
    /// - returns `(mean, logvar)`, each `[B, z_channels, H / 2^d, W / 2^d]`
    pub fn forward(&self, x: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let mut h = x;
        for down in &self.downs {
            h = elu(down.forward(h)); // [B, W, h/2, w/2]
        }
        for block in &self.blocks {
            h = block.forward(h);
        }
        let out = self.out.forward(elu(h)); // [B, 2 z, h, w]
        let [_, c2, _, _] = out.dims();
        let z = c2 / 2;
        (out.clone().narrow(1, 0, z), out.narrow(1, z, z))
    }
}

#[derive(Module, Debug)]
pub struct Decoder {
    pub input: Conv2d,
    pub blocks: Vec<BottleneckBlock>,
    pub ups: Vec<ConvTranspose2d>,
}

impl Decoder {
    pub fn new(
        width: usize,
        block_width: usize,
        n_blocks: usize,
        z_channels: usize,
        downsamples: usize,
        dec_out: usize,
        device: &Device,
    ) -> Self {
        Self {
            input: Conv2d::new(z_channels, width, 3, 1, 1, true, device),
            blocks: (0..n_blocks)
                .map(|_| BottleneckBlock::new(width, block_width, device))
                .collect(),
            ups: (0..downsamples)
                .map(|i| {
                    let cout = if i + 1 == downsamples { dec_out } else { width };
                    ConvTranspose2d::new(width, cout, 4, 2, 1, device)
                })
                .collect(),
        }
    }

    /// # Shapes
    /// - `z`: `[B, z_channels, h, w]`
    /// - returns `u`: `[B, dec_out, h 2^d, w 2^d]`
    pub fn forward(&self, z: Tensor<4>) -> Tensor<4> {
        let mut h = self.input.forward(z); // [B, W, h, w]
        for block in &self.blocks {
            h = block.forward(h);
        }
        let mut h = elu(h);
        let last = self.ups.len() - 1;
        for (i, up) in self.ups.iter().enumerate() {
            h = up.forward(h); // [B, W or dec_out, 2h, 2w]
            if i < last {
                h = elu(h);
            }
        }
        h
    }
}

/// `KL(N(mean, exp(logvar)) || N(0, I))` per image, summed over the latent, nats:
/// `0.5 * sum(mean^2 + exp(logvar) - 1 - logvar)`.
///
/// # Shapes
/// `[B, z, h, w]` twice -> `[B]`
pub fn gaussian_kl(mean: Tensor<4>, logvar: Tensor<4>) -> Tensor<1> {
    let [b, _, _, _] = mean.dims();
    let kl = (mean.powf_scalar(2.0) + logvar.clone().exp() - 1.0 - logvar) * 0.5;
    kl.sum_dim(3).sum_dim(2).sum_dim(1).reshape([b])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_kl_by_hand() {
        // mean 1, logvar 0: 0.5; mean 0, logvar ln 2: 0.5 (2 - 1 - ln 2).
        let d = crate::backend::cpu();
        let mean = Tensor::<4>::from_floats([[[[1.0, 0.0]]]], &d);
        let logvar = Tensor::<4>::from_floats([[[[0.0, 2f32.ln()]]]], &d);
        let kl: Vec<f32> = gaussian_kl(mean, logvar)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let want = 0.5 + 0.5 * (1.0 - 2f64.ln());
        assert!((kl[0] as f64 - want).abs() < 1e-6, "{} vs {want}", kl[0]);
    }
}
