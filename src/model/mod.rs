//! The model (SPEC sections 2 to 6): the hybrid VAE + PixelCNN++ and its parts under the
//! reference's parameter names, the bottleneck layers, the mixture of logistics, the
//! loss terms, Theorem 1's bound and bits per dimension.

pub mod bottleneck;
pub mod dmol;
pub mod hybrid;
pub mod info;
pub mod nn;
pub mod ops;
pub mod pixelcnn;
pub mod size;
pub mod terms;
pub mod units;
pub mod vae;
