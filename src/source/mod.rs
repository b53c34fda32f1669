//! The git source: where the declaration comes from. A local repository (bare or not) or a
//! remote URL (`file://`, `git://`, `https://`, `ssh://`, scp-like `user@host:path`) fetched
//! into a bare cache clone that the source owns (its branch is force-updated from the remote,
//! which is the truth). Declarations are read from the committed tree of the tracked branch
//! (optionally a sub-folder, as Flux's `spec.path`), never from a working directory. Changes
//! are noticed by `notify` for local repositories and by polling for remotes; the engine also
//! takes triggers from webhooks.

pub(crate) mod remote;
mod tree;
pub mod watch;

pub use tree::GitTree;

use std::path::{Path, PathBuf};

use git2::{Oid, Repository, Tree};

use thiserror::Error;

use crate::spec::{FileTree, MemTree};

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("{0}: not a git repository, and not a URL")]
    NotARepository(String),
    #[error("branch {branch} not found in {source_label}")]
    NoBranch {
        branch: String,
        source_label: String,
    },
    #[error("{path}: no such folder at revision {revision}")]
    NoPath { path: String, revision: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("watch: {0}")]
    Watch(String),
    #[error("revision {revision} of {source_label} is no longer held")]
    Revision {
        revision: String,
        source_label: String,
    },
}

/// Where the declaration comes from, as the engine sees it: revisions of a tree of files
/// that the loader reads and validates the same way whatever holds them. Git is one
/// implementation ([`GitSource`]); a source of Kubernetes resources presents them as such a
/// tree too, so `plan()` and the engine do not know which one they run on. What the
/// controller writes back (records, approvals, knowledge) goes to the company's git
/// repository, which the engine holds apart from its source.
pub trait Source: Send + Sync {
    /// How the source is named in status and messages.
    fn label(&self) -> &str;
    /// Brings the source up to date with where it comes from (a fetch of a remote); a
    /// source that is always current does nothing.
    fn fetch(&self) -> Result<(), SourceError>;
    /// The current revision: an id that changes whenever what [`Source::tree`] gives does.
    fn head(&self) -> Result<String, SourceError>;
    /// The declaration's files at `revision`.
    fn tree(&self, revision: &str) -> Result<Box<dyn FileTree>, SourceError>;
    /// Whether nothing declared changed between two revisions (only the controller's own
    /// records did), so there is nothing to reconcile anew.
    fn only_controller_changes(&self, from: &str, to: &str) -> Result<bool, SourceError>;
    /// The files the controller recorded under `folder` (`.proto/knowledge`) at `revision`;
    /// none where the source keeps no records.
    fn controller_files(
        &self,
        revision: &str,
        folder: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, SourceError>;
    /// A product's repository as the declaration names it, resolved to what `git clone`
    /// takes (a relative path is relative to the declaration's repository).
    fn resolve_repo(&self, url: &str) -> String;
    /// The folder that paths in the declaration (a replay file, a sandbox's read-only
    /// company folder) are relative to.
    fn base_dir(&self) -> &Path;
}

impl Source for GitSource {
    fn label(&self) -> &str {
        GitSource::label(self)
    }

    fn fetch(&self) -> Result<(), SourceError> {
        GitSource::fetch(self)
    }

    fn head(&self) -> Result<String, SourceError> {
        GitSource::head(self)
    }

    fn tree(&self, revision: &str) -> Result<Box<dyn FileTree>, SourceError> {
        Ok(Box::new(GitSource::tree(self, revision)?))
    }

    fn only_controller_changes(&self, from: &str, to: &str) -> Result<bool, SourceError> {
        GitSource::only_controller_changes(self, from, to)
    }

    fn controller_files(
        &self,
        revision: &str,
        folder: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
        GitSource::controller_files(self, revision, folder)
    }

    fn resolve_repo(&self, url: &str) -> String {
        GitSource::resolve_repo(self, url)
    }

    fn base_dir(&self) -> &Path {
        self.repository_path()
    }
}

/// A declaration source backed by git.
///
/// It holds paths and names only, and opens the repository for each operation, so it can be
/// shared between threads (a `git2::Repository` cannot).
pub struct GitSource {
    label: String,
    /// The local repository's root (its working directory, or the bare repository), or the
    /// cache clone of a remote.
    path: PathBuf,
    /// The remote's URL; `None` for a local repository.
    url: Option<String>,
    branch: String,
    /// `/`-separated, without leading or trailing `/`; empty for the root.
    subpath: String,
    /// How the source was named, for messages and snapshot labels.
    location: String,
}

impl GitSource {
    /// Opens `location`: a path to a repository (bare or with a working tree), or a URL,
    /// which is cloned (bare) into `cache_dir` on first use. `branch` defaults to the
    /// repository's HEAD branch; `subpath` selects the folder holding the declaration.
    pub fn open(
        location: &str,
        branch: Option<&str>,
        subpath: Option<&str>,
        cache_dir: &Path,
    ) -> Result<GitSource, SourceError> {
        let subpath = normalize_subpath(subpath.unwrap_or(""));
        let local = Path::new(location);
        let (path, url, branch) = if !location.contains("://") && local.exists() {
            let repo = Repository::open(local)
                .map_err(|_| SourceError::NotARepository(location.to_owned()))?;
            let root = repo_root(&repo);
            let root = std::fs::canonicalize(&root).map_err(|source| SourceError::Io {
                path: root.clone(),
                source,
            })?;
            let branch = match branch {
                Some(b) => b.to_owned(),
                None => head_branch(&repo).ok_or_else(|| SourceError::NoBranch {
                    branch: "HEAD (detached; name a branch)".into(),
                    source_label: location.to_owned(),
                })?,
            };
            (root, None, branch)
        } else if remote::is_url(location) {
            let (path, branch) = open_cache(location, branch, cache_dir)?;
            (path, Some(location.to_owned()), branch)
        } else {
            return Err(SourceError::NotARepository(location.to_owned()));
        };
        let label = if subpath.is_empty() {
            format!("{location} (branch {branch})")
        } else {
            format!("{location} (branch {branch}, folder {subpath})")
        };
        Ok(GitSource {
            label,
            path,
            url,
            branch,
            subpath,
            location: location.to_owned(),
        })
    }

    /// A name for messages: the path or URL, and the branch.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The tracked branch.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// The selected sub-folder ("" for the repository root).
    pub fn subpath(&self) -> &str {
        &self.subpath
    }

    /// Whether the source is a remote (fetched and polled) rather than a local repository.
    pub fn is_remote(&self) -> bool {
        self.url.is_some()
    }

    /// The remote's URL, for a remote source.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// For a remote: fetch the tracked branch into the cache. For a local repository:
    /// nothing (it is read directly).
    pub fn fetch(&self) -> Result<(), SourceError> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        let lock = cache_lock(&self.path);
        let _held = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let repo = self.repo()?;
        remote::fetch(
            &mut repo.remote_anonymous(url)?,
            &[force_refspec(&self.branch)],
        )?;
        Ok(())
    }

    /// Brings the remote's approval request branches (`proto/approvals/*`) into the cache,
    /// and removes those the remote no longer has (a deleted request is a denial). A local
    /// repository already holds them.
    pub fn fetch_approvals(&self) -> Result<(), SourceError> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        let lock = cache_lock(&self.path);
        let _held = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let repo = self.repo()?;
        let prefix = "refs/heads/proto/approvals/";
        let advertised = remote::fetch(
            &mut repo.remote_anonymous(url)?,
            &[format!("+{prefix}*:{prefix}*")],
        )?;
        let kept: std::collections::HashSet<&str> =
            advertised.iter().map(|(name, _)| name.as_str()).collect();
        let mut gone = Vec::new();
        for reference in repo.references_glob(&format!("{prefix}*"))? {
            let reference = reference?;
            if let Ok(name) = reference.name()
                && !kept.contains(name)
            {
                gone.push(name.to_string());
            }
        }
        for name in gone {
            repo.find_reference(&name)?.delete()?;
        }
        Ok(())
    }

    /// The commit id at the tip of the tracked branch.
    pub fn head(&self) -> Result<String, SourceError> {
        let repo = self.repo()?;
        let commit = branch_commit(&repo, &self.branch).ok_or_else(|| SourceError::NoBranch {
            branch: self.branch.clone(),
            source_label: self.location.clone(),
        })?;
        Ok(commit.to_string())
    }

    /// The files of the sub-folder at `revision`, as a tree the loader reads. The
    /// controller's folders (`.proto/`, `approvals/`) are left out.
    pub fn snapshot(&self, revision: &str) -> Result<MemTree, SourceError> {
        let repo = self.repo()?;
        let (listed, label) = self.declaration_listing(&repo, revision)?;
        // One walk of the tree for both views (see `tree::list`), then every file read.
        let mut out = MemTree::new(label);
        for (path, id) in listed.entries {
            let blob = repo.find_blob(id)?;
            out.insert(path, blob.content().to_vec());
        }
        for refused in listed.refused {
            out.refuse(refused.path, refused.why);
        }
        Ok(out)
    }

    /// The same files as [`GitSource::snapshot`], but listed with their blob ids and read
    /// only when the loader asks: a [`crate::spec::Loader`] that saw the previous revision
    /// reads just the files whose blob changed.
    pub fn tree(&self, revision: &str) -> Result<GitTree, SourceError> {
        let repo = self.repo()?;
        let (entries, label) = self.declaration_listing(&repo, revision)?;
        Ok(GitTree::new(repo, label, entries))
    }

    /// The files of the sub-folder at `revision` (symbolic links resolved against the whole
    /// repository, as a checkout resolves them), and a label naming the commit.
    fn declaration_listing(
        &self,
        repo: &Repository,
        revision: &str,
    ) -> Result<(tree::Listed, String), SourceError> {
        let (tree, label) = self.declaration_tree(repo, revision)?;
        let root = repo.revparse_single(revision)?.peel_to_commit()?.tree()?;
        let mut listed = tree::Listed::default();
        tree::list(repo, (&root, &self.subpath), &tree, "", &mut listed)?;
        Ok((listed, label))
    }

    /// The tree of the sub-folder at `revision`, and a label naming the commit.
    fn declaration_tree<'r>(
        &self,
        repo: &'r Repository,
        revision: &str,
    ) -> Result<(Tree<'r>, String), SourceError> {
        let commit = repo.revparse_single(revision)?.peel_to_commit()?;
        let short = commit.id().to_string().chars().take(12).collect::<String>();
        let root = commit.tree()?;
        let no_path = || SourceError::NoPath {
            path: self.subpath.clone(),
            revision: short.clone(),
        };
        let tree = if self.subpath.is_empty() {
            root
        } else {
            let entry = root
                .get_path(Path::new(&self.subpath))
                .map_err(|_| no_path())?;
            entry.to_object(repo)?.into_tree().map_err(|_| no_path())?
        };
        let label = if self.subpath.is_empty() {
            format!("{} at {short}", self.location)
        } else {
            format!("{} at {short}, folder {}", self.location, self.subpath)
        };
        Ok((tree, label))
    }

    /// The files under one of the controller's folders of the sub-folder at `revision`
    /// (`.proto/knowledge`), with paths from the sub-folder's root; none when the folder does
    /// not exist. The snapshot leaves these folders out, being the desired state; what the
    /// controller recorded for its agents is read here, from the same commit.
    pub fn controller_files(
        &self,
        revision: &str,
        folder: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
        let repo = self.repo()?;
        let root = repo.revparse_single(revision)?.peel_to_commit()?.tree()?;
        let folder = normalize_subpath(folder);
        let full = if self.subpath.is_empty() {
            folder.clone()
        } else {
            format!("{}/{folder}", self.subpath)
        };
        let Ok(entry) = root.get_path(Path::new(&full)) else {
            return Ok(Vec::new());
        };
        let Ok(tree) = entry.to_object(&repo)?.into_tree() else {
            return Ok(Vec::new());
        };
        let mut listed = tree::Listed::default();
        tree::list(&repo, (&root, &full), &tree, &folder, &mut listed)?;
        listed
            .entries
            .into_iter()
            .map(|(path, id)| Ok((path, repo.find_blob(id)?.content().to_vec())))
            .collect()
    }

    /// Whether every path changed between the two commits lies in the controller's own
    /// folders (`.proto/`, `approvals/` of the sub-folder) or outside the sub-folder: such
    /// commits need no reconcile of the desired state.
    pub fn only_controller_changes(&self, from: &str, to: &str) -> Result<bool, SourceError> {
        let repo = self.repo()?;
        let old = repo.revparse_single(from)?.peel_to_commit()?.tree()?;
        let new = repo.revparse_single(to)?.peel_to_commit()?.tree()?;
        if old.id() == new.id() {
            return Ok(true);
        }
        let diff = repo.diff_tree_to_tree(Some(&old), Some(&new), None)?;
        let ok = diff.deltas().all(|delta| {
            [delta.old_file().path(), delta.new_file().path()]
                .into_iter()
                .flatten()
                .all(|p| self.is_controller_path(&p.to_string_lossy()))
        });
        Ok(ok)
    }

    /// Resolves a product repository URL as written in a Product (a path relative to the
    /// company repository, or a URL) to something `git clone` takes: an absolute path for
    /// a local company repository, a URL resolved against the remote's URL otherwise.
    ///
    /// Relative paths resolve against the company repository itself, as git resolves
    /// relative submodule URLs: `../x.git` next to a repository at `/a/company` (or a bare
    /// one at `/a/company.git`) is `/a/x.git`.
    pub fn resolve_repo(&self, url: &str) -> String {
        if remote::is_url(url) {
            return url.to_owned();
        }
        match &self.url {
            Some(base) if !Path::new(url).is_absolute() => remote::join_url(base, url),
            _ => remote::normalize(&self.path.join(url))
                .to_string_lossy()
                .into_owned(),
        }
    }

    /// The local repository (or the cache clone of a remote): what writeback commits to.
    pub fn repository_path(&self) -> &Path {
        &self.path
    }

    fn repo(&self) -> Result<Repository, SourceError> {
        Ok(Repository::open(&self.path)?)
    }

    /// Whether a repository path (`/`-separated, from the root) is the controller's or
    /// outside the declaration folder.
    fn is_controller_path(&self, path: &str) -> bool {
        let inside = if self.subpath.is_empty() {
            path
        } else {
            match path
                .strip_prefix(self.subpath.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
            {
                Some(rest) => rest,
                // Outside the folder (a path equal to the folder itself is inside).
                None if path != self.subpath => return true,
                None => return false,
            }
        };
        let first = inside.split('/').next().unwrap_or_default();
        crate::spec::tree::CONTROLLER_DIRS.contains(&first) && inside.contains('/')
    }
}

/// `sub/folder` from user input such as `./sub/folder/`.
fn normalize_subpath(subpath: &str) -> String {
    subpath
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// A refspec that makes the cache's branch whatever the remote's is: the cache is ours, and
/// the remote is the truth.
pub(crate) fn force_refspec(branch: &str) -> String {
    format!("+refs/heads/{branch}:refs/heads/{branch}")
}

/// The working directory of a repository, or the repository itself when bare.
pub(crate) fn repo_root(repo: &Repository) -> PathBuf {
    repo.workdir().unwrap_or_else(|| repo.path()).to_path_buf()
}

/// The branch HEAD names (even if it has no commit yet); `None` when HEAD is detached.
pub(crate) fn head_branch(repo: &Repository) -> Option<String> {
    let head = repo.find_reference("HEAD").ok()?;
    head.symbolic_target()
        .ok()??
        .strip_prefix("refs/heads/")
        .map(str::to_owned)
}

/// How old a lock file in a cache clone must be to be taken for one a killed process left:
/// git and libgit2 hold theirs for the moment a ref or the config is written.
const STALE_LOCK: std::time::Duration = std::time::Duration::from_secs(30);

/// Removes the lock files (`*.lock` among the refs, `packed-refs.lock`, `HEAD.lock`,
/// `config.lock`) a process killed while moving a ref left in the cache clone at `path`,
/// which would refuse every later fetch and record commit as git refuses a person's. The
/// cache is the controller's own; only locks older than [`STALE_LOCK`] are taken, so one a
/// live process holds is left alone.
fn clear_stale_locks(path: &Path) {
    let mut found = Vec::new();
    for name in ["packed-refs.lock", "HEAD.lock", "config.lock", "index.lock"] {
        found.push(path.join(name));
    }
    let mut dirs = vec![path.join("refs")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let entry_path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(entry_path),
                Ok(_) if entry_path.extension().is_some_and(|e| e == "lock") => {
                    found.push(entry_path)
                }
                _ => {}
            }
        }
    }
    for lock in found {
        let stale = std::fs::metadata(&lock)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age >= STALE_LOCK);
        if stale && std::fs::remove_file(&lock).is_ok() {
            tracing::warn!(lock = %lock.display(), "removed a lock file a killed process left in the cache");
        }
    }
}

/// The lock of the cache clone at `path`, one per repository in this process. The engine
/// fetches into a remote company's cache while the record writer commits and pushes there;
/// each moves the cache's branch, so unlocked one fails on the other's ref lock or, worse,
/// a fetch resets the branch under a commit about to be pushed.
pub(crate) fn cache_lock(path: &Path) -> std::sync::Arc<std::sync::Mutex<()>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock, PoisonError};
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    locks.entry(path.to_path_buf()).or_default().clone()
}

/// The commit at the tip of `branch`, if the branch exists.
pub(crate) fn branch_commit(repo: &Repository, branch: &str) -> Option<Oid> {
    let reference = repo.find_reference(&format!("refs/heads/{branch}")).ok()?;
    reference.peel_to_commit().ok().map(|c| c.id())
}

/// Opens (or creates) the bare cache clone of `url`, learns the branch, and fetches it if
/// the cache does not have it yet.
fn open_cache(
    url: &str,
    branch: Option<&str>,
    cache_dir: &Path,
) -> Result<(PathBuf, String), SourceError> {
    std::fs::create_dir_all(cache_dir).map_err(|source| SourceError::Io {
        path: cache_dir.to_path_buf(),
        source,
    })?;
    let path = cache_dir.join(remote::sanitize(url));
    let (repo, existed) = match Repository::open_bare(&path) {
        Ok(repo) => {
            clear_stale_locks(&path);
            (repo, true)
        }
        Err(_) => (Repository::init_bare(&path)?, false),
    };
    // Keep `origin` pointing at the URL so the cache reads like an ordinary clone to anyone
    // who looks at it; fetches and pushes name the URL directly.
    match repo.find_remote("origin") {
        Ok(origin) if origin.url().ok() == Some(url) => {}
        Ok(_) => repo.remote_set_url("origin", url)?,
        Err(_) => {
            repo.remote("origin", url)?;
        }
    }
    let branch = match branch {
        Some(b) => b.to_owned(),
        None => match remote::default_branch(&repo, url) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Err(SourceError::NoBranch {
                    branch: "HEAD (the repository is empty)".into(),
                    source_label: url.to_owned(),
                });
            }
            // Offline: a cache made earlier remembers the remote's HEAD branch.
            Err(e) => match head_branch(&repo) {
                Some(b) if existed && branch_commit(&repo, &b).is_some() => b,
                _ => return Err(e.into()),
            },
        },
    };
    if branch_commit(&repo, &branch).is_none() {
        remote::fetch(&mut repo.remote_anonymous(url)?, &[force_refspec(&branch)])?;
    }
    repo.set_head(&format!("refs/heads/{branch}"))?;
    Ok((path, branch))
}
