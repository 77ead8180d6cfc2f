//! `members.txt`: the members of every sweep started in a directory, in order, one
//! `<bottleneck> [<seed>]` line each. `--status` needs only `--out` because of it, and a
//! SLURM task index means the same member in every submission to the directory.

use std::path::Path;

use crate::error::{Error, Result};
use crate::experiment::sweep::plan::Member;
use crate::model::bottleneck::BottleneckSpec;

/// The file in a sweep's directory that lists its members' bottlenecks in order.
const MEMBERS_FILE: &str = "members.txt";

/// Records the sweep's members (in order, with their seeds) after those recorded by
/// earlier sweeps into the same directory (a sweep run seed by seed keeps every seed's
/// runs in `results.csv`). Returns them all.
pub fn record(out: &Path, members: &[Member]) -> Result<Vec<Member>> {
    let mut all = match out.join(MEMBERS_FILE).exists() {
        true => recorded(out)?,
        false => Vec::new(),
    };
    for m in members {
        if !all.iter().any(|a| a.name == m.name) {
            all.push(m.clone());
        }
    }
    let text: String = all
        .iter()
        .map(|m| match m.seed {
            Some(s) => format!("{} {s}\n", m.spec),
            None => format!("{}\n", m.spec),
        })
        .collect();
    crate::io::fsutil::write_atomic_str(&out.join(MEMBERS_FILE), &text)?;
    Ok(all)
}

/// The members recorded by [`record`].
pub fn recorded(out: &Path) -> Result<Vec<Member>> {
    let path = out.join(MEMBERS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|_| {
        Error::Config(format!(
            "{} is not a sweep directory (no {MEMBERS_FILE}): start the sweep first",
            out.display()
        ))
    })?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut fields = l.split_whitespace();
            let spec: BottleneckSpec = fields.next().unwrap_or_default().parse()?;
            let seed = fields.next().and_then(|s| s.parse().ok());
            Ok(Member::new(spec, seed))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep run seed by seed into one directory keeps every seed's members, in the
    /// order they were first recorded, each once.
    #[test]
    fn members_of_successive_sweeps_are_recorded_together() {
        let tmp = tempfile::tempdir().unwrap();
        let gd: BottleneckSpec = "gd:0.1".parse().unwrap();
        let vb: BottleneckSpec = "vb:1".parse().unwrap();
        let first = [Member::new(gd, Some(0)), Member::new(vb, Some(0))];
        let second = [Member::new(gd, Some(1)), Member::new(gd, Some(0))];
        record(tmp.path(), &first).unwrap();
        let all = record(tmp.path(), &second).unwrap();
        let names: Vec<&str> = all.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["gd-0.1-s0", "vb-1-s0", "gd-0.1-s1"]);
        let read: Vec<String> = recorded(tmp.path())
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(read, names);
    }
}
