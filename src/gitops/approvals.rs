//! Approval requests as git, in the company repository. A request is a commit on its own
//! branch, `proto/approvals/<id>`, adding `approvals/<id>.yaml` (who asks, the action and
//! its full input, the reason, when it expires, the diff it would publish). A person
//! answers the way they answer any change:
//! - **approve**: merge the branch into the watched branch. The commit that brought the file
//!   into the branch's first-parent history names who approved: a merge commit's
//!   committer, or the author of a commit that arrived by fast-forward. It counts only when
//!   that person is in `approvals.approvers` and is neither the controller's writeback
//!   identity nor an agent's, and (with `requireSignedMerges`) its signature verifies;
//! - **deny**: commit `status: denied` (and a `reason:`) to the file, or delete the branch.
//!
//! This module reads and writes git only; what an answer does to the task is the store's.

use std::path::Path;

use chrono::{DateTime, Utc};
use git2::{Commit, Oid, Repository};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{FileChange, GitopsError, Identity};
use crate::store::Approval;

/// The branch a request lives on.
pub fn request_branch(id: &str) -> String {
    format!("proto/approvals/{id}")
}

/// The request's file, relative to the declaration folder.
pub fn request_file(id: &str) -> String {
    format!("approvals/{id}.yaml")
}

/// What the request file says, as committed.
#[derive(Serialize, Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct RequestFile {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    id: String,
    /// `pending` as asked; a person sets `denied` (with a `reason`) to deny.
    #[serde(default)]
    status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request: Option<RequestBody>,
}

#[derive(Serialize, Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct RequestBody {
    goal: String,
    task: i64,
    attempt: u32,
    step: u32,
    agent: String,
    action: String,
    input: Value,
    why: String,
    requested: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    review: Option<Review>,
}

#[derive(Serialize, Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct Review {
    product: String,
    branch: String,
    commit: String,
}

/// The file that asks, with the diff as a literal block a reviewer reads as a diff.
pub fn request_yaml(
    approval: &Approval,
    product: &str,
) -> Result<String, serde_saphyr::SerializeError> {
    let file = RequestFile {
        api_version: "proto.dev/v1alpha1".into(),
        kind: "ApprovalRequest".into(),
        id: approval.id.clone(),
        status: "pending".into(),
        reason: None,
        request: Some(RequestBody {
            goal: approval.goal.clone(),
            task: approval.task,
            attempt: approval.attempt,
            step: approval.step,
            agent: approval.agent.clone(),
            action: approval.action.clone(),
            input: approval.input.clone(),
            why: approval.reason.clone(),
            requested: approval.requested_at,
            expires: approval.expires_at,
            review: approval.reviewed.as_ref().map(|commit| Review {
                product: product.to_string(),
                branch: super::delivery::review_branch(&approval.goal),
                commit: commit.clone(),
            }),
        }),
    };
    let mut yaml = format!(
        "# Approve: merge this branch ({}). Deny: set `status: denied` and a `reason:`,\n\
         # or delete the branch.\n",
        request_branch(&approval.id)
    );
    yaml.push_str(&serde_saphyr::to_string(&file)?);
    if let Some(diff) = approval.diff.as_deref().filter(|d| !d.is_empty()) {
        yaml.push_str("diff: |2\n");
        for line in diff.lines() {
            yaml.push_str("  ");
            yaml.push_str(line);
            yaml.push('\n');
        }
    }
    Ok(yaml)
}

/// The change that publishes a request (on its own branch; see [`super::Writeback`]).
pub fn request_change(approval: &Approval, product: &str) -> Result<FileChange, GitopsError> {
    let yaml = request_yaml(approval, product)
        .map_err(|e| GitopsError::Record(format!("approval {}: {e}", approval.id)))?;
    Ok(FileChange::Write {
        path: request_file(&approval.id),
        content: yaml.into_bytes(),
    })
}

/// Who may answer, and how their answer is checked.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// `approvals.approvers`: emails, compared without case.
    pub approvers: Vec<String>,
    /// The controller's writeback identity: never an approver.
    pub controller: Option<Identity>,
    /// `approvals.requireSignedMerges`.
    pub require_signed: bool,
}

/// What git says about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Pending,
    Approved {
        by: String,
        commit: String,
    },
    Denied {
        by: String,
        reason: String,
    },
    /// The file reached the branch, but not by a person allowed to approve: refused (and
    /// audited), the request keeps waiting.
    Refused {
        by: String,
        why: String,
    },
}

/// Reads the answer to request `id` in the repository at `path`: the watched `branch`, the
/// request's branch, and the declaration folder `subpath`.
pub fn read_answer(
    path: &Path,
    branch: &str,
    subpath: &str,
    id: &str,
    policy: &Policy,
) -> Result<Answer, GitopsError> {
    let repo = Repository::open(path)?;
    let file = full_path(subpath, &request_file(id));
    let tip = match repo.find_branch(branch, git2::BranchType::Local) {
        Ok(b) => b.get().peel_to_commit()?,
        Err(_) => return Ok(Answer::Pending),
    };
    let request = repo
        .find_branch(&request_branch(id), git2::BranchType::Local)
        .ok()
        .map(|b| b.get().peel_to_commit())
        .transpose()?;
    // A denial on the request's branch is final, whatever reached the watched branch.
    if let Some(request) = &request
        && let Some(content) = blob_at(&repo, request, &file)?
    {
        let said = parse(&content);
        if said.status == "denied" {
            return Ok(Answer::Denied {
                by: email_of(&request.author()),
                reason: said.reason.unwrap_or_else(|| "denied".into()),
            });
        }
    }
    if let Some(content) = blob_at(&repo, &tip, &file)? {
        let said = parse(&content);
        let introduced = introducing_commit(&tip, &file)?;
        if said.status == "denied" {
            return Ok(Answer::Denied {
                by: email_of(&introduced.author()),
                reason: said.reason.unwrap_or_else(|| "denied".into()),
            });
        }
        return Ok(judge(path, &introduced, policy));
    }
    let Some(request) = request else {
        return Ok(Answer::Denied {
            by: "unknown".into(),
            reason: format!("the branch {} was deleted", request_branch(id)),
        });
    };
    match blob_at(&repo, &request, &file)? {
        Some(_) => Ok(Answer::Pending),
        None => Ok(Answer::Denied {
            by: email_of(&request.author()),
            reason: format!("{} was removed from its branch", request_file(id)),
        }),
    }
}

/// Whether the commit that brought the request into the watched branch approves it.
fn judge(path: &Path, commit: &Commit<'_>, policy: &Policy) -> Answer {
    // A merge names its merger as committer; a fast-forward brings the person's own commit.
    let who = if commit.parent_count() > 1 {
        commit.committer()
    } else {
        commit.author()
    };
    let by = email_of(&who);
    let refuse = |why: String| Answer::Refused {
        by: by.clone(),
        why,
    };
    if let Some(controller) = &policy.controller {
        if by.eq_ignore_ascii_case(&controller.email) {
            return refuse("made by the controller's own identity".into());
        }
        let agents = controller
            .email
            .rsplit_once('@')
            .map(|(_, domain)| format!("@agents.{domain}"));
        if agents.is_some_and(|a| by.to_ascii_lowercase().ends_with(&a.to_ascii_lowercase())) {
            return refuse("made by an agent's identity: an agent never approves".into());
        }
    }
    if !policy
        .approvers
        .iter()
        .any(|a| a.trim().eq_ignore_ascii_case(&by))
    {
        return refuse(format!(
            "{by} is not in approvals.approvers ({})",
            policy.approvers.join(", ")
        ));
    }
    if policy.require_signed {
        let id = commit.id().to_string();
        match verify_commit(path, &id) {
            Ok(()) => {}
            Err(why) => {
                return refuse(format!(
                    "the approving commit {id} is not signed by a trusted key: {why}"
                ));
            }
        }
    }
    Answer::Approved {
        by,
        commit: commit.id().to_string(),
    }
}

/// `git verify-commit`, with the repository's own configuration (GPG keyring, or
/// `gpg.ssh.allowedSignersFile` for SSH signatures).
fn verify_commit(path: &Path, id: &str) -> Result<(), String> {
    let out = std::process::Command::new(crate::program::program("git"))
        .arg("-C")
        .arg(path)
        .args(["verify-commit", id])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run git verify-commit: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let said = String::from_utf8_lossy(&out.stderr);
        Err(said
            .lines()
            .last()
            .unwrap_or("no valid signature")
            .trim()
            .to_string())
    }
}

/// The oldest commit of `tip`'s first-parent history that holds `file` with its parent not
/// holding it: the commit that brought it into the branch.
fn introducing_commit<'r>(tip: &Commit<'r>, file: &str) -> Result<Commit<'r>, GitopsError> {
    let mut current = tip.clone();
    // Bounded: a history longer than this is read no further (the answer is then the
    // oldest commit seen holding the file).
    for _ in 0..100_000 {
        let Ok(parent) = current.parent(0) else {
            break;
        };
        if blob_id(&parent, file)?.is_none() {
            break;
        }
        current = parent;
    }
    Ok(current)
}

fn blob_id(commit: &Commit<'_>, file: &str) -> Result<Option<Oid>, GitopsError> {
    match commit.tree()?.get_path(Path::new(file)) {
        Ok(entry) => Ok(Some(entry.id())),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn blob_at(
    repo: &Repository,
    commit: &Commit<'_>,
    file: &str,
) -> Result<Option<Vec<u8>>, GitopsError> {
    match blob_id(commit, file)? {
        Some(id) => Ok(Some(repo.find_blob(id)?.content().to_vec())),
        None => Ok(None),
    }
}

/// The file's status and reason; a file that does not parse is still pending (a person
/// mid-edit), never an approval.
fn parse(content: &[u8]) -> RequestFile {
    std::str::from_utf8(content)
        .ok()
        .and_then(|text| serde_saphyr::from_str::<RequestFile>(text).ok())
        .unwrap_or_default()
}

fn email_of(signature: &git2::Signature<'_>) -> String {
    signature.email().unwrap_or_default().to_string()
}

fn full_path(subpath: &str, path: &str) -> String {
    if subpath.is_empty() {
        path.to_string()
    } else {
        format!("{}/{path}", subpath.trim_end_matches('/'))
    }
}

/// Whether `who` may answer requests of the company `spec` declares: their email is one of
/// the Company's `approvals.approvers`. `Err` says why not, naming the approvers.
pub fn may_answer(spec: &crate::spec::Spec, who: &Identity) -> Result<(), String> {
    let approvers = spec
        .company()
        .and_then(|c| c.spec.approvals.as_ref())
        .map(|a| a.approvers.clone())
        .unwrap_or_default();
    if approvers
        .iter()
        .any(|a| a.trim().eq_ignore_ascii_case(&who.email))
    {
        return Ok(());
    }
    Err(format!(
        "{} <{}> is not an approver of this company (Company spec.approvals.approvers: {})",
        who.name,
        who.email,
        if approvers.is_empty() {
            "none".to_string()
        } else {
            approvers.join(", ")
        }
    ))
}

/// Times a merge that found the repository locked by the controller's own commit is tried
/// again (every 20 ms: a record commit takes well under a second).
const LOCKED_RETRIES: usize = 100;

/// `proto approve`: merges the request's branch into the watched `branch` as `who` (a merge
/// commit, so the approver is its committer). A checked-out branch is merged with `git
/// merge` in its working tree; otherwise the merge commit is made in the repository and the
/// branch moved only if it has not moved meanwhile. Answers the merge commit.
pub fn approve(path: &Path, branch: &str, id: &str, who: &Identity) -> Result<String, GitopsError> {
    let repo = Repository::open(path)?;
    // In a clone of the company repository the request is `origin`'s branch.
    let (request, request_ref) = match repo
        .find_reference(&format!("refs/heads/{}", request_branch(id)))
        .or_else(|_| repo.find_reference(&format!("refs/remotes/origin/{}", request_branch(id))))
    {
        Ok(r) => {
            let name = r.name().unwrap_or_default().to_string();
            (r.peel_to_commit()?, name)
        }
        Err(_) => return Err(no_request(id)),
    };
    let message = format!(
        "Approve {id}\n\nMerge {} as an approval.",
        request_branch(id)
    );
    let checked_out = !repo.is_bare()
        && repo
            .head()
            .ok()
            .and_then(|h| h.shorthand().ok().map(str::to_owned))
            .as_deref()
            == Some(branch);
    if checked_out {
        // A controller killed mid record commit leaves the checkout behind the branch, which
        // `git merge` would take for local changes.
        super::catch_up::catch_up(&repo)?;
        let workdir = repo.workdir().unwrap_or(path).to_path_buf();
        let merge = || {
            std::process::Command::new(crate::program::program("git"))
                .current_dir(&workdir)
                .args(["merge", "--no-ff", "--no-edit", "-m", &message])
                .arg(&request_ref)
                .envs(identity_vars(who))
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| GitopsError::Io {
                    path: workdir.clone(),
                    source: e,
                })
        };
        // A merge already under way (someone's) is not ours to undo.
        let ours = !repo.path().join("MERGE_HEAD").exists();
        let mut out = merge()?;
        // A running controller commits its records to this repository (and one just killed
        // may leave its git finishing): a merge that finds the index or a ref locked is tried
        // again once it is free. One that found the branch locked only at its end has
        // already written the merge into the files and MERGE_HEAD: it is undone first.
        for _ in 0..LOCKED_RETRIES {
            let said = String::from_utf8_lossy(&out.stderr);
            if out.status.success() || !(said.contains(".lock") || said.contains("cannot lock ref"))
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            if ours && repo.path().join("MERGE_HEAD").exists() {
                let _ = std::process::Command::new(crate::program::program("git"))
                    .current_dir(&workdir)
                    .args(["merge", "--abort"])
                    .stdin(std::process::Stdio::null())
                    .output();
            }
            out = merge()?;
        }
        if !out.status.success() {
            return Err(GitopsError::Command {
                what: format!("merge {}", request_branch(id)),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        return Ok(repo.head()?.peel_to_commit()?.id().to_string());
    }
    let refname = format!("refs/heads/{branch}");
    let target = repo.find_reference(&refname)?.peel_to_commit()?;
    let mut index = repo.merge_commits(&target, &request, None)?;
    if index.has_conflicts() {
        return Err(GitopsError::Command {
            what: format!("merge {}", request_branch(id)),
            message: format!("it conflicts with {branch}"),
        });
    }
    let tree = repo.find_tree(index.write_tree_to(&repo)?)?;
    let signature = git2::Signature::now(&who.name, &who.email)?;
    let merge = repo.commit(
        None,
        &signature,
        &signature,
        &message,
        &tree,
        &[&target, &request],
    )?;
    repo.reference_matching(&refname, merge, true, target.id(), &message)?;
    Ok(merge.to_string())
}

/// `proto deny`: commits `status: denied` and `reason` to the request's file on its branch,
/// as `who`. Answers the commit.
pub fn deny(
    path: &Path,
    subpath: &str,
    id: &str,
    who: &Identity,
    reason: &str,
) -> Result<String, GitopsError> {
    let repo = Repository::open(path)?;
    let refname = format!("refs/heads/{}", request_branch(id));
    let tip = repo
        .find_reference(&refname)
        .map_err(|_| no_request(id))?
        .peel_to_commit()?;
    let file = full_path(subpath, &request_file(id));
    let content = blob_at(&repo, &tip, &file)?.ok_or_else(|| no_request(id))?;
    let text = String::from_utf8_lossy(&content);
    // JSON's quoting is YAML's: the reason is one safe scalar whatever it holds.
    let quoted = serde_json::to_string(reason).unwrap_or_else(|_| "\"denied\"".into());
    let mut denied = String::new();
    let mut replaced = false;
    for line in text.lines() {
        if !replaced && line.starts_with("status:") {
            denied.push_str(&format!("status: denied\nreason: {quoted}\n"));
            replaced = true;
        } else if !line.starts_with("reason:") {
            denied.push_str(line);
            denied.push('\n');
        }
    }
    if !replaced {
        denied = format!("status: denied\nreason: {quoted}\n{denied}");
    }
    let mut builder = git2::build::TreeUpdateBuilder::new();
    builder.upsert(
        file.as_str(),
        repo.blob(denied.as_bytes())?,
        git2::FileMode::Blob,
    );
    let tree = repo.find_tree(builder.create_updated(&repo, &tip.tree()?)?)?;
    let signature = git2::Signature::now(&who.name, &who.email)?;
    let message = format!("Deny {id}\n\n{reason}");
    let commit = repo.commit(None, &signature, &signature, &message, &tree, &[&tip])?;
    repo.reference_matching(&refname, commit, true, tip.id(), &message)?;
    Ok(commit.to_string())
}

fn no_request(id: &str) -> GitopsError {
    GitopsError::Command {
        what: format!("find approval request {id}"),
        message: format!(
            "no branch {} holding {}",
            request_branch(id),
            request_file(id)
        ),
    }
}

fn identity_vars(who: &Identity) -> [(&'static str, String); 4] {
    [
        ("GIT_AUTHOR_NAME", who.name.clone()),
        ("GIT_AUTHOR_EMAIL", who.email.clone()),
        ("GIT_COMMITTER_NAME", who.name.clone()),
        ("GIT_COMMITTER_EMAIL", who.email.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::test_git::{git, write};

    /// `git merge` that finds the branch locked only when it moves it has already written
    /// the merge and MERGE_HEAD (a controller killed mid record push leaves its git holding
    /// the lock a moment): the approval undoes that and merges again once the lock is gone.
    #[test]
    fn a_merge_that_found_the_branch_locked_at_its_end_is_undone_and_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("company");
        git(
            dir.path(),
            &["init", "-q", "-b", "main", work.to_str().unwrap()],
        );
        write(&work, "a.txt", "a\n");
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "seed"]);
        let id = "deploy-1-0-4";
        git(&work, &["checkout", "-q", "-b", &request_branch(id)]);
        write(&work, "request.txt", "r\n");
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "request"]);
        git(&work, &["checkout", "-q", "main"]);
        let lock = work.join(".git/refs/heads/main.lock");
        std::fs::write(&lock, "").unwrap();
        let held = lock.clone();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(150));
            std::fs::remove_file(held).unwrap();
        });
        let who = Identity {
            name: "Ann".into(),
            email: "ann@example.com".into(),
        };
        let merged = approve(&work, "main", id, &who).unwrap();
        release.join().unwrap();
        assert!(!work.join(".git/MERGE_HEAD").exists());
        assert_eq!(git(&work, &["rev-parse", "HEAD"]), merged);
        let parents = git(&work, &["rev-list", "--parents", "-n1", "HEAD"]);
        assert_eq!(parents.split(' ').count(), 3, "a merge: {parents}");
        assert_eq!(git(&work, &["status", "--porcelain"]), "");
    }
}
