//! Small numerical building blocks shared by the model's parts, each with the reason for
//! its form (nn.py's `concat_elu`, `down_shift`, `right_shift`).

use tch::Tensor;

/// ELU of `[x, -x]` along the channels: doubles the channel count (`concat_elu` in nn.py).
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, 2C, H, W]`
pub fn concat_elu(x: &Tensor) -> Tensor {
    Tensor::cat(&[x, &x.neg()], 1).elu()
}

/// Shifts the map one row down: row 0 becomes zeros and the last row is dropped
/// (`down_shift` in nn.py).
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, C, H, W]`
pub fn down_shift(x: &Tensor) -> Tensor {
    let h = x.size()[2];
    x.constant_pad_nd([0, 0, 1, 0]).narrow(2, 0, h)
}

/// Shifts the map one column right: column 0 becomes zeros and the last column is
/// dropped (`right_shift` in nn.py).
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, C, H, W]`
pub fn right_shift(x: &Tensor) -> Tensor {
    let w = x.size()[3];
    x.constant_pad_nd([1, 0, 0, 0]).narrow(3, 0, w)
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
        let c = host_f32(&concat_elu(&t(&[1.0]).view([1, 1, 1, 1])));
        assert!((c[0] - 1.0).abs() < 1e-7 && (c[1] as f64 - ((-1f64).exp() - 1.0)).abs() < 1e-6);
    }
}
