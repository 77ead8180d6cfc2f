//! What fits in memory: the host memory a process may still take (the kernel's
//! `MemAvailable`, within the container's limit where there is one), and the refusal of
//! work whose estimate exceeds it, before anything is allocated. An allocation that does
//! not fit would otherwise panic inside LibTorch or get the process (and its neighbours)
//! killed by the kernel.

use crate::error::{Error, Result};

/// The bytes of host memory this process may still take, where the system says.
pub fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())?
        .saturating_mul(1024);
    Some(match cgroup_room() {
        Some(room) => available.min(room),
        None => available,
    })
}

/// What the cgroup (v2) limit leaves: `memory.max` less `memory.current`.
fn cgroup_room() -> Option<u64> {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{name}"))
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    };
    // "max" (no limit) does not parse.
    Some(read("memory.max")?.saturating_sub(read("memory.current")?))
}

/// Refuses `what`, estimated at `needed` bytes, when it cannot fit in the host memory
/// available now; `hint` says what to lower.
pub fn ensure_fits(what: &str, needed: u128, hint: &str) -> Result<()> {
    let Some(available) = available_bytes() else {
        return Ok(());
    };
    if needed <= available as u128 {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{what} needs about {} of memory, and {} is available; {hint}",
        human(needed),
        human(available as u128)
    )))
}

/// Bytes as GiB (or MiB below one GiB), or "more than 10^18 bytes".
pub fn human(bytes: u128) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes > 1_000_000_000_000_000_000 {
        return "more than 10^18 bytes".into();
    }
    let b = bytes as f64;
    if b >= 1024.0 * MIB {
        format!("{:.1} GiB", b / (1024.0 * MIB))
    } else {
        format!("{:.0} MiB", b / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_cannot_fit_is_refused_with_both_figures() {
        let available = available_bytes();
        if cfg!(target_os = "linux") {
            assert!(available.is_some_and(|b| b > 0));
        }
        assert!(ensure_fits("a test", 1, "lower it").is_ok());
        let err = ensure_fits("a test", u128::MAX, "lower it")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("a test needs about more than 10^18 bytes of memory, and ")
                && err.ends_with("is available; lower it"),
            "{err}"
        );
        assert_eq!(human(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
        assert_eq!(human(5 * 1024 * 1024), "5 MiB");
    }
}
