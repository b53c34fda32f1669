//! The product side of git: a task's workspace is a clone of the product repository; work
//! is committed there and pushed to the product's branch.

use std::path::Path;

use super::{GitopsError, Identity};

/// What a workspace's repository looks like now (for re-examining a step after a crash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkspaceState {
    /// The commit id at HEAD (`None` in an empty repository).
    pub head: Option<String>,
    /// The first line of HEAD's message.
    pub head_message: Option<String>,
    /// No uncommitted changes (untracked files count as changes).
    pub clean: bool,
}

/// Clones `repo` (a path or URL) at `branch` into `dir`, or opens `dir` if it already holds
/// that clone. An empty repository or a missing branch gives a workspace on a new branch.
pub fn clone_or_open(repo: &str, branch: &str, dir: &Path) -> Result<(), GitopsError> {
    let _ = (repo, branch, dir);
    todo!()
}

/// Stages everything (`git add -A`) and commits as `author`; `Ok(None)` when nothing changed.
pub fn commit_all(
    dir: &Path,
    message: &str,
    author: &Identity,
) -> Result<Option<String>, GitopsError> {
    let _ = (dir, message, author);
    todo!()
}

pub fn state(dir: &Path) -> Result<WorkspaceState, GitopsError> {
    let _ = dir;
    todo!()
}

/// Pushes HEAD to `branch` of `origin`. A non-fast-forward rejection fetches, rebases the
/// local commits onto the remote branch and retries (a few times); never forces.
pub fn push(dir: &Path, branch: &str) -> Result<(), GitopsError> {
    let _ = (dir, branch);
    todo!()
}

/// Whether `branch` of `origin` already contains `commit` (after a fetch).
pub fn pushed(dir: &Path, branch: &str, commit: &str) -> Result<bool, GitopsError> {
    let _ = (dir, branch, commit);
    todo!()
}
