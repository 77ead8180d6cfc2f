//! CIFAR-10 binary format (SPEC section 8): records of 1 label byte and 3072 pixel
//! bytes (red plane, green plane, blue plane, each 32x32 row-major).

use std::path::Path;

use super::{Dataset, DatasetKind, ImageSet};
use crate::error::{Error, IoContext, Result};

/// Bytes per record: one label byte and a 3x32x32 image.
pub const RECORD: usize = 1 + 3 * 32 * 32;
/// The training files of the full data set, in order.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test file.
pub const TEST_FILE: &str = "test_batch.bin";

/// Whether `dir` holds any CIFAR-10 binary file.
pub fn looks_like(dir: &Path) -> bool {
    dir.join(TEST_FILE).exists() || TRAIN_FILES.iter().any(|f| dir.join(f).exists())
}

/// Parses the records of one CIFAR-10 binary file. `name` is used in error messages.
pub fn parse(bytes: &[u8], name: &str) -> Result<ImageSet> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD) {
        return Err(Error::Data(format!(
            "{name}: {} bytes is not a whole number of CIFAR-10 records ({RECORD} bytes each: \
             1 label byte and 3x32x32 pixels); the file is truncated or not CIFAR-10 binary, \
             fetch it again with `ibvae download`",
            bytes.len()
        )));
    }
    let n = bytes.len() / RECORD;
    let mut pixels = Vec::with_capacity(n * (RECORD - 1));
    let mut labels = Vec::with_capacity(n);
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        let label = record[0];
        if label > 9 {
            return Err(Error::Data(format!(
                "{name}: record {i} has label {label}, expected 0-9; the file is not \
                 CIFAR-10 binary (CIFAR-100 records have two label bytes)"
            )));
        }
        labels.push(label);
        pixels.extend_from_slice(&record[1..]);
    }
    Ok(ImageSet {
        pixels,
        labels,
        channels: 3,
        height: 32,
        width: 32,
    })
}

fn read_file(path: &Path) -> Result<ImageSet> {
    let bytes = std::fs::read(path).at(path)?;
    parse(&bytes, &path.display().to_string())
}

/// Loads every training file present in `dir` (any subset of `data_batch_1.bin` ..
/// `data_batch_5.bin`) and the test file, which must be there.
pub fn load_dir(dir: &Path) -> Result<Dataset> {
    let test_path = dir.join(TEST_FILE);
    if !test_path.exists() {
        return Err(Error::Data(format!(
            "{} is missing: a CIFAR-10 data directory needs the test file; run \
             `ibvae download --dir {}`",
            test_path.display(),
            dir.display()
        )));
    }
    let test = read_file(&test_path)?;
    let mut train = ImageSet {
        pixels: Vec::new(),
        labels: Vec::new(),
        channels: 3,
        height: 32,
        width: 32,
    };
    for file in TRAIN_FILES {
        let path = dir.join(file);
        if path.exists() {
            let part = read_file(&path)?;
            train.pixels.extend_from_slice(&part.pixels);
            train.labels.extend_from_slice(&part.labels);
        }
    }
    Ok(Dataset {
        kind: DatasetKind::Cifar10,
        train,
        test,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(label: u8, fill: u8) -> Vec<u8> {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(fill, RECORD - 1));
        r
    }

    #[test]
    fn parses_records_in_plane_order() {
        let mut bytes = record(3, 7);
        // Red plane of the second image is 1, green 2, blue 3.
        bytes.push(9);
        for c in 1..=3u8 {
            bytes.extend(std::iter::repeat_n(c, 1024));
        }
        let set = parse(&bytes, "t").unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.labels, vec![3, 9]);
        assert!(set.image(0).iter().all(|&b| b == 7));
        let second = set.image(1);
        assert_eq!((second[0], second[1024], second[2048]), (1, 2, 3));
    }

    #[test]
    fn truncated_file_is_a_clear_error() {
        let mut bytes = record(1, 0);
        bytes.pop();
        let err = parse(&bytes, "data_batch_1.bin").unwrap_err().to_string();
        assert!(
            err.contains("data_batch_1.bin") && err.contains("3073"),
            "{err}"
        );
    }

    #[test]
    fn label_out_of_range_is_a_clear_error() {
        let err = parse(&record(10, 0), "x.bin").unwrap_err().to_string();
        assert!(err.contains("label 10") && err.contains("0-9"), "{err}");
    }

    #[test]
    fn missing_test_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data_batch_1.bin"), record(0, 0)).unwrap();
        let err = load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("test_batch.bin") && err.contains("ibvae download"),
            "{err}"
        );
    }

    #[test]
    fn loads_any_subset_of_training_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test_batch.bin"), record(0, 1)).unwrap();
        std::fs::write(
            dir.path().join("data_batch_2.bin"),
            [record(1, 2), record(2, 3)].concat(),
        )
        .unwrap();
        std::fs::write(dir.path().join("data_batch_5.bin"), record(4, 4)).unwrap();
        let data = load_dir(dir.path()).unwrap();
        assert_eq!(data.test.len(), 1);
        assert_eq!(data.train.labels, vec![1, 2, 4]);
        assert_eq!(data.train.pixels.len(), 3 * 3072);
    }

    #[test]
    fn shared_cifar_files_load() {
        let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar10");
        let Some(dir) = crate::testing::required(&shared, "the shared CIFAR-10 subset") else {
            return;
        };
        let data = load_dir(&dir).unwrap();
        assert_eq!(data.test.len(), 10_000);
        assert_eq!(data.train.len(), 10_000);
    }
}
