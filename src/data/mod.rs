//! Image data sets: CIFAR-10 (binary format), MNIST / Fashion-MNIST (IDX format), the
//! download of CIFAR-10, and batching into tensors scaled to `[-1, 1]`.

pub mod batch;
pub mod cifar;
pub mod download;
pub mod idx;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use batch::{Batches, images_to_tensor};

/// The environment variable that sets the default data directory.
pub const DATA_DIR_ENV: &str = "IBVAE_DATA";

/// A set of `u8` images of one shape, stored image after image in `[C, H, W]` order.
#[derive(Debug, Clone)]
pub struct ImageSet {
    /// `len * C * H * W` bytes.
    pub pixels: Vec<u8>,
    /// One class label per image.
    pub labels: Vec<u8>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Sub-pixels per image, `D = C * H * W`.
    pub fn dims(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The bytes of image `i`, `[C, H, W]`.
    pub fn image(&self, i: usize) -> &[u8] {
        let d = self.dims();
        &self.pixels[i * d..(i + 1) * d]
    }

    /// The first `n` images (all of them if `n` is larger).
    pub fn take(&self, n: usize) -> ImageSet {
        let n = n.min(self.len());
        ImageSet {
            pixels: self.pixels[..n * self.dims()].to_vec(),
            labels: self.labels[..n].to_vec(),
            ..*self
        }
    }

    /// The images at `indices`, in that order.
    pub fn gather(&self, indices: &[usize]) -> Vec<u8> {
        let mut out = Vec::with_capacity(indices.len() * self.dims());
        for &i in indices {
            out.extend_from_slice(self.image(i));
        }
        out
    }
}

/// A training split and a test split of the same image shape.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `cifar10` or `idx` (MNIST / Fashion-MNIST).
    pub name: String,
    pub train: ImageSet,
    pub test: ImageSet,
}

/// The default data directory: `$IBVAE_DATA` if set, else `<cache dir>/ibvae/cifar10`
/// (`~/.cache/ibvae/cifar10` on Linux).
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV) {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("ibvae")
        .join("cifar10")
}

/// Loads the data set in `dir`, CIFAR-10 if `test_batch.bin` is there, else MNIST-style
/// IDX files.
pub fn load(dir: &Path) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(Error::Data(format!(
            "data directory {} does not exist: run `ibvae download --dir {}` to fetch CIFAR-10, \
             or pass --data with a folder that holds CIFAR-10 binary files or IDX files",
            dir.display(),
            dir.display()
        )));
    }
    if cifar::looks_like(dir) {
        return cifar::load_dir(dir);
    }
    if idx::looks_like(dir) {
        return idx::load_dir(dir);
    }
    Err(Error::Data(format!(
        "{} holds no data set: expected CIFAR-10 binary files (test_batch.bin and \
         data_batch_N.bin) or IDX files (t10k-images-idx3-ubyte[.gz], \
         train-images-idx3-ubyte[.gz]); run `ibvae download --dir {}` to fetch CIFAR-10",
        dir.display(),
        dir.display()
    )))
}
