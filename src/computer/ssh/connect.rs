//! The connection to an SSH computer: where it is ([`Target`], made from the YAML's `ssh:`),
//! the host key check against `known_hosts`, authentication by a key file or the SSH agent,
//! and the one pooled connection ([`Pool`]) every command and file access of the computer
//! shares, made again when it drops.
//!
//! Host keys are checked strictly, as OpenSSH's `StrictHostKeyChecking yes`: a key the file
//! does not hold, or one that differs from the one it holds, refuses the computer. Only
//! `knownHosts: accept-new` records a host's first key (and only for a host the file knows
//! nothing of: a changed key is refused under every setting).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh_sftp::client::SftpSession;
use thiserror::Error;
use tokio::sync::{Mutex, OnceCell};

use crate::spec::kinds::SshConnection;

/// How long connecting (TCP, key exchange, authentication) or opening a channel may take:
/// an unreachable host gives an error, not a hang.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Keepalives: a connection whose peer stops answering three of them is dropped (and made
/// again by the next command).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_MAX: usize = 3;

/// The `knownHosts` value that records the first key of a host not yet known.
pub const ACCEPT_NEW: &str = "accept-new";

#[derive(Debug, Error)]
pub enum SshError {
    #[error(
        "{host} presented an {algorithm} key not in {} ({fingerprint}); check the fingerprint \
         and add the host's key to that file (ssh-keyscan), or set `knownHosts: accept-new`",
        known_hosts.display()
    )]
    UnknownHostKey {
        host: String,
        algorithm: String,
        fingerprint: String,
        known_hosts: PathBuf,
    },
    #[error(
        "{host} presented an {algorithm} key ({fingerprint}) that differs from the one {} holds \
         for it: the host was reinstalled or someone is in the middle; remove the old key \
         (ssh-keygen -R) once you know which",
        known_hosts.display()
    )]
    ChangedHostKey {
        host: String,
        algorithm: String,
        fingerprint: String,
        known_hosts: PathBuf,
    },
    #[error("{}: {detail}", path.display())]
    KnownHosts { path: PathBuf, detail: String },
    #[error("{}: cannot load the identity: {detail}", path.display())]
    Identity { path: PathBuf, detail: String },
    #[error("cannot connect to {host}: {detail}")]
    Connect { host: String, detail: String },
    #[error("{host} refused {user}'s {method}")]
    Auth {
        host: String,
        user: String,
        method: String,
    },
    #[error("{host}: {detail}")]
    Channel { host: String, detail: String },
    #[error("{host}: sftp: {detail}")]
    Sftp { host: String, detail: String },
}

/// How a host's key is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKeys {
    /// Only keys already in the file are accepted.
    Strict,
    /// The first key of a host the file does not know is recorded and accepted.
    AcceptNew,
}

/// How the computer logs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Login {
    /// A private key file (OpenSSH format, without a passphrase).
    KeyFile(PathBuf),
    /// The keys of the SSH agent at this socket.
    Agent(PathBuf),
}

/// Where an SSH computer is and how it is reached, with every default applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub login: Login,
    pub known_hosts: PathBuf,
    pub host_keys: HostKeys,
    pub connect_timeout: Duration,
}

impl Target {
    /// The target the YAML's `ssh:` declares: port 22, the controller's user, the key in
    /// `identityFile` (or the agent at `SSH_AUTH_SOCK`, or `~/.ssh/id_ed25519`), and
    /// `~/.ssh/known_hosts` unless `knownHosts` names another file.
    pub fn from_spec(ssh: &SshConnection) -> Target {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let expand = |path: &str| match (path.strip_prefix("~/"), &home) {
            (Some(rest), Some(home)) => home.join(rest),
            _ => PathBuf::from(path),
        };
        let default_known = expand("~/.ssh/known_hosts");
        let (known_hosts, host_keys) = match ssh.known_hosts.as_deref() {
            Some(ACCEPT_NEW) => (default_known, HostKeys::AcceptNew),
            Some(path) => (expand(path), HostKeys::Strict),
            None => (default_known, HostKeys::Strict),
        };
        let login = match (&ssh.identity_file, std::env::var_os("SSH_AUTH_SOCK")) {
            (Some(file), _) => Login::KeyFile(expand(file)),
            (None, Some(socket)) if !socket.is_empty() => Login::Agent(PathBuf::from(socket)),
            (None, _) => Login::KeyFile(expand("~/.ssh/id_ed25519")),
        };
        Target {
            host: ssh.host.clone(),
            port: ssh.port.unwrap_or(22),
            user: ssh.user.clone().unwrap_or_else(controller_user),
            login,
            known_hosts,
            host_keys,
            connect_timeout: CONNECT_TIMEOUT,
        }
    }

    /// `host:port`, as messages name the computer.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The name of the user the controller runs as (`ssh`'s default too).
fn controller_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            let user = nix::unistd::User::from_uid(nix::unistd::getuid());
            user.ok().flatten().map(|u| u.name)
        })
        .unwrap_or_else(|| "root".into())
}

/// The one connection of a computer, shared by its commands and file accesses.
pub struct Pool {
    target: Target,
    link: Mutex<Option<Arc<Link>>>,
}

/// A live connection and, once asked for, its SFTP session.
pub struct Link {
    handle: Handle<Verifier>,
    sftp: OnceCell<Arc<SftpSession>>,
    address: String,
}

impl Pool {
    pub fn new(target: Target) -> Self {
        Pool {
            target,
            link: Mutex::new(None),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The live connection, made (again) when there is none or it dropped.
    pub async fn link(&self) -> Result<Arc<Link>, SshError> {
        let mut slot = self.link.lock().await;
        if let Some(link) = slot.as_ref()
            && !link.handle.is_closed()
        {
            return Ok(link.clone());
        }
        *slot = None;
        let link = Arc::new(connect(&self.target).await?);
        *slot = Some(link.clone());
        Ok(link)
    }

    /// A session channel running `command` on the pooled connection. A connection found
    /// closed when the channel is refused (its peer went away since it was last used) is
    /// made again, once.
    pub async fn exec(
        &self,
        command: &str,
    ) -> Result<(Arc<Link>, russh::Channel<client::Msg>), SshError> {
        let link = self.link().await?;
        match link.exec(command).await {
            Ok(channel) => Ok((link, channel)),
            Err(e) if !link.handle.is_closed() => Err(e),
            Err(_) => {
                {
                    let mut slot = self.link.lock().await;
                    if slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, &link)) {
                        *slot = None;
                    }
                }
                let link = self.link().await?;
                let channel = link.exec(command).await?;
                Ok((link, channel))
            }
        }
    }
}

impl Link {
    /// A session channel running `command` (by the login shell of the remote user).
    pub async fn exec(&self, command: &str) -> Result<russh::Channel<client::Msg>, SshError> {
        let opened = async {
            let channel = self.handle.channel_open_session().await?;
            channel.exec(true, command.as_bytes()).await?;
            Ok::<_, russh::Error>(channel)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, opened).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => Err(self.channel_error(format!("cannot start a command: {e}"))),
            Err(_) => Err(self.channel_error(format!(
                "no answer to a command within {}s",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The connection's SFTP session, opened on first use.
    pub async fn sftp(&self) -> Result<Arc<SftpSession>, SshError> {
        self.sftp
            .get_or_try_init(|| async {
                let opened = async {
                    let channel = self
                        .handle
                        .channel_open_session()
                        .await
                        .map_err(|e| e.to_string())?;
                    channel
                        .request_subsystem(true, "sftp")
                        .await
                        .map_err(|e| e.to_string())?;
                    SftpSession::new(channel.into_stream())
                        .await
                        .map_err(|e| e.to_string())
                };
                match tokio::time::timeout(CONNECT_TIMEOUT, opened).await {
                    Ok(Ok(session)) => Ok(Arc::new(session)),
                    Ok(Err(detail)) => Err(SshError::Sftp {
                        host: self.address.clone(),
                        detail,
                    }),
                    Err(_) => Err(SshError::Sftp {
                        host: self.address.clone(),
                        detail: "the subsystem did not start".into(),
                    }),
                }
            })
            .await
            .cloned()
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn channel_error(&self, detail: String) -> SshError {
        SshError::Channel {
            host: self.address.clone(),
            detail,
        }
    }
}

/// Connects, checks the host key and logs in, all within the target's timeout.
async fn connect(target: &Target) -> Result<Link, SshError> {
    let address = target.address();
    let connect_error = |detail: String| SshError::Connect {
        host: address.clone(),
        detail,
    };
    match tokio::time::timeout(target.connect_timeout, handshake(target)).await {
        Ok(Ok(handle)) => Ok(Link {
            handle,
            sftp: OnceCell::new(),
            address: address.clone(),
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(connect_error(format!(
            "no answer within {}s",
            target.connect_timeout.as_secs()
        ))),
    }
}

async fn handshake(target: &Target) -> Result<Handle<Verifier>, SshError> {
    let address = target.address();
    let config = Arc::new(client::Config {
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        inactivity_timeout: None,
        // Commands are small messages back and forth: Nagle's algorithm would hold each
        // behind the peer's delayed acknowledgement.
        nodelay: true,
        ..client::Config::default()
    });
    let verifier = Verifier {
        host: target.host.clone(),
        port: target.port,
        known_hosts: target.known_hosts.clone(),
        host_keys: target.host_keys,
    };
    let mut handle = client::connect(config, (target.host.as_str(), target.port), verifier)
        .await
        .map_err(|e| match e {
            Refusal::Key(e) => e,
            Refusal::Ssh(e) => SshError::Connect {
                host: address.clone(),
                detail: e.to_string(),
            },
        })?;
    let refused = |method: &str| SshError::Auth {
        host: address.clone(),
        user: target.user.clone(),
        method: method.to_string(),
    };
    let ssh_error = |e: russh::Error| SshError::Connect {
        host: address.clone(),
        detail: e.to_string(),
    };
    match &target.login {
        Login::KeyFile(path) => {
            let key = load_key(path).await?;
            let hash = handle.best_supported_rsa_hash().await.map_err(ssh_error)?;
            let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash.flatten());
            let result = handle
                .authenticate_publickey(&target.user, key)
                .await
                .map_err(ssh_error)?;
            if !result.success() {
                return Err(refused(&format!("key {}", path.display())));
            }
        }
        Login::Agent(socket) => {
            let mut agent = russh::keys::agent::client::AgentClient::connect_uds(socket)
                .await
                .map_err(|e| SshError::Identity {
                    path: socket.clone(),
                    detail: format!("the SSH agent: {e}"),
                })?;
            let identities = agent
                .request_identities()
                .await
                .map_err(|e| SshError::Identity {
                    path: socket.clone(),
                    detail: format!("the SSH agent: {e}"),
                })?;
            let hash = handle.best_supported_rsa_hash().await.map_err(ssh_error)?;
            let mut accepted = false;
            for identity in identities {
                let key = identity.public_key().into_owned();
                let result = handle
                    .authenticate_publickey_with(&target.user, key, hash.flatten(), &mut agent)
                    .await;
                if result.is_ok_and(|r| r.success()) {
                    accepted = true;
                    break;
                }
            }
            if !accepted {
                return Err(refused("agent keys"));
            }
        }
    }
    Ok(handle)
}

/// A private key file, read off the async threads.
async fn load_key(path: &Path) -> Result<russh::keys::PrivateKey, SshError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || russh::keys::load_secret_key(&owned, None))
        .await
        .map_err(|e| SshError::Identity {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?
        .map_err(|e| SshError::Identity {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
}

/// Why a handshake stopped: the host key check's own refusal, or the protocol's error.
#[derive(Debug)]
enum Refusal {
    Key(SshError),
    Ssh(russh::Error),
}

impl From<russh::Error> for Refusal {
    fn from(e: russh::Error) -> Self {
        Refusal::Ssh(e)
    }
}

/// Checks the server's key against `known_hosts`.
struct Verifier {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    host_keys: HostKeys,
}

impl client::Handler for Verifier {
    type Error = Refusal;

    async fn check_server_key(
        &mut self,
        server_public_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match server_public_key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key,
            // Host certificates need a `@cert-authority` line, which is not supported.
            russh::keys::PublicKeyOrCertificate::Certificate(cert) => {
                return Err(Refusal::Key(SshError::KnownHosts {
                    path: self.known_hosts.clone(),
                    detail: format!(
                        "{}:{} presented a host certificate ({}); only plain host keys are \
                         checked",
                        self.host,
                        self.port,
                        cert.algorithm()
                    ),
                }));
            }
        };
        verify(
            &self.host,
            self.port,
            key,
            &self.known_hosts,
            self.host_keys,
        )
        .map(|()| true)
        .map_err(Refusal::Key)
    }
}

/// Whether `key` is the known key of `host:port` in `known_hosts` (recording it first under
/// [`HostKeys::AcceptNew`] when the file knows no key of the host at all).
pub fn verify(
    host: &str,
    port: u16,
    key: &PublicKey,
    known_hosts: &Path,
    host_keys: HostKeys,
) -> Result<(), SshError> {
    let address = format!("{host}:{port}");
    let algorithm = key.algorithm().as_str().to_string();
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let file_error = |detail: String| SshError::KnownHosts {
        path: known_hosts.to_path_buf(),
        detail,
    };
    match russh::keys::check_known_hosts_path(host, port, key, known_hosts) {
        Ok(true) => Ok(()),
        // The line russh names skips comment lines, so it is not repeated here.
        Err(russh::keys::Error::KeyChanged { .. }) => Err(SshError::ChangedHostKey {
            host: address,
            algorithm,
            fingerprint,
            known_hosts: known_hosts.to_path_buf(),
        }),
        Err(e) => Err(file_error(e.to_string())),
        Ok(false) => {
            let known = russh::keys::known_hosts::known_host_keys_path(host, port, known_hosts)
                .map_err(|e| file_error(e.to_string()))?;
            // A host known by a key of another kind is not new: its key is not taken on
            // trust even under `accept-new`.
            if host_keys == HostKeys::AcceptNew && known.is_empty() {
                russh::keys::known_hosts::learn_known_hosts_path(host, port, key, known_hosts)
                    .map_err(|e| file_error(format!("cannot record {address}'s key: {e}")))?;
                tracing::info!(host = %address, %fingerprint, "recorded a new host key");
                return Ok(());
            }
            Err(SshError::UnknownHostKey {
                host: address,
                algorithm,
                fingerprint,
                known_hosts: known_hosts.to_path_buf(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(known_hosts: Option<&str>) -> SshConnection {
        SshConnection {
            host: "build-1".into(),
            port: None,
            user: Some("ci".into()),
            identity_file: Some("/keys/ci".into()),
            known_hosts: known_hosts.map(str::to_owned),
        }
    }

    #[test]
    fn a_target_takes_the_declared_fields_and_the_defaults() {
        let target = Target::from_spec(&spec(Some("/etc/proto/known_hosts")));
        assert_eq!(target.address(), "build-1:22");
        assert_eq!(target.user, "ci");
        assert_eq!(target.login, Login::KeyFile(PathBuf::from("/keys/ci")));
        assert_eq!(target.known_hosts, PathBuf::from("/etc/proto/known_hosts"));
        assert_eq!(target.host_keys, HostKeys::Strict);
        assert_eq!(Target::from_spec(&spec(None)).host_keys, HostKeys::Strict);
        let accepting = Target::from_spec(&spec(Some(ACCEPT_NEW)));
        assert_eq!(accepting.host_keys, HostKeys::AcceptNew);
        // `accept-new` is a policy, never a file name.
        assert!(accepting.known_hosts.ends_with(".ssh/known_hosts"));
    }
}
