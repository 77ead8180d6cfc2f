//! The information bottleneck layers on the PixelCNN++ output `v` (SPEC section 3).
//!
//! - `none`: `b(v) = v`.
//! - `gd(p)`, Gaussian dropout: `y = v * eps`, `eps ~ N(1, sigma^2)` elementwise with
//!   `sigma = sqrt(p / (1 - p))`; no parameters and no loss term. Evaluation: `y = v`.
//! - `vb(beta)`, variational bottleneck: `v = [mu | rho]`, `s = softplus(rho)`,
//!   `y = mu + s * n`; the loss adds `beta * sum KL(N(mu, s^2) || N(0, 1))`.
//!   Evaluation: `y = mu`. The KL ("rate") is reported in both modes.
//! - `aux[:w]`: no layer (`b(v) = v`); the hybrid adds an auxiliary decoder whose
//!   negative log-likelihood enters the loss with weight `w` (Lucas & Verbeek 2018).

use std::fmt;
use std::str::FromStr;

use tch::Tensor;

use crate::error::Error;
use crate::model::nn::Mode;
use crate::model::ops::standard_normal_like;

/// Which bottleneck sits on the autoregressive path, and its strength.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BottleneckSpec {
    None,
    /// Gaussian dropout with rate `0 <= rate < 1`.
    Gd {
        rate: f64,
    },
    /// Variational bottleneck with KL weight `beta >= 0`.
    Vb {
        beta: f64,
    },
    /// No bottleneck, plus an auxiliary decoder weighted by `weight >= 0`.
    Aux {
        weight: f64,
    },
}

impl BottleneckSpec {
    /// `none`, `gd`, `vb` or `aux`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gd { .. } => "gd",
            Self::Vb { .. } => "vb",
            Self::Aux { .. } => "aux",
        }
    }

    /// The strength: the rate, beta, or aux weight (0 for `none`).
    pub fn value(&self) -> f64 {
        match *self {
            Self::None => 0.0,
            Self::Gd { rate } => rate,
            Self::Vb { beta } => beta,
            Self::Aux { weight } => weight,
        }
    }

    /// Channels the PixelCNN++ must output for a bottleneck of `v_dim` dimensions
    /// (`vb` needs a mean and a scale for each).
    pub fn pixelcnn_channels(&self, v_dim: usize) -> usize {
        match self {
            Self::Vb { .. } => 2 * v_dim,
            _ => v_dim,
        }
    }

    /// The Gaussian dropout noise level `sigma = sqrt(p / (1 - p))`, if this is GD.
    pub fn gd_sigma(&self) -> Option<f64> {
        match *self {
            Self::Gd { rate } => Some(crate::model::info::gd_sigma(rate)),
            _ => None,
        }
    }
}

/// How a kind of bottleneck is drawn on the trade-off figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlotStyle {
    /// The legend's entry.
    pub legend: &'static str,
    /// RGB (colour-blind-safe palette).
    pub color: (u8, u8, u8),
    /// Runs of this kind form a curve ordered by strength; otherwise single points.
    pub curve: bool,
}

impl BottleneckSpec {
    /// Rebuilds a spec from a `results.csv` row's `bottleneck` and `strength` columns.
    pub fn from_kind_value(kind: &str, value: f64) -> Result<Self, Error> {
        match kind {
            "none" => Ok(Self::None),
            _ => format!("{kind}:{value}").parse(),
        }
    }

    /// The name of a sweep member's run directory: `gd-0.15`, `vb-0.02`, `none`, `aux`
    /// (weight 1) or `aux-0.5`.
    pub fn run_name(&self) -> String {
        match *self {
            Self::None => "none".into(),
            Self::Aux { weight: 1.0 } => "aux".into(),
            _ => format!("{}-{}", self.kind(), self.value()),
        }
    }

    /// The strength beside a point of the figure: `p=0.15`, `beta=0.02`, `none`, `aux`,
    /// `aux (0.5)`.
    pub fn strength_label(&self) -> String {
        match *self {
            Self::None => "none".into(),
            Self::Gd { rate } => format!("p={rate}"),
            Self::Vb { beta } => format!("beta={beta}"),
            Self::Aux { weight: 1.0 } => "aux".into(),
            Self::Aux { weight } => format!("aux ({weight})"),
        }
    }

    /// A caption for samples of this run: `GD p = 0.15`, `VB beta = 0.02`, ...
    pub fn caption(&self) -> String {
        match *self {
            Self::None => "no bottleneck".into(),
            Self::Gd { rate } => format!("GD p = {rate}"),
            Self::Vb { beta } => format!("VB beta = {beta}"),
            Self::Aux { weight } => format!("aux decoder, weight {weight}"),
        }
    }

    /// How runs of this kind appear on the trade-off figure: GD and VB as curves, the
    /// baselines as points.
    pub fn plot_style(&self) -> PlotStyle {
        const BASELINE: PlotStyle = PlotStyle {
            legend: "baselines (none: no bottleneck; aux: auxiliary decoder)",
            color: (60, 60, 60),
            curve: false,
        };
        match self {
            Self::Gd { .. } => PlotStyle {
                legend: "Gaussian dropout (GD)",
                color: (0, 114, 178),
                curve: true,
            },
            Self::Vb { .. } => PlotStyle {
                legend: "variational bottleneck (VB)",
                color: (213, 94, 0),
                curve: true,
            },
            Self::None | Self::Aux { .. } => BASELINE,
        }
    }

    /// Whether `ibvae sweep --baselines` takes it (a bottleneck without a strength to
    /// sweep).
    pub fn is_baseline(&self) -> bool {
        !self.plot_style().curve
    }

    /// Whether the layer has a rate worth reporting (the VB layer's KL).
    pub fn has_rate(&self) -> bool {
        matches!(self, Self::Vb { .. })
    }

    /// Whether the model has the auxiliary decoder.
    pub fn has_aux_decoder(&self) -> bool {
        matches!(self, Self::Aux { .. })
    }
}

impl fmt::Display for BottleneckSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => write!(f, "none"),
            _ => write!(f, "{}:{}", self.kind(), self.value()),
        }
    }
}

impl FromStr for BottleneckSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (kind, value) = match s.trim().split_once(':') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (s.trim().to_ascii_lowercase(), None),
        };
        let number = |what: &str| -> Result<f64, Error> {
            let v = value.ok_or_else(|| {
                Error::Config(format!(
                    "bottleneck `{s}` needs a {what}, for example `{kind}:0.15`"
                ))
            })?;
            let x: f64 = v.parse().map_err(|_| {
                Error::Config(format!("bottleneck `{s}`: `{v}` is not a number ({what})"))
            })?;
            if !x.is_finite() {
                return Err(Error::Config(format!(
                    "bottleneck `{s}`: the {what} must be finite"
                )));
            }
            Ok(x)
        };
        match kind.as_str() {
            "none" if value.is_none() => Ok(Self::None),
            "gd" => {
                let rate = number("rate")?;
                if !(0.0..1.0).contains(&rate) {
                    return Err(Error::Config(format!(
                        "bottleneck `{s}`: the Gaussian dropout rate must be in [0, 1) \
                         (sigma = sqrt(p / (1 - p)) is infinite at 1), got {rate}"
                    )));
                }
                Ok(Self::Gd { rate })
            }
            "vb" => {
                let beta = number("weight beta")?;
                if beta < 0.0 {
                    return Err(Error::Config(format!(
                        "bottleneck `{s}`: beta must be at least 0, got {beta}"
                    )));
                }
                Ok(Self::Vb { beta })
            }
            "aux" => {
                let weight = if value.is_some() {
                    number("weight")?
                } else {
                    1.0
                };
                if weight < 0.0 {
                    return Err(Error::Config(format!(
                        "bottleneck `{s}`: the auxiliary weight must be at least 0, got {weight}"
                    )));
                }
                Ok(Self::Aux { weight })
            }
            _ => Err(Error::Config(format!(
                "unknown bottleneck `{s}`: use none, gd:<rate in [0,1)>, vb:<beta >= 0> or \
                 aux[:<weight>]"
            ))),
        }
    }
}

impl serde::Serialize for BottleneckSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for BottleneckSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The bottleneck's output: `b(v)` and the per-image rate in nats (`vb` only; zeros
/// otherwise).
#[derive(Debug)]
pub struct BottleneckOutput {
    /// `[B, v_dim, H, W]`
    pub y: Tensor,
    /// `[B]`, nats
    pub rate: Tensor,
}

/// Applies the bottleneck to `v` (float32). Noise is added only in training mode,
/// drawn from LibTorch's generator.
///
/// # Shapes
/// - `v`: `[B, k * v_dim, H, W]` with `k = 2` for `vb` (`[mu | rho]`), else 1
/// - returns `y`: `[B, v_dim, H, W]`, `rate`: `[B]`
pub fn apply(spec: &BottleneckSpec, v: &Tensor, mode: Mode) -> BottleneckOutput {
    let train = mode.is_train();
    let noise = match *spec {
        BottleneckSpec::Gd { rate } if train && rate > 0.0 => Some(standard_normal_like(v)),
        BottleneckSpec::Vb { .. } if train => Some(standard_normal_like(&v.chunk(2, 1)[0])),
        _ => None,
    };
    apply_with_noise(spec, v, noise.as_ref())
}

/// [`apply`] with the `N(0, 1)` draw given: `noise` has the shape of `y`, and `None`
/// means evaluation (no noise).
pub fn apply_with_noise(
    spec: &BottleneckSpec,
    v: &Tensor,
    noise: Option<&Tensor>,
) -> BottleneckOutput {
    let batch = v.size()[0];
    let zero_rate = || Tensor::zeros([batch], (v.kind(), v.device()));
    match (*spec, noise) {
        (BottleneckSpec::Gd { rate }, Some(n)) => {
            let sigma = crate::model::info::gd_sigma(rate);
            // eps = 1 + sigma n ~ N(1, sigma^2), elementwise
            let eps = n * sigma + 1.0;
            BottleneckOutput {
                y: v * eps,
                rate: zero_rate(),
            }
        }
        (BottleneckSpec::Vb { .. }, noise) => {
            let halves = v.chunk(2, 1);
            let (mu, rho) = (&halves[0], &halves[1]);
            // LibTorch's softplus is the identity above 20, which in float32 is the exact
            // value (log1p(e^-20) is below half an ulp of 20).
            let s = rho.softplus(); // [B, v_dim, H, W]
            let rate = crate::model::ops::per_image_sum(&vb_kl(mu, &s)); // [B]
            let y = match noise {
                Some(n) => mu + &s * n,
                None => mu.shallow_clone(),
            };
            BottleneckOutput { y, rate }
        }
        _ => BottleneckOutput {
            y: v.shallow_clone(),
            rate: zero_rate(),
        },
    }
}

/// `KL(N(mu, s^2) || N(0, 1)) = 0.5 (mu^2 + s^2 - 1) - log s`, elementwise.
pub fn vb_kl(mu: &Tensor, s: &Tensor) -> Tensor {
    // s = softplus(rho) underflows to 0 for rho below about -104 in float32; the floor
    // keeps log finite there (the KL is then huge, as it should be, not infinite).
    let log_s = s.clamp_min(1e-30).log();
    (mu.square() + s.square() - 1.0) * 0.5 - log_s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::host_f32;
    use tch::{Device, Kind};

    #[test]
    fn parses_and_prints_every_kind() {
        for (s, want) in [
            ("none", BottleneckSpec::None),
            ("gd:0.15", BottleneckSpec::Gd { rate: 0.15 }),
            ("GD:0", BottleneckSpec::Gd { rate: 0.0 }),
            ("vb:0.02", BottleneckSpec::Vb { beta: 0.02 }),
            ("aux", BottleneckSpec::Aux { weight: 1.0 }),
            ("aux:0.5", BottleneckSpec::Aux { weight: 0.5 }),
        ] {
            let got: BottleneckSpec = s.parse().unwrap();
            assert_eq!(got, want, "{s}");
            assert_eq!(got.to_string().parse::<BottleneckSpec>().unwrap(), want);
        }
    }

    #[test]
    fn names_labels_and_styles() {
        let spec = |s: &str| s.parse::<BottleneckSpec>().unwrap();
        assert_eq!(spec("gd:0.15").run_name(), "gd-0.15");
        assert_eq!(spec("aux").run_name(), "aux");
        assert_eq!(spec("aux:0.5").run_name(), "aux-0.5");
        assert_eq!(spec("none").run_name(), "none");
        assert_eq!(spec("vb:0.02").strength_label(), "beta=0.02");
        assert!(spec("gd:0.1").plot_style().curve && !spec("aux").plot_style().curve);
        assert!(spec("none").is_baseline() && !spec("vb:1").is_baseline());
        for s in ["none", "gd:0.15", "vb:0.02", "aux", "aux:0.5"] {
            let b = spec(s);
            assert_eq!(
                BottleneckSpec::from_kind_value(b.kind(), b.value()).unwrap(),
                b
            );
        }
    }

    #[test]
    fn bad_strings_are_clear_errors() {
        for (s, needle) in [
            ("gd:1", "[0, 1)"),
            ("gd:-0.1", "[0, 1)"),
            ("gd:1.5", "[0, 1)"),
            ("gd", "needs a rate"),
            ("gd:abc", "not a number"),
            ("vb:-0.1", "at least 0"),
            ("vb:nan", "finite"),
            ("aux:-1", "at least 0"),
            ("dropout:0.1", "unknown bottleneck"),
        ] {
            let err = s.parse::<BottleneckSpec>().unwrap_err().to_string();
            assert!(err.contains(needle), "{s}: {err}");
        }
    }

    const F32: (Kind, Device) = (Kind::Float, Device::Cpu);

    /// `N(0, 1)` draws of `shape` from the test's own seeded generator.
    fn normal(shape: [i64; 4], seed: u64) -> Tensor {
        crate::engine::random::host_normal(shape, seed, Device::Cpu)
    }

    #[test]
    fn gd_noise_has_mean_one_and_variance_p_over_one_minus_p() {
        let rate = 0.3;
        let ones = Tensor::ones([4, 10, 50, 50], F32);
        let spec = BottleneckSpec::Gd { rate };
        let noise = normal([4, 10, 50, 50], 1);
        let eps = host_f32(&apply_with_noise(&spec, &ones, Some(&noise)).y);
        let n = eps.len() as f64;
        let mean = eps.iter().map(|&e| e as f64).sum::<f64>() / n;
        let var = eps.iter().map(|&e| (e as f64 - mean).powi(2)).sum::<f64>() / n;
        let want = rate / (1.0 - rate);
        // 100,000 draws: the standard error of the mean is sqrt(0.43 / 1e5) = 0.002,
        // and of the variance about 0.002 (5 standard errors below each bound).
        assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
        assert!((var - want).abs() < 0.02 * want, "var {var} vs {want}");
    }

    #[test]
    fn gd_zero_and_evaluation_are_the_identity() {
        let v = normal([2, 10, 4, 4], 3);
        let want = host_f32(&v);
        let gd = |rate| BottleneckSpec::Gd { rate };
        assert_eq!(host_f32(&apply(&gd(0.0), &v, Mode::Train).y), want);
        assert_eq!(host_f32(&apply(&gd(0.5), &v, Mode::Eval).y), want);
        assert_eq!(
            host_f32(&apply(&BottleneckSpec::None, &v, Mode::Train).y),
            want
        );
    }

    #[test]
    fn vb_rate_matches_the_closed_form_in_float64() {
        // One image, v_dim = 2, one pixel: mu = (0.5, -1.2), rho = (0.3, -2.0).
        let mu = [0.5f64, -1.2];
        let rho = [0.3f64, -2.0];
        let v = Tensor::from_slice(&[mu[0], mu[1], rho[0], rho[1]])
            .to_kind(Kind::Float)
            .view([1, 4, 1, 1]);
        let out = apply(&BottleneckSpec::Vb { beta: 0.1 }, &v, Mode::Eval);
        let want: f64 = (0..2)
            .map(|i| {
                let s = (1.0 + rho[i].exp()).ln();
                0.5 * (mu[i] * mu[i] + s * s - 1.0) - s.ln()
            })
            .sum();
        let got = host_f32(&out.rate);
        assert!((got[0] as f64 - want).abs() < 1e-5, "{} vs {want}", got[0]);
        // Evaluation returns the mean.
        assert_eq!(host_f32(&out.y), vec![0.5, -1.2]);
    }

    #[test]
    fn vb_training_noise_has_the_softplus_scale() {
        // mu = 2, rho = 0 -> s = ln 2 for every element.
        let mu = Tensor::ones([2, 5, 100, 100], F32) * 2.0;
        let rho = Tensor::zeros([2, 5, 100, 100], F32);
        let v = Tensor::cat(&[mu, rho], 1);
        let noise = normal([2, 5, 100, 100], 2);
        let y = host_f32(&apply_with_noise(&BottleneckSpec::Vb { beta: 1.0 }, &v, Some(&noise)).y);
        let n = y.len() as f64;
        let mean = y.iter().map(|&e| e as f64).sum::<f64>() / n;
        let sd = (y.iter().map(|&e| (e as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!((mean - 2.0).abs() < 0.01, "{mean}");
        assert!((sd - 2f64.ln()).abs() < 0.01, "{sd}");
    }
}
