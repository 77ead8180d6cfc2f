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
    /// A directory is in use by another process.
    #[error("{0}")]
    Locked(String),
    /// The command's output could not be written (a closed pipe, a full device).
    #[error("could not write the output: {0}")]
    Output(#[source] std::io::Error),
    /// The work stopped on request (a signal), with everything saved to resume it; the
    /// message says how.
    #[error("{0}")]
    Interrupted(String),
}

/// The exit codes of `ibvae`, for scripts and schedulers.
pub mod exit {
    /// Done: the command did all it was asked.
    pub const DONE: i32 = 0;
    /// Failed: the message on stderr says why.
    pub const FAILED: i32 = 1;
    /// The command line did not parse.
    pub const USAGE: i32 = 2;
    /// Stopped by a signal (or `--stop-after`) with a checkpoint: run the same command
    /// again, or `train --resume`, to go on.
    pub const INTERRUPTED: i32 = 3;
    /// A second stop signal arrived while the first was being handled: stopped at once.
    pub const FORCED: i32 = 130;
    /// The reader of the output went away (a closed pipe, as in `ibvae params | head`).
    pub const CLOSED_PIPE: i32 = 141;
}

impl Error {
    /// The exit code that says what happened (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Interrupted(_) => exit::INTERRUPTED,
            Error::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::CLOSED_PIPE,
            _ => exit::FAILED,
        }
    }
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
