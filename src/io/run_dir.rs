//! A run directory: `config.json` (the whole experiment config, written before the first
//! step), `checkpoint.safetensors` (weights, optimizer and averaging state, position in
//! the data, RNG position, best test figure), `metrics.jsonl` (one line per evaluation)
//! and `eval.json` (the last `ibvae eval`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Device;

use crate::config::ExperimentConfig;
use crate::error::{Error, IoContext, Result};
use crate::io::fsutil::write_atomic_str;
use crate::io::tensor_file::{TensorFile, load_weights, weights};
use crate::model::hybrid::Hybrid;
use crate::training::optim::{Adam, Ema};

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
    /// The checkpoint before the latest, kept in case the latest is damaged.
    pub fn previous_checkpoint_path(&self) -> PathBuf {
        self.path.join("checkpoint.prev.safetensors")
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
        self.checkpoint_path().exists() || self.previous_checkpoint_path().exists()
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
        file.write_atomic(
            &self.checkpoint_path(),
            Some(&self.previous_checkpoint_path()),
        )
    }

    /// The latest checkpoint file, or, when it is missing, damaged or cut short, the one
    /// before it (with a warning on stderr).
    fn read_checkpoint_file(&self) -> Result<(TensorFile, PathBuf)> {
        let (latest, previous) = (self.checkpoint_path(), self.previous_checkpoint_path());
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
        eprintln!(
            "warning: {problem}; continuing from the checkpoint before it, {}",
            previous.display()
        );
        let file = TensorFile::read(&previous).map_err(|e| {
            Error::Checkpoint(format!(
                "{problem}, and the checkpoint before it is unusable too ({e}); start the \
                 run over with --force"
            ))
        })?;
        Ok((file, previous))
    }

    /// Reads the checkpoint and loads its weights into `model`. Returns the file (for the
    /// optimizer and averaging state) and the training state.
    pub fn load_checkpoint(
        &self,
        config: &ExperimentConfig,
        model: &Hybrid,
    ) -> Result<(TensorFile, TrainState)> {
        if !self.has_checkpoint() {
            return Err(Error::Checkpoint(format!(
                "{} has no checkpoint yet: train the run first (`ibvae train --run {}`)",
                self.path.display(),
                self.path.display()
            )));
        }
        let (file, path) = self.read_checkpoint_file()?;
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
            self.previous_checkpoint_path(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelConfig, TrainConfig};

    /// The training state goes through JSON in the checkpoint's metadata; a resumed run
    /// must read its running sums back to the last bit (random doubles, by comparison).
    #[test]
    fn running_sums_survive_json_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..20_000 {
            let sums = EpochSums {
                images: rng.random_range(0..1_000_000),
                nelbo: rng.random::<f64>() * 1e4,
                kl: rng.random::<f64>() * 1e-3,
                recon: rng.random::<f64>(),
                vb_rate: rng.random::<f64>() * 10.0,
                aux_nll: rng.random::<f64>() * 1e6,
                seconds: rng.random::<f64>(),
            };
            let text = serde_json::to_string(&sums).unwrap();
            let back: EpochSums = serde_json::from_str(&text).unwrap();
            assert_eq!(back, sums, "{text}");
        }
    }

    fn saved_run(dir: &Path) -> (RunDir, ExperimentConfig, Hybrid) {
        let run = RunDir::new(dir.join("run"));
        let config = ExperimentConfig {
            preset: "tiny".into(),
            model: ModelConfig::tiny(),
            train: TrainConfig::for_preset("tiny", dir.to_path_buf()).unwrap(),
        };
        run.write_config(&config).unwrap();
        let model = Hybrid::new(&config.model, Device::Cpu).unwrap();
        for step in [1, 2] {
            let state = TrainState {
                step,
                ..TrainState::fresh()
            };
            run.save_checkpoint(&config, &model, None, None, &state)
                .unwrap();
        }
        (run, config, model)
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
            let (run, config, model) = saved_run(tmp.path());
            let (_, state) = run.load_checkpoint(&config, &model).unwrap();
            assert_eq!(state.step, 2);
            damage(&run.checkpoint_path(), how);
            let (_, state) = run.load_checkpoint(&config, &model).unwrap();
            assert_eq!(state.step, 1, "{how}: the checkpoint before the latest");
            // Without the one before, a clear error that names the file.
            std::fs::remove_file(run.previous_checkpoint_path()).unwrap();
            let err = run
                .load_checkpoint(&config, &model)
                .unwrap_err()
                .to_string();
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
        let (run, _, _) = saved_run(tmp.path());
        let file = TensorFile::read(&run.checkpoint_path()).unwrap();
        assert!(file.metadata.contains_key("ibvae_checksum"));
        assert!(TensorFile::read(&run.previous_checkpoint_path()).is_ok());
    }
}
