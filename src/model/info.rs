//! Theorem 1 of Rey & Mnih (2021): an upper bound on the mutual information through a
//! Gaussian dropout layer, and the exact mutual information it bounds (SPEC section 6).
//!
//! For `Y = X * eps`, `eps ~ N(1, sigma^2)`, and input `X` with mean `Xbar` and variance
//! `V`:
//!
//! ```text
//! I(X; Y) <= 0.5 * E_X[ log( (V + Xbar^2 + V / sigma^2) / X^2 ) ]   nats
//! ```
//!
//! It follows from `h(Y) <= 0.5 log(2 pi e Var(Y))` with `Var(Y) = V + sigma^2 E[X^2]`
//! and `h(Y | X) = E[0.5 log(2 pi e sigma^2 X^2)]`. Rescaling `X` by `s` multiplies the
//! numerator and `X^2` by `s^2`, so the bound does not move. The additive channel
//! `Y = X + n`, `n ~ N(0, sigma_n^2)`, has capacity bound `0.5 log(1 + V / sigma_n^2)`,
//! which grows with the scale of `X`.

use std::f64::consts::PI;

/// The noise standard deviation of Gaussian dropout with rate `p`: `sqrt(p / (1 - p))`.
pub fn gd_sigma(rate: f64) -> f64 {
    (rate / (1.0 - rate)).sqrt()
}

/// The relative resolution of float32 (its unit roundoff, 2^-24): a float32 result of
/// magnitude `r` cannot tell values within about `2^-24 r` of zero from zero.
pub const F32_RESOLUTION: f64 = 1.0 / 16_777_216.0;

/// Streaming sums for the bound of one dimension: `E[X]`, `E[X^2]` and `E[log X^2]`,
/// the last over the non-zero values, with the exact zeros counted apart.
/// Feeding the test set's values one batch at a time gives the same bound as one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BoundAccumulator {
    pub count: u64,
    pub sum: f64,
    pub sum_sq: f64,
    pub sum_log_sq: f64,
    /// Values that were exactly zero.
    pub zeros: u64,
}

impl BoundAccumulator {
    pub fn push(&mut self, x: f64) {
        self.count += 1;
        self.sum += x;
        self.sum_sq += x * x;
        if x == 0.0 {
            self.zeros += 1;
        } else {
            self.sum_log_sq += (x * x).ln();
        }
    }

    pub fn extend(&mut self, xs: impl IntoIterator<Item = f64>) {
        for x in xs {
            self.push(x);
        }
    }

    pub fn merge(&mut self, other: &BoundAccumulator) {
        self.count += other.count;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
        self.sum_log_sq += other.sum_log_sq;
        self.zeros += other.zeros;
    }

    /// Mean and (population) variance of the values seen.
    pub fn mean_var(&self) -> (f64, f64) {
        let n = self.count as f64;
        let mean = self.sum / n;
        // max(0): the difference of two sums can round below zero for constant inputs.
        let var = (self.sum_sq / n - mean * mean).max(0.0);
        (mean, var)
    }

    /// Theorem 1's bound in nats for noise level `sigma` (`+inf` when `sigma = 0` and
    /// `X` varies; 0 when `X` is constant, which carries no information).
    ///
    /// An exact zero would make `log X^2` minus infinity and the bound infinite. The
    /// values come from float32 arithmetic, where a zero is the rounding of a value
    /// below the resolution at the dimension's scale (with ten million values a
    /// dimension, a few land there by chance). Each zero counts as `|X| = 2^-24 rms(X)`
    /// instead, the smallest magnitude float32 resolves at that scale; `zeros` says how
    /// many there were.
    pub fn gd_bound(&self, sigma: f64) -> f64 {
        let n = self.count as f64;
        let (mean, var) = self.mean_var();
        if var == 0.0 {
            return 0.0;
        }
        let second_moment = var + mean * mean;
        let floor_sq = F32_RESOLUTION * F32_RESOLUTION * second_moment;
        let sum_log_sq = self.sum_log_sq + self.zeros as f64 * floor_sq.ln();
        0.5 * ((second_moment + var / (sigma * sigma)).ln() - sum_log_sq / n)
    }

    /// The additive Gaussian channel's bound `0.5 log(1 + V / sigma_n^2)`, nats.
    pub fn additive_bound(&self, sigma_n: f64) -> f64 {
        let (_, var) = self.mean_var();
        0.5 * (var / (sigma_n * sigma_n)).ln_1p()
    }
}

/// Theorem 1's bound, in nats, from samples of `X`.
pub fn gd_bound(samples: &[f64], sigma: f64) -> f64 {
    let mut acc = BoundAccumulator::default();
    acc.extend(samples.iter().copied());
    acc.gd_bound(sigma)
}

/// The additive channel's bound with noise standard deviation `sigma_n`, nats.
pub fn additive_bound(samples: &[f64], sigma_n: f64) -> f64 {
    let mut acc = BoundAccumulator::default();
    acc.extend(samples.iter().copied());
    acc.additive_bound(sigma_n)
}

/// The exact `I(X; Y)` in nats for `X` uniform on `values` (non-zero, repeats count as
/// weight) and `Y = X * eps`, `eps ~ N(1, sigma^2)`.
///
/// `I = (1/K) sum_k KL(p(y | x_k) || p(y))`, where `p(y)` is the mixture of
/// `N(x_j, x_j^2 sigma^2)`. Each term is integrated in the standardised variable
/// `t = (y - x_k) / s_k`, which makes the result exactly scale-free, by adaptive Simpson
/// quadrature over `[-12, 12]` with break points where other components sit.
pub fn gd_exact_mi_uniform(values: &[f64], sigma: f64) -> f64 {
    assert!(!values.is_empty(), "X needs at least one value");
    assert!(
        values.iter().all(|&x| x != 0.0 && x.is_finite()),
        "X's values must be finite and non-zero"
    );
    let k = values.len() as f64;
    if sigma == 0.0 {
        // Noise-free: I(X; Y) = H(X), the entropy of the value multiset.
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mut h = 0.0;
        for group in sorted.chunk_by(|a, b| a == b) {
            let p = group.len() as f64 / k;
            h -= p * p.ln();
        }
        return h;
    }
    let scales: Vec<f64> = values.iter().map(|x| x.abs() * sigma).collect();
    let log_norm = 0.5 * (2.0 * PI).ln();
    // log p(y) by log-sum-exp over the components.
    let log_p = |y: f64| -> f64 {
        let terms: Vec<f64> = values
            .iter()
            .zip(&scales)
            .map(|(&x, &s)| {
                let t = (y - x) / s;
                -0.5 * t * t - s.ln() - log_norm
            })
            .collect();
        let m = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        m + terms.iter().map(|t| (t - m).exp()).sum::<f64>().ln() - k.ln()
    };
    const RANGE: f64 = 12.0; // the standard normal mass beyond 12 is below 1e-32
    let mut total = 0.0;
    for (&xk, &sk) in values.iter().zip(&scales) {
        let integrand = |t: f64| {
            let phi = (-0.5 * t * t - log_norm).exp();
            let log_cond = -0.5 * t * t - sk.ln() - log_norm;
            phi * (log_cond - log_p(xk + sk * t))
        };
        // Break points: where each other component's bulk starts, peaks and ends.
        let mut cuts = vec![-RANGE, RANGE];
        for (&xj, &sj) in values.iter().zip(&scales) {
            for w in [-4.0, -1.0, 0.0, 1.0, 4.0] {
                let t = (xj + w * sj - xk) / sk;
                if t > -RANGE && t < RANGE {
                    cuts.push(t);
                }
            }
        }
        cuts.sort_by(f64::total_cmp);
        cuts.dedup();
        for w in cuts.windows(2) {
            total += adaptive_simpson(&integrand, w[0], w[1], 1e-12, 40);
        }
    }
    total / k
}

/// Adaptive Simpson quadrature of `f` on `[a, b]` to absolute tolerance `tol`.
fn adaptive_simpson(f: &impl Fn(f64) -> f64, a: f64, b: f64, tol: f64, depth: u32) -> f64 {
    let (fa, fm, fb) = (f(a), f(0.5 * (a + b)), f(b));
    let whole = (b - a) / 6.0 * (fa + 4.0 * fm + fb);
    simpson_step(f, a, b, fa, fm, fb, whole, tol, depth)
}

#[allow(clippy::too_many_arguments)]
fn simpson_step(
    f: &impl Fn(f64) -> f64,
    a: f64,
    b: f64,
    fa: f64,
    fm: f64,
    fb: f64,
    whole: f64,
    tol: f64,
    depth: u32,
) -> f64 {
    let m = 0.5 * (a + b);
    let (lm, rm) = (0.5 * (a + m), 0.5 * (m + b));
    let (flm, frm) = (f(lm), f(rm));
    let left = (m - a) / 6.0 * (fa + 4.0 * flm + fm);
    let right = (b - m) / 6.0 * (fm + 4.0 * frm + fb);
    let delta = left + right - whole;
    if depth == 0 || delta.abs() <= 15.0 * tol {
        // Richardson extrapolation of the two Simpson estimates.
        return left + right + delta / 15.0;
    }
    simpson_step(f, a, m, fa, flm, fm, left, tol / 2.0, depth - 1)
        + simpson_step(f, m, b, fm, frm, fb, right, tol / 2.0, depth - 1)
}

/// The figures `ibvae info-bound` prints for one input distribution.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BoundReport {
    pub rate: f64,
    pub sigma: f64,
    pub scale: f64,
    pub gd_bound_nats: f64,
    pub gd_exact_nats: f64,
    pub additive_bound_nats: f64,
}

impl BoundReport {
    /// The figures for X uniform on `values` times `scale`. The Gaussian-dropout figures
    /// do not depend on the scale (Theorem 1), so they are computed on the values divided
    /// by the largest magnitude; the additive-noise bound, which does, is computed in
    /// logarithms. Neither overflows at any finite scale.
    pub fn new(rate: f64, values: &[f64], scale: f64) -> Self {
        let largest = values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let unit: Vec<f64> = values.iter().map(|v| v / largest).collect();
        let sigma = gd_sigma(rate);
        let mut acc = BoundAccumulator::default();
        acc.extend(unit.iter().copied());
        // ln(var(X scale) / sigma^2), with var(X scale) = (largest scale)^2 var(unit).
        let (_, var) = acc.mean_var();
        let log_ratio = 2.0 * (largest.ln() + scale.abs().ln()) + var.ln() - 2.0 * sigma.ln();
        Self {
            rate,
            sigma,
            scale,
            gd_bound_nats: acc.gd_bound(sigma),
            gd_exact_nats: gd_exact_mi_uniform(&unit, sigma),
            additive_bound_nats: 0.5 * softplus(log_ratio),
        }
    }
}

/// ln(1 + e^r), without overflow for large r.
fn softplus(r: f64) -> f64 {
    if r > 30.0 {
        r + (-r).exp().ln_1p()
    } else {
        r.exp().ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `I(X; Y)` by brute force in `y`: the trapezoid rule on a fine uniform grid over
    /// the union of the components' +-12 sigma ranges. Independent of the quadrature
    /// above (other variable, other rule, no break points).
    fn brute_force_mi(values: &[f64], sigma: f64) -> f64 {
        let k = values.len() as f64;
        let dens = |y: f64, x: f64| {
            let s = x.abs() * sigma;
            (-(y - x).powi(2) / (2.0 * s * s)).exp() / (s * (2.0 * PI).sqrt())
        };
        let lo = values
            .iter()
            .map(|&x| x - 12.0 * x.abs() * sigma)
            .fold(f64::INFINITY, f64::min);
        let hi = values
            .iter()
            .map(|&x| x + 12.0 * x.abs() * sigma)
            .fold(f64::NEG_INFINITY, f64::max);
        let n = 400_000;
        let dy = (hi - lo) / n as f64;
        let mut h_y = 0.0;
        for i in 0..=n {
            let y = lo + i as f64 * dy;
            let p: f64 = values.iter().map(|&x| dens(y, x)).sum::<f64>() / k;
            let w = if i == 0 || i == n { 0.5 } else { 1.0 };
            if p > 0.0 {
                h_y -= w * p * p.ln() * dy;
            }
        }
        let h_y_given_x: f64 = values
            .iter()
            .map(|&x| 0.5 * (2.0 * PI * std::f64::consts::E * (x * sigma).powi(2)).ln())
            .sum::<f64>()
            / k;
        h_y - h_y_given_x
    }

    #[test]
    fn sigma_of_rate() {
        assert_eq!(gd_sigma(0.0), 0.0);
        assert!((gd_sigma(0.5) - 1.0).abs() < 1e-15);
        assert!((gd_sigma(0.2) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn bound_by_hand_for_two_values() {
        // X uniform on {1, 3}: mean 2, V = 1, E[X^2] = 5. sigma = 1:
        // 0.5 * mean(log(6 / 1), log(6 / 9)) = 0.25 * (ln 6 + ln(2/3)) = 0.25 ln 4.
        let b = gd_bound(&[1.0, 3.0], 1.0);
        assert!((b - 0.25 * 4f64.ln()).abs() < 1e-15, "{b}");
        // Additive: 0.5 ln(1 + 1 / 1) = 0.5 ln 2.
        assert!((additive_bound(&[1.0, 3.0], 1.0) - 0.5 * 2f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn exact_mi_matches_brute_force_integration() {
        for (values, rate) in [
            (vec![1.0, 2.0, 3.0], 0.15),
            (vec![1.0, 2.0, 3.0], 0.5),
            (vec![-1.0, 0.5, 2.0, 4.0], 0.05),
            (vec![0.1, 10.0], 0.3),
        ] {
            let sigma = gd_sigma(rate);
            let exact = gd_exact_mi_uniform(&values, sigma);
            let brute = brute_force_mi(&values, sigma);
            assert!(
                (exact - brute).abs() < 1e-4,
                "{values:?} p={rate}: quadrature {exact} vs brute force {brute}"
            );
        }
    }

    #[test]
    fn exact_mi_limits() {
        // Far-apart values with little noise: Y tells X apart, I = H(X) = ln 3.
        let i = gd_exact_mi_uniform(&[1.0, 10.0, 100.0], 0.01);
        assert!((i - 3f64.ln()).abs() < 1e-6, "{i}");
        // One value: nothing to learn.
        assert!(gd_exact_mi_uniform(&[2.5], 0.3).abs() < 1e-9);
        // No noise: H(X), with a repeated value counting twice.
        let h = gd_exact_mi_uniform(&[1.0, 1.0, 2.0], 0.0);
        let want = -(2.0 / 3.0 * (2.0f64 / 3.0).ln() + 1.0 / 3.0 * (1.0f64 / 3.0).ln());
        assert!((h - want).abs() < 1e-15);
    }

    #[test]
    fn bound_is_at_least_the_exact_value() {
        let sets: [&[f64]; 5] = [
            &[1.0, 2.0, 3.0],
            &[-2.0, -1.0, 1.0, 2.0],
            &[0.5, 0.6, 0.7, 5.0],
            &[1.0, 100.0],
            &[3.0, 3.5],
        ];
        for values in sets {
            for rate in [0.01, 0.05, 0.15, 0.3, 0.6, 0.9] {
                let sigma = gd_sigma(rate);
                let bound = gd_bound(values, sigma);
                let exact = gd_exact_mi_uniform(values, sigma);
                assert!(
                    bound >= exact - 1e-9,
                    "{values:?} p={rate}: bound {bound} < exact {exact}"
                );
            }
        }
    }

    #[test]
    fn rescaling_leaves_gd_figures_unchanged_but_moves_the_additive_one() {
        let values = [1.0, 2.0, 3.0];
        let base = BoundReport::new(0.15, &values, 1.0);
        for scale in [0.01, 7.3, 100.0, -2.0] {
            let r = BoundReport::new(0.15, &values, scale);
            let rel = ((r.gd_bound_nats - base.gd_bound_nats) / base.gd_bound_nats).abs();
            assert!(rel < 1e-9, "bound moved by {rel} at scale {scale}");
            assert!((r.gd_exact_nats - base.gd_exact_nats).abs() < 1e-4);
        }
        let small = BoundReport::new(0.15, &values, 0.01);
        let large = BoundReport::new(0.15, &values, 100.0);
        assert!(large.additive_bound_nats > small.additive_bound_nats + 5.0);
        // At the ends of float64's range, where X^2 over- or underflows.
        for scale in [1e300, -1e300, 1e-300] {
            let r = BoundReport::new(0.15, &values, scale);
            let rel = ((r.gd_bound_nats - base.gd_bound_nats) / base.gd_bound_nats).abs();
            assert!(rel < 1e-9, "bound moved by {rel} at scale {scale}");
            assert!((r.gd_exact_nats - base.gd_exact_nats).abs() < 1e-4);
        }
        // The additive bound by hand, in float64: var{1,2,3} = 2/3, sigma^2 = 0.15/0.85;
        // at scale 1e300 it is 0.5 (ln(2/3) + 600 ln 10 - ln(0.15/0.85)) to float64
        // precision, as ln(1 + e^r) = r + e^-r there.
        let huge = BoundReport::new(0.15, &values, 1e300);
        let by_hand = 0.5 * ((2.0f64 / 3.0).ln() + 600.0 * 10f64.ln() - (0.15f64 / 0.85).ln());
        assert!((huge.additive_bound_nats - by_hand).abs() < 1e-12 * by_hand);
        let tiny = BoundReport::new(0.15, &values, 1e-300);
        assert!(tiny.additive_bound_nats >= 0.0 && tiny.additive_bound_nats < 1e-300);
    }

    /// An exact zero counts as `|X| = 2^-24 rms(X)`: X on {0, 1, 3}, sigma = 1, by hand
    /// in float64. Mean 4/3, E[X^2] = 10/3, V = 14/9.
    #[test]
    fn an_exact_zero_counts_at_the_float32_resolution() {
        let floor_sq = 2f64.powi(-48) * 10.0 / 3.0;
        let mean_log_sq = (floor_sq.ln() + 0.0 + 9f64.ln()) / 3.0;
        let by_hand = 0.5 * ((10.0f64 / 3.0 + 14.0 / 9.0).ln() - mean_log_sq);
        let b = gd_bound(&[0.0, 1.0, 3.0], 1.0);
        assert!(
            b.is_finite() && (b - by_hand).abs() < 1e-12,
            "{b} against {by_hand}"
        );
        // Counted, and merged like the other sums.
        let mut a = BoundAccumulator::default();
        a.extend([0.0, 1.0]);
        let mut c = BoundAccumulator::default();
        c.extend([3.0, 0.0]);
        a.merge(&c);
        assert_eq!(a.zeros, 2);
        assert!((a.gd_bound(1.0) - gd_bound(&[0.0, 1.0, 3.0, 0.0], 1.0)).abs() < 1e-12);
        // Rescaling X does not move the bound, zeros included (the floor scales too).
        let scaled = gd_bound(&[0.0, 1e-20, 3e-20], 1.0);
        assert!((scaled - by_hand).abs() < 1e-9, "{scaled}");
    }

    /// A constant input carries no information, zero or not, at any noise level.
    #[test]
    fn a_constant_input_has_a_zero_bound() {
        assert_eq!(gd_bound(&[0.0; 4], 0.5), 0.0);
        assert_eq!(gd_bound(&[0.0; 4], 0.0), 0.0);
        assert!(gd_bound(&[2.5; 4], 0.5).abs() < 1e-15);
        assert!(gd_bound(&[1.0, 2.0], 0.0).is_infinite());
    }

    #[test]
    fn accumulator_in_pieces_equals_one_pass() {
        let xs: Vec<f64> = (1..200).map(|i| (i as f64 * 0.37).sin() + 1.5).collect();
        let mut a = BoundAccumulator::default();
        a.extend(xs[..50].iter().copied());
        let mut b = BoundAccumulator::default();
        b.extend(xs[50..].iter().copied());
        a.merge(&b);
        assert!((a.gd_bound(0.4) - gd_bound(&xs, 0.4)).abs() < 1e-12);
    }
}
