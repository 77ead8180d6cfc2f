//! Small numerical building blocks shared by the model's parts, each with the reason for
//! its form (nn.py's `concat_elu`, `down_shift`, `right_shift`).

use tch::Tensor;

use crate::engine::ffi;

/// ELU of `[x, -x]` along the channels: doubles the channel count (`concat_elu` in nn.py).
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, 2C, H, W]`
pub fn concat_elu(x: &Tensor) -> Tensor {
    concat_elu_padded(x, [0; 4])
}

/// [`concat_elu`] padded with zeros by `[left, right, top, bottom]` (the order of
/// `constant_pad_nd`), for the convolution that reads it: one fused operation of the
/// crate's C++ file (`engine::ffi::concat_elu_padded`).
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, 2C, top + H + bottom, left + W + right]`
pub fn concat_elu_padded(x: &Tensor, padding: [i64; 4]) -> Tensor {
    ffi::concat_elu_padded(x, padding).unwrap_or_else(|e| panic!("concat_elu: {e}"))
}

/// `x + a * sigmoid(b)` for `[a, b]` the two halves of `c` along the channels: the
/// gated resnet's output, one fused operation of the crate's C++ file.
///
/// # Shapes
/// `[B, C, H, W]`, `[B, 2C, H, W]` -> `[B, C, H, W]`
pub fn gated_residual(x: &Tensor, c: &Tensor) -> Tensor {
    ffi::gated_residual(x, c).unwrap_or_else(|e| panic!("gated resnet: {e}"))
}

/// Whether `x` (`[B, C, H, W]`) is laid out channels-last (NHWC in memory): its strides
/// grow from the channels to the columns, rows and images, as LibTorch's own test
/// (`is_channels_last_strides_2d`) reads them. Narrowed maps keep the answer; a plain
/// tensor with one channel is NCHW.
pub fn is_channels_last(x: &Tensor) -> bool {
    if x.dim() != 4 {
        return false;
    }
    let (size, stride) = (x.size(), x.stride());
    let mut min = 0;
    for d in [1, 3, 2, 0] {
        if size[d] == 0 || stride[d] < min || (d == 0 && min == stride[1]) {
            return false;
        }
        min = stride[d] * size[d].max(1);
    }
    true
}

/// `x` laid out channels-last: the same values, NHWC in memory (PyTorch's
/// `contiguous(memory_format=torch.channels_last)`); no copy if it already is. A
/// one-channel tensor that needs no gradient (an image) gets channels-last strides over
/// the same memory, so that what is built from it stays channels-last.
pub fn to_channels_last(x: &Tensor) -> Tensor {
    if is_channels_last(x) {
        return x.shallow_clone();
    }
    let y = x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
    let s = y.size();
    if x.dim() == 4 && s[1] == 1 && !y.requires_grad() && !is_channels_last(&y) {
        let (c, h, w) = (s[1], s[2], s[3]);
        return y.as_strided(s.as_slice(), [h * w * c, 1, w * c, c], None);
    }
    y
}

/// `t` in the memory layout of `like`: channels-last if `like` is, else as it is. A
/// convolution whose weight and input share a layout runs in it (oneDNN, cuDNN).
pub fn layout_like(t: &Tensor, like: &Tensor) -> Tensor {
    if is_channels_last(like) {
        to_channels_last(t)
    } else {
        t.shallow_clone()
    }
}

/// Standard normal draws shaped like `t` (its kind and device), drawn in the plain
/// order of its elements whatever `t`'s layout (`randn_like` fills memory in order, so a
/// channels-last `t` would put other draws at each position): the same seed gives the
/// same noise in either layout.
pub fn standard_normal_like(t: &Tensor) -> Tensor {
    Tensor::randn(t.size(), (t.kind(), t.device()))
}

/// Zero padding of the last two axes by `[left, right, top, bottom]` (`constant_pad_nd`),
/// keeping a channels-last input channels-last (`constant_pad_nd` alone would not). A
/// negative amount crops instead: one operation whose gradient is one operation too,
/// where `narrow` backward fills a zero tensor of the input's size and copies into it.
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, C, top + H + bottom, left + W + right]`
pub fn pad(x: &Tensor, padding: [i64; 4]) -> Tensor {
    let [left, right, top, bottom] = padding;
    if is_channels_last(x) {
        x.permute([0, 2, 3, 1]) // [B, H, W, C], contiguous
            .constant_pad_nd([0, 0, left, right, top, bottom])
            .permute([0, 3, 1, 2])
    } else {
        x.constant_pad_nd(padding)
    }
}

/// `x` with a channel of ones after its own (`cat([x, ones], 1)`, PixelCNN++'s input), in
/// `x`'s layout.
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, C + 1, H, W]`
pub fn with_ones_channel(x: &Tensor) -> Tensor {
    if is_channels_last(x) {
        x.permute([0, 2, 3, 1]) // [B, H, W, C], contiguous
            .pad([0, 1], "constant", Some(1.0))
            .permute([0, 3, 1, 2])
    } else {
        x.pad([0, 0, 0, 0, 0, 1], "constant", Some(1.0))
    }
}

/// Shifts the map one row down: row 0 becomes zeros and the last row is dropped
/// (`down_shift` in nn.py).
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, C, H, W]`
pub fn down_shift(x: &Tensor) -> Tensor {
    pad(x, [0, 0, 1, -1])
}

/// Shifts the map one column right: column 0 becomes zeros and the last column is
/// dropped (`right_shift` in nn.py).
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, C, H, W]`
pub fn right_shift(x: &Tensor) -> Tensor {
    pad(x, [1, -1, 0, 0])
}

/// Sums every axis but the first: per-image totals.
///
/// # Shapes
/// `[B, ...]` -> `[B]`
pub fn per_image_sum(t: &Tensor) -> Tensor {
    let dims: Vec<i64> = (1..t.dim() as i64).collect();
    t.sum_dim_intlist(dims.as_slice(), false, None::<tch::Kind>)
}

/// A float tensor's values on the host, flattened.
pub fn host_f32(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.detach().to_kind(tch::Kind::Float).flatten(0, -1))
        .expect("a float tensor converts to f32")
}

/// A float tensor's values on the host in float64, flattened.
pub fn host_f64(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.detach().to_kind(tch::Kind::Double).flatten(0, -1))
        .expect("a float tensor converts to f64")
}

/// The shape of a tensor as host sizes.
pub fn dims(t: &Tensor) -> Vec<usize> {
    t.size().into_iter().map(|d| d as usize).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f64]) -> Tensor {
        Tensor::from_slice(v).to_kind(tch::Kind::Float)
    }

    /// LibTorch's softplus switches to the identity above 20; in float32 that is the
    /// exact value (log1p(e^-20) = 2e-9 is below half an ulp of 20), so the model uses
    /// it. Values by hand, in float64.
    #[test]
    fn softplus_and_elu_by_hand() {
        let x = [-100.0, -1.0, 0.0, 2.0, 21.0, 100.0];
        let sp = host_f32(&t(&x).softplus());
        for (g, &v) in sp.iter().zip(&x) {
            let want = v.max(0.0) + (-v.abs()).exp().ln_1p();
            assert!(
                (*g as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{g} vs {want}"
            );
        }
        let e = host_f32(&t(&x).elu());
        for (g, &v) in e.iter().zip(&x) {
            let want = if v > 0.0 { v } else { v.exp() - 1.0 };
            assert!((*g as f64 - want).abs() < 1e-6, "{g} vs {want}");
        }
    }

    /// Values and gradients by hand: `elu(t) = t` for `t > 0`, else `e^t - 1`, with
    /// derivative 1, else `e^t` (1 at 0, from both sides); finite at +-100.
    #[test]
    fn concat_elu_values_and_gradients_by_hand() {
        let xs = [-100.0f64, -1.0, 0.0, 0.5, 100.0];
        let x = t(&xs).view([1, 5, 1, 1]).set_requires_grad(true);
        let y = concat_elu(&x);
        let elu_ref = |t: f64| if t > 0.0 { t } else { t.exp() - 1.0 };
        let grad_ref = |t: f64| if t > 0.0 { 1.0 } else { t.exp() };
        let got = host_f32(&y);
        for (i, &v) in xs.iter().enumerate() {
            assert!((got[i] as f64 - elu_ref(v)).abs() < 1e-6, "elu({v})");
            assert!((got[i + 5] as f64 - elu_ref(-v)).abs() < 1e-6, "elu(-{v})");
        }
        // d/dx sum(w1 * elu(x) + w2 * elu(-x)) = w1 elu'(x) - w2 elu'(-x)
        let (w1, w2) = (1.0, 3.0);
        let w = t(&[w1, w1, w1, w1, w1, w2, w2, w2, w2, w2]).view([1, 10, 1, 1]);
        (y * w).sum(None::<tch::Kind>).backward();
        let g = host_f32(&x.grad());
        for (i, &v) in xs.iter().enumerate() {
            let want = w1 * grad_ref(v) - w2 * grad_ref(-v);
            assert!(
                (g[i] as f64 - want).abs() < 1e-6,
                "gradient at {v}: {} vs {want}",
                g[i]
            );
        }
    }

    /// Random float64 values with some exact zeros (ELU's kink), `[2, 3, 4, 5]`.
    fn map_with_zeros(seed: i64, channels: i64) -> Tensor {
        tch::manual_seed(seed);
        let x = Tensor::randn([2, channels, 4, 5], (tch::Kind::Double, tch::Device::Cpu)) * 2.0;
        let keep = x.abs().ge(0.3).to_kind(tch::Kind::Double);
        x * keep
    }

    /// The fused, padded `concat_elu` against LibTorch's operations one by one
    /// (negation, concatenation, ELU, then `constant_pad_nd`), in float64: values and the
    /// gradient of a random weighting of the output, for each causal padding the model
    /// uses and none, on plain and on channels-last strides.
    #[test]
    fn fused_padded_concat_elu_equals_the_operations_one_by_one() {
        let weights_seed = 7;
        for padding in [[0, 0, 0, 0], [1, 1, 1, 0], [1, 0, 1, 0], [0, 2, 3, 1]] {
            for permuted in [false, true] {
                let base = map_with_zeros(3, 3);
                // The same values with NHWC strides: the kernel must not assume a layout.
                let base = if permuted {
                    base.permute([0, 2, 3, 1])
                        .contiguous()
                        .permute([0, 3, 1, 2])
                } else {
                    base
                };
                // The upstream gradient in the output's layout (the CPU's loop) and in
                // plain NCHW (for a channels-last output, the fallback's operations).
                for upstream_nchw in [false, true] {
                    let x1 = base.detach().set_requires_grad(true);
                    let x2 = base.detach().set_requires_grad(true);
                    let fused = concat_elu_padded(&x1, padding);
                    let plain = Tensor::cat(&[&x2, &x2.neg()], 1)
                        .elu()
                        .constant_pad_nd(padding);
                    assert_eq!(fused.size(), plain.size());
                    // The same operations on the same values; LibTorch's vectorised and scalar
                    // loops (chosen by the strides) may round e^x - 1 an ulp apart.
                    let diff = (&fused - &plain).abs().max().double_value(&[]);
                    let tol = 2.0 * f64::EPSILON * plain.abs().max().double_value(&[]);
                    assert!(diff <= tol, "{padding:?}: values differ by {diff}");
                    tch::manual_seed(weights_seed);
                    let w = Tensor::randn(plain.size(), (plain.kind(), plain.device()));
                    let w = if upstream_nchw {
                        w
                    } else {
                        layout_like(&w, &fused)
                    };
                    (&fused * &w).sum(None::<tch::Kind>).backward();
                    (&plain * &w).sum(None::<tch::Kind>).backward();
                    let g2 = x2.grad();
                    let gdiff = (x1.grad() - &g2).abs().max().double_value(&[]);
                    // ELU'(x) read from the output, (e^x - 1) + 1, against e^x: a few float64
                    // roundings of the largest gradient.
                    let tol = 4.0 * f64::EPSILON * g2.abs().max().double_value(&[]);
                    assert!(gdiff <= tol, "{padding:?}: gradients differ by {gdiff}");
                }
            }
        }
    }

    /// In float32, the fused `concat_elu` computes its `e^x - 1` with its own polynomial:
    /// each value is within 4 float32 ulps of ELU computed in float64, over magnitudes
    /// from 1e-30 to 100, both sides of the polynomial's switch at -1/2 and of -87, and
    /// zeros; the gradient's formula is the operations' (ELU' from the output).
    #[test]
    fn fused_concat_elu_in_float32_is_within_a_few_ulps() {
        let mut values: Vec<f64> = vec![
            0.0, -0.0, -0.5, -0.4999999, -0.5000001, -87.0, -87.5, -88.0, -104.0,
        ];
        let mut m = 1e-30;
        while m < 100.0 {
            for f in [1.0, 1.37, 2.9, 5.5] {
                values.push(m * f);
                values.push(-m * f);
            }
            m *= 3.0;
        }
        for i in 0..2000 {
            values.push(-12.0 + 24.0 * i as f64 / 2000.0);
        }
        let n = values.len() as i64;
        let x = Tensor::from_slice(&values)
            .to_kind(tch::Kind::Float)
            .view([1, 1, 1, n]);
        let got = host_f32(&concat_elu_padded(&x, [0; 4]));
        let x64: Vec<f64> = host_f32(&x).iter().map(|&v| v as f64).collect();
        let elu = |v: f64| if v > 0.0 { v } else { v.exp_m1() };
        for (i, &v) in x64.iter().enumerate() {
            for (half, want) in [(0, elu(v)), (1, elu(-v))] {
                let g = got[half * x64.len() + i] as f64;
                let tol = 4.0 * f32::EPSILON as f64 * want.abs().max(f32::MIN_POSITIVE as f64);
                assert!(
                    (g - want).abs() <= tol,
                    "elu of {} at {v}: {g} vs {want}",
                    if half == 0 { "x" } else { "-x" }
                );
            }
        }
    }

    /// The fused gate `x + a * sigmoid(b)` against the operations one by one in float64:
    /// values and the gradients of both inputs.
    #[test]
    fn fused_gated_residual_equals_the_operations_one_by_one() {
        let x1 = map_with_zeros(4, 3).set_requires_grad(true);
        let x2 = x1.detach().set_requires_grad(true);
        let c1 = (map_with_zeros(5, 6) * 4.0).set_requires_grad(true);
        let c2 = c1.detach().set_requires_grad(true);
        let fused = gated_residual(&x1, &c1);
        let halves = c2.chunk(2, 1);
        let plain = &x2 + &halves[0] * halves[1].sigmoid();
        // A fused multiply-add against a product rounded before the sum: an ulp or two of
        // the largest magnitude.
        let ulps = |t: &Tensor| 4.0 * f64::EPSILON * t.abs().max().double_value(&[]);
        let diff = (&fused - &plain).abs().max().double_value(&[]);
        assert!(diff <= ulps(&plain), "values differ by {diff}");
        let w = Tensor::randn_like(&plain);
        (&fused * &w).sum(None::<tch::Kind>).backward();
        (&plain * &w).sum(None::<tch::Kind>).backward();
        for (a, b) in [(x1.grad(), x2.grad()), (c1.grad(), c2.grad())] {
            let gdiff = (&a - &b).abs().max().double_value(&[]);
            assert!(gdiff <= ulps(&b), "gradients differ by {gdiff}");
        }
        let wrong = Tensor::zeros([2, 5, 4, 5], (tch::Kind::Double, tch::Device::Cpu));
        let err = ffi::gated_residual(&x1, &wrong).unwrap_err().to_string();
        assert!(err.contains("[B, 2C, H, W]"), "{err}");
    }

    #[test]
    fn log_sum_exp_is_stable() {
        let x = t(&[1000.0, 1000.0, -1.0, 2.0]).view([2, 2]);
        let l = host_f32(&x.logsumexp([1], false));
        assert!((l[0] as f64 - (1000.0 + 2f64.ln())).abs() < 1e-3);
        assert!((l[1] as f64 - ((-1f64).exp() + 2f64.exp()).ln()).abs() < 1e-6);
    }

    #[test]
    fn shifts() {
        let x = t(&[1.0, 2.0, 3.0, 4.0]).view([1, 1, 2, 2]);
        assert_eq!(host_f32(&down_shift(&x)), vec![0.0, 0.0, 1.0, 2.0]);
        assert_eq!(host_f32(&right_shift(&x)), vec![0.0, 1.0, 0.0, 3.0]);
        assert_eq!(host_f32(&per_image_sum(&x)), vec![10.0]);
        // The gradient of a shift (one padding that also crops) moves back and drops the
        // row or column that fell off.
        let mut x = t(&[1.0, 2.0, 3.0, 4.0])
            .view([1, 1, 2, 2])
            .set_requires_grad(true);
        let up = t(&[10.0, 20.0, 30.0, 40.0]).view([1, 1, 2, 2]);
        (down_shift(&x) * &up).sum(None::<tch::Kind>).backward();
        assert_eq!(host_f32(&x.grad()), vec![30.0, 40.0, 0.0, 0.0]);
        x.zero_grad();
        (right_shift(&x) * &up).sum(None::<tch::Kind>).backward();
        assert_eq!(host_f32(&x.grad()), vec![20.0, 0.0, 40.0, 0.0]);
        let c = host_f32(&concat_elu(&t(&[1.0]).view([1, 1, 1, 1])));
        assert!((c[0] - 1.0).abs() < 1e-7 && (c[1] as f64 - ((-1f64).exp() - 1.0)).abs() < 1e-6);
    }
}
