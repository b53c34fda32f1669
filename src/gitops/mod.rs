//! Git as the record. [`Writeback`] commits the controller's records (`.proto/planning`,
//! `.proto/audit`, `.proto/status.yaml`) to the company repository, one commit per finished
//! task, authored as the Company's `writeback.author`, and pushes them: a rejected push is
//! fetched, rebased and retried, never forced. Secrets in the records are redacted before
//! they are committed (see [`crate::secrets`]). The product side: [`workspace`] clones a
//! product repository into a task workspace, and [`delivery`] commits the finished work and
//! pushes it to the product's branch by compare-and-swap.

pub mod approvals;
pub mod catch_up;
pub mod delivery;
pub mod housekeeping;
mod local_copy;
mod loose;
mod native;
mod ref_update;
#[cfg(test)]
mod test_git;
mod tree_write;
pub mod workspace;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use git2::{Commit, ErrorCode, Index, IndexEntry, IndexTime, Oid, Repository, Signature};

use thiserror::Error;

use crate::source::remote::{self, PushOutcome};
use crate::source::{GitSource, branch_commit, cache_lock, force_refspec, head_branch};

/// libgit2's process-wide settings for the controller's use of it, set once before the
/// first repository is opened (libgit2 reads them unsynchronised):
///
/// - No object lookups while a tree is written: libgit2 checks that every entry of a tree
///   names an object that exists, a lookup per file of the product at every commit. Every
///   tree here is written from an index of objects the controller wrote or fetched, and a
///   copy to another repository reads each object the target lacks, so a missing one fails
///   the copy, never delivers a broken commit.
/// - No hash check of every object read, as git itself reads: the root tree of a product of
///   a few thousand files was hashed again at each of the ten or so reads a task makes.
///   Objects are checked where they enter a repository the controller trusts from one it
///   does not (see `local_copy`), as `index-pack` checks what a fetch brings.
/// - Trees up to 4 MiB stay in each repository's object cache (libgit2 keeps none over
///   4 KiB): a task reads its product's root tree several times through one repository.
pub fn tune_libgit2() {
    static TUNED: std::sync::Once = std::sync::Once::new();
    TUNED.call_once(|| {
        git2::opts::strict_object_creation(false);
        git2::opts::strict_hash_verification(false);
        // SAFETY: the cache limits are plain globals libgit2 reads when it caches an
        // object; this runs once, before the controller opens any repository.
        if let Err(e) =
            unsafe { git2::opts::set_cache_object_limit(git2::ObjectType::Tree, 4 << 20) }
        {
            tracing::debug!("libgit2 keeps its default tree cache: {e}");
        }
    });
}

#[derive(Debug, Error)]
pub enum GitopsError {
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error(
        "{path} has uncommitted changes in the controller's files ({files}); commit or discard them, the controller will not overwrite them"
    )]
    DirtyControllerFiles { path: PathBuf, files: String },
    #[error("push to {remote} rejected {attempts} times; giving up for now: {message}")]
    PushRejected {
        remote: String,
        attempts: u32,
        message: String,
    },
    /// A `git` command line failed (making a workspace): what it was for, and git's message.
    #[error("cannot {what}: {message}")]
    Command { what: String, message: String },
    #[error("{0}: not a relative path inside the declaration folder")]
    InvalidPath(String),
    /// A record the controller could not write out (a file it could not serialize).
    #[error("{0}")]
    Record(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A git identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

impl Identity {
    /// The identity an agent's commits are authored by, in the controller's mail domain
    /// (`ceo@agents.example.com` for a controller writing as `bot@example.com`), so an
    /// agent's work is always told from a person's.
    pub fn agent(agent: &str, controller: &Identity) -> Identity {
        let domain = controller
            .email
            .rsplit_once('@')
            .map_or("proto.invalid", |(_, d)| d);
        Identity {
            name: agent.to_string(),
            email: format!("{agent}@agents.{domain}"),
        }
    }
}

/// One change to a file of the declaration folder (a path such as `.proto/status.yaml`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileChange {
    /// Replace the file's content.
    Write { path: String, content: Vec<u8> },
    /// Append to the file (creating it): re-applied on top of the remote's version when a
    /// push has to be rebased, so concurrent appends are never lost. Appended lines are
    /// records, each written once: content the file already ends with (or, on a rebased
    /// push, holds anywhere) is taken as appended.
    Append { path: String, content: Vec<u8> },
    /// Replace the file's content with text its maker has already scanned for secrets and
    /// redacted: the commit writes it as it is. For a file too large to scan at every
    /// commit, scanned in parts as they change (`.proto/status.yaml`, goal by goal).
    Scanned { path: String, content: Vec<u8> },
}

/// A record commit made, and not yet on its branch.
struct Built {
    id: Oid,
    /// Its parent.
    parent: Option<Oid>,
    /// The branch's head it was built on; `None` when the branch did not exist yet (the
    /// parent is then the source's branch).
    on: Option<Oid>,
}

/// The cache clone's ref of the record commit being pushed.
const PUSHED_REF: &str = "refs/proto/writeback";

/// How often a rejected push is rebuilt on the remote's new head before giving up.
pub(crate) const PUSH_ATTEMPTS: u32 = 5;

/// How often a commit is rebuilt when the branch moves while it is being made (someone
/// committing to the local repository at the same moment).
const LOCAL_ATTEMPTS: u32 = 5;

/// Commits to the company repository the source reads from.
///
/// Commits are built from the branch head's tree in memory, never from a working tree, so
/// bare repositories and cache clones work the same way as a user's checkout.
pub struct Writeback {
    /// The local repository, or the cache clone of a remote source.
    path: PathBuf,
    /// The remote's URL, for a remote source.
    url: Option<String>,
    branch: String,
    /// The source's branch: where a writeback branch that does not exist yet starts.
    base_branch: String,
    subpath: String,
    author: Identity,
    push: bool,
}

impl Writeback {
    /// Writes to `source`'s repository on `branch` (default: the source's branch), inside
    /// the source's sub-folder. `push` is the Company's `writeback.push`: whether to push
    /// when the source is a remote.
    pub fn new(
        source: &GitSource,
        branch: Option<&str>,
        author: Identity,
        push: bool,
    ) -> Result<Writeback, GitopsError> {
        let path = source.repository_path().to_path_buf();
        // Fail now rather than at the first commit if the repository is unusable.
        Repository::open(&path)?;
        Ok(Writeback {
            path,
            url: source.url().map(str::to_owned),
            branch: branch.unwrap_or(source.branch()).to_owned(),
            base_branch: source.branch().to_owned(),
            subpath: source.subpath().to_owned(),
            author,
            push,
        })
    }

    /// One commit with `changes` and `message`; `Ok(None)` when the changes change nothing.
    /// Secrets in the changes (an audit line carries a tool's input: a `Write`'s content, a
    /// command line) are replaced by [`crate::secrets::MARKER`] first: the record is kept,
    /// the secret never reaches the repository.
    /// For a local repository with a working tree, the branch moves as `git pull` would move
    /// it and the working tree's controller files are brought up to date; if the user has
    /// uncommitted changes to those files, nothing is written and
    /// [`GitopsError::DirtyControllerFiles`] says so.
    pub fn commit(
        &self,
        changes: &[FileChange],
        message: &str,
    ) -> Result<Option<String>, GitopsError> {
        for change in changes {
            check_path(change.path())?;
        }
        let redacted = redact_secrets(changes, |path| self.read(path).ok().flatten());
        let changes = redacted.as_slice();
        let repo = Repository::open(&self.path)?;
        if let Some(url) = &self.url {
            return self.commit_remote(&repo, url, changes, message);
        }
        let checked_out =
            !repo.is_bare() && head_branch(&repo).as_deref() == Some(self.branch.as_str());
        if checked_out {
            // What a killed controller left half-done is finished before anything is judged.
            catch_up::catch_up(&repo)?;
            self.refuse_dirty(&repo, changes)?;
        }
        let mut attempt = 1;
        loop {
            match self.commit_once(&repo, changes, message, checked_out) {
                Ok(None) => return Ok(None),
                Ok(Some(id)) => {
                    if checked_out {
                        catch_up::catch_up(&repo)?;
                    }
                    return Ok(Some(id.to_string()));
                }
                Err(e) if e.code() == ErrorCode::Modified && attempt < LOCAL_ATTEMPTS => {
                    attempt += 1
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A file of the declaration folder at the branch head, if it exists.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, GitopsError> {
        check_path(path)?;
        let repo = Repository::open(&self.path)?;
        let Some(head) = branch_commit(&repo, &self.branch) else {
            return Ok(None);
        };
        let tree = repo.find_commit(head)?.tree()?;
        let entry = match tree.get_path(Path::new(&self.full_path(path))) {
            Ok(entry) => entry,
            Err(e) if e.code() == ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match entry.to_object(&repo)?.into_blob() {
            Ok(blob) => Ok(Some(blob.content().to_vec())),
            Err(_) => Ok(None),
        }
    }

    /// Builds the commit on the cache's branch, pushes it, and only then moves the cache's
    /// branch to it, so the cache never holds a commit the remote refused (a later commit
    /// of the same changes would find nothing to change and report them written). A
    /// rejection fetches the remote's branch and rebuilds the same changes on top of it.
    /// Without `push`, the commit lives in the cache only until the source's next fetch
    /// replaces the branch.
    fn commit_remote(
        &self,
        repo: &Repository,
        url: &str,
        changes: &[Cow<'_, FileChange>],
        message: &str,
    ) -> Result<Option<String>, GitopsError> {
        let refname = format!("refs/heads/{}", self.branch);
        let lock = cache_lock(&self.path);
        let _held = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if branch_commit(repo, &self.branch).is_none() {
            remote::fetch(
                &mut repo.remote_anonymous(url)?,
                &[force_refspec(&self.branch)],
            )?;
        }
        let mut last = String::new();
        for attempt in 0..PUSH_ATTEMPTS {
            let Some(built) = self.build_commit(repo, changes, message, attempt > 0)? else {
                return Ok(None);
            };
            if !self.push {
                match self.move_branch(repo, &built, message) {
                    Ok(()) => return Ok(Some(built.id.to_string())),
                    // Another process fetched meanwhile: build again on what it got.
                    Err(e) if e.code() == ErrorCode::Modified => {
                        last = e.message().to_owned();
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let pushed = match url.strip_prefix("file://").map(Path::new) {
                Some(path) if path.is_dir() => push_local(repo, path, &built, &refname)?,
                _ => {
                    // The commit itself is pushed, by a ref only this writer moves: the
                    // branch's name could by then name what another process fetched into
                    // the cache, and a push of that would report this commit as delivered.
                    repo.reference(PUSHED_REF, built.id, true, "proto: record commit to push")?;
                    remote::push(&mut repo.remote_anonymous(url)?, PUSHED_REF, &refname)?
                }
            };
            match pushed {
                PushOutcome::Pushed => {
                    // The cache follows; a fetch that moved it meanwhile brought something
                    // at least as new.
                    match self.move_branch(repo, &built, message) {
                        Err(e) if e.code() != ErrorCode::Modified => return Err(e.into()),
                        _ => return Ok(Some(built.id.to_string())),
                    }
                }
                PushOutcome::Rejected(message) => {
                    tracing::info!(remote = url, %message, "writeback push rejected; fetching and rebuilding");
                    last = message;
                    remote::fetch(
                        &mut repo.remote_anonymous(url)?,
                        &[force_refspec(&self.branch)],
                    )?;
                }
            }
        }
        Err(GitopsError::PushRejected {
            remote: url.to_owned(),
            attempts: PUSH_ATTEMPTS,
            message: last,
        })
    }

    /// Builds the changes on the branch head and moves the branch to the new commit, if the
    /// head is still what the commit was built on (`ErrorCode::Modified` otherwise). A
    /// `checked_out` branch's move is noted first, for [`catch_up`] to finish the checkout
    /// even if this process dies right after the move.
    fn commit_once(
        &self,
        repo: &Repository,
        changes: &[Cow<'_, FileChange>],
        message: &str,
        checked_out: bool,
    ) -> Result<Option<Oid>, git2::Error> {
        let Some(built) = self.build_commit(repo, changes, message, false)? else {
            return Ok(None);
        };
        if checked_out {
            catch_up::note(repo, built.parent, built.id).map_err(|e| {
                git2::Error::from_str(&format!("cannot note the record commit: {e}"))
            })?;
        }
        self.move_branch(repo, &built, message)?;
        Ok(Some(built.id))
    }

    /// A commit of `changes` on the branch head (or, for a branch not made yet, on the
    /// source's branch), on no branch yet; `None` when the changes change nothing.
    /// `rebuilt`: built again on a head the remote had moved (see [`Self::build_tree`]).
    fn build_commit(
        &self,
        repo: &Repository,
        changes: &[Cow<'_, FileChange>],
        message: &str,
        rebuilt: bool,
    ) -> Result<Option<Built>, git2::Error> {
        let on = branch_commit(repo, &self.branch);
        let parent_id = on.or_else(|| branch_commit(repo, &self.base_branch));
        let parent = parent_id.map(|id| repo.find_commit(id)).transpose()?;
        let tree_id = self.build_tree(repo, parent.as_ref(), changes, rebuilt)?;
        let unchanged = match &parent {
            Some(p) => p.tree_id() == tree_id,
            None => repo.find_tree(tree_id)?.is_empty(),
        };
        if unchanged {
            return Ok(None);
        }
        let tree = repo.find_tree(tree_id)?;
        let signature = Signature::now(&self.author.name, &self.author.email)?;
        let parents: Vec<&Commit<'_>> = parent.iter().collect();
        let id = repo.commit(None, &signature, &signature, message, &tree, &parents)?;
        Ok(Some(Built {
            id,
            parent: parent_id,
            on,
        }))
    }

    /// Moves the branch to `built`, if it is still where the commit was built
    /// (`ErrorCode::Modified` otherwise).
    fn move_branch(
        &self,
        repo: &Repository,
        built: &Built,
        message: &str,
    ) -> Result<(), git2::Error> {
        let refname = format!("refs/heads/{}", self.branch);
        let reflog = format!("commit: {}", message.lines().next().unwrap_or_default());
        let moved = match (branch_commit(repo, &self.branch), built.on) {
            (Some(current), Some(on)) if current == on => repo
                .reference_matching(&refname, built.id, true, current, &reflog)
                .map(drop),
            (None, None) => repo.reference(&refname, built.id, false, &reflog).map(drop),
            _ => Err(moved_meanwhile()),
        };
        match moved {
            Err(e) if e.code() == ErrorCode::Exists || e.message().contains("does not match") => {
                Err(moved_meanwhile())
            }
            other => other,
        }
    }

    /// The tree of `parent` with `changes` applied, written to the repository. An append
    /// whose lines the file already ends with is there already (its commit reached the
    /// remote, and this process died before it knew), and so is one the file holds anywhere
    /// when `rebuilt` on a head the remote moved: appended lines are records, each once.
    fn build_tree(
        &self,
        repo: &Repository,
        parent: Option<&Commit<'_>>,
        changes: &[Cow<'_, FileChange>],
        rebuilt: bool,
    ) -> Result<Oid, git2::Error> {
        let mut index = Index::new()?;
        if let Some(parent) = parent {
            index.read_tree(&parent.tree()?)?;
        }
        for change in changes {
            let full = self.full_path(change.path());
            let existing = index.get_path(Path::new(&full), 0);
            let (id, size) = match change.as_ref() {
                // A rewritten status is megabytes: written as it is, never copied.
                FileChange::Write { content, .. } | FileChange::Scanned { content, .. } => {
                    (repo.blob(content)?, content.len())
                }
                FileChange::Append { content, .. } => {
                    let mut data = match &existing {
                        Some(entry) => repo.find_blob(entry.id)?.content().to_vec(),
                        None => Vec::new(),
                    };
                    if !content.is_empty()
                        && (data.ends_with(content) || (rebuilt && holds(&data, content)))
                    {
                        continue;
                    }
                    data.extend_from_slice(content);
                    (repo.blob(&data)?, data.len())
                }
            };
            let mode = match existing.map(|e| e.mode) {
                Some(mode) if mode == u32::from(git2::FileMode::BlobExecutable) => mode,
                _ => u32::from(git2::FileMode::Blob),
            };
            index.add(&IndexEntry {
                ctime: IndexTime::new(0, 0),
                mtime: IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode,
                uid: 0,
                gid: 0,
                file_size: u32::try_from(size).unwrap_or(u32::MAX),
                id,
                flags: 0,
                flags_extended: 0,
                path: full.into_bytes(),
            })?;
        }
        index.write_tree_to(repo)
    }

    /// Refuses to write when the working tree holds uncommitted changes (staged, unstaged or
    /// untracked) to the controller's files or to any file about to be written.
    fn refuse_dirty(
        &self,
        repo: &Repository,
        changes: &[Cow<'_, FileChange>],
    ) -> Result<(), GitopsError> {
        let mut options = git2::StatusOptions::new();
        options
            .include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(false)
            .exclude_submodules(true)
            .pathspec(format!("{}/", self.full_path(".proto")));
        for change in changes {
            options.pathspec(self.full_path(change.path()));
        }
        let statuses = repo.statuses(Some(&mut options))?;
        let dirty: Vec<String> = statuses
            .iter()
            .filter(|s| {
                s.status() != git2::Status::CURRENT && !s.status().contains(git2::Status::IGNORED)
            })
            .map(|s| String::from_utf8_lossy(s.path_bytes()).into_owned())
            .collect();
        if dirty.is_empty() {
            return Ok(());
        }
        Err(GitopsError::DirtyControllerFiles {
            path: self.path.clone(),
            files: dirty.join(", "),
        })
    }

    /// A declaration-folder path as a repository path.
    fn full_path(&self, path: &str) -> String {
        if self.subpath.is_empty() {
            path.to_owned()
        } else {
            format!("{}/{path}", self.subpath)
        }
    }
}

/// Pushes `built` to `refname` of the repository at `path` (a `file://` remote) as a
/// compare-and-swap. libgit2's local transport checks a push is a fast-forward of the branch
/// as it was when the push began, then moves the branch by force: a person's push landing in
/// between was overwritten, lost from the branch with no one told. So the objects are
/// copied first (loose, the few a record commit adds: libgit2's pack builder searched for
/// deltas between megabytes of status text at each push), and the branch is moved by git
/// (see [`ref_update`]) only from the head the commit was built on; any other head is a
/// rejection, fetched and rebuilt like a server's.
fn push_local(
    repo: &Repository,
    path: &Path,
    built: &Built,
    refname: &str,
) -> Result<PushOutcome, GitopsError> {
    let target = Repository::open(path)?;
    match local_copy::push(repo, &target, refname, built.id, built.on, None)? {
        ref_update::Swap::Moved => {
            local_copy::collect_garbage(&target);
            Ok(PushOutcome::Pushed)
        }
        ref_update::Swap::Raced(why) => Ok(PushOutcome::Rejected(format!(
            "{refname} moved on the remote: {why}"
        ))),
        ref_update::Swap::Locked(why) => Err(GitopsError::Command {
            what: format!("move {refname} in {}", path.display()),
            message: why,
        }),
    }
}

/// The error a branch that moved while a commit was built on it answers, as libgit2 would.
fn moved_meanwhile() -> git2::Error {
    git2::Error::new(
        ErrorCode::Modified,
        git2::ErrorClass::Reference,
        "the branch moved while the record commit was built",
    )
}

/// How often staging is tried while someone else's git holds the index.
const STAGE_ATTEMPTS: u32 = 40;

/// Stages `paths` of the checkout at `workdir` through git itself, which updates the index
/// under git's lock: reading the index here and writing it back would undo whatever the
/// person working in the checkout staged in between. While their git holds the lock, it is
/// tried again.
fn stage(workdir: &Path, paths: &[String]) -> Result<(), GitopsError> {
    if paths.is_empty() {
        return Ok(());
    }
    let mut args = vec!["add", "--"];
    args.extend(paths.iter().map(String::as_str));
    let mut attempt = 1;
    loop {
        match workspace::git(Some(workdir), &args, "stage the records in the checkout") {
            Ok(_) => return Ok(()),
            // git names the held lock in a message that is not its last line; any failure is
            // tried again, briefly, and the last one reported.
            Err(_) if attempt < STAGE_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err(e) => return Err(e),
        }
    }
}

impl FileChange {
    /// The file the change is to.
    pub fn path(&self) -> &str {
        match self {
            FileChange::Write { path, .. }
            | FileChange::Append { path, .. }
            | FileChange::Scanned { path, .. } => path,
        }
    }
}

/// `changes` with every secret in them redacted, each one found logged (file, line, rule;
/// never the secret). A rewritten file is scanned only in the lines it did not hold before
/// (`previous`): those were redacted when they were written. A [`FileChange::Scanned`] file
/// was scanned by its maker.
fn redact_secrets<'a>(
    changes: &'a [FileChange],
    previous: impl Fn(&str) -> Option<Vec<u8>>,
) -> Vec<Cow<'a, FileChange>> {
    changes
        .iter()
        .map(|change| {
            let (path, content, rewritten) = match change {
                FileChange::Scanned { .. } => return Cow::Borrowed(change),
                FileChange::Write { path, content } => (path, content, true),
                FileChange::Append { path, content } => (path, content, false),
            };
            let Ok(text) = std::str::from_utf8(content) else {
                return Cow::Borrowed(change);
            };
            let before = if rewritten { previous(path) } else { None };
            let redacted = match before.as_deref().and_then(|b| std::str::from_utf8(b).ok()) {
                Some(before) => redact_new_lines(path, before, text),
                None => redact_whole(path, text),
            };
            let Some(content) = redacted else {
                return Cow::Borrowed(change);
            };
            let (path, content) = (path.clone(), content.into_bytes());
            Cow::Owned(if rewritten {
                FileChange::Write { path, content }
            } else {
                FileChange::Append { path, content }
            })
        })
        .collect()
}

/// `text` redacted, or `None` when it holds no secret.
fn redact_whole(path: &str, text: &str) -> Option<String> {
    let found = crate::secrets::scan(path, text);
    if found.is_empty() {
        return None;
    }
    for finding in &found {
        tracing::warn!(%finding, "secret redacted from the company's records");
    }
    Some(crate::secrets::redact(path, text))
}

/// `text` with the lines `before` did not hold redacted, or `None` when those hold no
/// secret.
fn redact_new_lines(path: &str, before: &str, text: &str) -> Option<String> {
    let old: std::collections::HashSet<&str> = before.lines().collect();
    let fresh: Vec<&str> = text.lines().filter(|l| !old.contains(l)).collect();
    if fresh.is_empty() {
        return None;
    }
    redact_whole(path, &fresh.join("\n"))?;
    // A secret is there (rare): the whole text is redacted, so one that spans lines (a key
    // block) goes whole, and then each new line on its own, so none escapes for want of
    // the context the whole text gave it.
    let whole = crate::secrets::redact(path, text);
    let mut out = String::with_capacity(whole.len());
    for line in whole.split_inclusive('\n') {
        let bare = line.strip_suffix('\n').unwrap_or(line);
        if old.contains(bare) {
            out.push_str(line);
        } else {
            out.push_str(&crate::secrets::redact(path, line));
        }
    }
    Some(out)
}

/// Whether `haystack` holds `needle` anywhere (a linear-time search for text).
fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    match (std::str::from_utf8(haystack), std::str::from_utf8(needle)) {
        (Ok(h), Ok(n)) => h.contains(n),
        _ => haystack.windows(needle.len()).any(|w| w == needle),
    }
}

/// A change's path must stay inside the declaration folder and out of `.git`.
fn check_path(path: &str) -> Result<(), GitopsError> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.split('/').any(|part| {
            part.is_empty() || part == "." || part == ".." || part.eq_ignore_ascii_case(".git")
        });
    if bad {
        return Err(GitopsError::InvalidPath(path.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_record_is_redacted_in_the_lines_it_adds() {
        let token = ["ghp_", "u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d"].concat();
        let before = "goals:\n- name: a\n  message: ok\n";
        // Nothing new holds a secret: nothing to rewrite.
        let same = format!("{before}- name: b\n  message: fine\n");
        assert_eq!(redact_new_lines("status.yaml", before, &same), None);
        // A new line with a token is redacted; the old lines are kept as they were.
        let leaky = format!("{before}- name: c\n  message: echo GH_TOKEN={token}\n");
        let out = redact_new_lines("status.yaml", before, &leaky).unwrap();
        assert!(!out.contains(&token), "{out}");
        assert!(out.starts_with(before), "{out}");
        // A change with no earlier version is scanned whole.
        let changes = [FileChange::Write {
            path: ".proto/status.yaml".into(),
            content: leaky.clone().into_bytes(),
        }];
        let redacted = redact_secrets(&changes, |_| None);
        let FileChange::Write { content, .. } = redacted[0].as_ref() else {
            panic!("a write stays a write");
        };
        assert!(!String::from_utf8_lossy(content).contains(&token));
    }
}
