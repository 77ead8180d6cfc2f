//! What training tells: a progress bar on a terminal (a plain line about once a minute
//! without one), the lines above it, and the lines of `metrics.jsonl`.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::io::checkpoint::TrainState;
use crate::model::terms::{Terms, train_bpd};
use crate::training::evaluate::EvalReport;

/// One line of `metrics.jsonl`: where the run stands, the training terms of the epoch so
/// far (absent on the untrained model's line) and the test evaluation.
#[derive(Debug, Serialize)]
pub struct MetricsLine<'a> {
    pub step: u64,
    /// Epochs done (the epoch that just ended counts).
    pub epoch: u64,
    pub epoch_end: bool,
    pub lr: f64,
    #[serde(flatten)]
    pub train: Option<TrainFigures>,
    /// Seconds of training so far, over all sessions.
    pub wall_s: f64,
    pub test: &'a EvalReport,
}

/// The training terms of the epoch so far (`train_nelbo_bpd`, ...) and its speed.
#[derive(Debug, Serialize)]
pub struct TrainFigures {
    #[serde(flatten, with = "train_bpd")]
    pub terms: Terms,
    pub train_img_per_s: f64,
}

impl MetricsLine<'_> {
    /// The line as JSON, its keys in alphabetical order (as every line has been).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("metric lines serialise")
    }
}

impl TrainFigures {
    /// The figures of `state`'s epoch so far, for images of `dims` dimensions.
    pub fn of(state: &TrainState, dims: usize) -> Self {
        Self {
            terms: state.epoch_sums.bits_per_dim(dims),
            train_img_per_s: state.epoch_sums.images_per_second(),
        }
    }
}

/// The progress bar, or plain lines on stderr when there is no terminal (a log file, a
/// sweep's `train.log`).
pub struct Progress {
    bar: ProgressBar,
    total: u64,
    dims: usize,
    last_line: Instant,
}

impl Progress {
    /// A bar at step `at` of `total` (hidden unless `show`), for images of `dims`
    /// dimensions.
    pub fn new(show: bool, total: u64, at: u64, dims: usize) -> Self {
        let bar = if show {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} eta {eta_precise}]",
                )
                .expect("a valid progress template"),
            );
            bar.set_position(at);
            bar
        } else {
            ProgressBar::hidden()
        };
        Self {
            bar,
            total,
            dims,
            last_line: Instant::now(),
        }
    }

    /// After a step: the bar's position and message, or a plain line once a minute.
    pub fn step(&mut self, state: &TrainState, epoch: u64, lr: f64) {
        let sums = &state.epoch_sums;
        let loss = sums.bits_per_dim(self.dims).nelbo;
        let speed = sums.images_per_second();
        self.bar.set_position(state.step);
        self.bar.set_message(format!(
            "epoch {epoch} loss {loss:.4} bpd  {speed:.1} img/s"
        ));
        if self.bar.is_hidden() && self.last_line.elapsed().as_secs_f64() >= 60.0 {
            crate::noteln!(
                "step {}/{} epoch {epoch}: train {loss:.4} bpd, {speed:.1} img/s, lr {lr:.2e}",
                state.step,
                self.total
            );
            self.last_line = Instant::now();
        }
    }

    /// A line above the bar, or on stderr when there is no bar.
    pub fn say(&self, line: String) {
        if self.bar.is_hidden() {
            crate::noteln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Leaves the bar where it stopped (an error follows).
    pub fn abandon(&self) {
        self.bar.abandon();
    }

    /// Leaves the bar where it stopped, with `message`.
    pub fn abandon_with(&self, message: String) {
        self.bar.abandon_with_message(message);
    }

    /// Clears the bar at the end of the run.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
