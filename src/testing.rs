//! Helpers for tests that read files from outside the crate (the shared CIFAR-10
//! subset, the reference's fixtures, Debian's Fashion-MNIST).

use std::path::{Path, PathBuf};

/// `path` when it exists. Otherwise the test is skipped with a printed reason, except
/// under CI (`CI` set), where a missing file is a failure: CI provides every file the
/// tests read (`.ci/run`), and a test that skips there checks nothing.
pub fn required(path: &Path, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path.to_path_buf());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is missing at {} and CI must provide it",
        path.display()
    );
    eprintln!("skipping: {what} is not at {}", path.display());
    None
}
