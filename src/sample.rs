//! Ancestral sampling (SPEC section 2): `z` from the prior (or from `q(z|x)` for
//! reconstructions), the decoder's map `u`, then PixelCNN++ and the mixing network pixel
//! by pixel in raster order with the bottleneck in evaluation mode, each pixel drawn from
//! its mixture of logistics (channels in order).
//!
//! The output at row `r` depends only on rows `<= r` (causal convolutions, per-pixel
//! bottleneck and mixing network), so while drawing row `r` the network runs on the
//! first `R` rows only, `R` = `r + 1` rounded up to a multiple of 4 (the coarsest
//! resolution's step): the same numbers at about half the cost.

use rand::SeedableRng;
use tch::Tensor;

use crate::dmol;
use crate::evaluate::host_normal;
use crate::hybrid::Hybrid;
use crate::nn::Mode;

/// Draws images given the decoder's map `u` (`[n, dec_out, S, S]`); returns bytes
/// `[n, C, S, S]`. With `crop`, each row is drawn from the network run on the rows that
/// matter only (the same numbers). `progress` is called after each row with
/// `(row, rows)`.
pub fn sample_given_u(
    model: &Hybrid,
    u: &Tensor,
    draw: &Draw,
    crop: bool,
    mut progress: impl FnMut(usize, usize),
) -> Vec<u8> {
    tch::no_grad(|| sample_rows(model, u, draw, crop, &mut progress))
}

fn sample_rows(
    model: &Hybrid,
    u: &Tensor,
    draw: &Draw,
    crop: bool,
    progress: &mut impl FnMut(usize, usize),
) -> Vec<u8> {
    let Draw {
        channels,
        temperature,
        seed,
        ..
    } = *draw;
    let size = u.size();
    let (n, size) = (size[0] as usize, size[2] as usize);
    let device = u.device();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let plane = size * size;
    let mut bytes = vec![0u8; n * channels * plane];
    let mut x_values = vec![0f32; n * channels * plane];
    for r in 0..size {
        let rows = if crop {
            ((r + 1).div_ceil(4) * 4).min(size)
        } else {
            size
        };
        for c in 0..size {
            // The current image, cropped to the rows that matter.
            let x = Tensor::from_slice(&x_values)
                .view([n as i64, channels as i64, size as i64, size as i64])
                .to_device(device)
                .narrow(2, 0, rows as i64); // [n, C, rows, S]
            let u_rows = u.narrow(2, 0, rows as i64); // [n, dec_out, rows, S]
            let (params, _, _) = model.pixel_params(&x, &u_rows, Mode::Eval);
            let p = params.narrow(2, r as i64, 1).narrow(3, c as i64, 1); // [n, P, 1, 1]
            let p_len = p.size()[1] as usize;
            let values = crate::ops::host_f32(&p);
            for i in 0..n {
                let pixel = dmol::sample_pixel(
                    &values[i * p_len..(i + 1) * p_len],
                    channels,
                    temperature,
                    &mut rng,
                );
                for (ch, b) in pixel.into_iter().enumerate() {
                    let at = (i * channels + ch) * plane + r * size + c;
                    bytes[at] = b;
                    x_values[at] = b as f32 / 127.5 - 1.0;
                }
            }
        }
        progress(r + 1, size);
    }
    bytes
}

/// What to draw: the image shape, the noise temperature and the seed.
#[derive(Debug, Clone, Copy)]
pub struct Draw {
    pub channels: usize,
    pub size: usize,
    /// Scales the prior's and the logistics' noise (1 = the model's distribution).
    pub temperature: f32,
    pub seed: u64,
}

/// `n` samples from the model: `z ~ N(0, I)` (scaled by the temperature), then
/// [`sample_given_u`].
pub fn sample_prior(
    model: &Hybrid,
    n: usize,
    draw: &Draw,
    progress: impl FnMut(usize, usize),
) -> Vec<u8> {
    let shape = model.latent_shape(n, draw.size);
    let z = host_normal(shape, draw.seed ^ 0x5A5A_0000, model.device()) * draw.temperature as f64;
    let u = tch::no_grad(|| model.decode(&z)); // [n, dec_out, S, S]
    sample_given_u(model, &u, draw, true, progress)
}

/// For each of the `x` images (bytes `[n, C, S, S]`), `k` reconstructions: `z ~ q(z|x)`
/// then [`sample_given_u`]. Returns bytes `[n, k, C, S, S]` (image-major).
pub fn reconstruct(
    model: &Hybrid,
    x: &[u8],
    n: usize,
    k: usize,
    draw: &Draw,
    progress: impl FnMut(usize, usize),
) -> Vec<u8> {
    let Draw {
        channels,
        size,
        seed,
        ..
    } = *draw;
    // Repeat each image k times, image-major.
    let plane = channels * size * size;
    let mut rep = Vec::with_capacity(n * k * plane);
    for i in 0..n {
        for _ in 0..k {
            rep.extend_from_slice(&x[i * plane..(i + 1) * plane]);
        }
    }
    let device = model.device();
    let xt = crate::data::images_to_tensor(&rep, [n * k, channels, size, size], device);
    let u = tch::no_grad(|| {
        let (mean, logvar) = model.encode(&xt);
        let noise = host_normal(model.latent_shape(n * k, size), seed ^ 0xA5A5_0000, device);
        let z = mean + (logvar * 0.5).exp() * noise; // z ~ q(z|x)
        model.decode(&z)
    });
    sample_given_u(model, &u, draw, true, progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use tch::Device;

    #[test]
    fn cropping_to_the_rows_drawn_changes_nothing() {
        let config = ModelConfig {
            image_size: 16,
            downsamples: 2,
            ..ModelConfig::tiny().with_bottleneck("vb:0.1".parse().unwrap())
        };
        // In float64, so that the two computations cannot round differently.
        let mut model = Hybrid::new(&config, Device::Cpu).unwrap();
        model.use_f64();
        let z = host_normal(model.latent_shape(2, 16), 3, Device::Cpu);
        let u = tch::no_grad(|| model.decode(&z));
        let draw = Draw {
            channels: 3,
            size: 16,
            temperature: 1.0,
            seed: 9,
        };
        let full = sample_given_u(&model, &u, &draw, false, |_, _| {});
        let cropped = sample_given_u(&model, &u, &draw, true, |_, _| {});
        assert_eq!(full, cropped);
        assert_eq!(full.len(), 2 * 3 * 16 * 16);
    }

    #[test]
    fn reconstructions_have_the_asked_shape() {
        let config = ModelConfig {
            image_size: 8,
            downsamples: 1,
            ..ModelConfig::tiny()
        };
        let model = Hybrid::new(&config, Device::Cpu).unwrap();
        let x: Vec<u8> = (0..2 * 3 * 64).map(|i| (i % 256) as u8).collect();
        let mut rows = 0;
        let draw = Draw {
            channels: 3,
            size: 8,
            temperature: 1.0,
            seed: 1,
        };
        let out = reconstruct(&model, &x, 2, 3, &draw, |r, _| rows = r);
        assert_eq!(out.len(), 2 * 3 * 3 * 64);
        assert_eq!(rows, 8);
    }
}
