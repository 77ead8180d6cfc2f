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

impl ImageSet {
    /// The images shrunk to `size` x `size` by averaging each `k` x `k` block of bytes
    /// (`k = height / size`) and rounding the mean to the nearest byte (halves to even).
    /// `size` must divide the height and the width equally.
    pub fn downsample(&self, size: usize) -> Result<ImageSet> {
        if size == 0
            || !self.height.is_multiple_of(size)
            || !self.width.is_multiple_of(size)
            || self.height != self.width
        {
            return Err(Error::Data(format!(
                "--image-size {size} does not divide the {}x{} images: give a size that \
                 divides {} (for CIFAR-10: 16 or 8)",
                self.height, self.width, self.height
            )));
        }
        let k = self.height / size;
        if k == 1 {
            return Ok(self.clone());
        }
        let (c, h, w) = (self.channels, self.height, self.width);
        let mut pixels = Vec::with_capacity(self.len() * c * size * size);
        let area = (k * k) as f64;
        for image in self.pixels.chunks_exact(c * h * w) {
            for plane in image.chunks_exact(h * w) {
                for by in 0..size {
                    for bx in 0..size {
                        let mut sum = 0u32;
                        for y in by * k..(by + 1) * k {
                            for x in bx * k..(bx + 1) * k {
                                sum += plane[y * w + x] as u32;
                            }
                        }
                        pixels.push((sum as f64 / area).round_ties_even() as u8);
                    }
                }
            }
        }
        Ok(ImageSet {
            pixels,
            labels: self.labels.clone(),
            channels: c,
            height: size,
            width: size,
        })
    }
}

/// A training split and a test split of the same image shape.
/// The file format a data set was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    /// CIFAR-10's binary batches (`data_batch_N.bin`, `test_batch.bin`).
    Cifar10,
    /// MNIST-style IDX files (MNIST, Fashion-MNIST).
    Idx,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub kind: DatasetKind,
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

/// Loads the data set in `dir` ([`load`]), its images shrunk to `image_size` when given
/// ([`ImageSet::downsample`]).
pub fn load_sized(dir: &Path, image_size: Option<usize>) -> Result<Dataset> {
    let data = load(dir)?;
    match image_size {
        None => Ok(data),
        Some(size) => Ok(Dataset {
            train: data.train.downsample(size)?,
            test: data.test.downsample(size)?,
            kind: data.kind,
        }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two 4x4 one-channel images shrunk to 2x2: each output byte is the mean of its 2x2
    /// block, rounded to the nearest byte with halves to even (by hand below).
    #[test]
    fn downsampling_averages_blocks_by_hand() {
        #[rustfmt::skip]
        let first = [
            0, 1,   10, 10,
            2, 3,   10, 11,
            255, 255, 7, 8,
            255, 254, 9, 9,
        ];
        let second: Vec<u8> = (0..16).map(|i| i as u8 * 4).collect();
        let set = ImageSet {
            pixels: first
                .iter()
                .copied()
                .chain(second.iter().copied())
                .collect(),
            labels: vec![3, 4],
            channels: 1,
            height: 4,
            width: 4,
        };
        let small = set.downsample(2).unwrap();
        assert_eq!((small.height, small.width, small.len()), (2, 2, 2));
        // (0+1+2+3)/4 = 1.5 -> 2; (10+10+10+11)/4 = 10.25 -> 10; (255+255+255+254)/4 =
        // 254.75 -> 255; (7+8+9+9)/4 = 8.25 -> 8.
        assert_eq!(small.image(0), [2, 10, 255, 8]);
        // (0+4+16+20)/4 = 10; (8+12+24+28)/4 = 18; (32+36+48+52)/4 = 42; (40+44+56+60)/4 = 50.
        assert_eq!(small.image(1), [10, 18, 42, 50]);
        assert_eq!(small.labels, [3, 4]);
        assert!(
            set.downsample(3)
                .unwrap_err()
                .to_string()
                .contains("does not divide")
        );
    }
}
