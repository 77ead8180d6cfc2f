//! PixelCNN++ (Salimans et al., ICLR 2017), following `model.py` of `openai/pixel-cnn`,
//! conditioned on the VAE decoder's map `u` (SPEC section 2, step 4).
//!
//! Two streams: `u` sees the rows above a pixel (down-shifted convolutions), `ul` the
//! rows above and the pixels to the left (down-right-shifted). The up pass runs
//! `nr_resnet` gated resnets at each of three resolutions (S, S/2, S/4) with stride-2
//! shifted convolutions between them, saving every activation; the down pass runs
//! `nr_resnet`, `nr_resnet + 1`, `nr_resnet + 1` gated resnets at S/4, S/2, S, each taking
//! one saved activation as its short-cut input. The output `nin(elu(ul))` at pixel `j`
//! depends only on the pixels before `j` in raster order (all channels) and on `u`.

use tch::Tensor;
use tch::nn::Path;

use crate::model::nn::gated_resnet::GatedResnetConfig;
use crate::model::nn::shifted::ShiftedConfig;
use crate::model::nn::{GatedResnet, Mode, Shift, ShiftedConv2d, ShiftedDeconv2d, WnConv2d};
use crate::model::ops::{down_shift, right_shift, with_ones_channel};

/// Resolutions of the network: S, S/2 and S/4.
const LEVELS: usize = 3;

/// The sizes of a PixelCNN++ (model.py's arguments).
#[derive(Debug, Clone, Copy)]
pub struct PixelCnnConfig {
    /// Image channels.
    pub in_ch: i64,
    /// Output channels per pixel.
    pub out_ch: i64,
    /// Gated resnets per resolution in the up pass.
    pub nr_resnet: usize,
    pub nr_filters: i64,
    /// Channels of the conditioning map `u` (0 for none).
    pub cond_ch: i64,
    pub dropout_p: f64,
}

#[derive(Debug)]
pub struct PixelCnnPp {
    pub u_init: ShiftedConv2d,
    pub ul_init_above: ShiftedConv2d,
    pub ul_init_left: ShiftedConv2d,
    /// Up pass, `[level][i]`, `u` stream (no short-cut input).
    pub up_u: Vec<Vec<GatedResnet>>,
    /// Up pass, `ul` stream (short-cut input: the current `u`).
    pub up_ul: Vec<Vec<GatedResnet>>,
    /// Stride-2 convolutions between the up pass's resolutions.
    pub down_u: Vec<ShiftedConv2d>,
    pub down_ul: Vec<ShiftedConv2d>,
    /// Down pass, `[level][i]` at S/4, S/2, S; `u` takes the saved `u`.
    pub dn_u: Vec<Vec<GatedResnet>>,
    /// Down pass, `ul` takes `concat[u, saved ul]`.
    pub dn_ul: Vec<Vec<GatedResnet>>,
    /// Stride-2 transposed convolutions between the down pass's resolutions.
    pub up_u_deconv: Vec<ShiftedDeconv2d>,
    pub up_ul_deconv: Vec<ShiftedDeconv2d>,
    pub nin_out: WnConv2d,
}

impl PixelCnnPp {
    /// Weights under the reference's names (`u_init`, `up_u.{level}.{i}`, ...), created
    /// in the reference's module order.
    pub fn new(p: &Path, c: PixelCnnConfig) -> Self {
        let nf = c.nr_filters;
        let c0 = c.in_ch + 1; // the image and a channel of ones (marks the padding)
        let block = |aux_ch| GatedResnetConfig {
            nf,
            aux_ch,
            cond_ch: c.cond_ch,
            dropout_p: c.dropout_p,
        };
        // levels[s][i] under `<name>.{s}.{i}`
        let stacks = |name: &str, counts: &[usize], shift, aux_ch| -> Vec<Vec<GatedResnet>> {
            counts
                .iter()
                .enumerate()
                .map(|(s, &n)| {
                    (0..n)
                        .map(|i| GatedResnet::new(&(p / name / s / i), shift, block(aux_ch)))
                        .collect()
                })
                .collect()
        };
        let up_counts = [c.nr_resnet; LEVELS];
        let dn_counts = [c.nr_resnet, c.nr_resnet + 1, c.nr_resnet + 1];
        let strided = |name: &str, shift: Shift| -> Vec<ShiftedConv2d> {
            let cfg = ShiftedConfig {
                stride: 2,
                ..ShiftedConfig::new(nf, nf, shift.stream_kernel())
            };
            (0..LEVELS - 1)
                .map(|k| ShiftedConv2d::new(&(p / name / k), shift, cfg))
                .collect()
        };
        let deconvs = |name: &str, shift| -> Vec<ShiftedDeconv2d> {
            (0..LEVELS - 1)
                .map(|k| ShiftedDeconv2d::new(&(p / name / k), shift, nf, nf))
                .collect()
        };
        let init = |name: &str, shift, kernel| {
            ShiftedConv2d::new(&(p / name), shift, ShiftedConfig::new(c0, nf, kernel))
        };
        Self {
            u_init: init("u_init", Shift::Down, [2, 3]),
            ul_init_above: init("ul_init_above", Shift::Down, [1, 3]),
            ul_init_left: init("ul_init_left", Shift::DownRight, [2, 1]),
            up_u: stacks("up_u", &up_counts, Shift::Down, 0),
            up_ul: stacks("up_ul", &up_counts, Shift::DownRight, nf),
            down_u: strided("down_u", Shift::Down),
            down_ul: strided("down_ul", Shift::DownRight),
            dn_u: stacks("dn_u", &dn_counts, Shift::Down, nf),
            dn_ul: stacks("dn_ul", &dn_counts, Shift::DownRight, 2 * nf),
            up_u_deconv: deconvs("up_u_deconv", Shift::Down),
            up_ul_deconv: deconvs("up_ul_deconv", Shift::DownRight),
            nin_out: WnConv2d::nin(&(p / "nin_out"), nf, c.out_ch),
        }
    }

    /// Runs in the floating-point type of `x` (`cond` is cast to it). `cond` is the VAE
    /// decoder's map (the hybrid's `u`; nn.py's `h`); inside, `u` and `ul` are
    /// PixelCNN++'s two streams, as in model.py.
    ///
    /// # Shapes
    /// - `x`: `[B, C, H, W]` in `[-1, 1]`, `H` and `W` divisible by 4
    /// - `cond`: `[B, cond_ch, H, W]`
    /// - returns `v`: `[B, out_ch, H, W]`
    pub fn forward(&self, x: &Tensor, cond: &Tensor, mode: Mode) -> Tensor {
        let cond = cond.to_kind(x.kind());
        // The conditioning map average-pooled to each resolution.
        let pool = |k: i64| cond.avg_pool2d([k, k], [k, k], [0, 0], false, true, None::<i64>);
        let hs = [cond.shallow_clone(), pool(2), pool(4)];
        let xp = with_ones_channel(x); // [B, C+1, H, W]
        let mut u_list = vec![down_shift(&self.u_init.forward(&xp))]; // [B, nf, H, W]
        let mut ul_list = vec![
            down_shift(&self.ul_init_above.forward(&xp))
                + right_shift(&self.ul_init_left.forward(&xp)),
        ];
        // Up pass.
        for (s, h_s) in hs.iter().enumerate() {
            if s > 0 {
                let u = self.down_u[s - 1].forward(last(&u_list)); // [B, nf, H/2^s, W/2^s]
                let ul = self.down_ul[s - 1].forward(last(&ul_list));
                u_list.push(u);
                ul_list.push(ul);
            }
            for (gu, gul) in self.up_u[s].iter().zip(&self.up_ul[s]) {
                let u = gu.forward(last(&u_list), None, Some(h_s), mode);
                let ul = gul.forward(last(&ul_list), Some(&u), Some(h_s), mode);
                u_list.push(u);
                ul_list.push(ul);
            }
        }
        // Down pass.
        let mut u = u_list.pop().expect("the up pass saved activations");
        let mut ul = ul_list.pop().expect("the up pass saved activations");
        for s in 0..LEVELS {
            let res = LEVELS - 1 - s;
            if s > 0 {
                u = self.up_u_deconv[s - 1].forward(&u); // [B, nf, 2h, 2w]
                ul = self.up_ul_deconv[s - 1].forward(&ul);
            }
            for (gu, gul) in self.dn_u[s].iter().zip(&self.dn_ul[s]) {
                let saved_u = u_list.pop().expect("one saved u per down-pass block");
                let saved_ul = ul_list.pop().expect("one saved ul per down-pass block");
                u = gu.forward(&u, Some(&saved_u), Some(&hs[res]), mode);
                let a = Tensor::cat(&[&u, &saved_ul], 1); // [B, 2nf, h, w]
                ul = gul.forward(&ul, Some(&a), Some(&hs[res]), mode);
            }
        }
        debug_assert!(u_list.is_empty() && ul_list.is_empty());
        self.nin_out.forward(&ul.elu()) // [B, out_ch, H, W]
    }
}

fn last(list: &[Tensor]) -> &Tensor {
    list.last().expect("non-empty activation list")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ops::host_f64;
    use tch::nn::VarStore;
    use tch::{Device, Kind};

    /// Changing pixel `j` (all channels) must leave the output unchanged at every pixel
    /// at or before `j` in raster order and change some later pixel (tiny preset's
    /// PixelCNN++, evaluation mode). The network runs in float64 so that a batch's
    /// rounding never passes for a dependence: "changed" means by more than 1e-9.
    fn causality(channels: i64, size: i64, pixels: &[usize]) {
        let mut vs = VarStore::new(Device::Cpu);
        let config = PixelCnnConfig {
            in_ch: channels,
            out_ch: 10,
            nr_resnet: 1,
            nr_filters: 8,
            cond_ch: 8,
            dropout_p: 0.5,
        };
        let net = PixelCnnPp::new(&vs.root(), config);
        vs.double();
        let opts = (Kind::Double, Device::Cpu);
        let levels = Tensor::randint(256, [1, channels, size, size], opts) / 127.5 - 1.0;
        let h = Tensor::randn([1, 8, size, size], opts);
        let base = host_f64(&net.forward(&levels, &h, Mode::Eval));
        let x0 = host_f64(&levels);
        let n = (size * size) as usize;
        for chunk in pixels.chunks(128) {
            let b = chunk.len();
            let mut xs = Vec::with_capacity(b * x0.len());
            for &j in chunk {
                let mut x = x0.clone();
                for c in 0..channels as usize {
                    let v = &mut x[c * n + j];
                    // Move to another level, staying in [-1, 1].
                    *v = if *v > 0.0 { *v - 1.0 } else { *v + 1.0 };
                }
                xs.extend(x);
            }
            let xs = Tensor::from_slice(&xs).view([b as i64, channels, size, size]);
            let hb = h.expand([b as i64, 8, size, size], false);
            let out = host_f64(&net.forward(&xs, &hb, Mode::Eval));
            let per = 10 * n;
            for (i, &j) in chunk.iter().enumerate() {
                let changed = |p: usize| {
                    (0..10).any(|c| (out[i * per + c * n + p] - base[c * n + p]).abs() > 1e-9)
                };
                let before = (0..=j).find(|&p| changed(p));
                assert!(
                    before.is_none(),
                    "changing pixel {j} changed the output at {before:?}"
                );
                if j + 1 < n {
                    assert!(
                        (j + 1..n).any(changed),
                        "changing pixel {j} changed no later pixel"
                    );
                }
            }
        }
    }

    #[test]
    fn output_at_pixel_j_depends_only_on_earlier_pixels_rgb_every_pixel() {
        let all: Vec<usize> = (0..32 * 32).collect();
        causality(3, 32, &all);
    }

    #[test]
    fn output_at_pixel_j_depends_only_on_earlier_pixels_one_channel_28() {
        let some: Vec<usize> = (0..28 * 28).step_by(7).chain([27, 28, 783]).collect();
        causality(1, 28, &some);
    }
}
