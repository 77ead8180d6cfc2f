//! Training and evaluation (SPEC sections 5 and 7): the training loop, Adam and the
//! Polyak average, test evaluation, ancestral sampling and the speed benchmark.

pub mod bench;
pub mod board;
pub mod evaluate;
pub mod graph;
pub mod log;
pub mod optim;
pub mod restore;
pub mod sample;
pub mod step;
pub(crate) mod tester;
pub mod trainer;

use tch::Device;

use crate::config::ModelConfig;
use crate::error::Result;

/// Refuses a training step of `batch` images of `model` that cannot fit in the host's
/// memory, before anything is allocated (on the CPU; a GPU's memory is not checked).
pub fn ensure_trainable(model: &ModelConfig, batch: usize, device: Device) -> Result<()> {
    if device != Device::Cpu {
        return Ok(());
    }
    crate::engine::memory::ensure_fits(
        &format!(
            "training {} parameters at batch {batch}",
            match crate::model::size::param_count(model) {
                n if n < 1_000_000_000_000 => n.to_string(),
                _ => "more than 10^12".into(),
            }
        ),
        crate::model::size::training_bytes(model, batch),
        "lower --batch or the model's sizes (--preset, --model)",
    )
}
