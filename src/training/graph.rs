//! Training steps replayed from one captured CUDA graph (`--cuda-graph on`): after a few
//! ordinary steps on a side stream, the whole step (forward, loss, backward, fused Adam,
//! the average) is recorded once and then replayed for every later batch, one launch of
//! the recorded kernels instead of hundreds of launches from the host.
//!
//! The captured step reads fixed tensors, so each batch is copied into a static input, the
//! learning rate is written into a one-element tensor on the device, and Adam's step count
//! is kept on the device. The random draws (dropout, Gaussian-dropout noise, `z`) come from
//! LibTorch's CUDA generator, which LibTorch registers with the graph: each replay draws
//! from the seed the caller set before it, as an ordinary step does.
//!
//! The loss is read back after each replay, and a non-finite one ends the step as
//! [`NonFiniteLoss`] as in an ordinary step; there the update has already been applied, so
//! the caller must not save the weights (the trainer does not: a NaN ends the run with its
//! last checkpoint in place).

use std::fmt;
use std::str::FromStr;

use tch::{Device, Kind, Tensor};

use crate::engine::ffi::{CudaGraph, cuda_graphs_built};
use crate::error::{Error, Result};
use crate::model::ops::host_f64;
use crate::training::optim::lr_tensor;
use crate::training::step::{Learner, NonFiniteLoss, StepTerms, StepTimes, step_terms};

/// Ordinary steps before the capture: LibTorch's lazy initialisations (cuDNN's algorithm
/// search, the allocator's pools, Adam's moments) happen there, never in the graph.
pub const WARMUP_STEPS: usize = 3;

/// Whether training steps are captured in a CUDA graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphMode {
    On,
    Off,
}

impl fmt::Display for GraphMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::On => "on",
            Self::Off => "off",
        })
    }
}

impl FromStr for GraphMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            _ => Err(Error::Config(format!(
                "unknown --cuda-graph `{s}`: use on or off"
            ))),
        }
    }
}

impl GraphMode {
    /// `--cuda-graph`: `on` needs a CUDA device (and a build with CUDA graphs); by
    /// default, on for CUDA where this build has graphs, and off on the CPU.
    pub fn resolve(asked: Option<GraphMode>, device: Device) -> Result<Self> {
        match (asked, device) {
            (Some(Self::On), Device::Cpu) => Err(Error::Config(
                "--cuda-graph on needs a CUDA device (--device cuda); CUDA graphs do not exist \
                 on the CPU"
                    .into(),
            )),
            (Some(Self::On), _) => {
                if cuda_graphs_built()? {
                    Ok(Self::On)
                } else {
                    Err(Error::Config(
                        "--cuda-graph on: this ibvae was built without CUDA graphs (LibTorch \
                         without CUDA, or CUDA's headers missing at build time: run \
                         ./setup.sh); run with --cuda-graph off"
                            .into(),
                    ))
                }
            }
            (Some(Self::Off), _) | (None, Device::Cpu) => Ok(Self::Off),
            (None, _) => Ok(if cuda_graphs_built()? {
                Self::On
            } else {
                Self::Off
            }),
        }
    }
}

/// Takes training steps as `--cuda-graph` says: ordinary ones, or through a
/// [`GraphedStep`].
#[derive(Debug)]
pub struct Stepper(Option<GraphedStep>);

impl Stepper {
    pub fn new(mode: GraphMode, device: Device, batch: usize) -> Result<Self> {
        Ok(Self(match mode {
            GraphMode::On => Some(GraphedStep::new(device, batch)?),
            GraphMode::Off => None,
        }))
    }

    /// Whether the steps go through a CUDA graph.
    pub fn is_graphed(&self) -> bool {
        self.0.is_some()
    }

    /// Ordinary steps of the graph's warm-up and its capture: the benchmark's untimed
    /// steps cover them.
    pub fn warmup(&self) -> usize {
        if self.0.is_some() {
            WARMUP_STEPS + 1
        } else {
            0
        }
    }

    /// One step (see [`Learner::step`]; `times` only without a graph, which has no parts).
    pub fn step(
        &mut self,
        learner: &mut Learner,
        x: &Tensor,
        lr: f64,
        times: Option<&mut StepTimes>,
    ) -> Result<std::result::Result<StepTerms, NonFiniteLoss>> {
        match &mut self.0 {
            Some(g) => g.step(learner, x, lr),
            None => Ok(learner.step(x, lr, times)),
        }
    }
}

/// The fixed tensors the captured step reads and writes.
#[derive(Debug)]
struct Captured {
    x: Tensor,
    lr: Tensor,
    /// Adam's `t` on the device: set before each replay, which increments it.
    step: Tensor,
    /// The step's figures, written by each replay.
    figures: Tensor,
}

/// A training step that warms up, captures itself once, and replays.
#[derive(Debug)]
pub struct GraphedStep {
    graph: CudaGraph,
    device: usize,
    /// The images of a full batch, the captured step's.
    batch: i64,
    warm: usize,
    captured: Option<Captured>,
}

impl GraphedStep {
    /// A graphed step for training on `device` (a CUDA device) with batches of `batch`
    /// images (an epoch's smaller last batch takes an ordinary step).
    pub fn new(device: Device, batch: usize) -> Result<Self> {
        let Device::Cuda(index) = device else {
            return Err(Error::Config(
                "CUDA graphs need a CUDA device (--device cuda)".into(),
            ));
        };
        Ok(Self {
            graph: CudaGraph::new()?,
            device: index,
            batch: batch as i64,
            warm: 0,
            captured: None,
        })
    }

    /// One step on the batch `x` at learning rate `lr`: an ordinary step while warming
    /// up (and for a batch of another size), then the capture, then a replay. The caller
    /// seeds LibTorch's generator first, as for [`Learner::step`]. The outer error is the
    /// engine's (a capture LibTorch refused).
    pub fn step(
        &mut self,
        learner: &mut Learner,
        x: &Tensor,
        lr: f64,
    ) -> Result<std::result::Result<StepTerms, NonFiniteLoss>> {
        let full = x.size().first() == Some(&self.batch);
        if self.captured.is_none() {
            if self.warm == 0 {
                self.graph.side_stream(self.device, true)?;
            }
            if self.warm < WARMUP_STEPS || !full {
                self.warm += 1;
                return Ok(learner.step(x, lr, None));
            }
            if let Err(e) = self.capture(learner, x) {
                self.graph.side_stream(self.device, false)?;
                return Err(Error::Device(format!(
                    "capturing the training step in a CUDA graph failed ({e}); run with \
                     --cuda-graph off"
                )));
            }
        }
        if !full {
            return Ok(learner.step(x, lr, None));
        }
        let c = self.captured.as_mut().expect("captured above");
        c.x.copy_(x);
        let _ = c.lr.fill_(lr);
        // Adam's `t` before this step (ordinary steps may have moved it); the replay adds 1.
        let _ = c.step.fill_(learner.adam.t as f64);
        self.graph.replay()?;
        learner.adam.t += 1;
        let host = host_f64(&c.figures);
        if !host[0].is_finite() {
            return Ok(Err(NonFiniteLoss(host[0])));
        }
        Ok(Ok(step_terms(&host, x)))
    }

    /// Records the step on the side stream, with static tensors shaped like `x`.
    fn capture(&mut self, learner: &mut Learner, x: &Tensor) -> Result<()> {
        let device = x.device();
        let mut step = Tensor::from(learner.adam.t as f32).to_device(device);
        let statics = (x.copy(), lr_tensor(0.0, device));
        self.graph.capture_begin()?;
        let figures = learner.device_step(&statics.0, &statics.1, &mut step);
        self.graph.capture_end()?;
        self.graph.side_stream(self.device, false)?;
        // Read as they are: a converted copy made after the capture would never change.
        debug_assert_eq!(figures.kind(), Kind::Float);
        self.captured = Some(Captured {
            x: statics.0,
            lr: statics.1,
            step,
            figures,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--cuda-graph on` on the CPU is a clear error; off, or the CPU's default, is off.
    #[test]
    fn graphs_are_refused_on_the_cpu() {
        let err = GraphMode::resolve(Some(GraphMode::On), Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--cuda-graph on needs a CUDA device"), "{err}");
        assert_eq!(
            GraphMode::resolve(None, Device::Cpu).unwrap(),
            GraphMode::Off
        );
        assert_eq!(
            GraphMode::resolve(Some(GraphMode::Off), Device::Cpu).unwrap(),
            GraphMode::Off
        );
        assert_eq!("ON".parse::<GraphMode>().unwrap(), GraphMode::On);
        let err = "yes".parse::<GraphMode>().unwrap_err().to_string();
        assert!(err.contains("use on or off"), "{err}");
        let err = GraphedStep::new(Device::Cpu, 4).unwrap_err().to_string();
        assert!(err.contains("CUDA device"), "{err}");
    }

    /// This build has CUDA graphs when it was built against the PyTorch wheel with CUDA
    /// and its headers (`./setup.sh` installs them), and a new graph can be made then: the
    /// C++ side links (the capture itself needs a GPU).
    #[test]
    fn the_cuda_graph_code_is_built_where_libtorch_has_cuda() {
        let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".libtorch/lib");
        let has_cuda = lib.join("libtorch_cuda.so").exists()
            && lib
                .join("../../nvidia/cu13/include/crt/host_config.h")
                .exists();
        let built = cuda_graphs_built().unwrap();
        if has_cuda {
            assert!(
                built,
                "LibTorch and CUDA's headers are there, but no graphs were built"
            );
        }
        match CudaGraph::new() {
            Ok(_) => assert!(built),
            Err(e) => {
                assert!(!built);
                assert!(e.to_string().contains("--cuda-graph off"), "{e}");
            }
        }
    }
}
