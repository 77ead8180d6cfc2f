//! Batches of images: a seeded shuffle per epoch, the last partial batch kept, and the
//! conversion of bytes to tensors in `[-1, 1]`.

use rand::seq::SliceRandom;
use tch::{Device, Kind, Tensor};

/// The order in which an epoch visits `n` images, split into batches of at most `batch`.
/// The order depends only on `(seed, epoch)`, so a resumed run sees the same batches.
#[derive(Debug, Clone)]
pub struct Batches {
    order: Vec<usize>,
    batch: usize,
}

impl Batches {
    /// Images `0..n` in order (evaluation).
    pub fn sequential(n: usize, batch: usize) -> Self {
        assert!(batch > 0, "batch size must be positive");
        Self {
            order: (0..n).collect(),
            batch,
        }
    }

    /// Images `0..n` shuffled by `seed` and `epoch`.
    pub fn shuffled(n: usize, batch: usize, seed: u64, epoch: u64) -> Self {
        let mut s = Self::sequential(n, batch);
        // Mix the epoch into the seed so that every epoch has its own permutation.
        let mut rng = crate::engine::random::epoch_rng(seed, epoch);
        s.order.shuffle(&mut rng);
        s
    }

    /// Number of batches, the last one possibly partial.
    pub fn len(&self) -> usize {
        self.order.len().div_ceil(self.batch)
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The image indices of batch `i`.
    pub fn get(&self, i: usize) -> &[usize] {
        let start = i * self.batch;
        &self.order[start..(start + self.batch).min(self.order.len())]
    }

    /// All batches in order.
    pub fn iter(&self) -> impl Iterator<Item = &[usize]> {
        self.order.chunks(self.batch)
    }
}

/// Image bytes `[n, C, H, W]` to a float tensor with `x = byte / 127.5 - 1` (SPEC section 2).
/// The bytes travel to the device as bytes (a quarter of the float traffic) and are
/// scaled there, in the reference's order of operations.
pub fn images_to_tensor(bytes: &[u8], shape: [usize; 4], device: Device) -> Tensor {
    assert_eq!(
        bytes.len(),
        shape.iter().product::<usize>(),
        "image bytes must fill the tensor shape"
    );
    let shape = shape.map(|d| d as i64);
    Tensor::from_slice(bytes)
        .view(shape)
        .to_device(device)
        .to_kind(Kind::Float)
        / 127.5
        - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_image_once_with_last_partial_batch() {
        let b = Batches::shuffled(10, 4, 7, 0);
        assert_eq!(b.len(), 3);
        assert_eq!(b.get(2).len(), 2);
        let mut all: Vec<usize> = b.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn order_depends_on_seed_and_epoch_only() {
        let a = Batches::shuffled(100, 8, 1, 3);
        assert_eq!(a.order, Batches::shuffled(100, 8, 1, 3).order);
        assert_ne!(a.order, Batches::shuffled(100, 8, 1, 4).order);
        assert_ne!(a.order, Batches::shuffled(100, 8, 2, 3).order);
    }

    #[test]
    fn bytes_scale_to_unit_interval() {
        let t = images_to_tensor(&[0, 255, 127, 128], [1, 1, 2, 2], Device::Cpu);
        let v = crate::model::ops::host_f32(&t);
        assert_eq!(v[0], -1.0);
        assert_eq!(v[1], 1.0);
        assert!((v[2] - (127.0 / 127.5 - 1.0)).abs() < 1e-7);
        assert!((v[3] - (128.0 / 127.5 - 1.0)).abs() < 1e-7);
    }
}
