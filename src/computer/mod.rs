//! Computers: where work runs. One trait, [`Computer`]: run a command with streamed output,
//! exit status, timeout and cancellation that kills the whole process group; read, write,
//! list and search files ([`search`], for `Glob` and `Grep`); prepare a task's workspace (a
//! clone of the product's repository at its branch); answer a heartbeat ([`health`]).
//! File access that resolves outside the workspace is refused, and so are writes into `.git`.
//! A computer with a display (capability `gui`) also takes screenshots and mouse and keyboard
//! input ([`desktop`]). A long-lived process (an MCP stdio server, the desktop [`worker`] of
//! an SSH computer) is started with [`Computer::attach`], which hands back its standard input
//! and output as streams. `local` is this host, `ssh` another machine over SSH; Kubernetes
//! pods will implement the same trait.

pub mod activity;
pub mod desktop;
pub mod health;
pub mod local;
pub mod sandbox;
pub mod search;
pub mod ssh;
pub mod stopping;
pub mod worker;
pub mod workspace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use local::Local;
pub use sandbox::Sandbox;
pub use search::{FileHits, GlobRequest, Line, LineKind, SearchField, SearchMode, SearchRequest};
pub use ssh::Ssh;
pub use workspace::Workspace;

#[derive(Debug, Error)]
pub enum ComputerError {
    #[error("{path}: outside the workspace")]
    OutsideWorkspace { path: String },
    #[error("{path}: inside .git; files under .git are not written directly")]
    GitDir { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// A search's input is not one it can run (a bad pattern, glob or type, a missing path).
    #[error("`{field}`: {reason}")]
    Search {
        field: search::SearchField,
        reason: String,
    },
    #[error("workspace: {0}")]
    Workspace(String),
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    #[error(transparent)]
    Ssh(#[from] ssh::SshError),
    #[error(transparent)]
    Desktop(#[from] desktop::DesktopError),
    #[error("computer {computer} has no display (declare capability `gui` and a `display`)")]
    NoDisplay { computer: String },
}

impl ComputerError {
    /// Whether the computer could not be reached or its connection failed (not what a
    /// command did there): such a failure says nothing of the work, and the step runs again
    /// wherever the task goes next.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            ComputerError::Ssh(
                ssh::SshError::Connect { .. }
                    | ssh::SshError::Channel { .. }
                    | ssh::SshError::Sftp { .. }
            )
        )
    }
}

/// How a computer is reached: which of `local`, `ssh`, `kubernetes` it declares.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Local,
    Ssh,
    Kubernetes,
}

impl Kind {
    /// The kind a declaration gives (validation makes sure it gives exactly one).
    pub fn of(spec: &crate::spec::kinds::ComputerSpec) -> Kind {
        if spec.ssh.is_some() {
            Kind::Ssh
        } else if spec.kubernetes.is_some() {
            Kind::Kubernetes
        } else {
            Kind::Local
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Local => "local",
            Kind::Ssh => "ssh",
            Kind::Kubernetes => "kubernetes",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        [Kind::Local, Kind::Ssh, Kind::Kubernetes]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// A command to run in a workspace.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// A shell command line (`sh -c`).
    pub command: String,
    /// Working directory, relative to the workspace root ("" for the root).
    pub cwd: String,
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    /// Whose command it is, which decides whether the computer's sandbox applies.
    pub origin: Origin,
    /// What the command reads on its standard input (a hook's event); `None` reads as an
    /// empty input, never the controller's own.
    pub stdin: Option<String>,
}

/// Whose command a [`RunRequest`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// An agent's (the `Bash` and `Python` tools, a playbook's `run:` step): confined by the
    /// computer's sandbox, if it has one.
    Agent,
    /// The controller's own (delivery's git, goal checks): the company's policy, not an
    /// agent's action, so never sandboxed (delivery pushes outside the workspace).
    Controller,
}

/// One chunk of output, as it arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout(String),
    Stderr(String),
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    /// The exit code; `None` when killed by a signal, a timeout or cancellation.
    pub code: Option<i32>,
    /// The last 64 KiB of each stream.
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub cancelled: bool,
    pub duration: Duration,
}

impl RunOutcome {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// A one-line summary for errors and status: `exit status 1: <last stderr line>`.
    pub fn summary(&self) -> String {
        let why = if self.timed_out {
            format!("timed out after {}", human_duration(self.duration))
        } else if self.cancelled {
            "cancelled".to_string()
        } else {
            match self.code {
                Some(code) => format!("exit status {code}"),
                None => "killed by a signal".to_string(),
            }
        };
        let tail = self
            .stderr
            .lines()
            .rev()
            .chain(self.stdout.lines().rev())
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        let tail = tail.trim();
        if tail.is_empty() {
            why
        } else if tail.chars().count() > SUMMARY_TAIL_CHARS {
            // Summaries go into status; one runaway line must not fill it.
            let cut: String = tail.chars().take(SUMMARY_TAIL_CHARS).collect();
            format!("{why}: {cut}…")
        } else {
            format!("{why}: {tail}")
        }
    }
}

/// How much of the last output line a summary quotes.
const SUMMARY_TAIL_CHARS: usize = 200;

/// `1.5s`, `250ms`, `2m3s`: short, for summaries.
fn human_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        format!("{millis}ms")
    } else if millis < 60_000 {
        let tenths = millis / 100;
        if tenths.is_multiple_of(10) {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    } else {
        let secs = duration.as_secs();
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        let mut text = String::new();
        if h > 0 {
            text.push_str(&format!("{h}h"));
        }
        if m > 0 {
            text.push_str(&format!("{m}m"));
        }
        if s > 0 || text.is_empty() {
            text.push_str(&format!("{s}s"));
        }
        text
    }
}

/// A long-lived process to start with [`Computer::attach`]: a program and its arguments,
/// run as they are (no shell reads them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachRequest {
    /// A name looked up on the computer's `PATH`, an absolute path, or a path relative to the
    /// folder the process starts in.
    pub program: String,
    pub args: Vec<String>,
    /// Variables added to the computer's plain environment.
    pub env: BTreeMap<String, String>,
    /// Whose process it is, which decides whether the computer's sandbox applies.
    pub origin: Origin,
}

/// A process started by [`Computer::attach`]: what it reads and what it writes, and the
/// process itself. Dropping [`Attached::process`] stops it and everything it started (its
/// whole process group, on whichever computer it runs).
pub struct Attached {
    /// Its standard input; shutting it down gives the process an end of input.
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
    /// Its standard output, which ends when the process (or its connection) does.
    pub stdout: Pin<Box<dyn AsyncRead + Send>>,
    pub process: Process,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached")
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

/// A running process of [`Attached`]: whether it still runs, the end of its standard error
/// (which says why it stopped, when it did); stopped when dropped.
pub struct Process {
    life: Box<dyn Life>,
}

impl Process {
    pub(crate) fn new(life: impl Life + 'static) -> Self {
        Process {
            life: Box::new(life),
        }
    }

    /// Whether the process has not ended (as far as the computer has said).
    pub fn running(&self) -> bool {
        self.life.running()
    }

    /// The last 64 KiB of what the process wrote to its standard error.
    pub fn stderr(&self) -> String {
        self.life.stderr()
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("running", &self.running())
            .finish()
    }
}

/// What each computer keeps of an attached process; its `Drop` stops the process.
pub(crate) trait Life: Send + Sync {
    fn running(&self) -> bool;
    fn stderr(&self) -> String;
}

/// What a workspace is made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceSpec {
    /// The product repository: a local path (absolute) or a URL.
    pub repo: String,
    pub branch: String,
    /// A stable name for the task (its key), so a restarted task finds its workspace again.
    pub task: String,
}

/// A machine that runs work.
#[async_trait]
pub trait Computer: Send + Sync {
    fn name(&self) -> &str;

    /// Clones the repository at the branch into a directory named after the task, or reuses
    /// it when it already exists (a restarted task continues where it was).
    async fn workspace(&self, spec: &WorkspaceSpec) -> Result<Workspace, ComputerError>;

    /// Runs a command in the workspace; output chunks go to `output` as they arrive.
    /// Timeout and cancellation kill the whole process group.
    async fn run(
        &self,
        workspace: &Workspace,
        request: &RunRequest,
        output: Option<mpsc::UnboundedSender<Output>>,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, ComputerError>;

    /// Starts a long-lived process, in `workspace` (its root) or, without one, where the
    /// computer starts processes of its own (this host's workdir, the remote user's home),
    /// with its standard input and output as streams (see [`Attached`]). It runs under the
    /// same rules as [`Computer::run`]'s commands: a plain environment, a process group of
    /// its own, the computer's marker (so [`Computer::release`] finds it) and, for an
    /// [`Origin::Agent`] process, the computer's sandbox.
    async fn attach(
        &self,
        workspace: Option<&Workspace>,
        request: &AttachRequest,
    ) -> Result<Attached, ComputerError>;

    /// Reads a file of the workspace; `Ok(None)` when it does not exist.
    async fn read(
        &self,
        workspace: &Workspace,
        path: &str,
    ) -> Result<Option<Vec<u8>>, ComputerError>;

    /// Writes a file of the workspace, creating parent folders; refuses a path inside a
    /// `.git` folder (see [`Workspace::resolve_for_write`]).
    async fn write(
        &self,
        workspace: &Workspace,
        path: &str,
        content: &[u8],
    ) -> Result<(), ComputerError>;

    /// The files under `dir` of the workspace (recursively, as workspace-relative paths in
    /// name order); empty when `dir` does not exist.
    async fn list(&self, workspace: &Workspace, dir: &str) -> Result<Vec<String>, ComputerError>;

    /// The files of the workspace under `request.path` whose path matches its glob and that
    /// `.gitignore` keeps, newest first (see [`search`]).
    async fn glob(
        &self,
        workspace: &Workspace,
        request: &GlobRequest,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>, ComputerError>;

    /// Searches the contents of the workspace's files (see [`search`]): the files with a
    /// match, newest first for [`SearchMode::FilesWithMatches`], else by path.
    async fn search(
        &self,
        workspace: &Workspace,
        request: &SearchRequest,
        cancel: &CancellationToken,
    ) -> Result<Vec<FileHits>, ComputerError>;

    /// Removes the task's workspace, if it has one: its work is delivered, and the next task
    /// of the goal (a scheduled re-check, say) must start from the product's branch as it is
    /// then, not from this clone.
    async fn discard(&self, spec: &WorkspaceSpec) -> Result<(), ComputerError>;

    /// Hands back the task's delivered workspace. A computer may keep it to make the next
    /// workspace of the same product from (it must then be exactly as a fresh one would be);
    /// by default it is removed, as [`Computer::discard`] does.
    async fn recycle(&self, spec: &WorkspaceSpec) -> Result<(), ComputerError> {
        self.discard(spec).await
    }

    /// Stops every process this computer's commands started that is still running (a server
    /// left in the background, say), and says how many. Called when an attempt ends: work
    /// that must outlive a task belongs to a service manager, not to the task.
    async fn release(&self) -> Result<usize, ComputerError>;

    /// A cheap probe of whether the computer can take work (the heartbeat of
    /// [`health`]): `Err` says why not.
    async fn healthy(&self) -> Result<(), ComputerError>;

    /// Whether the computer has a display agents may see and drive (the `Computer` tool is
    /// offered only then).
    fn has_display(&self) -> bool {
        false
    }

    /// A picture of the display (or of `region` of it, in the model's picture of the
    /// screen), scaled to what a model takes in; see [`desktop`].
    async fn screenshot(
        &self,
        _region: Option<desktop::Region>,
    ) -> Result<desktop::Screenshot, ComputerError> {
        Err(ComputerError::NoDisplay {
            computer: self.name().to_string(),
        })
    }

    /// Mouse or keyboard input on the display, its coordinates in the model's picture of
    /// the screen.
    async fn input(&self, _input: desktop::Input) -> Result<(), ComputerError> {
        Err(ComputerError::NoDisplay {
            computer: self.name().to_string(),
        })
    }
}

/// Where on this host a computer keeps workspaces, given its `workdir` setting; always an
/// absolute path, since workspaces name their mirror's objects in git's `alternates`, which
/// git reads relative to the workspace, not to this process.
pub fn workdir(setting: Option<&str>, state_dir: &Path) -> PathBuf {
    let dir = match setting {
        Some(dir) if dir.starts_with("~/") => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| state_dir.to_path_buf())
            .join(&dir[2..]),
        Some(dir) => PathBuf::from(dir),
        None => state_dir.join("work"),
    };
    std::path::absolute(&dir).unwrap_or(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(code: Option<i32>, stdout: &str, stderr: &str) -> RunOutcome {
        RunOutcome {
            code,
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
            timed_out: false,
            cancelled: false,
            duration: Duration::from_millis(1500),
        }
    }

    #[test]
    fn summary_quotes_the_last_line_of_stderr_first() {
        let o = outcome(Some(2), "out\n", "first\nlast problem\n\n");
        assert_eq!(o.summary(), "exit status 2: last problem");
        assert_eq!(
            outcome(Some(1), "only out\n", "").summary(),
            "exit status 1: only out"
        );
        assert_eq!(outcome(None, "", "").summary(), "killed by a signal");
    }

    #[test]
    fn summary_is_short() {
        let o = RunOutcome {
            timed_out: true,
            ..outcome(None, &"x".repeat(10_000), "")
        };
        let summary = o.summary();
        assert!(
            summary.starts_with("timed out after 1.5s: xxx"),
            "{summary}"
        );
        assert!(summary.chars().count() < 250);
    }

    #[test]
    fn durations_read_shortly() {
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_millis(2_000)), "2s");
        assert_eq!(human_duration(Duration::from_millis(2_345)), "2.3s");
        assert_eq!(human_duration(Duration::from_secs(123)), "2m3s");
        assert_eq!(human_duration(Duration::from_secs(3_600)), "1h");
    }
}
