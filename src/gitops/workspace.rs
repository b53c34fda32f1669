//! A task's workspace: a clone of the product repository at the product's branch
//! ([`clone_or_open`]). Everything after the clone (committing the work, fetching the
//! branch's tip, rebasing onto it, the compare-and-swap push) is [`super::delivery`]'s,
//! done with the `git` command line through the task's computer, so there is one way a
//! product's work is committed and published.
//!
//! A product repository given as a local path must be bare (`git init --bare x.git`), as
//! any shared repository is: git refuses a push to the checked-out branch of a repository
//! with a working tree.

use std::path::Path;

use git2::Repository;
use git2::build::CheckoutBuilder;

use super::GitopsError;
use crate::source::remote;

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

fn tracking_ref(branch: &str) -> String {
    format!("refs/remotes/origin/{branch}")
}

fn tracking_refspec(branch: &str) -> String {
    format!("+refs/heads/{branch}:refs/remotes/origin/{branch}")
}
