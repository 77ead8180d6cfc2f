//! The hybrid model (SPEC section 2): VAE encoder and decoder, PixelCNN++ conditioned on
//! the decoder's map `u`, the bottleneck on its output `v`, and the per-pixel mixing
//! network `concat[u, b(v)] -> ELU hidden layer -> mixture of logistics`.
//!
//! Per image, in nats: `recon = -log p(x|z)`, `kl = KL(q(z|x) || N(0, I))`, the VB
//! `vb_rate`, the auxiliary decoder's `aux_nll`; the ELBO is `-(recon + kl)` and the loss
//! adds `beta * vb_rate` (vb) or `weight * aux_nll` (aux) (SPEC section 5).

use burn::prelude::*;
use burn::tensor::Distribution;

use crate::bottleneck::{self, BottleneckSpec};
use crate::config::ModelConfig;
use crate::dmol;
use crate::error::Result;
use crate::nn::{Conv2d, Mode};
use crate::ops::elu;
use crate::pixelcnn::PixelCnnPp;
use crate::vae::{Decoder, Encoder, gaussian_kl};

crate::constant_module!(BottleneckSpec);

/// The per-pixel mixing network: two 1x1 convolutions with an ELU between them.
#[derive(Module, Debug)]
pub struct Mix {
    pub hidden: Conv2d,
    pub out: Conv2d,
}

impl Mix {
    /// # Shapes
    /// `[B, dec_out + v_dim, H, W]` -> `[B, P, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.out.forward(elu(self.hidden.forward(x)))
    }
}

#[derive(Module, Debug)]
pub struct Hybrid {
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub pixelcnn: PixelCnnPp,
    pub mix: Mix,
    /// The auxiliary decoder's head (`aux` baseline only): DMoL parameters from `u` alone.
    pub aux_head: Option<Conv2d>,
    pub bottleneck: BottleneckSpec,
}

/// Per-image terms of one forward pass, nats, each `[B]`.
#[derive(Debug, Clone)]
pub struct Terms {
    pub recon: Tensor<1>,
    pub kl: Tensor<1>,
    pub vb_rate: Tensor<1>,
    pub aux_nll: Tensor<1>,
    /// `recon + kl` (the negative ELBO).
    pub nelbo: Tensor<1>,
    /// What training minimises: `nelbo`, plus `beta * vb_rate` or `weight * aux_nll`.
    pub loss: Tensor<1>,
}

/// Every intermediate result of a forward pass (used to compare with the reference).
#[derive(Debug, Clone)]
pub struct Outputs {
    /// `[B, z, h, w]` each
    pub mean: Tensor<4>,
    pub logvar: Tensor<4>,
    pub z: Tensor<4>,
    /// `[B, dec_out, H, W]`
    pub u: Tensor<4>,
    /// `[B, k v_dim, H, W]`, the PixelCNN++ output before the bottleneck
    pub v: Tensor<4>,
    /// `[B, P, H, W]`
    pub params: Tensor<4>,
    /// `[B, H, W]`, `log p(x_ij | x_<ij, z)`
    pub log_prob: Tensor<3>,
    /// `[B, P, H, W]` and `[B, H, W]` for `aux`
    pub aux_params: Option<Tensor<4>>,
    pub aux_log_prob: Option<Tensor<3>>,
    pub terms: Terms,
}

impl Hybrid {
    /// A freshly initialised model (the reference's initialisation).
    pub fn new(config: &ModelConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let c = config;
        let n_out = dmol::num_params(c.image_channels, c.nr_mix);
        Ok(Self {
            encoder: Encoder::new(
                c.image_channels,
                c.width,
                c.block_width,
                c.n_blocks,
                c.z_channels,
                c.downsamples,
                device,
            ),
            decoder: Decoder::new(
                c.width,
                c.block_width,
                c.n_blocks,
                c.z_channels,
                c.downsamples,
                c.dec_out,
                device,
            ),
            pixelcnn: PixelCnnPp::new(
                c.image_channels,
                c.bottleneck.pixelcnn_channels(c.v_dim),
                c.nr_resnet,
                c.nr_filters,
                c.dec_out,
                c.dropout_p,
                device,
            ),
            mix: Mix {
                hidden: Conv2d::new(c.dec_out + c.v_dim, c.mix_hidden, 1, 1, 0, true, device),
                out: Conv2d::new(c.mix_hidden, n_out, 1, 1, 0, true, device),
            },
            aux_head: matches!(c.bottleneck, BottleneckSpec::Aux { .. })
                .then(|| Conv2d::new(c.dec_out, n_out, 1, 1, 0, true, device)),
            bottleneck: c.bottleneck,
        })
    }

    /// The shape of `z` for `batch` images of side `size`.
    pub fn latent_shape(&self, batch: usize, size: usize) -> [usize; 4] {
        let z = self.decoder.input.weight.dims()[1];
        let s = size >> self.encoder.downs.len();
        [batch, z, s, s]
    }

    /// DMoL parameters for image `x` given the decoder's map `u`, the bottleneck's
    /// per-image rate, and the PixelCNN++ output `v`.
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]`, `u`: `[B, dec_out, H, W]`
    /// - returns `params` `[B, P, H, W]`, `rate` `[B]`, `v` `[B, k v_dim, H, W]`
    pub fn pixel_params(
        &self,
        x: Tensor<4>,
        u: &Tensor<4>,
        mode: Mode,
    ) -> (Tensor<4>, Tensor<1>, Tensor<4>) {
        let v = self.pixelcnn.forward(x, u, mode); // [B, k v_dim, H, W]
        let b = bottleneck::apply(&self.bottleneck, v.clone(), mode.is_train());
        let params = self.mix.forward(Tensor::cat(vec![u.clone(), b.y], 1)); // [B, P, H, W]
        (params, b.rate, v)
    }

    /// One forward pass with every intermediate. `z_noise` fixes the `N(0, I)` draw of
    /// the reparameterised `z` (a fresh one is drawn when `None`).
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]` in `[-1, 1]`
    /// - `z_noise`: `[B, z_channels, h, w]`
    pub fn forward_outputs(&self, x: Tensor<4>, z_noise: Option<Tensor<4>>, mode: Mode) -> Outputs {
        let [batch, _, _, _] = x.dims();
        let (mean, logvar) = self.encoder.forward(x.clone()); // [B, z, h, w] each
        let noise = z_noise.unwrap_or_else(|| {
            Tensor::random(mean.shape(), Distribution::Normal(0.0, 1.0), &mean.device())
        });
        let z = mean.clone() + (logvar.clone() * 0.5).exp() * noise; // one sample
        let kl = gaussian_kl(mean.clone(), logvar.clone()); // [B]
        let u = self.decoder.forward(z.clone()); // [B, dec_out, H, W]
        let (params, vb_rate, v) = self.pixel_params(x.clone(), &u, mode);
        let log_prob = dmol::log_prob(params.clone(), x.clone()); // [B, H, W]
        let recon = per_image_sum(log_prob.clone()).neg();
        let (aux_params, aux_log_prob) = match &self.aux_head {
            Some(head) => {
                let p = head.forward(u.clone());
                let lp = dmol::log_prob(p.clone(), x);
                (Some(p), Some(lp))
            }
            None => (None, None),
        };
        let aux_nll = match &aux_log_prob {
            Some(lp) => per_image_sum(lp.clone()).neg(),
            None => Tensor::zeros([batch], &recon.device()),
        };
        let nelbo = recon.clone() + kl.clone();
        let loss = match self.bottleneck {
            BottleneckSpec::Vb { beta } => nelbo.clone() + vb_rate.clone() * beta,
            BottleneckSpec::Aux { weight } => nelbo.clone() + aux_nll.clone() * weight,
            _ => nelbo.clone(),
        };
        Outputs {
            mean,
            logvar,
            z,
            u,
            v,
            params,
            log_prob,
            aux_params,
            aux_log_prob,
            terms: Terms {
                recon,
                kl,
                vb_rate,
                aux_nll,
                nelbo,
                loss,
            },
        }
    }

    /// The per-image terms of one forward pass (nats).
    pub fn forward(&self, x: Tensor<4>, mode: Mode) -> Terms {
        self.forward_outputs(x, None, mode).terms
    }
}

/// `[B, H, W]` -> `[B]`
fn per_image_sum(t: Tensor<3>) -> Tensor<1> {
    let [b, _, _] = t.dims();
    t.sum_dim(2).sum_dim(1).reshape([b])
}

/// Parameter counts of the model's parts, in the reference's order.
pub fn param_counts(model: &Hybrid) -> Vec<(&'static str, usize)> {
    let mut parts = vec![
        ("encoder", model.encoder.num_params()),
        ("decoder", model.decoder.num_params()),
        ("pixelcnn", model.pixelcnn.num_params()),
        ("mix", model.mix.num_params()),
    ];
    if let Some(head) = &model.aux_head {
        parts.push(("aux_head", head.num_params()));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    fn images(b: usize, c: usize, s: usize, device: &Device) -> Tensor<4> {
        Tensor::<4>::random([b, c, s, s], Distribution::Uniform(0.0, 255.0), device).round() / 127.5
            - 1.0
    }

    #[test]
    fn shapes_for_every_preset() {
        let device = crate::backend::cpu();
        for (name, config) in [
            ("tiny", ModelConfig::tiny()),
            ("small", ModelConfig::small()),
            ("paper", ModelConfig::paper()),
        ] {
            for spec in ["gd:0.1", "vb:0.1", "aux"] {
                let config = config.clone().with_bottleneck(spec.parse().unwrap());
                let model = Hybrid::new(&config, &device).unwrap();
                let out = model.forward_outputs(images(1, 3, 32, &device), None, Mode::Train);
                let k = if spec.starts_with("vb") { 2 } else { 1 };
                assert_eq!(
                    out.mean.dims(),
                    [1, config.z_channels, 4, 4],
                    "{name} {spec}"
                );
                assert_eq!(out.u.dims(), [1, config.dec_out, 32, 32], "{name} {spec}");
                assert_eq!(out.v.dims(), [1, k * config.v_dim, 32, 32], "{name} {spec}");
                assert_eq!(out.params.dims(), [1, 100, 32, 32], "{name} {spec}");
                assert_eq!(out.log_prob.dims(), [1, 32, 32], "{name} {spec}");
                assert_eq!(out.terms.loss.dims(), [1], "{name} {spec}");
                assert!(host(out.terms.loss)[0].is_finite(), "{name} {spec}");
                if name == "paper" {
                    break; // one paper-sized forward is enough
                }
            }
        }
    }

    #[test]
    fn one_channel_28x28_with_two_downsamples() {
        let device = crate::backend::cpu();
        let mut config = ModelConfig::tiny().with_images(1, 28);
        assert!(config.validate().is_err(), "28 is not divisible by 2^3");
        config.downsamples = 2;
        let model = Hybrid::new(&config, &device).unwrap();
        let out = model.forward_outputs(images(2, 1, 28, &device), None, Mode::Eval);
        assert_eq!(out.mean.dims(), [2, 4, 7, 7]);
        assert_eq!(out.params.dims(), [2, 30, 28, 28]);
    }

    #[test]
    fn elbo_identity_and_loss_terms() {
        let device = crate::backend::cpu();
        for spec in ["gd:0.2", "vb:0.3", "aux:0.5", "none"] {
            let config = ModelConfig::tiny().with_bottleneck(spec.parse().unwrap());
            let model = Hybrid::new(&config, &device).unwrap();
            let t = model.forward(images(3, 3, 32, &device), Mode::Eval);
            let (recon, kl, nelbo) = (host(t.recon), host(t.kl), host(t.nelbo));
            let (rate, aux, loss) = (host(t.vb_rate), host(t.aux_nll), host(t.loss));
            for i in 0..3 {
                assert!((nelbo[i] - (recon[i] + kl[i])).abs() <= 1e-6 * nelbo[i].abs());
                let extra = match config.bottleneck {
                    BottleneckSpec::Vb { beta } => beta as f32 * rate[i],
                    BottleneckSpec::Aux { weight } => weight as f32 * aux[i],
                    _ => 0.0,
                };
                assert!(
                    (loss[i] - (nelbo[i] + extra)).abs() <= 1e-5 * loss[i].abs(),
                    "{spec}"
                );
                assert!(kl[i] >= 0.0 && recon[i] > 0.0);
            }
            if spec.starts_with("vb") {
                assert!(rate.iter().all(|r| *r > 0.0));
            } else {
                assert!(rate.iter().all(|r| *r == 0.0));
            }
        }
    }

    #[test]
    fn training_differs_from_evaluation_only_through_dropout_and_noise() {
        let device = crate::backend::cpu();
        let x = images(2, 3, 32, &device);
        let z_noise = Tensor::<4>::random([2, 4, 4, 4], Distribution::Normal(0.0, 1.0), &device);
        // One model per configuration, run in both modes (the RNG is shared by tests
        // running in parallel, so a model is never rebuilt from a seed here).
        let both = |spec: &str, dropout_p: f64| {
            let config = ModelConfig {
                dropout_p,
                ..ModelConfig::tiny().with_bottleneck(spec.parse().unwrap())
            };
            let model = Hybrid::new(&config, &device).unwrap();
            let train = model.forward_outputs(x.clone(), Some(z_noise.clone()), Mode::Train);
            let eval = model.forward_outputs(x.clone(), Some(z_noise.clone()), Mode::Eval);
            (train, eval)
        };
        // No dropout, no bottleneck: the two modes agree exactly.
        let (a, b) = both("none", 0.0);
        assert_eq!(host(a.params), host(b.params));
        // Dropout changes v.
        let (a, b) = both("none", 0.5);
        assert_ne!(host(a.v), host(b.v));
        // GD noise: v agrees (no dropout), the mixture parameters do not.
        let (a, b) = both("gd:0.3", 0.0);
        assert_eq!(host(a.v), host(b.v));
        assert_ne!(host(a.params), host(b.params));
        // The VAE path (encoder, z, u) is the same in both modes.
        assert_eq!(host(a.u), host(b.u));
    }
}
