//! Stop requests from outside: SIGINT (Ctrl-C), SIGTERM (what SLURM sends at a time
//! limit, on preemption, `scancel` and `scontrol requeue`, and what `kill` sends by
//! default), SIGUSR1 (SLURM's warning before a time limit, with `--signal`) and SIGHUP
//! (the terminal closed, as when an ssh session drops). Each one sets a flag that the
//! training loop reads at the end of every step: it saves a checkpoint and stops. A second signal while that happens exits at once (code 130).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};

use crate::error::{Error, Result};

/// The signals that ask a run to stop with a checkpoint.
pub const STOP_SIGNALS: [i32; 4] = [SIGINT, SIGTERM, SIGUSR1, SIGHUP];

/// The signal a sweep stops its children with (and the one they get when the sweep
/// dies): it sets the stop flag like the others but never forces an exit, so that a run
/// that got the user's signal too still saves its checkpoint.
pub const PASSED_ON: i32 = SIGUSR2;

/// A flag set by the first of [`STOP_SIGNALS`] (or [`PASSED_ON`]) to arrive; a second
/// one of [`STOP_SIGNALS`] exits the process. A SIGHUP that was ignored when the process
/// started (`nohup`) stays ignored.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let could_not = |signal: i32, e: std::io::Error| {
        Error::Config(format!("could not handle signal {signal}: {e}"))
    };
    for signal in STOP_SIGNALS {
        if signal == SIGHUP && ignored(SIGHUP) {
            continue;
        }
        // Registered first, so that it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(
            signal,
            crate::error::exit::FORCED,
            stop.clone(),
        )
        .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
        .map_err(|e| could_not(signal, e))?;
    }
    signal_hook::flag::register(PASSED_ON, stop.clone()).map_err(|e| could_not(PASSED_ON, e))?;
    Ok(stop)
}

/// Whether `signal` is ignored in this process (as `nohup` leaves SIGHUP).
#[cfg(unix)]
fn ignored(signal: i32) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

#[cfg(not(unix))]
fn ignored(_: i32) -> bool {
    false
}
