//! The display of an SSH computer (capability `gui` and a `display`): screenshots and input
//! go to one `proto worker --stdio` per computer (see [`crate::computer::worker`]), started
//! on the remote with [`Computer::attach`](crate::computer::Computer::attach) the first time
//! the display is used, and again whenever it ended.
//!
//! The worker is the controller's own binary, so the two always speak the same protocol. It
//! is kept on the remote as `~/.cache/proto/proto-<first 16 hex digits of its SHA-256>`:
//! copied over SFTP only when no file of that name is there (under a temporary name, made
//! executable, then renamed into place, so a half-copied file is never run), and its `hello`
//! must name the whole hash, so a file of that name with other content is replaced. Copies
//! of other versions are removed once they are a week old.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, OnceCell};

use super::{SCRIPT_TIMEOUT, Ssh, SshError, collect, sftp};
use crate::computer::desktop::{Input, Region, Screenshot};
use crate::computer::worker::{self, Answer, Op, Reply, Request, Response};
use crate::computer::{AttachRequest, ComputerError, Origin, Process};
use crate::tools::shell_quote as quote;

/// How long a worker may take to answer one request (a screenshot of a large screen
/// included), and to answer its first `hello` (it hashes its own binary).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// How long copying the binary may take.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// How much of the binary is read at once while it is copied.
const COPY_BUFFER: usize = 256 * 1024;

/// The folder of the remote user's home that keeps the worker binaries.
const CACHE: &str = ".cache/proto";

/// The display of an SSH computer, driven through a worker on the remote.
pub struct RemoteDesktop {
    display: String,
    /// The binary run on the remote (the controller's own executable).
    binary: PathBuf,
    /// Its SHA-256, computed on first use.
    sha256: OnceCell<String>,
    /// The marker the worker runs under: the computer's, not a task's, so that releasing a
    /// task's processes leaves the shared worker running.
    marker: String,
    worker: Mutex<Option<Worker>>,
    uploads: AtomicUsize,
}

/// A running worker.
struct Worker {
    stdin: Pin<Box<dyn AsyncWrite + Send>>,
    stdout: BufReader<Pin<Box<dyn AsyncRead + Send>>>,
    process: Process,
    next: u64,
}

impl RemoteDesktop {
    pub fn new(display: String, binary: PathBuf, marker: String) -> Self {
        RemoteDesktop {
            display,
            binary,
            sha256: OnceCell::new(),
            marker,
            worker: Mutex::new(None),
            uploads: AtomicUsize::new(0),
        }
    }

    pub fn display(&self) -> &str {
        &self.display
    }

    /// How many times this desktop copied the worker binary to the remote.
    pub fn uploads(&self) -> usize {
        self.uploads.load(Ordering::SeqCst)
    }

    pub async fn screenshot(
        &self,
        ssh: &Ssh,
        region: Option<Region>,
    ) -> Result<Screenshot, ComputerError> {
        let answer = self.ask(ssh, Op::Screenshot { region }).await?;
        answer
            .into_screenshot()
            .map_err(|detail| self.broken(ssh, detail))
    }

    pub async fn input(&self, ssh: &Ssh, input: Input) -> Result<(), ComputerError> {
        match self.ask(ssh, Op::Input { input }).await? {
            Answer::Input {} => Ok(()),
            other => Err(self.broken(ssh, format!("input was answered with {other:?}"))),
        }
    }

    /// Asks the worker, started first if there is none or it ended. A worker that fails to
    /// answer is dropped (its group stopped); the next request starts another. The request
    /// itself is not sent again: an input may have had its effect.
    async fn ask(&self, ssh: &Ssh, op: Op) -> Result<Answer, ComputerError> {
        let mut slot = self.worker.lock().await;
        if slot.as_ref().is_some_and(|w| !w.process.running()) {
            *slot = None;
        }
        let worker = match slot.as_mut() {
            Some(worker) => worker,
            None => slot.insert(self.start(ssh).await?),
        };
        match worker.ask(op).await {
            Ok(Reply::Ok(answer)) => Ok(answer),
            Ok(Reply::Error(failure)) => Err(failure.into_desktop_error(&self.display).into()),
            Err(detail) => {
                let stderr = worker.process.stderr();
                *slot = None;
                Err(self.broken(ssh, with_stderr(detail, &stderr)))
            }
        }
    }

    fn broken(&self, ssh: &Ssh, detail: String) -> ComputerError {
        SshError::Channel {
            host: ssh.target().address(),
            detail: format!("the desktop worker for {}: {detail}", self.display),
        }
        .into()
    }

    /// A worker that said `hello` with the binary's hash: the copy on the remote, sent
    /// first when there is none, or sent again when the one there is not this binary.
    async fn start(&self, ssh: &Ssh) -> Result<Worker, ComputerError> {
        let sha256 = self.sha256().await?;
        let (path, present) = self.locate(ssh, sha256).await?;
        if !present {
            self.upload(ssh, &path).await?;
        }
        let mut worker = self.spawn(ssh, &path).await?;
        let said = worker.hello().await;
        match said {
            Ok(said) if said == *sha256 => return Ok(worker),
            Ok(said) if present => {
                tracing::warn!(
                    computer = ssh.name.as_str(),
                    path = %path,
                    found = %said,
                    "the worker binary on the remote is not this one; sending it again"
                );
            }
            Ok(said) => {
                return Err(
                    self.broken(ssh, format!("{path} says its hash is {said}, not {sha256}"))
                );
            }
            Err(detail) if present => {
                tracing::warn!(
                    computer = ssh.name.as_str(),
                    path = %path,
                    "the worker binary on the remote does not start ({detail}); sending it again"
                );
            }
            Err(detail) => {
                let stderr = worker.process.stderr();
                return Err(self.broken(ssh, with_stderr(detail, &stderr)));
            }
        }
        drop(worker);
        self.upload(ssh, &path).await?;
        let mut worker = self.spawn(ssh, &path).await?;
        match worker.hello().await {
            Ok(said) if said == *sha256 => Ok(worker),
            Ok(said) => {
                Err(self.broken(ssh, format!("{path} says its hash is {said}, not {sha256}")))
            }
            Err(detail) => {
                let stderr = worker.process.stderr();
                Err(self.broken(ssh, with_stderr(detail, &stderr)))
            }
        }
    }

    async fn sha256(&self) -> Result<&String, ComputerError> {
        self.sha256
            .get_or_try_init(|| async {
                let binary = self.binary.clone();
                let io = |source| ComputerError::Io {
                    path: self.binary.display().to_string(),
                    source,
                };
                tokio::task::spawn_blocking(move || worker::file_sha256(&binary))
                    .await
                    .map_err(|e| io(std::io::Error::other(e.to_string())))?
                    .map_err(io)
            })
            .await
    }

    /// Where the binary lives on the remote (its folder made), and whether it is there.
    async fn locate(&self, ssh: &Ssh, sha256: &str) -> Result<(String, bool), ComputerError> {
        let name = format!("proto-{}", &sha256[..16.min(sha256.len())]);
        let script = format!(
            "d=\"$HOME\"/{CACHE}; f=\"$d\"/{name}\n\
             mkdir -p \"$d\" || exit 1\n\
             printf '%s\\n' \"$f\"\n\
             if [ -x \"$f\" ]; then echo present; else echo absent; fi\n"
        );
        let (code, stdout, stderr) = collect(&ssh.pool, &script, None, SCRIPT_TIMEOUT).await?;
        let mut lines = stdout.lines();
        match (code, lines.next(), lines.next()) {
            (Some(0), Some(path), Some(state)) => Ok((path.to_string(), state == "present")),
            _ => Err(ComputerError::Workspace(format!(
                "making ~/{CACHE} on {}: {}",
                ssh.target().address(),
                stderr.trim()
            ))),
        }
    }

    /// Copies the binary to `path` on the remote: to a temporary name, made executable, then
    /// renamed into place.
    async fn upload(&self, ssh: &Ssh, path: &str) -> Result<(), ComputerError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let partial = format!("{path}.partial-{}-{nanos}", std::process::id());
        let link = ssh.pool.link().await?;
        let session = link.sftp().await?;
        let copy = async {
            let local = tokio::fs::File::open(&self.binary)
                .await
                .map_err(|source| ComputerError::Io {
                    path: self.binary.display().to_string(),
                    source,
                })?;
            // Large reads, so SFTP sends large writes, several at once.
            let mut local = BufReader::with_capacity(COPY_BUFFER, local);
            let mut remote = session
                .create(partial.clone())
                .await
                .map_err(|e| sftp::io_error(&partial, e))?;
            let sent = async {
                tokio::io::copy_buf(&mut local, &mut remote).await?;
                remote.shutdown().await
            };
            sent.await.map_err(|source| ComputerError::Io {
                path: partial.clone(),
                source,
            })
        };
        let copied = match tokio::time::timeout(UPLOAD_TIMEOUT, copy).await {
            Ok(copied) => copied,
            Err(_) => Err(SshError::Sftp {
                host: ssh.target().address(),
                detail: format!(
                    "copying {} took longer than {}s",
                    self.binary.display(),
                    UPLOAD_TIMEOUT.as_secs()
                ),
            }
            .into()),
        };
        let keep = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let script = match &copied {
            Ok(()) => format!(
                "chmod 755 {partial} && mv -f {partial} {path} || exit 1\n\
                 find \"$HOME\"/{CACHE} -maxdepth 1 -name 'proto-*' ! -name {keep} -mtime +7 \
                 -exec rm -f {{}} + 2>/dev/null\n\
                 exit 0\n",
                partial = quote(&partial),
                path = quote(path),
                keep = quote(&keep),
            ),
            Err(_) => format!("rm -f {}\n", quote(&partial)),
        };
        let (code, _, stderr) = collect(&ssh.pool, &script, None, SCRIPT_TIMEOUT).await?;
        copied?;
        if code != Some(0) {
            return Err(ComputerError::Workspace(format!(
                "installing {path} on {}: {}",
                ssh.target().address(),
                stderr.trim()
            )));
        }
        self.uploads.fetch_add(1, Ordering::SeqCst);
        tracing::info!(
            computer = ssh.name.as_str(),
            path,
            "copied the desktop worker to the remote"
        );
        Ok(())
    }

    async fn spawn(&self, ssh: &Ssh, path: &str) -> Result<Worker, ComputerError> {
        let request = AttachRequest {
            program: path.to_string(),
            args: vec![
                "worker".into(),
                "--stdio".into(),
                "--display".into(),
                self.display.clone(),
            ],
            env: Default::default(),
            origin: Origin::Controller,
        };
        let attached = super::attach::attach(ssh, None, &request, &self.marker).await?;
        Ok(Worker {
            stdin: attached.stdin,
            stdout: BufReader::new(attached.stdout),
            process: attached.process,
            next: 1,
        })
    }
}

impl Worker {
    /// The hash `hello` names.
    async fn hello(&mut self) -> Result<String, String> {
        match self.ask(Op::Hello).await? {
            Reply::Ok(Answer::Hello { version, sha256 }) => {
                tracing::debug!(version, "the desktop worker said hello");
                Ok(sha256)
            }
            Reply::Ok(other) => Err(format!("hello was answered with {other:?}")),
            Reply::Error(failure) => Err(failure.message),
        }
    }

    /// Sends one request and reads its answer; `Err` when the worker did not answer it.
    async fn ask(&mut self, op: Op) -> Result<Reply, String> {
        let id = self.next;
        self.next += 1;
        let mut line = serde_json::to_vec(&Request { id, op }).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let exchange = async {
            self.stdin.write_all(&line).await?;
            self.stdin.flush().await?;
            let mut answer = String::new();
            loop {
                answer.clear();
                if self.stdout.read_line(&mut answer).await? == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "it ended",
                    ));
                }
                let response: Response = serde_json::from_str(&answer).map_err(|e| {
                    std::io::Error::other(format!("an answer that is not one: {e}"))
                })?;
                // Answers to requests given up on (timed out) are skipped.
                if response.id == Some(id) {
                    return Ok(response.reply);
                }
                if let (None, Reply::Error(failure)) = (response.id, &response.reply) {
                    return Err(std::io::Error::other(format!(
                        "it refused a request: {}",
                        failure.message
                    )));
                }
            }
        };
        match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {}s", ANSWER_TIMEOUT.as_secs())),
        }
    }
}

fn with_stderr(detail: String, stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        detail
    } else {
        let tail: String = {
            let chars: Vec<char> = stderr.chars().collect();
            chars[chars.len().saturating_sub(500)..].iter().collect()
        };
        format!("{detail}; its stderr ends: {tail}")
    }
}
