//! Plain (not weight-normalised) convolutions, initialised as PyTorch's `nn.Conv2d` and
//! `nn.ConvTranspose2d` are: weight and bias uniform in `+-1 / sqrt(fan_in)` (its
//! `kaiming_uniform_(a = sqrt(5))`), which is what the reference's VAE, mixing network and
//! auxiliary head start from.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};

/// A 2D convolution, weight `[out, in, kh, kw]`, optional bias `[out]`.
#[derive(Module, Debug)]
pub struct Conv2d {
    pub weight: Param<Tensor<4>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub stride: usize,
    pub padding: usize,
}

fn uniform(shape: impl Into<burn::tensor::Shape>, bound: f64, device: &Device) -> Tensor<4> {
    let shape: burn::tensor::Shape = shape.into();
    Tensor::<4>::random(shape, Distribution::Uniform(-bound, bound), device)
}

impl Conv2d {
    /// PyTorch's default initialisation (fan_in = in * kh * kw).
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        device: &Device,
    ) -> Self {
        let bound = 1.0 / ((cin * kernel * kernel) as f64).sqrt();
        Self {
            weight: Param::from_tensor(uniform([cout, cin, kernel, kernel], bound, device)),
            bias: bias.then(|| {
                Param::from_tensor(Tensor::<1>::random(
                    [cout],
                    Distribution::Uniform(-bound, bound),
                    device,
                ))
            }),
            stride,
            padding,
        }
    }

    /// A bias-free 1x1 convolution with weights drawn from `N(0, std)` (the reference's
    /// `u`-conditioning path in every gated resnet).
    pub fn normal_1x1(cin: usize, cout: usize, std: f64, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::<4>::random(
                [cout, cin, 1, 1],
                Distribution::Normal(0.0, std),
                device,
            )),
            bias: None,
            stride: 1,
            padding: 0,
        }
    }

    /// # Shapes
    /// `[B, in, H, W]` -> `[B, out, (H + 2p - k) / s + 1, (W + 2p - k) / s + 1]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            ConvOptions::new([self.stride; 2], [self.padding; 2], [1, 1], 1),
        )
    }
}

/// A 2D transposed convolution, weight `[in, out, kh, kw]` (PyTorch's layout), bias `[out]`.
#[derive(Module, Debug)]
pub struct ConvTranspose2d {
    pub weight: Param<Tensor<4>>,
    pub bias: Param<Tensor<1>>,
    pub stride: usize,
    pub padding: usize,
}

impl ConvTranspose2d {
    /// PyTorch's default initialisation; for a transposed convolution its fan_in is
    /// `out * kh * kw` (the second axis of the weight).
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        device: &Device,
    ) -> Self {
        let bound = 1.0 / ((cout * kernel * kernel) as f64).sqrt();
        Self {
            weight: Param::from_tensor(uniform([cin, cout, kernel, kernel], bound, device)),
            bias: Param::from_tensor(Tensor::<1>::random(
                [cout],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            stride,
            padding,
        }
    }

    /// # Shapes
    /// `[B, in, H, W]` -> `[B, out, (H - 1) s - 2p + k, (W - 1) s - 2p + k]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv_transpose2d(
            x,
            self.weight.val(),
            Some(self.bias.val()),
            ConvTransposeOptions::new([self.stride; 2], [self.padding; 2], [0, 0], [1, 1], 1),
        )
    }
}
