//! MNIST / Fashion-MNIST in the IDX format (plain or gzipped): one channel, 28x28.
//! Debian's `dataset-fashion-mnist` installs them under `/usr/share/datasets/fashion-mnist/`.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{Dataset, DatasetKind, ImageSet};
use crate::error::{Error, IoContext, Result};

/// IDX magic for unsigned bytes with 3 dimensions (images) and 1 dimension (labels).
const MAGIC_IMAGES: u32 = 0x0000_0803;
const MAGIC_LABELS: u32 = 0x0000_0801;

const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// The path of `stem` in `dir`, plain or with `.gz`, if either exists.
fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.exists())
}

/// Whether `dir` holds an IDX test image file.
pub fn looks_like(dir: &Path) -> bool {
    find(dir, TEST_IMAGES).is_some()
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).at(path)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                Error::Data(format!(
                    "{}: not a readable gzip file ({e}); the file is truncated or corrupt",
                    path.display()
                ))
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("slice of four bytes"))
}

/// Parses an IDX image file: `[n, rows, cols]` unsigned bytes.
pub fn parse_images(bytes: &[u8], name: &str) -> Result<(usize, usize, usize, Vec<u8>)> {
    if bytes.len() < 16 || be_u32(bytes, 0) != MAGIC_IMAGES {
        return Err(Error::Data(format!(
            "{name}: not an IDX image file (expected the magic number 0x00000803 and a \
             16-byte header)"
        )));
    }
    let (n, rows, cols) = (
        be_u32(bytes, 4) as usize,
        be_u32(bytes, 8) as usize,
        be_u32(bytes, 12) as usize,
    );
    let want = 16 + n * rows * cols;
    if bytes.len() != want {
        return Err(Error::Data(format!(
            "{name}: header says {n} images of {rows}x{cols} ({want} bytes) but the file has \
             {} bytes; it is truncated or corrupt",
            bytes.len()
        )));
    }
    Ok((n, rows, cols, bytes[16..].to_vec()))
}

/// Parses an IDX label file.
pub fn parse_labels(bytes: &[u8], name: &str) -> Result<Vec<u8>> {
    if bytes.len() < 8 || be_u32(bytes, 0) != MAGIC_LABELS {
        return Err(Error::Data(format!(
            "{name}: not an IDX label file (expected the magic number 0x00000801)"
        )));
    }
    let n = be_u32(bytes, 4) as usize;
    if bytes.len() != 8 + n {
        return Err(Error::Data(format!(
            "{name}: header says {n} labels but the file has {} bytes after the header",
            bytes.len() - 8
        )));
    }
    Ok(bytes[8..].to_vec())
}

fn load_split(dir: &Path, images: &str, labels: &str) -> Result<ImageSet> {
    let img_path = find(dir, images).ok_or_else(|| {
        Error::Data(format!(
            "{}: no {images} or {images}.gz; an IDX data directory needs both splits",
            dir.display()
        ))
    })?;
    let (n, rows, cols, pixels) =
        parse_images(&read_maybe_gz(&img_path)?, &img_path.display().to_string())?;
    let labels = match find(dir, labels) {
        Some(p) => {
            let l = parse_labels(&read_maybe_gz(&p)?, &p.display().to_string())?;
            if l.len() != n {
                return Err(Error::Data(format!(
                    "{}: {} labels for {n} images",
                    p.display(),
                    l.len()
                )));
            }
            l
        }
        // Labels are not needed by the generative model: absent labels read as class 0.
        None => vec![0; n],
    };
    Ok(ImageSet {
        pixels,
        labels,
        channels: 1,
        height: rows,
        width: cols,
    })
}

/// Loads the training and test splits of an MNIST-style data set.
pub fn load_dir(dir: &Path) -> Result<Dataset> {
    let test = load_split(dir, TEST_IMAGES, TEST_LABELS)?;
    let train = load_split(dir, TRAIN_IMAGES, TRAIN_LABELS)?;
    if (train.height, train.width) != (test.height, test.width) {
        return Err(Error::Data(format!(
            "{}: training images are {}x{} but test images are {}x{}",
            dir.display(),
            train.height,
            train.width,
            test.height,
            test.width
        )));
    }
    Ok(Dataset {
        kind: DatasetKind::Idx,
        train,
        test,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [MAGIC_IMAGES, n, rows, cols] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend((0..n * rows * cols).map(|i| (i % 251) as u8));
        b
    }

    fn idx_labels(n: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC_LABELS.to_be_bytes());
        b.extend_from_slice(&n.to_be_bytes());
        b.extend((0..n).map(|i| (i % 10) as u8));
        b
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn reads_plain_and_gzipped_splits() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join(TRAIN_IMAGES), idx_images(3, 28, 28)).unwrap();
        std::fs::write(d.join(TRAIN_LABELS), idx_labels(3)).unwrap();
        std::fs::write(
            d.join(format!("{TEST_IMAGES}.gz")),
            gz(&idx_images(2, 28, 28)),
        )
        .unwrap();
        std::fs::write(d.join(format!("{TEST_LABELS}.gz")), gz(&idx_labels(2))).unwrap();
        assert!(looks_like(d));
        let data = load_dir(d).unwrap();
        assert_eq!((data.train.len(), data.test.len()), (3, 2));
        assert_eq!(
            (data.test.channels, data.test.height, data.test.width),
            (1, 28, 28)
        );
        assert_eq!(data.test.image(1)[0], (784 % 251) as u8);
        assert_eq!(data.train.labels, vec![0, 1, 2]);
    }

    #[test]
    fn truncated_image_file_is_a_clear_error() {
        let mut b = idx_images(2, 28, 28);
        b.truncate(b.len() - 5);
        let err = parse_images(&b, "t10k").unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        let err = parse_images(&[0; 16], "junk").unwrap_err().to_string();
        assert!(err.contains("magic"), "{err}");
    }

    #[test]
    fn debian_fashion_mnist_loads_when_installed() {
        let debian = Path::new("/usr/share/datasets/fashion-mnist");
        let what = "Fashion-MNIST (Debian's dataset-fashion-mnist)";
        let Some(dir) = crate::testing::required(debian, what) else {
            return;
        };
        let data = load_dir(&dir).unwrap();
        assert_eq!((data.train.len(), data.test.len()), (60_000, 10_000));
        assert_eq!(data.test.dims(), 784);
    }
}
