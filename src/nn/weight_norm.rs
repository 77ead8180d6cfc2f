//! Weight normalisation (Salimans & Kingma 2016) as in nn.py: `W = g * V / ||V||`, one
//! norm per output channel, bias `b`. The convolutions are 'VALID' apart from the padding
//! the caller asks for. Initialisation as the reference: `V ~ N(0, 0.05)`, `g` = the
//! init scale (unit-norm filters; 0.1 for a gated resnet's second convolution), `b = 0`.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::module::{conv_transpose2d, conv2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};

/// Standard deviation of the initial directions `V` (nn.py).
const V_INIT_STD: f64 = 0.05;
/// Floor of `sum V^2` inside the square root: an all-zero filter gives zero, not NaN.
const NORM_FLOOR: f32 = 1e-12;

fn init_params(
    v_shape: [usize; 4],
    cout: usize,
    init_scale: f64,
    device: &Device,
) -> (Param<Tensor<4>>, Param<Tensor<1>>, Param<Tensor<1>>) {
    (
        Param::from_tensor(Tensor::random(
            v_shape,
            Distribution::Normal(0.0, V_INIT_STD),
            device,
        )),
        Param::from_tensor(Tensor::<1>::ones([cout], device) * init_scale),
        Param::from_tensor(Tensor::<1>::zeros([cout], device)),
    )
}

/// A weight-normalised convolution. `V` is `[out, in, kh, kw]`, normalised over
/// `(in, kh, kw)`.
#[derive(Module, Debug)]
pub struct WnConv2d {
    pub v: Param<Tensor<4>>,
    pub g: Param<Tensor<1>>,
    pub b: Param<Tensor<1>>,
    pub stride: usize,
}

impl WnConv2d {
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: [usize; 2],
        stride: usize,
        init_scale: f64,
        device: &Device,
    ) -> Self {
        let (v, g, b) = init_params([cout, cin, kernel[0], kernel[1]], cout, init_scale, device);
        Self { v, g, b, stride }
    }

    /// A weight-normalised 1x1 convolution: nn.py's `nin`, a dense layer per pixel.
    pub fn nin(cin: usize, cout: usize, device: &Device) -> Self {
        Self::new(cin, cout, [1, 1], 1, 1.0, device)
    }

    /// The effective weight `g * V / ||V||`, `[out, in, kh, kw]`.
    pub fn weight(&self) -> Tensor<4> {
        let v = self.v.val();
        let [cout, _, _, _] = v.dims();
        let norm = v
            .clone()
            .powf_scalar(2.0)
            .sum_dim(3)
            .sum_dim(2)
            .sum_dim(1) // [out, 1, 1, 1]
            .clamp_min(NORM_FLOOR)
            .sqrt();
        v / norm * self.g.val().reshape([cout, 1, 1, 1])
    }

    /// Convolution with zero padding `(top, bottom, left, right)`.
    ///
    /// # Shapes
    /// `[B, in, H, W]` -> `[B, out, (H + top + bottom - kh) / s + 1, (W + left + right - kw) / s + 1]`
    pub fn forward_padded(&self, x: Tensor<4>, padding: [usize; 4]) -> Tensor<4> {
        let [top, bottom, left, right] = padding;
        conv2d(
            x,
            self.weight(),
            Some(self.b.val()),
            ConvOptions::new_with_padding(
                [self.stride; 2],
                [(top, bottom), (left, right)],
                [1, 1],
                1,
            ),
        )
    }

    /// Unpadded ('VALID') convolution.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_padded(x, [0; 4])
    }
}

/// A weight-normalised transposed convolution, stride 2, no padding. `V` is
/// `[in, out, kh, kw]` (PyTorch's layout), normalised over `(in, kh, kw)`: one norm per
/// output channel.
#[derive(Module, Debug)]
pub struct WnConvTranspose2d {
    pub v: Param<Tensor<4>>,
    pub g: Param<Tensor<1>>,
    pub b: Param<Tensor<1>>,
    pub stride: usize,
}

impl WnConvTranspose2d {
    pub fn new(
        cin: usize,
        cout: usize,
        kernel: [usize; 2],
        stride: usize,
        device: &Device,
    ) -> Self {
        let (v, g, b) = init_params([cin, cout, kernel[0], kernel[1]], cout, 1.0, device);
        Self { v, g, b, stride }
    }

    /// The effective weight `g * V / ||V||`, `[in, out, kh, kw]`.
    pub fn weight(&self) -> Tensor<4> {
        let v = self.v.val();
        let [_, cout, _, _] = v.dims();
        let norm = v
            .clone()
            .powf_scalar(2.0)
            .sum_dim(3)
            .sum_dim(2)
            .sum_dim(0) // [1, out, 1, 1]
            .clamp_min(NORM_FLOOR)
            .sqrt();
        v / norm * self.g.val().reshape([1, cout, 1, 1])
    }

    /// # Shapes
    /// `[B, in, H, W]` -> `[B, out, (H - 1) s + kh, (W - 1) s + kw]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv_transpose2d(
            x,
            self.weight(),
            Some(self.b.val()),
            ConvTransposeOptions::new([self.stride; 2], [0, 0], [0, 0], [1, 1], 1),
        )
    }
}
