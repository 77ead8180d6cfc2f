//! Files written by the reference's `hybrid_ref.py export` (format in
//! `shared/reference/README.md`): PyTorch `state_dict` weights, the input images and
//! `z` noise, and every intermediate result of one evaluation-mode forward pass.
//! `verify` reruns that pass here and compares; `import` turns the weights into a run.

use std::collections::BTreeMap;
use std::path::Path;

use tch::Device;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::io::tensor_file::{Stored, TensorFile, load_weights};
use crate::model::bottleneck::BottleneckSpec;
use crate::model::hybrid::Hybrid;
use crate::model::nn::Mode;
use crate::model::ops::host_f32;
use crate::model::units::bits_per_dim;

/// The metadata `schema` of a reference export.
pub const SCHEMA: &str = "hybrid_ref-export-1";
/// The largest relative error `verify` accepts per tensor (float32 against float32 with
/// another summation order; the files' own `f32_vs_f64` figures are about 1e-7 for
/// activations and 3e-6 for `log_prob`).
pub const TOLERANCE: f64 = 1e-4;

/// A reference export: its model configuration and its tensors.
pub struct Export {
    pub config: ModelConfig,
    pub preset: String,
    /// The CPU threads PyTorch computed the expected tensors with (float32 sums depend
    /// on the split of the work), when the file says.
    pub threads: Option<usize>,
    pub file: TensorFile,
}

impl Export {
    pub fn read(path: &Path) -> Result<Self> {
        let file = TensorFile::read(path)?;
        let meta = |key: &str| {
            file.metadata.get(key).cloned().ok_or_else(|| {
                Error::Checkpoint(format!(
                    "{}: no `{key}` in the metadata; is this a file written by \
                     `hybrid_ref.py export`?",
                    path.display()
                ))
            })
        };
        let schema = meta("schema")?;
        if schema != SCHEMA {
            return Err(Error::Checkpoint(format!(
                "{}: schema `{schema}`, expected `{SCHEMA}`",
                path.display()
            )));
        }
        let mut config: ModelConfig = serde_json::from_str(&meta("config")?).map_err(|e| {
            Error::Checkpoint(format!(
                "{}: unreadable `config` metadata: {e}",
                path.display()
            ))
        })?;
        config.bottleneck = meta("bottleneck")?.parse::<BottleneckSpec>()?;
        config.validate()?;
        Ok(Self {
            config,
            preset: meta("preset")?,
            threads: file
                .metadata
                .get("torch_threads")
                .and_then(|t| t.parse().ok()),
            file,
        })
    }

    /// A model with the export's weights.
    pub fn model(&self, origin: &str, device: Device) -> Result<Hybrid> {
        let model = Hybrid::new(&self.config, device)?;
        load_weights(
            model.params(),
            &self.file.tensors,
            origin,
            &["input.", "expect."],
        )?;
        Ok(model)
    }

    fn tensor(&self, name: &str) -> Result<&Stored> {
        self.file
            .tensors
            .get(name)
            .ok_or_else(|| Error::Checkpoint(format!("the export has no tensor `{name}`")))
    }
}

/// The outcome of `verify`: ibvae's per-image figures and the largest relative error
/// of each compared tensor.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    pub per_image: BTreeMap<String, Vec<f64>>,
    pub max_rel_error: BTreeMap<String, f64>,
    pub tolerance: f64,
    pub ok: bool,
}

/// `max |got - want| / max |want|` (absolute when `want` is all zeros).
pub fn max_rel_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "compared tensors have the same size");
    let scale = want.iter().map(|w| (*w as f64).abs()).fold(0.0, f64::max);
    let diff = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - *w as f64).abs())
        .fold(0.0, f64::max);
    if scale > 0.0 { diff / scale } else { diff }
}

/// Reruns the export's forward pass and compares every `expect.*` tensor it can.
pub fn verify(path: &Path, device: Device) -> Result<Verification> {
    tch::no_grad(|| verify_inner(path, device))
}

fn verify_inner(path: &Path, device: Device) -> Result<Verification> {
    let export = Export::read(path)?;
    let model = export.model(&path.display().to_string(), device)?;
    let x = export.tensor("input.x")?;
    let [n, c, h, w]: [usize; 4] = x
        .shape()
        .try_into()
        .map_err(|_| Error::Checkpoint("`input.x` is not [n, C, H, W]".into()))?;
    let bytes: Vec<u8> = match x {
        Stored::U8 { data, .. } => data.clone(),
        Stored::F32 { .. } => {
            return Err(Error::Checkpoint("`input.x` should hold bytes (U8)".into()));
        }
    };
    let x = crate::io::data::images_to_tensor(&bytes, [n, c, h, w], device);
    let z_noise = export.tensor("input.z_noise")?.to_tensor(device);
    let out = model.forward_outputs(&x, Some(&z_noise), Mode::Eval);
    let dims = export.config.dims();
    let t = &out.terms;
    let nelbo: Vec<f32> = host_f32(&t.nelbo);
    let elbo_bpd: Vec<f32> = nelbo
        .iter()
        .map(|v| bits_per_dim(*v as f64, dims) as f32)
        .collect();
    let mut got: Vec<(&str, Vec<f32>)> = vec![
        ("mean", host_f32(&out.mean)),
        ("logvar", host_f32(&out.logvar)),
        ("z", host_f32(&out.z)),
        ("u", host_f32(&out.u)),
        ("v", host_f32(&out.v)),
        ("params", host_f32(&out.params)),
        ("log_prob", host_f32(&out.log_prob)),
        ("recon", host_f32(&t.recon)),
        ("kl", host_f32(&t.kl)),
        ("vb_rate", host_f32(&t.vb_rate)),
        ("aux_nll", host_f32(&t.aux_nll)),
        ("loss", host_f32(&out.loss)),
        ("elbo_bpd", elbo_bpd.clone()),
    ];
    if let (Some(p), Some(lp)) = (&out.aux_params, &out.aux_log_prob) {
        got.push(("aux_params", host_f32(p)));
        got.push(("aux_log_prob", host_f32(lp)));
    }
    let mut max_rel = BTreeMap::new();
    for (name, values) in &got {
        let key = format!("expect.{name}");
        if let Some(want) = export.file.tensors.get(&key) {
            let want = want.to_f32();
            if want.len() != values.len() {
                return Err(Error::Checkpoint(format!(
                    "`{key}` has {} values, ibvae computed {}",
                    want.len(),
                    values.len()
                )));
            }
            max_rel.insert(name.to_string(), max_rel_error(values, &want));
        }
    }
    let as_f64 = |v: &[f32]| v.iter().map(|x| *x as f64).collect::<Vec<f64>>();
    let mut per_image = BTreeMap::new();
    for name in ["recon", "kl", "vb_rate"] {
        let v = &got
            .iter()
            .find(|(n, _)| *n == name)
            .expect("computed above")
            .1;
        per_image.insert(name.to_string(), as_f64(v));
    }
    per_image.insert("elbo_bpd".to_string(), as_f64(&elbo_bpd));
    let ok = max_rel.values().all(|e| *e <= TOLERANCE);
    Ok(Verification {
        per_image,
        max_rel_error: max_rel,
        tolerance: TOLERANCE,
        ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/reference/fixtures")
            .join(name)
    }

    /// How far two float32 computations of the same forward pass may drift apart,
    /// relative to the largest value of a tensor: every operation on the longest path
    /// rounds by at most the unit roundoff `u = 2^-24`, so one pass is within about
    /// `depth * u` of the exact result and two passes that sum in other orders (PyTorch's
    /// and LibTorch's kernels, on CPUs with other vector widths) within twice that. The
    /// depth counts the layers on the longest path: the encoder's and decoder's
    /// convolutions (strided ones, three per bottleneck block, the input and output
    /// layers), the PixelCNN++'s (two per gated resnet and one strided or transposed
    /// convolution per resolution, down and up, in each of its three stages, plus its input
    /// and output layers), the mixing network's two, and about eight in the mixture of
    /// logistics (scales, logistic CDFs, their difference, log, log-softmax, log-sum-exp).
    fn float32_bound(config: &ModelConfig) -> f64 {
        let u = f64::from(f32::EPSILON) / 2.0;
        let vae = 2 * (config.downsamples + 3 * config.n_blocks + 2);
        let pixelcnn = 6 * (2 * config.nr_resnet + 1) + 4;
        let depth = vae + pixelcnn + 2 + 8;
        2.0 * depth as f64 * u
    }

    /// `verify` on one thread, every tensor within [`float32_bound`].
    fn assert_within_rounding(path: &Path) -> Verification {
        tch::set_num_threads(1);
        let v = verify(path, Device::Cpu).unwrap();
        let bound = float32_bound(&Export::read(path).unwrap().config);
        let worst = v.max_rel_error.values().copied().fold(0.0, f64::max);
        assert!(
            v.ok && worst <= bound,
            "{}: worst {worst:.3e} over the bound {bound:.3e}: {:?}",
            path.display(),
            v.max_rel_error
        );
        v
    }

    fn check(name: &str) {
        let Some(path) = crate::testing::required(&fixture(name), "a reference fixture") else {
            return;
        };
        // Process-wide, but no other test depends on the thread count.
        let v = assert_within_rounding(&path);
        for key in [
            "mean", "u", "v", "params", "log_prob", "recon", "kl", "vb_rate", "elbo_bpd",
        ] {
            assert!(v.max_rel_error.contains_key(key), "{key} was not compared");
        }
        assert!(v.ok, "{name}: {:?}", v.max_rel_error);
    }

    #[test]
    fn tiny_gd_fixture_matches_the_reference() {
        check("tiny_gd.safetensors");
    }

    #[test]
    fn tiny_vb_fixture_matches_the_reference() {
        check("tiny_vb.safetensors");
    }

    #[test]
    fn own_exports_match_the_reference() {
        // small preset with gd, the aux baseline, and a one-channel model.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for name in [
            "small_gd.safetensors",
            "tiny_aux.safetensors",
            "tiny_gray_gd.safetensors",
        ] {
            let v = assert_within_rounding(&dir.join(name));
            if name == "tiny_aux.safetensors" {
                assert!(v.max_rel_error.contains_key("aux_log_prob"));
            }
        }
    }

    #[test]
    fn another_architecture_is_refused_by_name() {
        let Some(path) = crate::testing::required(&fixture("tiny_gd.safetensors"), "a fixture")
        else {
            return;
        };
        let export = Export::read(&path).unwrap();
        let other = Hybrid::new(
            &ModelConfig::tiny().with_bottleneck(BottleneckSpec::Vb { beta: 0.1 }),
            Device::Cpu,
        )
        .unwrap();
        let err = load_weights(
            other.params(),
            &export.file.tensors,
            "tiny_gd",
            &["input.", "expect."],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("pixelcnn.nin_out.V") && err.contains("shape"),
            "{err}"
        );
    }
}
