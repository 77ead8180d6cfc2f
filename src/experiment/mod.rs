//! Experiments: sweeps over bottleneck strengths and seeds (here or on SLURM), the
//! statistics of their results, and the figures.

pub mod curves;
pub mod plot;
pub mod stats;
pub mod sweep;
