//! The test evaluation during training, and the TensorBoard drawings beside it: in
//! float32 whatever the training precision (so that `ibvae eval` reproduces it), on the
//! Polyak average when there is one, on the first `eval_images` test images, with the
//! run's seed for the `z` draws.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::config::TrainConfig;
use crate::engine::Precision;
use crate::error::Result;
use crate::io::data::Dataset;
use crate::model::hybrid::Hybrid;
use crate::training::board::Board;
use crate::training::evaluate::{EvalOptions, EvalReport, evaluate_until};
use crate::training::step::Learner;

/// What evaluates the model during training.
pub(crate) struct Tester<'a> {
    data: &'a Dataset,
    options: EvalOptions,
    training_precision: Precision,
    /// The model the average is evaluated in (made at the first evaluation).
    average: Option<Hybrid>,
    /// Set by a stop request, which an evaluation answers within one batch.
    stop: Arc<AtomicBool>,
}

impl<'a> Tester<'a> {
    pub(crate) fn new(
        data: &'a Dataset,
        tc: &TrainConfig,
        training_precision: Precision,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let options = EvalOptions {
            limit: tc.eval_images,
            batch: tc.eval_batch,
            seed: tc.seed,
            iw_samples: 1,
        };
        Self {
            data,
            options,
            training_precision,
            average: None,
            stop,
        }
    }

    /// The test figures of the model (or its average), or `None` when a stop request
    /// cut the evaluation short.
    pub(crate) fn report(&mut self, learner: &mut Learner) -> Result<Option<EvalReport>> {
        let (data, options, stop) = (self.data, self.options, self.stop.clone());
        self.on_evaluated_model(learner, |model| {
            Ok(evaluate_until(model, &data.test, options, &stop))
        })
    }

    /// The grids of samples and reconstructions of the model (or its average) at `step`.
    pub(crate) fn draw(
        &mut self,
        learner: &mut Learner,
        board: &mut Board,
        step: u64,
        seed: u64,
    ) -> Result<()> {
        let test = &self.data.test.pixels;
        self.on_evaluated_model(learner, |model| board.drawings(step, model, test, seed))
    }

    /// Runs `f` on the model evaluations use: the Polyak average (in a model of its own,
    /// in float32) when there is one, else the model itself, in float32 for the call.
    fn on_evaluated_model<R>(
        &mut self,
        learner: &mut Learner,
        f: impl FnOnce(&Hybrid) -> Result<R>,
    ) -> Result<R> {
        let model = &mut learner.model;
        let Some(ema) = &learner.ema else {
            model.set_precision(Precision::F32);
            let out = f(model);
            model.set_precision(self.training_precision);
            return out;
        };
        if self.average.is_none() {
            self.average = Some(Hybrid::new(&model.config, model.device())?);
        }
        let average = self.average.as_ref().expect("made above");
        ema.copy_to(average.params());
        f(average)
    }
}
