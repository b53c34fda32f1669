//! [`Computer::attach`](crate::computer::Computer::attach) on an SSH computer: the process
//! runs under the same wrapper as a command (in the workspace, with its variables and the
//! computer's marker, in a session of its own whose group id is the first line of its
//! standard error), on an exec channel of the pooled connection. The writer handed back
//! sends the channel's data; a task reads the channel, passing standard output on to the
//! reader handed back and keeping the end of standard error. Dropping the process stops its
//! group on the remote, as a cancelled command's group is stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use russh::ChannelMsg;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::connect::CONNECT_TIMEOUT;
use super::{Group, Pool, Ssh, SshError, Stderr, Stream, wrapper};
use crate::computer::{AttachRequest, Attached, ComputerError, Life, Output, Process, Workspace};
use crate::tools::shell_quote as quote;

/// How much of the process's output waits for the reader before the channel is no longer
/// read (SSH's flow control then holds the process back).
const PIPE_BYTES: usize = 64 * 1024;

/// Starts `request` on `ssh` with `marker`, in `workspace` or the remote user's home.
pub(super) async fn attach(
    ssh: &Ssh,
    workspace: Option<&Workspace>,
    request: &AttachRequest,
    marker: &str,
) -> Result<Attached, ComputerError> {
    let words: Vec<String> = std::iter::once(&request.program)
        .chain(&request.args)
        .map(|word| quote(word))
        .collect();
    let command = wrapper(
        workspace.map(Workspace::root),
        &format!("exec {}", words.join(" ")),
        &request.env,
        marker,
    )?;
    let (_link, mut channel) = ssh.pool.exec(&command).await?;
    let stdin = channel.make_writer();
    let (stdout, sink) = tokio::io::simplex(PIPE_BYTES);
    let pgid = Arc::new(Mutex::new(None));
    let shared = Arc::new(Shared {
        stderr: Mutex::new(Stderr {
            stream: Stream::new(Output::Stderr),
            head: Some(Vec::new()),
            pgid: pgid.clone(),
        }),
        ended: AtomicBool::new(false),
    });
    // Whether the wrapper's first line named the group, once that line is complete.
    let (started, start) = oneshot::channel::<bool>();
    let pump = {
        let (shared, pgid) = (shared.clone(), pgid.clone());
        tokio::spawn(async move {
            let mut started = Some(started);
            let mut sink = Some(sink);
            while let Some(msg) = channel.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        // A reader that went away only means nobody wants the output now.
                        if let Some(out) = sink.as_mut()
                            && out.write_all(&data).await.is_err()
                        {
                            sink = None;
                        }
                    }
                    ChannelMsg::ExtendedData { data, .. } => {
                        let mut stderr = lock(&shared.stderr);
                        stderr.push(&data, None);
                        if stderr.head.is_none()
                            && let Some(started) = started.take()
                        {
                            let _ = started.send(lock(&stderr.pgid).is_some());
                        }
                    }
                    // The end of the output: the reader sees it.
                    ChannelMsg::Eof => sink = None,
                    ChannelMsg::ExitStatus { .. } | ChannelMsg::ExitSignal { .. } => {
                        // The group's leader ended: its id may name another group by now.
                        // Its streams came before this; the channel's close is not waited for.
                        *lock(&pgid) = None;
                        break;
                    }
                    _ => {}
                }
            }
            shared.ended.store(true, Ordering::SeqCst);
            // `sink`, if still here, drops now: the reader sees the end of the output.
        })
    };
    let running = Remote {
        pool: ssh.pool.clone(),
        pgid,
        shared,
        pump,
    };
    // Until the wrapper names the group, the process is not known to have started (the
    // workspace may be missing), and could not be stopped.
    match tokio::time::timeout(CONNECT_TIMEOUT, start).await {
        Ok(Ok(true)) => {}
        Ok(_) => {
            return Err(ComputerError::Spawn {
                command: request.program.clone(),
                source: std::io::Error::other(format!(
                    "it ended at once: {}",
                    running.stderr().trim()
                )),
            });
        }
        Err(_) => {
            return Err(SshError::Channel {
                host: ssh.target().address(),
                detail: format!(
                    "`{}` did not start within {}s",
                    request.program,
                    CONNECT_TIMEOUT.as_secs()
                ),
            }
            .into());
        }
    }
    Ok(Attached {
        stdin: Box::pin(stdin),
        stdout: Box::pin(stdout),
        process: Process::new(running),
    })
}

/// What the channel's reader shares with the process's handle.
struct Shared {
    stderr: Mutex<Stderr>,
    /// The channel closed: the process ended, or the connection did.
    ended: AtomicBool,
}

/// An attached process on the remote, its group stopped when dropped.
struct Remote {
    pool: Arc<Pool>,
    /// The remote group, from the wrapper's first line; `None` once its leader ended.
    pgid: Arc<Mutex<Option<u32>>>,
    shared: Arc<Shared>,
    pump: JoinHandle<()>,
}

impl Life for Remote {
    fn running(&self) -> bool {
        !self.shared.ended.load(Ordering::SeqCst)
    }

    fn stderr(&self) -> String {
        lock(&self.shared.stderr).text()
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.pump.abort();
        // Stopped over the pool (a new connection if this one dropped), as an abandoned
        // command's group is.
        drop(Group {
            pool: self.pool.clone(),
            pgid: lock(&self.pgid).take(),
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
