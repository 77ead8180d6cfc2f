//! One owner per directory: an OS file lock (`flock`) on `DIR/.lock`, held for as long
//! as the process that took it lives. The kernel releases it when that process dies,
//! however it dies (`kill -9` included), so a lock is never stale. The file holds the
//! owner's process id and role, for the message that refuses a second owner.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// The lock file's name inside the directory it guards.
pub const LOCK_FILE: &str = ".lock";

/// A held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Who holds a directory's lock.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    pub pid: u32,
    /// What the holder does there ("train", "sweep").
    pub role: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            0 => write!(f, "another process"),
            pid => write!(f, "process {pid} (ibvae {})", self.role),
        }
    }
}

impl DirLock {
    /// Takes the lock of `dir` (created if needed) for `role`, or says which process
    /// holds it.
    pub fn acquire(dir: &Path, role: &str) -> Result<DirLock> {
        std::fs::create_dir_all(dir).at(dir)?;
        let path = dir.join(LOCK_FILE);
        let mut file = open(&path)?;
        match try_lock_patiently(&file) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = read_holder(&mut file);
                return Err(Error::Locked(format!(
                    "{} is in use by {}; wait for it to finish, or stop it first (kill {})",
                    dir.display(),
                    holder
                        .as_ref()
                        .map_or("another process".into(), |h| h.to_string()),
                    holder.map_or("it".into(), |h| h.pid.to_string()),
                )));
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let line = format!("{} {role}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(line.as_bytes()))
            .at(&path)?;
        Ok(DirLock { _file: file })
    }
}

/// The process holding the lock of `dir`, if one does (without taking it).
pub fn holder(dir: &Path) -> Option<Holder> {
    let path = dir.join(LOCK_FILE);
    if !path.exists() {
        return None;
    }
    let mut file = open(&path).ok()?;
    // A shared lock: it conflicts with an owner's, not with another look like this one.
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(TryLockError::WouldBlock) => read_holder(&mut file).or(Some(Holder {
            pid: 0,
            role: "unknown".into(),
        })),
        Err(TryLockError::Error(_)) => None,
    }
}

/// Takes the exclusive lock, trying again for a second while it is held: a [`holder`]
/// look holds it (shared) for a moment, and must not make an owner fail.
fn try_lock_patiently(file: &File) -> std::result::Result<(), TryLockError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .at(path)
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    let (pid, role) = text.trim().split_once(' ')?;
    Some(Holder {
        pid: pid.parse().ok()?,
        role: role.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_refused_with_the_first_ones_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let lock = DirLock::acquire(&dir, "train").unwrap();
        assert_eq!(
            holder(&dir),
            Some(Holder {
                pid: std::process::id(),
                role: "train".into()
            })
        );
        // flock locks belong to the open file: a second open in this process conflicts
        // as another process would.
        let err = DirLock::acquire(&dir, "train").unwrap_err().to_string();
        assert!(
            err.contains(&format!("process {} (ibvae train)", std::process::id())),
            "{err}"
        );
        drop(lock);
        assert_eq!(holder(&dir), None);
        DirLock::acquire(&dir, "sweep").unwrap();
    }
}
