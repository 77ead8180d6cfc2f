//! A run directory: `config.json` (the whole experiment config, written before the first
//! step), `checkpoint.safetensors` (weights, optimizer and averaging state, position in
//! the data, RNG position, best test figure), `metrics.jsonl` (one line per evaluation)
//! and `eval.json` (the last `ibvae eval`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::config::ExperimentConfig;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::write_atomic_str;
use crate::hybrid::Hybrid;
use crate::optim::{Adam, Ema};
use crate::params::{TensorFile, load_weights, weights};

/// Where a training run keeps its files.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub path: PathBuf,
}

/// Running sums of the training terms over the current epoch (nats per image, summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochSums {
    pub images: u64,
    pub nelbo: f64,
    pub kl: f64,
    pub recon: f64,
    pub vb_rate: f64,
    pub aux_nll: f64,
    /// Seconds spent in training steps this epoch.
    pub seconds: f64,
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
}

/// Metadata keys of a checkpoint.
const STATE_KEY: &str = "ibvae_state";
const CONFIG_KEY: &str = "ibvae_config";

impl RunDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn config_path(&self) -> PathBuf {
        self.path.join("config.json")
    }
    pub fn checkpoint_path(&self) -> PathBuf {
        self.path.join("checkpoint.safetensors")
    }
    pub fn metrics_path(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }
    pub fn eval_path(&self) -> PathBuf {
        self.path.join("eval.json")
    }

    pub fn has_config(&self) -> bool {
        self.config_path().exists()
    }

    pub fn has_checkpoint(&self) -> bool {
        self.checkpoint_path().exists()
    }

    /// Reads `config.json`; a file that does not parse is a clear error.
    pub fn read_config(&self) -> Result<ExperimentConfig> {
        let path = self.config_path();
        if !path.exists() {
            return Err(Error::Checkpoint(format!(
                "{} has no config.json: it is not an ibvae run directory (train one with \
                 `ibvae train --run {}`)",
                self.path.display(),
                self.path.display()
            )));
        }
        let text = std::fs::read_to_string(&path).at(&path)?;
        let config: ExperimentConfig = serde_json::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "{} does not parse: {e}; fix the file or start the run again with --force",
                path.display()
            ))
        })?;
        config.model.validate()?;
        config.train.validate()?;
        Ok(config)
    }

    pub fn write_config(&self, config: &ExperimentConfig) -> Result<()> {
        std::fs::create_dir_all(&self.path).at(&self.path)?;
        let text = serde_json::to_string_pretty(config).expect("configs serialise");
        write_atomic_str(&self.config_path(), &(text + "\n"))
    }

    /// Writes the checkpoint atomically: the previous one stays until the new one is
    /// complete on disk.
    pub fn save_checkpoint(
        &self,
        config: &ExperimentConfig,
        model: &Hybrid,
        adam: Option<&Adam>,
        ema: Option<&Ema>,
        state: &TrainState,
    ) -> Result<()> {
        let mut file = TensorFile::default();
        file.tensors.extend(weights(model));
        if let Some(adam) = adam {
            file.tensors.extend(adam.state());
        }
        if let Some(ema) = ema {
            file.tensors.extend(ema.state());
        }
        file.metadata.insert(
            STATE_KEY.into(),
            serde_json::to_string(state).expect("state serialises"),
        );
        file.metadata.insert(
            CONFIG_KEY.into(),
            serde_json::to_string(config).expect("config serialises"),
        );
        file.write_atomic(&self.checkpoint_path())
    }

    /// Reads the checkpoint and loads its weights into `model`. Returns the file (for the
    /// optimizer and averaging state) and the training state.
    pub fn load_checkpoint(
        &self,
        config: &ExperimentConfig,
        model: &Hybrid,
    ) -> Result<(TensorFile, TrainState)> {
        let path = self.checkpoint_path();
        if !path.exists() {
            return Err(Error::Checkpoint(format!(
                "{} has no checkpoint yet: train the run first (`ibvae train --run {}`)",
                self.path.display(),
                self.path.display()
            )));
        }
        let file = TensorFile::read(&path)?;
        if let Some(saved) = file.metadata.get(CONFIG_KEY) {
            let saved: ExperimentConfig = serde_json::from_str(saved).map_err(|e| {
                Error::Checkpoint(format!(
                    "{}: unreadable config metadata: {e}",
                    path.display()
                ))
            })?;
            if saved.model != config.model {
                return Err(Error::Checkpoint(format!(
                    "{} was written for another architecture than {} describes (preset {} / \
                     bottleneck {} in the checkpoint, preset {} / bottleneck {} in the \
                     config); restore the matching config.json or start over with --force",
                    path.display(),
                    self.config_path().display(),
                    saved.preset,
                    saved.model.bottleneck,
                    config.preset,
                    config.model.bottleneck
                )));
            }
        }
        load_weights(
            model,
            &file,
            &path.display().to_string(),
            &["adam.", "ema."],
        )?;
        let state = match file.metadata.get(STATE_KEY) {
            Some(s) => serde_json::from_str(s).map_err(|e| {
                Error::Checkpoint(format!(
                    "{}: unreadable training state: {e}",
                    path.display()
                ))
            })?,
            None => TrainState::fresh(),
        };
        Ok((file, state))
    }

    /// The training state of the run's checkpoint, read from the file's header alone
    /// (neither the weights nor the data are read); `None` without a checkpoint.
    pub fn saved_state(&self) -> Result<Option<TrainState>> {
        let path = self.checkpoint_path();
        if !path.exists() {
            return Ok(None);
        }
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

    /// Epochs done: steps over steps per epoch (`None` for a checkpoint that predates the
    /// count).
    pub fn epochs_done(state: &TrainState) -> Option<f64> {
        (state.steps_per_epoch > 0).then(|| state.step as f64 / state.steps_per_epoch as f64)
    }

    /// Appends one JSON line to `metrics.jsonl`.
    pub fn append_metrics(&self, line: &serde_json::Value) -> Result<()> {
        use std::io::Write;
        let path = self.metrics_path();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .at(&path)?;
        writeln!(f, "{line}").at(&path)?;
        f.sync_data().at(&path)
    }

    /// The lines of `metrics.jsonl`.
    pub fn read_metrics(&self) -> Result<Vec<serde_json::Value>> {
        let path = self.metrics_path();
        if !path.exists() {
            return Ok(Vec::new());
        }
        let text = std::fs::read_to_string(&path).at(&path)?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Drops the metric lines written after `step` (by a session that died before its
    /// next checkpoint), so that a resumed run writes them again, once.
    pub fn truncate_metrics_after(&self, step: u64) -> Result<()> {
        let kept: Vec<String> = self
            .read_metrics()?
            .into_iter()
            .filter(|m| m["step"].as_u64().is_some_and(|s| s <= step))
            .map(|m| m.to_string())
            .collect();
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        write_atomic_str(&self.metrics_path(), &text)
    }

    /// Drops every metric line (a run with no checkpoint starts its log afresh).
    pub fn clear_metrics(&self) -> Result<()> {
        let path = self.metrics_path();
        if path.exists() {
            std::fs::remove_file(&path).at(&path)?;
        }
        Ok(())
    }

    /// Removes everything a run wrote (for `--force`).
    pub fn clear(&self) -> Result<()> {
        for p in [
            self.checkpoint_path(),
            self.metrics_path(),
            self.eval_path(),
            self.config_path(),
        ] {
            if p.exists() {
                std::fs::remove_file(&p).at(&p)?;
            }
        }
        Ok(())
    }
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
        }
    }
}

/// Loads the model of a run for evaluation or sampling (plain device, no autodiff),
/// with the averaged weights when the run keeps a Polyak average.
pub fn load_for_inference(dir: &Path, device: Device) -> Result<(ExperimentConfig, Hybrid)> {
    let run = RunDir::new(dir);
    let config = run.read_config()?;
    let model = Hybrid::new(&config.model, device)?;
    let (file, _) = run.load_checkpoint(&config, &model)?;
    if let Some(decay) = config.train.ema_decay
        && file.tensors.keys().any(|k| k.starts_with("ema."))
    {
        let mut ema = Ema::new(&model, decay);
        ema.load_state(&file, device);
        ema.copy_to(&model);
    }
    Ok((config, model))
}
