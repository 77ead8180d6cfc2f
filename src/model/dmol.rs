//! The discretised mixture of logistics of PixelCNN++ (Salimans et al. 2017), exactly as
//! `discretized_mix_logistic_loss` and `sample_from_discretized_mix_logistic` in
//! `openai/pixel-cnn/pixel_cnn_pp/nn.py` (SPEC section 4), in NCHW layout.
//!
//! # Parameter layout
//! `params` is `[B, P, H, W]`; along `P`, with `K = nr_mix` components:
//!
//! ```text
//! RGB (P = 10 K):   [ logit_probs (K) | R: means (K), log_scales (K), coeffs (K)
//!                                     | G: means, log_scales, coeffs
//!                                     | B: means, log_scales, coeffs ]
//! one channel (P = 3 K): [ logit_probs (K) | means (K) | log_scales (K) ]
//! ```
//!
//! The same as `_unpack` in the reference `hybrid_ref.py` (and nn.py's reshape of the last
//! axis to `[C, 3K]`). The three coefficients are stored one per colour block but are
//! used as `m_G = mu_G + c0 x_R` (c0 in the R block) and `m_B = mu_B + c1 x_R + c2 x_G`
//! (c1 in the G block, c2 in the B block).

use rand::Rng;
use tch::Tensor;

use crate::engine::ffi::MixtureConstants;
use crate::error::{Error, Result};

/// Log-scales are clamped below at -7 (`s >= e^-7 ~ 0.0009`, a tenth of a level), as in
/// nn.py: smaller scales add nothing to the likelihood of 256-level data and make the
/// density's gradients explode.
pub const LOG_SCALE_MIN: f32 = -7.0;
/// Half the width of one of the 256 levels on `[-1, 1]`.
const HALF_BIN: f64 = 1.0 / 255.0;
/// Inputs below this are the lowest level (byte 0) and take the left tail `(-inf, -1 + 1/255]`.
const LEFT_EDGE: f64 = -0.999;
/// Inputs above this are the highest level (byte 255) and take the right tail.
const RIGHT_EDGE: f64 = 0.999;
/// Below this bin probability the float32 difference of two sigmoids has lost its digits;
/// the density at the bin centre times the bin width is used instead.
const MIN_DELTA: f64 = 1e-5;
/// Floor inside `log(delta)`: keeps the unselected branch finite so that `where` passes
/// no NaN gradient (the branch is never selected below `MIN_DELTA`).
const DELTA_FLOOR: f64 = 1e-12;
/// `log(127.5)`: the density approximation's bin width is `2 / 255 = 1 / 127.5`.
const LOG_HALF_LEVELS: f64 = 4.848_116_365_621_036;
/// Uniform draws are kept in `[1e-5, 1 - 1e-5]` so that the Gumbel and logistic
/// transforms stay finite (nn.py).
const UNIFORM_EPS: f32 = 1e-5;

/// Numbers per pixel for `channels` (1 or 3) and `nr_mix` components.
pub fn num_params(channels: usize, nr_mix: usize) -> usize {
    nr_mix * if channels == 3 { 10 } else { 3 }
}

/// The number of components that `p` numbers per pixel encode for `channels`.
pub fn nr_mix_of(p: usize, channels: usize) -> Result<usize> {
    let per = match channels {
        3 => 10,
        1 => 3,
        _ => {
            return Err(Error::Config(format!(
                "the mixture of logistics models 1 or 3 channels, not {channels}"
            )));
        }
    };
    if p == 0 || !p.is_multiple_of(per) {
        return Err(Error::Config(format!(
            "{p} parameters per pixel do not fit {channels} channel(s) ({per} per component)"
        )));
    }
    Ok(p / per)
}

/// `log p(x)` of each pixel under the mixture, in nats, computed in the kind of `params`
/// (float32 in training, also under `--precision bf16`): one fused operation of the
/// crate's C++ file (`engine::ffi::mixture_log_prob`), whose forward pass is the tensor
/// operations of the tests' `log_prob_by_operations` (SPEC section 4) and whose gradient
/// is written out by hand.
///
/// # Shapes
/// - `params`: `[B, P, H, W]` (layout in the module docs)
/// - `x`: `[B, C, H, W]` in `[-1, 1]` on the 256 levels, `C` = 1 or 3
/// - returns `[B, H, W]`
pub fn log_prob(params: &Tensor, x: &Tensor) -> Tensor {
    log_prob_with(params, x, false)
}

/// [`log_prob`], its gradient by tensor operations on the CPU too with `tensor_operations`.
fn log_prob_with(params: &Tensor, x: &Tensor, tensor_operations: bool) -> Tensor {
    crate::engine::ffi::mixture_log_prob(params, x, constants(tensor_operations))
        .unwrap_or_else(|e| panic!("mixture of logistics: {e}"))
}

/// The constants of this module, for the fused operation.
fn constants(tensor_operations: bool) -> MixtureConstants {
    MixtureConstants {
        log_scale_min: LOG_SCALE_MIN as f64,
        half_bin: HALF_BIN,
        left_edge: LEFT_EDGE,
        right_edge: RIGHT_EDGE,
        min_delta: MIN_DELTA,
        delta_floor: DELTA_FLOOR,
        log_half_levels: LOG_HALF_LEVELS,
        tensor_operations,
    }
}

/// Clips to `[-1, 1]` and rounds to the nearest of the 256 levels; returns the byte.
fn to_byte(x: f32) -> u8 {
    ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round_ties_even() as u8
}

/// The value in `[-1, 1]` of a byte.
fn to_unit(b: u8) -> f32 {
    b as f32 / 127.5 - 1.0
}

fn uniform(rng: &mut impl Rng) -> f32 {
    UNIFORM_EPS + (1.0 - 2.0 * UNIFORM_EPS) * rng.random::<f32>()
}

/// Draws one pixel from the parameters of one pixel (`P` numbers in the module's
/// layout) and returns its `channels` bytes.
///
/// The component is chosen by Gumbel-max over `logit_probs`; each channel is
/// `mu + s (log u - log(1 - u))`, clipped and rounded to its 256 levels *before* it
/// conditions the next channel's mean, so the sample comes from exactly the discrete
/// distribution that [`log_prob`] scores (nn.py conditions on the unrounded value).
/// `temperature` scales the logistic noise (1 is the model's distribution).
pub fn sample_pixel(
    params: &[f32],
    channels: usize,
    temperature: f32,
    rng: &mut impl Rng,
) -> Vec<u8> {
    let k = nr_mix_of(params.len(), channels).expect("parameter count checked by the caller");
    let logits = &params[..k];
    let component = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i, l - (-uniform(rng).ln()).ln()))
        .fold(
            (0, f32::NEG_INFINITY),
            |best, c| if c.1 > best.1 { c } else { best },
        )
        .0;
    let groups = if channels == 3 { 3 } else { 2 };
    let get = |c: usize, g: usize| params[k + (c * groups + g) * k + component];
    let mut bytes = Vec::with_capacity(channels);
    let mut units = [0f32; 3];
    for c in 0..channels {
        let mean = get(c, 0);
        let log_scale = get(c, 1).max(LOG_SCALE_MIN);
        let u = uniform(rng);
        let mut x = mean + temperature * log_scale.exp() * (u.ln() - (1.0 - u).ln());
        if channels == 3 {
            let coeff = |c: usize| get(c, 2).tanh();
            x += match c {
                1 => coeff(0) * units[0],
                2 => coeff(1) * units[0] + coeff(2) * units[1],
                _ => 0.0,
            };
        }
        let byte = to_byte(x);
        units[c] = to_unit(byte);
        bytes.push(byte);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use tch::{Device, Kind};

    /// The fused operation against [`log_prob_by_operations`] in float64: the values, and
    /// the gradients in every parameter (LibTorch's autograd through the operations
    /// against the hand-written gradient), for RGB and one channel, with pixels in each
    /// of the four branches and raw log-scales under the clamp; the CPU's loop and the
    /// tensor operations of a GPU. The same float64
    /// arithmetic in another order: a few ulps of the largest value, except where
    /// `softplus`'s gradient takes 1 for sigmoid above 20 (a relative 2e-9 at most).
    #[test]
    fn fused_log_prob_and_gradient_equal_the_operations() {
        tch::manual_seed(5);
        for (channels, k) in [(3i64, 3i64), (1, 4)] {
            let per = if channels == 3 { 10 } else { 3 };
            let (b, h, w) = (2, 4, 6);
            let mut params = Tensor::randn([b, per * k, h, w], (Kind::Double, Device::Cpu));
            // Raw log-scales from -9 to -1: clamped ones, and scales so small that pixels
            // far from a mean fall below the bin-mass threshold.
            let groups = if channels == 3 { 3 } else { 2 };
            let ls = params
                .narrow(1, k, per * k - k)
                .view([b, channels, groups, k, h, w]);
            let _ = ls.select(2, 1).uniform_(-9.0, -1.0);
            params = params.detach();
            let levels = Tensor::randint(256, [b, channels, h, w], (Kind::Double, Device::Cpu));
            let x = levels / 127.5 - 1.0;
            let _ = x.select(3, 0).fill_(-1.0); // the lowest level
            let _ = x.select(3, 1).fill_(1.0); // the highest level
            for tensor_operations in [false, true] {
                let p1 = params.detach().set_requires_grad(true);
                let p2 = params.detach().set_requires_grad(true);
                let fused = log_prob_with(&p1, &x, tensor_operations);
                let plain = log_prob_by_operations(&p2, &x);
                let ulps = |t: &Tensor, n: f64| n * f64::EPSILON * t.abs().max().double_value(&[]);
                let diff = (&fused - &plain).abs().max().double_value(&[]);
                assert!(
                    diff <= ulps(&plain, 16.0),
                    "C={channels}: values differ by {diff}"
                );
                let up = Tensor::randn([b, h, w], (Kind::Double, Device::Cpu));
                (&fused * &up).sum(Kind::Double).backward();
                (&plain * &up).sum(Kind::Double).backward();
                let (g1, g2) = (p1.grad(), p2.grad());
                let gdiff = (&g1 - &g2).abs().max().double_value(&[]);
                let tol = 2e-9 * g2.abs().max().double_value(&[]);
                assert!(
                    gdiff <= tol,
                    "C={channels}: gradients differ by {gdiff} (tol {tol})"
                );
            }
            // Every branch was taken: the edges by construction; the bin's mass and the
            // density at the centre among the other pixels.
            let mu = params
                .narrow(1, k, per * k - k)
                .view([b, channels, groups, k, h, w]);
            let inv = mu.select(2, 1).clamp_min(-7.0).neg().exp();
            let cen = x.unsqueeze(2) - mu.select(2, 0);
            let delta = (&inv * (&cen + HALF_BIN)).sigmoid() - (&inv * (&cen - HALF_BIN)).sigmoid();
            let inner = delta.narrow(4, 2, w - 2);
            let in_bin = inner.gt(MIN_DELTA).sum(Kind::Int64).int64_value(&[]);
            assert!(
                in_bin > 0 && in_bin < inner.numel() as i64,
                "{in_bin} in the bin branch"
            );
        }
        let err = crate::engine::ffi::mixture_log_prob(
            &Tensor::zeros([1, 7, 2, 2], (Kind::Float, Device::Cpu)),
            &Tensor::zeros([1, 3, 2, 2], (Kind::Float, Device::Cpu)),
            constants(false),
        );
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("7 parameters per pixel")
        );
    }

    /// [`log_prob`] in tensor operations one by one, LibTorch's autograd taking the
    /// gradient: the yardstick of the fused operation.
    ///
    /// # Shapes
    /// - `params`: `[B, P, H, W]` (layout in the module docs)
    /// - `x`: `[B, C, H, W]` in `[-1, 1]` on the 256 levels, `C` = 1 or 3
    /// - returns `[B, H, W]`
    fn log_prob_by_operations(params: &Tensor, x: &Tensor) -> Tensor {
        let s = params.size();
        let (b, p, h, w) = (s[0], s[1], s[2], s[3]);
        let channels = x.size()[1];
        let k = nr_mix_of(p as usize, channels as usize)
            .expect("parameter count checked by the caller") as i64;
        let x = x.to_kind(params.kind());
        // nn.py's names: logit_probs [B, K, H, W]; means, log_scales, coeffs [B, C, K, H, W].
        // `split` and `unbind` rather than `narrow` and `select`: their gradients are one
        // `cat` or `stack`, where those of `narrow` and `select` fill a zero tensor of the
        // whole input per piece and copy into it.
        let groups = if channels == 3 { 3 } else { 2 };
        let [logit_probs, rest] =
            <[Tensor; 2]>::try_from(params.split_with_sizes([k, p - k], 1)).expect("two pieces");
        let mut pieces = rest
            .reshape([b, channels, groups, k, h, w])
            .unbind(2)
            .into_iter();
        let mut next = || pieces.next().expect("one piece per group");
        let (means, log_scales) = (next(), next().clamp_min(LOG_SCALE_MIN as f64));
        let xk = x.unsqueeze(2); // [B, C, 1, H, W]
        // The means of G and B are shifted by the observed earlier channels.
        let means = if channels == 3 {
            let (c, m, xc) = (next().tanh().unbind(1), means.unbind(1), xk.unbind(1));
            let m_r = &m[0];
            let m_g = &m[1] + &c[0] * &xc[0];
            let m_b = &m[2] + &c[1] * &xc[0] + &c[2] * &xc[1];
            Tensor::stack(&[m_r, &m_g, &m_b], 1) // [B, 3, K, H, W]
        } else {
            means
        };
        let centered = &xk - means;
        let inv_s = log_scales.neg().exp();
        let plus_in = &inv_s * (&centered + HALF_BIN);
        let min_in = &inv_s * (&centered - HALF_BIN);
        let delta = plus_in.sigmoid() - min_in.sigmoid();
        let mid_in = &inv_s * &centered;
        // log CDF(x + 1/255) for the lowest level: log sigmoid(t) = t - softplus(t).
        let log_left = plus_in.log_sigmoid();
        // log(1 - CDF(x - 1/255)) for the highest level: log sigmoid(-t) = -softplus(t).
        let log_right = min_in.softplus().neg();
        let log_delta = delta.clamp_min(DELTA_FLOOR).log();
        // log(density at the bin centre * bin width): the logistic log-density is
        // t - log s - 2 softplus(t). (LibTorch's softplus is exact in float32: see ops.)
        let log_mid = &mid_in - &log_scales - mid_in.softplus() * 2.0 - LOG_HALF_LEVELS;
        let inner = log_delta.where_self(&delta.gt(MIN_DELTA), &log_mid);
        let inner = log_right.where_self(&xk.gt(RIGHT_EDGE), &inner);
        let lp = log_left.where_self(&xk.lt(LEFT_EDGE), &inner); // [B, C, K, H, W]
        let log_pi = logit_probs.log_softmax(1, None::<Kind>); // [B, K, H, W]
        let joint = log_pi + lp.sum_dim_intlist([1i64].as_slice(), false, None::<Kind>); // [B, K, H, W]
        joint.logsumexp([1], false) // [B, H, W]
    }

    /// The log-probability of one sub-pixel under one logistic component, in float64,
    /// written from SPEC section 4 without tensors. Returns the value and its branch.
    fn sub_pixel_f64(x: f64, m: f64, log_s_raw: f64) -> (f64, &'static str) {
        let sp = |t: f64| {
            if t > 0.0 {
                t + (-t).exp().ln_1p()
            } else {
                t.exp().ln_1p()
            }
        };
        let sig = |t: f64| 1.0 / (1.0 + (-t).exp());
        let log_s = log_s_raw.max(-7.0);
        let inv = (-log_s).exp();
        let d = x - m;
        let plus = inv * (d + 1.0 / 255.0);
        let min = inv * (d - 1.0 / 255.0);
        let delta = sig(plus) - sig(min);
        let mid = inv * d;
        if x < -0.999 {
            (plus - sp(plus), "left")
        } else if x > 0.999 {
            (-sp(min), "right")
        } else if delta > 1e-5 {
            (delta.max(1e-12).ln(), "delta")
        } else {
            (mid - log_s - 2.0 * sp(mid) - 127.5f64.ln(), "mid")
        }
    }

    fn log_prob_f32(params: Vec<f32>, x: Vec<f32>, channels: usize) -> Vec<f32> {
        let p = params.len() as i64;
        let n = x.len() / channels;
        // One pixel's parameters, repeated for `n` pixels along W.
        let params: Vec<f32> = params
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, n))
            .collect();
        let params = Tensor::from_slice(&params).view([1, p, 1, n as i64]);
        let x = Tensor::from_slice(&x).view([1, channels as i64, 1, n as i64]);
        crate::model::ops::host_f32(&log_prob(&params, &x))
    }

    #[test]
    fn each_branch_matches_float64_one_channel() {
        // One component (logit irrelevant): mean, raw log-scale, x, expected branch.
        let cases = [
            (0.3, -1.0, -1.0f64, "left"),
            (-0.2, 0.5, 1.0, "right"),
            (0.1, -2.0, 0.2 - 1.0 / 127.5, "delta"),
            (0.0, -9.0, 0.5, "mid"), // raw -9 is clamped to -7
            (0.0, -7.0, 0.1, "mid"),
        ];
        for (m, ls, x, branch) in cases {
            let x = ((x + 1.0) * 127.5).round() / 127.5 - 1.0;
            let (want, got_branch) = sub_pixel_f64(x, m, ls);
            assert_eq!(got_branch, branch, "case m={m} ls={ls} x={x}");
            let got = log_prob_f32(vec![0.7, m as f32, ls as f32], vec![x as f32], 1)[0];
            let tol = 1e-5 * want.abs().max(1.0);
            assert!((got as f64 - want).abs() < tol, "{branch}: {got} vs {want}");
        }
    }

    #[test]
    fn rgb_mixture_matches_float64() {
        // Two components, coefficients non-zero: the full formula with channel
        // conditioning, log_softmax over the logits and log-sum-exp over components.
        let k = 2;
        let logits = [0.3f64, -0.8];
        // [channel][component]: means, raw log-scales, raw coeffs.
        let means = [[0.1, -0.4], [0.2, 0.5], [-0.3, 0.0]];
        let log_s = [[-2.0, -1.5], [-3.0, -2.5], [-1.0, -8.0]];
        let coeffs = [[0.4, -0.9], [1.2, 0.3], [-0.5, 2.0]];
        let mut params = logits.to_vec();
        for c in 0..3 {
            params.extend_from_slice(&means[c]);
            params.extend_from_slice(&log_s[c]);
            params.extend_from_slice(&coeffs[c]);
        }
        let xs = [[12u8, 100, 255], [0, 128, 64], [200, 201, 202]];
        for bytes in xs {
            let x: Vec<f64> = bytes.iter().map(|&b| b as f64 / 127.5 - 1.0).collect();
            let lse_logits = logits.iter().map(|l| l.exp()).sum::<f64>().ln();
            let mut terms = Vec::new();
            for j in 0..k {
                let t = [
                    coeffs[0][j].tanh(),
                    coeffs[1][j].tanh(),
                    coeffs[2][j].tanh(),
                ];
                let m = [
                    means[0][j],
                    means[1][j] + t[0] * x[0],
                    means[2][j] + t[1] * x[0] + t[2] * x[1],
                ];
                let lp: f64 = (0..3)
                    .map(|c| sub_pixel_f64(x[c], m[c], log_s[c][j]).0)
                    .sum();
                terms.push(logits[j] - lse_logits + lp);
            }
            let mx = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let want = mx + terms.iter().map(|t| (t - mx).exp()).sum::<f64>().ln();
            let p32: Vec<f32> = params.iter().map(|&v| v as f32).collect();
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let got = log_prob_f32(p32, x32, 3)[0] as f64;
            assert!(
                (got - want).abs() < 1e-4 * want.abs().max(1.0),
                "{bytes:?}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn one_channel_probabilities_sum_to_one() {
        let levels: Vec<f32> = (0..=255u8).map(to_unit).collect();
        for params in [
            vec![0.2, -1.0, 0.5, 0.1, -0.3, 0.9, -3.0, -2.0, -9.0],
            vec![0.0, 0.0, 0.0, 1.3, 1.3, 1.3, 0.0, 0.5, 1.0],
            vec![
                1.0,
                2.0,
                0.0,
                -1.0 + 0.5 / 127.5,
                0.0,
                0.999,
                -7.0,
                -7.0,
                -7.0,
            ],
        ] {
            let lp = log_prob_f32(params.clone(), levels.clone(), 1);
            let total: f64 = lp.iter().map(|&l| (l as f64).exp()).sum();
            assert!((total - 1.0).abs() < 1e-4, "{params:?}: sum {total}");
        }
    }

    #[test]
    fn samples_follow_the_likelihood() {
        // One channel, three components: chi-square of 200,000 draws against the exact
        // probabilities of the 256 levels.
        let params = vec![0.5, -0.2, 0.1, -0.6, 0.05, 0.7, -3.5, -4.0, -2.5];
        let probs: Vec<f64> = log_prob_f32(params.clone(), (0..=255u8).map(to_unit).collect(), 1)
            .iter()
            .map(|&l| (l as f64).exp())
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let n = 200_000;
        let mut counts = [0u64; 256];
        for _ in 0..n {
            counts[sample_pixel(&params, 1, 1.0, &mut rng)[0] as usize] += 1;
        }
        let (mut chi2, mut cells, mut pooled_obs, mut pooled_exp) = (0.0, 0usize, 0.0, 0.0);
        for (c, p) in counts.iter().zip(&probs) {
            let e = p * n as f64;
            if e >= 5.0 {
                chi2 += (*c as f64 - e).powi(2) / e;
                cells += 1;
            } else {
                pooled_obs += *c as f64;
                pooled_exp += e;
            }
        }
        if pooled_exp > 0.0 {
            chi2 += (pooled_obs - pooled_exp).powi(2) / pooled_exp;
            cells += 1;
        }
        let df = (cells - 1) as f64;
        // About the 1e-4 upper quantile of chi-square with df degrees of freedom.
        let limit = df + 4.0 * (2.0 * df).sqrt() + 10.0;
        assert!(
            chi2 < limit,
            "chi2 {chi2} over {cells} cells (limit {limit})"
        );
        assert!(cells > 20, "the test distribution should cover many levels");
    }

    #[test]
    fn rgb_samples_follow_the_likelihood_of_red_and_green_given_red() {
        // One component: R ~ logistic(0.2, e^-2.5); G's mean moves with R (c0 = tanh 1.5).
        let params = vec![0.0, 0.2, -2.5, 1.5, -0.1, -2.0, 0.0, 0.3, -3.0, 0.0];
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let n = 50_000;
        let draws: Vec<Vec<u8>> = (0..n)
            .map(|_| sample_pixel(&params, 3, 1.0, &mut rng))
            .collect();
        // E[G | R] = -0.1 + tanh(1.5) x_R (up to rounding): regress G on R.
        let pts: Vec<(f64, f64)> = draws
            .iter()
            .map(|d| (to_unit(d[0]) as f64, to_unit(d[1]) as f64))
            .collect();
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / n as f64;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / n as f64;
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let slope = sxy / sxx;
        assert!((slope - 1.5f64.tanh()).abs() < 0.03, "slope {slope}");
        assert!((mx - 0.2).abs() < 0.01, "mean of R {mx}");
    }

    #[test]
    fn gradients_are_finite_at_the_edges_and_tiny_scales() {
        // Three pixels: x = -1 and x = 1 among them, means far away, tiny raw scales.
        let k = 2;
        let mut p = vec![0.0f32; 10 * k];
        for c in 0..3 {
            p[k + c * 3 * k] = 0.9; // means near the top
            p[k + c * 3 * k + k] = -30.0; // raw log-scale far below the clamp
            p[k + c * 3 * k + k + 1] = -7.0;
        }
        let params: Vec<f32> = p.iter().flat_map(|&v| [v, v, v]).collect();
        let params = Tensor::from_slice(&params)
            .view([1, 10 * k as i64, 1, 3])
            .set_requires_grad(true);
        let x = Tensor::from_slice(&[-1.0f32, 1.0, 0.0, -1.0, 1.0, 0.5, 1.0, -1.0, -0.5])
            .view([1, 3, 1, 3]);
        log_prob(&params, &x).sum(None::<Kind>).neg().backward();
        let g = crate::model::ops::host_f32(&params.grad());
        assert!(g.iter().all(|v| v.is_finite()), "{g:?}");
        assert!(g.iter().any(|v| *v != 0.0));
    }

    #[test]
    fn parameter_counts() {
        assert_eq!(num_params(3, 10), 100);
        assert_eq!(num_params(1, 10), 30);
        assert_eq!(nr_mix_of(100, 3).unwrap(), 10);
        assert!(nr_mix_of(99, 3).is_err());
    }
}
