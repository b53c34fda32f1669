//! A task's workspace: a directory holding a clone of the product repository. Every path an
//! action names is resolved here, and anything that would land outside (`..`, absolute
//! paths, symbolic links pointing out) is refused. Writes are also refused inside any `.git`
//! (the repository's or a nested one): a planted hook or config would run with the next
//! `git` command. Paths are normalized (`.` and `..` taken out) before either check, so
//! `./.git/x` and `a/../.git/x` are the same path as `.git/x`.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::ComputerError;
use super::activity::Quiet;

/// How many symbolic links a path may pass through before it is taken for a loop (Linux's
/// own limit).
const MAX_SYMLINKS: u32 = 40;

/// The workspace's scratch folder (tool scripts, transcripts, sandboxed commands' `TMPDIR`):
/// whoever makes it writes a `.gitignore` of `*` in it, so nothing there is ever committed.
pub const SCRATCH: &str = ".proto-tmp";

/// A workspace root and the computer-side rules for paths inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    root: PathBuf,
    /// The git state the computer made the workspace with, restored before each of the
    /// controller's own git commands there: agent commands may write `.git`, and the
    /// controller's git runs unsandboxed (see [`crate::gitops::delivery`]).
    pristine: Option<Pristine>,
    /// Whether the root is a folder of this host (not of an SSH computer).
    on_this_host: bool,
    /// Commits made here whose additions the controller has scanned for secrets.
    scanned: Scanned,
    /// The controller's own open repository of a workspace on this host, kept between its
    /// in-process git steps (see `gitops::native`).
    repository: Repository,
    /// What the controller knows of the files without walking them.
    journal: Journal,
}

/// What the controller knows of a workspace's files without walking them: since a
/// [`Quiet`] moment, every file outside `.git` is as the index has it, except the paths
/// written through the workspace's computer since (`written`, as they land on disk). Held
/// only while the quiet holds: a process of this controller that started since could have
/// written anything, and then the files are walked again. Memory of this process only.
///
/// Shared by every clone of the handle.
#[derive(Clone, Default)]
pub struct Journal(Arc<Mutex<Known>>);

#[derive(Default)]
struct Known {
    since: Option<Quiet>,
    written: BTreeSet<PathBuf>,
}

impl Journal {
    /// Every file is as the index has it, as of `since` (a moment taken before the walk or
    /// checkout that made it so).
    pub fn matches_index(&self, since: Quiet) {
        let mut known = self.known();
        known.since = Some(since);
        known.written.clear();
    }

    /// Nothing is known any more (a step that changed files some other way).
    pub fn forget(&self) {
        self.known().since = None;
    }

    /// The paths written since the files last matched the index, when that is still known.
    pub fn written(&self) -> Option<BTreeSet<PathBuf>> {
        let known = self.known();
        let since = known.since?;
        since.holds().then(|| known.written.clone())
    }

    /// Of the paths written, only `left` still differ from the index (the rest were staged).
    pub fn left(&self, left: BTreeSet<PathBuf>) {
        self.known().written = left;
    }

    /// The moment since which the files match the index exactly, nothing written since.
    pub fn clean_since(&self) -> Option<Quiet> {
        let known = self.known();
        let since = known.since.filter(|q| q.holds())?;
        known.written.is_empty().then_some(since)
    }

    fn wrote(&self, path: PathBuf) {
        self.known().written.insert(path);
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        // Every update leaves it whole; a panicking holder left a true state.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Journal")
    }
}

/// A memo, not part of what a workspace is.
impl PartialEq for Journal {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Journal {}

/// The repository the controller opened in a workspace on this host, shared by every
/// clone of the handle: opening one reads its configuration and every pack index of the
/// mirror it borrows objects from, which a task's git steps would otherwise pay each time.
#[derive(Clone, Default)]
pub struct Repository(Arc<Mutex<Option<git2::Repository>>>);

impl Repository {
    /// The slot, locked: one git step at a time in a workspace.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Option<git2::Repository>> {
        // A step that panicked leaves a repository that is still a repository.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Repository")
    }
}

/// A cache, not part of what a workspace is.
impl PartialEq for Repository {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Repository {}

/// The commits of one workspace whose additions the controller scanned for secrets (when
/// it made them, or when it checked an agent's commit), so publishing them does not scan
/// them again. Memory of this process only: after a restart everything is scanned again,
/// and a commit rewritten by a rebase is a new commit, scanned again too. Kept here, not in
/// the workspace's `.git`, which agent commands can write.
#[derive(Clone, Debug, Default)]
pub struct Scanned(Arc<Mutex<BTreeSet<String>>>);

impl Scanned {
    pub fn add(&self, commits: impl IntoIterator<Item = String>) {
        self.set().extend(commits);
    }

    /// Whether every one of `commits` was scanned (true for none).
    pub fn all(&self, commits: &[String]) -> bool {
        let set = self.set();
        commits.iter().all(|c| set.contains(c))
    }

    fn set(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // The set only grows; what a panicking holder left is still true.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A memo, not part of what a workspace is.
impl PartialEq for Scanned {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Scanned {}

/// The `.git/config` and `.git/objects/info/alternates` a workspace was cloned with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pristine {
    pub config: String,
    pub alternates: String,
}

impl Workspace {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Workspace {
            root: root.into(),
            pristine: None,
            on_this_host: true,
            scanned: Scanned::default(),
            repository: Repository::default(),
            journal: Journal::default(),
        }
    }

    /// A workspace on another computer (an SSH host): `root` is a path there. Paths are
    /// judged lexically here (`..`, absolute paths, `.git`); where their links lead is
    /// judged by the computer, where the files are, on every access.
    pub fn elsewhere(root: impl Into<PathBuf>) -> Self {
        Workspace {
            on_this_host: false,
            ..Workspace::new(root)
        }
    }

    /// Whether the workspace's files are on this host, for code that reads them directly
    /// rather than through its computer.
    pub fn on_this_host(&self) -> bool {
        self.on_this_host
    }

    /// A workspace whose git state the controller restores before its own git runs there.
    pub fn with_pristine(mut self, pristine: Pristine) -> Self {
        self.pristine = Some(pristine);
        self
    }

    pub fn pristine(&self) -> Option<&Pristine> {
        self.pristine.as_ref()
    }

    /// The commits here already scanned for secrets (shared by every clone of this handle).
    pub fn scanned(&self) -> &Scanned {
        &self.scanned
    }

    /// The controller's open repository here (shared by every clone of this handle).
    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    /// What the controller knows of the files here (shared by every clone of this handle).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute path of `relative`, [normalized](normalize), refusing any path that
    /// resolves outside the root (after following symbolic links of the parts that exist).
    pub fn resolve(&self, relative: &str) -> Result<PathBuf, ComputerError> {
        let located = self.locate(relative)?;
        Ok(located.root.join(located.inside))
    }

    /// [`Workspace::resolve`] for a path about to be written: also refused when it lies in a
    /// `.git` folder, as written or where its symbolic links lead. Where it lands is
    /// recorded in the [`Journal`].
    pub fn resolve_for_write(&self, relative: &str) -> Result<PathBuf, ComputerError> {
        let located = self.locate(relative)?;
        let landed = located.landing.strip_prefix(&located.root).ok();
        if in_git_dir(&located.inside) || landed.is_some_and(in_git_dir) {
            return Err(ComputerError::GitDir {
                path: relative.to_string(),
            });
        }
        match landed {
            Some(landed) => self.journal.wrote(landed.to_path_buf()),
            None => self.journal.forget(),
        }
        Ok(located.root.join(located.inside))
    }

    /// Where `relative` is, refused when it is outside the root lexically or physically.
    fn locate(&self, relative: &str) -> Result<Located, ComputerError> {
        let outside = || ComputerError::OutsideWorkspace {
            path: relative.to_string(),
        };
        // `~` would mean a home folder to a shell, never a folder of the workspace.
        if relative.is_empty() || relative.starts_with('~') {
            return Err(outside());
        }
        if !self.on_this_host {
            let inside = normalize(relative).ok_or_else(outside)?;
            return Ok(Located {
                root: self.root.clone(),
                landing: self.root.join(&inside),
                inside,
            });
        }
        let root = std::fs::canonicalize(&self.root).map_err(|source| ComputerError::Io {
            path: self.root.display().to_string(),
            source,
        })?;
        // Lexically first: `..` may not climb above the root, whatever the disk holds.
        let inside = normalize(relative).ok_or_else(outside)?;

        // Then physically: where the path lands once the links on its way are followed.
        let landing = physical(&root.join(&inside)).map_err(|source| ComputerError::Io {
            path: relative.to_string(),
            source,
        })?;
        if landing.starts_with(&root) {
            Ok(Located {
                root,
                inside,
                landing,
            })
        } else {
            Err(outside())
        }
    }
}

/// A workspace path, lexically and physically.
struct Located {
    /// The workspace root, links resolved.
    root: PathBuf,
    /// The path as written, normalized, relative to the root.
    inside: PathBuf,
    /// Where it lands on disk, absolute, under `root`.
    landing: PathBuf,
}

/// `relative` with its `.` parts dropped and each `..` taking back the part before it, as
/// the kernel would read it if no part were a link; `None` for an absolute path or a `..`
/// that climbs above the start. Every guard on a workspace path judges this form, so a
/// path cannot pass one by being spelt differently (`./.git`, `x/../.git`). `""` names the
/// root itself.
pub fn normalize(relative: &str) -> Option<PathBuf> {
    let mut inside = PathBuf::new();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => inside.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !inside.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(inside)
}

/// Whether a normalized workspace-relative path is a `.git` or lies inside one, at any
/// depth: a nested repository's hooks run as surely as the workspace's own.
pub fn in_git_dir(relative: &Path) -> bool {
    relative.components().any(|c| c.as_os_str() == ".git")
}

/// Where `path` (absolute) lands on disk, resolved one part at a time as the kernel would:
/// symbolic links are followed (dangling ones too, since writing through a link creates its
/// target) and `..` steps back from where the links led. Parts that do not exist hold no
/// links, so they are taken as written.
fn physical(path: &Path) -> io::Result<PathBuf> {
    let mut landing = PathBuf::from("/");
    // Parts still to walk, the next one last.
    let mut pending: Vec<OsString> = Vec::new();
    push_parts(&mut pending, path);
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            landing.pop();
            continue;
        }
        let candidate = landing.join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::other("too many levels of symbolic links"));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    landing = PathBuf::from("/");
                }
                push_parts(&mut pending, &target);
            }
            Ok(_) => landing = candidate,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                landing = candidate;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(landing)
}

/// Pushes the parts of `path` so that its first part is popped next (`.` and `/` dropped).
fn push_parts(pending: &mut Vec<OsString>, path: &Path) {
    for component in path.components().rev() {
        match component {
            Component::Normal(part) => pending.push(part.to_os_string()),
            Component::ParentDir => pending.push(OsString::from("..")),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
}
