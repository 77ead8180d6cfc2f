//! Experiments: sweeps over bottleneck strengths and seeds (here or on SLURM), and the
//! figures of their results.

pub mod plot;
pub mod sweep;
