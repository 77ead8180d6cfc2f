//! The `ibvae` command: parses the command line, runs it, and turns an error into a
//! message and a non-zero exit code.

use clap::Parser;

fn main() {
    passive_openmp_waits();
    let cli = ibvae::cli::Cli::parse();
    if let Err(e) = ibvae::cli::run(cli) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// LibTorch's OpenMP threads spin while they wait for work unless `OMP_WAIT_POLICY` is
/// `PASSIVE`; on a machine whose cores are busy with other work that turns a 0.1 s step
/// into 13 s. The OpenMP runtime reads the variable when it is loaded, before `main`, so
/// the process starts itself again with it set (once: the variable is then present).
/// A value the user set is kept.
#[cfg(unix)]
fn passive_openmp_waits() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .exec();
    // `exec` returns only when it failed: go on with OpenMP's default.
    eprintln!("note: could not restart with OMP_WAIT_POLICY=PASSIVE ({err})");
}

#[cfg(not(unix))]
fn passive_openmp_waits() {}
