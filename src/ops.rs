//! Small numerical building blocks shared by the model's parts, each with the reason for
//! its form.

use burn::prelude::*;
use burn::tensor::activation::relu;

/// `log(1 + e^t)`, exactly and without overflow: `max(t, 0) + log1p(e^-|t|)`, with
/// `max(t, 0)` written `(t + |t|) / 2` so that the gradient at 0 is 1/2, as the smooth
/// function's. (PyTorch's `softplus` switches to the identity above 20; the reference
/// does not, nor do we.)
pub fn softplus<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    let a = t.clone().abs();
    (t + a.clone()) * 0.5 + a.neg().exp().log1p()
}

/// ELU with `alpha = 1`, written as `x + n + exp(-n) - 1` with `n = relu(-x)`: `exp`
/// never sees a positive input (the `mask_where` form computes `exp(x)` everywhere, and
/// an infinite value there turns the gradient into NaN), `relu` and its gradient are
/// single passes, and the gradient at 0 is 1, as PyTorch's.
pub fn elu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let n = relu(x.clone().neg());
    x + n.clone() + n.neg().exp() - 1.0
}

/// ELU of `[x, -x]` along the channels: doubles the channel count (`concat_elu` in nn.py).
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, 2C, H, W]`
pub fn concat_elu(x: Tensor<4>) -> Tensor<4> {
    elu(Tensor::cat(vec![x.clone(), x.neg()], 1))
}

/// `log(sum(exp(x)))` along `dim`, keeping the dimension: the maximum is taken out first
/// so that no `exp` overflows (`log_sum_exp` in nn.py). The maximum is detached: the
/// result does not depend on it, and its gradient would only add rounding noise.
pub fn log_sum_exp<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    let m = x.clone().max_dim(dim).detach();
    (x - m.clone()).exp().sum_dim(dim).log() + m
}

/// Shifts the map one row down: row 0 becomes zeros and the last row is dropped
/// (`down_shift` in nn.py).
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, C, H, W]`
pub fn down_shift(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let zeros = Tensor::<4>::zeros([b, c, 1, w], &x.device());
    Tensor::cat(vec![zeros, x.narrow(2, 0, h - 1)], 2)
}

/// Shifts the map one column right: column 0 becomes zeros and the last column is
/// dropped (`right_shift` in nn.py).
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, C, H, W]`
pub fn right_shift(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let zeros = Tensor::<4>::zeros([b, c, h, 1], &x.device());
    Tensor::cat(vec![zeros, x.narrow(3, 0, w - 1)], 3)
}

/// Pads the two spatial dimensions with zeros: `(left, right, top, bottom)`.
///
/// # Shapes
/// `[B, C, H, W]` -> `[B, C, H + top + bottom, W + left + right]`
pub fn pad_zeros(x: Tensor<4>, left: usize, right: usize, top: usize, bottom: usize) -> Tensor<4> {
    if left + right + top + bottom == 0 {
        return x;
    }
    let [b, c, h, w] = x.dims();
    let device = x.device();
    let mut x = x;
    if top + bottom > 0 {
        let mut parts = Vec::with_capacity(3);
        if top > 0 {
            parts.push(Tensor::<4>::zeros([b, c, top, w], &device));
        }
        parts.push(x);
        if bottom > 0 {
            parts.push(Tensor::<4>::zeros([b, c, bottom, w], &device));
        }
        x = Tensor::cat(parts, 2);
    }
    if left + right > 0 {
        let hp = h + top + bottom;
        let mut parts = Vec::with_capacity(3);
        if left > 0 {
            parts.push(Tensor::<4>::zeros([b, c, hp, left], &device));
        }
        parts.push(x);
        if right > 0 {
            parts.push(Tensor::<4>::zeros([b, c, hp, right], &device));
        }
        x = Tensor::cat(parts, 3);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn softplus_and_elu_by_hand() {
        let d = crate::backend::cpu();
        let t = Tensor::<1>::from_floats([-100.0, -1.0, 0.0, 2.0, 100.0], &d);
        let sp = vals(softplus(t.clone()));
        let want = [
            0.0,
            (1.0 + (-1f64).exp()).ln(),
            2f64.ln(),
            (1.0 + 2f64.exp()).ln(),
            100.0,
        ];
        for (g, w) in sp.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
        // The gradient is the logistic function, 1/2 at 0.
        let ad = crate::backend::cpu().autodiff();
        let x = Tensor::<1>::from_floats([-3.0, 0.0, 2.0], &ad).require_grad();
        let grads = softplus(x.clone()).sum().backward();
        let g = vals(x.grad(&grads).unwrap());
        for (g, t) in g.iter().zip([-3f64, 0.0, 2.0]) {
            let want = 1.0 / (1.0 + (-t).exp());
            assert!(
                (*g as f64 - want).abs() < 1e-6,
                "softplus'({t}) = {g}, want {want}"
            );
        }
        let e = vals(elu(t));
        let want = [(-100f64).exp() - 1.0, (-1f64).exp() - 1.0, 0.0, 2.0, 100.0];
        for (g, w) in e.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
    }

    /// Values and gradients by hand: `elu(t) = t` for `t > 0`, else `e^t - 1`, with
    /// derivative 1, else `e^t` (1 at 0, from both sides); finite at +-100.
    #[test]
    fn concat_elu_values_and_gradients_by_hand() {
        let d = crate::backend::cpu().autodiff();
        let xs = [-100.0f64, -1.0, 0.0, 0.5, 100.0];
        let x = Tensor::<1>::from_floats(xs.map(|v| v as f32), &d)
            .reshape([1, 5, 1, 1])
            .require_grad();
        let y = concat_elu(x.clone());
        let elu_ref = |t: f64| if t > 0.0 { t } else { t.exp() - 1.0 };
        let grad_ref = |t: f64| if t > 0.0 { 1.0 } else { t.exp() };
        let got = vals(y.clone().inner());
        for (i, &t) in xs.iter().enumerate() {
            assert!((got[i] as f64 - elu_ref(t)).abs() < 1e-6, "elu({t})");
            assert!((got[i + 5] as f64 - elu_ref(-t)).abs() < 1e-6, "elu(-{t})");
        }
        // d/dx sum(w1 * elu(x) + w2 * elu(-x)) = w1 elu'(x) - w2 elu'(-x)
        let (w1, w2) = (1.0, 3.0);
        let w = Tensor::<1>::from_floats(
            [w1; 5]
                .into_iter()
                .chain([w2; 5])
                .collect::<Vec<f32>>()
                .as_slice(),
            &d,
        )
        .reshape([1, 10, 1, 1]);
        let grads = (y * w).sum().backward();
        let g = vals(x.grad(&grads).unwrap());
        for (i, &t) in xs.iter().enumerate() {
            let want = w1 as f64 * grad_ref(t) - w2 as f64 * grad_ref(-t);
            assert!(
                (g[i] as f64 - want).abs() < 1e-6,
                "gradient at {t}: {} vs {want}",
                g[i]
            );
        }
    }

    #[test]
    fn log_sum_exp_is_stable() {
        let d = crate::backend::cpu();
        let t = Tensor::<2>::from_floats([[1000.0, 1000.0], [-1.0, 2.0]], &d);
        let l = vals(log_sum_exp(t, 1));
        assert!((l[0] as f64 - (1000.0 + 2f64.ln())).abs() < 1e-3);
        assert!((l[1] as f64 - ((-1f64).exp() + 2f64.exp()).ln()).abs() < 1e-6);
    }

    #[test]
    fn shifts_and_padding() {
        let d = crate::backend::cpu();
        let x = Tensor::<4>::from_floats([[[[1.0, 2.0], [3.0, 4.0]]]], &d);
        assert_eq!(vals(down_shift(x.clone())), vec![0.0, 0.0, 1.0, 2.0]);
        assert_eq!(vals(right_shift(x.clone())), vec![0.0, 1.0, 0.0, 3.0]);
        let p = pad_zeros(x, 1, 0, 1, 0);
        assert_eq!(p.dims(), [1, 1, 3, 3]);
        assert_eq!(vals(p), vec![0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 3.0, 4.0]);
        let c = concat_elu(Tensor::<4>::from_floats([[[[1.0]]]], &d));
        let v = vals(c);
        assert!((v[0] - 1.0).abs() < 1e-7 && (v[1] as f64 - ((-1f64).exp() - 1.0)).abs() < 1e-6);
    }
}
