//! Training and evaluation (SPEC sections 5 and 7): the training loop, Adam and the
//! Polyak average, test evaluation, ancestral sampling and the speed benchmark.

pub mod bench;
pub mod evaluate;
pub mod optim;
pub mod sample;
pub mod trainer;
