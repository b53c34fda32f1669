//! A branch of a repository on this host moved by compare-and-swap under git's own lock,
//! through one long-lived `git update-ref --stdin` per repository.
//!
//! Why git and not libgit2: the move takes `<ref>.lock` for a moment, and a controller
//! killed while it held that lock in-process would leave it behind, every later push
//! refused until a person removed it. Git holds the lock here, in a process of its own: a
//! controller killed mid-move closes git's stdin, and git finishes the transaction it was
//! sent whole, or aborts one sent in part and removes the lock.
//!
//! Why one process per repository: starting `git update-ref` for every delivery cost about
//! a quarter of the controller's throughput. Each move is one transaction on the open
//! process (`start`, `update`, `prepare`, `commit`, each answered `<command>: ok`). A
//! refused transaction makes git exit with its reason on stderr; the next move starts a new
//! process. A process whose repository folder was replaced (a new inode at the same path)
//! is not reused.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use git2::Oid;

use super::GitopsError;

/// How many repositories keep a process open; past it the least recently used one ends.
const KEPT: usize = 16;

/// What a compare-and-swap did to the ref.
#[derive(Debug, PartialEq, Eq)]
pub enum Swap {
    /// It moved to the new commit.
    Moved,
    /// It was not where the caller expected it (it moved, or exists when it should not):
    /// git's words.
    Raced(String),
    /// Someone else holds its lock: git's words, which name the lock file.
    Locked(String),
}

/// Moves `refname` of the repository at `repo` to `new` if, and only if, it is at `old`
/// (`None`: only if it does not exist), under git's lock. The objects `new` names must
/// already be in the repository.
pub fn compare_and_swap(
    repo: &Path,
    refname: &str,
    new: Oid,
    old: Option<Oid>,
) -> Result<Swap, GitopsError> {
    let slot = slot(repo)?;
    let mut kept = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let folder = identity(repo)?;
    // A process of a folder since replaced, or one that ended meanwhile, is not reused.
    if kept
        .as_mut()
        .is_some_and(|p| p.folder != folder || !matches!(p.child.try_wait(), Ok(None)))
    {
        *kept = None;
    }
    let process = match kept.as_mut() {
        Some(process) => process,
        None => kept.insert(Updater::start(repo, folder)?),
    };
    let old = old.map_or_else(|| "0".repeat(40), |o| o.to_string());
    let sent = format!("start\nupdate {refname} {new} {old}\nprepare\ncommit\n");
    if process.transact(&sent) {
        return Ok(Swap::Moved);
    }
    let Some(process) = kept.take() else {
        return Err(failed(repo, "the process is gone".into()));
    };
    let said = process.reason();
    if said.contains("File exists") || said.contains("Unable to create") {
        Ok(Swap::Locked(said))
    } else if said.contains("expected") || said.contains("already exists") {
        Ok(Swap::Raced(said))
    } else {
        Err(failed(repo, said))
    }
}

/// The process slot of the repository at `repo` (its canonical path), made on first use.
fn slot(repo: &Path) -> Result<Arc<Mutex<Option<Updater>>>, GitopsError> {
    type Slots = Mutex<Vec<(PathBuf, Arc<Mutex<Option<Updater>>>)>>;
    static SLOTS: OnceLock<Slots> = OnceLock::new();
    let path = repo
        .canonicalize()
        .map_err(|e| failed(repo, e.to_string()))?;
    let mut slots = SLOTS
        .get_or_init(Slots::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Most recently used last; the first one goes when too many are kept.
    let slot = match slots.iter().position(|(p, _)| *p == path) {
        Some(at) => slots.remove(at).1,
        None => Arc::default(),
    };
    slots.push((path, slot.clone()));
    if slots.len() > KEPT {
        slots.remove(0);
    }
    Ok(slot)
}

/// The device and inode of the repository's folder: a folder removed and made again at the
/// same path is another repository to a process that has the old one open.
fn identity(repo: &Path) -> Result<(u64, u64), GitopsError> {
    let meta = std::fs::metadata(repo).map_err(|e| failed(repo, e.to_string()))?;
    Ok((meta.dev(), meta.ino()))
}

fn failed(repo: &Path, message: String) -> GitopsError {
    GitopsError::Command {
        what: format!("git update-ref --stdin in {}", repo.display()),
        message,
    }
}

/// One `git update-ref --stdin` and the pipes to it.
struct Updater {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    folder: (u64, u64),
}

impl Updater {
    fn start(repo: &Path, folder: (u64, u64)) -> Result<Updater, GitopsError> {
        let mut command = Command::new(crate::program::program("git"));
        command
            .arg("-C")
            .arg(repo)
            .args(["-c", "core.hooksPath=/dev/null"])
            .args(["update-ref", "-m", "proto: push", "--stdin"])
            .env_clear()
            .envs(
                ["PATH", "HOME", "USER", "TMPDIR"]
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
            )
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Git says nothing on stderr until it refuses, and then exits: read only then.
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| failed(repo, e.to_string()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(failed(repo, "no pipes to git".into()));
        };
        Ok(Updater {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            folder,
        })
    }

    /// Sends one transaction whole and reads git's three answers: true when it committed.
    fn transact(&mut self, sent: &str) -> bool {
        let Some(stdin) = self.stdin.as_mut() else {
            return false;
        };
        if stdin.write_all(sent.as_bytes()).is_err() || stdin.flush().is_err() {
            return false;
        }
        ["start", "prepare", "commit"].iter().all(|command| {
            let mut line = String::new();
            self.stdout.read_line(&mut line).is_ok() && line.trim_end() == format!("{command}: ok")
        })
    }

    /// Why git refused: what it said on stderr, once it has exited.
    fn reason(mut self) -> String {
        self.stdin = None;
        let mut said = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut said);
        }
        let status = self.child.wait();
        let said = said
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        match status {
            Ok(status) if said.is_empty() => format!("git update-ref ended ({status})"),
            _ => said,
        }
    }
}

impl Drop for Updater {
    fn drop(&mut self) {
        // End of input ends git's loop; it exits between transactions at once.
        self.stdin = None;
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests;
