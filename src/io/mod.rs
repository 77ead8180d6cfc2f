//! Input and output: data sets, run directories and their locks, checkpoints, the safetensors files
//! they are written in, PNG images, atomic writes, and the PyTorch reference's exports.

pub mod checkpoint;
pub mod data;
pub mod fsutil;
pub mod image;
pub mod json_float;
pub mod lock;
pub mod reference;
pub mod run_dir;
pub mod tensor_file;
pub mod tensorboard;
