//! Weight normalisation (Salimans & Kingma 2016) as in nn.py: `W = g * V / ||V||`, one
//! norm per output channel, bias `b`. The convolutions are 'VALID' apart from the padding
//! the caller asks for. Initialisation as the reference: `V ~ N(0, 0.05)`, `g` = the
//! init scale (unit-norm filters; 0.1 for a gated resnet's second convolution), `b = 0`.

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

use crate::engine::ffi;
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

/// `g * V / sqrt(max(sum V^2, 1e-12))`, one norm per index of the output channels' axis
/// `axis` (the sum over every other axis), in float32, then cast to `kind`: one fused
/// operation of the crate's C++ file, where the operations one by one are seven tiny ones
/// per layer forward and a dozen backward.
fn normalised(v: &Tensor, g: &Tensor, axis: i64, kind: Kind) -> Tensor {
    ffi::weight_norm(v, g, axis, NORM_FLOOR)
        .unwrap_or_else(|e| panic!("weight norm: {e}"))
        .to_kind(kind)
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
        normalised(&self.v, &self.g, 0, kind)
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
        normalised(&self.v, &self.g, 1, kind)
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// `g * v / sqrt(max(sum v^2, floor))` in float64 operations one by one, the norm over
    /// every axis but `axis`.
    fn by_operations(v: &Tensor, g: &Tensor, axis: i64) -> Tensor {
        let dims: Vec<i64> = (0..v.dim() as i64).filter(|&d| d != axis).collect();
        let mut shape = vec![1i64; v.dim()];
        shape[axis as usize] = -1;
        let norm = v
            .square()
            .sum_dim_intlist(dims.as_slice(), true, None::<Kind>)
            .clamp_min(NORM_FLOOR)
            .sqrt();
        v / norm * g.view(shape.as_slice())
    }

    /// The fused operation against the operations one by one in float64 (values, and the
    /// gradients of `v` and `g`), for a convolution's axis 0 and a transposed one's axis
    /// 1, with one all-zero filter (the floor, where the norm's gradient is zero) and one
    /// filter of magnitude 1e3; the CPU's loop and the GPU's tensor operations. Float64 sums of a few dozen terms: a few ulps of the
    /// largest value.
    #[test]
    fn fused_weight_norm_equals_the_operations_one_by_one() {
        tch::manual_seed(11);
        for (shape, axis) in [([5, 4, 2, 3], 0i64), ([4, 5, 2, 2], 1)] {
            let o = shape[axis as usize];
            let v = Tensor::randn(shape, (Kind::Double, Device::Cpu));
            let _ = v.select(axis, 1).zero_();
            let _ = v.select(axis, 2).g_mul_scalar_(1e3);
            let g = Tensor::randn([o], (Kind::Double, Device::Cpu));
            // The CPU's loop, and the tensor operations of a GPU.
            for tensor_operations in [false, true] {
                let (v1, g1) = (
                    v.detach().set_requires_grad(true),
                    g.detach().set_requires_grad(true),
                );
                let (v2, g2) = (
                    v.detach().set_requires_grad(true),
                    g.detach().set_requires_grad(true),
                );
                let fused =
                    ffi::weight_norm_with(&v1, &g1, axis, NORM_FLOOR, tensor_operations).unwrap();
                let plain = by_operations(&v2, &g2, axis);
                let ulps = |t: &Tensor| 8.0 * f64::EPSILON * t.abs().max().double_value(&[]);
                let diff = (&fused - &plain).abs().max().double_value(&[]);
                assert!(diff <= ulps(&plain), "axis {axis}: values differ by {diff}");
                let up = Tensor::randn(shape, (Kind::Double, Device::Cpu));
                (&fused * &up).sum(Kind::Double).backward();
                (&plain * &up).sum(Kind::Double).backward();
                for (name, a, b) in [("v", v1.grad(), v2.grad()), ("g", g1.grad(), g2.grad())] {
                    let gdiff = (&a - &b).abs().max().double_value(&[]);
                    assert!(
                        gdiff <= ulps(&b),
                        "axis {axis}: gradients of {name} differ by {gdiff}"
                    );
                }
                // The zero filter: zero weights, and a gradient of `v` scaled by g / sqrt(floor).
                assert_eq!(fused.select(axis, 1).abs().max().double_value(&[]), 0.0);
            }
        }
        // float32 (the model's kind) agrees with float64 to float32 rounding.
        let v = Tensor::randn([6, 8, 2, 3], (Kind::Double, Device::Cpu));
        let g = Tensor::randn([6], (Kind::Double, Device::Cpu));
        let f32 = ffi::weight_norm(
            &v.to_kind(Kind::Float),
            &g.to_kind(Kind::Float),
            0,
            NORM_FLOOR,
        );
        let want = by_operations(&v, &g, 0);
        let diff = (f32.unwrap().to_kind(Kind::Double) - &want)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff <= 4.0 * f32::EPSILON as f64 * want.abs().max().double_value(&[]));
        let err = ffi::weight_norm(
            &v,
            &Tensor::ones([5], (Kind::Double, Device::Cpu)),
            0,
            1e-12,
        );
        assert!(err.unwrap_err().to_string().contains("gains of shape [6]"));
    }
}
