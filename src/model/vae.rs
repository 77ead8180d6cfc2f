//! The VAE's encoder `q(z|x)` and decoder `z -> u` (SPEC section 2, steps 1 to 3), in the
//! layout of the reference `hybrid_ref.py`:
//!
//! - encoder: `[conv 4x4 s2 p1, ELU] x downsamples` (C -> W, then W -> W),
//!   `n_blocks` bottleneck blocks, ELU, conv 1x1 W -> 2 z_channels = `[mean | logvar]`;
//! - decoder: conv 3x3 p1 z_channels -> W, `n_blocks` bottleneck blocks, ELU, then
//!   `downsamples` transposed convs 4x4 s2 p1 with ELU between them (the last W -> dec_out,
//!   no activation after it).

use tch::Tensor;
use tch::nn::Path;

use crate::model::nn::{Conv2d, ConvConfig, ConvTranspose2d};

/// `h + c3(elu(c2(elu(c1(elu(h))))))` with widths `W -> Wb -> Wb -> W` (1x1, 3x3, 1x1).
#[derive(Debug)]
pub struct BottleneckBlock {
    pub c1: Conv2d,
    pub c2: Conv2d,
    pub c3: Conv2d,
}

impl BottleneckBlock {
    pub fn new(p: &Path, width: i64, block_width: i64) -> Self {
        let k3 = ConvConfig::kernel(3).padding(1);
        Self {
            c1: Conv2d::new(&(p / "c1"), width, block_width, ConvConfig::pointwise()),
            c2: Conv2d::new(&(p / "c2"), block_width, block_width, k3),
            c3: Conv2d::new(&(p / "c3"), block_width, width, ConvConfig::pointwise()),
        }
    }

    /// # Shapes
    /// `[B, W, h, w]` -> `[B, W, h, w]`
    pub fn forward(&self, h: &Tensor) -> Tensor {
        let r = self.c1.forward(&h.elu()); // [B, Wb, h, w]
        let r = self.c2.forward(&r.elu()); // [B, Wb, h, w]
        h + self.c3.forward(&r.elu())
    }
}

/// The sizes of the encoder and decoder (SPEC section 2, steps 1 and 3).
#[derive(Debug, Clone, Copy)]
pub struct VaeConfig {
    pub image_channels: i64,
    /// `W`
    pub width: i64,
    /// `Wb`
    pub block_width: i64,
    pub n_blocks: usize,
    pub z_channels: i64,
    pub downsamples: usize,
    pub dec_out: i64,
}

/// A 4x4 convolution of stride 2 and padding 1: halves the resolution.
fn halving() -> ConvConfig {
    ConvConfig::kernel(4).stride(2).padding(1)
}

#[derive(Debug)]
pub struct Encoder {
    pub downs: Vec<Conv2d>,
    pub blocks: Vec<BottleneckBlock>,
    pub out: Conv2d,
}

impl Encoder {
    /// Weights under `<path>.net.{i}`, the indices of the reference's `nn.Sequential`
    /// (`[conv, ELU] x downsamples`, blocks, ELU, conv).
    pub fn new(p: &Path, c: VaeConfig) -> Self {
        let net = p / "net";
        let d = c.downsamples;
        Self {
            downs: (0..d)
                .map(|i| {
                    let cin = if i == 0 { c.image_channels } else { c.width };
                    Conv2d::new(&(&net / (2 * i)), cin, c.width, halving())
                })
                .collect(),
            blocks: (0..c.n_blocks)
                .map(|j| BottleneckBlock::new(&(&net / (2 * d + j)), c.width, c.block_width))
                .collect(),
            out: Conv2d::new(
                &(&net / (2 * d + c.n_blocks + 1)),
                c.width,
                2 * c.z_channels,
                ConvConfig::pointwise(),
            ),
        }
    }

    /// # Shapes
    /// - `x`: `[B, C, H, W]` in `[-1, 1]`
    /// - returns `(mean, logvar)`, each `[B, z_channels, H / 2^d, W / 2^d]`
    pub fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let mut h = x.shallow_clone();
        for down in &self.downs {
            h = down.forward(&h).elu(); // [B, W, h/2, w/2]
        }
        for block in &self.blocks {
            h = block.forward(&h);
        }
        let out = self.out.forward(&h.elu()); // [B, 2 z, h, w]
        let halves = out.chunk(2, 1);
        (halves[0].shallow_clone(), halves[1].shallow_clone())
    }
}

#[derive(Debug)]
pub struct Decoder {
    pub input: Conv2d,
    pub blocks: Vec<BottleneckBlock>,
    pub ups: Vec<ConvTranspose2d>,
}

impl Decoder {
    /// Weights under `<path>.net.{i}` (conv, blocks, ELU, `[deconv, ELU] x (d - 1)`,
    /// deconv).
    pub fn new(p: &Path, c: VaeConfig) -> Self {
        let net = p / "net";
        let n = c.n_blocks;
        let k3 = ConvConfig::kernel(3).padding(1);
        Self {
            input: Conv2d::new(&(&net / 0), c.z_channels, c.width, k3),
            blocks: (0..n)
                .map(|j| BottleneckBlock::new(&(&net / (1 + j)), c.width, c.block_width))
                .collect(),
            ups: (0..c.downsamples)
                .map(|i| {
                    let cout = if i + 1 == c.downsamples {
                        c.dec_out
                    } else {
                        c.width
                    };
                    ConvTranspose2d::new(&(&net / (n + 2 + 2 * i)), c.width, cout, halving())
                })
                .collect(),
        }
    }

    /// # Shapes
    /// - `z`: `[B, z_channels, h, w]`
    /// - returns `u`: `[B, dec_out, h 2^d, w 2^d]`
    pub fn forward(&self, z: &Tensor) -> Tensor {
        let mut h = self.input.forward(z); // [B, W, h, w]
        for block in &self.blocks {
            h = block.forward(&h);
        }
        let mut h = h.elu();
        let last = self.ups.len() - 1;
        for (i, up) in self.ups.iter().enumerate() {
            h = up.forward(&h); // [B, W or dec_out, 2h, 2w]
            if i < last {
                h = h.elu();
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
pub fn gaussian_kl(mean: &Tensor, logvar: &Tensor) -> Tensor {
    let terms = mean.square() + logvar.exp() - 1.0 - logvar;
    terms.sum_dim_intlist([1i64, 2, 3].as_slice(), false, None::<tch::Kind>) * 0.5
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::host_f32;

    #[test]
    fn gaussian_kl_by_hand() {
        // mean 1, logvar 0: 0.5; mean 0, logvar ln 2: 0.5 (2 - 1 - ln 2).
        let mean = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 1, 1, 2]);
        let logvar = Tensor::from_slice(&[0.0f32, 2f32.ln()]).view([1, 1, 1, 2]);
        let kl = host_f32(&gaussian_kl(&mean, &logvar));
        let want = 0.5 + 0.5 * (1.0 - 2f64.ln());
        assert!((kl[0] as f64 - want).abs() < 1e-6, "{} vs {want}", kl[0]);
    }
}
