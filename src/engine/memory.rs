//! What fits in memory: the host memory a process may still take (the kernel's
//! `MemAvailable`, within its cgroups' limits where there are some), and the refusal of
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

/// What the memory limits of this process's cgroup and of every cgroup above it leave
/// (the least of them): `memory.max` less `memory.current` (cgroup v2), or
/// `memory.limit_in_bytes` less `memory.usage_in_bytes` (v1), as a SLURM job or a
/// container sets them.
fn cgroup_room() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    room_below(&own, std::path::Path::new("/sys/fs/cgroup"))
}

/// [`cgroup_room`] for the `/proc/self/cgroup` text `own`, the hierarchies mounted at
/// `root`.
fn room_below(own: &str, root: &std::path::Path) -> Option<u64> {
    let mut dirs = Vec::new();
    for line in own.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let path = path.trim_start_matches('/');
        if controllers.is_empty() {
            dirs.push((root.join(path), V2));
        } else if controllers.split(',').any(|c| c == "memory") {
            dirs.push((root.join("memory").join(path), V1));
        }
    }
    let read = |dir: &std::path::Path, name: &str| {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    };
    let mut room: Option<u64> = None;
    for (dir, [limit, usage]) in dirs {
        // This cgroup and every one above it, up to the hierarchy's root.
        for d in dir.ancestors() {
            // "max" (no limit) does not parse.
            if let (Some(l), Some(u)) = (read(d, limit), read(d, usage)) {
                let r = l.saturating_sub(u);
                room = Some(room.map_or(r, |x| x.min(r)));
            }
            if d == root {
                break;
            }
        }
    }
    room
}

/// The files of a cgroup's memory limit and usage, in cgroup v2 and v1.
const V2: [&str; 2] = ["memory.max", "memory.current"];
const V1: [&str; 2] = ["memory.limit_in_bytes", "memory.usage_in_bytes"];

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

    /// The least room of a process's own cgroup and those above it, in v2 and in v1
    /// hierarchies; a cgroup without a limit ("max") leaves the others to decide.
    #[test]
    fn the_tightest_cgroup_limit_up_the_tree_counts() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let write = |dir: &str, files: &[(&str, &str)]| {
            let d = root.join(dir);
            std::fs::create_dir_all(&d).unwrap();
            for (name, text) in files {
                std::fs::write(d.join(name), text).unwrap();
            }
        };
        // v2: the job's own cgroup has no limit, its parent leaves 600 bytes.
        write(
            "slurm/job_7",
            &[("memory.max", "max\n"), ("memory.current", "50\n")],
        );
        write(
            "slurm",
            &[("memory.max", "1000\n"), ("memory.current", "400\n")],
        );
        assert_eq!(room_below("0::/slurm/job_7\n", root), Some(600));
        // v1: the memory controller's own tree, the tighter of two levels.
        write(
            "memory/docker/abc",
            &[
                ("memory.limit_in_bytes", "300"),
                ("memory.usage_in_bytes", "100"),
            ],
        );
        write(
            "memory/docker",
            &[
                ("memory.limit_in_bytes", "5000"),
                ("memory.usage_in_bytes", "100"),
            ],
        );
        let v1 = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n";
        assert_eq!(room_below(v1, root), Some(200));
        // No limit anywhere.
        assert_eq!(room_below("1:cpu:/x\n", root), None);
    }
}
