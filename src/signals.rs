//! Stop requests from outside: SIGINT (Ctrl-C), SIGTERM (what SLURM sends at a time
//! limit, on preemption, `scancel` and `scontrol requeue`, and what `kill` sends by
//! default), SIGUSR1 (SLURM's warning before a time limit, with `--signal`) and SIGHUP
//! (the terminal closed, as when an ssh session drops). Each one sets a flag that the
//! training loop reads at the end of every step: it saves a checkpoint and stops. A second signal while that happens exits at once (code 130).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

use crate::error::{Error, Result};

/// The signals that ask a run to stop with a checkpoint.
pub const STOP_SIGNALS: [i32; 4] = [SIGINT, SIGTERM, SIGUSR1, SIGHUP];

/// A flag set by the first of [`STOP_SIGNALS`] to arrive; a second one exits the process.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in STOP_SIGNALS {
        // Registered first, so that it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(
            signal,
            crate::error::exit::FORCED,
            stop.clone(),
        )
        .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
        .map_err(|e| Error::Config(format!("could not handle signal {signal}: {e}")))?;
    }
    Ok(stop)
}
