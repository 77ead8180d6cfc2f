//! The hybrid model (SPEC section 2): VAE encoder and decoder, PixelCNN++ conditioned on
//! the decoder's map `u`, the bottleneck on its output `v`, and the per-pixel mixing
//! network `concat[u, b(v)] -> ELU hidden layer -> mixture of logistics`.
//!
//! Per image, in nats: `recon = -log p(x|z)`, `kl = KL(q(z|x) || N(0, I))`, the VB
//! `vb_rate`, the auxiliary decoder's `aux_nll`; the ELBO is `-(recon + kl)` and the loss
//! adds `beta * vb_rate` (vb) or `weight * aux_nll` (aux) (SPEC section 5).

use std::collections::HashMap;

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::config::ModelConfig;
use crate::engine::{Layout, Precision};
use crate::error::Result;
use crate::model::bottleneck::{self, BottleneckSpec};
use crate::model::dmol;
use crate::model::nn::{Conv2d, ConvConfig, Mode};
use crate::model::ops::{per_image_sum, standard_normal_like, to_channels_last};
use crate::model::pixelcnn::{PixelCnnConfig, PixelCnnPp};
use crate::model::terms::Terms;
use crate::model::vae::{Decoder, Encoder, VaeConfig, gaussian_kl};

/// The per-pixel mixing network: two 1x1 convolutions with an ELU between them
/// (`mix.0` and `mix.2` of the reference's `nn.Sequential`).
#[derive(Debug)]
pub struct Mix {
    pub hidden: Conv2d,
    pub out: Conv2d,
}

impl Mix {
    /// # Shapes
    /// `[B, dec_out + v_dim, H, W]` -> `[B, P, H, W]`
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.out.forward(&self.hidden.forward(x).elu())
    }
}

#[derive(Debug)]
pub struct Hybrid {
    /// Every parameter, named as in the reference's `state_dict`.
    pub vs: VarStore,
    pub config: ModelConfig,
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub pixelcnn: PixelCnnPp,
    pub mix: Mix,
    /// The auxiliary decoder's head (`aux` baseline only): DMoL parameters from `u` alone.
    pub aux_head: Option<Conv2d>,
    pub bottleneck: BottleneckSpec,
    /// The parameters in the reference's `state_dict` order.
    params: Vec<(String, Tensor)>,
    /// The kind convolutions run in (float32, or bfloat16 under `--precision bf16`).
    compute: Kind,
    /// The inputs are laid out channels-last, and with them every activation.
    channels_last: bool,
}

/// What a forward pass gives training: the per-image terms (nats, each `[B]`, float32)
/// and the per-image loss it minimises, `nelbo`, plus `beta * vb_rate` (vb) or
/// `weight * aux_nll` (aux).
#[derive(Debug)]
pub struct Losses {
    pub terms: Terms<Tensor>,
    /// `[B]`, nats
    pub loss: Tensor,
}

/// Every intermediate result of a forward pass (used to compare with the reference),
/// float32.
#[derive(Debug)]
pub struct Outputs {
    /// `[B, z, h, w]` each
    pub mean: Tensor,
    pub logvar: Tensor,
    pub z: Tensor,
    /// `[B, dec_out, H, W]`
    pub u: Tensor,
    /// `[B, k v_dim, H, W]`, the PixelCNN++ output before the bottleneck
    pub v: Tensor,
    /// `[B, P, H, W]`
    pub params: Tensor,
    /// `[B, H, W]`, `log p(x_ij | x_<ij, z)`
    pub log_prob: Tensor,
    /// `[B, P, H, W]` and `[B, H, W]` for `aux`
    pub aux_params: Option<Tensor>,
    pub aux_log_prob: Option<Tensor>,
    /// The per-image terms, nats, each `[B]`.
    pub terms: Terms<Tensor>,
    /// The per-image loss, `[B]` (see [`Losses`]).
    pub loss: Tensor,
}

impl Hybrid {
    /// A freshly initialised model (the reference's initialisation, from LibTorch's
    /// generator) on `device`, computing in float32.
    pub fn new(config: &ModelConfig, device: Device) -> Result<Self> {
        config.validate()?;
        let c = config;
        let vs = VarStore::new(device);
        let root = vs.root();
        let n_out = dmol::num_params(c.image_channels, c.nr_mix) as i64;
        let vae = VaeConfig {
            image_channels: c.image_channels as i64,
            width: c.width as i64,
            block_width: c.block_width as i64,
            n_blocks: c.n_blocks,
            z_channels: c.z_channels as i64,
            downsamples: c.downsamples,
            dec_out: c.dec_out as i64,
        };
        let dec_out = c.dec_out as i64;
        let pixelcnn = PixelCnnConfig {
            in_ch: c.image_channels as i64,
            out_ch: c.bottleneck.pixelcnn_channels(c.v_dim) as i64,
            nr_resnet: c.nr_resnet,
            nr_filters: c.nr_filters as i64,
            cond_ch: dec_out,
            dropout_p: c.dropout_p,
        };
        let mix_in = dec_out + c.v_dim as i64;
        let pointwise = ConvConfig::pointwise();
        // Built in the reference's module order, so that the variables are too.
        let encoder = Encoder::new(&(&root / "encoder"), vae);
        let decoder = Decoder::new(&(&root / "decoder"), vae);
        let pixelcnn = PixelCnnPp::new(&(&root / "pixelcnn"), pixelcnn);
        let mix = Mix {
            hidden: Conv2d::new(&(&root / "mix" / 0), mix_in, c.mix_hidden as i64, pointwise),
            out: Conv2d::new(&(&root / "mix" / 2), c.mix_hidden as i64, n_out, pointwise),
        };
        let aux_head = matches!(c.bottleneck, BottleneckSpec::Aux { .. })
            .then(|| Conv2d::new(&(&root / "aux_head"), dec_out, n_out, pointwise));
        let params = ordered_params(&vs);
        Ok(Self {
            vs,
            config: config.clone(),
            encoder,
            decoder,
            pixelcnn,
            mix,
            aux_head,
            bottleneck: c.bottleneck,
            params,
            compute: Kind::Float,
            channels_last: crate::engine::layout().channels_last_for(device, c.nr_filters),
        })
    }

    /// Computes convolutions in `precision` from now on.
    pub fn set_precision(&mut self, precision: Precision) {
        self.compute = precision.compute_kind();
        if self.device().is_cuda() {
            crate::engine::set_tf32(precision == Precision::Tf32);
        }
    }

    /// Lays out the activations as `layout` from now on (by laying out the inputs so: a
    /// convolution's weight, padding and output follow its input's layout).
    pub fn set_layout(&mut self, layout: Layout) {
        self.channels_last = layout.channels_last_for(self.device(), self.config.nr_filters);
    }

    /// `x` in the model's layout.
    fn laid_out(&self, x: &Tensor) -> Tensor {
        if self.channels_last {
            to_channels_last(x)
        } else {
            x.shallow_clone()
        }
    }

    /// Moves the weights to float64 and computes in float64 (tests that compare two
    /// computations exactly).
    #[cfg(test)]
    pub fn use_f64(&mut self) {
        self.vs.double();
        self.compute = Kind::Double;
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The parameters and their reference names, in `state_dict` order.
    pub fn params(&self) -> &[(String, Tensor)] {
        &self.params
    }

    pub fn num_params(&self) -> usize {
        self.params.iter().map(|(_, t)| t.numel()).sum()
    }

    /// The shape of `z` for `batch` images of side `size`.
    pub fn latent_shape(&self, batch: usize, size: usize) -> [i64; 4] {
        let s = size >> self.config.downsamples;
        [
            batch as i64,
            self.config.z_channels as i64,
            s as i64,
            s as i64,
        ]
    }

    /// DMoL parameters for image `x` given the decoder's map `u`, the bottleneck's
    /// per-image rate, and the PixelCNN++ output `v` (all float32).
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]`, `u`: `[B, dec_out, H, W]`
    /// - returns `params` `[B, P, H, W]`, `rate` `[B]`, `v` `[B, k v_dim, H, W]`
    pub fn pixel_params(&self, x: &Tensor, u: &Tensor, mode: Mode) -> (Tensor, Tensor, Tensor) {
        let xc = self.laid_out(&x.to_kind(self.compute));
        let v = self
            .pixelcnn
            .forward(&xc, &self.laid_out(u), mode)
            .to_kind(Kind::Float); // [B, k v_dim, H, W]
        let (params, rate) = self.params_from_v(u, &v, mode);
        (params, rate, v)
    }

    /// DMoL parameters and the bottleneck's per-image rate from the decoder's map `u` and
    /// the PixelCNN++ output `v` (float32): the bottleneck, then the mixing network, pixel
    /// by pixel. [`Hybrid::pixel_params`]'s last step, and the cached sampler's.
    ///
    /// # Shapes
    /// - `u`: `[B, dec_out, H, W]`, `v`: `[B, k v_dim, H, W]`
    /// - returns `params` `[B, P, H, W]`, `rate` `[B]`
    pub fn params_from_v(&self, u: &Tensor, v: &Tensor, mode: Mode) -> (Tensor, Tensor) {
        let b = bottleneck::apply(&self.bottleneck, v, mode);
        let mix_in = Tensor::cat(&[&u.to_kind(self.compute), &b.y.to_kind(self.compute)], 1);
        let params = self.mix.forward(&mix_in).to_kind(Kind::Float); // [B, P, H, W]
        (params, b.rate)
    }

    /// The floating-point type the convolutions run in.
    pub fn compute_kind(&self) -> Kind {
        self.compute
    }

    /// The posterior `q(z|x)`: its mean and log-variance, float32.
    ///
    /// # Shapes
    /// `[B, C, H, W]` -> `[B, z_channels, h, w]` twice
    pub fn encode(&self, x: &Tensor) -> (Tensor, Tensor) {
        let (mean, logvar) = self
            .encoder
            .forward(&self.laid_out(&x.to_kind(self.compute)));
        (mean.to_kind(Kind::Float), logvar.to_kind(Kind::Float))
    }

    /// The decoder's map `u` for latents `z` (in the compute kind).
    ///
    /// # Shapes
    /// `[B, z_channels, h, w]` -> `[B, dec_out, H, W]`
    pub fn decode(&self, z: &Tensor) -> Tensor {
        self.decoder
            .forward(&self.laid_out(&z.to_kind(self.compute)))
    }

    /// One forward pass with every intermediate. `z_noise` fixes the `N(0, I)` draw of
    /// the reparameterised `z` (a fresh one is drawn when `None`).
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]` in `[-1, 1]`, float32
    /// - `z_noise`: `[B, z_channels, h, w]`
    pub fn forward_outputs(&self, x: &Tensor, z_noise: Option<&Tensor>, mode: Mode) -> Outputs {
        let (mean, logvar) = self.encode(x); // [B, z, h, w] each
        let noise = match z_noise {
            Some(n) => n.shallow_clone(),
            None => standard_normal_like(&mean),
        };
        let z = &mean + (&logvar * 0.5).exp() * noise; // one sample
        let kl = gaussian_kl(&mean, &logvar); // [B]
        let u = self.decode(&z); // [B, dec_out, H, W]
        let (params, vb_rate, v) = self.pixel_params(x, &u, mode);
        let log_prob = dmol::log_prob(&params, x); // [B, H, W]
        let recon = per_image_sum(&log_prob).neg();
        let (aux_params, aux_log_prob) = match &self.aux_head {
            Some(head) => {
                let p = head.forward(&u).to_kind(Kind::Float);
                let lp = dmol::log_prob(&p, x);
                (Some(p), Some(lp))
            }
            None => (None, None),
        };
        let aux_nll = match &aux_log_prob {
            Some(lp) => per_image_sum(lp).neg(),
            None => recon.zeros_like(),
        };
        let nelbo = &recon + &kl;
        let loss = match self.bottleneck {
            BottleneckSpec::Vb { beta } => &nelbo + &vb_rate * beta,
            BottleneckSpec::Aux { weight } => &nelbo + &aux_nll * weight,
            _ => nelbo.shallow_clone(),
        };
        Outputs {
            mean,
            logvar,
            z,
            u: u.to_kind(Kind::Float),
            v,
            params,
            log_prob,
            aux_params,
            aux_log_prob,
            terms: Terms {
                nelbo,
                kl,
                recon,
                vb_rate,
                aux_nll,
            },
            loss,
        }
    }

    /// The per-image terms of one forward pass (nats).
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Losses {
        let out = self.forward_outputs(x, None, mode);
        Losses {
            terms: out.terms,
            loss: out.loss,
        }
    }
}

/// The trainable variables of `vs` with their names, in the order they were created.
fn ordered_params(vs: &VarStore) -> Vec<(String, Tensor)> {
    let by_storage: HashMap<usize, String> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| (t.data_ptr() as usize, name))
        .collect();
    vs.trainable_variables()
        .into_iter()
        .map(|t| {
            let name = by_storage
                .get(&(t.data_ptr() as usize))
                .expect("every trainable variable is named")
                .clone();
            (name, t)
        })
        .collect()
}

/// Parameter counts of the model's parts, in the reference's order.
pub fn param_counts(model: &Hybrid) -> Vec<(&'static str, usize)> {
    let mut parts = vec!["encoder", "decoder", "pixelcnn", "mix"];
    if model.aux_head.is_some() {
        parts.push("aux_head");
    }
    parts
        .into_iter()
        .map(|part| {
            let prefix = format!("{part}.");
            let n = model
                .params()
                .iter()
                .filter(|(name, _)| name.starts_with(&prefix))
                .map(|(_, t)| t.numel())
                .sum();
            (part, n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use crate::model::ops::{dims, host_f32, is_channels_last};

    fn images(b: i64, c: i64, s: i64) -> Tensor {
        Tensor::randint(256, [b, c, s, s], (Kind::Float, Device::Cpu)) / 127.5 - 1.0
    }

    #[test]
    fn shapes_for_every_preset() {
        for (name, config) in [
            ("tiny", ModelConfig::tiny()),
            ("small", ModelConfig::small()),
            ("paper", ModelConfig::paper()),
        ] {
            for spec in ["gd:0.1", "vb:0.1", "aux"] {
                let config = config.clone().with_bottleneck(spec.parse().unwrap());
                let model = Hybrid::new(&config, Device::Cpu).unwrap();
                let out = model.forward_outputs(&images(1, 3, 32), None, Mode::Train);
                let k = if spec.starts_with("vb") { 2 } else { 1 };
                let (z, d, v) = (config.z_channels, config.dec_out, config.v_dim);
                assert_eq!(dims(&out.mean), [1, z, 4, 4], "{name} {spec}");
                assert_eq!(dims(&out.u), [1, d, 32, 32], "{name} {spec}");
                assert_eq!(dims(&out.v), [1, k * v, 32, 32], "{name} {spec}");
                assert_eq!(dims(&out.params), [1, 100, 32, 32], "{name} {spec}");
                assert_eq!(dims(&out.log_prob), [1, 32, 32], "{name} {spec}");
                assert_eq!(dims(&out.loss), [1], "{name} {spec}");
                assert!(host_f32(&out.loss)[0].is_finite(), "{name} {spec}");
                if name == "paper" {
                    break; // one paper-sized forward is enough
                }
            }
        }
    }

    #[test]
    fn parameter_names_are_the_references_in_its_order() {
        let model = Hybrid::new(&ModelConfig::tiny(), Device::Cpu).unwrap();
        let names: Vec<&str> = model.params().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), 219);
        assert_eq!(names[0], "encoder.net.0.weight");
        assert_eq!(names[6], "encoder.net.6.c1.weight");
        assert!(names.contains(&"pixelcnn.up_u.0.0.conv1.conv.V"));
        assert!(names.contains(&"pixelcnn.up_u_deconv.1.deconv.g"));
        assert!(names.contains(&"pixelcnn.dn_ul.2.1.cond.weight"));
        assert_eq!(names[names.len() - 1], "mix.2.bias");
        assert_eq!(model.num_params(), 63_222);
    }

    #[test]
    fn one_channel_28x28_with_two_downsamples() {
        let mut config = ModelConfig::tiny().with_images(1, 28);
        assert!(config.validate().is_err(), "28 is not divisible by 2^3");
        config.downsamples = 2;
        let model = Hybrid::new(&config, Device::Cpu).unwrap();
        let out = model.forward_outputs(&images(2, 1, 28), None, Mode::Eval);
        assert_eq!(dims(&out.mean), [2, 4, 7, 7]);
        assert_eq!(dims(&out.params), [2, 30, 28, 28]);
    }

    #[test]
    fn elbo_identity_and_loss_terms() {
        for spec in ["gd:0.2", "vb:0.3", "aux:0.5", "none"] {
            let config = ModelConfig::tiny().with_bottleneck(spec.parse().unwrap());
            let model = Hybrid::new(&config, Device::Cpu).unwrap();
            let out = model.forward(&images(3, 3, 32), Mode::Eval);
            let t = &out.terms;
            let (recon, kl, nelbo) = (host_f32(&t.recon), host_f32(&t.kl), host_f32(&t.nelbo));
            let (rate, aux, loss) = (
                host_f32(&t.vb_rate),
                host_f32(&t.aux_nll),
                host_f32(&out.loss),
            );
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
        let x = images(2, 3, 32);
        let z_noise = Tensor::randn([2, 4, 4, 4], (Kind::Float, Device::Cpu));
        let both = |spec: &str, dropout_p: f64| {
            let config = ModelConfig {
                dropout_p,
                ..ModelConfig::tiny().with_bottleneck(spec.parse().unwrap())
            };
            let model = Hybrid::new(&config, Device::Cpu).unwrap();
            let train = model.forward_outputs(&x, Some(&z_noise), Mode::Train);
            let eval = model.forward_outputs(&x, Some(&z_noise), Mode::Eval);
            (train, eval)
        };
        // No dropout, no bottleneck: the two modes agree exactly.
        let (a, b) = both("none", 0.0);
        assert_eq!(host_f32(&a.params), host_f32(&b.params));
        // Dropout changes v.
        let (a, b) = both("none", 0.5);
        assert_ne!(host_f32(&a.v), host_f32(&b.v));
        // GD noise: v agrees (no dropout), the mixture parameters do not.
        let (a, b) = both("gd:0.3", 0.0);
        assert_eq!(host_f32(&a.v), host_f32(&b.v));
        assert_ne!(host_f32(&a.params), host_f32(&b.params));
        // The VAE path (encoder, z, u) is the same in both modes.
        assert_eq!(host_f32(&a.u), host_f32(&b.u));
    }

    /// bfloat16 keeps 8 bits of mantissa: the negative ELBO of an untrained tiny model
    /// moves by well under 1% (measured: about 0.1%), and the terms stay float32.
    #[test]
    fn bf16_forward_is_close_to_f32() {
        let mut model = Hybrid::new(&ModelConfig::tiny(), Device::Cpu).unwrap();
        let x = images(2, 3, 32);
        let z_noise = Tensor::randn([2, 4, 4, 4], (Kind::Float, Device::Cpu));
        let f32_terms = model.forward_outputs(&x, Some(&z_noise), Mode::Eval).terms;
        model.set_precision(Precision::Bf16);
        let bf16_terms = model.forward_outputs(&x, Some(&z_noise), Mode::Eval).terms;
        assert_eq!(bf16_terms.nelbo.kind(), Kind::Float);
        let (a, b) = (host_f32(&f32_terms.nelbo), host_f32(&bf16_terms.nelbo));
        for (a, b) in a.iter().zip(&b) {
            assert!((a - b).abs() < 0.01 * a.abs(), "f32 {a} vs bf16 {b}");
            assert!(a != b, "bf16 should round differently");
        }
    }

    /// Channels-last and NCHW give the same outputs and gradients, and channels-last
    /// reaches the last maps (the padded shifts and convolutions keep it). The network
    /// runs in float64, where the two layouts' sums in other orders differ by ~1e-15;
    /// the mixture of logistics runs in float32 whatever the network's type, where such a
    /// difference can move a value by an ulp (6e-8): a layout bug moves them by O(1).
    #[test]
    fn both_layouts_give_the_same_numbers() {
        for spec in ["gd:0.2", "vb:0.1", "aux"] {
            let config = ModelConfig::tiny().with_bottleneck(spec.parse().unwrap());
            let mut model = Hybrid::new(&config, Device::Cpu).unwrap();
            model.use_f64();
            let x = images(2, 3, 32).to_kind(Kind::Double);
            let z_noise = Tensor::randn([2, 4, 4, 4], (Kind::Double, Device::Cpu));
            let mut results = Vec::new();
            for layout in [Layout::Nchw, Layout::ChannelsLast] {
                model.set_layout(layout);
                // Evaluation mode, `z` given: nothing is drawn from LibTorch's generator,
                // which the library's tests share (the noise is checked in
                // tests/seeded.rs, a process of its own).
                let out = model.forward_outputs(&x, Some(&z_noise), Mode::Eval);
                assert_eq!(
                    is_channels_last(&out.v),
                    layout == Layout::ChannelsLast,
                    "{spec} {layout}: PixelCNN++'s output"
                );
                for (_, p) in model.params() {
                    let _ = p.grad().f_zero_();
                }
                out.loss.sum(Kind::Double).backward();
                let grads: Vec<Tensor> = model.params().iter().map(|(_, p)| p.grad()).collect();
                results.push((
                    out.loss.detach(),
                    Tensor::cat(
                        &grads.iter().map(|g| g.flatten(0, -1)).collect::<Vec<_>>(),
                        0,
                    ),
                ));
            }
            let (l0, g0) = &results[0];
            let (l1, g1) = &results[1];
            let rel = |a: &Tensor, b: &Tensor| {
                let scale = b.abs().max().double_value(&[]);
                (a - b).abs().max().double_value(&[]) / scale
            };
            // A few float32 ulps of the largest value.
            assert!(
                rel(l1, l0) < 1e-6,
                "{spec}: losses differ by {}",
                rel(l1, l0)
            );
            assert!(
                rel(g1, g0) < 1e-6,
                "{spec}: gradients differ by {}",
                rel(g1, g0)
            );
        }
    }
}
