//! A private OpenSSH server for tests and benchmarks: `sshd` on a free port of 127.0.0.1,
//! with its own host key and an authorized client key, killed when dropped. It may run in
//! a mount namespace of its own with a fresh `tmpfs` over a folder, so that the files a
//! remote computer sees there are not this host's.

#![allow(dead_code)] // each user takes what it needs

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proto::computer::Ssh;
use proto::computer::ssh::{HostKeys, Login, Target};

/// A bound on every wait, far above what each step takes.
const PATIENCE: Duration = Duration::from_secs(30);

/// A private OpenSSH server, killed when dropped.
pub struct Sshd {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl Sshd {
    pub fn start() -> Sshd {
        Sshd::start_in(None)
    }

    /// A server whose sessions see an empty `tmpfs` over `hidden` (a mount namespace of
    /// its own): what they write there, this host does not see, and the other way round.
    pub fn start_hiding(hidden: &Path) -> Sshd {
        let hidden = hidden.display().to_string().replace('\'', r"'\''");
        Sshd::start_in(Some(format!("mount -t tmpfs proto-remote '{hidden}'")))
    }

    /// A server whose sessions' shell reads no `~/.bashrc` (an empty file is mounted over
    /// it, in a mount namespace of its own): Debian's bash reads it for every command sshd
    /// starts, so what it runs (a version manager's setup, say) would be timed as SSH.
    pub fn start_plain_shell() -> Sshd {
        let bashrc = format!("{}/.bashrc", std::env::var("HOME").unwrap_or_default());
        Sshd::start_in(Some(format!(
            "if [ -f '{bashrc}' ]; then mount --bind /dev/null '{bashrc}'; fi"
        )))
    }

    /// A server; `setup`, when given, runs first in a mount namespace of the server's own.
    fn start_in(setup: Option<String>) -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for key in ["hostkey", "clientkey"] {
            keygen(&d.join(key));
        }
        std::fs::copy(d.join("clientkey.pub"), d.join("authorized_keys")).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let port = free_port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/hostkey\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\n\
                 Subsystem sftp internal-sftp\n",
                d = d.display()
            ),
        )
        .unwrap();
        // `-D`: in the foreground, so this handle's kill stops the listener.
        let mut command = match setup {
            None => Command::new("/usr/sbin/sshd"),
            Some(setup) => {
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg(format!("{setup} && exec /usr/sbin/sshd \"$@\""))
                    .arg("sshd");
                c
            }
        };
        let child = command
            .arg("-D")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd starts (apt-get install openssh-server)");
        let sshd = Sshd { child, dir, port };
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        sshd
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A known_hosts file holding this server's key.
    pub fn known_hosts(&self) -> PathBuf {
        let path = self.path("known_hosts");
        let key = std::fs::read_to_string(self.path("hostkey.pub")).unwrap();
        let key: Vec<&str> = key.split_whitespace().take(2).collect();
        std::fs::write(
            &path,
            format!("[127.0.0.1]:{} {}\n", self.port, key.join(" ")),
        )
        .unwrap();
        path
    }

    pub fn target(&self, known_hosts: PathBuf, host_keys: HostKeys) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port: self.port,
            user: whoami(),
            login: Login::KeyFile(self.path("clientkey")),
            known_hosts,
            host_keys,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The computer, trusting this server's key, keeping workspaces in `workdir`.
    pub fn computer(&self, workdir: &Path) -> Ssh {
        Ssh::new(
            "remote",
            self.target(self.known_hosts(), HostKeys::Strict),
            Some(workdir.display().to_string()),
        )
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILL to every `sshd` of this server: the processes serving its sessions, then the
    /// listener (what a crashed or unplugged host looks like to a client: no goodbye).
    ///
    /// Everything is frozen (SIGSTOP) before anything dies: a client that sees its session
    /// end reconnects at once, and a listener still accepting would fork a session that
    /// outlives the kill, so the host would seem to answer after all.
    pub fn kill_all(&mut self) {
        use nix::sys::signal::{Signal, kill};
        let signal = |pid: i32, signal| {
            let _ = kill(nix::unistd::Pid::from_raw(pid), signal);
        };
        let listener = self.child.id() as i32;
        signal(listener, Signal::SIGSTOP);
        let mut frozen: Vec<i32> = Vec::new();
        loop {
            let found: Vec<i32> = descendants(self.child.id())
                .into_iter()
                .filter(|pid| !frozen.contains(pid))
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .unwrap_or_default()
                        .starts_with("sshd")
                })
                .collect();
            if found.is_empty() {
                break;
            }
            for pid in found {
                signal(pid, Signal::SIGSTOP);
                frozen.push(pid);
            }
        }
        for pid in frozen {
            signal(pid, Signal::SIGKILL);
        }
        self.kill();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The processes descended from `ancestor` (Linux `/proc`).
pub fn descendants(ancestor: u32) -> Vec<i32> {
    let parent_of = |pid: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let all: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    all.into_iter()
        .filter(|pid| {
            let mut p = *pid;
            for _ in 0..64 {
                match parent_of(p) {
                    Some(parent) if parent == ancestor as i32 => return true,
                    Some(parent) if parent > 1 => p = parent,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}
