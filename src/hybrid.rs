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
