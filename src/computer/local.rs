//! The local computer: this host. Commands run under `sh -c` in their own process group, so
//! a timeout or cancellation stops everything they started (see [`stopping`]); agent
//! commands run in the computer's [`sandbox`](super::sandbox), if it has one.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::sandbox::{Prepared, Sandbox};
use super::search::{self, Filter, GlobRequest, SearchField, SearchRequest};
use super::stopping;
use super::{
    AttachRequest, Attached, Computer, ComputerError, FileHits, Life, Origin, Output, Process,
    RunOutcome, RunRequest, Workspace, WorkspaceSpec,
};

/// How much of each stream an outcome keeps (its end).
const TAIL_BYTES: usize = 64 * 1024;

/// The longest chunk sent at once: a line longer than this (or output that never ends its
/// line) is streamed in pieces rather than held back.
const MAX_CHUNK: usize = 16 * 1024;

/// How long output is still read after the command ended. A background process it left
/// running keeps the pipes open; the run does not wait on it past this.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Variables passed through from the controller's environment; everything else is dropped.
const BASE_ENV: [&str; 8] = [
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TERM", "TMPDIR",
];

/// The variable that marks every process a [`Local`]'s commands start (and whatever those
/// start in turn), so that [`Computer::release`] finds them without trusting process ids,
/// which the system reuses.
const MARKER_VAR: &str = "PROTO_RUN";

/// This host, keeping workspaces under `workdir`.
pub struct Local {
    name: String,
    workdir: std::path::PathBuf,
    /// Unique to this instance (one per attempt): the value of [`MARKER_VAR`].
    marker: String,
    /// What confines agent commands; `None` runs them with the controller's rights.
    sandbox: Option<Arc<Sandbox>>,
    /// The X display agents see and drive, for a computer with capability `gui`.
    desktop: Option<Arc<super::desktop::Desktop>>,
    /// Whether this computer has started a process: until it has, nothing can carry its
    /// marker (what a killed controller left is stopped at start-up), and
    /// [`Computer::release`] has nothing to look for.
    started: std::sync::atomic::AtomicBool,
    /// What is known of the files of the workspace this computer made last, handed to the
    /// spare it becomes (see [`Computer::recycle`]).
    journal: std::sync::Mutex<Option<super::workspace::Journal>>,
}

impl Local {
    /// A computer whose commands carry `marker`, a name that outlives this process: built
    /// from the state directory and the task (see [`run_marker`]), so the next controller
    /// finds what a killed one left running and stops it before the work resumes.
    pub fn marked(
        name: impl Into<String>,
        workdir: impl Into<std::path::PathBuf>,
        marker: String,
    ) -> Self {
        Local {
            name: name.into(),
            workdir: workdir.into(),
            marker,
            sandbox: None,
            desktop: None,
            started: std::sync::atomic::AtomicBool::new(false),
            journal: std::sync::Mutex::default(),
        }
    }

    /// This computer with the X display `desktop`, which agents see and drive through the
    /// `Computer` tool.
    pub fn with_desktop(mut self, desktop: Arc<super::desktop::Desktop>) -> Self {
        self.desktop = Some(desktop);
        self
    }

    /// This computer with agent commands ([`Origin::Agent`]) confined by `sandbox`.
    pub fn sandboxed(mut self, sandbox: Option<Sandbox>) -> Self {
        self.sandbox = sandbox.map(Arc::new);
        self
    }

    /// The sandbox of `request` in `workspace`, built (it opens many paths) off the async
    /// threads; with the `TMPDIR` its command gets.
    async fn confine(
        &self,
        workspace: &Workspace,
        origin: Origin,
    ) -> Result<Option<(Prepared, Option<std::path::PathBuf>)>, ComputerError> {
        let Some(sandbox) = self.sandbox.clone().filter(|_| origin == Origin::Agent) else {
            return Ok(None);
        };
        let root = workspace.root().to_path_buf();
        tokio::task::spawn_blocking(move || {
            let tmp = sandbox.tmp_dir(&root).map_err(|source| ComputerError::Io {
                path: root.display().to_string(),
                source,
            })?;
            Ok(Some((sandbox.prepare(&root)?, tmp)))
        })
        .await
        .map_err(|e| ComputerError::Workspace(format!("preparing the sandbox: {e}")))?
    }

    /// Sets up `command` as every process of this computer starts: in `cwd`, with a plain
    /// environment and `env`, the computer's marker, a process group of its own, and
    /// `confined` (from [`Local::confine`]) when it is sandboxed. `confined` must live until
    /// the command is spawned.
    fn prepare(
        &self,
        command: &mut Command,
        cwd: &std::path::Path,
        env: &std::collections::BTreeMap<String, String>,
        confined: Option<&(Prepared, Option<std::path::PathBuf>)>,
    ) {
        // Set before the process exists, so a release that follows its start looks for it.
        let first = !self.started.swap(true, std::sync::atomic::Ordering::SeqCst);
        super::activity::starting(first);
        command
            .current_dir(cwd)
            // Processes see a plain environment, not the controller's: its model keys and
            // tokens must never reach agent commands.
            .env_clear()
            .envs(
                BASE_ENV
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
            );
        if let Some((prepared, tmp)) = confined {
            if let Some(tmp) = tmp {
                command.env("TMPDIR", tmp);
            }
            // SAFETY: the hook only makes system calls on values prepared here (see
            // `Prepared::hook`); the caller keeps `prepared` until the spawn has returned.
            unsafe {
                command.pre_exec(prepared.hook());
            }
        }
        command
            .envs(env)
            .env(MARKER_VAR, &self.marker)
            .process_group(0);
    }

    pub fn new(name: impl Into<String>, workdir: impl Into<std::path::PathBuf>) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Local {
            name: name.into(),
            workdir: workdir.into(),
            marker: format!("{}-{nanos}-{n}", std::process::id()),
            sandbox: None,
            desktop: None,
            started: std::sync::atomic::AtomicBool::new(false),
            journal: std::sync::Mutex::default(),
        }
    }
}

/// The marker of the commands of `task` run for the controller whose state is in
/// `state_dir`: the same in every process that uses that state directory.
pub fn run_marker(state_dir: &std::path::Path, task: i64) -> String {
    format!("{}{task}", marker_prefix(state_dir))
}

/// What every [`run_marker`] of one state directory starts with (`[A-Za-z0-9-]` only).
pub fn marker_prefix(state_dir: &std::path::Path) -> String {
    let path = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    // FNV-1a: stable across builds and runs, unlike the standard library's hasher.
    let hash = path
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("state-{hash:016x}-task-")
}

/// Stops every process that a controller using `state_dir` started for a task and left
/// running (it was killed, or lost its host): called at start, before any work resumes, so
/// a resumed attempt never races the commands of the one it replaces. Says how many.
pub fn stop_leftovers(state_dir: &std::path::Path) -> usize {
    let prefix = marker_prefix(state_dir);
    stopping::stop_found(|| processes_matching(&format!("{MARKER_VAR}={prefix}"), true))
}

/// Processes whose environment carries `marker` (Linux `/proc`; elsewhere none are found).
fn marked_processes(marker: &str) -> Vec<i32> {
    processes_matching(&format!("{MARKER_VAR}={marker}\0"), false)
}

/// Processes whose environment holds `needle` (as a whole `KEY=value\0` entry, or, with
/// `prefix`, the start of one).
fn processes_matching(needle: &str, prefix: bool) -> Vec<i32> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).is_ok_and(|p| p != own))
        .filter(|pid| {
            // A process that ended meanwhile, or belongs to someone else, is not ours.
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0).any(|entry| {
                    if prefix {
                        entry.starts_with(needle.as_bytes())
                    } else {
                        needle.as_bytes().strip_suffix(b"\0") == Some(entry)
                    }
                })
            })
        })
        .collect()
}

#[async_trait]
impl Computer for Local {
    fn name(&self) -> &str {
        &self.name
    }

    async fn workspace(&self, spec: &WorkspaceSpec) -> Result<Workspace, ComputerError> {
        let dir = self.workdir.join(dir_name(&spec.task));
        tokio::fs::create_dir_all(&self.workdir)
            .await
            .map_err(|source| ComputerError::Io {
                path: self.workdir.display().to_string(),
                source,
            })?;
        let (repo, branch, target) = (spec.repo.clone(), spec.branch.clone(), dir.clone());
        let mirrors = self.workdir.join(crate::gitops::workspace::MIRRORS);
        let made_in = mirrors.clone();
        // Git runs as child processes waited on synchronously, under a file lock.
        let quiet = tokio::task::spawn_blocking(move || {
            crate::gitops::workspace::make(&repo, &branch, &target, &made_in)
        })
        .await
        .map_err(|e| ComputerError::Workspace(format!("{}: {e}", dir.display())))?
        .map_err(|e| ComputerError::Workspace(format!("{}: {e}", dir.display())))?;
        let pristine = crate::gitops::workspace::pristine(&spec.repo, &spec.branch, &mirrors)
            .map_err(|e| ComputerError::Workspace(e.to_string()))?;
        let workspace = Workspace::new(dir).with_pristine(pristine);
        // Made just now (not one a resumed attempt left): its files are its index's.
        if let Some(quiet) = quiet {
            workspace.journal().matches_index(quiet);
        }
        *self
            .journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(workspace.journal().clone());
        Ok(workspace)
    }

    async fn run(
        &self,
        workspace: &Workspace,
        request: &RunRequest,
        output: Option<mpsc::UnboundedSender<Output>>,
        cancel: &CancellationToken,
    ) -> Result<RunOutcome, ComputerError> {
        let cwd = if request.cwd.is_empty() {
            workspace.root().to_path_buf()
        } else {
            workspace.resolve(&request.cwd)?
        };
        // Checked here because a missing folder would otherwise read as a missing `sh`.
        if !cwd.is_dir() {
            return Err(ComputerError::Io {
                path: cwd.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
            });
        }

        let confined = self.confine(workspace, request.origin).await?;
        let started = Instant::now();
        let mut command = Command::new(crate::program::program("sh"));
        command.arg("-c").arg(&request.command);
        self.prepare(&mut command, &cwd, &request.env, confined.as_ref());
        let mut child = command
            .stdin(if request.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ComputerError::Spawn {
                command: request.command.clone(),
                source,
            })?;
        // The child has its own copy of the ruleset's descriptor (closed on exec).
        drop(confined);
        let group = Group::new(&child);
        if let (Some(mut pipe), Some(input)) = (child.stdin.take(), request.stdin.clone()) {
            // Written from its own task: a command that never reads its input must not
            // stall the run on a full pipe (its exit makes the write fail, harmlessly).
            tokio::spawn(async move {
                let _ = pipe.write_all(input.as_bytes()).await;
                let _ = pipe.shutdown().await;
            });
        }

        let stdout_tail = Arc::new(Mutex::new(Tail::default()));
        let stderr_tail = Arc::new(Mutex::new(Tail::default()));
        let mut pumps: Vec<JoinHandle<()>> = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let tail = stdout_tail.clone();
            pumps.push(tokio::spawn(pump(
                stdout,
                Output::Stdout,
                tail,
                output.clone(),
            )));
        }
        if let Some(stderr) = child.stderr.take() {
            let tail = stderr_tail.clone();
            pumps.push(tokio::spawn(pump(stderr, Output::Stderr, tail, output)));
        }

        let ended = tokio::select! {
            status = child.wait() => Ended::Exited(status),
            () = tokio::time::sleep(request.timeout) => Ended::TimedOut,
            () = cancel.cancelled() => Ended::Cancelled,
        };
        let timed_out = matches!(ended, Ended::TimedOut);
        let cancelled = matches!(ended, Ended::Cancelled);
        let status = match ended {
            Ended::Exited(status) => status,
            Ended::TimedOut | Ended::Cancelled => {
                // The shell is not reaped yet, so its id still names the group.
                group.stop().await;
                child.wait().await
            }
        };
        let status = status.map_err(|source| ComputerError::Io {
            path: request.command.clone(),
            source,
        })?;
        group.reaped();

        drain(pumps).await;
        Ok(RunOutcome {
            code: if timed_out || cancelled {
                None
            } else {
                status.code()
            },
            stdout: take_tail(&stdout_tail),
            stderr: take_tail(&stderr_tail),
            timed_out,
            cancelled,
            duration: started.elapsed(),
        })
    }

    async fn attach(
        &self,
        workspace: Option<&Workspace>,
        request: &AttachRequest,
    ) -> Result<Attached, ComputerError> {
        let spawn_error = |source| ComputerError::Spawn {
            command: request.program.clone(),
            source,
        };
        let (cwd, confined) = match workspace {
            Some(workspace) => (
                workspace.root().to_path_buf(),
                self.confine(workspace, request.origin).await?,
            ),
            // The sandbox is drawn around a workspace: without one, it has nothing to allow.
            None if request.origin == Origin::Agent && self.sandbox.is_some() => {
                return Err(spawn_error(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "an agent's process on a sandboxed computer needs a workspace",
                )));
            }
            None => {
                tokio::fs::create_dir_all(&self.workdir)
                    .await
                    .map_err(|source| ComputerError::Io {
                        path: self.workdir.display().to_string(),
                        source,
                    })?;
                (self.workdir.clone(), None)
            }
        };
        // Checked here because a missing folder would otherwise read as a missing program.
        if !cwd.is_dir() {
            return Err(spawn_error(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("working folder {} does not exist", cwd.display()),
            )));
        }
        // A relative path with a slash is relative to the folder the process starts in;
        // left to the OS it would depend on the controller's own working directory.
        let program = std::path::Path::new(&request.program);
        let program = if request.program.contains('/') && program.is_relative() {
            cwd.join(program)
        } else {
            program.to_path_buf()
        };
        let mut command = Command::new(program);
        command.args(&request.args);
        self.prepare(&mut command, &cwd, &request.env, confined.as_ref());
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        drop(confined);
        let group = Group::new(&child);
        let stderr = Arc::new(Mutex::new(Tail::default()));
        if let Some(pipe) = child.stderr.take() {
            // Drained all along: a process whose stderr pipe fills up would block.
            tokio::spawn(pump(pipe, Output::Stderr, stderr.clone(), None));
        }
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(spawn_error(std::io::Error::other(
                "no pipes to the process",
            )));
        };
        Ok(Attached {
            stdin: Box::pin(stdin),
            stdout: Box::pin(stdout),
            process: Process::new(Running {
                _group: group,
                child,
                stderr,
            }),
        })
    }

    async fn read(
        &self,
        workspace: &Workspace,
        path: &str,
    ) -> Result<Option<Vec<u8>>, ComputerError> {
        let resolved = workspace.resolve(path)?;
        match tokio::fs::read(&resolved).await {
            Ok(content) => Ok(Some(content)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ComputerError::Io {
                path: path.to_string(),
                source,
            }),
        }
    }

    async fn write(
        &self,
        workspace: &Workspace,
        path: &str,
        content: &[u8],
    ) -> Result<(), ComputerError> {
        let resolved = workspace.resolve_for_write(path)?;
        let io = |source| ComputerError::Io {
            path: path.to_string(),
            source,
        };
        if let Some(parent) = resolved.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        tokio::fs::write(&resolved, content).await.map_err(io)
    }

    async fn list(&self, workspace: &Workspace, dir: &str) -> Result<Vec<String>, ComputerError> {
        let start = workspace.resolve(dir)?;
        let root = workspace.root().to_path_buf();
        let dir = dir.to_string();
        tokio::task::spawn_blocking(move || {
            // `resolve` answers with links followed; so must the root the paths are cut from.
            let root = std::fs::canonicalize(&root).unwrap_or(root);
            let mut files = Vec::new();
            let mut pending = vec![start];
            while let Some(folder) = pending.pop() {
                let entries = match std::fs::read_dir(&folder) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(source) => {
                        return Err(ComputerError::Io {
                            path: folder.display().to_string(),
                            source,
                        });
                    }
                };
                for entry in entries.flatten() {
                    // Links are not followed: a listing stays inside the workspace.
                    let Ok(kind) = entry.file_type() else {
                        continue;
                    };
                    if kind.is_dir() {
                        pending.push(entry.path());
                    } else if kind.is_file()
                        && let Ok(relative) = entry.path().strip_prefix(&root)
                    {
                        files.push(relative.to_string_lossy().into_owned());
                    }
                }
            }
            files.sort();
            Ok(files)
        })
        .await
        .map_err(|e| ComputerError::Workspace(format!("listing {dir}: {e}")))?
    }

    async fn glob(
        &self,
        workspace: &Workspace,
        request: &GlobRequest,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>, ComputerError> {
        let filter = Filter::new(Some(&request.glob), None, SearchField::Pattern)?;
        let start = search_start(workspace, &request.path)?;
        let root = workspace.root().to_path_buf();
        let cancel = cancel.clone();
        tokio::task::spawn_blocking(move || search::walk(&root, &start, &filter, &cancel))
            .await
            .map_err(|e| ComputerError::Workspace(format!("listing files: {e}")))
    }

    async fn search(
        &self,
        workspace: &Workspace,
        request: &SearchRequest,
        cancel: &CancellationToken,
    ) -> Result<Vec<FileHits>, ComputerError> {
        let start = search_start(workspace, &request.path)?;
        let root = workspace.root().to_path_buf();
        let (request, cancel) = (request.clone(), cancel.clone());
        tokio::task::spawn_blocking(move || search::search_here(&root, &start, &request, &cancel))
            .await
            .map_err(|e| ComputerError::Workspace(format!("searching files: {e}")))?
    }

    async fn discard(&self, spec: &WorkspaceSpec) -> Result<(), ComputerError> {
        let dir = self.workdir.join(dir_name(&spec.task));
        tokio::task::spawn_blocking(move || crate::gitops::workspace::remove(&dir))
            .await
            .map_err(|e| ComputerError::Workspace(format!("removing a workspace: {e}")))?
            .map_err(|e| ComputerError::Workspace(e.to_string()))
    }

    async fn recycle(&self, spec: &WorkspaceSpec) -> Result<(), ComputerError> {
        let dir = self.workdir.join(dir_name(&spec.task));
        let mirrors = self.workdir.join(crate::gitops::workspace::MIRRORS);
        let repo = spec.repo.clone();
        let clean = self
            .journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .and_then(|journal| journal.clean_since());
        tokio::task::spawn_blocking(move || {
            crate::gitops::workspace::recycle(&repo, &dir, &mirrors, clean)
        })
        .await
        .map_err(|e| ComputerError::Workspace(format!("keeping a workspace: {e}")))?
        .map_err(|e| ComputerError::Workspace(e.to_string()))
    }

    async fn release(&self) -> Result<usize, ComputerError> {
        // Every process table read costs a read of each process's environment.
        if !self.started.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(0);
        }
        let marker = self.marker.clone();
        let (stopped, all) = tokio::task::spawn_blocking(move || {
            let stopped = stopping::stop_found(|| marked_processes(&marker));
            // Found none at all: nothing to look for again.
            (
                stopped,
                stopped == 0 || marked_processes(&marker).is_empty(),
            )
        })
        .await
        .map_err(|e| ComputerError::Workspace(format!("stopping left-over processes: {e}")))?;
        // Everything it started is gone: none of it can touch files any more.
        if all
            && self
                .started
                .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            super::activity::released();
        }
        Ok(stopped)
    }

    async fn healthy(&self) -> Result<(), ComputerError> {
        // The two things every task needs here: a workdir it can write, and processes.
        // Each probe has a file of its own: two at once (a heartbeat, and the check after a
        // failed attempt whether its computer still answers) would otherwise remove each
        // other's file, and the computer would be taken for lost.
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let probe = self
            .workdir
            .join(format!(".proto-probe-{}-{n}", std::process::id()));
        let io = |source| ComputerError::Io {
            path: probe.display().to_string(),
            source,
        };
        tokio::fs::create_dir_all(&self.workdir).await.map_err(io)?;
        tokio::fs::write(&probe, b"").await.map_err(io)?;
        tokio::fs::remove_file(&probe).await.map_err(io)?;
        let status = Command::new("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .map_err(|source| ComputerError::Spawn {
                command: "true".into(),
                source,
            })?;
        if !status.success() {
            return Err(ComputerError::Workspace(format!(
                "`true` ended with {status}"
            )));
        }
        Ok(())
    }

    fn has_display(&self) -> bool {
        self.desktop.is_some()
    }

    async fn screenshot(
        &self,
        region: Option<super::desktop::Region>,
    ) -> Result<super::desktop::Screenshot, ComputerError> {
        Ok(self.display()?.screenshot(region).await?)
    }

    async fn input(&self, input: super::desktop::Input) -> Result<(), ComputerError> {
        // Whatever runs on the display can act on the input, write files included, and
        // nothing stops it at release: a driven desktop counts as a start never released.
        static DRIVEN: std::sync::Once = std::sync::Once::new();
        DRIVEN.call_once(|| super::activity::starting(true));
        super::activity::starting(false);
        Ok(self.display()?.input(input).await?)
    }
}

impl Local {
    fn display(&self) -> Result<&super::desktop::Desktop, ComputerError> {
        self.desktop
            .as_deref()
            .ok_or_else(|| ComputerError::NoDisplay {
                computer: self.name.clone(),
            })
    }
}

/// Where a search of `path` ("" for the root) starts on this host: inside the workspace,
/// and existing.
fn search_start(workspace: &Workspace, path: &str) -> Result<std::path::PathBuf, ComputerError> {
    let start = if path.is_empty() {
        workspace.root().to_path_buf()
    } else {
        workspace.resolve(path)?
    };
    if !start.exists() {
        return Err(ComputerError::Search {
            field: SearchField::Path,
            reason: format!("{path}: no such file or directory"),
        });
    }
    Ok(start)
}

/// The folder name of a task's workspace: its key with anything but `[A-Za-z0-9._-]` replaced
/// by `-`, so a key can never name a path of its own.
pub(crate) fn dir_name(task: &str) -> String {
    let name: String = task
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    // `.` and `..` are made of allowed characters but name the workdir and its parent.
    if name.is_empty() || name.chars().all(|c| c == '.') {
        "-".repeat(name.len().max(1))
    } else {
        name
    }
}

enum Ended {
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
    Cancelled,
}

/// The process group of a running command. Dropped before the shell is reaped (the run's
/// future dropped mid-way), it kills the group, so an abandoned run leaves nothing behind.
struct Group {
    pgid: Option<Pid>,
}

impl Group {
    fn new(child: &Child) -> Self {
        Group {
            pgid: child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
        }
    }

    /// Stops the group with the grace of [`stopping::stop_group`].
    async fn stop(&self) {
        if let Some(pgid) = self.pgid {
            stopping::stop_group(pgid).await;
        }
    }

    /// The shell is reaped: its id may be reused, so the group must not be signalled again.
    fn reaped(mut self) {
        self.pgid = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            stopping::stop_group_detached(pgid);
        }
    }
}

/// An attached process on this host. Its leader is never reaped while this lives (its
/// state is looked at with `WNOWAIT`), so the group's id names it until the group is stopped
/// on drop; the child is reaped after that.
struct Running {
    /// Held for its `Drop`, declared first so it drops first: the group is signalled
    /// before the child is let go.
    _group: Group,
    child: Child,
    stderr: Arc<Mutex<Tail>>,
}

impl Life for Running {
    fn running(&self) -> bool {
        use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
        let Some(pid) = self.child.id().and_then(|id| i32::try_from(id).ok()) else {
            return false;
        };
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        matches!(
            waitid(Id::Pid(Pid::from_raw(pid)), flags),
            Ok(WaitStatus::StillAlive)
        )
    }

    fn stderr(&self) -> String {
        take_tail(&self.stderr)
    }
}

/// Reads a stream in lines (or [`MAX_CHUNK`] pieces), keeping its tail and forwarding each
/// piece as it arrives.
async fn pump(
    stream: impl AsyncRead + Unpin,
    wrap: fn(String) -> Output,
    tail: Arc<Mutex<Tail>>,
    output: Option<mpsc::UnboundedSender<Output>>,
) {
    let mut reader = BufReader::new(stream);
    // Bytes of a character cut in two by a chunk boundary, waiting for the rest.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let chunk = match read_chunk(&mut reader).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) | Err(_) => break,
        };
        tail.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(&chunk);
        if let Some(sender) = &output {
            carry.extend_from_slice(&chunk);
            let text = take_text(&mut carry);
            // A dropped receiver only means nobody is watching; the tail is still kept.
            if !text.is_empty() {
                let _ = sender.send(wrap(text));
            }
        }
    }
    if let Some(sender) = &output
        && !carry.is_empty()
    {
        let _ = sender.send(wrap(String::from_utf8_lossy(&carry).into_owned()));
    }
}

/// The next line (with its newline) or [`MAX_CHUNK`] bytes of a longer one; `None` at the end.
async fn read_chunk(
    reader: &mut BufReader<impl AsyncRead + Unpin>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut chunk = Vec::new();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if chunk.is_empty() { None } else { Some(chunk) });
        }
        let room = MAX_CHUNK - chunk.len();
        let (take, done) = match available.iter().take(room).position(|&b| b == b'\n') {
            Some(newline) => (newline + 1, true),
            None => {
                let take = available.len().min(room);
                (take, chunk.len() + take == MAX_CHUNK)
            }
        };
        chunk.extend_from_slice(&available[..take]);
        reader.consume(take);
        if done {
            return Ok(Some(chunk));
        }
    }
}

/// The text of `bytes`, leaving in it only an incomplete character at its end.
fn take_text(bytes: &mut Vec<u8>) -> String {
    let keep = match std::str::from_utf8(bytes) {
        Ok(_) => 0,
        // `error_len() == None`: the bytes end in the middle of a character.
        Err(e) if e.error_len().is_none() => bytes.len() - e.valid_up_to(),
        Err(_) => 0,
    };
    let rest = bytes.split_off(bytes.len() - keep);
    let text = String::from_utf8_lossy(bytes).into_owned();
    *bytes = rest;
    text
}

/// The last [`TAIL_BYTES`] of a stream.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        // Trimmed only once twice the size, so pushing stays cheap.
        if self.bytes.len() > 2 * TAIL_BYTES {
            let excess = self.bytes.len() - TAIL_BYTES;
            self.bytes.drain(..excess);
        }
    }

    fn text(&self) -> String {
        let start = self.bytes.len().saturating_sub(TAIL_BYTES);
        let mut bytes = &self.bytes[start..];
        if start > 0 {
            // Cut mid-character: skip the continuation bytes of the character cut off.
            while let Some((&b, rest)) = bytes.split_first()
                && b & 0xC0 == 0x80
            {
                bytes = rest;
            }
        }
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        // Replacement characters are wider than the bytes they replace.
        if text.len() > TAIL_BYTES {
            let mut cut = text.len() - TAIL_BYTES;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            text.drain(..cut);
        }
        text
    }
}

fn take_tail(tail: &Mutex<Tail>) -> String {
    tail.lock().unwrap_or_else(PoisonError::into_inner).text()
}

/// Waits for the output readers to reach the end of their streams, but no longer than
/// [`DRAIN_GRACE`]: a process the command left in the background may hold the pipes open
/// indefinitely.
async fn drain(pumps: Vec<JoinHandle<()>>) {
    let aborts: Vec<_> = pumps.iter().map(JoinHandle::abort_handle).collect();
    let all = async {
        for pump in pumps {
            let _ = pump.await;
        }
    };
    if tokio::time::timeout(DRAIN_GRACE, all).await.is_err() {
        for abort in aborts {
            abort.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names_keep_only_safe_characters() {
        assert_eq!(dir_name("goal/ship landing"), "goal-ship-landing");
        assert_eq!(dir_name("a.b_c-D9"), "a.b_c-D9");
        assert_eq!(dir_name("é"), "-");
        assert_eq!(dir_name(""), "-");
        assert_eq!(dir_name("."), "-");
        assert_eq!(dir_name(".."), "--");
        assert_eq!(dir_name("../x"), "..-x");
    }

    #[test]
    fn tail_keeps_the_end_on_a_character_boundary() {
        let mut tail = Tail::default();
        for _ in 0..3 * TAIL_BYTES / 2 {
            tail.push("é".as_bytes());
        }
        tail.push(b"end");
        let text = tail.text();
        assert!(text.len() <= TAIL_BYTES);
        assert!(text.ends_with("end"));
        assert!(text.starts_with('é'));
    }

    #[test]
    fn split_characters_wait_for_their_rest() {
        let mut carry = "aé".as_bytes()[..2].to_vec();
        assert_eq!(take_text(&mut carry), "a");
        carry.extend_from_slice(&"é".as_bytes()[1..]);
        assert_eq!(take_text(&mut carry), "é");
        assert!(carry.is_empty());
    }
}
