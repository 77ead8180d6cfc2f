//! The model's sizes: one value with the paper's defaults (Appendix B), and the presets
//! of the reference (SPEC section 9).

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

/// A named model size with its batch: the reference's `tiny`, `small` and `paper` (SPEC
/// section 9), and `mini` between tiny and small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Tiny,
    Mini,
    Small,
    Paper,
}

impl Preset {
    /// Every preset, smallest first.
    pub const ALL: [Preset; 4] = [Self::Tiny, Self::Mini, Self::Small, Self::Paper];

    pub fn name(self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::Mini => "mini",
            Self::Small => "small",
            Self::Paper => "paper",
        }
    }

    /// The preset's model.
    pub fn model(self) -> ModelConfig {
        match self {
            Self::Tiny => ModelConfig::tiny(),
            Self::Mini => ModelConfig::mini(),
            Self::Small => ModelConfig::small(),
            Self::Paper => ModelConfig::paper(),
        }
    }

    /// The batch size the reference uses with the preset (mini: small's).
    pub fn batch(self) -> usize {
        match self {
            Self::Tiny => 4,
            Self::Mini | Self::Small => 16,
            Self::Paper => 32,
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Preset {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|p| p.name()).collect();
                Error::Config(format!(
                    "unknown preset `{s}`: use one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// The most stride-2 steps a model may take (a 65,536-pixel-wide image down to one).
const MAX_DOWNSAMPLES: usize = 16;

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
            let set_elsewhere = match key {
                "image_channels" | "image_size" => Some("the data (and --image-size)"),
                "bottleneck" => Some("--bottleneck (or the sweep's --gd, --vb, --baselines)"),
                _ => None,
            };
            if let Some(by) = set_elsewhere {
                return Err(bad(format!(
                    "`{key}` is set by {by}, not by the model file"
                )));
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
        if self.downsamples > MAX_DOWNSAMPLES {
            return Err(Error::Config(format!(
                "downsamples = {} halves the image more often than any image allows (at \
                 most {MAX_DOWNSAMPLES})",
                self.downsamples
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
