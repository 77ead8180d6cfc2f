//! The terminal: what a command prints, and what happens when no one reads it.
//!
//! A command's answer goes to stdout through [`outln!`]: a closed pipe (`ibvae params |
//! head -1`) or a full device ends the command with [`Error::Output`], which `main`
//! turns into a quiet exit (a closed pipe) or a one-line error (anything else), never a
//! panic. Progress and log lines of long work (training, a sweep) go through
//! [`logln!`] and [`noteln!`], which drop what cannot be written: a run never dies
//! because its log pipe closed.

use std::fmt;
use std::io::Write;

use crate::error::{Error, Result};

/// Writes one line of a command's answer to stdout; `?` on it ends the command when the
/// line cannot be written.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::console::out_line(format_args!($($arg)*))
    };
}

/// Writes one progress line to stdout, dropping it when it cannot be written.
#[macro_export]
macro_rules! logln {
    ($($arg:tt)*) => {
        $crate::console::log_line(format_args!($($arg)*))
    };
}

/// Writes one line to stderr, dropping it when it cannot be written.
#[macro_export]
macro_rules! noteln {
    ($($arg:tt)*) => {
        $crate::console::note_line(format_args!($($arg)*))
    };
}

/// See [`outln!`]. Stdout is line-buffered: the line is written, or its error seen,
/// here.
pub fn out_line(args: fmt::Arguments) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .map_err(Error::Output)
}

/// See [`logln!`].
pub fn log_line(args: fmt::Arguments) {
    let _ = out_line(args);
}

/// See [`noteln!`].
pub fn note_line(args: fmt::Arguments) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}
