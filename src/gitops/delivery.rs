//! Delivery: how a goal's finished work reaches its product's branch. The controller does it
//! on the agent's behalf, with the `git` command line run in the task's workspace through its
//! [`Computer`] (so it works wherever the workspace is, and the product's own server-side
//! hooks run as they would for a person's push).
//!
//! The rules, which are what make "delivered" mean delivered:
//! - the work is committed in the workspace, authored as the agent;
//! - the branch's tip `T` is fetched and the work rebased onto it, so the commit to publish
//!   descends from `T`; the workspace is then cleaned to exactly that commit (no ignored or
//!   untracked left-overs), and the goal's check runs there (the caller's part);
//! - the push is a compare-and-swap: the remote branch moves from `T` to the new commit or
//!   not at all (`--force-with-lease=<branch>:<T>` on a commit that descends from `T`, checked
//!   before pushing, so the lease only ever fast-forwards). Losing the race is
//!   [`DeliveryError::Stale`]: fetch, rebase, check and try again. Nothing is ever forced.
//!
//! ```text
//! commit ─► fetch tip T ─► rebase onto T ─► clean ─► (check) ─► push HEAD if the branch is still T
//!                ▲                                                   │ stale
//!                └───────────────────────────────────────────────────┘
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use super::Identity;
use crate::computer::{Computer, ComputerError, RunOutcome, RunRequest, Workspace};

/// How long one git command may take (a push of a large history over a slow link).
const GIT_TIMEOUT: Duration = Duration::from_secs(600);

/// Variables of the controller's environment a push may need to authenticate (the SSH agent,
/// a custom SSH command); commands otherwise see a plain environment.
const CREDENTIAL_ENV: [&str; 3] = ["SSH_AUTH_SOCK", "GIT_SSH_COMMAND", "GIT_SSH"];

#[derive(Debug, Error)]
pub enum DeliveryError {
    /// The product's server refused the push (a `pre-receive` hook, a protected branch, no
    /// write access): trying again at once would be refused again.
    #[error("{remote} refused the push to {branch}: {message}")]
    Refused {
        remote: String,
        branch: String,
        message: String,
    },
    /// The work does not rebase cleanly onto the branch's new tip.
    #[error("the work conflicts with {branch} as it is now (in {files})")]
    Conflict {
        branch: String,
        files: String,
        /// The tip it conflicts with.
        tip: String,
    },
    /// A git command failed for another reason (the remote unreachable, a broken workspace).
    #[error("`git {command}`: {detail}")]
    Git { command: String, detail: String },
    /// The branch moved since it was fetched (another delivery won the race): fetch,
    /// rebase, check and push again.
    #[error("{branch} moved while the work was being pushed ({message})")]
    Stale { branch: String, message: String },
    #[error(transparent)]
    Computer(#[from] ComputerError),
    #[error("cancelled")]
    Cancelled,
}

/// The workspace prepared for publishing: its HEAD descends from the branch's tip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The branch's tip as fetched; `None` when the branch does not exist yet.
    pub tip: Option<String>,
    /// The commit to publish (HEAD); `None` in an empty repository with nothing committed.
    pub head: Option<String>,
    /// Whether the work had to be rebased onto a tip it was not built on.
    pub rebased: bool,
}

impl Prepared {
    /// Nothing to push: the branch already holds HEAD (or there is nothing at all).
    pub fn up_to_date(&self) -> bool {
        self.head.is_none() || self.head == self.tip
    }
}

/// Git in one workspace, through its computer.
pub struct Git<'a> {
    pub computer: &'a dyn Computer,
    pub workspace: &'a Workspace,
    pub cancel: &'a CancellationToken,
}

impl Git<'_> {
    /// Runs `git <args>` (arguments quoted for the shell); `env` adds to the plain
    /// environment every command gets.
    async fn run(
        &self,
        args: &[&str],
        env: &BTreeMap<String, String>,
    ) -> Result<RunOutcome, DeliveryError> {
        // Settings a user's global configuration must not change here: no signing prompt,
        // no editor, no background gc racing the next command, no pager. And nothing the
        // work may have planted in the workspace's `.git` runs as the controller: no hooks
        // (the product's server-side hooks still run on push), no fsmonitor program.
        let mut line = String::from(
            "git -c commit.gpgsign=false -c core.editor=true -c gc.auto=0 -c rebase.autoStash=false \
             -c core.hooksPath=/dev/null -c core.fsmonitor=false --no-pager",
        );
        for arg in args {
            line.push(' ');
            line.push_str(&crate::tools::shell_quote(arg));
        }
        let mut env = env.clone();
        env.insert("GIT_TERMINAL_PROMPT".into(), "0".into());
        // Messages are matched (a missing remote branch): they must be git's own English.
        env.insert("LC_ALL".into(), "C".into());
        // Credentials only for the commands that talk to the remote.
        if matches!(args.first(), Some(&"fetch" | &"push")) {
            for key in CREDENTIAL_ENV {
                if let Ok(value) = std::env::var(key) {
                    env.insert(key.into(), value);
                }
            }
        }
        let request = RunRequest {
            command: line,
            cwd: String::new(),
            env,
            timeout: GIT_TIMEOUT,
        };
        let out = self
            .computer
            .run(self.workspace, &request, None, self.cancel)
            .await?;
        if out.cancelled {
            return Err(DeliveryError::Cancelled);
        }
        Ok(out)
    }

    /// Runs `git <args>` and wants it to succeed; its stdout, trimmed.
    async fn ok(&self, args: &[&str]) -> Result<String, DeliveryError> {
        self.ok_as(args, &BTreeMap::new()).await
    }

    async fn ok_as(
        &self,
        args: &[&str],
        env: &BTreeMap<String, String>,
    ) -> Result<String, DeliveryError> {
        let out = self.run(args, env).await?;
        if out.success() {
            Ok(out.stdout.trim().to_string())
        } else {
            Err(failed(args, &out))
        }
    }

    /// The commit at HEAD; `None` while the branch is unborn.
    pub async fn head(&self) -> Result<Option<String>, DeliveryError> {
        let out = self
            .run(
                &["rev-parse", "--verify", "-q", "HEAD^{commit}"],
                &BTreeMap::new(),
            )
            .await?;
        Ok(out
            .success()
            .then(|| out.stdout.trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    /// Stages everything (`git add -A`) and commits it authored by `author`, committed by
    /// `committer`; `Ok(None)` when nothing changed.
    pub async fn commit_all(
        &self,
        message: &str,
        author: &Identity,
        committer: &Identity,
    ) -> Result<Option<String>, DeliveryError> {
        self.ok(&["add", "-A"]).await?;
        let staged = self
            .run(&["diff", "--cached", "--quiet"], &BTreeMap::new())
            .await?;
        match staged.code {
            Some(0) => return Ok(None),
            Some(1) => {}
            _ => return Err(failed(&["diff", "--cached", "--quiet"], &staged)),
        }
        // `--no-verify`: the product's hooks are the server's business (they run on push);
        // a client-side hook in a fresh clone would be one the work itself planted.
        self.ok_as(
            &["commit", "-q", "--no-verify", "-m", message],
            &identity_env(author, committer),
        )
        .await?;
        self.head().await
    }

    /// Fetches `branch` of `origin` and answers its tip; `None` when the branch does not
    /// exist there (yet).
    pub async fn fetch_tip(&self, branch: &str) -> Result<Option<String>, DeliveryError> {
        let tracking = format!("refs/remotes/origin/{branch}");
        let refspec = format!("+refs/heads/{branch}:{tracking}");
        let out = self
            .run(
                &["fetch", "-q", "--no-tags", "origin", &refspec],
                &BTreeMap::new(),
            )
            .await?;
        if !out.success() {
            if out.stderr.contains("couldn't find remote ref") {
                // The branch is gone (or never was): forget what the last fetch said of it.
                self.run(&["update-ref", "-d", &tracking], &BTreeMap::new())
                    .await?;
                return Ok(None);
            }
            return Err(failed(&["fetch", "origin", &refspec], &out));
        }
        Ok(Some(self.ok(&["rev-parse", "--verify", &tracking]).await?))
    }

    /// Whether `ancestor` is `commit` or one of its ancestors.
    async fn contains(&self, commit: &str, ancestor: &str) -> Result<bool, DeliveryError> {
        let args = ["merge-base", "--is-ancestor", ancestor, commit];
        let out = self.run(&args, &BTreeMap::new()).await?;
        match out.code {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(failed(&args, &out)),
        }
    }

    /// Fetches the branch's tip and rebases the workspace's commits onto it, after removing
    /// everything the commit does not hold (uncommitted changes to tracked files, and
    /// `git clean -ffdx`), so the workspace is a clean checkout of what would be published.
    /// The work must be committed first: what is left beside HEAD (a file a check rewrote
    /// or left behind) is discarded, so it can neither stop the rebase nor reach the check.
    /// A conflict aborts the rebase and leaves HEAD as it was.
    pub async fn prepare(
        &self,
        branch: &str,
        committer: &Identity,
    ) -> Result<Prepared, DeliveryError> {
        let tip = self.fetch_tip(branch).await?;
        let mut head = self.head().await?;
        if head.is_some() {
            self.ok(&["reset", "-q", "--hard"]).await?;
        }
        self.ok(&["clean", "-ffdxq"]).await?;
        let mut rebased = false;
        if let (Some(tip), Some(current)) = (&tip, &head)
            && !self.contains(current, tip).await?
        {
            self.rebase(branch, tip, committer).await?;
            head = self.head().await?;
            rebased = true;
        }
        Ok(Prepared { tip, head, rebased })
    }

    async fn rebase(
        &self,
        branch: &str,
        onto: &str,
        committer: &Identity,
    ) -> Result<(), DeliveryError> {
        // Authors are kept; the controller is the committer of the rebased commits.
        let env = identity_env(committer, committer);
        let out = self.run(&["rebase", "-q", onto], &env).await?;
        if out.success() {
            return Ok(());
        }
        let files = self
            .run(
                &["diff", "--name-only", "--diff-filter=U"],
                &BTreeMap::new(),
            )
            .await
            .map(|o| o.stdout.split_whitespace().collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        let abort = self.run(&["rebase", "--abort"], &BTreeMap::new()).await?;
        if files.is_empty() {
            // Not a conflict: the rebase's own failure is the cause (it may have refused to
            // start, leaving nothing to abort).
            return Err(failed(&["rebase", onto], &out));
        }
        if !abort.success() {
            return Err(failed(&["rebase", "--abort"], &abort));
        }
        Err(DeliveryError::Conflict {
            branch: branch.to_string(),
            files,
            tip: onto.to_string(),
        })
    }

    /// Moves the workspace to `commit` exactly (for checking the branch as others left it).
    pub async fn reset_to(&self, commit: &str) -> Result<(), DeliveryError> {
        self.ok(&["reset", "-q", "--hard", commit]).await?;
        self.ok(&["clean", "-ffdxq"]).await?;
        Ok(())
    }

    /// Pushes HEAD to `branch` if, and only if, the branch is still `prepared.tip`, and
    /// answers the commit pushed. Refuses
    /// (as a [`DeliveryError::Git`]) to push a HEAD that does not descend from that tip: the
    /// lease must never stand in for a force.
    pub async fn push(&self, branch: &str, prepared: &Prepared) -> Result<String, DeliveryError> {
        let Some(head) = &prepared.head else {
            return Err(DeliveryError::Git {
                command: "push".into(),
                detail: "nothing is committed".into(),
            });
        };
        if let Some(tip) = &prepared.tip
            && !self.contains(head, tip).await?
        {
            return Err(DeliveryError::Git {
                command: "push".into(),
                detail: format!("{head} does not descend from {branch}'s tip {tip}"),
            });
        }
        let target = format!("refs/heads/{branch}");
        let lease = format!(
            "--force-with-lease={target}:{}",
            prepared.tip.as_deref().unwrap_or_default()
        );
        let refspec = format!("{head}:{target}");
        let args = [
            "push",
            "--porcelain",
            "--no-verify",
            &lease,
            "origin",
            &refspec,
        ];
        let out = self.run(&args, &BTreeMap::new()).await?;
        let status = porcelain_status(&out.stdout, &target);
        if out.success() {
            return Ok(head.clone());
        }
        match status {
            Some(PorcelainStatus::Stale(message)) => Err(DeliveryError::Stale {
                branch: branch.to_string(),
                message,
            }),
            Some(PorcelainStatus::Refused(message)) => Err(DeliveryError::Refused {
                remote: self.remote().await,
                branch: branch.to_string(),
                message: with_remote_lines(&message, &out.stderr),
            }),
            None => Err(failed(&["push", "origin", &refspec], &out)),
        }
    }

    /// Where `origin` points, for messages.
    async fn remote(&self) -> String {
        self.ok(&["remote", "get-url", "origin"])
            .await
            .unwrap_or_else(|_| "origin".into())
    }
}

/// What `git push --porcelain` said of one ref.
#[derive(Debug, PartialEq, Eq)]
enum PorcelainStatus {
    /// Lost a race: the lease or fast-forward check failed.
    Stale(String),
    /// The server declined the update.
    Refused(String),
}

/// Reads the line of `git push --porcelain` output for `target`: `<flag>\t<from>:<to>\t<summary>`.
fn porcelain_status(stdout: &str, target: &str) -> Option<PorcelainStatus> {
    stdout.lines().find_map(|line| {
        let mut fields = line.split('\t');
        let flag = fields.next()?;
        let refs = fields.next()?;
        let summary = fields.next().unwrap_or_default().trim().to_string();
        if flag != "!" || !refs.ends_with(&format!(":{target}")) {
            return None;
        }
        // `[rejected]`: the lease or fast-forward check against what was advertised failed.
        // `failed to update ref` / `failed to lock`: the server's own compare-and-swap (its
        // ref transaction checks the old value under a lock) lost to a push that landed
        // after the advertisement. Both are races, not refusals.
        let raced = ["failed to update ref", "failed to lock"]
            .iter()
            .any(|m| summary.contains(m));
        if summary.starts_with("[rejected]") || raced {
            Some(PorcelainStatus::Stale(summary))
        } else {
            Some(PorcelainStatus::Refused(summary))
        }
    })
}

/// The server's own words (`remote: ...` lines, a hook's output) after git's summary.
fn with_remote_lines(summary: &str, stderr: &str) -> String {
    let said: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("remote:"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let summary = summary
        .trim_start_matches("[remote rejected]")
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')');
    if said.is_empty() {
        summary.to_string()
    } else {
        format!("{summary}: {}", said.join(" / "))
    }
}

fn identity_env(author: &Identity, committer: &Identity) -> BTreeMap<String, String> {
    [
        ("GIT_AUTHOR_NAME", &author.name),
        ("GIT_AUTHOR_EMAIL", &author.email),
        ("GIT_COMMITTER_NAME", &committer.name),
        ("GIT_COMMITTER_EMAIL", &committer.email),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect()
}

fn failed(args: &[&str], out: &RunOutcome) -> DeliveryError {
    DeliveryError::Git {
        command: args.join(" "),
        detail: out.summary(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn porcelain_lines_tell_races_from_refusals() {
        let target = "refs/heads/main";
        assert_eq!(
            porcelain_status(
                "To /srv/app.git\n!\tabc:refs/heads/main\t[rejected] (stale info)\nDone\n",
                target
            ),
            Some(PorcelainStatus::Stale("[rejected] (stale info)".into()))
        );
        assert_eq!(
            porcelain_status(
                "To /srv/app.git\n!\tabc:refs/heads/main\t[remote rejected] (pre-receive hook declined)\nDone\n",
                target
            ),
            Some(PorcelainStatus::Refused(
                "[remote rejected] (pre-receive hook declined)".into()
            ))
        );
        assert_eq!(
            porcelain_status(
                "!\tabc:refs/heads/main\t[remote rejected] (failed to update ref)\n",
                target
            ),
            Some(PorcelainStatus::Stale(
                "[remote rejected] (failed to update ref)".into()
            ))
        );
        assert_eq!(
            porcelain_status("To x\n \tabc:refs/heads/main\t1..2\nDone\n", target),
            None
        );
        assert_eq!(
            porcelain_status(
                "!\tabc:refs/heads/mainline\t[rejected] (stale info)\n",
                target
            ),
            None
        );
    }

    #[test]
    fn refusals_quote_the_server() {
        assert_eq!(
            with_remote_lines(
                "[remote rejected] (pre-receive hook declined)",
                "remote: no pushes on Fridays        \nremote: \nTo /srv/app.git\n"
            ),
            "pre-receive hook declined: no pushes on Fridays"
        );
        assert_eq!(
            with_remote_lines("[remote rejected] (deny updating a hidden ref)", ""),
            "deny updating a hidden ref"
        );
    }
}
