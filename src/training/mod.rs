//! Training and evaluation (SPEC sections 5 and 7): the training loop, Adam and the
//! Polyak average, test evaluation, ancestral sampling and the speed benchmark.

pub mod bench;
pub mod evaluate;
pub mod log;
pub mod optim;
pub mod restore;
pub mod sample;
pub mod step;
pub mod trainer;
