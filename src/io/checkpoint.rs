//! The checkpoint of a run, `checkpoint.safetensors`: what it holds and how it is laid out
//! in the file, the atomic write that keeps the one before it, the checksum, and the
//! fallback to the previous checkpoint when the latest is damaged.
//!
//! One safetensors file (see [`crate::io::tensor_file`]): the weights under their
//! reference names, Adam's moments under `adam.m.<name>` and `adam.v.<name>`, the Polyak
//! average under `ema.<name>`; the training state and the whole experiment config as
//! JSON metadata. The prefixes below are the only place that knows this layout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ExperimentConfig;
use crate::error::{Error, Result};
use crate::io::run_dir::RunDir;
use crate::io::tensor_file::{Stored, TensorFile};
use crate::model::terms::Terms;

/// Named tensors on the host, as a checkpoint holds them.
pub type NamedTensors = BTreeMap<String, Stored>;

/// Metadata keys and tensor-name prefixes of a checkpoint.
const STATE_KEY: &str = "ibvae_state";
const CONFIG_KEY: &str = "ibvae_config";
const ADAM_M: &str = "adam.m.";
const ADAM_V: &str = "adam.v.";
const EMA: &str = "ema.";

/// Running sums of the training terms over the current epoch (nats per image, summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochSums {
    pub images: u64,
    #[serde(flatten)]
    pub terms: Terms,
    /// Seconds spent in training steps this epoch.
    pub seconds: f64,
}

impl EpochSums {
    /// The epoch's mean terms so far, bits per dimension.
    pub fn bits_per_dim(&self, dims: usize) -> Terms {
        self.terms.bits_per_dim(self.images as usize, dims)
    }

    /// Training images per second this epoch.
    pub fn images_per_second(&self) -> f64 {
        self.images as f64 / self.seconds.max(1e-9)
    }
}

/// Where training stands; saved in the checkpoint's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done. The next step is `step`; its epoch and batch follow from it.
    pub step: u64,
    pub epoch_sums: EpochSums,
    /// Wall time spent training so far, over all sessions of the run.
    pub elapsed_s: f64,
    /// The lowest test negative ELBO (bits/dim) seen at an evaluation.
    pub best_test_nelbo_bpd: Option<f64>,
    /// Whether the run has done all its steps.
    pub finished: bool,
    /// Steps in one pass over the run's training set (0 in checkpoints that predate it).
    #[serde(default)]
    pub steps_per_epoch: u64,
    /// The evaluation due at `step` was cut short by a stop request: the next session
    /// does it before its first step (written only when set).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_eval: bool,
}

impl TrainState {
    pub fn fresh() -> Self {
        Self {
            step: 0,
            epoch_sums: EpochSums::default(),
            elapsed_s: 0.0,
            best_test_nelbo_bpd: None,
            finished: false,
            steps_per_epoch: 0,
            pending_eval: false,
        }
    }

    /// Epochs done: steps over steps per epoch (`None` for a checkpoint that predates the
    /// count).
    pub fn epochs_done(&self) -> Option<f64> {
        (self.steps_per_epoch > 0).then(|| self.step as f64 / self.steps_per_epoch as f64)
    }
}

/// Adam's first and second moments, by parameter name.
#[derive(Debug, Clone, Default)]
pub struct AdamMoments {
    pub m: NamedTensors,
    pub v: NamedTensors,
}

/// Everything a run needs to continue exactly where it stopped.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The config the checkpoint was written with (`None` in files that predate it).
    pub config: Option<ExperimentConfig>,
    pub state: TrainState,
    pub weights: NamedTensors,
    /// `None` for weights without an optimizer (an imported reference export).
    pub adam: Option<AdamMoments>,
    /// The Polyak average, when the run keeps one.
    pub ema: Option<NamedTensors>,
}

impl Checkpoint {
    /// Writes the checkpoint into `run` atomically: the previous one is kept as
    /// `checkpoint.prev.safetensors` until the new one is complete on disk.
    pub fn save(&self, run: &RunDir) -> Result<()> {
        let mut file = TensorFile::default();
        let prefixed = |prefix: &str, tensors: &NamedTensors| {
            tensors
                .iter()
                .map(|(n, t)| (format!("{prefix}{n}"), t.clone()))
                .collect::<Vec<_>>()
        };
        file.tensors.extend(prefixed("", &self.weights));
        if let Some(adam) = &self.adam {
            file.tensors.extend(prefixed(ADAM_M, &adam.m));
            file.tensors.extend(prefixed(ADAM_V, &adam.v));
        }
        if let Some(ema) = &self.ema {
            file.tensors.extend(prefixed(EMA, ema));
        }
        file.metadata.insert(STATE_KEY.into(), to_json(&self.state));
        if let Some(config) = &self.config {
            file.metadata.insert(CONFIG_KEY.into(), to_json(config));
        }
        file.write_atomic(
            &run.checkpoint_path(),
            Some(&run.previous_checkpoint_path()),
        )
    }

    /// Reads the run's checkpoint: the latest, or, when it is missing, damaged or cut
    /// short, the one before it (with a warning on stderr). Returns it and its path.
    pub fn load(run: &RunDir) -> Result<(Self, PathBuf)> {
        if !run.has_checkpoint() {
            return Err(Error::Checkpoint(format!(
                "{} has no checkpoint yet: train the run first (`ibvae train --run {}`)",
                run.path.display(),
                run.path.display()
            )));
        }
        let (file, path) = read_with_fallback(run)?;
        Ok((Self::from_file(file, &path)?, path))
    }

    /// Refuses a checkpoint written for another architecture than `config` describes.
    pub fn check_architecture(&self, config: &ExperimentConfig, path: &Path) -> Result<()> {
        match &self.config {
            Some(saved) if saved.model != config.model => {
                let differences = crate::config::differences(
                    &saved.model,
                    &config.model,
                    ["in the checkpoint", "in config.json"],
                );
                Err(Error::Checkpoint(format!(
                    "{} was written for another architecture than the run's config.json \
                     describes ({}); restore the matching config.json or start over with \
                     --force",
                    path.display(),
                    crate::config::summarize_differences(&differences)
                )))
            }
            _ => Ok(()),
        }
    }

    fn from_file(file: TensorFile, path: &Path) -> Result<Self> {
        let unreadable = |what: &str, e: serde_json::Error| {
            Error::Checkpoint(format!("{}: unreadable {what}: {e}", path.display()))
        };
        let config = match file.metadata.get(CONFIG_KEY) {
            Some(c) => Some(serde_json::from_str(c).map_err(|e| unreadable("config metadata", e))?),
            None => None,
        };
        let state = match file.metadata.get(STATE_KEY) {
            Some(s) => serde_json::from_str(s).map_err(|e| unreadable("training state", e))?,
            None => TrainState::fresh(),
        };
        let (mut weights, mut adam, mut ema) = (BTreeMap::new(), AdamMoments::default(), None);
        for (key, tensor) in file.tensors {
            if let Some(name) = key.strip_prefix(ADAM_M) {
                adam.m.insert(name.to_string(), tensor);
            } else if let Some(name) = key.strip_prefix(ADAM_V) {
                adam.v.insert(name.to_string(), tensor);
            } else if let Some(name) = key.strip_prefix(EMA) {
                ema.get_or_insert_with(BTreeMap::new)
                    .insert(name.to_string(), tensor);
            } else {
                weights.insert(key, tensor);
            }
        }
        let has_adam = !(adam.m.is_empty() && adam.v.is_empty());
        Ok(Self {
            config,
            state,
            weights,
            adam: has_adam.then_some(adam),
            ema,
        })
    }
}

/// The latest checkpoint file of `run`, or the one before it when the latest is missing,
/// damaged or cut short.
fn read_with_fallback(run: &RunDir) -> Result<(TensorFile, PathBuf)> {
    let (latest, previous) = (run.checkpoint_path(), run.previous_checkpoint_path());
    let problem = if latest.exists() {
        match TensorFile::read(&latest) {
            Ok(file) => return Ok((file, latest)),
            Err(e) => e.to_string(),
        }
    } else {
        format!("{} is missing", latest.display())
    };
    if !previous.exists() {
        return Err(Error::Checkpoint(format!(
            "{problem}, and there is no earlier checkpoint to fall back to; start the run \
             over with --force"
        )));
    }
    crate::noteln!(
        "warning: {problem}; continuing from the checkpoint before it, {}",
        previous.display()
    );
    let file = TensorFile::read(&previous).map_err(|e| {
        Error::Checkpoint(format!(
            "{problem}, and the checkpoint before it is unusable too ({e}); start the run \
             over with --force"
        ))
    })?;
    Ok((file, previous))
}

impl RunDir {
    /// The training state of the run's checkpoint, read from the file's header alone
    /// (neither the weights nor the data are read); `None` without a checkpoint.
    pub fn saved_state(&self) -> Result<Option<TrainState>> {
        let path = [self.checkpoint_path(), self.previous_checkpoint_path()]
            .into_iter()
            .find(|p| p.exists());
        let Some(path) = path else {
            return Ok(None);
        };
        let metadata = TensorFile::read_metadata(&path)?;
        let Some(state) = metadata.get(STATE_KEY) else {
            return Ok(Some(TrainState::fresh()));
        };
        serde_json::from_str(state).map(Some).map_err(|e| {
            Error::Checkpoint(format!(
                "{}: unreadable training state: {e}",
                path.display()
            ))
        })
    }
}

/// A metadata value as JSON (plain structs of numbers, strings and enums: they
/// serialise).
fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("checkpoint metadata serialises")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelConfig, TrainConfig};
    use crate::model::hybrid::Hybrid;
    use tch::Device;

    /// The training state goes through JSON in the checkpoint's metadata; a resumed run
    /// must read its running sums back to the last bit (random doubles, by comparison).
    #[test]
    fn running_sums_survive_json_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..20_000 {
            let sums = EpochSums {
                images: rng.random_range(0..1_000_000),
                terms: Terms {
                    nelbo: rng.random::<f64>() * 1e4,
                    kl: rng.random::<f64>() * 1e-3,
                    recon: rng.random::<f64>(),
                    vb_rate: rng.random::<f64>() * 10.0,
                    aux_nll: rng.random::<f64>() * 1e6,
                },
                seconds: rng.random::<f64>(),
            };
            let text = serde_json::to_string(&sums).unwrap();
            let back: EpochSums = serde_json::from_str(&text).unwrap();
            assert_eq!(back, sums, "{text}");
        }
    }

    /// The epoch sums keep the keys of the checkpoints written before the terms had a
    /// type of their own.
    #[test]
    fn epoch_sums_keep_their_keys() {
        let text = r#"{"images":4,"nelbo":1.5,"kl":0.5,"recon":1.0,"vb_rate":0.25,"aux_nll":0.0,"seconds":2.0}"#;
        let sums: EpochSums = serde_json::from_str(text).unwrap();
        assert_eq!(sums.terms, Terms::from_values([1.5, 0.5, 1.0, 0.25, 0.0]));
        assert_eq!(serde_json::to_string(&sums).unwrap(), text);
    }

    fn saved_run(dir: &Path) -> (RunDir, ExperimentConfig) {
        let run = RunDir::new(dir.join("run"));
        let config = ExperimentConfig {
            preset: crate::config::Preset::Tiny,
            model: ModelConfig::tiny(),
            train: TrainConfig::for_preset(crate::config::Preset::Tiny, dir.to_path_buf()),
        };
        run.write_config(&config).unwrap();
        let model = Hybrid::new(&config.model, Device::Cpu).unwrap();
        let weights = model
            .params()
            .iter()
            .map(|(n, t)| (n.clone(), Stored::from_tensor(t)))
            .collect();
        for step in [1, 2] {
            let checkpoint = Checkpoint {
                config: Some(config.clone()),
                state: TrainState {
                    step,
                    ..TrainState::fresh()
                },
                weights: BTreeMap::clone(&weights),
                adam: None,
                ema: None,
            };
            checkpoint.save(&run).unwrap();
        }
        (run, config)
    }

    fn damage(path: &Path, how: &str) {
        let mut bytes = std::fs::read(path).unwrap();
        match how {
            // 1,000 bytes of the payload (past the header), inverted.
            "flip" => {
                let start = bytes.len() / 2;
                for b in &mut bytes[start..start + 1000] {
                    *b = !*b;
                }
            }
            _ => bytes.truncate(bytes.len() - 5000),
        }
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_damaged_checkpoint_falls_back_to_the_one_before() {
        for how in ["flip", "truncate"] {
            let tmp = tempfile::tempdir().unwrap();
            let (run, _) = saved_run(tmp.path());
            let (checkpoint, _) = Checkpoint::load(&run).unwrap();
            assert_eq!(checkpoint.state.step, 2);
            damage(&run.checkpoint_path(), how);
            let (checkpoint, _) = Checkpoint::load(&run).unwrap();
            assert_eq!(
                checkpoint.state.step, 1,
                "{how}: the checkpoint before the latest"
            );
            // Without the one before, a clear error that names the file.
            std::fs::remove_file(run.previous_checkpoint_path()).unwrap();
            let err = Checkpoint::load(&run).unwrap_err().to_string();
            assert!(
                err.contains("checkpoint.safetensors") && err.contains("--force"),
                "{how}: {err}"
            );
            if how == "flip" {
                assert!(err.contains("damaged"), "{err}");
            }
        }
    }

    #[test]
    fn a_sound_checkpoint_passes_its_checksum() {
        let tmp = tempfile::tempdir().unwrap();
        let (run, _) = saved_run(tmp.path());
        let file = TensorFile::read(&run.checkpoint_path()).unwrap();
        assert!(file.metadata.contains_key("ibvae_checksum"));
        assert!(TensorFile::read(&run.previous_checkpoint_path()).is_ok());
    }

    /// The groups go under their prefixes and come back apart.
    #[test]
    fn weights_moments_and_average_come_back_in_their_groups() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::new(tmp.path().join("run"));
        let one = |v: f32| Stored::F32 {
            shape: vec![1],
            data: vec![v],
        };
        let named = |v: f32| NamedTensors::from([("mix.0.bias".to_string(), one(v))]);
        let checkpoint = Checkpoint {
            config: None,
            state: TrainState::fresh(),
            weights: named(1.0),
            adam: Some(AdamMoments {
                m: named(2.0),
                v: named(3.0),
            }),
            ema: Some(named(4.0)),
        };
        std::fs::create_dir_all(&run.path).unwrap();
        checkpoint.save(&run).unwrap();
        let file = TensorFile::read(&run.checkpoint_path()).unwrap();
        let keys: Vec<&str> = file.tensors.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "adam.m.mix.0.bias",
                "adam.v.mix.0.bias",
                "ema.mix.0.bias",
                "mix.0.bias"
            ]
        );
        let (back, _) = Checkpoint::load(&run).unwrap();
        let value = |t: &NamedTensors| t["mix.0.bias"].to_f32();
        assert_eq!(value(&back.weights), [1.0]);
        assert_eq!(value(&back.adam.as_ref().unwrap().v), [3.0]);
        assert_eq!(value(back.ema.as_ref().unwrap()), [4.0]);
    }
}
