//! Plain (not weight-normalised) convolutions, initialised as PyTorch's `nn.Conv2d` and
//! `nn.ConvTranspose2d` are: weight and bias uniform in `+-1 / sqrt(fan_in)` (its
//! `kaiming_uniform_(a = sqrt(5))`), which is what the reference's VAE, mixing network and
//! auxiliary head start from.

use tch::Tensor;

use crate::model::ops::layout_like;
use tch::nn::{Init, Path};

/// Kernel, stride and padding of a square convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvConfig {
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
}

impl ConvConfig {
    /// A `k x k` convolution with stride 1 and no padding.
    pub fn kernel(kernel: i64) -> Self {
        Self {
            kernel,
            stride: 1,
            padding: 0,
        }
    }

    /// A 1x1 convolution: a dense layer applied at every pixel.
    pub fn pointwise() -> Self {
        Self::kernel(1)
    }

    pub fn stride(self, stride: i64) -> Self {
        Self { stride, ..self }
    }

    pub fn padding(self, padding: i64) -> Self {
        Self { padding, ..self }
    }
}

fn uniform(bound: f64) -> Init {
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A 2D convolution, weight `[out, in, kh, kw]`, optional bias `[out]`.
#[derive(Debug)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub config: ConvConfig,
}

impl Conv2d {
    /// PyTorch's default initialisation (fan_in = in * kh * kw), with a bias.
    pub fn new(p: &Path, cin: i64, cout: i64, config: ConvConfig) -> Self {
        let k = config.kernel;
        let bound = 1.0 / ((cin * k * k) as f64).sqrt();
        let weight = p.var("weight", &[cout, cin, k, k], uniform(bound));
        let bias = p.var("bias", &[cout], uniform(bound));
        Self {
            weight,
            bias: Some(bias),
            config,
        }
    }

    /// A bias-free 1x1 convolution with weights drawn from `N(0, std)` (the reference's
    /// `u`-conditioning path in every gated resnet).
    pub fn normal_1x1(p: &Path, cin: i64, cout: i64, std: f64) -> Self {
        let init = Init::Randn {
            mean: 0.0,
            stdev: std,
        };
        Self {
            weight: p.var("weight", &[cout, cin, 1, 1], init),
            bias: None,
            config: ConvConfig::pointwise(),
        }
    }

    /// # Shapes
    /// `[B, in, H, W]` -> `[B, out, (H + 2p - k) / s + 1, (W + 2p - k) / s + 1]`
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let c = self.config;
        x.conv2d(
            &layout_like(&self.weight.to_kind(kind), x),
            self.bias.as_ref().map(|b| b.to_kind(kind)),
            [c.stride; 2],
            [c.padding; 2],
            [1, 1],
            1,
        )
    }
}

/// A 2D transposed convolution, weight `[in, out, kh, kw]` (PyTorch's layout), bias `[out]`.
#[derive(Debug)]
pub struct ConvTranspose2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub config: ConvConfig,
}

impl ConvTranspose2d {
    /// PyTorch's default initialisation; for a transposed convolution its fan_in is
    /// `out * kh * kw` (the second axis of the weight).
    pub fn new(p: &Path, cin: i64, cout: i64, config: ConvConfig) -> Self {
        let k = config.kernel;
        let bound = 1.0 / ((cout * k * k) as f64).sqrt();
        Self {
            weight: p.var("weight", &[cin, cout, k, k], uniform(bound)),
            bias: p.var("bias", &[cout], uniform(bound)),
            config,
        }
    }

    /// # Shapes
    /// `[B, in, H, W]` -> `[B, out, (H - 1) s - 2p + k, (W - 1) s - 2p + k]`
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let c = self.config;
        x.conv_transpose2d(
            &layout_like(&self.weight.to_kind(kind), x),
            Some(self.bias.to_kind(kind)),
            [c.stride; 2],
            [c.padding; 2],
            [0, 0],
            1,
            [1, 1],
        )
    }
}
