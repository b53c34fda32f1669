//! The approval commands: `get approvals` and `describe approval` read the store of a run;
//! `approve` and `deny` answer in git, in the company repository, as the local git user
//! (who must be one of the Company's `approvals.approvers`). The running controller reads
//! the answer from git at its next poll, as it would a merge made anywhere else.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use proto::gitops::Identity;
use proto::gitops::approvals as git_approvals;
use proto::output::{self, Format};
use proto::source::GitSource;
use proto::store::{Approval, Store};

use crate::commands::{Location, git_config, open_store, state_dir};
use crate::{emit, emit_list};

/// `proto get approvals`: every request, newest first.
pub fn get(state: Option<PathBuf>, format: Format) -> Result<ExitCode, String> {
    let store = open_store(&state_dir(state))?;
    let approvals = store.approvals().map_err(|e| e.to_string())?;
    let headers = [
        "ID",
        "GOAL",
        "ACTION",
        "STATE",
        "REQUESTED",
        "EXPIRES",
        "BY",
        "REASON",
    ];
    emit_list(&approvals, format, "No approval requests.", &headers, |a| {
        vec![
            a.id.clone(),
            a.goal.clone(),
            a.action.clone(),
            format!("{:?}", a.state),
            a.requested_at.format("%Y-%m-%d %H:%M").to_string(),
            a.expires_at
                .map(|e| e.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default(),
            a.decided_by.clone().unwrap_or_default(),
            a.answer
                .clone()
                .unwrap_or_else(|| a.reason.clone())
                .chars()
                .take(70)
                .collect(),
        ]
    })
}

/// `proto describe approval ID`: the request in full, its diff last.
pub fn describe(id: &str, state: Option<PathBuf>, format: Format) -> Result<ExitCode, String> {
    let store = open_store(&state_dir(state))?;
    let approval = find(&store, id)?;
    if format != Format::Table {
        return emit(&output::encode(&approval, format).map_err(|e| e.to_string())?);
    }
    let mut text = String::new();
    let mut line = |key: &str, value: &str| text.push_str(&format!("{key:<10} {value}\n"));
    line("Id:", &approval.id);
    line("Goal:", &approval.goal);
    line(
        "Task:",
        &format!(
            "{} (attempt {}, step {})",
            approval.task,
            approval.attempt + 1,
            approval.step
        ),
    );
    line("Agent:", &approval.agent);
    line("Action:", &approval.action);
    line("Input:", &approval.input.to_string());
    line("Why:", &approval.reason);
    line("State:", &format!("{:?}", approval.state));
    if let Some(by) = &approval.decided_by {
        line("By:", by);
    }
    if let Some(answer) = &approval.answer {
        line("Answer:", answer);
    }
    line("Branch:", &git_approvals::request_branch(&approval.id));
    if let Some(reviewed) = &approval.reviewed {
        line("Reviewed:", reviewed);
    }
    if let Some(diff) = &approval.diff {
        text.push('\n');
        text.push_str(diff);
    }
    emit(&text)
}

fn find(store: &Store, id: &str) -> Result<Approval, String> {
    store
        .approvals()
        .map_err(|e| e.to_string())?
        .into_iter()
        .find(|a| a.id == id)
        .ok_or_else(|| format!("no approval request {id} (see `proto get approvals`)"))
}

/// `proto approve ID`: merges the request's branch as the local git user.
pub fn approve(id: &str, location: Location) -> Result<ExitCode, String> {
    let (source, who) = answerer(location)?;
    let commit = git_approvals::approve(source.repository_path(), source.branch(), id, &who)
        .map_err(|e| format!("{}: {e}", source.label()))?;
    println!(
        "approved {id} as {} <{}>: merge commit {} on {}; the controller resumes the task at its next poll",
        who.name,
        who.email,
        &commit[..commit.len().min(12)],
        source.branch()
    );
    Ok(ExitCode::SUCCESS)
}

/// `proto deny ID --reason R`: commits the denial to the request's branch.
pub fn deny(id: &str, reason: Option<String>, location: Location) -> Result<ExitCode, String> {
    let (source, who) = answerer(location)?;
    let reason = reason.unwrap_or_else(|| "denied without a reason".into());
    git_approvals::deny(
        source.repository_path(),
        source.subpath(),
        id,
        &who,
        &reason,
    )
    .map_err(|e| format!("{}: {e}", source.label()))?;
    println!("denied {id} as {} <{}>: {reason}", who.name, who.email);
    Ok(ExitCode::SUCCESS)
}

/// The company repository (a local one: a remote's answers are given on its forge or in a
/// clone, by merging or committing there) and the local git user, who must be an approver.
fn answerer(location: Location) -> Result<(GitSource, Identity), String> {
    let source = location.open()?;
    if source.is_remote() {
        return Err(format!(
            "{}: a remote company repository; answer in a clone of it (proto approve ID ./clone) or merge the request's branch on its forge",
            source.label()
        ));
    }
    let who = git_user(source.repository_path())?;
    let head = source.head().map_err(|e| e.to_string())?;
    let tree = source.tree(&head).map_err(|e| e.to_string())?;
    let (spec, _) = proto::spec::load_and_validate(&tree).map_err(|diagnostics| {
        format!(
            "{}: the company does not validate ({} problems; see `proto validate`)",
            source.label(),
            diagnostics.len()
        )
    })?;
    git_approvals::may_answer(&spec, &who)?;
    Ok((source, who))
}

/// The git identity configured for the repository at `path` (its config, the user's, the
/// system's), as a commit there would be made.
fn git_user(path: &Path) -> Result<Identity, String> {
    let config = |key: &str| git_config(Some(path), key);
    match (config("user.name"), config("user.email")) {
        (Some(name), Some(email)) => Ok(Identity { name, email }),
        _ => Err("no git identity: set `git config user.name` and `user.email`, the answer is signed with them".into()),
    }
}
