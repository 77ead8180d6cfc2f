//! The one experiment config: everything that defines a run, saved as `config.json` in
//! its directory before the first step and read back by `eval`, `sample`, `--resume` and
//! every sweep member. It is the interface between the command line, training,
//! evaluation and sweeps: each layer reads it, none passes settings around it.

mod model;
mod train;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::bottleneck::BottleneckSpec;

pub use model::{ModelConfig, Preset};
pub use train::{AdamSettings, TrainConfig};

/// Everything that defines a run, saved as `config.json` in its directory before the
/// first step and read back by `eval`, `sample` and `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentConfig {
    /// The preset the model started from (informational; `model` is authoritative).
    pub preset: Preset,
    pub model: ModelConfig,
    pub train: TrainConfig,
}

impl ExperimentConfig {
    /// The config of a run of `preset` with `bottleneck` on the data in `data_dir`, whose
    /// images have `channels` channels of side `size`, with `overrides` applied: the one
    /// place where flags become a config, for `ibvae train` and every member of a sweep.
    pub fn resolve(
        preset: Preset,
        bottleneck: BottleneckSpec,
        data_dir: std::path::PathBuf,
        (channels, size): (usize, usize),
        overrides: &Overrides,
    ) -> Result<Self> {
        let o = overrides;
        let mut model = preset.model();
        if let Some(file) = &o.model_file {
            model = model.with_file(file)?;
        }
        let mut model = model.with_bottleneck(bottleneck);
        if let Some(d) = o.downsamples {
            model.downsamples = d;
        }
        if let Some(p) = o.dropout {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::Config(format!(
                    "--dropout is a probability in [0, 1), got {p}"
                )));
            }
            model.dropout_p = p;
        }
        let model = model.with_images(channels, size);
        model.validate().map_err(|e| {
            Error::Config(format!(
                "the {size}x{size} images in {} do not fit preset {preset}: {e}",
                data_dir.display()
            ))
        })?;
        let mut train = TrainConfig::for_preset(preset, data_dir);
        if let Some(e) = o.epochs {
            train.epochs = e;
        }
        train.steps = o.steps;
        if let Some(b) = o.batch {
            train.batch = b;
            train.eval_batch = b.saturating_mul(4);
        }
        if let Some(v) = o.lr_start {
            train.lr_start = v;
        }
        if let Some(v) = o.lr_end {
            train.lr_end = v;
        }
        train.eval_images = o.eval_images;
        if let Some(v) = o.seed {
            train.seed = v;
        }
        train.eval_every = o.eval_every;
        train.eval_first = o.eval_first;
        if let Some(v) = o.checkpoint_minutes {
            train.checkpoint_minutes = v;
        }
        train.ema_decay = o.ema_decay;
        if let Some(h) = o.lr_hold {
            train.lr_hold = h;
        }
        train.image_size = o.image_size;
        train.validate()?;
        Ok(Self {
            preset,
            model,
            train,
        })
    }
}

impl ExperimentConfig {
    /// The settings in which `self` (what was saved) and `asked` differ, one per line:
    /// `train.steps: 12 here, 24 asked`.
    pub fn differences(&self, asked: &ExperimentConfig) -> Vec<String> {
        differences(self, asked, ["here", "asked"])
    }
}

/// The fields in which `a` and `b` differ, by their path in JSON, one per line:
/// `nr_filters: 8 <label a>, 16 <label b>`.
pub fn differences<T: Serialize>(a: &T, b: &T, labels: [&str; 2]) -> Vec<String> {
    let mut out = Vec::new();
    let json = |c: &T| serde_json::to_value(c).expect("configs serialise");
    diff_json("", &json(a), &json(b), labels, &mut out);
    out
}

/// `differences` in one line: the first few, and how many more there are.
pub fn summarize_differences(differences: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut text = differences[..differences.len().min(SHOWN)].join("; ");
    if differences.len() > SHOWN {
        text += &format!("; and {} more", differences.len() - SHOWN);
    }
    text
}

/// Appends to `out` the paths below `at` where `a` and `b` differ.
fn diff_json(
    at: &str,
    a: &serde_json::Value,
    b: &serde_json::Value,
    labels: [&str; 2],
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                let (u, v) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                diff_json(&path, u, v, labels, out);
            }
        }
        _ if a != b => out.push(format!("{at}: {a} {}, {b} {}", labels[0], labels[1])),
        _ => {}
    }
}

/// What a run changes from its preset's settings: the flags of `ibvae train`, which
/// `ibvae sweep` gives every member. Unset fields keep the preset's or the paper's value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub epochs: Option<u64>,
    pub steps: Option<u64>,
    pub batch: Option<usize>,
    pub lr_start: Option<f64>,
    pub lr_end: Option<f64>,
    pub eval_images: Option<usize>,
    pub seed: Option<u64>,
    pub eval_every: Option<u64>,
    pub eval_first: bool,
    pub checkpoint_minutes: Option<f64>,
    pub ema_decay: Option<f64>,
    pub downsamples: Option<usize>,
    pub lr_hold: Option<f64>,
    /// The images shrunk to this size (box averaging).
    pub image_size: Option<usize>,
    /// The PixelCNN++'s binary dropout rate.
    pub dropout: Option<f64>,
    /// A JSON file of model settings (the preset's keys, each optional) over the preset.
    pub model_file: Option<std::path::PathBuf>,
}

impl Overrides {
    /// Whether anything is overridden.
    pub fn any(&self) -> bool {
        *self != Self::default()
    }
}
