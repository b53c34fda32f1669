//! The product side of git: a task's workspace is a clone of the product repository; work
//! is committed there and pushed to the product's branch.
//!
//! A product repository given as a local path must be bare (`git init --bare x.git`), as
//! any shared repository is: git refuses a push to the checked-out branch of a repository
//! with a working tree, and libgit2's local transport refuses pushing to any non-bare
//! repository.

use std::path::Path;

use git2::build::CheckoutBuilder;
use git2::{
    Commit, ErrorCode, IndexAddOption, Oid, RebaseOptions, Repository, Signature, StatusOptions,
};

use super::{GitopsError, Identity, PUSH_ATTEMPTS};
use crate::source::remote::{self, PushOutcome};

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
///
/// A missing branch starts at the remote's default branch (as `git checkout -b` would), so
/// the work builds on the product's code; only an empty repository gives an unborn branch.
/// `origin` is configured last, so a clone interrupted half-way is redone, not trusted.
pub fn clone_or_open(repo: &str, branch: &str, dir: &Path) -> Result<(), GitopsError> {
    if let Ok(existing) = Repository::open(dir)
        && existing.find_remote("origin").is_ok()
    {
        return Ok(());
    }
    let url = if remote::is_url(repo) {
        repo.to_owned()
    } else {
        std::path::absolute(repo)
            .map_err(|source| GitopsError::Io {
                path: repo.into(),
                source,
            })?
            .to_string_lossy()
            .into_owned()
    };
    let local = Repository::init(dir)?;
    let tracking = tracking_ref(branch);
    let mut anonymous = local.remote_anonymous(&url)?;
    let heads = remote::fetch(&mut anonymous, &[tracking_refspec(branch)])?;
    let has_branch = heads
        .iter()
        .any(|(name, _)| *name == format!("refs/heads/{branch}"));
    let start = if has_branch {
        Some(local.find_reference(&tracking)?.peel_to_commit()?.id())
    } else {
        // The branch is new: start it where the remote's HEAD is, if the remote has one.
        match remote::default_branch(&local, &url)? {
            Some(default) => {
                remote::fetch(&mut anonymous, &[tracking_refspec(&default)])?;
                Some(
                    local
                        .find_reference(&tracking_ref(&default))?
                        .peel_to_commit()?
                        .id(),
                )
            }
            None => None,
        }
    };
    let local_ref = format!("refs/heads/{branch}");
    if let Some(start) = start {
        local.reference(&local_ref, start, true, "clone: start the workspace branch")?;
    }
    local.set_head(&local_ref)?;
    if start.is_some() {
        local.checkout_head(Some(CheckoutBuilder::new().force()))?;
    }
    let mut config = local.config()?;
    config.set_str(&format!("branch.{branch}.remote"), "origin")?;
    config.set_str(&format!("branch.{branch}.merge"), &local_ref)?;
    local.remote("origin", &url)?;
    Ok(())
}

/// Stages everything (`git add -A`) and commits as `author`; `Ok(None)` when nothing changed.
pub fn commit_all(
    dir: &Path,
    message: &str,
    author: &Identity,
) -> Result<Option<String>, GitopsError> {
    let repo = Repository::open(dir)?;
    let mut index = repo.index()?;
    index.add_all(["*"], IndexAddOption::DEFAULT, None)?;
    // add_all stages new and modified files; update_all stages the deletions.
    index.update_all(["*"], None)?;
    index.write()?;
    let tree_id = index.write_tree()?;
    let parent = head_commit(&repo)?;
    let unchanged = match &parent {
        Some(parent) => parent.tree_id() == tree_id,
        None => index.is_empty(),
    };
    if unchanged {
        return Ok(None);
    }
    let tree = repo.find_tree(tree_id)?;
    let signature = Signature::now(&author.name, &author.email)?;
    let parents: Vec<&Commit<'_>> = parent.iter().collect();
    let id = repo.commit(
        Some("HEAD"),
        &signature,
        &signature,
        message,
        &tree,
        &parents,
    )?;
    Ok(Some(id.to_string()))
}

/// What the workspace's repository looks like now.
pub fn state(dir: &Path) -> Result<WorkspaceState, GitopsError> {
    let repo = Repository::open(dir)?;
    let head = head_commit(&repo)?;
    let mut options = StatusOptions::new();
    options.include_untracked(true).include_ignored(false);
    let clean = repo.statuses(Some(&mut options))?.is_empty();
    Ok(WorkspaceState {
        head: head.as_ref().map(|c| c.id().to_string()),
        head_message: head
            .as_ref()
            .and_then(|c| c.summary().ok().flatten().map(str::to_owned)),
        clean,
    })
}

/// Pushes HEAD to `branch` of `origin`. A non-fast-forward rejection fetches, rebases the
/// local commits onto the remote branch and retries (a few times); never forces.
pub fn push(dir: &Path, branch: &str) -> Result<(), GitopsError> {
    let repo = Repository::open(dir)?;
    if head_commit(&repo)?.is_none() {
        // Nothing committed, nothing to push.
        return Ok(());
    }
    let mut origin = repo.find_remote("origin")?;
    let remote_name = origin.url().unwrap_or("origin").to_owned();
    let remote_ref = format!("refs/heads/{branch}");
    let mut last = String::new();
    for _ in 0..PUSH_ATTEMPTS {
        let head = repo.head()?;
        let local_ref = head.name()?.to_owned();
        let local_id = head.peel_to_commit()?.id();
        match remote::push(&mut origin, &local_ref, &remote_ref)? {
            PushOutcome::Pushed => {
                // What `git push` does too: the tracking branch now shows what was pushed.
                repo.reference(&tracking_ref(branch), local_id, true, "push")?;
                return Ok(());
            }
            PushOutcome::Rejected(message) => {
                tracing::info!(remote = %remote_name, branch, %message, "push rejected; fetching and rebasing");
                last = message;
                let heads = remote::fetch(&mut origin, &[tracking_refspec(branch)])?;
                if heads.iter().any(|(name, _)| *name == remote_ref) {
                    rebase_onto(&repo, &tracking_ref(branch), &remote_name)?;
                }
            }
        }
    }
    Err(GitopsError::PushRejected {
        remote: remote_name,
        attempts: PUSH_ATTEMPTS,
        message: last,
    })
}

/// Whether `branch` of `origin` already contains `commit` (after a fetch).
pub fn pushed(dir: &Path, branch: &str, commit: &str) -> Result<bool, GitopsError> {
    let repo = Repository::open(dir)?;
    let commit = Oid::from_str(commit)?;
    let mut origin = repo.find_remote("origin")?;
    let heads = remote::fetch(&mut origin, &[tracking_refspec(branch)])?;
    let remote_ref = format!("refs/heads/{branch}");
    // The advertisement, not the tracking ref: a branch deleted on the remote is not
    // pruned from the tracking refs by a fetch.
    let Some(tip) = heads
        .iter()
        .find(|(name, _)| *name == remote_ref)
        .map(|(_, id)| *id)
    else {
        return Ok(false);
    };
    if tip == commit {
        return Ok(true);
    }
    if repo.find_commit(commit).is_err() {
        // A commit this clone never had cannot be one it pushed.
        return Ok(false);
    }
    Ok(repo.graph_descendant_of(tip, commit)?)
}

fn tracking_ref(branch: &str) -> String {
    format!("refs/remotes/origin/{branch}")
}

fn tracking_refspec(branch: &str) -> String {
    format!("+refs/heads/{branch}:refs/remotes/origin/{branch}")
}

/// The commit at HEAD; `None` while the branch is unborn.
fn head_commit(repo: &Repository) -> Result<Option<Commit<'_>>, git2::Error> {
    match repo.head() {
        Ok(head) => Ok(Some(head.peel_to_commit()?)),
        Err(e) if matches!(e.code(), ErrorCode::UnbornBranch | ErrorCode::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replays the commits of HEAD that `upstream` lacks on top of it, keeping their authors
/// and committers. A conflict aborts the rebase, leaving HEAD as it was.
fn rebase_onto(repo: &Repository, upstream: &str, remote_name: &str) -> Result<(), GitopsError> {
    let onto = repo.reference_to_annotated_commit(&repo.find_reference(upstream)?)?;
    let local = repo.reference_to_annotated_commit(&repo.head()?)?;
    let mut options = RebaseOptions::new();
    let mut rebase = repo.rebase(Some(&local), Some(&onto), None, Some(&mut options))?;
    while let Some(operation) = rebase.next() {
        let operation = operation?;
        let index = repo.index()?;
        if index.has_conflicts() {
            let files: Vec<String> = index
                .conflicts()?
                .filter_map(Result::ok)
                .filter_map(|c| c.our.or(c.their).or(c.ancestor))
                .map(|e| String::from_utf8_lossy(&e.path).into_owned())
                .collect();
            rebase.abort()?;
            return Err(GitopsError::RebaseConflict {
                remote: remote_name.to_owned(),
                files: files.join(", "),
            });
        }
        let original = repo.find_commit(operation.id())?;
        match rebase.commit(None, &original.committer(), None) {
            Ok(_) => {}
            // The remote already has this change.
            Err(e) if e.code() == ErrorCode::Applied => {}
            Err(e) => {
                rebase.abort()?;
                return Err(e.into());
            }
        }
    }
    rebase.finish(None)?;
    Ok(())
}
