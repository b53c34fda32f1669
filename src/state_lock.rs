//! One controller per state directory. Two `proto run`s on one store would dispatch the same
//! queue twice, race on the same workspaces and push the same work twice, so `run` holds an
//! exclusive advisory lock on `<state-dir>/lock` for its whole life. The kernel drops the
//! lock when the process ends, however it ends (SIGKILL included), so a crash never leaves a
//! stale lock to clean up by hand. The file also holds the holder's pid, for the message the
//! next one prints. Readers (`get`, `describe`, `logs`, `retry`) do not take it: the store
//! is made for several connections.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The lock file inside the state directory.
pub const LOCK_FILE: &str = "lock";

#[derive(Debug, Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "another proto run{} holds the state directory {}; stop it first or use --state-dir{}",
        .pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default(),
        .dir.display(),
        others(*.pid, .open_by)
    )]
    Held {
        dir: PathBuf,
        /// The holder's pid, when it had written it yet.
        pid: Option<u32>,
        /// The processes that have the lock file open (Linux `/proc`), with their names: a
        /// process that inherited the lock from a killed controller holds it as surely.
        open_by: Vec<(u32, String)>,
    },
    #[error("cannot lock the state directory: {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct StateLock {
    // Never read: holding the open file is what holds the lock.
    _file: File,
}

impl StateLock {
    /// Takes the lock of `dir` (creating the directory if needed) without waiting: when
    /// another process holds it, says who.
    pub fn acquire(dir: &Path) -> Result<StateLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        // Not truncated on open: the holder's pid must still be there for the one refused.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    pid: holder(&mut file),
                    open_by: open_by(&path),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        // The pid goes over the old one before the file is cut to length, so a reader sees
        // a whole pid (the previous holder's at worst), never an empty file.
        let pid = format!("{}\n", std::process::id());
        file.write_all_at(pid.as_bytes(), 0).map_err(io)?;
        file.set_len(pid.len() as u64).map_err(io)?;
        Ok(StateLock { _file: file })
    }
}

/// Processes other than this one with `path` open, as `(pid, name)`; empty where `/proc`
/// cannot tell.
fn open_by(path: &Path) -> Vec<(u32, String)> {
    let Ok(wanted) = std::fs::canonicalize(path) else {
        return Vec::new();
    };
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == wanted))
        {
            let name = std::fs::read_to_string(process.path().join("comm")).unwrap_or_default();
            found.push((pid, name.trim().to_string()));
        }
    }
    found
}

/// The processes holding the lock, when they are not (only) the one whose pid it holds.
fn others(pid: Option<u32>, open_by: &[(u32, String)]) -> String {
    if open_by.iter().all(|(p, _)| Some(*p) == pid) {
        return String::new();
    }
    let named: Vec<String> = open_by
        .iter()
        .map(|(p, name)| format!("pid {p} ({name})"))
        .collect();
    format!("; the lock file is open in {}", named.join(", "))
}

/// The pid the holder wrote, if it has (the first line, as a number).
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.lines().next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let held = StateLock::acquire(&state).unwrap();
        let written = std::fs::read_to_string(state.join(LOCK_FILE)).unwrap();
        assert_eq!(written, format!("{}\n", std::process::id()));

        // flock locks belong to the open file, so a second open in the same process is
        // refused just as another process would be.
        let err = StateLock::acquire(&state).unwrap_err();
        let LockError::Held { pid, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(*pid, Some(std::process::id()));
        let message = err.to_string();
        assert!(
            message.contains(&format!("(pid {})", std::process::id()))
                && message.contains(&state.display().to_string())
                && message.contains("--state-dir"),
            "{message}"
        );

        drop(held);
        let again = StateLock::acquire(&state);
        assert!(again.is_ok(), "{again:?}");
    }

    /// A process that has the lock file open besides the holder (as a child that inherited
    /// a killed controller's lock would) is named in the refusal.
    #[test]
    fn other_processes_with_the_lock_open_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let _held = StateLock::acquire(dir.path()).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(File::open(dir.path().join(LOCK_FILE)).unwrap())
            .spawn()
            .unwrap();
        let message = StateLock::acquire(dir.path()).unwrap_err().to_string();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            message.contains(&format!(
                "the lock file is open in pid {} (sleep)",
                child.id()
            )),
            "{message}"
        );
    }

    #[test]
    fn a_longer_stale_pid_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "99999999999\nleft over\n").unwrap();
        let _held = StateLock::acquire(dir.path()).unwrap();
        let written = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(written, format!("{}\n", std::process::id()));
    }

    #[test]
    fn a_holder_that_wrote_nothing_yet_is_still_named_a_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let file = File::create(&path).unwrap();
        file.try_lock().unwrap();
        let err = StateLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(err, LockError::Held { pid: None, .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("another proto run holds"),
            "{err}"
        );
    }
}
