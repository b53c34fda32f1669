//! An SSH computer: another machine, reached over one pooled SSH connection
//! ([`connect::Pool`], host keys checked strictly against `known_hosts`). Each command is an
//! exec channel; files go over SFTP ([`sftp`]); the workspace lives on the remote, under its
//! `workdir`, cloned there by the remote's own git from the product's URL, so delivery's git
//! (which runs through [`Computer::run`]) commits and pushes from there.
//!
//! A command runs under a small `sh` wrapper: it enters the workspace, exports the request's
//! variables (never through the server's `AcceptEnv`) and the computer's marker, and starts
//! the command in a session of its own with `setsid`, whose process-group id it writes as
//! the first line of its standard error. A timeout or cancellation then stops that group on
//! the remote the way [`stopping`](super::stopping) stops one here: `SIGTERM`, the grace,
//! `SIGKILL`. The remote must be a Unix with `sh`, `setsid` (util-linux), `git` and, for
//! [`Computer::release`], Linux's `/proc`.
//!
//! Local's sandbox ([`super::sandbox`]) does not apply: it confines a process on this host.
//! An SSH computer's commands have exactly the remote user's rights; confine them there.

mod attach;
pub mod connect;
pub mod desktop;
pub mod search;
pub mod sftp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use russh::ChannelMsg;
use tokio::sync::{OnceCell, mpsc};
use tokio_util::sync::CancellationToken;

use super::local::dir_name;
use super::stopping::STOP_GRACE;
use super::{
    AttachRequest, Attached, Computer, ComputerError, FileHits, GlobRequest, Output, RunOutcome,
    RunRequest, SearchRequest, Workspace, WorkspaceSpec,
};
use crate::spec::kinds::SshConnection;
use crate::tools::shell_quote as quote;
pub use connect::{HostKeys, Login, Pool, SshError, Target};

/// How much of each stream an outcome keeps (its end).
const TAIL_BYTES: usize = 64 * 1024;

/// How long output is still read after the command ended (a background process it left
/// may hold its streams open).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How long making a workspace (a clone over the network) may take.
const CLONE_TIMEOUT: Duration = Duration::from_secs(600);

/// How long the computer's own short scripts (stopping a group, removing a workspace) may
/// take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// The first line of a command's standard error: its process group on the remote.
const GROUP_LINE: &str = "proto-process-group:";

/// The variable that marks every process a computer's commands start, so that
/// [`Computer::release`] finds them (as on [`Local`](super::Local)).
const MARKER_VAR: &str = "PROTO_RUN";

/// The default workdir on the remote.
const DEFAULT_WORKDIR: &str = "~/.proto/work";

/// A remote machine over SSH.
pub struct Ssh {
    name: String,
    pool: Arc<Pool>,
    /// The `workdir` setting: `~/`-relative, absolute, or `None` for [`DEFAULT_WORKDIR`].
    workdir: Option<String>,
    /// The workdir as an absolute remote path, learnt on first use.
    resolved: Arc<OnceCell<PathBuf>>,
    /// Unique to this instance (one per attempt): the value of [`MARKER_VAR`].
    marker: String,
    /// The marker prefix of a previous controller's tasks (see
    /// [`Ssh::stopping_leftovers`]), whose processes are stopped before the first workspace.
    leftovers: Option<String>,
    /// Whether they were (once per connection, shared by every task's instance).
    swept: Arc<OnceCell<usize>>,
    /// The display agents see and drive, for a computer with capability `gui` (shared by
    /// every task's instance: one worker per computer).
    desktop: Option<Arc<desktop::RemoteDesktop>>,
}

impl Ssh {
    /// A computer with a connection of its own.
    pub fn new(name: impl Into<String>, target: Target, workdir: Option<String>) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ssh {
            name: name.into(),
            pool: Arc::new(Pool::new(target)),
            workdir,
            resolved: Arc::new(OnceCell::new()),
            marker: format!("ssh-{}-{nanos}-{n}", std::process::id()),
            leftovers: None,
            swept: Arc::new(OnceCell::new()),
            desktop: None,
        }
    }

    /// This computer with the X display `display` of the remote, which agents see and drive
    /// through the `Computer` tool; `worker` is the binary run there to do it (the
    /// controller's own executable, see [`desktop`]).
    pub fn with_desktop(mut self, display: impl Into<String>, worker: PathBuf) -> Self {
        self.desktop = Some(Arc::new(desktop::RemoteDesktop::new(
            display.into(),
            worker,
            self.marker.clone(),
        )));
        self
    }

    /// The remote display agents drive, if the computer has one.
    pub fn display(&self) -> Option<&str> {
        self.desktop.as_deref().map(desktop::RemoteDesktop::display)
    }

    /// How many times the desktop worker binary was copied to the remote by this computer
    /// (and the instances made from it for tasks).
    pub fn worker_uploads(&self) -> usize {
        self.desktop
            .as_deref()
            .map_or(0, desktop::RemoteDesktop::uploads)
    }

    fn remote_desktop(&self) -> Result<&desktop::RemoteDesktop, ComputerError> {
        self.desktop
            .as_deref()
            .ok_or_else(|| ComputerError::NoDisplay {
                computer: self.name.clone(),
            })
    }

    /// This computer, stopping on first use the processes that tasks of a previous
    /// controller with the same state left running there (it was killed, or lost the
    /// connection), as [`crate::computer::local::stop_leftovers`] does on this host: a
    /// resumed attempt must never race the commands of the one it replaces. `prefix` is
    /// [`crate::computer::local::marker_prefix`] of the state directory.
    pub fn stopping_leftovers(mut self, prefix: String) -> Self {
        self.leftovers = Some(prefix);
        self
    }

    /// Stops a previous controller's left-over processes, once; the number stopped.
    async fn sweep(&self) -> Result<usize, ComputerError> {
        let Some(prefix) = &self.leftovers else {
            return Ok(0);
        };
        self.swept
            .get_or_try_init(|| async {
                let (code, stdout, stderr) = self
                    .script(&release_script(Marked::Prefix(prefix)), SCRIPT_TIMEOUT)
                    .await?;
                match (code, stdout.trim().parse::<usize>()) {
                    (Some(0), Ok(stopped)) => {
                        if stopped > 0 {
                            tracing::info!(
                                computer = %self.name,
                                processes = stopped,
                                "stopped commands a previous run left running"
                            );
                        }
                        Ok(stopped)
                    }
                    _ => Err(ComputerError::Workspace(format!(
                        "stopping a previous run's processes on {}: {}",
                        self.target().address(),
                        stderr.trim()
                    ))),
                }
            })
            .await
            .copied()
    }

    /// The computer a Computer's `ssh:` and `workdir:` declare.
    pub fn from_spec(name: impl Into<String>, ssh: &SshConnection, workdir: Option<&str>) -> Self {
        Ssh::new(name, Target::from_spec(ssh), workdir.map(str::to_owned))
    }

    /// This computer for one task: the same connection, and a marker of the task's own (see
    /// [`crate::computer::local::run_marker`]), so that `release` stops only its processes.
    pub fn marked(&self, marker: String) -> Self {
        Ssh {
            name: self.name.clone(),
            pool: self.pool.clone(),
            workdir: self.workdir.clone(),
            resolved: self.resolved.clone(),
            marker,
            leftovers: self.leftovers.clone(),
            swept: self.swept.clone(),
            desktop: self.desktop.clone(),
        }
    }

    pub fn target(&self) -> &Target {
        self.pool.target()
    }

    /// Where workspaces live on the remote, as an absolute path (`~` is the remote user's
    /// home, which the SFTP server starts in).
    async fn workdir(&self) -> Result<PathBuf, ComputerError> {
        self.resolved
            .get_or_try_init(|| async {
                let setting = self.workdir.as_deref().unwrap_or(DEFAULT_WORKDIR);
                if setting.starts_with('/') {
                    return Ok(PathBuf::from(setting));
                }
                let link = self.pool.link().await?;
                let sftp = link.sftp().await?;
                let home = sftp
                    .canonicalize(".")
                    .await
                    .map_err(|e| sftp::io_error("~", e))?;
                let relative = setting.strip_prefix("~/").unwrap_or(setting);
                Ok(Path::new(&home).join(relative))
            })
            .await
            .cloned()
    }

    /// Runs one of the computer's own scripts to its end: its exit code (`None` when it
    /// ended without one) and its output.
    async fn script(
        &self,
        script: &str,
        timeout: Duration,
    ) -> Result<(Option<u32>, String, String), ComputerError> {
        collect(&self.pool, script, None, timeout).await
    }
}

/// Runs `script` on the computer to its end (within `timeout`): exit code and output.
/// `input`, when given, is its standard input (closed after it).
async fn collect(
    pool: &Pool,
    script: &str,
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<(Option<u32>, String, String), ComputerError> {
    let (link, mut channel) = pool.exec(&format!("sh -c {}", quote(script))).await?;
    if let Some(input) = input {
        let sent = async {
            channel.data(input).await?;
            channel.eof().await
        };
        sent.await.map_err(|e| SshError::Channel {
            host: link.address().to_string(),
            detail: format!("cannot send a script its input: {e}"),
        })?;
    }
    let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), None);
    let read = async {
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, .. } => err.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
                _ => {}
            }
        }
    };
    if tokio::time::timeout(timeout, read).await.is_err() {
        return Err(SshError::Channel {
            host: link.address().to_string(),
            detail: format!("a script did not end within {}s", timeout.as_secs()),
        }
        .into());
    }
    Ok((
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    ))
}

/// The script that stops process group `pgid` on the remote: `SIGTERM`, up to
/// [`STOP_GRACE`] for the group to end, then `SIGKILL`.
fn stop_script(pgid: u32) -> String {
    let polls = STOP_GRACE.as_millis() / 100;
    format!(
        "kill -TERM -{pgid} 2>/dev/null || exit 0\n\
         i=0\n\
         while [ $i -lt {polls} ] && kill -0 -{pgid} 2>/dev/null; do sleep 0.1; i=$((i+1)); done\n\
         kill -KILL -{pgid} 2>/dev/null\n\
         exit 0\n"
    )
}

/// Stops the remote process group `pgid` (see [`stop_script`]).
async fn stop_group(pool: &Pool, pgid: u32) {
    if let Err(e) = collect(pool, &stop_script(pgid), None, SCRIPT_TIMEOUT).await {
        tracing::warn!(pgid, "cannot stop a remote process group: {e}");
    }
}

/// The command line that runs the shell command `command` in `cwd` (the remote user's home
/// when `None`) on the remote with `env` added (see the module's doc).
fn wrapper(
    cwd: Option<&Path>,
    command: &str,
    env: &BTreeMap<String, String>,
    marker: &str,
) -> Result<String, ComputerError> {
    let mut script = match cwd {
        Some(cwd) => format!("cd {} || exit 1\n", quote(&sftp::text(cwd))),
        None => String::new(),
    };
    script.push_str(&format!("export {MARKER_VAR}={}\n", quote(marker)));
    for (key, value) in env {
        if !valid_name(key) {
            return Err(ComputerError::Spawn {
                command: command.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("`{key}` is not a variable name"),
                ),
            });
        }
        script.push_str(&format!("export {key}={}\n", quote(value)));
    }
    // `-w`: setsid forks when the shell already leads a group, and must then wait to pass
    // the command's exit status on.
    script.push_str(&format!(
        "exec setsid -w sh -c 'printf \"{GROUP_LINE}%s\\n\" \"$$\" >&2; exec sh -c \"$1\"' sh {}\n",
        quote(command)
    ));
    Ok(format!("sh -c {}", quote(&script)))
}

/// Whether `name` can be exported by `sh`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A remote process group that is stopped if the run is abandoned before it ended (its
/// future dropped), so an abandoned run leaves nothing behind.
struct Group {
    pool: Arc<Pool>,
    pgid: Option<u32>,
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let pool = self.pool.clone();
            runtime.spawn(async move { stop_group(&pool, pgid).await });
        }
    }
}

/// One output stream of a command: forwarded as it arrives (whole characters only), its
/// last [`TAIL_BYTES`] kept.
struct Stream {
    wrap: fn(String) -> Output,
    tail: Vec<u8>,
    /// Bytes of a character cut in two by a packet boundary, waiting for the rest.
    carry: Vec<u8>,
}

impl Stream {
    fn new(wrap: fn(String) -> Output) -> Self {
        Stream {
            wrap,
            tail: Vec::new(),
            carry: Vec::new(),
        }
    }

    fn push(&mut self, bytes: &[u8], output: Option<&mpsc::UnboundedSender<Output>>) {
        self.tail.extend_from_slice(bytes);
        // Trimmed only once twice the size, so pushing stays cheap.
        if self.tail.len() > 2 * TAIL_BYTES {
            let excess = self.tail.len() - TAIL_BYTES;
            self.tail.drain(..excess);
        }
        if let Some(sender) = output {
            self.carry.extend_from_slice(bytes);
            let keep = match std::str::from_utf8(&self.carry) {
                Err(e) if e.error_len().is_none() => self.carry.len() - e.valid_up_to(),
                _ => 0,
            };
            let rest = self.carry.split_off(self.carry.len() - keep);
            let text = String::from_utf8_lossy(&self.carry).into_owned();
            self.carry = rest;
            // A dropped receiver only means nobody is watching.
            if !text.is_empty() {
                let _ = sender.send((self.wrap)(text));
            }
        }
    }

    fn finish(&mut self, output: Option<&mpsc::UnboundedSender<Output>>) -> String {
        if let Some(sender) = output
            && !self.carry.is_empty()
        {
            let _ = sender.send((self.wrap)(
                String::from_utf8_lossy(&self.carry).into_owned(),
            ));
        }
        self.text()
    }

    /// The last [`TAIL_BYTES`] of the stream so far, as text.
    fn text(&self) -> String {
        let start = self.tail.len().saturating_sub(TAIL_BYTES);
        let mut bytes = &self.tail[start..];
        if start > 0 {
            // Cut mid-character: skip the continuation bytes of the character cut off.
            while let Some((&b, rest)) = bytes.split_first()
                && b & 0xC0 == 0x80
            {
                bytes = rest;
            }
        }
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// Standard error, whose first line (from the wrapper) names the process group.
struct Stderr {
    stream: Stream,
    /// The start of the stream until its first line is complete.
    head: Option<Vec<u8>>,
    pgid: Arc<Mutex<Option<u32>>>,
}

impl Stderr {
    fn push(&mut self, bytes: &[u8], output: Option<&mpsc::UnboundedSender<Output>>) {
        let Some(head) = self.head.as_mut() else {
            self.stream.push(bytes, output);
            return;
        };
        head.extend_from_slice(bytes);
        let Some(newline) = head.iter().position(|b| *b == b'\n') else {
            return;
        };
        let rest = head.split_off(newline + 1);
        let line = String::from_utf8_lossy(head).into_owned();
        self.head = None;
        match line
            .trim_end()
            .strip_prefix(GROUP_LINE)
            .and_then(|id| id.parse().ok())
        {
            Some(pgid) => {
                *self.pgid.lock().unwrap_or_else(PoisonError::into_inner) = Some(pgid);
            }
            // Not the wrapper's line (the `cd` failed, say): it is the command's output.
            None => self.stream.push(line.as_bytes(), output),
        }
        if !rest.is_empty() {
            self.stream.push(&rest, output);
        }
    }

    fn finish(&mut self, output: Option<&mpsc::UnboundedSender<Output>>) -> String {
        if let Some(head) = self.head.take() {
            self.stream.push(&head, output);
        }
        self.stream.finish(output)
    }

    /// What the command wrote so far (a first line not yet complete included).
    fn text(&self) -> String {
        let mut text = self.stream.text();
        if let Some(head) = &self.head {
            text.push_str(&String::from_utf8_lossy(head));
        }
        text
    }
}

enum Ended {
    /// The command exited (`None`: by a signal).
    Exited(Option<u32>),
    TimedOut,
    Cancelled,
    /// The channel closed with no exit status: the connection dropped.
    Lost,
}

#[async_trait]
impl Computer for Ssh {
    fn name(&self) -> &str {
        &self.name
    }

    async fn workspace(&self, spec: &WorkspaceSpec) -> Result<Workspace, ComputerError> {
        self.sweep().await?;
        if !crate::source::remote::is_url(&spec.repo) && !spec.repo.starts_with('/') {
            return Err(ComputerError::Workspace(format!(
                "{}: an SSH computer clones the product itself, so its repository must be a \
                 URL or an absolute path the computer can reach",
                spec.repo
            )));
        }
        let workdir = self.workdir().await?;
        let dir = workdir.join(dir_name(&spec.task));
        let script = clone_script(&workdir, &dir, &spec.repo, &spec.branch);
        let (code, _, stderr) = self.script(&script, CLONE_TIMEOUT).await?;
        if code != Some(0) {
            // Git's own reason (`fatal: ...`) before the advice that follows it.
            let why = stderr
                .lines()
                .find(|l| l.starts_with("fatal:"))
                .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
                .unwrap_or("the clone failed");
            return Err(ComputerError::Workspace(format!(
                "{} on {}: {why}",
                dir.display(),
                self.target().address()
            )));
        }
        // The configuration git writes for the clone, as this host's workspaces have it;
        // there are no alternates (no mirror) on the remote.
        let pristine = crate::gitops::workspace::pristine(&spec.repo, &spec.branch, &workdir)
            .map_err(|e| ComputerError::Workspace(e.to_string()))?;
        Ok(
            Workspace::elsewhere(dir).with_pristine(super::workspace::Pristine {
                alternates: String::new(),
                ..pristine
            }),
        )
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
            let sftp = self.pool.link().await?.sftp().await?;
            let located = sftp::locate(&sftp, workspace, &request.cwd, false).await?;
            let path = located.path();
            let is_dir = sftp
                .metadata(sftp::text(&path))
                .await
                .is_ok_and(|m| m.file_type().is_dir());
            // Checked here because a missing folder would otherwise read as the command's
            // own failure.
            if !is_dir {
                return Err(ComputerError::Io {
                    path: sftp::text(&path),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such folder"),
                });
            }
            path
        };
        let command = wrapper(Some(&cwd), &request.command, &request.env, &self.marker)?;
        let started = Instant::now();
        let (_link, mut channel) = self.pool.exec(&command).await?;
        // The input, then its end: a command reading stdin sees exactly the request's
        // input, and an empty one when there is none (not a channel left open forever).
        let input = request.stdin.as_deref().unwrap_or_default();
        let sent = async {
            if !input.is_empty() {
                channel.data(input.as_bytes()).await?;
            }
            channel.eof().await
        };
        match tokio::time::timeout(request.timeout, sent).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(computer = %self.name, "cannot send a command's input: {e}")
            }
            // Its input is not read: the run's own timeout then stops the command.
            Err(_) => tracing::debug!(computer = %self.name, "a command did not read its input"),
        }
        let pgid = Arc::new(Mutex::new(None));
        let mut group = Group {
            pool: self.pool.clone(),
            pgid: None,
        };
        let output = output.as_ref();
        let mut stdout = Stream::new(Output::Stdout);
        let mut stderr = Stderr {
            stream: Stream::new(Output::Stderr),
            head: Some(Vec::new()),
            pgid: pgid.clone(),
        };
        let known =
            |pgid: &Arc<Mutex<Option<u32>>>| *pgid.lock().unwrap_or_else(PoisonError::into_inner);

        let deadline = tokio::time::Instant::now() + request.timeout;
        let ended = loop {
            tokio::select! {
                msg = channel.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => stdout.push(&data, output),
                    Some(ChannelMsg::ExtendedData { data, .. }) => {
                        stderr.push(&data, output);
                        if group.pgid.is_none() {
                            group.pgid = known(&pgid);
                        }
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => break Ended::Exited(Some(exit_status)),
                    Some(ChannelMsg::ExitSignal { .. }) => break Ended::Exited(None),
                    Some(_) => {}
                    None => break Ended::Lost,
                },
                () = tokio::time::sleep_until(deadline) => break Ended::TimedOut,
                () = cancel.cancelled() => break Ended::Cancelled,
            }
        };

        let stopping = matches!(ended, Ended::TimedOut | Ended::Cancelled);
        if matches!(ended, Ended::Exited(_)) {
            // The command's shell ended: its id may name another group by now.
            group.pgid = None;
        }
        // The output still on its way: the rest of the streams after an exit, what the
        // stopped group writes as it ends. A background process may hold the streams
        // open, so this is bounded.
        let grace = if stopping {
            STOP_GRACE + DRAIN_GRACE
        } else {
            DRAIN_GRACE
        };
        let drain_deadline = tokio::time::Instant::now() + grace;
        let mut stopper: Option<tokio::task::JoinHandle<()>> = None;
        if !matches!(ended, Ended::Lost) {
            loop {
                if stopping && stopper.is_none() {
                    if group.pgid.is_none() {
                        group.pgid = known(&pgid);
                    }
                    if let Some(id) = group.pgid.take() {
                        // Stopped beside the drain: a channel nobody reads could hold up the
                        // connection the stop itself runs on.
                        let pool = self.pool.clone();
                        stopper = Some(tokio::spawn(async move { stop_group(&pool, id).await }));
                    }
                }
                let msg = tokio::select! {
                    msg = channel.wait() => msg,
                    () = tokio::time::sleep_until(drain_deadline) => break,
                };
                match msg {
                    Some(ChannelMsg::Data { data }) => stdout.push(&data, output),
                    Some(ChannelMsg::ExtendedData { data, .. }) => stderr.push(&data, output),
                    Some(_) => {}
                    None => break,
                }
            }
        }
        if let Some(stopper) = stopper {
            let _ = stopper.await;
        }
        if let Some(id) = group.pgid.take() {
            // The connection dropped under a running command: sshd does not stop it, so
            // it is stopped over a new connection rather than left running unwatched.
            stop_group(&self.pool, id).await;
        }
        let (stdout, stderr) = (stdout.finish(output), stderr.finish(output));
        let (code, timed_out, cancelled) = match ended {
            Ended::Exited(code) => (code.and_then(|c| i32::try_from(c).ok()), false, false),
            Ended::TimedOut => (None, true, false),
            Ended::Cancelled => (None, false, true),
            Ended::Lost => {
                return Err(SshError::Channel {
                    host: self.target().address(),
                    detail: format!(
                        "the connection dropped while `{}` ran",
                        request.command.lines().next().unwrap_or_default()
                    ),
                }
                .into());
            }
        };
        Ok(RunOutcome {
            code,
            stdout,
            stderr,
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
        attach::attach(self, workspace, request, &self.marker).await
    }

    async fn read(
        &self,
        workspace: &Workspace,
        path: &str,
    ) -> Result<Option<Vec<u8>>, ComputerError> {
        let link = self.pool.link().await?;
        let sftp = link.sftp().await?;
        let located = sftp::locate(&sftp, workspace, path, false).await?;
        sftp::read(&sftp, &located.path())
            .await
            .map_err(|e| sftp::io_error(path, e))
    }

    async fn write(
        &self,
        workspace: &Workspace,
        path: &str,
        content: &[u8],
    ) -> Result<(), ComputerError> {
        let link = self.pool.link().await?;
        let sftp = link.sftp().await?;
        let located = sftp::locate(&sftp, workspace, path, true).await?;
        sftp::write(&sftp, &located.root, &located.path(), content)
            .await
            .map_err(|e| sftp::io_error(path, e))
    }

    async fn list(&self, workspace: &Workspace, dir: &str) -> Result<Vec<String>, ComputerError> {
        let link = self.pool.link().await?;
        let sftp = link.sftp().await?;
        let located = sftp::locate(&sftp, workspace, dir, false).await?;
        sftp::list(&sftp, &located.root, &located.path())
            .await
            .map_err(|e| sftp::io_error(dir, e))
    }

    async fn glob(
        &self,
        workspace: &Workspace,
        request: &GlobRequest,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>, ComputerError> {
        search::glob(&self.pool, workspace, request, cancel).await
    }

    async fn search(
        &self,
        workspace: &Workspace,
        request: &SearchRequest,
        cancel: &CancellationToken,
    ) -> Result<Vec<FileHits>, ComputerError> {
        search::search(&self.pool, workspace, request, cancel).await
    }

    async fn discard(&self, spec: &WorkspaceSpec) -> Result<(), ComputerError> {
        // An attempt's first touch of the computer: nothing of a previous run may still
        // write into the workspace it makes.
        self.sweep().await?;
        let dir = self.workdir().await?.join(dir_name(&spec.task));
        let dir = sftp::text(&dir);
        let script = format!(
            "rm -rf -- {} {}",
            quote(&dir),
            quote(&format!("{dir}.partial"))
        );
        match self.script(&script, SCRIPT_TIMEOUT).await? {
            (Some(0), _, _) => Ok(()),
            (_, _, stderr) => Err(ComputerError::Workspace(format!(
                "removing {dir}: {}",
                stderr.trim()
            ))),
        }
    }

    async fn release(&self) -> Result<usize, ComputerError> {
        let (code, stdout, stderr) = self
            .script(
                &release_script(Marked::Exactly(&self.marker)),
                SCRIPT_TIMEOUT,
            )
            .await?;
        match (code, stdout.trim().parse::<usize>()) {
            (Some(0), Ok(stopped)) => Ok(stopped),
            _ => Err(ComputerError::Workspace(format!(
                "stopping left-over processes on {}: {}",
                self.target().address(),
                stderr.trim()
            ))),
        }
    }

    async fn healthy(&self) -> Result<(), ComputerError> {
        match self.script("true", connect::CONNECT_TIMEOUT).await? {
            (Some(0), _, _) => Ok(()),
            (code, _, stderr) => Err(SshError::Channel {
                host: self.target().address(),
                detail: format!(
                    "`true` ended with {}: {}",
                    code.map_or_else(|| "no exit status".into(), |c| format!("exit status {c}")),
                    stderr.trim()
                ),
            }
            .into()),
        }
    }

    fn has_display(&self) -> bool {
        self.desktop.is_some()
    }

    async fn screenshot(
        &self,
        region: Option<super::desktop::Region>,
    ) -> Result<super::desktop::Screenshot, ComputerError> {
        self.remote_desktop()?.screenshot(self, region).await
    }

    async fn input(&self, input: super::desktop::Input) -> Result<(), ComputerError> {
        self.remote_desktop()?.input(self, input).await
    }
}

/// Which processes a [`release_script`] stops.
#[derive(Clone, Copy)]
enum Marked<'a> {
    Exactly(&'a str),
    Prefix(&'a str),
}

/// The script that makes the workspace `dir` on the remote: a clone of `repo` at `branch`
/// under a `.partial` name, renamed into place when whole; nothing when `dir` exists (a
/// restarted task continues there). A missing branch starts at the remote's default branch,
/// an empty repository gives an unborn branch (as on this host).
fn clone_script(workdir: &Path, dir: &Path, repo: &str, branch: &str) -> String {
    let dir = quote(&sftp::text(dir));
    format!(
        "export GIT_TERMINAL_PROMPT=0 LC_ALL=C\n\
         dir={dir}; partial=\"$dir.partial\"; repo={repo}; b={branch}\n\
         [ -d \"$dir\" ] && exit 0\n\
         mkdir -p {workdir} || exit 1\n\
         rm -rf -- \"$partial\" || exit 1\n\
         git ls-remote --exit-code --heads -- \"$repo\" \"refs/heads/$b\" >/dev/null; found=$?\n\
         if [ $found -eq 0 ]; then\n\
           git clone -q --branch \"$b\" -- \"$repo\" \"$partial\" || exit 1\n\
         elif [ $found -eq 2 ]; then\n\
           git clone -q -- \"$repo\" \"$partial\" || exit 1\n\
           cd \"$partial\" || exit 1\n\
           if git rev-parse -q --verify 'HEAD^{{commit}}' >/dev/null; then\n\
             git checkout -q -b \"$b\" || exit 1\n\
           else\n\
             git symbolic-ref HEAD \"refs/heads/$b\" || exit 1\n\
           fi\n\
           git config \"branch.$b.remote\" origin && git config \"branch.$b.merge\" \"refs/heads/$b\" || exit 1\n\
           cd / || exit 1\n\
         else\n\
           exit 1\n\
         fi\n\
         mv -- \"$partial\" \"$dir\"\n",
        repo = quote(repo),
        branch = quote(branch),
        workdir = quote(&sftp::text(workdir)),
    )
}

/// The script that stops every process carrying `marker` (found in `/proc/*/environ`),
/// with the grace of [`stop_script`], and prints how many it signalled. A [`Marked::Prefix`]
/// finds every marker that starts so.
fn release_script(marker: Marked<'_>) -> String {
    let polls = STOP_GRACE.as_millis() / 100;
    let test = match marker {
        Marked::Exactly(marker) => {
            format!("grep -qxF -- {}", quote(&format!("{MARKER_VAR}={marker}")))
        }
        // A prefix is made of `[A-Za-z0-9-]` (see `local::marker_prefix`): no character
        // of it means anything to a regular expression.
        Marked::Prefix(prefix) => {
            format!("grep -q -- {}", quote(&format!("^{MARKER_VAR}={prefix}")))
        }
    };
    format!(
        "me=$$\n\
         found() {{ for d in /proc/[0-9]*; do p=${{d#/proc/}}; [ \"$p\" = \"$me\" ] && continue; \
         tr '\\0' '\\n' < \"$d/environ\" 2>/dev/null | {test} && echo \"$p\"; done; }}\n\
         first=$(found)\n\
         [ -z \"$first\" ] && {{ echo 0; exit 0; }}\n\
         kill -TERM $first 2>/dev/null\n\
         i=0\n\
         while [ $i -lt {polls} ] && [ -n \"$(found)\" ]; do sleep 0.1; i=$((i+1)); done\n\
         left=$(found)\n\
         [ -n \"$left\" ] && kill -KILL $left 2>/dev/null\n\
         echo $first | wc -w\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_workspace_judges_paths_without_this_hosts_disk() {
        let ws = Workspace::elsewhere("/nowhere/on/this/host/ws");
        assert_eq!(
            ws.resolve("a/./b/../c").unwrap(),
            Path::new("/nowhere/on/this/host/ws/a/c")
        );
        for outside in ["../x", "/etc/passwd", "~/x", ""] {
            assert!(
                matches!(
                    ws.resolve(outside),
                    Err(ComputerError::OutsideWorkspace { .. })
                ),
                "{outside}"
            );
        }
        assert!(matches!(
            ws.resolve_for_write("x/../.git/config"),
            Err(ComputerError::GitDir { .. })
        ));
        assert!(!ws.on_this_host());
    }

    #[test]
    fn variable_names_are_checked_before_they_reach_a_shell() {
        for good in ["A", "_x", "GIT_DIR", "a1"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "$(x)"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_group_line_is_taken_out_of_stderr() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let pgid = Arc::new(Mutex::new(None));
        let mut stderr = Stderr {
            stream: Stream::new(Output::Stderr),
            head: Some(Vec::new()),
            pgid: pgid.clone(),
        };
        stderr.push(b"proto-process-", Some(&sender));
        stderr.push(b"group:4242\nwarn", Some(&sender));
        stderr.push(b"ing\n", Some(&sender));
        assert_eq!(*pgid.lock().unwrap(), Some(4242));
        assert_eq!(stderr.finish(Some(&sender)), "warning\n");
        let mut seen = String::new();
        while let Ok(Output::Stderr(text)) = receiver.try_recv() {
            seen.push_str(&text);
        }
        assert_eq!(seen, "warning\n");
    }

    #[test]
    fn a_stream_forwards_whole_characters() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        let mut stream = Stream::new(Output::Stdout);
        let e = "é".as_bytes();
        stream.push(&[b'a', e[0]], Some(&sender));
        stream.push(&e[1..], Some(&sender));
        assert_eq!(receiver.try_recv().ok(), Some(Output::Stdout("a".into())));
        assert_eq!(receiver.try_recv().ok(), Some(Output::Stdout("é".into())));
        assert_eq!(stream.finish(Some(&sender)), "aé");
    }
}
