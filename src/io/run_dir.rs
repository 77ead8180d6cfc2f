//! A run directory: `config.json` (the whole experiment config, written before the first
//! step), `checkpoint.safetensors` and the one before it (see `crate::io::checkpoint`),
//! `metrics.jsonl` (one line per evaluation) and `eval.json` (the last `ibvae eval`).

use std::path::PathBuf;

use crate::config::ExperimentConfig;
use crate::error::{Error, IoContext, Result};
use crate::io::fsutil::write_atomic_str;

/// Where a training run keeps its files.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub path: PathBuf,
}

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

    /// Writes `config.json`, after the same checks as [`RunDir::read_config`]: what is
    /// written can be read back.
    pub fn write_config(&self, config: &ExperimentConfig) -> Result<()> {
        config.model.validate()?;
        config.train.validate()?;
        std::fs::create_dir_all(&self.path).at(&self.path)?;
        let text = serde_json::to_string_pretty(config).expect("configs serialise");
        write_atomic_str(&self.config_path(), &(text + "\n"))
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

    /// The run's TensorBoard event files, in the order of their names.
    pub fn event_files(&self) -> Result<Vec<PathBuf>> {
        let entries = match std::fs::read_dir(&self.path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        let mut files: Vec<PathBuf> = (entries.filter_map(|e| e.ok().map(|e| e.path())))
            .filter(|p| {
                (p.file_name().and_then(|n| n.to_str()))
                    .is_some_and(|n| n.starts_with(crate::io::tensorboard::FILE_PREFIX))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Removes everything a run wrote (for `--force`), its TensorBoard files included.
    pub fn clear(&self) -> Result<()> {
        let written = [
            self.checkpoint_path(),
            self.previous_checkpoint_path(),
            self.metrics_path(),
            self.eval_path(),
            self.config_path(),
        ];
        for p in written.into_iter().chain(self.event_files()?) {
            if p.exists() {
                std::fs::remove_file(&p).at(&p)?;
            }
        }
        Ok(())
    }
}
