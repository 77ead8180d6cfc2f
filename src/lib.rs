//! ibvae: information bottlenecks in hybrid VAE + PixelCNN++ image models.
//!
//! The system of Rey & Mnih, "Gaussian dropout as an information bottleneck layer"
//! (NeurIPS 2021 Bayesian Deep Learning workshop): a VAE whose decoder is also
//! autoregressive (PixelCNN++), with an information bottleneck (Gaussian dropout or a
//! variational bottleneck) on the autoregressive path, so that the latents must carry
//! the global content of the image. The compute engine is LibTorch (through `tch`).
//!
//! Modules follow the model's parts and the layers of `docs/architecture.md`:
//! - the model: [`hybrid`], [`vae`], [`pixelcnn`], [`bottleneck`], [`dmol`], [`nn`],
//!   [`ops`], [`params`]
//! - the experiment: [`config`], [`run`], [`train`], [`evaluate`], [`sample`], [`sweep`],
//!   [`plot`], [`bench`], [`optim`]
//! - the science: [`info`] (Theorem 1, the GD information bound), [`units`]
//! - [`data`]: CIFAR-10 and IDX readers, download, batching
//! - [`backend`]: devices, threads, seeds and precision
//! - [`cli`] parses the command line; [`commands`] runs each command

pub mod backend;
pub mod bench;
pub mod bottleneck;
pub mod cli;
pub mod commands;
pub mod config;
pub mod data;
pub mod dmol;
pub mod error;
pub mod evaluate;
pub mod fsutil;
pub mod hybrid;
pub mod image;
pub mod info;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod params;
pub mod pixelcnn;
pub mod plot;
pub mod reference;
pub mod run;
pub mod sample;
pub mod signals;
pub mod slurm;
pub mod sweep;
#[cfg(test)]
pub(crate) mod testing;
pub mod train;
pub mod units;
pub mod vae;

pub use error::{Error, Result};
