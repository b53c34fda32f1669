//! The sandbox of agent commands on this host, as Codex confines its commands on Linux:
//! natively, with Landlock, so a fresh machine needs no extra package and no privilege.
//!
//! A Computer declares `sandbox: read-only | workspace-write | off` (default
//! `workspace-write`) and `network: true|false` (default false). Under a sandbox an agent
//! command (the `Bash` and `Python` tools, a playbook's `run:` step) can:
//! - read and run everything on the host except the controller's state directory, the company
//!   repository and `~/.ssh` (their names can be listed, their files cannot be opened);
//! - write only its workspace (`workspace-write`; `TMPDIR` is a folder inside it that git
//!   ignores) and the harmless devices (`/dev/null`, …); nothing in `read-only`;
//! - not bind or connect TCP sockets (Landlock), open a socket of any family but `AF_UNIX`
//!   (seccomp: UDP, raw, netlink), nor reach abstract unix sockets, unless `network: true`;
//! - not signal any process outside its own sandbox (the controller, other tasks' commands),
//!   nor read the files of any process in `/proc` (the controller's environment holds its
//!   model keys).
//!
//! The controller's own commands are not sandboxed: delivery's git (it pushes to the
//! product's repository), goal checks and hooks are the company's policy, not agent actions.
//!
//! **How it is applied.** The ruleset is built in the parent with the `landlock` crate (which
//! opens every path and adds its rule there), and the child, between `fork` and `exec`, only
//! makes raw system calls on values prepared in the parent: `prctl(PR_SET_NO_NEW_PRIVS)`,
//! `prctl(PR_SET_SECCOMP)` with the network filter, and `landlock_restrict_self` on the
//! ruleset's descriptor. They are async-signal-safe and allocate nothing, which is all a
//! `pre_exec` hook of a multi-threaded process may do; no launcher binary is needed, so the
//! library, its tests and the `proto` binary confine commands the same way.
//!
//! The network is taken away by Landlock and seccomp rather than a network namespace: a
//! namespace needs privilege or unprivileged user namespaces, which hosts often disable.
//!
//! Landlock only ever grants: a denied folder is carved out by granting read on every sibling
//! along its ancestry instead of on `/` ([`readable_roots`]), and the few folders inside a
//! denied one that commands need (their own workspace, which lives in the state directory by
//! default, and the product mirrors its git objects come from) get rules of their own.
//!
//! A kernel without the needed Landlock ABI is an error when a revision declaring a
//! sandboxed computer is applied ([`unsupported`]), never a silent run without the sandbox.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope, path_beneath_rules,
};
use thiserror::Error;

use crate::spec::kinds::SandboxMode;
use crate::spec::{Spec, diag::Diagnostic};

/// The Landlock ABI the sandbox needs: 6 (Linux 6.12), for signal scoping; it brings the
/// file rights of 1–3 and 5 and the TCP rules of 4 with it.
const NEEDED_ABI: i32 = 6;

/// What each Landlock ABI up to [`NEEDED_ABI`] added that the sandbox relies on.
const FEATURES: [(i32, &str); 6] = [
    (1, "file-system rules"),
    (2, "rules on renaming and linking files across folders"),
    (3, "rules on truncating files"),
    (4, "TCP bind and connect rules (network off)"),
    (5, "rules on device ioctls"),
    (6, "signal and abstract unix socket scoping"),
];

/// Devices a command may open for writing whatever its mode: writing them changes nothing.
const DEVICES: [&str; 4] = ["/dev/null", "/dev/zero", "/dev/full", "/dev/tty"];

/// The folder of a workspace that sandboxed commands get as `TMPDIR`.
const TMP: &str = "tmp";

#[derive(Debug, Error)]
pub enum SandboxError {
    #[error("cannot build the sandbox: {0}")]
    Ruleset(#[from] landlock::RulesetError),
    #[error("cannot build the sandbox: {0}")]
    Io(#[from] std::io::Error),
}

/// A computer's sandbox: its mode, its network, and the paths no command may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    pub mode: SandboxMode,
    pub network: bool,
    /// Absolute paths whose files commands may not read (nor write).
    pub denied: Vec<PathBuf>,
    /// Folders inside a denied path that commands may still read (the product mirrors).
    pub readable: Vec<PathBuf>,
}

impl Sandbox {
    /// The sandbox of a computer declared with `mode` and `network`, denying the state
    /// directory, the company repository and `~/.ssh`; `None` when the mode is `off`.
    pub fn new(
        mode: SandboxMode,
        network: bool,
        state_dir: &Path,
        company_repo: &Path,
        mirrors: &Path,
    ) -> Option<Sandbox> {
        if mode == SandboxMode::Off {
            return None;
        }
        let mut denied = vec![absolute(state_dir), absolute(company_repo)];
        if let Some(home) = std::env::var_os("HOME") {
            denied.push(absolute(&PathBuf::from(home).join(".ssh")));
        }
        denied.sort();
        denied.dedup();
        Some(Sandbox {
            mode,
            network,
            denied,
            readable: vec![absolute(mirrors)],
        })
    }

    /// `TMPDIR` for a command in `workspace`, made if missing (`None` in `read-only`, where
    /// nothing is writable). It lies in the tools' scratch folder, which git ignores.
    pub fn tmp_dir(&self, workspace: &Path) -> std::io::Result<Option<PathBuf>> {
        if self.mode != SandboxMode::WorkspaceWrite {
            return Ok(None);
        }
        let scratch = workspace.join(super::workspace::SCRATCH);
        let tmp = scratch.join(TMP);
        std::fs::create_dir_all(&tmp)?;
        let ignore = scratch.join(".gitignore");
        if !ignore.exists() {
            std::fs::write(&ignore, "*\n")?;
        }
        Ok(Some(tmp))
    }

    /// Builds the ruleset for a command working in `workspace` (blocking: it lists folders
    /// and opens every path it grants).
    pub fn prepare(&self, workspace: &Path) -> Result<Prepared, SandboxError> {
        let abi = ABI::V6;
        let mut ruleset = Ruleset::default()
            // Never a partial sandbox: a right the kernel lacks fails here.
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(abi))?
            .scope(Scope::Signal)?;
        if !self.network {
            ruleset = ruleset
                .handle_access(AccessNet::from_all(abi))?
                .scope(Scope::AbstractUnixSocket)?;
        }
        let read = AccessFs::from_read(abi);
        let all = AccessFs::from_all(abi);
        // Paths that cannot be opened (gone, or closed to the controller itself) get no rule
        // (`path_beneath_rules` skips them) and so stay closed to commands.
        let mut denied = self.denied.clone();
        denied.extend(processes());
        let mut readable = readable_roots(&denied, &mut list_folder);
        readable.extend(self.readable.iter().cloned());
        let workspace_access = match self.mode {
            SandboxMode::WorkspaceWrite => all,
            SandboxMode::ReadOnly | SandboxMode::Off => read,
        };
        let created = ruleset
            .create()?
            // Listing is granted everywhere: names are no secret, and `ls /` must work.
            .add_rules(path_beneath_rules(["/"], AccessFs::ReadDir))?
            .add_rules(path_beneath_rules(readable, read))?
            .add_rules(path_beneath_rules(DEVICES, all))?
            .add_rules(path_beneath_rules([workspace], workspace_access))?;
        let fd: Option<OwnedFd> = created.into();
        let fd = fd.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::Unsupported, "Landlock is not enabled")
        })?;
        Ok(Prepared {
            fd,
            filter: (!self.network).then(network_filter),
        })
    }
}

/// A ruleset ready to be applied to a child process, with the seccomp filter that takes the
/// network away when it is off.
pub struct Prepared {
    fd: OwnedFd,
    filter: Option<Vec<libc::sock_filter>>,
}

impl Prepared {
    /// The hook run in the child between `fork` and `exec`: sets `no_new_privs` (which
    /// Landlock and seccomp require of an unprivileged process), installs the network filter
    /// and restricts the process with the ruleset. Async-signal-safe: system calls on values
    /// prepared in the parent, no allocation.
    pub fn hook(&self) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
        let fd = self.fd.as_raw_fd();
        let filter = self.filter.clone();
        move || {
            // SAFETY: plain system calls with integer arguments, or a pointer to the filter
            // this closure owns; the descriptor stays open in the parent (and so in this
            // child) until the spawn has returned.
            unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(filter) = &filter {
                    let program = libc::sock_fprog {
                        len: filter.len() as libc::c_ushort,
                        filter: filter.as_ptr().cast_mut(),
                    };
                    if libc::prctl(
                        libc::PR_SET_SECCOMP,
                        libc::SECCOMP_MODE_FILTER as libc::c_ulong,
                        &program as *const libc::sock_fprog,
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        }
    }
}

/// The seccomp filter of a command without network: a socket of any family but `AF_UNIX`
/// (UDP, raw, netlink, which Landlock's TCP rules do not cover) and `io_uring` (whose
/// operations would slip past the filter) fail with `EACCES`; a system call of another
/// architecture or ABI (x32) than this build's kills the process, so none slips past either.
fn network_filter() -> Vec<libc::sock_filter> {
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
    // Classic BPF opcodes (linux/filter.h).
    const LOAD: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET: u16 = 0x06; // BPF_RET | BPF_K
    // Offsets in `struct seccomp_data`: the call's number, its architecture, and the low
    // half of its first argument (little-endian).
    const NR: u32 = 0;
    const ARCH_AT: u32 = 4;
    const ARG0: u32 = 16;
    const X32_BIT: u32 = 0x4000_0000;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let denied = libc::SECCOMP_RET_ERRNO | libc::EACCES as u32;
    vec![
        op(LOAD, 0, 0, ARCH_AT),
        op(JEQ, 1, 0, ARCH),
        op(RET, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        op(LOAD, 0, 0, NR),
        op(JGE, 4, 0, X32_BIT),
        op(JEQ, 3, 0, libc::SYS_io_uring_setup as u32),
        op(JEQ, 0, 3, libc::SYS_socket as u32),
        op(LOAD, 0, 0, ARG0),
        op(JEQ, 1, 0, libc::AF_UNIX as u32),
        op(RET, 0, 0, denied),
        op(RET, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// The `/proc` folders of the processes running now, whose files (the controller's
/// environment, with its model keys, above all) a command must not read. Landlock's own
/// ptrace scoping does not cover `/proc/<pid>/environ` reads between processes of one user,
/// so they are kept out of the read grants; processes started later get none either, so a
/// command cannot read its own `/proc/self` files (its `/proc/self/fd` links still work).
fn processes() -> Vec<PathBuf> {
    list_folder(Path::new("/proc"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect()
}

/// The entries of `dir` that are not symbolic links, as full paths. Links are left out: the
/// path they point to is granted (or not) where it really is, so a link into a denied folder
/// cannot open it.
fn list_folder(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_symlink()))
        .map(|e| e.path())
        .collect()
}

/// The largest subtrees of `/` that hold no denied path: `/` itself when nothing is denied,
/// else, along each denied path's ancestry, every sibling of it. `list` gives a folder's
/// entries (full paths). Denied paths must be absolute and normalized; one that does not
/// exist still takes its name out of its parent's grant.
pub fn readable_roots(
    denied: &[PathBuf],
    list: &mut dyn FnMut(&Path) -> Vec<PathBuf>,
) -> Vec<PathBuf> {
    let root = Path::new("/");
    if denied.is_empty() {
        return vec![root.to_path_buf()];
    }
    let mut roots = Vec::new();
    if !denied.iter().any(|d| d == root) {
        expand(root, denied, list, &mut roots);
    }
    roots.sort();
    roots
}

fn expand(
    dir: &Path,
    denied: &[PathBuf],
    list: &mut dyn FnMut(&Path) -> Vec<PathBuf>,
    roots: &mut Vec<PathBuf>,
) {
    let mut entries = list(dir);
    entries.sort();
    for entry in entries {
        if denied.iter().any(|d| entry.starts_with(d)) {
            continue;
        }
        if denied.iter().any(|d| d.starts_with(&entry)) {
            expand(&entry, denied, list, roots);
        } else {
            roots.push(entry);
        }
    }
}

/// `path` made absolute with links resolved, as Landlock sees it; a path that does not exist
/// yet resolves through its nearest existing ancestor.
fn absolute(path: &Path) -> PathBuf {
    if let Ok(real) = std::fs::canonicalize(path) {
        return real;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => absolute(parent).join(name),
        _ => std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_path_buf()),
    }
}

/// The Landlock ABI this kernel offers (0 without Landlock).
pub fn kernel_abi() -> i32 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attribute only asks the version.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    i32::try_from(version).unwrap_or(0).max(0)
}

/// What a kernel offering Landlock `abi` lacks for a sandbox, or `None` when nothing.
pub fn missing(abi: i32) -> Option<String> {
    let lacking: Vec<&str> = FEATURES
        .iter()
        .filter(|(needed, _)| *needed > abi)
        .map(|(_, what)| *what)
        .collect();
    if lacking.is_empty() {
        return None;
    }
    let has = if abi == 0 {
        "this kernel has no Landlock (built without it, or not enabled at boot: add `landlock` \
         to the `lsm=` kernel parameter)"
            .to_string()
    } else {
        format!("this kernel offers Landlock ABI {abi}")
    };
    Some(format!(
        "the sandbox needs Landlock ABI {NEEDED_ABI} (Linux 6.12 or later); {has}, without {}",
        lacking.join(", ")
    ))
}

/// An error for each local computer of `spec` whose sandbox this kernel (Landlock `abi`)
/// cannot enforce: such a revision is refused rather than run without its sandbox.
pub fn unsupported(spec: &Spec, abi: i32) -> Vec<Diagnostic> {
    let Some(why) = missing(abi) else {
        return Vec::new();
    };
    spec.computers
        .iter()
        .filter(|c| c.spec.local.is_some())
        .filter_map(|c| {
            let mode = c.spec.sandbox.unwrap_or_default();
            (mode != SandboxMode::Off).then(|| {
                c.error(
                    "spec.sandbox",
                    format!(
                        "sandbox `{}`: {why}; declare `sandbox: off` to run agent commands \
                         unconfined on this host",
                        mode.as_str()
                    ),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn tree(folders: &[(&str, &[&str])]) -> BTreeMap<PathBuf, Vec<PathBuf>> {
        folders
            .iter()
            .map(|(dir, names)| {
                let dir = PathBuf::from(dir);
                let entries = names.iter().map(|n| dir.join(n)).collect();
                (dir, entries)
            })
            .collect()
    }

    fn roots(folders: &[(&str, &[&str])], denied: &[&str]) -> Vec<String> {
        let tree = tree(folders);
        let denied: Vec<PathBuf> = denied.iter().map(PathBuf::from).collect();
        readable_roots(&denied, &mut |dir| {
            tree.get(dir).cloned().unwrap_or_default()
        })
        .iter()
        .map(|p| p.display().to_string())
        .collect()
    }

    #[test]
    fn readable_roots_carve_the_denied_paths_out_of_the_root() {
        let host: &[(&str, &[&str])] = &[
            ("/", &["bin", "etc", "home", "tmp"]),
            ("/home", &["u", "v"]),
            ("/home/u", &[".ssh", ".bashrc", "code"]),
            ("/home/u/.ssh", &["id_ed25519"]),
            ("/tmp", &["other", "state"]),
            ("/tmp/state", &["work", "store.db"]),
            ("/tmp/state/work", &["task"]),
        ];
        let cases: &[(&[&str], &[&str])] = &[
            (&[], &["/"]),
            (&["/"], &[]),
            (
                &["/home/u/.ssh"],
                &[
                    "/bin",
                    "/etc",
                    "/home/u/.bashrc",
                    "/home/u/code",
                    "/home/v",
                    "/tmp",
                ],
            ),
            (
                &["/home/u/.ssh", "/tmp/state"],
                &[
                    "/bin",
                    "/etc",
                    "/home/u/.bashrc",
                    "/home/u/code",
                    "/home/v",
                    "/tmp/other",
                ],
            ),
            // A denied path inside another changes nothing.
            (
                &["/tmp/state", "/tmp/state/work"],
                &["/bin", "/etc", "/home", "/tmp/other"],
            ),
            // A denied path that does not exist still takes its name out of its parent.
            (&["/home/v/.ssh"], &["/bin", "/etc", "/home/u", "/tmp"]),
            // A whole top-level folder.
            (&["/home"], &["/bin", "/etc", "/tmp"]),
        ];
        for (denied, expected) in cases {
            assert_eq!(&roots(host, denied), expected, "denied {denied:?}");
        }
    }

    #[test]
    fn a_kernel_without_the_abi_is_told_what_it_lacks() {
        assert_eq!(missing(6), None);
        assert_eq!(missing(7), None);
        let old = missing(3).unwrap_or_default();
        assert!(old.contains("ABI 3"), "{old}");
        assert!(old.contains("TCP bind and connect rules"), "{old}");
        assert!(
            old.contains("signal and abstract unix socket scoping"),
            "{old}"
        );
        assert!(!old.contains("truncating"), "{old}");
        let none = missing(0).unwrap_or_default();
        assert!(none.contains("no Landlock"), "{none}");
    }
}
