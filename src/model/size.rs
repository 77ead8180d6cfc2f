//! The model's sizes computed from its config alone, without building it or allocating a
//! tensor: the exact parameter count and an estimate of the activations a training
//! forward pass keeps per image. Used to refuse a config too big for memory before
//! anything is allocated.
//!
//! Every sum and product saturates at `u128::MAX`, so that no config, however absurd
//! (every field at `usize::MAX`), overflows or panics.

use std::iter::Sum;
use std::ops::{Add, Mul};

use crate::config::ModelConfig;
use crate::model::bottleneck::BottleneckSpec;

/// A count of numbers that saturates at `u128::MAX` instead of overflowing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Count(u128);

impl Add for Count {
    type Output = Count;

    fn add(self, other: Count) -> Count {
        Count(self.0.saturating_add(other.0))
    }
}

impl Mul for Count {
    type Output = Count;

    fn mul(self, other: Count) -> Count {
        Count(self.0.saturating_mul(other.0))
    }
}

impl Sum for Count {
    fn sum<I: Iterator<Item = Count>>(iter: I) -> Count {
        iter.fold(Count(0), Add::add)
    }
}

/// A config's size as a [`Count`].
fn n(x: usize) -> Count {
    Count(x as u128)
}

/// `x` counted when `present`, else nothing.
fn when(present: bool, x: Count) -> Count {
    if present { x } else { Count(0) }
}

/// Numbers per pixel of the mixture of logistics (`dmol::num_params`).
fn dmol_params(model: &ModelConfig) -> Count {
    let per_component = if model.image_channels == 3 { 10 } else { 3 };
    n(model.nr_mix) * Count(per_component)
}

/// A plain convolution (or transposed convolution) with a bias: `cin * cout * kernel`
/// weights and `cout` biases, `kernel` being the kernel's area.
fn conv(cin: Count, cout: Count, kernel: Count) -> Count {
    cin * cout * kernel + cout
}

/// A weight-normalised convolution (or transposed convolution): `V` of
/// `cin * cout * kernel`, and `g` and `b` of `cout` each.
fn wn_conv(cin: Count, cout: Count, kernel: Count) -> Count {
    cin * cout * kernel + Count(2) * cout
}

/// A bottleneck block of the VAE: 1x1 `W -> Wb`, 3x3 `Wb -> Wb`, 1x1 `Wb -> W`.
fn block_params(width: Count, block_width: Count) -> Count {
    conv(width, block_width, Count(1))
        + conv(block_width, block_width, Count(9))
        + conv(block_width, width, Count(1))
}

/// A gated resnet of `nf` filters with a kernel of area `kernel`, a short-cut input of
/// `aux_ch` channels (0 for none) and a conditioning map of `cond_ch` channels.
fn gated_resnet_params(nf: Count, kernel: Count, aux_ch: Count, cond_ch: Count) -> Count {
    let two = Count(2);
    wn_conv(two * nf, nf, kernel)
        + when(aux_ch.0 > 0, wn_conv(two * aux_ch, nf, Count(1)))
        + wn_conv(two * nf, two * nf, kernel)
        + when(cond_ch.0 > 0, cond_ch * two * nf)
}

/// The number of parameters of the hybrid model `model` describes, saturating at
/// `u128::MAX`: what `Hybrid::new(model, device)?.num_params()` reports
/// ([`Hybrid::new`](crate::model::hybrid::Hybrid::new)), weights and biases of every
/// layer, with `vb`'s doubled PixelCNN++ output and `aux`'s head.
pub fn param_count(model: &ModelConfig) -> u128 {
    let (one, two, three) = (Count(1), Count(2), Count(3));
    let c = n(model.image_channels);
    let w = n(model.width);
    let wb = n(model.block_width);
    let z = n(model.z_channels);
    let d = n(model.downsamples);
    let blocks = n(model.n_blocks) * block_params(w, wb);
    let dec_out = n(model.dec_out);
    let halving = Count(16); // 4x4 kernels
    // Encoder: the first halving conv from the image, the others W -> W.
    let encoder = when(
        model.downsamples > 0,
        conv(c, w, halving) + Count(d.0.saturating_sub(1)) * conv(w, w, halving),
    ) + blocks
        + conv(w, two * z, one);
    // Decoder: the last transposed conv to dec_out, the others W -> W.
    let decoder = conv(z, w, Count(9))
        + blocks
        + when(
            model.downsamples > 0,
            Count(d.0.saturating_sub(1)) * conv(w, w, halving) + conv(w, dec_out, halving),
        );
    // PixelCNN++: 2x3 kernels in the `u` stream, 2x2 in `ul`.
    let nf = n(model.nr_filters);
    let (down, down_right) = (Count(6), Count(4));
    let c0 = c + one; // the image and a channel of ones
    let out_ch = n(model.bottleneck.pixelcnn_channels(1)) * n(model.v_dim);
    let up_blocks = three * n(model.nr_resnet);
    let dn_blocks = up_blocks + two;
    let pixelcnn = wn_conv(c0, nf, Count(6))
        + wn_conv(c0, nf, Count(3))
        + wn_conv(c0, nf, Count(2))
        + up_blocks * gated_resnet_params(nf, down, Count(0), dec_out)
        + up_blocks * gated_resnet_params(nf, down_right, nf, dec_out)
        + two * (wn_conv(nf, nf, down) + wn_conv(nf, nf, down_right))
        + dn_blocks * gated_resnet_params(nf, down, nf, dec_out)
        + dn_blocks * gated_resnet_params(nf, down_right, two * nf, dec_out)
        + two * (wn_conv(nf, nf, down) + wn_conv(nf, nf, down_right))
        + wn_conv(nf, out_ch, one);
    let hidden = n(model.mix_hidden);
    let p = dmol_params(model);
    let mix = conv(dec_out + n(model.v_dim), hidden, one) + conv(hidden, p, one);
    let aux_head = when(model.bottleneck.has_aux_decoder(), conv(dec_out, p, one));
    (encoder + decoder + pixelcnn + mix + aux_head).0
}

/// The area `(size / 2^j)^2` of the map `j` halvings below `size` (0 once nothing is
/// left).
fn area(size: usize, j: usize) -> Count {
    let side = u32::try_from(j)
        .ok()
        .and_then(|j| size.checked_shr(j))
        .unwrap_or(0);
    n(side) * n(side)
}

/// `sum of area(size, j)` for `j` in `from..to`; terms past the last halving that leaves
/// a pixel are zero and are skipped.
fn areas(size: usize, from: usize, to: usize) -> Count {
    let to = to.min(usize::BITS as usize + 1);
    (from..to).map(|j| area(size, j)).sum()
}

/// Activations per pixel of [`crate::model::dmol::log_prob`] for the config's `C` image
/// channels and `K = nr_mix` components: what the fused operation keeps for its gradient,
/// seven tensors over `[C, K]` (`1/s`, the two CDF arguments and the centre's, the two
/// sigmoids and their difference), one more for its three boolean masks (a quarter of a
/// float each), the RGB coefficients' `tanh`, and the `[K]` log-softmax and joint; and
/// the forward pass's temporaries at its peak (the branches' values, their selections
/// and sums), about ten more over `[C, K]`, alive on top of everything else.
fn dmol_activations(model: &ModelConfig) -> Count {
    let k = n(model.nr_mix);
    let ck = n(model.image_channels) * k;
    Count(18) * ck + when(model.image_channels == 3, ck) + Count(2) * k + Count(1)
}

/// Activations of one gated resnet per pixel, with `nf` filters and a short-cut input of
/// `aux_ch` channels (0 for none): the two fused, padded `concat_elu`s (one tensor each,
/// which the convolution after it reads), the outputs of the two shifted convolutions,
/// the conditioning term, the dropout's output (when `dropout`; its backward pass keeps
/// only the random words, a 64th of the mask), the gate's
/// sigmoid and its fused output, and for a short-cut its `concat_elu` and 1x1
/// convolution.
fn gated_resnet_activations(nf: Count, aux_ch: Count, dropout: bool) -> Count {
    Count(11) * nf + when(dropout, Count(2) * nf) + when(aux_ch.0 > 0, Count(2) * aux_ch + nf)
}

/// An estimate of the float32 elements a training forward pass of one image keeps for
/// the backward pass: the sum, over every step of the forward pass, of the number of
/// elements its output has for one image at that step's resolution. It counts
///
/// - the image and PixelCNN++'s input with its channel of ones;
/// - in the VAE, every convolution and transposed convolution, every ELU, each bottleneck
///   block's residual sum, the posterior's parameters, the sampled `z` and the KL's
///   elementwise terms;
/// - in PixelCNN++, the decoder's map pooled to the two lower resolutions, every shifted
///   convolution's padded input and output, the shifts, each gated resnet's
///   `concat_elu`s, dropout mask and output, conditioning term and gate, the down pass's
///   concatenated short-cut inputs, the stride-2 convolutions and transposed
///   convolutions, and the output layer with its ELU;
/// - the bottleneck's noise and elementwise steps (`gd` in training, `vb`'s softplus,
///   KL and sample);
/// - the mixing network's concatenation, hidden layer, ELU and output, and the mixture
///   of logistics' elementwise terms (again for the `aux` head).
///
/// Views (chunks, narrows, reshapes) count nothing; integer and boolean masks count one
/// element per value; the weight-normalised weights, computed once per batch, and
/// per-image scalars are left out. The count is exact in how it scales (linearly in the
/// widths, `nr_resnet`, `n_blocks` and `nr_mix`, with the square of `image_size`), not in
/// its constant factors. Saturates at `u128::MAX`.
pub fn activation_floats_per_image(model: &ModelConfig) -> u128 {
    let (one, two) = (Count(1), Count(2));
    let s = model.image_size;
    let d = model.downsamples;
    let c = n(model.image_channels);
    let w = n(model.width);
    let wb = n(model.block_width);
    let z = n(model.z_channels);
    let dec_out = n(model.dec_out);
    let v = n(model.v_dim);
    let latent = area(s, d);
    let blocks = n(model.n_blocks) * (Count(3) * w + Count(4) * wb) * latent;
    let image = area(s, 0);

    // VAE: halving convs and their ELUs; blocks; ELU, 1x1 conv to [mean | logvar]; the
    // sample z (scale, exp, noise, product, sum) and the KL's four elementwise terms.
    let encoder =
        two * w * areas(s, 1, d.saturating_add(1)) + blocks + (w + Count(11) * z) * latent;
    // Decoder: 3x3 conv, blocks, ELU; transposed convs (ELU after all but the last).
    let decoder =
        (w + w) * latent + blocks + when(d > 0, dec_out * image + two * w * areas(s, 1, d));

    // PixelCNN++ at the image's area and the two below it.
    let nf = n(model.nr_filters);
    let nr = n(model.nr_resnet);
    let dropout = model.dropout_p > 0.0;
    let res = [area(s, 0), area(s, 1), area(s, 2)];
    let pooled = dec_out * (res[1] + res[2]);
    // The ones and the image with them; three initial convs with their padded inputs
    // and outputs, the shifts, and the sum of the two `ul` halves.
    let init = (one + Count(4) * (c + one) + Count(7) * nf) * res[0];
    let up_pair =
        gated_resnet_activations(nf, Count(0), dropout) + gated_resnet_activations(nf, nf, dropout);
    let dn_pair = gated_resnet_activations(nf, nf, dropout)
        + two * nf // concat[u, saved ul]
        + gated_resnet_activations(nf, two * nf, dropout);
    let up: Count = res.iter().map(|&a| nr * up_pair * a).sum();
    // Two streams of stride-2 convs: padded input above, output below.
    let strided = two * nf * (res[0] + res[1] + res[1] + res[2]);
    let dn = nr * dn_pair * res[2] + (nr + one) * dn_pair * (res[1] + res[0]);
    // Two streams of transposed convs up to the two higher resolutions.
    let deconvs = two * nf * (res[1] + res[0]);
    let out_ch = n(model.bottleneck.pixelcnn_channels(1)) * v;
    let nin_out = (nf + out_ch) * res[0];
    let pixelcnn = pooled + init + up + strided + dn + deconvs + nin_out;

    let bottleneck = match model.bottleneck {
        BottleneckSpec::Gd { rate } if rate > 0.0 => Count(4) * v,
        BottleneckSpec::Vb { .. } => Count(12) * v,
        _ => Count(0),
    } * image;
    let p = dmol_params(model);
    let hidden = n(model.mix_hidden);
    let mix = (dec_out + v + two * hidden + p + dmol_activations(model)) * image;
    let aux = when(
        model.bottleneck.has_aux_decoder(),
        (p + dmol_activations(model)) * image,
    );
    let inputs = c * image;
    (inputs + encoder + decoder + pixelcnn + bottleneck + mix + aux).0
}

/// Bytes of float32 numbers a training step of `batch` images holds: the parameters
/// five times (weights, gradients, Adam's two moments, the Polyak average) and the
/// activations of [`activation_floats_per_image`]. On the CPU it came within 14% of the
/// growth of the peak resident memory per image of `tiny` and `small` (docs/performance.md).
pub fn training_bytes(model: &ModelConfig, batch: usize) -> u128 {
    let floats = (Count(5) * Count(param_count(model)))
        + Count(batch as u128) * Count(activation_floats_per_image(model));
    (Count(4) * floats).0
}

/// Bytes an inference over `n` images at once holds at most: the parameters and every
/// activation of the forward pass (as the cached sampler keeps them).
pub fn inference_bytes(model: &ModelConfig, n: usize) -> u128 {
    let floats =
        Count(param_count(model)) + Count(n as u128) * Count(activation_floats_per_image(model));
    (Count(4) * floats).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Preset;
    use crate::model::hybrid::Hybrid;

    const SPECS: [&str; 4] = ["gd:0.15", "vb:0.1", "none", "aux"];

    fn built(config: &ModelConfig) -> u128 {
        Hybrid::new(config, tch::Device::Cpu).unwrap().num_params() as u128
    }

    #[test]
    fn param_count_is_the_built_models_for_every_preset_and_bottleneck() {
        for preset in Preset::ALL {
            for spec in SPECS {
                let config = preset.model().with_bottleneck(spec.parse().unwrap());
                assert_eq!(param_count(&config), built(&config), "{preset} {spec}");
            }
        }
    }

    #[test]
    fn param_count_for_one_channel_28x28_images() {
        for preset in [Preset::Tiny, Preset::Small] {
            for spec in SPECS {
                let mut config = preset
                    .model()
                    .with_bottleneck(spec.parse().unwrap())
                    .with_images(1, 28);
                config.downsamples = 2;
                assert_eq!(param_count(&config), built(&config), "{preset} {spec}");
            }
        }
    }

    #[test]
    fn param_count_of_the_documented_presets() {
        let gd = |preset: Preset| {
            param_count(&preset.model().with_bottleneck("gd:0.1".parse().unwrap()))
        };
        assert_eq!(gd(Preset::Tiny), 63_222);
        assert_eq!(gd(Preset::Mini), 242_206);
        assert_eq!(gd(Preset::Small), 978_030);
        assert_eq!(gd(Preset::Paper), 81_887_662);
    }

    #[test]
    fn param_count_of_a_huge_model_is_huge() {
        let config = ModelConfig {
            nr_filters: 100_000,
            ..ModelConfig::paper()
        };
        // Each of the gated resnets' second convolutions alone: (2 nf)^2 * 4 or 6.
        assert!(param_count(&config) > 100_000u128 * 100_000 * 16 * 30);
        assert!(activation_floats_per_image(&config) > 100_000u128 * 1024 * 100);
    }

    fn activations_with(change: impl Fn(&mut ModelConfig)) -> u128 {
        let mut config = ModelConfig::small().with_bottleneck("gd:0.1".parse().unwrap());
        change(&mut config);
        activation_floats_per_image(&config)
    }

    #[test]
    fn activations_are_linear_in_nr_filters() {
        let at = |nf| activations_with(|c| c.nr_filters = nf);
        let (a, b, c) = (at(32), at(64), at(96));
        assert!(a < b && b < c);
        assert_eq!(b - a, c - b, "equal steps of nr_filters add equal amounts");
        // PixelCNN++ dominates: doubling its filters nearly doubles the total.
        assert!(b as f64 > 1.6 * a as f64, "{a} -> {b}");
    }

    /// A change to a config.
    type Change = fn(&mut ModelConfig);

    #[test]
    fn activations_grow_with_every_size() {
        let base = activations_with(|_| {});
        let bigger: [(&str, Change); 9] = [
            ("nr_resnet", |c| c.nr_resnet += 1),
            ("width", |c| c.width *= 2),
            ("block_width", |c| c.block_width *= 2),
            ("n_blocks", |c| c.n_blocks += 1),
            ("nr_mix", |c| c.nr_mix += 1),
            ("dec_out", |c| c.dec_out *= 2),
            ("z_channels", |c| c.z_channels *= 2),
            ("mix_hidden", |c| c.mix_hidden *= 2),
            ("vb", |c| c.bottleneck = "vb:0.1".parse().unwrap()),
        ];
        for (what, change) in bigger {
            let a = activations_with(change);
            assert!(a > base, "{what}: {base} -> {a}");
        }
        assert!(activations_with(|c| c.dropout_p = 0.0) < base);
        assert!(activations_with(|c| c.bottleneck = BottleneckSpec::None) < base);
    }

    #[test]
    fn activations_quadruple_when_the_image_side_doubles() {
        let mut last = activations_with(|c| c.image_size = 16);
        for size in [32, 64, 128] {
            let a = activations_with(|c| c.image_size = size);
            let ratio = a as f64 / last as f64;
            assert!((3.5..=4.5).contains(&ratio), "{size}: ratio {ratio}");
            last = a;
        }
        // Grey images are smaller than colour ones of the same side.
        let grey = activations_with(|c| {
            c.image_channels = 1;
        });
        assert!(grey < activations_with(|_| {}));
    }

    #[test]
    fn every_field_at_usize_max_gives_a_huge_count_without_panicking() {
        for spec in SPECS {
            let config = ModelConfig {
                n_blocks: usize::MAX,
                width: usize::MAX,
                block_width: usize::MAX,
                dec_out: usize::MAX,
                z_channels: usize::MAX,
                downsamples: usize::MAX,
                nr_resnet: usize::MAX,
                nr_filters: usize::MAX,
                nr_mix: usize::MAX,
                v_dim: usize::MAX,
                mix_hidden: usize::MAX,
                dropout_p: 0.5,
                image_channels: usize::MAX,
                image_size: usize::MAX,
                bottleneck: spec.parse().unwrap(),
            };
            assert_eq!(param_count(&config), u128::MAX, "{spec}");
            assert_eq!(activation_floats_per_image(&config), u128::MAX, "{spec}");
            for downsamples in [0, 1, 63, 64, 65] {
                let config = ModelConfig {
                    downsamples,
                    ..config.clone()
                };
                assert!(
                    param_count(&config) > u64::MAX as u128,
                    "{spec} {downsamples}"
                );
                assert!(activation_floats_per_image(&config) > u64::MAX as u128);
            }
        }
        let zeros = ModelConfig {
            n_blocks: 0,
            width: 0,
            block_width: 0,
            dec_out: 0,
            z_channels: 0,
            downsamples: 0,
            nr_resnet: 0,
            nr_filters: 0,
            nr_mix: 0,
            v_dim: 0,
            mix_hidden: 0,
            dropout_p: f64::NAN,
            image_channels: 0,
            image_size: 0,
            bottleneck: BottleneckSpec::None,
        };
        assert_eq!(activation_floats_per_image(&zeros), 0);
        assert!(param_count(&zeros) < 100);
    }
}
