//! Weight normalisation (Salimans & Kingma 2016) as in nn.py: `W = g * V / ||V||`, one
//! norm per output channel, bias `b`. The convolutions are 'VALID' apart from the padding
//! the caller asks for. Initialisation as the reference: `V ~ N(0, 0.05)`, `g` = the
//! init scale (unit-norm filters; 0.1 for a gated resnet's second convolution), `b = 0`.

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

use crate::model::ops::{layout_like, pad};

/// Standard deviation of the initial directions `V` (nn.py).
const V_INIT_STD: f64 = 0.05;
/// Floor of `sum V^2` inside the square root: an all-zero filter gives zero, not NaN.
const NORM_FLOOR: f64 = 1e-12;

/// `V`, `g`, `b` of a weight-normalised layer with `cout` outputs.
fn init_params(p: &Path, v_shape: [i64; 4], cout: i64, init_scale: f64) -> [Tensor; 3] {
    let v_init = Init::Randn {
        mean: 0.0,
        stdev: V_INIT_STD,
    };
    [
        p.var("V", &v_shape, v_init),
        p.var("g", &[cout], Init::Const(init_scale)),
        p.var("b", &[cout], Init::Const(0.0)),
    ]
}

/// `g * V / sqrt(max(sum V^2, 1e-12))`, the norm taken over `dims` (every axis but the
/// output channels'), in float32, then cast to `kind`.
fn normalised(v: &Tensor, g: &Tensor, dims: [i64; 3], g_shape: [i64; 4], kind: Kind) -> Tensor {
    let norm = v
        .square()
        .sum_dim_intlist(dims.as_slice(), true, None::<Kind>)
        .clamp_min(NORM_FLOOR)
        .sqrt();
    (v / norm * g.view(g_shape)).to_kind(kind)
}

/// A weight-normalised convolution. `V` is `[out, in, kh, kw]`, normalised over
/// `(in, kh, kw)`.
#[derive(Debug)]
pub struct WnConv2d {
    pub v: Tensor,
    pub g: Tensor,
    pub b: Tensor,
    pub stride: i64,
}

impl WnConv2d {
    pub fn new(
        p: &Path,
        cin: i64,
        cout: i64,
        kernel: [i64; 2],
        stride: i64,
        init_scale: f64,
    ) -> Self {
        let [v, g, b] = init_params(p, [cout, cin, kernel[0], kernel[1]], cout, init_scale);
        Self { v, g, b, stride }
    }

    /// A weight-normalised 1x1 convolution: nn.py's `nin`, a dense layer per pixel.
    pub fn nin(p: &Path, cin: i64, cout: i64) -> Self {
        Self::new(p, cin, cout, [1, 1], 1, 1.0)
    }

    /// The effective weight `g * V / ||V||`, `[out, in, kh, kw]`, in `kind`.
    pub fn weight(&self, kind: Kind) -> Tensor {
        normalised(&self.v, &self.g, [1, 2, 3], [-1, 1, 1, 1], kind)
    }

    /// The kernel's height and width.
    pub fn kernel(&self) -> [i64; 2] {
        let s = self.v.size();
        [s[2], s[3]]
    }

    /// Convolution with zero padding `[top, bottom, left, right]`.
    ///
    /// # Shapes
    /// `[B, in, H, W]` -> `[B, out, (H + top + bottom - kh) / s + 1, (W + left + right - kw) / s + 1]`
    pub fn forward_padded(&self, x: &Tensor, padding: [i64; 4]) -> Tensor {
        let [top, bottom, left, right] = padding;
        let kind = x.kind();
        let padded = if padding == [0; 4] {
            x.shallow_clone()
        } else {
            pad(x, [left, right, top, bottom])
        };
        padded.conv2d(
            &layout_like(&self.weight(kind), x),
            Some(self.b.to_kind(kind)),
            [self.stride; 2],
            [0, 0],
            [1, 1],
            1,
        )
    }

    /// Unpadded ('VALID') convolution.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_padded(x, [0; 4])
    }
}

/// A weight-normalised transposed convolution, no padding. `V` is `[in, out, kh, kw]`
/// (PyTorch's layout), normalised over `(in, kh, kw)`: one norm per output channel.
#[derive(Debug)]
pub struct WnConvTranspose2d {
    pub v: Tensor,
    pub g: Tensor,
    pub b: Tensor,
    pub stride: i64,
}

impl WnConvTranspose2d {
    pub fn new(p: &Path, cin: i64, cout: i64, kernel: [i64; 2], stride: i64) -> Self {
        let [v, g, b] = init_params(p, [cin, cout, kernel[0], kernel[1]], cout, 1.0);
        Self { v, g, b, stride }
    }

    /// The effective weight `g * V / ||V||`, `[in, out, kh, kw]`, in `kind`.
    pub fn weight(&self, kind: Kind) -> Tensor {
        normalised(&self.v, &self.g, [0, 2, 3], [1, -1, 1, 1], kind)
    }

    /// # Shapes
    /// `[B, in, H, W]` -> `[B, out, (H - 1) s + kh, (W - 1) s + kw]`
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        x.conv_transpose2d(
            &layout_like(&self.weight(kind), x),
            Some(self.b.to_kind(kind)),
            [self.stride; 2],
            [0, 0],
            [0, 0],
            1,
            [1, 1],
        )
    }
}
