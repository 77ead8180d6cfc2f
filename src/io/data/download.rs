//! `ibvae download`: fetches the CIFAR-10 binary archive, checks its MD5 and unpacks it
//! into the data directory atomically. A half-finished download never looks like a data
//! set: everything happens in a hidden sibling folder that is renamed into place last.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use super::cifar;
use crate::error::{Error, IoContext, Result};

/// The canonical address of the CIFAR-10 binary archive (SPEC section 8).
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// Its MD5, as published on the CIFAR-10 page.
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// The folder inside the archive that holds the files.
const ARCHIVE_DIR: &str = "cifar-10-batches-bin";

/// Where to fetch from and what checksum to expect.
#[derive(Debug, Clone)]
pub struct Source {
    pub url: String,
    pub md5: String,
}

impl Default for Source {
    fn default() -> Self {
        Self {
            url: CIFAR10_URL.into(),
            md5: CIFAR10_MD5.into(),
        }
    }
}

/// What `download` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The directory already held CIFAR-10; nothing was fetched.
    AlreadyThere,
    /// The archive was fetched, checked and unpacked; these files were written.
    Downloaded(Vec<String>),
}

/// Fetches and unpacks CIFAR-10 into `dir` unless it is already there, whole: a
/// truncated file (not a whole number of records) is fetched again.
pub fn download(dir: &Path, source: &Source, progress: bool) -> Result<Outcome> {
    if dir.join(cifar::TEST_FILE).exists() && damaged(dir).is_empty() {
        return Ok(Outcome::AlreadyThere);
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).at(&parent)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).at(&staging)?;
    }
    std::fs::create_dir_all(&staging).at(&staging)?;
    let result = fetch_into(&staging, source, progress).and_then(|files| {
        install(&staging.join("files"), dir, &files)?;
        Ok(files)
    });
    // The staging folder is removed whether the download worked or not.
    let _ = std::fs::remove_dir_all(&staging);
    result.map(Outcome::Downloaded)
}

/// The CIFAR-10 files in `dir` that are not a whole number of records.
pub fn damaged(dir: &Path) -> Vec<String> {
    std::iter::once(cifar::TEST_FILE)
        .chain(cifar::TRAIN_FILES)
        .filter(|name| {
            std::fs::metadata(dir.join(name))
                .is_ok_and(|m| m.len() == 0 || !m.len().is_multiple_of(cifar::RECORD as u64))
        })
        .map(str::to_string)
        .collect()
}

/// Downloads the archive into `staging/archive.tar.gz`, checks it, and unpacks the data
/// files into `staging/files`. Returns their names.
fn fetch_into(staging: &Path, source: &Source, progress: bool) -> Result<Vec<String>> {
    let archive = staging.join("archive.tar.gz");
    let response = ureq::get(&source.url).call().map_err(|e| {
        Error::Download(format!(
            "could not fetch {}: {e}; check the network, or copy the CIFAR-10 binary files \
             into the data directory by hand",
            source.url
        ))
    })?;
    let total: Option<u64> = response
        .header("Content-Length")
        .and_then(|v| v.parse().ok());
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bytes}/{total_bytes} {bar:30} {bytes_per_sec} eta {eta}",
            )
            .expect("a valid progress template"),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut reader = response.into_reader();
    let mut file = std::fs::File::create(&archive).at(&archive)?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| Error::Download(format!("download of {} broke off: {e}", source.url)))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).at(&archive)?;
        bar.inc(n as u64);
    }
    file.sync_all().at(&archive)?;
    bar.finish_and_clear();
    let got = format!("{:x}", hasher.finalize());
    if got != source.md5.to_lowercase() {
        return Err(Error::Download(format!(
            "{} has MD5 {got}, expected {}: the download is corrupt or not the CIFAR-10 \
             binary archive; nothing was written, try again",
            source.url, source.md5
        )));
    }
    unpack(&archive, &staging.join("files"))
}

/// Extracts the regular files under `cifar-10-batches-bin/` into `out`, by file name only
/// (an archive entry cannot write outside `out`).
fn unpack(archive: &Path, out: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(out).at(out)?;
    let file = std::fs::File::open(archive).at(archive)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let bad = |e: std::io::Error| {
        Error::Download(format!(
            "{}: not a readable tar.gz archive ({e})",
            archive.display()
        ))
    };
    let mut names = Vec::new();
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(bad)?.into_owned();
        let in_dir = path
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|d| d == ARCHIVE_DIR);
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if !in_dir {
            continue;
        }
        let dest = out.join(&name);
        let mut f = std::fs::File::create(&dest).at(&dest)?;
        std::io::copy(&mut entry, &mut f).map_err(bad)?;
        f.sync_all().at(&dest)?;
        names.push(name);
    }
    if !names.iter().any(|n| n == cifar::TEST_FILE) {
        return Err(Error::Download(format!(
            "the archive has no {ARCHIVE_DIR}/{}: it is not the CIFAR-10 binary archive",
            cifar::TEST_FILE
        )));
    }
    names.sort();
    Ok(names)
}

/// Moves the unpacked files into `dir`: one rename of the whole folder when `dir` does
/// not exist yet, else one rename per file with the test file last, so the directory
/// only looks like CIFAR-10 once every file is in place.
fn install(files_dir: &Path, dir: &Path, names: &[String]) -> Result<()> {
    if !dir.exists() {
        return std::fs::rename(files_dir, dir).at(dir);
    }
    let (test, rest): (Vec<&String>, Vec<&String>) =
        names.iter().partition(|n| *n == cifar::TEST_FILE);
    for name in rest.into_iter().chain(test) {
        let dest = dir.join(name);
        std::fs::rename(files_dir.join(name), &dest).at(&dest)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn archive_bytes() -> Vec<u8> {
        let mut record = vec![3u8];
        record.extend(std::iter::repeat_n(9u8, cifar::RECORD - 1));
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, n) in [
            ("test_batch.bin", 2),
            ("data_batch_1.bin", 3),
            ("readme.html", 0),
        ] {
            let data: Vec<u8> = if n == 0 {
                b"<html>".to_vec()
            } else {
                record.repeat(n)
            };
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, format!("{ARCHIVE_DIR}/{name}"), &data[..])
                .unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    /// Serves `body` to each of `count` requests on 127.0.0.1 and returns the URL.
    fn serve(body: Vec<u8>, count: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(count) {
                let mut stream = stream.unwrap();
                let mut req = [0u8; 4096];
                let _ = stream.read(&mut req);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).unwrap();
                stream.write_all(&body).unwrap();
            }
        });
        format!("http://{addr}/cifar-10-binary.tar.gz")
    }

    fn md5_hex(bytes: &[u8]) -> String {
        format!("{:x}", Md5::digest(bytes))
    }

    #[test]
    fn downloads_checks_and_unpacks_from_a_local_server() {
        let body = archive_bytes();
        let source = Source {
            md5: md5_hex(&body),
            url: serve(body.clone(), 1),
        };
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache").join("cifar10");
        let outcome = download(&dir, &source, false).unwrap();
        assert_eq!(
            outcome,
            Outcome::Downloaded(vec![
                "data_batch_1.bin".into(),
                "readme.html".into(),
                "test_batch.bin".into()
            ])
        );
        let data = crate::io::data::load(&dir).unwrap();
        assert_eq!((data.train.len(), data.test.len()), (3, 2));
        // No staging folder is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1);
        // A second call does nothing (the server would refuse a second request).
        assert_eq!(
            download(&dir, &source, false).unwrap(),
            Outcome::AlreadyThere
        );
        // A truncated file is fetched again, whole.
        let train = dir.join("data_batch_1.bin");
        let bytes = std::fs::read(&train).unwrap();
        std::fs::write(&train, &bytes[..bytes.len() - 100]).unwrap();
        assert_eq!(damaged(&dir), ["data_batch_1.bin"]);
        let source = Source {
            url: serve(body, 1),
            ..source
        };
        assert!(matches!(
            download(&dir, &source, false).unwrap(),
            Outcome::Downloaded(_)
        ));
        assert_eq!(std::fs::read(&train).unwrap(), bytes);
    }

    #[test]
    fn wrong_checksum_writes_nothing() {
        let body = archive_bytes();
        let source = Source {
            md5: "0".repeat(32),
            url: serve(body, 1),
        };
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cifar10");
        let err = download(&dir, &source, false).unwrap_err().to_string();
        assert!(
            err.contains("MD5") && err.contains("nothing was written"),
            "{err}"
        );
        assert!(!dir.exists());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }

    #[test]
    fn unreachable_server_is_a_clear_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let source = Source {
            url: format!("http://{addr}/x.tar.gz"),
            md5: "0".repeat(32),
        };
        let root = tempfile::tempdir().unwrap();
        let err = download(&root.path().join("d"), &source, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("could not fetch"), "{err}");
    }
}
