//! Ancestral sampling (SPEC section 2): `z` from the prior (or from `q(z|x)` for
//! reconstructions), the decoder's map `u`, then PixelCNN++ and the mixing network pixel
//! by pixel in raster order with the bottleneck in evaluation mode, each pixel drawn from
//! its mixture of logistics (channels in order).
//!
//! Three ways to compute the same numbers ([`Method`]): `cached` keeps every activation
//! of PixelCNN++ between pixels and computes each position once ([`cached`]); `rows`
//! reruns the network on the rows that matter (the output at row `r` depends only on rows
//! `<= r`, so while drawing row `r` the network runs on the first `r + 1` rows rounded up
//! to a multiple of 4, the coarsest resolution's step); `naive` reruns the whole network
//! for every pixel, as the reference's sampler does. The random draws are the same, in
//! the same order, whichever the method.

pub mod cached;

use rand::SeedableRng;
use tch::Tensor;

use crate::engine::random::{host_normal, reconstruct_z_seed, sample_z_seed};
use crate::error::Error;
use crate::model::dmol;
use crate::model::hybrid::Hybrid;
use crate::model::nn::Mode;

/// How the network's outputs are computed while drawing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// Every activation cached, each position computed once.
    #[default]
    Cached,
    /// The network rerun, for every pixel, on the rows drawn so far (rounded up to a
    /// multiple of 4).
    Rows,
    /// The whole network rerun for every pixel.
    Naive,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Cached, Method::Rows, Method::Naive];

    pub fn name(self) -> &'static str {
        match self {
            Method::Cached => "cached",
            Method::Rows => "rows",
            Method::Naive => "naive",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown sampling method '{s}': use cached, rows or naive"
                ))
            })
    }
}

/// Draws images given the decoder's map `u` (`[n, dec_out, S, S]`); returns bytes
/// `[n, C, S, S]`. `progress` is called after each row with `(row, rows)`.
pub fn sample_given_u(
    model: &Hybrid,
    u: &Tensor,
    draw: &Draw,
    mut progress: impl FnMut(usize, usize),
) -> Vec<u8> {
    let s = u.size();
    assert_eq!(
        (s[2] as usize, s[3] as usize),
        (draw.size, draw.size),
        "the decoder's map has the drawn images' size"
    );
    assert_eq!(
        draw.channels, model.config.image_channels,
        "the model's image channels are drawn"
    );
    tch::no_grad(|| match draw.method {
        Method::Cached => sample_cached(model, u, draw, &mut progress),
        Method::Rows => sample_rows(model, u, draw, true, &mut progress),
        Method::Naive => sample_rows(model, u, draw, false, &mut progress),
    })
}

/// The bytes drawn so far and the random stream they are drawn from.
struct Canvas {
    bytes: Vec<u8>,
    rng: rand::rngs::StdRng,
    n: usize,
    channels: usize,
    plane: usize,
    temperature: f32,
}

impl Canvas {
    fn new(n: usize, draw: &Draw) -> Self {
        let plane = draw.size * draw.size;
        Self {
            bytes: vec![0u8; n * draw.channels * plane],
            rng: rand::rngs::StdRng::seed_from_u64(draw.seed),
            n,
            channels: draw.channels,
            plane,
            temperature: draw.temperature,
        }
    }

    /// Draws pixel `at` (`r * S + c`) of every image from its DMoL parameters
    /// (`[n, P, 1, 1]`); returns the values drawn, `[n * C]` in `[-1, 1]`, image-major.
    fn draw_pixel(&mut self, params: &Tensor, at: usize) -> Vec<f32> {
        let p_len = params.size()[1] as usize;
        let values = crate::model::ops::host_f32(params);
        let mut drawn = Vec::with_capacity(self.n * self.channels);
        for i in 0..self.n {
            let pixel = dmol::sample_pixel(
                &values[i * p_len..(i + 1) * p_len],
                self.channels,
                self.temperature,
                &mut self.rng,
            );
            for (ch, b) in pixel.into_iter().enumerate() {
                self.bytes[(i * self.channels + ch) * self.plane + at] = b;
                drawn.push(b as f32 / 127.5 - 1.0);
            }
        }
        drawn
    }
}

fn sample_cached(
    model: &Hybrid,
    u: &Tensor,
    draw: &Draw,
    progress: &mut impl FnMut(usize, usize),
) -> Vec<u8> {
    let size = u.size();
    let (n, side) = (size[0] as usize, size[2]);
    let kind = model.compute_kind();
    let mut net = cached::CachedPixelCnn::new(&model.pixelcnn, u, draw.channels as i64, kind);
    let mut canvas = Canvas::new(n, draw);
    for r in 0..side {
        for c in 0..side {
            let v = net.output_at(r, c).to_kind(tch::Kind::Float); // [n, k v_dim, 1, 1]
            let u_at = u.narrow(2, r, 1).narrow(3, c, 1);
            let (params, _) = model.params_from_v(&u_at, &v, Mode::Eval);
            let drawn = canvas.draw_pixel(&params, (r * side + c) as usize);
            let values = Tensor::from_slice(&drawn)
                .to_device(u.device())
                .to_kind(kind);
            net.set_pixel(&values.view([n as i64, draw.channels as i64]));
        }
        progress(r as usize + 1, side as usize);
    }
    canvas.bytes
}

fn sample_rows(
    model: &Hybrid,
    u: &Tensor,
    draw: &Draw,
    crop: bool,
    progress: &mut impl FnMut(usize, usize),
) -> Vec<u8> {
    let channels = draw.channels;
    let size = u.size();
    let (n, size) = (size[0] as usize, size[2] as usize);
    let device = u.device();
    let plane = size * size;
    let mut canvas = Canvas::new(n, draw);
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
            let drawn = canvas.draw_pixel(&p, r * size + c);
            for (i, pixel) in drawn.chunks(channels).enumerate() {
                for (ch, &value) in pixel.iter().enumerate() {
                    x_values[(i * channels + ch) * plane + r * size + c] = value;
                }
            }
        }
        progress(r + 1, size);
    }
    canvas.bytes
}

/// What to draw (the image shape, the noise temperature and the seed), and how.
#[derive(Debug, Clone, Copy)]
pub struct Draw {
    pub channels: usize,
    pub size: usize,
    /// Scales the prior's and the logistics' noise (1 = the model's distribution).
    pub temperature: f32,
    pub seed: u64,
    pub method: Method,
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
    let z = host_normal(shape, sample_z_seed(draw.seed), model.device()) * draw.temperature as f64;
    let u = tch::no_grad(|| model.decode(&z)); // [n, dec_out, S, S]
    sample_given_u(model, &u, draw, progress)
}

/// Each of the `n` images of `x` (`plane` bytes each) followed by its `k`
/// reconstructions from `recon` (image-major, as [`reconstruct`] returns them): the
/// cells of a grid with a row per image.
pub fn beside_reconstructions(x: &[u8], recon: &[u8], n: usize, k: usize, plane: usize) -> Vec<u8> {
    let mut cells = Vec::with_capacity(n * (k + 1) * plane);
    for i in 0..n {
        cells.extend_from_slice(&x[i * plane..(i + 1) * plane]);
        cells.extend_from_slice(&recon[i * k * plane..(i + 1) * k * plane]);
    }
    cells
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
    let xt = crate::io::data::images_to_tensor(&rep, [n * k, channels, size, size], device);
    let u = tch::no_grad(|| {
        let (mean, logvar) = model.encode(&xt);
        let noise = host_normal(
            model.latent_shape(n * k, size),
            reconstruct_z_seed(seed),
            device,
        );
        let z = mean + (logvar * 0.5).exp() * noise; // z ~ q(z|x)
        model.decode(&z)
    });
    sample_given_u(model, &u, draw, progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use tch::Device;

    /// The three methods draw the same images, byte for byte, from a model of `config`
    /// with random weights, in float64 (so that the different groupings of the same sums
    /// cannot round differently and move a draw across a level).
    fn methods_agree(config: ModelConfig, n: usize, temperature: f32, seed: u64) {
        let mut model = Hybrid::new(&config, Device::Cpu).unwrap();
        model.use_f64();
        // Biases start at zero: move every weight so that a misplaced bias (or a missing
        // zero row of a shifted map) shows.
        tch::no_grad(|| {
            for (_, p) in model.params() {
                let _ = p.shallow_clone().g_add_(&(p.randn_like() * 0.05));
            }
        });
        let size = config.image_size;
        let z = host_normal(model.latent_shape(n, size), seed, Device::Cpu);
        let u = tch::no_grad(|| model.decode(&z));
        let draw = |method| Draw {
            channels: config.image_channels,
            size,
            temperature,
            seed,
            method,
        };
        let naive = sample_given_u(&model, &u, &draw(Method::Naive), |_, _| {});
        assert_eq!(naive.len(), n * config.image_channels * size * size);
        // Not a constant image: the test would pass for a sampler that ignores the network.
        assert!(naive.iter().any(|&b| b != naive[0]));
        for method in [Method::Cached, Method::Rows] {
            let other = sample_given_u(&model, &u, &draw(method), |_, _| {});
            let differ = naive.iter().zip(&other).filter(|(a, b)| a != b).count();
            assert_eq!(differ, 0, "{method}: {differ} bytes differ from naive");
        }
    }

    #[test]
    fn cached_rows_and_naive_agree_tiny_rgb() {
        let config = ModelConfig::tiny().with_bottleneck("gd:0.3".parse().unwrap());
        methods_agree(config, 3, 0.8, 11);
    }

    #[test]
    fn cached_rows_and_naive_agree_tiny_one_channel() {
        let config = ModelConfig {
            image_channels: 1,
            image_size: 28,
            downsamples: 2,
            ..ModelConfig::tiny().with_bottleneck("vb:0.1".parse().unwrap())
        };
        methods_agree(config, 2, 1.0, 5);
    }

    #[test]
    fn cached_rows_and_naive_agree_small_rgb() {
        let config = ModelConfig {
            image_size: 16,
            downsamples: 2,
            ..ModelConfig::small().with_bottleneck("vb:0.1".parse().unwrap())
        };
        methods_agree(config, 2, 1.3, 3);
    }

    #[test]
    fn cached_rows_and_naive_agree_small_one_channel() {
        let config = ModelConfig {
            image_channels: 1,
            image_size: 16,
            downsamples: 2,
            ..ModelConfig::small().with_bottleneck("aux:1".parse().unwrap())
        };
        methods_agree(config, 3, 0.6, 8);
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
            method: Method::Cached,
        };
        let out = reconstruct(&model, &x, 2, 3, &draw, |r, _| rows = r);
        assert_eq!(out.len(), 2 * 3 * 3 * 64);
        assert_eq!(rows, 8);
    }
}
