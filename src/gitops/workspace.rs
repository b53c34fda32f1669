//! A task's workspace: a clone of the product repository at the product's branch ([`make`]).
//! Everything after it (committing the work, fetching the branch's tip, rebasing onto it, the
//! compare-and-swap push) is [`super::delivery`]'s, so there is one way a product's work is
//! committed and published.
//!
//! Workspaces are cheap: each computer keeps one bare **mirror** per product repository
//! (under `<workdir>/.mirrors`), fetched before each workspace is made, and a workspace is a
//! `git clone --shared` of it: its objects come from the mirror through `alternates`, so
//! making one costs a checkout of the files and no copy of history, however long the
//! product's history grows. The workspace's `origin` is the product repository itself, so
//! delivery fetches and pushes there directly, and new objects (the work, a newer tip) land
//! in the workspace's own object store.
//!
//! A clone with alternates rather than a `git worktree`: worktrees share one ref namespace
//! and refuse to check a branch out twice, while every task works on the product's branch at
//! once and delivery moves `refs/remotes/origin/<branch>` in each workspace independently.
//!
//! Crash safety: a mirror and a workspace are each built under a `.partial` name and renamed
//! into place, so one that exists is whole; the mirror is fetched under an exclusive lock
//! (which the kernel drops when a killed process ends) and git's own lock files that a
//! killed fetch left are removed under it. A mirror is never deleted while it exists:
//! workspaces may be reading through it; it only ever gains objects, and is repacked (never
//! pruned) when its packs pile up, off the task's path (see [`super::housekeeping`]).
//!
//! **Spares.** A delivered workspace is not thrown away but kept as a spare of its mirror
//! ([`recycle`]); the next workspace of that product is made from one ([`make`]): its `.git`
//! is built anew (nothing the last task planted there — hooks, configuration, objects,
//! alternates — survives; only the index is kept, as the cache of which files are
//! unchanged), and a reset and clean (in-process, as `reset --hard` + `clean -ffdx` would) move its files to the new commit, which
//! writes only the files that differ. A fresh checkout writes every file of the product, so
//! this is what keeps a task's cost from growing with the product. An index that could hide
//! a file from git (assume-unchanged, skip-worktree, intent-to-add, a split index) is not
//! trusted: that spare is removed and the workspace cloned afresh.
//!
//! A product repository given as a local path must be bare (`git init --bare x.git`), as
//! any shared repository is: git refuses a push to the checked-out branch of a repository
//! with a working tree.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::GitopsError;
use crate::computer::activity::{self, Quiet};
use crate::source::remote;

/// The folder of a computer's workdir that holds its product mirrors.
pub const MIRRORS: &str = ".mirrors";

/// Variables of the controller's environment a fetch may need to authenticate.
const CREDENTIAL_ENV: [&str; 3] = ["SSH_AUTH_SOCK", "GIT_SSH_COMMAND", "GIT_SSH"];

/// The folder beside a mirror that holds its spare workspaces.
const SPARES: &str = "spares";

/// Spare workspaces kept per mirror: enough for the tasks a computer runs at once on one
/// product; more are removed.
const MAX_SPARES: usize = 8;

/// More packs than this in a mirror and they are rolled up (each fetch adds one). Few:
/// every repository opened through the mirror reads each pack's index, and a lookup that
/// misses rescans the folder; a geometric roll-up costs what is new.
const MAX_PACKS: usize = 8;

/// More loose objects than this in the one folder of 256 sampled (about a thousand in all)
/// and a mirror's loose objects are packed (fetches of a few objects write them loose).
const MAX_LOOSE_SAMPLE: usize = 4;

/// Makes the workspace `dir`: a clone of `repo` (a path or URL) at `branch`, or leaves `dir`
/// as it is when it already exists (only a whole workspace is ever renamed into place). An
/// empty repository or a missing branch gives a workspace on a new branch, which starts at
/// the remote's default branch (as `git checkout -b` would), so the work builds on the
/// product's code; only an empty repository gives an unborn branch.
pub fn make(
    repo: &str,
    branch: &str,
    dir: &Path,
    mirrors: &Path,
) -> Result<Option<Quiet>, GitopsError> {
    if dir.is_dir() {
        return Ok(None);
    }
    let url = repository_url(repo)?;
    let mirror = mirrors.join(mirror_name(&url));
    let start = {
        let _lock = lock(mirrors, &mirror)?;
        ensure_mirror(&mirror, &url)?;
        fetch(&mirror, &url)?;
        start_of(&mirror, branch)?
    };
    // Off the task's path, and beside fetches: a repack only adds packs and removes what
    // it packed, as git's own upkeep does beside pushes.
    let rolled = mirror.clone();
    super::housekeeping::later(&mirror, move || {
        if let Err(e) = repack_if_needed(&rolled) {
            tracing::warn!(mirror = %rolled.display(), "{e}");
        }
    });
    let partial = partial_of(dir);
    remove_dir(&partial)?;
    // Taken before the files are made: a process that starts meanwhile voids it.
    let quiet = activity::quiet();
    let reused = match take_spare(&mirror, &partial) {
        Some(known) => match refresh(&partial, &mirror, &url, branch, &start, known) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(workspace = %dir.display(), "a spare workspace is not reused: {e}");
                remove_dir(&partial)?;
                false
            }
        },
        None => false,
    };
    if !reused {
        clone_shared(&mirror, &partial, &url, branch, &start)?;
    }
    std::fs::rename(&partial, dir).map_err(io(dir))?;
    Ok(quiet.filter(|q| q.holds()))
}

/// Hands back the delivered workspace `dir` of `repo`: kept as a spare of the product's
/// mirror for the next workspace to be made from, or removed when there are spares enough.
///
/// `clean`: the files have matched the index exactly since then (see
/// [`crate::computer::workspace::Journal`]), so the next workspace made from the spare
/// need not walk them while that holds.
pub fn recycle(
    repo: &str,
    dir: &Path,
    mirrors: &Path,
    clean: Option<Quiet>,
) -> Result<(), GitopsError> {
    remove_dir(&partial_of(dir))?;
    if !dir.is_dir() {
        return Ok(());
    }
    let spares = spares_of(&mirrors.join(mirror_name(&repository_url(repo)?)));
    let kept = std::fs::read_dir(&spares).map_or(0, Iterator::count);
    if kept < MAX_SPARES {
        std::fs::create_dir_all(&spares).map_err(io(&spares))?;
        // Unique among this process's spares and any other's: the clock and the process.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let spare = spares.join(format!("{nanos:x}-{}", std::process::id()));
        if std::fs::rename(dir, &spare).is_ok() {
            if let Some(clean) = clean {
                let mut known = clean_spares();
                // Spares removed some other way leave their entry; a bound drops them.
                if known.len() >= MAX_SPARES * 4 {
                    known.clear();
                }
                known.insert(spare, clean);
            }
            return Ok(());
        }
    }
    remove_dir(dir)
}

/// The spares whose files matched their index when they were handed back, and since when.
fn clean_spares() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Quiet>> {
    static CLEAN: std::sync::OnceLock<std::sync::Mutex<HashMap<PathBuf, Quiet>>> =
        std::sync::OnceLock::new();
    CLEAN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn spares_of(mirror: &Path) -> PathBuf {
    let mut name = mirror.as_os_str().to_owned();
    name.push(".");
    name.push(SPARES);
    PathBuf::from(name)
}

/// Moves one spare of `mirror` to `to`, answering since when its files are known to match
/// its index (if they are); `None` when there is no spare. A rename is atomic, so two
/// computers' threads never take the same spare.
fn take_spare(mirror: &Path, to: &Path) -> Option<Option<Quiet>> {
    let entries = std::fs::read_dir(spares_of(mirror)).ok()?;
    let taken = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|spare| std::fs::rename(spare, to).is_ok())?;
    Some(clean_spares().remove(&taken).filter(|q| q.holds()))
}

/// Makes the spare at `dir` a workspace of `branch` as [`clone_shared`] would: a new `.git`
/// reading objects from the mirror, the spare's index kept (if it can be trusted) so only
/// changed files are written, then the files moved to the branch's commit exactly.
fn refresh(
    dir: &Path,
    mirror: &Path,
    url: &str,
    branch: &str,
    start: &Start,
    clean: Option<Quiet>,
) -> Result<(), GitopsError> {
    let commit = match start {
        Start::Branch => {
            let repo = git2::Repository::open_bare(mirror)?;
            resolve(&repo, &format!("refs/heads/{branch}")).ok_or_else(|| GitopsError::Command {
                what: "reuse a workspace".into(),
                message: format!("{branch} vanished from the mirror"),
            })?
        }
        Start::At(commit) => commit.clone(),
        Start::Unborn => {
            return Err(GitopsError::Command {
                what: "reuse a workspace".into(),
                message: "an empty repository has nothing to reuse".into(),
            });
        }
    };
    // Known clean while no process of the controller could run: none is inside either.
    if clean.is_none()
        && let Some(pid) = process_inside(dir)
    {
        return Err(untrusted(&format!(
            "process {pid} still works in it (a command left running)"
        )));
    }
    let git_dir = dir.join(".git");
    let old = dir.join(".proto-old-git");
    let kind = std::fs::symlink_metadata(&git_dir).map_err(io(&git_dir))?;
    if !kind.is_dir() {
        return Err(untrusted("its .git is not a folder"));
    }
    std::fs::rename(&git_dir, &old).map_err(io(&old))?;
    // No template copied in (hook samples, a description): nothing of it is used.
    // HEAD names the branch from the start: `set_head` afterwards opened the repository
    // again to look for worktrees that have it checked out.
    let repo = git2::Repository::init_opts(
        dir,
        git2::RepositoryInitOptions::new()
            .external_template(false)
            .initial_head(&format!("refs/heads/{branch}")),
    )?;
    std::fs::rename(old.join("index"), git_dir.join("index")).map_err(io(&git_dir))?;
    remove_dir(&old)?;
    let objects = mirror.join("objects");
    let alternates = git_dir.join("objects/info/alternates");
    std::fs::write(&alternates, format!("{}\n", path_text(&objects))).map_err(io(&alternates))?;
    copy_branches(&repo, mirror)?;
    let oid = git2::Oid::from_str(&commit)?;
    repo.reference(&format!("refs/heads/{branch}"), oid, true, "reuse")?;
    configure_origin(&repo, url, branch)?;
    // Read once, here, and kept by the repository for the reset below.
    trusted_index(&repo.index()?)?;
    // In-process: `git reset --hard` and `git clean -ffdx` were two process starts a task.
    let known = clean.map(|_| std::collections::BTreeSet::new());
    super::native::reset_clean(&repo, oid, known.as_ref()).map_err(|e| GitopsError::Command {
        what: "reset and clean a reused workspace".into(),
        message: e.message().to_string(),
    })
}

/// A process whose working folder is `dir` or inside it (Linux `/proc`; elsewhere none is
/// found): something the last task started and nobody stopped, which could go on writing
/// into the next task's files after they were checked. The kernel follows a renamed
/// folder, so a spare's new name is what such a process shows.
fn process_inside(dir: &Path) -> Option<u32> {
    let dir = std::fs::canonicalize(dir).ok()?;
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cwd = std::fs::read_link(entry.path().join("cwd")).ok()?;
            cwd.starts_with(&dir).then_some(pid)
        })
}

fn untrusted(why: &str) -> GitopsError {
    GitopsError::Command {
        what: "reuse a workspace".into(),
        message: why.into(),
    }
}

/// Refuses an index that could make git look past a file: entries marked assume-unchanged,
/// skip-worktree or intent-to-add. An index libgit2 cannot read whole (one split into a
/// shared part that lived in the `.git` being replaced, a sparse index: mandatory extensions
/// it does not know) is refused as well.
fn trusted_index(index: &git2::Index) -> Result<(), GitopsError> {
    const ASSUME_VALID: u16 = 0x8000;
    const INTENT_TO_ADD: u16 = 1 << 13;
    const SKIP_WORKTREE: u16 = 1 << 14;
    if index.iter().any(|entry| {
        entry.flags & ASSUME_VALID != 0
            || entry.flags_extended & (INTENT_TO_ADD | SKIP_WORKTREE) != 0
    }) {
        return Err(untrusted("its index hides files from git"));
    }
    Ok(())
}

/// The mirror's branches as the workspace's `origin/*`, as a clone sets them.
fn copy_branches(repo: &git2::Repository, mirror: &Path) -> Result<(), GitopsError> {
    let source = git2::Repository::open_bare(mirror)?;
    for reference in source.references_glob("refs/heads/*")? {
        let reference = reference?;
        let name = reference
            .name()
            .ok()
            .and_then(|n| n.strip_prefix("refs/heads/"));
        if let (Some(name), Some(target)) = (name, reference.target()) {
            repo.reference(
                &format!("refs/remotes/origin/{name}"),
                target,
                true,
                "reuse",
            )?;
        }
    }
    Ok(())
}

/// `origin` is the product repository itself, and the branch tracks it there.
fn configure_origin(repo: &git2::Repository, url: &str, branch: &str) -> Result<(), GitopsError> {
    if repo.find_remote("origin").is_ok() {
        repo.remote_set_url("origin", url)?;
    } else {
        repo.remote("origin", url)?;
    }
    let mut config = repo.config()?;
    config.set_str(&format!("branch.{branch}.remote"), "origin")?;
    config.set_str(
        &format!("branch.{branch}.merge"),
        &format!("refs/heads/{branch}"),
    )?;
    Ok(())
}

/// The git state a workspace of `repo`'s `branch` is made with (see [`make`]): the clone's
/// configuration (`origin` and the branch it tracks) and its alternates (the mirror's
/// objects), as the controller restores them before its own git runs in the workspace.
pub fn pristine(
    repo: &str,
    branch: &str,
    mirrors: &Path,
) -> Result<crate::computer::workspace::Pristine, GitopsError> {
    let url = repository_url(repo)?;
    let objects = mirrors.join(mirror_name(&url)).join("objects");
    // Git's config quoting: backslashes and double quotes escaped inside double quotes.
    let quoted = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    Ok(crate::computer::workspace::Pristine {
        config: format!(
            "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n\
             [remote \"origin\"]\n\turl = {}\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n\
             [branch {}]\n\tremote = origin\n\tmerge = {}\n",
            quoted(&url),
            quoted(branch),
            quoted(&format!("refs/heads/{branch}")),
        ),
        alternates: format!("{}\n", objects.display()),
    })
}

/// Removes the workspace `dir` and whatever half-made one a killed process left beside it.
pub fn remove(dir: &Path) -> Result<(), GitopsError> {
    remove_dir(&partial_of(dir))?;
    remove_dir(dir)
}

fn remove_dir(dir: &Path) -> Result<(), GitopsError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(dir)(e)),
        _ => Ok(()),
    }
}

fn partial_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn repository_url(repo: &str) -> Result<String, GitopsError> {
    if remote::is_url(repo) {
        return Ok(repo.to_owned());
    }
    std::path::absolute(repo)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(io(Path::new(repo)))
}

/// The mirror's folder name: readable (the repository's last path part) and unique (a hash
/// of the whole URL), so two products named alike never share a mirror.
fn mirror_name(url: &str) -> String {
    let hash = url.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let base: String = url
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("repo")
        .trim_end_matches(".git")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    format!("{base}-{hash:016x}.git")
}

/// The exclusive lock of one mirror, held while it is created or fetched.
fn lock(mirrors: &Path, mirror: &Path) -> Result<File, GitopsError> {
    std::fs::create_dir_all(mirrors).map_err(io(mirrors))?;
    let (file, path) = lock_file(mirror, ".lock")?;
    file.lock().map_err(io(&path))?;
    Ok(file)
}

/// The file beside `mirror` named with `suffix` that a lock is taken on (made if missing).
fn lock_file(mirror: &Path, suffix: &str) -> Result<(File, PathBuf), GitopsError> {
    let mut path = mirror.as_os_str().to_owned();
    path.push(suffix);
    let path = PathBuf::from(path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    Ok((file, path))
}

fn ensure_mirror(mirror: &Path, url: &str) -> Result<(), GitopsError> {
    if mirror.is_dir() {
        // The URL a product names may change spelling but not the mirror's name (a hash of
        // it), so the mirror's `origin` is what was asked for.
        return clear_stale_locks(mirror);
    }
    let partial = partial_of(mirror);
    remove_dir(&partial)?;
    git(
        None,
        &["init", "-q", "--bare", &path_text(&partial)],
        "init a mirror",
    )?;
    for (key, value) in [
        ("remote.origin.url", url),
        // Never prune: workspaces read objects through the mirror.
        ("gc.auto", "0"),
        ("gc.pruneExpire", "never"),
        // A pack per fetch (rather than loose objects), repacked when they pile up.
        ("fetch.unpackLimit", "1"),
        ("transfer.unpackLimit", "1"),
    ] {
        git(
            Some(&partial),
            &["config", key, value],
            "configure a mirror",
        )?;
    }
    std::fs::rename(&partial, mirror).map_err(io(mirror))
}

/// Lock files a killed git left in the mirror. Safe to remove: the mirror's lock is held,
/// so no git of ours is running there.
fn clear_stale_locks(mirror: &Path) -> Result<(), GitopsError> {
    fn sweep(dir: &Path) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if entry.file_name() != "objects" {
                    sweep(&path)?;
                }
            } else if path.extension().is_some_and(|e| e == "lock") {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
    sweep(mirror).map_err(io(mirror))
}

/// Brings the mirror's branches to the product's. A product on this host's file system is
/// fetched in-process (libgit2 reads its objects directly; nothing runs on the product's
/// side of a fetch), which saves the half-dozen processes of a `git fetch` per workspace;
/// a URL is fetched by `git`, with its transports and credentials.
fn fetch(mirror: &Path, url: &str) -> Result<(), GitopsError> {
    if !remote::is_url(url) {
        return fetch_local(mirror, url);
    }
    git(
        Some(mirror),
        &[
            "fetch",
            "-q",
            "--prune",
            "--no-tags",
            "origin",
            "+refs/heads/*:refs/heads/*",
        ],
        "fetch the product into its mirror",
    )
    .map(drop)
}

/// [`fetch`] from a repository on this host (see [`super::local_copy`]).
fn fetch_local(mirror: &Path, path: &str) -> Result<(), GitopsError> {
    super::local_copy::fetch(mirror, Path::new(path)).map(drop)
}

/// Where a workspace's branch starts.
#[derive(Debug, PartialEq, Eq)]
enum Start {
    /// The branch exists: the workspace checks it out.
    Branch,
    /// The branch is new: it starts at this commit (the tip of the remote's default branch).
    At(String),
    /// The repository is empty: the branch is unborn.
    Unborn,
}

/// Where the workspace's branch starts: the branch's tip, or, for a new branch, the tip of
/// the remote's default branch; unborn in an empty repository.
fn start_of(mirror: &Path, branch: &str) -> Result<Start, GitopsError> {
    let repo = git2::Repository::open_bare(mirror)?;
    if resolve(&repo, &format!("refs/heads/{branch}")).is_some() {
        return Ok(Start::Branch);
    }
    let said = git(
        Some(mirror),
        &["ls-remote", "--symref", "origin", "HEAD"],
        "read the product's default branch",
    )?;
    let text = String::from_utf8_lossy(&said.stdout);
    let default = text.lines().find_map(|line| {
        line.strip_prefix("ref: ")?
            .strip_suffix("\tHEAD")
            .map(str::to_owned)
    });
    Ok(match default.and_then(|head| resolve(&repo, &head)) {
        Some(commit) => Start::At(commit),
        None => Start::Unborn,
    })
}

fn resolve(repo: &git2::Repository, reference: &str) -> Option<String> {
    let commit = repo.find_reference(reference).ok()?.peel_to_commit().ok()?;
    Some(commit.id().to_string())
}

/// Rolls up the mirror's packs and loose objects when they pile up, unless another
/// controller sharing the workdir is doing it (a lock beside the mirror's own).
fn repack_if_needed(mirror: &Path) -> Result<(), GitopsError> {
    let (lock, path) = lock_file(mirror, ".repack.lock")?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(()),
        Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
    }
    let packs = mirror.join("objects/pack");
    let count = std::fs::read_dir(&packs)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
                .count()
        })
        .unwrap_or(0);
    // Loose objects sampled as `git gc --auto` samples them: one folder of the 256.
    let loose = std::fs::read_dir(mirror.join("objects/17")).map_or(0, Iterator::count);
    if count > MAX_PACKS || loose > MAX_LOOSE_SAMPLE {
        // Geometric: small packs and loose objects are rolled into larger packs, so a
        // repack costs what is new, not the whole history. Rolled-up packs keep every
        // object they held, reachable or not: an object a force-push orphaned may still be
        // a workspace's.
        git(
            Some(mirror),
            &["repack", "-d", "-q", "--geometric=2"],
            "repack a mirror",
        )?;
    }
    Ok(())
}

/// The workspace itself, at `dir` (a `.partial` name, renamed by the caller when whole):
/// one `git clone` (with the checkout, for a branch that exists), then its `origin` and
/// the branch's tracking set in-process.
fn clone_shared(
    mirror: &Path,
    dir: &Path,
    url: &str,
    branch: &str,
    start: &Start,
) -> Result<(), GitopsError> {
    let (mirror_text, dir_text) = (path_text(mirror), path_text(dir));
    let mut args = vec!["clone", "-q", "--shared"];
    match start {
        Start::Branch => args.extend(["--branch", branch]),
        Start::At(_) | Start::Unborn => args.push("--no-checkout"),
    }
    args.extend([mirror_text.as_str(), dir_text.as_str()]);
    git(None, &args, "clone the mirror")?;
    if let Start::At(commit) = start {
        git(
            Some(dir),
            &["checkout", "-q", "-b", branch, commit],
            "start the branch",
        )?;
    }
    let repo = git2::Repository::open(dir)?;
    if *start == Start::Unborn {
        repo.set_head(&format!("refs/heads/{branch}"))?;
    }
    configure_origin(&repo, url, branch)
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Runs git (in `dir`, if given) and fails with its message when it fails.
pub(super) fn git(dir: Option<&Path>, args: &[&str], what: &str) -> Result<Output, GitopsError> {
    let out = run(dir, args)?;
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = stderr
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("failed")
        .trim()
        .to_owned();
    Err(GitopsError::Command {
        what: what.to_owned(),
        message,
    })
}

fn run(dir: Option<&Path>, args: &[&str]) -> Result<Output, GitopsError> {
    let mut command = Command::new(crate::program::program("git"));
    if let Some(dir) = dir {
        command.arg("-C").arg(dir);
    }
    // No hooks and no background work: a fresh clone has no hooks of its own, and the
    // user's global configuration must not plant one.
    command
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "gc.auto=0",
            "-c",
            "maintenance.auto=false",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .env_clear()
        .envs(
            ["PATH", "HOME", "USER", "TMPDIR"]
                .iter()
                .chain(CREDENTIAL_ENV.iter())
                .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
        )
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null());
    command.output().map_err(|source| GitopsError::Io {
        path: PathBuf::from("git"),
        source,
    })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GitopsError + '_ {
    move |source| GitopsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_names_are_readable_and_distinct() {
        let a = mirror_name("/srv/git/shop.git");
        let b = mirror_name("/other/shop.git");
        assert!(a.starts_with("shop-") && a.ends_with(".git"), "{a}");
        assert_ne!(a, b);
        assert!(mirror_name("git@host:team/app").starts_with("app-"));
        assert!(mirror_name("https://h/x/../../etc/").starts_with("etc-"));
    }

    fn sh(dir: &Path, script: &str) {
        let out = Command::new("sh")
            .args(["-c", script])
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn branches(repo: &Path) -> Vec<(String, String)> {
        let repo = git2::Repository::open_bare(repo).unwrap();
        let mut all: Vec<(String, String)> = repo
            .references_glob("refs/heads/*")
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (
                    r.name().unwrap().to_string(),
                    r.target().unwrap().to_string(),
                )
            })
            .collect();
        all.sort();
        all
    }

    /// The in-process fetch of a product on this host mirrors its branches exactly: new
    /// ones, moved ones (even rewound), and deleted ones gone; no tags.
    #[test]
    fn a_local_product_is_mirrored_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        sh(
            dir,
            "git init -q --bare -b main app.git && git init -q -b main src && cd src && \
             git -c user.name=a -c user.email=a@x commit -q --allow-empty -m one && \
             git -c user.name=a -c user.email=a@x commit -q --allow-empty -m two && \
             git tag v1 && git branch old && git push -q ../app.git main old v1",
        );
        let mirrors = dir.join("work/.mirrors");
        let url = dir.join("app.git").display().to_string();
        make(&url, "main", &dir.join("work/t1"), &mirrors).unwrap();
        let mirror = mirrors.join(mirror_name(&url));
        assert_eq!(branches(&mirror), branches(&dir.join("app.git")));
        sh(
            dir,
            "cd src && git reset -q --hard HEAD~1 && \
             git -c user.name=a -c user.email=a@x commit -q --allow-empty -m other && \
             git push -q -f ../app.git main main:new :old",
        );
        make(&url, "main", &dir.join("work/t2"), &mirrors).unwrap();
        let mirrored = branches(&mirror);
        assert_eq!(mirrored, branches(&dir.join("app.git")));
        assert_eq!(mirrored.len(), 2, "{mirrored:?}");
        let tags = git2::Repository::open_bare(&mirror)
            .unwrap()
            .tag_names(None)
            .unwrap()
            .len();
        assert_eq!(tags, 0);
    }
}
