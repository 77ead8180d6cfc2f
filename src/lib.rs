//! ibvae: information bottlenecks in hybrid VAE + PixelCNN++ image models.
//!
//! The system of Rey & Mnih, "Gaussian dropout as an information bottleneck layer"
//! (NeurIPS 2021 Bayesian Deep Learning workshop): a VAE whose decoder is also
//! autoregressive (PixelCNN++), with an information bottleneck (Gaussian dropout or a
//! variational bottleneck) on the autoregressive path, so that the latents must carry
//! the global content of the image. The compute engine is LibTorch (through `tch`).
//!
//! The folders are the layers of `docs/architecture.md`, each using only those below it:
//! - [`cli`] parses the command line; [`commands`] runs each command
//! - [`experiment`]: sweeps (local and SLURM), their statistics and figures
//! - [`training`]: the training step and loop, Adam and the Polyak average, evaluation,
//!   sampling, the speed benchmark
//! - [`io`]: data sets, run directories, checkpoints, tensor files, images
//! - [`model`]: the hybrid model and its parts, the loss terms, Theorem 1, units
//! - [`config`]: the one experiment config, the interface between all of them
//! - [`engine`]: LibTorch's devices, threads, precision, randomness, and the crate's C++

pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod engine;
pub mod error;
pub mod experiment;
pub mod io;
pub mod model;
pub mod signals;
#[cfg(test)]
pub(crate) mod testing;
pub mod training;

pub use error::{Error, Result};
