//! Delivery's common steps done in-process with libgit2, for a workspace whose files are on
//! this host: committing the work, making the workspace a clean checkout of what would be
//! published, and the compare-and-swap push to a product repository on this host.
//!
//! Each of these is otherwise a shell script of git commands run through the workspace's
//! [`Computer`](crate::computer::Computer) ([`super::delivery`]), about thirty process
//! starts per task (the push alone starts `receive-pack`, `unpack-objects`, `pack-objects`,
//! `rev-list` and `maintenance` on the product's side), which were most of a trivial task's
//! cost. The rules are the scripts' own, and the scripts remain the path for everything
//! else: a workspace on another computer, a rebase onto a tip that moved, and a product
//! whose own git must receive the push (see [`Receiver`]).
//!
//! - The workspace's git state is restored from its [`Pristine`] copy before libgit2 opens
//!   it, as the scripts' prelude does ([`restore`]): agent commands may have written `.git`.
//!   libgit2 runs no hooks, no filter programs and no fsmonitor, and never signs.
//! - A commit stages everything (`git add -A`: new, changed and removed files, ignored ones
//!   left out), is made only when the staged tree differs from HEAD's, and prints what it
//!   adds in git's patch format for the secret scan.
//! - The push moves the product's branch only from the tip the work was built on (git
//!   moves it under its own `.lock` file, through the product's long-lived
//!   `git update-ref --stdin`: see `ref_update`), after copying the objects the product
//!   lacks, loose, as `unpack-objects` would. When loose objects pile up, `git gc --auto`
//!   runs there, as `receive-pack` runs it after a push.
//! - The files are walked only when the workspace's journal does not know what changed
//!   (see [`Journal`]): a commit stages the paths written through the computer, and the
//!   clean checkout compares the index and those paths with HEAD.
//!
//! `PROTO_NATIVE_GIT=0` in the controller's environment turns all of it off (every step by
//! script), for comparing the two.

use std::collections::BTreeSet;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use git2::{
    BranchType, DiffFormat, DiffOptions, ErrorCode, IndexAddOption, Oid, Repository,
    RepositoryOpenFlags, ResetType, Signature, Status, StatusOptions, StatusShow,
};

use super::delivery::{DeliveryError, Lost, Prepared, REVIEW_PREFIX};
use super::ref_update::Swap;
use super::{Identity, local_copy};
use crate::computer::Workspace;
use crate::computer::activity;
use crate::computer::workspace::{Journal, Pristine};

/// The most diff text a commit's secret scan reads (the scripts' limit).
pub(super) const MAX_SCANNED_BYTES: usize = 32 * 1024 * 1024;

/// Hooks of a product repository that `git push` would run on its side: a product with
/// any of them receives through git.
const RECEIVE_HOOKS: [&str; 6] = [
    "pre-receive",
    "update",
    "post-receive",
    "post-update",
    "reference-transaction",
    "proc-receive",
];

/// A workspace on this host, worked on in-process.
#[derive(Clone, Debug)]
pub(super) struct Native {
    root: PathBuf,
    pristine: Pristine,
    repository: crate::computer::workspace::Repository,
    journal: Journal,
}

/// What [`Native::commit_all`] made.
pub(super) struct Committed {
    /// HEAD before the commit (`None`: the branch was unborn).
    pub base: Option<String>,
    pub head: String,
    /// What the commit adds, as `git diff-tree -p -U0 --root` prints it.
    pub diff: String,
    /// More than [`MAX_SCANNED_BYTES`] of it: the diff was cut.
    pub over: bool,
}

impl Native {
    /// The in-process path for `workspace`, when its files are on this host and the
    /// controller knows its pristine git state.
    pub(super) fn of(workspace: &Workspace) -> Option<Native> {
        if !workspace.on_this_host() || std::env::var("PROTO_NATIVE_GIT").as_deref() == Ok("0") {
            return None;
        }
        Some(Native {
            root: workspace.root().to_path_buf(),
            pristine: workspace.pristine()?.clone(),
            repository: workspace.repository().clone(),
            journal: workspace.journal().clone(),
        })
    }

    /// What is known of the workspace's files (see [`Journal`]).
    pub(super) fn journal(&self) -> Journal {
        self.journal.clone()
    }

    /// Runs `step` on the workspace's repository (restored first) off the async threads.
    pub(super) async fn with<T: Send + 'static>(
        &self,
        what: &'static str,
        step: impl FnOnce(&Repository) -> Result<T, DeliveryError> + Send + 'static,
    ) -> Result<T, DeliveryError> {
        let native = self.clone();
        super::tune_libgit2();
        tokio::task::spawn_blocking(move || {
            restore(&native.root, &native.pristine)?;
            let mut slot = native.repository.lock();
            let repo = match slot.take() {
                Some(repo) => repo,
                None => Repository::open_ext(
                    &native.root,
                    RepositoryOpenFlags::NO_SEARCH,
                    std::iter::empty::<&std::ffi::OsStr>(),
                )
                .map_err(git_error(what))?,
            };
            let done = step(&repo);
            *slot = Some(repo);
            done
        })
        .await
        .map_err(|e| DeliveryError::Git {
            command: what.into(),
            detail: format!("the step stopped: {e}"),
        })?
    }
}

/// Restores the workspace's git configuration and alternates to what the computer made it
/// with, refusing a `.git` whose parts are symbolic links (they would lead the controller's
/// git elsewhere). The scripts' prelude does the same in shell.
fn restore(root: &Path, pristine: &Pristine) -> Result<(), DeliveryError> {
    let refused = |detail: String| DeliveryError::Git {
        command: "restore the workspace's git state".into(),
        detail,
    };
    for part in [
        ".git",
        ".git/config",
        ".git/objects",
        ".git/objects/info",
        ".git/refs",
        ".git/HEAD",
        ".git/info",
    ] {
        if std::fs::symlink_metadata(root.join(part)).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(refused(format!(
                "{part} is a symbolic link: the workspace's git directory is not the one the controller made"
            )));
        }
    }
    let git = root.join(".git");
    if !git.is_dir() {
        return Err(refused("the workspace has no git directory".into()));
    }
    for planted in ["commondir", "config.worktree", "info/attributes"] {
        match std::fs::remove_file(git.join(planted)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(refused(format!("{planted}: {e}"))),
        }
    }
    let info = git.join("objects/info");
    std::fs::create_dir_all(&info).map_err(|e| refused(format!("objects/info: {e}")))?;
    for (file, pristine) in [
        (git.join("config"), &pristine.config),
        (info.join("alternates"), &pristine.alternates),
    ] {
        // Rewritten only when it differs: a new modification time makes libgit2 read the
        // configuration again.
        let link = std::fs::symlink_metadata(&file).is_ok_and(|m| m.file_type().is_symlink());
        if link {
            // Written through, a link would write wherever it leads.
            std::fs::remove_file(&file).map_err(|e| refused(format!("{}: {e}", file.display())))?;
        } else if std::fs::read(&file).is_ok_and(|now| now == pristine.as_bytes()) {
            continue;
        }
        std::fs::write(&file, pristine).map_err(|e| refused(format!("{}: {e}", file.display())))?;
    }
    Ok(())
}

/// The commit at HEAD; `None` while the branch is unborn.
pub(super) fn head(repo: &Repository) -> Result<Option<Oid>, DeliveryError> {
    match repo.head() {
        Ok(head) => Ok(Some(
            head.peel_to_commit()
                .map_err(git_error("rev-parse HEAD"))?
                .id(),
        )),
        Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => Ok(None),
        Err(e) => Err(git_error("rev-parse HEAD")(e)),
    }
}

/// `git add -A && git commit`: `Ok(None)` when nothing changed.
///
/// The files are walked only when the `journal` does not know which were written.
pub(super) fn commit_all(
    repo: &Repository,
    journal: &Journal,
    message: &str,
    author: &Identity,
    committer: &Identity,
) -> Result<Option<Committed>, DeliveryError> {
    const WHAT: &str = "add -A && commit";
    let fail = git_error(WHAT);
    let base = head(repo)?;
    let mut index = repo.index().map_err(fail)?;
    let staged = match journal.written() {
        Some(written) => {
            let staged = stage_written(repo, &mut index, &written).ok();
            if staged.is_none() {
                // Half staged: the walk below starts from the index on disk.
                index.read(true).map_err(git_error(WHAT))?;
            }
            staged
        }
        None => None,
    };
    match staged {
        // Only ignored files still differ from the index: the next clean removes them.
        Some(left) => journal.left(left),
        None => {
            // Ignored files are not looked for here: what is in the folder is unknown again.
            journal.forget();
            if stage_changed(repo, &mut index).is_err() {
                // What the status walk cannot stage path by path (a repository nested in
                // the work, a submodule): libgit2's own `add -A`, two walks of the files.
                index.read(true).map_err(git_error(WHAT))?;
                index
                    .add_all(["*"], IndexAddOption::DEFAULT, None)
                    .map_err(git_error(WHAT))?;
                index.update_all(["*"], None).map_err(git_error(WHAT))?;
            }
        }
    }
    let tree_id = super::tree_write::write_tree(repo, &mut index).map_err(git_error(WHAT))?;
    index.write().map_err(git_error(WHAT))?;
    let parent = base
        .map(|b| repo.find_commit(b))
        .transpose()
        .map_err(git_error(WHAT))?;
    let unchanged = match &parent {
        Some(parent) => parent.tree_id() == tree_id,
        None => index.is_empty(),
    };
    if unchanged {
        return Ok(None);
    }
    let message = git2::message_prettify(message, None).map_err(git_error(WHAT))?;
    if message.trim().is_empty() {
        return Err(DeliveryError::Git {
            command: WHAT.into(),
            detail: "Aborting commit due to empty commit message.".into(),
        });
    }
    let signature = |who: &Identity| Signature::now(&who.name, &who.email);
    let tree = repo.find_tree(tree_id).map_err(git_error(WHAT))?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let commit = repo
        .commit(
            Some("HEAD"),
            &signature(author).map_err(git_error(WHAT))?,
            &signature(committer).map_err(git_error(WHAT))?,
            &message,
            &tree,
            &parents,
        )
        .map_err(git_error(WHAT))?;
    let old = parent
        .as_ref()
        .map(git2::Commit::tree)
        .transpose()
        .map_err(git_error(WHAT))?;
    let (diff, over) = added(repo, old.as_ref(), &tree)?;
    Ok(Some(Committed {
        base: base.map(|b| b.to_string()),
        head: commit.to_string(),
        diff,
        over,
    }))
}

/// Stages what differs between the index and the files (`git add -A`), found in one walk
/// of the files: new, changed and retyped files added, removed ones taken out, ignored ones
/// left alone. `Err` leaves the index half staged: the caller reads it again.
fn stage_changed(repo: &Repository, index: &mut git2::Index) -> Result<(), git2::Error> {
    let mut options = StatusOptions::new();
    options
        .show(StatusShow::Workdir)
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    let statuses = repo.statuses(Some(&mut options))?;
    for entry in statuses.iter() {
        let path = Path::new(std::ffi::OsStr::from_bytes(entry.path_bytes()));
        let status = entry.status();
        if path.as_os_str().as_bytes().ends_with(b"/") {
            return Err(git2::Error::from_str("a repository nested in the work"));
        }
        if status.contains(Status::WT_DELETED) {
            index.remove_path(path)?;
        } else if status.intersects(Status::WT_NEW | Status::WT_MODIFIED | Status::WT_TYPECHANGE) {
            add_path(index, path)?;
        }
    }
    Ok(())
}

/// `index.add_path(path)`, the entry's modification time then set to zero. A file the
/// controller stages was most often written in the clock tick the index is written in next
/// (coarse file times make that wider than it sounds), and libgit2 then takes the entry for
/// "racily clean": every later write of the index compares it with its file again, listing
/// its whole folder to find it (a third of a millisecond a task in a folder of 2,000 files).
/// A zero time is never racy; a walk that looks at the file finds its time different and
/// compares the content, as git does with an entry it smudged itself.
fn add_path(index: &mut git2::Index, path: &Path) -> Result<(), git2::Error> {
    index.add_path(path)?;
    if let Some(mut entry) = index.get_path(path, 0) {
        entry.mtime = git2::IndexTime::new(0, 0);
        index.add(&entry)?;
    }
    Ok(())
}

/// `git add -A` of the files the journal says were written, every other file being as the
/// index has it: each is added, or taken out when it is gone; an untracked one git ignores
/// is left alone and answered (it is still there, unlike the index says). `Err` leaves the
/// index half staged: the caller reads it again.
fn stage_written(
    repo: &Repository,
    index: &mut git2::Index,
    written: &BTreeSet<PathBuf>,
) -> Result<BTreeSet<PathBuf>, git2::Error> {
    let root = repo
        .workdir()
        .ok_or_else(|| git2::Error::from_str("a bare repository has no files"))?
        .to_path_buf();
    let mut left = BTreeSet::new();
    for path in written {
        let tracked = index.get_path(path, 0).is_some();
        match std::fs::symlink_metadata(root.join(path)) {
            Ok(meta) if meta.is_dir() => {
                return Err(git2::Error::from_str("a written path is a folder now"));
            }
            Ok(_) if !tracked && repo.is_path_ignored(path)? => {
                left.insert(path.clone());
            }
            Ok(_) => add_path(index, path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if tracked {
                    index.remove_path(path)?;
                }
            }
            Err(e) => return Err(git2::Error::from_str(&e.to_string())),
        }
    }
    Ok(left)
}

/// What `new` adds to `old` (`None`: the empty tree), as `git diff-tree -p -U0` prints it,
/// cut at [`MAX_SCANNED_BYTES`] (the flag says so).
fn added(
    repo: &Repository,
    old: Option<&git2::Tree<'_>>,
    new: &git2::Tree<'_>,
) -> Result<(String, bool), DeliveryError> {
    let mut options = DiffOptions::new();
    options.context_lines(0).interhunk_lines(0);
    let diff = repo
        .diff_tree_to_tree(old, Some(new), Some(&mut options))
        .map_err(git_error("diff-tree -p"))?;
    let mut text = String::new();
    let mut over = false;
    diff.print(DiffFormat::Patch, |_, _, line| {
        let content = String::from_utf8_lossy(line.content());
        let origin = line.origin();
        let extra = usize::from(matches!(origin, '+' | '-' | ' '));
        if text.len() + content.len() + extra > MAX_SCANNED_BYTES {
            over = true;
            return false;
        }
        if extra == 1 {
            text.push(origin);
        }
        text.push_str(&content);
        true
    })
    .or_else(|e| if over { Ok(()) } else { Err(e) })
    .map_err(git_error("diff-tree -p"))?;
    Ok((text, over))
}

/// Moves the branch back to `base` (`None`: unborn again), keeping the index and the files.
pub(super) fn uncommit(repo: &Repository, base: Option<&str>) -> Result<(), DeliveryError> {
    const WHAT: &str = "reset --soft";
    match base {
        Some(base) => {
            let oid = Oid::from_str(base).map_err(git_error(WHAT))?;
            let commit = repo.find_object(oid, None).map_err(git_error(WHAT))?;
            repo.reset(&commit, ResetType::Soft, None)
                .map_err(git_error(WHAT))
        }
        None => {
            let head = repo.find_reference("HEAD").map_err(git_error(WHAT))?;
            let branch = head.symbolic_target().ok().flatten().map(str::to_owned);
            match branch {
                Some(name) => match repo.find_reference(&name) {
                    Ok(mut reference) => reference.delete().map_err(git_error(WHAT)),
                    Err(e) if e.code() == ErrorCode::NotFound => Ok(()),
                    Err(e) => Err(git_error(WHAT)(e)),
                },
                None => Err(DeliveryError::Git {
                    command: WHAT.into(),
                    detail: "HEAD is detached; there is no branch to make unborn".into(),
                }),
            }
        }
    }
}

/// The product repository `origin` names, when it is on this host (a path or a `file://`
/// URL).
fn origin_path(repo: &Repository) -> Option<PathBuf> {
    let remote = repo.find_remote("origin").ok()?;
    let url = remote.url().ok()?;
    match url.strip_prefix("file://") {
        Some(path) => Some(PathBuf::from(path)),
        None if url.starts_with('/') => Some(PathBuf::from(url)),
        None => None,
    }
}

/// `git fetch origin <branch>` from a product on this host: the objects its tip reaches
/// that the workspace lacks are copied, and `origin/<branch>` follows the tip (removed when
/// the product has no such branch). `Ok(None)`: the product is not on this host (git
/// fetches).
pub(super) fn fetch(repo: &Repository, branch: &str) -> Result<Option<Option<Oid>>, DeliveryError> {
    const WHAT: &str = "fetch origin";
    let Some(path) = origin_path(repo) else {
        return Ok(None);
    };
    let product = Repository::open(&path).map_err(git_error(WHAT))?;
    let tracking = format!("refs/remotes/origin/{branch}");
    let tip = match product.find_reference(&format!("refs/heads/{branch}")) {
        Ok(reference) => Some(reference.peel_to_commit().map_err(git_error(WHAT))?.id()),
        Err(e) if e.code() == ErrorCode::NotFound => None,
        Err(e) => return Err(git_error(WHAT)(e)),
    };
    match tip {
        Some(tip) => {
            local_copy::copy_loose(&product, repo, tip).map_err(|e| DeliveryError::Git {
                command: WHAT.into(),
                detail: e.to_string(),
            })?;
            repo.reference(&tracking, tip, true, "fetch")
                .map_err(git_error(WHAT))?;
        }
        None => match repo.find_reference(&tracking) {
            Ok(mut reference) => reference.delete().map_err(git_error(WHAT))?,
            Err(e) if e.code() == ErrorCode::NotFound => {}
            Err(e) => return Err(git_error(WHAT)(e)),
        },
    }
    Ok(Some(tip))
}

/// Whether `tip` is an ancestor of `work` (`git merge-base --is-ancestor`). The work is
/// nearly always a few commits on the tip, found by following parents; libgit2's
/// merge-base search walked far into the product's history for the same answer.
fn descends(repo: &Repository, work: Oid, tip: Oid) -> Result<bool, DeliveryError> {
    const NEAR: usize = 64;
    const WHAT: &str = "merge-base --is-ancestor";
    let mut seen = std::collections::HashSet::new();
    let mut next = vec![work];
    while let Some(id) = next.pop() {
        if id == tip {
            return Ok(true);
        }
        if !seen.insert(id) {
            continue;
        }
        if seen.len() > NEAR {
            return repo.graph_descendant_of(work, tip).map_err(git_error(WHAT));
        }
        next.extend(repo.find_commit(id).map_err(git_error(WHAT))?.parent_ids());
    }
    Ok(false)
}

/// The order of [`commits_after`]'s answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// As `git log` lists them.
    NewestFirst,
    /// Every commit after its parents (`--topo-order --reverse`).
    OldestFirst,
}

/// The commits `head` holds that `base` does not (`git rev-list base..head`; `None`: all of
/// `head`'s history). A line of single-parent commits down to `base` is followed by hand:
/// libgit2's walk, told to hide `base`, first marks the history under it, which grew with
/// every task the product ever had (0.4 ms of each task at 2,000 commits). Anything else
/// (a merge, a `base` far back or not below `head`) is libgit2's walk.
fn commits_after(
    repo: &Repository,
    head: Oid,
    base: Option<Oid>,
    order: Order,
) -> Result<Vec<Oid>, git2::Error> {
    const NEAR: usize = 64;
    if let Some(base) = base {
        let mut line = Vec::new();
        let mut at = head;
        while line.len() <= NEAR {
            if at == base {
                if order == Order::OldestFirst {
                    line.reverse();
                }
                return Ok(line);
            }
            let commit = repo.find_commit(at)?;
            if commit.parent_count() != 1 {
                break;
            }
            line.push(at);
            at = commit.parent_id(0)?;
        }
    }
    let mut walk = repo.revwalk()?;
    walk.push(head)?;
    if let Some(base) = base {
        walk.hide(base)?;
    }
    if order == Order::OldestFirst {
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE)?;
    }
    walk.collect()
}

/// `git rebase <tip>` of a line of single-parent commits that each still change something
/// on the new base and apply without conflict: each is re-made on the last (author and
/// message kept, committed by `committer`) and the branch moved to the result.
/// `Ok(None)`: anything else (a merge, a conflict, a commit the tip already holds), which
/// the script's `git rebase` does and reports.
fn rebase(
    repo: &Repository,
    tip: Oid,
    head: Oid,
    committer: &Identity,
) -> Result<Option<Oid>, DeliveryError> {
    const WHAT: &str = "rebase";
    let line = commits_after(repo, head, Some(tip), Order::OldestFirst).map_err(git_error(WHAT))?;
    let signature = Signature::now(&committer.name, &committer.email).map_err(git_error(WHAT))?;
    let mut onto = repo.find_commit(tip).map_err(git_error(WHAT))?;
    for id in line {
        let commit = repo.find_commit(id).map_err(git_error(WHAT))?;
        if commit.parent_count() != 1 {
            return Ok(None);
        }
        let mut index = repo
            .cherrypick_commit(&commit, &onto, 0, None)
            .map_err(git_error(WHAT))?;
        if index.has_conflicts() {
            return Ok(None);
        }
        let tree = index.write_tree_to(repo).map_err(git_error(WHAT))?;
        if tree == onto.tree_id() {
            return Ok(None);
        }
        let tree = repo.find_tree(tree).map_err(git_error(WHAT))?;
        let made = repo
            .commit(
                None,
                &commit.author(),
                &signature,
                &String::from_utf8_lossy(commit.message_raw_bytes()),
                &tree,
                &[&onto],
            )
            .map_err(git_error(WHAT))?;
        onto = repo.find_commit(made).map_err(git_error(WHAT))?;
    }
    let moved = onto.id();
    let mut branch = repo.head().map_err(git_error(WHAT))?;
    branch
        .set_target(moved, "rebase (finish)")
        .map_err(git_error(WHAT))?;
    Ok(Some(moved))
}

/// [`super::delivery::Git::prepare`] in-process: with `fetch` from a product on this host,
/// and a rebase only of a line of commits that applies cleanly (see [`rebase`]).
/// `Ok(None)`: the script must do it (a fetch from elsewhere, a rebase it cannot do here).
pub(super) fn prepare(
    repo: &Repository,
    journal: &Journal,
    branch: &str,
    fetch_first: bool,
    committer: &Identity,
) -> Result<Option<Prepared>, DeliveryError> {
    const WHAT: &str = "reset --hard && clean -ffdx";
    let tip = if fetch_first {
        match fetch(repo, branch)? {
            Some(tip) => tip,
            None => return Ok(None),
        }
    } else {
        repo.find_branch(&format!("origin/{branch}"), BranchType::Remote)
            .ok()
            .and_then(|b| b.get().peel_to_commit().ok())
            .map(|c| c.id())
    };
    let mut head = head(repo)?;
    let mut rebased = false;
    if let (Some(tip), Some(work)) = (tip, head)
        && tip != work
        && !descends(repo, work, tip)?
    {
        match rebase(repo, tip, work, committer)? {
            Some(moved) => {
                head = Some(moved);
                rebased = true;
            }
            None => return Ok(None),
        }
    }
    match (head, journal.written()) {
        // The files not written since they matched the index still do: only the index and
        // the written paths are compared with HEAD, path by path.
        (Some(head), Some(written)) => {
            reset_clean(repo, head, Some(&written)).map_err(git_error(WHAT))?;
            journal.left(BTreeSet::new());
        }
        (head, _) => {
            let quiet = activity::quiet();
            let (differing, doomed) = differing(repo).map_err(git_error(WHAT))?;
            let dirty = !differing.is_empty();
            match head {
                // Changes beside HEAD (the common case has none: the work was just
                // committed) are undone by a reset, which walks the files again.
                Some(head) if dirty || rebased => {
                    let commit = repo.find_object(head, None).map_err(git_error(WHAT))?;
                    repo.reset(&commit, ResetType::Hard, None)
                        .map_err(git_error(WHAT))?;
                    clean(repo).map_err(git_error(WHAT))?;
                }
                _ => remove(&doomed).map_err(git_error(WHAT))?,
            }
            match quiet.filter(|q| q.holds()) {
                Some(quiet) => journal.matches_index(quiet),
                None => journal.forget(),
            }
        }
    }
    let commits = match head {
        Some(head) => commits_after(repo, head, tip, Order::NewestFirst)
            .map_err(git_error("rev-list"))?
            .iter()
            .map(Oid::to_string)
            .collect(),
        None => Vec::new(),
    };
    Ok(Some(Prepared {
        tip: tip.map(|t| t.to_string()),
        head: head.map(|h| h.to_string()),
        rebased,
        commits,
    }))
}

/// What each commit after `base` (`None`: all of HEAD's history) adds, each preceded by a
/// `mark` line naming it, as the script's `git log -p --diff-merges=first-parent` prints
/// it for the secret scan; the flag says the text was cut at [`MAX_SCANNED_BYTES`].
pub(super) fn log_added(
    repo: &Repository,
    base: Option<&str>,
    mark: &str,
) -> Result<(String, bool), DeliveryError> {
    const WHAT: &str = "log -p (secret scan)";
    let Some(head) = head(repo)? else {
        return Ok((String::new(), false));
    };
    let base = base
        .map(Oid::from_str)
        .transpose()
        .map_err(git_error(WHAT))?;
    let line = commits_after(repo, head, base, Order::NewestFirst).map_err(git_error(WHAT))?;
    let mut text = String::new();
    for id in line {
        let commit = repo.find_commit(id).map_err(git_error(WHAT))?;
        let old = match commit.parent(0) {
            Ok(parent) => Some(parent.tree().map_err(git_error(WHAT))?),
            Err(_) => None,
        };
        let (diff, over) = added(repo, old.as_ref(), &commit.tree().map_err(git_error(WHAT))?)?;
        text.push_str(&format!("{mark}{}\n\n", commit.id()));
        if over || text.len() + diff.len() > MAX_SCANNED_BYTES {
            return Ok((text, true));
        }
        text.push_str(&diff);
    }
    Ok((text, false))
}

/// Makes the workspace's files and index exactly `commit`'s, which HEAD already names
/// (`git reset --hard` and `git clean -ffdx`), in one walk of the files: what the index
/// (a spare's, of an earlier commit) or the files say differently from the commit is
/// written or removed path by path, and whatever git does not track is removed. Anything
/// that cannot be done so is done by a full reset.
///
/// `written`: the files are known to be as the index has them but for these paths (see
/// [`crate::computer::workspace::Journal`]); then only the index is compared with the
/// commit, and the files are not walked.
pub(crate) fn reset_clean(
    repo: &Repository,
    commit: Oid,
    written: Option<&BTreeSet<PathBuf>>,
) -> Result<(), git2::Error> {
    let commit = repo.find_commit(commit)?;
    if let Err(e) = update_paths(repo, &commit.tree()?, written) {
        tracing::debug!("a full reset of the workspace: {e}");
        repo.reset(commit.as_object(), ResetType::Hard, None)?;
        clean(repo)?;
    }
    Ok(())
}

/// [`reset_clean`]'s path-by-path update.
fn update_paths(
    repo: &Repository,
    tree: &git2::Tree<'_>,
    written: Option<&BTreeSet<PathBuf>>,
) -> Result<(), git2::Error> {
    let (differing, doomed) = match written {
        Some(written) => differing_known(repo, tree, written)?,
        None => differing(repo)?,
    };
    remove(&doomed)?;
    if differing.is_empty() {
        return Ok(());
    }
    let root = repo
        .workdir()
        .ok_or_else(|| git2::Error::from_str("a bare repository has no files"))?
        .to_path_buf();
    let mut index = repo.index()?;
    let (kept, gone): (Vec<PathBuf>, Vec<PathBuf>) = differing.into_iter().partition(|path| {
        // A folder of the commit where a file was: the file goes, the folder's files come.
        tree.get_path(path)
            .is_ok_and(|entry| entry.kind() != Some(git2::ObjectType::Tree))
    });
    // Removals first: a file may give way to a folder of the same name.
    for path in &gone {
        remove(&[root.join(path)])?;
        index.remove_path(path)?;
        remove_empty_parents(&root, path);
    }
    if !kept.is_empty() {
        // The index is updated (and written once, below) here, not by the checkout.
        let mut checkout = git2::build::CheckoutBuilder::new();
        checkout
            .force()
            .disable_pathspec_match(true)
            .update_index(false);
        for path in &kept {
            checkout.path(path.as_os_str().as_bytes());
        }
        repo.checkout_tree(tree.as_object(), Some(&mut checkout))?;
        for path in &kept {
            add_path(&mut index, path)?;
        }
    }
    index.write()?;
    Ok(())
}

/// Removes the folders above `path` (relative to `root`) that it left empty.
fn remove_empty_parents(root: &Path, path: &Path) {
    let mut parent = path.parent();
    while let Some(folder) = parent.filter(|p| !p.as_os_str().is_empty()) {
        if std::fs::remove_dir(root.join(folder)).is_err() {
            break;
        }
        parent = folder.parent();
    }
}

/// One walk of the files against the index and HEAD: the paths whose index entry or file
/// differs from HEAD, and every file and folder git does not track (to be removed).
fn differing(repo: &Repository) -> Result<(Vec<PathBuf>, Vec<PathBuf>), git2::Error> {
    let Some(root) = repo.workdir().map(Path::to_path_buf) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut options = StatusOptions::new();
    options
        .include_untracked(true)
        .include_ignored(true)
        .recurse_untracked_dirs(false)
        .recurse_ignored_dirs(false)
        .exclude_submodules(true);
    let statuses = repo.statuses(Some(&mut options))?;
    let (mut differing, mut doomed) = (Vec::new(), Vec::new());
    for entry in statuses.iter() {
        let status = entry.status();
        let bytes = entry.path_bytes();
        let path = std::ffi::OsStr::from_bytes(bytes.strip_suffix(b"/").unwrap_or(bytes));
        if status.intersects(Status::WT_NEW | Status::IGNORED) {
            doomed.push(root.join(path));
        } else if !status.is_empty() {
            differing.push(PathBuf::from(path));
        }
    }
    Ok((differing, doomed))
}

/// [`differing`] without a walk of the files, for files known to be as the index has them
/// but for the `written` paths: the index compared with `tree` (in memory); of the written
/// paths, those `tree` or the index holds differ (written again, or removed), and the
/// others are untracked (removed now, with the folders they leave empty).
fn differing_known(
    repo: &Repository,
    tree: &git2::Tree<'_>,
    written: &BTreeSet<PathBuf>,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>), git2::Error> {
    let Some(root) = repo.workdir().map(Path::to_path_buf) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let index = repo.index()?;
    let diff = repo.diff_tree_to_index(Some(tree), Some(&index), None)?;
    let mut differing: BTreeSet<PathBuf> = diff
        .deltas()
        .filter_map(|delta| delta.new_file().path().or_else(|| delta.old_file().path()))
        .map(Path::to_path_buf)
        .collect();
    for path in written {
        let in_tree = tree
            .get_path(path)
            .is_ok_and(|entry| entry.kind() != Some(git2::ObjectType::Tree));
        if in_tree || index.get_path(path, 0).is_some() {
            differing.insert(path.clone());
        } else if std::fs::symlink_metadata(root.join(path)).is_ok() {
            // As `git clean -ffdx` would: the file, and the folders it leaves empty.
            remove(&[root.join(path)])?;
            remove_empty_parents(&root, path);
        }
    }
    Ok((differing.into_iter().collect(), Vec::new()))
}

/// `git clean -ffdx`: removes every file and folder git does not track, ignored or not,
/// nested repositories too.
fn clean(repo: &Repository) -> Result<(), git2::Error> {
    remove(&differing(repo)?.1)
}

/// Removes `doomed` files and folders (what [`differing`] found untracked).
fn remove(doomed: &[PathBuf]) -> Result<(), git2::Error> {
    for path in doomed {
        let removed = match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
            Err(_) => Ok(()),
        };
        removed.map_err(|e| {
            git2::Error::from_str(&format!("cannot remove {}: {e}", path.display()))
        })?;
    }
    Ok(())
}

/// A product repository on this host that takes a push in-process: bare, with no hook a
/// push would run and no setting of how git receives (`receive.*`, `transfer.fsckObjects`,
/// `core.hooksPath`, `core.sharedRepository`). Any of those, or a product reached by URL,
/// and the push is git's own.
pub(super) struct Receiver {
    path: PathBuf,
}

impl Receiver {
    /// The receiver of a push to `origin` of `repo`, when the in-process push applies.
    pub(super) fn of(repo: &Repository) -> Option<Receiver> {
        let remote = repo.find_remote("origin").ok()?;
        let url = remote.url().ok()?;
        let path = match url.strip_prefix("file://") {
            Some(path) => PathBuf::from(path),
            None if url.starts_with('/') => PathBuf::from(url),
            None => return None,
        };
        let product = Repository::open_bare(&path)
            .ok()
            .filter(Repository::is_bare)?;
        let config = product.config().ok()?.snapshot().ok()?;
        let mut entries = config.entries(None).ok()?;
        while let Some(entry) = entries.next() {
            let entry = entry.ok()?;
            let name = entry.name().ok()?.to_ascii_lowercase();
            if name.starts_with("receive.")
                || matches!(
                    name.as_str(),
                    "transfer.fsckobjects" | "core.hookspath" | "core.sharedrepository"
                )
            {
                return None;
            }
        }
        let hooks = product.path().join("hooks");
        if RECEIVE_HOOKS.iter().any(|hook| hooks.join(hook).exists()) {
            return None;
        }
        Some(Receiver { path })
    }

    /// Pushes `head` to the product's `branch` if, and only if, the branch is at `tip`
    /// (`None`: it does not exist): the objects the product lacks are copied first, then
    /// the branch is moved under its lock. The workspace's `origin/<branch>` follows, as
    /// `git push` moves it.
    pub(super) fn push(
        &self,
        repo: &Repository,
        branch: &str,
        head: Oid,
        tip: Option<Oid>,
    ) -> Result<(), DeliveryError> {
        const WHAT: &str = "push";
        let product = Repository::open_bare(&self.path).map_err(git_error(WHAT))?;
        let target = format!("refs/heads/{branch}");
        let stale = |lost, message: String| DeliveryError::Stale {
            branch: branch.to_string(),
            message,
            lost,
        };
        // The branch is moved by git, under its lock (see `ref_update`): a controller killed
        // mid-move leaves no `<branch>.lock` behind.
        let mirror = mirror_objects(repo);
        let moved = local_copy::push(repo, &product, &target, head, tip, mirror.as_deref())
            .map_err(|e| DeliveryError::Git {
                command: WHAT.into(),
                detail: format!("pushing the work to {}: {e}", self.path.display()),
            })?;
        match moved {
            Swap::Moved => {}
            Swap::Locked(said) => {
                return Err(stale(
                    Lost::ServerLock,
                    format!(
                        "cannot lock ref '{target}' in {}: {said}",
                        self.path.display()
                    ),
                ));
            }
            Swap::Raced(said) => return Err(stale(Lost::Lease, format!("stale info ({said})"))),
        }
        repo.reference(
            &format!("refs/remotes/origin/{branch}"),
            head,
            true,
            "update by push",
        )
        .map_err(git_error(WHAT))?;
        drop(product);
        let path = self.path.clone();
        super::housekeeping::later(&self.path, move || {
            if let Ok(product) = Repository::open_bare(&path) {
                local_copy::collect_garbage(&product);
            }
        });
        Ok(())
    }
}

/// The objects folder the workspace reads through (its mirror's), as its alternates name
/// it: restored to what the computer made before every step (see [`restore`]).
fn mirror_objects(repo: &Repository) -> Option<PathBuf> {
    let objects = repo.path().join("objects");
    let alternates = std::fs::read_to_string(objects.join("info/alternates")).ok()?;
    let line = alternates
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))?;
    Some(objects.join(line))
}

/// [`super::delivery::Git::push`] in-process: `Ok(None)` when the product must receive the
/// push through git (see [`Receiver`]).
pub(super) fn push(
    repo: &Repository,
    branch: &str,
    tip: Option<&str>,
) -> Result<Option<String>, DeliveryError> {
    let Some(receiver) = Receiver::of(repo) else {
        return Ok(None);
    };
    let Some(head) = head(repo)? else {
        return Err(DeliveryError::Git {
            command: "push".into(),
            detail: "nothing is committed".into(),
        });
    };
    let tip = tip
        .map(Oid::from_str)
        .transpose()
        .map_err(git_error("push"))?;
    // A review branch is the controller's own: it may be replaced, never a product's.
    if let Some(tip) = tip.filter(|_| !branch.starts_with(REVIEW_PREFIX))
        && tip != head
        && !descends(repo, head, tip)?
    {
        return Err(DeliveryError::Git {
            command: "push".into(),
            detail: format!("{head} does not descend from {branch}'s tip {tip}"),
        });
    }
    receiver.push(repo, branch, head, tip)?;
    Ok(Some(head.to_string()))
}

fn git_error(command: &'static str) -> impl Fn(git2::Error) -> DeliveryError {
    move |e| DeliveryError::Git {
        command: command.into(),
        detail: e.message().to_string(),
    }
}

#[cfg(test)]
mod tests;
