//! The one error type of the library. Every variant's message says what was wrong and,
//! where the user can act, what to do about it.

use std::path::{Path, PathBuf};

/// Errors returned by the library. `main` prints them and exits with a non-zero code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A data file is missing, truncated or malformed.
    #[error("{0}")]
    Data(String),
    /// A command-line value or configuration that cannot be used.
    #[error("{0}")]
    Config(String),
    /// A checkpoint or run directory that does not fit what was asked for.
    #[error("{0}")]
    Checkpoint(String),
    /// Training stopped because the numbers went bad.
    #[error("{0}")]
    Training(String),
    /// The download of a data set failed.
    #[error("{0}")]
    Download(String),
    /// No device of the requested kind is available.
    #[error("{0}")]
    Device(String),
}

/// Result with the library's error type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

/// Adds the path to an I/O result's error.
pub trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
