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

use burn::prelude::*;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;

use crate::nn::{GatedResnet, Mode, Shift, ShiftedConv2d, ShiftedDeconv2d, WnConv2d};
use crate::ops::{down_shift, elu, right_shift};

/// Resolutions of the network: S, S/2 and S/4.
const LEVELS: usize = 3;

#[derive(Module, Debug)]
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
    /// `in_ch` image channels, `out_ch` output channels per pixel, `nr_resnet` gated
    /// resnets per resolution, `nr_filters` channels, `cond_ch` channels of `u`.
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        nr_resnet: usize,
        nr_filters: usize,
        cond_ch: usize,
        dropout_p: f64,
        device: &Device,
    ) -> Self {
        let nf = nr_filters;
        let c0 = in_ch + 1; // the image and a channel of ones (marks the padding)
        let gr = |shift, aux| GatedResnet::new(nf, shift, aux, cond_ch, dropout_p, device);
        let stack = |n: usize, shift, aux| (0..n).map(|_| gr(shift, aux)).collect::<Vec<_>>();
        let counts = [nr_resnet, nr_resnet + 1, nr_resnet + 1];
        Self {
            u_init: ShiftedConv2d::new(c0, nf, [2, 3], Shift::Down, 1, 1.0, device),
            ul_init_above: ShiftedConv2d::new(c0, nf, [1, 3], Shift::Down, 1, 1.0, device),
            ul_init_left: ShiftedConv2d::new(c0, nf, [2, 1], Shift::DownRight, 1, 1.0, device),
            up_u: (0..LEVELS)
                .map(|_| stack(nr_resnet, Shift::Down, 0))
                .collect(),
            up_ul: (0..LEVELS)
                .map(|_| stack(nr_resnet, Shift::DownRight, nf))
                .collect(),
            down_u: (0..LEVELS - 1)
                .map(|_| ShiftedConv2d::new(nf, nf, [2, 3], Shift::Down, 2, 1.0, device))
                .collect(),
            down_ul: (0..LEVELS - 1)
                .map(|_| ShiftedConv2d::new(nf, nf, [2, 2], Shift::DownRight, 2, 1.0, device))
                .collect(),
            dn_u: counts.iter().map(|&n| stack(n, Shift::Down, nf)).collect(),
            dn_ul: counts
                .iter()
                .map(|&n| stack(n, Shift::DownRight, 2 * nf))
                .collect(),
            up_u_deconv: (0..LEVELS - 1)
                .map(|_| ShiftedDeconv2d::new(nf, nf, [2, 3], Shift::Down, device))
                .collect(),
            up_ul_deconv: (0..LEVELS - 1)
                .map(|_| ShiftedDeconv2d::new(nf, nf, [2, 2], Shift::DownRight, device))
                .collect(),
            nin_out: WnConv2d::nin(nf, out_ch, device),
        }
    }

    /// # Shapes
    /// - `x`: `[B, C, H, W]` in `[-1, 1]`, `H` and `W` divisible by 4
    /// - `u`: `[B, cond_ch, H, W]`
    /// - returns `v`: `[B, out_ch, H, W]`
    pub fn forward(&self, x: Tensor<4>, u: &Tensor<4>, mode: Mode) -> Tensor<4> {
        let [b, _, h, w] = x.dims();
        let device = x.device();
        // u average-pooled to each resolution.
        let hs = [
            u.clone(),
            avg_pool2d(u.clone(), AvgPoolOptions::new([2, 2])),
            avg_pool2d(u.clone(), AvgPoolOptions::new([4, 4])),
        ];
        let xp = Tensor::cat(vec![x, Tensor::<4>::ones([b, 1, h, w], &device)], 1); // [B, C+1, H, W]
        let mut u_list = vec![down_shift(self.u_init.forward(xp.clone()))]; // [B, nf, H, W]
        let mut ul_list = vec![
            down_shift(self.ul_init_above.forward(xp.clone()))
                + right_shift(self.ul_init_left.forward(xp)),
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
                let ul = gul.forward(last(&ul_list), Some(u.clone()), Some(h_s), mode);
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
                u = self.up_u_deconv[s - 1].forward(u); // [B, nf, 2h, 2w]
                ul = self.up_ul_deconv[s - 1].forward(ul);
            }
            for (gu, gul) in self.dn_u[s].iter().zip(&self.dn_ul[s]) {
                let saved_u = u_list.pop().expect("one saved u per down-pass block");
                let saved_ul = ul_list.pop().expect("one saved ul per down-pass block");
                u = gu.forward(u, Some(saved_u), Some(&hs[res]), mode);
                let a = Tensor::cat(vec![u.clone(), saved_ul], 1); // [B, 2nf, h, w]
                ul = gul.forward(ul, Some(a), Some(&hs[res]), mode);
            }
        }
        debug_assert!(u_list.is_empty() && ul_list.is_empty());
        self.nin_out.forward(elu(ul)) // [B, out_ch, H, W]
    }
}

fn last(list: &[Tensor<4>]) -> Tensor<4> {
    list.last().expect("non-empty activation list").clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// Changing pixel `j` (all channels) must leave the output unchanged at every pixel
    /// at or before `j` in raster order and change some later pixel, for every `j` of a
    /// 32x32 image (tiny preset's PixelCNN++, evaluation mode).
    fn causality(channels: usize, size: usize, pixels: &[usize]) {
        let device = crate::backend::cpu();
        crate::backend::seed(&device, 11);
        let net = PixelCnnPp::new(channels, 10, 1, 8, 8, 0.5, &device);
        let levels = Tensor::<4>::random(
            [1, channels, size, size],
            Distribution::Uniform(0.0, 255.0),
            &device,
        )
        .round()
            / 127.5
            - 1.0;
        let h = Tensor::<4>::random([1, 8, size, size], Distribution::Normal(0.0, 1.0), &device);
        let base: Vec<f32> = net
            .forward(levels.clone(), &h, Mode::Eval)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let x0: Vec<f32> = levels.into_data().try_into_vec::<f32>().unwrap();
        let n = size * size;
        for chunk in pixels.chunks(128) {
            let b = chunk.len();
            let mut xs = Vec::with_capacity(b * x0.len());
            for &j in chunk {
                let mut x = x0.clone();
                for c in 0..channels {
                    let v = &mut x[c * n + j];
                    // Move to another level, staying in [-1, 1].
                    *v = if *v > 0.0 { *v - 1.0 } else { *v + 1.0 };
                }
                xs.extend(x);
            }
            let xs =
                Tensor::<4>::from_data(TensorData::new(xs, [b, channels, size, size]), &device);
            let hb = h.clone().expand([b, 8, size, size]);
            let out: Vec<f32> = net
                .forward(xs, &hb, Mode::Eval)
                .into_data()
                .try_into_vec::<f32>()
                .unwrap();
            let per = 10 * n;
            for (i, &j) in chunk.iter().enumerate() {
                let changed =
                    |p: usize| (0..10).any(|c| out[i * per + c * n + p] != base[c * n + p]);
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
