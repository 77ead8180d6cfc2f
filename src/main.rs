//! The `ibvae` command: parses the command line, runs it, and turns an error into a
//! message and an exit code that says what happened (`ibvae::error::exit`).

use clap::Parser;
use ibvae::engine::DeviceChoice;

fn main() {
    let cli = ibvae::cli::Cli::parse();
    openmp_wait_policy(cli.command.device());
    if let Err(e) = ibvae::cli::run(cli) {
        match &e {
            // Whoever read the output has gone: nothing to say, and no one to say it to.
            ibvae::Error::Output(io) if io.kind() == std::io::ErrorKind::BrokenPipe => {}
            ibvae::Error::Interrupted(message) => ibvae::noteln!("{message}"),
            _ => ibvae::noteln!("error: {e}"),
        }
        std::process::exit(e.exit_code());
    }
}

/// How LibTorch's OpenMP threads wait for work, chosen before the OpenMP runtime reads
/// `OMP_WAIT_POLICY` (it does so when it is loaded, before `main`, so the process starts
/// itself again with the variable set; a value the user set is kept).
///
/// With OpenMP's default (spin about 3 ms, then sleep), two processes on two cores, or
/// one beside other busy processes, can fall from 0.04 s to 10 s a training step. On the
/// CPU, `ACTIVE` was the fastest both alone and beside other work, `PASSIVE` 2 to 3 times
/// slower (measurements in docs/performance.md). On a GPU the CPU threads have little to
/// do and would spin through the GPU's work, so they sleep (`PASSIVE`).
#[cfg(unix)]
fn openmp_wait_policy(device: Option<DeviceChoice>) {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return;
    }
    let policy = match device {
        Some(DeviceChoice::Cuda(_)) => "PASSIVE",
        _ => "ACTIVE",
    };
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("OMP_WAIT_POLICY", policy)
        .exec();
    // `exec` returns only when it failed: go on with OpenMP's default.
    ibvae::noteln!("note: could not restart with OMP_WAIT_POLICY={policy} ({err})");
}

#[cfg(not(unix))]
fn openmp_wait_policy(_: Option<DeviceChoice>) {}
