//! The run's TensorBoard log (`events.out.tfevents.*` in the run directory), beside
//! `metrics.jsonl`: at every metrics line the training terms, learning rate and speed and
//! the test terms; at every evaluation after the first step a grid of samples and one of
//! reconstructions; the config as text; and the run's hyperparameters for the HParams
//! tab.
//!
//! Each session writes a file of its own. A resumed run first removes from the earlier
//! files every point past the checkpoint it resumes from (written by a session that died
//! before its next checkpoint, and written again by this one), as it does with the lines
//! of `metrics.jsonl`: the curves go on without a duplicate point, and every point that
//! `metrics.jsonl` keeps is kept (each write is flushed at once).

use crate::config::ExperimentConfig;
use crate::error::Result;
use crate::io::run_dir::RunDir;
use crate::io::tensorboard::{self, EventWriter, HParamKind, HParamValue};
use crate::model::hybrid::Hybrid;
use crate::training::log::MetricsLine;
use crate::training::sample::{self, Draw, Method};

/// Images in each grid of samples and of reconstructions.
pub const GRID_IMAGES: usize = 8;

/// The metrics the HParams tab sets against the hyperparameters.
pub const HPARAM_METRICS: [&str; 2] = ["test/nelbo_bpd", "test/kl_bpd"];

/// The TensorBoard log of one training session.
pub struct Board {
    writer: EventWriter,
}

impl Board {
    /// Opens the log of a session that starts at `step`: removes the points past it from
    /// earlier sessions' files, then writes the config and the hyperparameters.
    pub fn open(run: &RunDir, config: &ExperimentConfig, step: u64) -> Result<Self> {
        for file in run.event_files()? {
            prune_after(&file, step)?;
        }
        let mut writer = EventWriter::create(&run.path)?;
        let text = serde_json::to_string_pretty(config).expect("configs serialise");
        writer.text(step as i64, "config", &format!("```json\n{text}\n```"))?;
        writer.hparams_session_start(&hparams(config))?;
        Ok(Self { writer })
    }

    /// The figures of one `metrics.jsonl` line, under the same names (`train/nelbo_bpd`
    /// for `train_nelbo_bpd`, `test/nelbo_bpd` for `test.nelbo_bpd`).
    pub fn metrics(&mut self, line: &MetricsLine) -> Result<()> {
        let mut values = vec![("train/lr", line.lr)];
        if let Some(train) = &line.train {
            let t = &train.terms;
            values.extend([
                ("train/nelbo_bpd", t.nelbo),
                ("train/kl_bpd", t.kl),
                ("train/recon_bpd", t.recon),
                ("train/vb_rate_bpd", t.vb_rate),
                ("train/aux_nll_bpd", t.aux_nll),
                ("train/img_per_s", train.train_img_per_s),
            ]);
        }
        let t = &line.test.terms;
        values.extend([
            ("test/nelbo_bpd", t.nelbo),
            ("test/kl_bpd", t.kl),
            ("test/recon_bpd", t.recon),
            ("test/vb_rate_bpd", t.vb_rate),
            ("test/aux_nll_bpd", t.aux_nll),
        ]);
        self.writer.scalars(line.step as i64, &values)
    }

    /// A grid of [`GRID_IMAGES`] samples of `model` and one of as many test images, each
    /// beside a reconstruction, drawn with the run's `seed` (the same draws at every
    /// step, so that the grids show the model change).
    pub fn drawings(&mut self, step: u64, model: &Hybrid, test: &[u8], seed: u64) -> Result<()> {
        let m = &model.config;
        let draw = Draw {
            channels: m.image_channels,
            size: m.image_size,
            temperature: 1.0,
            seed,
            method: Method::Cached,
        };
        let (shape, plane) = ((m.image_channels, m.image_size), m.dims());
        let samples = sample::sample_prior(model, GRID_IMAGES, &draw, |_, _| {});
        self.grid(step, "samples", &samples, GRID_IMAGES, shape)?;
        let n = GRID_IMAGES.min(test.len() / plane);
        if n == 0 {
            return Ok(());
        }
        let originals = &test[..n * plane];
        let recon = sample::reconstruct(model, originals, n, 1, &draw, |_, _| {});
        // Pairs side by side: each test image, then its reconstruction.
        let cells = sample::beside_reconstructions(originals, &recon, n, 1, plane);
        self.grid(step, "reconstructions", &cells, 2 * n, shape)
    }

    /// `n` images of `channels` x `size` x `size` bytes, four to a row, as a PNG.
    fn grid(
        &mut self,
        step: u64,
        tag: &str,
        images: &[u8],
        n: usize,
        (channels, size): (usize, usize),
    ) -> Result<()> {
        let (w, h, rgb) = crate::io::image::grid(images, n, channels, size, 4, 1);
        let png = crate::io::image::encode_png(w, h, &rgb, 2)?;
        self.writer
            .image(step as i64, tag, &png, 2 * h as u32, 2 * w as u32, 3)
    }

    /// Marks the session finished, for the HParams tab.
    pub fn finish(&mut self) -> Result<()> {
        self.writer.hparams_session_end(true)
    }
}

/// The hyperparameters a run is compared by: bottleneck, strength, seed, image size and
/// preset.
pub fn hparams(config: &ExperimentConfig) -> Vec<(&'static str, HParamValue)> {
    let b = &config.model.bottleneck;
    vec![
        ("bottleneck", HParamValue::Text(b.kind().to_string())),
        ("strength", HParamValue::Number(b.value())),
        ("seed", HParamValue::Number(config.train.seed as f64)),
        (
            "image_size",
            HParamValue::Number(config.model.image_size as f64),
        ),
        ("preset", HParamValue::Text(config.preset.to_string())),
    ]
}

/// The kinds of [`hparams`], for the experiment summary of a sweep.
pub const HPARAM_KINDS: [(&str, HParamKind); 5] = [
    ("bottleneck", HParamKind::Text),
    ("strength", HParamKind::Number),
    ("seed", HParamKind::Number),
    ("image_size", HParamKind::Number),
    ("preset", HParamKind::Text),
];

/// Rewrites `file` without its events past `step`, and without a record a kill cut
/// short (atomically, and only when something goes).
fn prune_after(file: &std::path::Path, step: u64) -> Result<()> {
    use prost::Message;
    let (records, damage) = tensorboard::scan_records(file)?;
    let mut kept = Vec::new();
    for data in &records {
        match tensorboard::Event::decode(data.as_slice()) {
            Ok(e) if e.step <= step as i64 => kept.push(e),
            _ => {}
        }
    }
    if kept.len() == records.len() && damage.is_none() {
        return Ok(());
    }
    let bytes: Vec<u8> = kept.iter().flat_map(tensorboard::event_record).collect();
    crate::io::fsutil::write_atomic(file, &bytes)
}
