//! The model's configuration: one value with the paper's defaults and the presets of the
//! reference (SPEC section 9).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::bottleneck::BottleneckSpec;

/// Every size of the hybrid model. Field names follow the reference `hybrid_ref.py`
/// (its `W` and `Wb` are `width` and `block_width`; both spellings are read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Bottleneck residual blocks in the encoder and in the decoder (paper: 7).
    pub n_blocks: usize,
    /// Width `W` of the encoder and decoder ResNets (paper: 512).
    #[serde(alias = "W")]
    pub width: usize,
    /// Inner width `Wb` of a bottleneck block (paper: 128).
    #[serde(alias = "Wb")]
    pub block_width: usize,
    /// Channels of the decoder's map `u` (paper: 256).
    pub dec_out: usize,
    /// Channels of the latent grid (paper: 16, on a 4x4 grid).
    pub z_channels: usize,
    /// Stride-2 steps between the image and the latent grid (32 -> 4 needs 3).
    pub downsamples: usize,
    /// Gated resnets per resolution in PixelCNN++ (paper: 5).
    pub nr_resnet: usize,
    /// Channels of PixelCNN++ (paper: 160).
    pub nr_filters: usize,
    /// Components of the discretised mixture of logistics (PixelCNN++: 10).
    pub nr_mix: usize,
    /// Dimensions per pixel of the bottlenecked PixelCNN++ output `v` (paper: 10).
    pub v_dim: usize,
    /// Hidden ELU units of the per-pixel mixing network (paper: 266 = dec_out + v_dim).
    pub mix_hidden: usize,
    /// Binary dropout inside the gated resnets (PixelCNN++: 0.5).
    #[serde(default = "default_dropout")]
    pub dropout_p: f64,
    /// 3 for RGB, 1 for grey.
    #[serde(default = "default_channels")]
    pub image_channels: usize,
    /// Height = width of the images.
    #[serde(default = "default_size")]
    pub image_size: usize,
    /// The layer on the autoregressive path.
    #[serde(default = "default_bottleneck")]
    pub bottleneck: BottleneckSpec,
}

fn default_dropout() -> f64 {
    0.5
}
fn default_channels() -> usize {
    3
}
fn default_size() -> usize {
    32
}
fn default_bottleneck() -> BottleneckSpec {
    BottleneckSpec::None
}

/// The preset names, smallest first.
pub const PRESETS: [&str; 4] = ["tiny", "mini", "small", "paper"];

impl ModelConfig {
    /// The paper's model (Appendix B): 81,887,662 parameters with `gd`.
    pub fn paper() -> Self {
        Self {
            n_blocks: 7,
            width: 512,
            block_width: 128,
            dec_out: 256,
            z_channels: 16,
            downsamples: 3,
            nr_resnet: 5,
            nr_filters: 160,
            nr_mix: 10,
            v_dim: 10,
            mix_hidden: 266,
            dropout_p: 0.5,
            image_channels: 3,
            image_size: 32,
            bottleneck: BottleneckSpec::None,
        }
    }

    /// A CPU-sized model (978,030 parameters with `gd`).
    pub fn small() -> Self {
        Self {
            n_blocks: 2,
            width: 64,
            block_width: 32,
            dec_out: 32,
            nr_resnet: 1,
            nr_filters: 32,
            mix_hidden: 42,
            ..Self::paper()
        }
    }

    /// Between `tiny` and `small`, for sweeps on a CPU in about an hour: twice tiny's
    /// PixelCNN++ filters and VAE widths, 8 latent channels (242,206 parameters with
    /// `gd`; not a preset of the reference).
    pub fn mini() -> Self {
        Self {
            n_blocks: 1,
            width: 32,
            block_width: 16,
            dec_out: 16,
            z_channels: 8,
            nr_resnet: 1,
            nr_filters: 16,
            mix_hidden: 26,
            ..Self::paper()
        }
    }

    /// These settings with those of a JSON file over them: an object with any of the
    /// config's keys (`W` and `Wb` are read too); keys it does not know are an error.
    pub fn with_file(self, path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad = |what: String| {
            Error::Config(format!(
                "{}: {what}; the file holds a JSON object of model settings, for example \
                 {{\"nr_filters\": 32, \"nr_mix\": 5}}",
                path.display()
            ))
        };
        let over: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON ({e})")))?;
        let over = over
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        let mut merged = serde_json::to_value(&self).expect("configs serialise");
        let fields = merged.as_object_mut().expect("a config is an object");
        for (key, value) in over {
            let key = match key.as_str() {
                "W" => "width",
                "Wb" => "block_width",
                k => k,
            };
            if !fields.contains_key(key) {
                return Err(bad(format!("`{key}` is not a model setting")));
            }
            fields.insert(key.to_string(), value.clone());
        }
        let config: Self = serde_json::from_value(merged)
            .map_err(|e| bad(format!("a value does not fit ({e})")))?;
        config.validate()?;
        Ok(config)
    }

    /// A test-sized model (63,222 parameters with `gd`).
    pub fn tiny() -> Self {
        Self {
            n_blocks: 1,
            width: 16,
            block_width: 8,
            dec_out: 8,
            z_channels: 4,
            nr_resnet: 1,
            nr_filters: 8,
            mix_hidden: 18,
            ..Self::paper()
        }
    }

    /// The preset called `name`.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "paper" => Ok(Self::paper()),
            "small" => Ok(Self::small()),
            "mini" => Ok(Self::mini()),
            "tiny" => Ok(Self::tiny()),
            _ => Err(Error::Config(format!(
                "unknown preset `{name}`: use one of {}",
                PRESETS.join(", ")
            ))),
        }
    }

    /// The batch size the reference uses with each preset.
    pub fn preset_batch(name: &str) -> Result<usize> {
        match name {
            "paper" => Ok(32),
            "small" => Ok(16),
            "mini" => Ok(16),
            "tiny" => Ok(4),
            _ => Err(Error::Config(format!("unknown preset `{name}`"))),
        }
    }

    pub fn with_bottleneck(self, bottleneck: BottleneckSpec) -> Self {
        Self { bottleneck, ..self }
    }

    /// Shapes the images of a data set into this config.
    pub fn with_images(self, channels: usize, size: usize) -> Self {
        Self {
            image_channels: channels,
            image_size: size,
            ..self
        }
    }

    /// Sub-pixels per image, `D = C * H * W`.
    pub fn dims(&self) -> usize {
        self.image_channels * self.image_size * self.image_size
    }

    /// The side of the latent grid.
    pub fn latent_size(&self) -> usize {
        self.image_size >> self.downsamples
    }

    /// Checks that the sizes fit together.
    pub fn validate(&self) -> Result<()> {
        if self.image_channels != 1 && self.image_channels != 3 {
            return Err(Error::Config(format!(
                "images must have 1 or 3 channels, not {}",
                self.image_channels
            )));
        }
        let step = 1usize << self.downsamples;
        if self.image_size == 0
            || !self.image_size.is_multiple_of(step)
            || !self.image_size.is_multiple_of(4)
        {
            return Err(Error::Config(format!(
                "image size {} does not fit the model: it must be divisible by 4 (PixelCNN++'s \
                 three resolutions) and by 2^downsamples = {step}; for 28x28 images use \
                 downsamples = 2 (--downsamples 2)",
                self.image_size
            )));
        }
        let positive = [
            ("n_blocks", self.n_blocks.max(1)),
            ("width", self.width),
            ("block_width", self.block_width),
            ("dec_out", self.dec_out),
            ("z_channels", self.z_channels),
            ("downsamples", self.downsamples),
            ("nr_resnet", self.nr_resnet),
            ("nr_filters", self.nr_filters),
            ("nr_mix", self.nr_mix),
            ("v_dim", self.v_dim),
            ("mix_hidden", self.mix_hidden),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Config(format!("{name} must be positive")));
        }
        if !(0.0..1.0).contains(&self.dropout_p) {
            return Err(Error::Config(format!(
                "dropout_p must be in [0, 1), got {}",
                self.dropout_p
            )));
        }
        Ok(())
    }
}

/// How a run trains (SPEC section 7) and where its data lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training set (paper: 350). Ignored when `steps` is set.
    pub epochs: u64,
    /// Total optimizer steps, when given instead of epochs.
    pub steps: Option<u64>,
    /// Images per step (the reference's batch for each preset).
    pub batch: usize,
    /// Images per evaluation batch (memory only: the result does not depend on it beyond
    /// float rounding, and the `z` draws are seeded per batch).
    pub eval_batch: usize,
    /// Learning rate at the first step (paper: 1e-4) ...
    pub lr_start: f64,
    /// ... annealed exponentially to this at the last step (paper: 4e-6).
    pub lr_end: f64,
    /// Fraction of the run held at `lr_start` before the anneal begins (paper: 0).
    #[serde(default)]
    pub lr_hold: f64,
    /// Adam's betas and epsilon (paper: 0.9, 0.999, 1e-8).
    pub adam: crate::training::optim::AdamSettings,
    /// Seed of the data order, the initialisation and all noise.
    pub seed: u64,
    /// Evaluate on the test set every this many steps, in addition to each epoch's end.
    pub eval_every: Option<u64>,
    /// Evaluate the untrained model on the test set before the first step, as a step-0
    /// line of `metrics.jsonl`: the baseline a run's progress is measured from.
    #[serde(default)]
    pub eval_first: bool,
    /// Evaluate on at most this many test images during training (all of them when
    /// unset); `ibvae eval` always uses the whole test set.
    pub eval_images: Option<usize>,
    /// Write a checkpoint at least this often, in minutes, besides every epoch.
    pub checkpoint_minutes: f64,
    /// Decay of the Polyak average of the weights; off when unset (e.g. 0.9995).
    pub ema_decay: Option<f64>,
    /// The data directory the run was trained on.
    pub data: std::path::PathBuf,
    /// The images shrunk to this height and width by box averaging (full size when unset).
    #[serde(default)]
    pub image_size: Option<usize>,
}

impl TrainConfig {
    /// The paper's optimisation settings with the preset's batch size.
    pub fn for_preset(preset: &str, data: std::path::PathBuf) -> Result<Self> {
        let batch = ModelConfig::preset_batch(preset)?;
        Ok(Self {
            epochs: 350,
            steps: None,
            batch,
            eval_batch: 4 * batch,
            lr_start: 1e-4,
            lr_end: 4e-6,
            lr_hold: 0.0,
            adam: crate::training::optim::AdamSettings::default(),
            seed: 0,
            eval_every: None,
            eval_first: false,
            eval_images: None,
            checkpoint_minutes: 10.0,
            ema_decay: None,
            data,
            image_size: None,
        })
    }

    /// Optimizer steps in the whole run for a training set of `n` images.
    pub fn total_steps(&self, n: usize) -> u64 {
        self.steps.unwrap_or(self.epochs * self.steps_per_epoch(n))
    }

    /// Steps per pass over `n` images (the last batch may be partial).
    pub fn steps_per_epoch(&self, n: usize) -> u64 {
        n.div_ceil(self.batch).max(1) as u64
    }

    pub fn validate(&self) -> Result<()> {
        if self.batch == 0 || self.eval_batch == 0 {
            return Err(Error::Config("batch sizes must be positive".into()));
        }
        if self.steps == Some(0) || (self.steps.is_none() && self.epochs == 0) {
            return Err(Error::Config(
                "the run needs at least one step (--epochs or --steps)".into(),
            ));
        }
        if !(self.lr_start > 0.0 && self.lr_end > 0.0) {
            return Err(Error::Config(format!(
                "learning rates must be positive, got {} and {}",
                self.lr_start, self.lr_end
            )));
        }
        if !(0.0..=1.0).contains(&self.lr_hold) {
            return Err(Error::Config(format!(
                "--lr-hold is the fraction of the run held at --lr-start, in [0, 1], got {}",
                self.lr_hold
            )));
        }
        if let Some(d) = self.ema_decay
            && !(0.0..1.0).contains(&d)
        {
            return Err(Error::Config(format!(
                "--ema-decay must be in [0, 1), got {d}"
            )));
        }
        Ok(())
    }
}

/// Everything that defines a run, saved as `config.json` in its directory before the
/// first step and read back by `eval`, `sample` and `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentConfig {
    /// The preset the model started from (informational; `model` is authoritative).
    pub preset: String,
    pub model: ModelConfig,
    pub train: TrainConfig,
}

impl ExperimentConfig {
    /// The config of a run of `preset` with `bottleneck` on the data in `data_dir`, whose
    /// images have `channels` channels of side `size`, with `overrides` applied: the one
    /// place where flags become a config, for `ibvae train` and every member of a sweep.
    pub fn resolve(
        preset: &str,
        bottleneck: BottleneckSpec,
        data_dir: std::path::PathBuf,
        (channels, size): (usize, usize),
        overrides: &Overrides,
    ) -> Result<Self> {
        let o = overrides;
        let mut model = ModelConfig::preset(preset)?;
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
        let mut train = TrainConfig::for_preset(preset, data_dir)?;
        if let Some(e) = o.epochs {
            train.epochs = e;
        }
        train.steps = o.steps;
        if let Some(b) = o.batch {
            train.batch = b;
            train.eval_batch = 4 * b;
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
            preset: preset.to_string(),
            model,
            train,
        })
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
