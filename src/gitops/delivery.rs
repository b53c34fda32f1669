//! Delivery: how a goal's finished work reaches its product's branch. The controller does it
//! on the agent's behalf, with the `git` command line run in the task's workspace through its
//! [`Computer`] (so it works wherever the workspace is, and the product's own server-side
//! hooks run as they would for a person's push). For a workspace on this host the common
//! steps (commit, clean checkout, push to a bare product on this host without receive hooks)
//! run in-process under the same rules ([`super::native`]); everything else is scripted.
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
use super::native::{self, Native};
use crate::computer::{Computer, ComputerError, Origin, Output, RunOutcome, RunRequest, Workspace};
use crate::secrets::{Finding, Refused};

/// Where a gated goal's work waits for review on the product: `proto/<goal>`. The
/// controller owns these branches, so a new attempt's work replaces what an earlier one left
/// there (under a lease, never blindly).
pub const REVIEW_PREFIX: &str = "proto/";

/// The review branch of `goal`.
pub fn review_branch(goal: &str) -> String {
    format!("{REVIEW_PREFIX}{goal}")
}

/// The most of a diff an approval request carries.
const DIFF_LIMIT: usize = 256 * 1024;

/// How long one git command may take (a push of a large history over a slow link).
const GIT_TIMEOUT: Duration = Duration::from_secs(600);

/// Variables of the controller's environment a push may need to authenticate (the SSH agent,
/// a custom SSH command); commands otherwise see a plain environment.
const CREDENTIAL_ENV: [&str; 3] = ["SSH_AUTH_SOCK", "GIT_SSH_COMMAND", "GIT_SSH"];

/// The most diff text a commit's secret scan reads. A change that adds more is refused
/// rather than committed unscanned.
const MAX_SCANNED_BYTES: usize = native::MAX_SCANNED_BYTES;

/// What one commit adds, as the secret scan reads it (followed by the commit): only what
/// is added, with no context lines, in git's own format whatever the user's configuration
/// says (prefixes, colour, external diff and text conversion programs); a root commit
/// against the empty tree.
const COMMIT_DIFF: &str = "g diff-tree -p -U0 --root --no-commit-id --no-color --no-ext-diff \
     --no-textconv --src-prefix=a/ --dst-prefix=b/";

/// What each commit of a range adds (followed by the range), each preceded by a
/// [`COMMIT_MARK`] line naming it; a merge as against its first parent.
const LOG_DIFF: &str = "g -c log.showRoot=true log -p -U0 --format='proto-commit %H' \
     --diff-merges=first-parent --no-color --no-ext-diff --no-textconv \
     --src-prefix=a/ --dst-prefix=b/";

/// The line [`LOG_DIFF`] starts each commit with; no line of a diff starts so.
const COMMIT_MARK: &str = "proto-commit ";

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
    Stale {
        branch: String,
        message: String,
        /// What lost: the lease, or the server's own update of the ref under its lock.
        lost: Lost,
    },
    /// What the commit would add holds secrets: nothing was committed.
    #[error(transparent)]
    Secrets(#[from] Refused),
    #[error(transparent)]
    Computer(#[from] ComputerError),
    #[error("cancelled")]
    Cancelled,
}

/// What a push that lost a race lost to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The branch was not where the lease said: someone pushed first.
    Lease,
    /// The server could not take or update the branch's ref under its lock. Normally a
    /// push that landed at the same moment; when it never clears, a lock file that a
    /// process on the server left behind.
    ServerLock,
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
    /// The commits publishing HEAD would add to the branch (`tip..HEAD`; all of HEAD's
    /// history when there is no tip).
    pub commits: Vec<String>,
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

/// What every delivery script starts with: `g`, git with the settings a user's global
/// configuration must not change here (no signing prompt, no editor, no background gc
/// racing the next command, no pager) and with nothing the work may have planted in the
/// workspace's `.git` running as the controller (no hooks — the product's server-side hooks
/// still run on push — and no fsmonitor program).
const PRELUDE: &str = "g() { git -c commit.gpgsign=false -c core.editor=true -c gc.auto=0 \
    -c maintenance.auto=false \
    -c rebase.autoStash=false -c core.hooksPath=/dev/null -c core.fsmonitor=false \
    --no-pager \"$@\"; }\n\
    if [ -n \"${PROTO_GIT_CONFIG:-}\" ]; then\n\
    for p in .git .git/config .git/objects .git/objects/info .git/refs .git/HEAD .git/info; do\n\
    if [ -L \"$p\" ]; then echo \"$p is a symbolic link: the workspace's git directory is not the one the controller made\" >&2; exit 75; fi\n\
    done\n\
    [ -d .git ] || { echo 'the workspace has no git directory' >&2; exit 75; }\n\
    rm -f .git/config .git/commondir .git/config.worktree .git/objects/info/alternates .git/info/attributes || exit 75\n\
    printf '%s' \"$PROTO_GIT_CONFIG\" > .git/config || exit 75\n\
    { [ -d .git/objects/info ] || mkdir -p .git/objects/info; } && printf '%s' \"$PROTO_GIT_ALTERNATES\" > .git/objects/info/alternates || exit 75\n\
    fi\n";

/// Environment for a script in `workspace`: its pristine git state, which [`PRELUDE`]
/// restores (agent commands may have written `.git`: a filter driver, `core.sshCommand`, an
/// `include.path`, another `origin`, all of which the controller's unsandboxed git would
/// otherwise obey).
fn pristine_env(workspace: &Workspace, env: &mut BTreeMap<String, String>) {
    if let Some(pristine) = workspace.pristine() {
        env.insert("PROTO_GIT_CONFIG".into(), pristine.config.clone());
        env.insert("PROTO_GIT_ALTERNATES".into(), pristine.alternates.clone());
    }
}

/// Exit statuses the delivery scripts use to say what stopped them.
const EXIT_FETCH: i32 = 70;
const EXIT_CONFLICT: i32 = 71;
const EXIT_REBASE: i32 = 72;
const EXIT_NOT_DESCENDANT: i32 = 73;
const EXIT_NOTHING: i32 = 74;

impl Git<'_> {
    /// The in-process path, for a workspace on this host (see [`native`]).
    fn native(&self) -> Option<Native> {
        Native::of(self.workspace)
    }

    /// Runs `script` (after [`PRELUDE`]) in the workspace as one command: each step of a
    /// delivery is one process start, not one per git command (a round trip each on a
    /// remote computer). `env` adds to the plain environment; `remote` passes the
    /// controller's SSH credentials, for the steps that talk to the remote.
    async fn script(
        &self,
        script: &str,
        env: BTreeMap<String, String>,
        remote: bool,
    ) -> Result<RunOutcome, DeliveryError> {
        let mut env = env;
        pristine_env(self.workspace, &mut env);
        env.insert("GIT_TERMINAL_PROMPT".into(), "0".into());
        // Messages are matched (a missing remote branch): they must be git's own English.
        env.insert("LC_ALL".into(), "C".into());
        if remote {
            for key in CREDENTIAL_ENV {
                if let Ok(value) = std::env::var(key) {
                    env.insert(key.into(), value);
                }
            }
        }
        let request = RunRequest {
            command: format!("{PRELUDE}{script}"),
            cwd: String::new(),
            env,
            timeout: GIT_TIMEOUT,
            origin: Origin::Controller,
            stdin: None,
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

    /// The commit at HEAD; `None` while the branch is unborn.
    pub async fn head(&self) -> Result<Option<String>, DeliveryError> {
        if let Some(native) = self.native() {
            return native
                .with("rev-parse HEAD", |repo| {
                    Ok(native::head(repo)?.map(|h| h.to_string()))
                })
                .await;
        }
        let out = self
            .script(
                "g rev-parse --verify -q 'HEAD^{commit}'",
                BTreeMap::new(),
                false,
            )
            .await?;
        Ok(out
            .success()
            .then(|| out.stdout.trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    /// Stages everything (`git add -A`) and commits it authored by `author`, committed by
    /// `committer`; `Ok(None)` when nothing changed. What the commit adds is scanned for
    /// secrets: if it adds one, the commit is undone (its changes left staged) and
    /// [`DeliveryError::Secrets`] says where. One script makes the commit and prints its
    /// diff, so a commit costs one process start; the scanned commit is remembered
    /// ([`Workspace::scanned`]) so publishing it does not scan it again.
    pub async fn commit_all(
        &self,
        message: &str,
        author: &Identity,
        committer: &Identity,
    ) -> Result<Option<String>, DeliveryError> {
        // `--no-verify`: the product's hooks are the server's business (they run on push);
        // a client-side hook in a fresh clone would be one the work itself planted.
        let script = format!(
            "g add -A || exit $?\n\
             g diff --cached --quiet; staged=$?\n\
             [ $staged -eq 0 ] && exit 0\n\
             [ $staged -eq 1 ] || exit $staged\n\
             base=$(g rev-parse --verify -q 'HEAD^{{commit}}') || base=\n\
             g commit -q --no-verify -m {} || exit $?\n\
             head=$(g rev-parse HEAD) || exit $?\n\
             echo \"base=$base\"\n\
             echo \"head=$head\"\n\
             {COMMIT_DIFF} HEAD\n",
            quote(message)
        );
        let Some(committed) = (match self.native() {
            Some(native) => {
                let (message, author, committer) =
                    (message.to_string(), author.clone(), committer.clone());
                let journal = native.journal();
                native
                    .with("add -A && commit", move |repo| {
                        native::commit_all(repo, &journal, &message, &author, &committer)
                    })
                    .await?
            }
            None => self.commit_by_script(&script, author, committer).await?,
        }) else {
            return Ok(None);
        };
        let base = committed.base.as_deref();
        if committed.over {
            self.uncommit(base).await?;
            return Err(too_large("commit"));
        }
        if let Err(refused) = refuse_secrets(crate::secrets::scan_diff(&committed.diff)) {
            self.uncommit(base).await?;
            return Err(refused.into());
        }
        self.workspace.scanned().add([committed.head.clone()]);
        Ok(Some(committed.head))
    }

    /// [`Git::commit_all`]'s script run, and what it printed: the commit, the HEAD it was
    /// made on and what it adds; `None` when nothing was staged.
    async fn commit_by_script(
        &self,
        script: &str,
        author: &Identity,
        committer: &Identity,
    ) -> Result<Option<native::Committed>, DeliveryError> {
        let (out, text, over) = self
            .streamed(script, identity_env(author, committer))
            .await?;
        if !out.success() {
            return Err(failed("add -A && commit", &out));
        }
        let mut lines = text.splitn(3, '\n');
        let (Some(base), Some(head)) = (
            lines.next().and_then(|l| l.strip_prefix("base=")),
            lines.next().and_then(|l| l.strip_prefix("head=")),
        ) else {
            // Nothing was staged: nothing committed, nothing printed.
            return Ok(None);
        };
        Ok(Some(native::Committed {
            base: Some(base.trim().to_string()).filter(|b| !b.is_empty()),
            head: head.trim().to_string(),
            diff: lines.next().unwrap_or("").to_string(),
            over,
        }))
    }

    /// The secrets the commits after `base` (`None`: all of HEAD's history) add, each
    /// commit's own additions (a secret added and then removed again is still in the history
    /// a push would publish), for commits made by other means than [`Git::commit_all`] (the
    /// agent's `Git` tool, a `git commit` through `Bash`). Commits found clean are
    /// remembered as scanned.
    pub async fn secrets_since(&self, base: Option<&str>) -> Result<Vec<Finding>, DeliveryError> {
        let range = match base {
            Some(commit) => quote(&format!("{commit}..HEAD")),
            None => "HEAD".to_string(),
        };
        let (text, over) = match self.native() {
            Some(native) => {
                let base = base.map(str::to_string);
                native
                    .with("log -p (secret scan)", move |repo| {
                        native::log_added(repo, base.as_deref(), COMMIT_MARK)
                    })
                    .await?
            }
            None => {
                let (out, text, over) = self
                    .streamed(&format!("{LOG_DIFF} {range}\n"), BTreeMap::new())
                    .await?;
                if !out.success() {
                    return Err(failed("log -p (secret scan)", &out));
                }
                (text, over)
            }
        };
        if over {
            return Err(too_large("push"));
        }
        let findings = crate::secrets::scan_diff(&text);
        if findings.is_empty() {
            self.workspace.scanned().add(
                text.lines()
                    .filter_map(|l| l.strip_prefix(COMMIT_MARK))
                    .map(|c| c.trim().to_string()),
            );
        }
        Ok(findings)
    }

    /// Moves the branch back to `base` (`None`: unborn again), keeping the index and the
    /// files: the commits after it are undone, their changes left staged to be fixed.
    pub async fn uncommit(&self, base: Option<&str>) -> Result<(), DeliveryError> {
        if let Some(native) = self.native() {
            let base = base.map(str::to_string);
            return native
                .with("reset --soft", move |repo| {
                    native::uncommit(repo, base.as_deref())
                })
                .await;
        }
        let script = match base {
            Some(commit) => format!("g reset -q --soft {}", quote(commit)),
            None => "g update-ref -d HEAD".to_string(),
        };
        let out = self.script(&script, BTreeMap::new(), false).await?;
        if out.success() {
            Ok(())
        } else {
            Err(failed("reset --soft", &out))
        }
    }

    /// Runs `script` and keeps its whole standard output (a diff, which may be larger than
    /// the tail a [`RunOutcome`] keeps) up to [`MAX_SCANNED_BYTES`]; the flag says more was
    /// cut off.
    async fn streamed(
        &self,
        script: &str,
        mut env: BTreeMap<String, String>,
    ) -> Result<(RunOutcome, String, bool), DeliveryError> {
        env.insert("GIT_TERMINAL_PROMPT".to_string(), "0".to_string());
        env.insert("LC_ALL".to_string(), "C".to_string());
        pristine_env(self.workspace, &mut env);
        let request = RunRequest {
            command: format!("{PRELUDE}{script}"),
            cwd: String::new(),
            env,
            timeout: GIT_TIMEOUT,
            origin: Origin::Controller,
            stdin: None,
        };
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
        let collect = async move {
            let mut text = String::new();
            let mut over = false;
            while let Some(chunk) = receiver.recv().await {
                if let Output::Stdout(part) = chunk {
                    if over || text.len() + part.len() > MAX_SCANNED_BYTES {
                        over = true;
                    } else {
                        text.push_str(&part);
                    }
                }
            }
            (text, over)
        };
        let (out, (text, over)) = tokio::join!(
            self.computer
                .run(self.workspace, &request, Some(sender), self.cancel),
            collect
        );
        let out = out?;
        if out.cancelled {
            return Err(DeliveryError::Cancelled);
        }
        Ok((out, text, over))
    }

    /// Makes the workspace a clean checkout of what would be published: removes everything
    /// HEAD does not hold (uncommitted changes to tracked files, and `git clean -ffdx`), then
    /// rebases HEAD onto the branch's tip. The work must be committed first: what is left
    /// beside HEAD (a file a check rewrote or left behind) can neither stop the rebase nor
    /// reach the check. A conflict aborts the rebase and leaves HEAD as it was.
    ///
    /// With `fetch`, the tip is fetched first; without, it is the tip as the workspace last
    /// saw it (its clone): the compare-and-swap push still refuses a branch that moved, and
    /// a clean first round then costs no trip to the remote.
    pub async fn prepare(
        &self,
        branch: &str,
        committer: &Identity,
        fetch: bool,
    ) -> Result<Prepared, DeliveryError> {
        if let Some(native) = self.native() {
            let (owned, committer) = (branch.to_string(), committer.clone());
            let journal = native.journal();
            let prepared = native
                .with("reset --hard && clean -ffdx", move |repo| {
                    native::prepare(repo, &journal, &owned, fetch, &committer)
                })
                .await?;
            // `None`: a fetch from elsewhere or a rebase git must do, which the script does.
            if let Some(prepared) = prepared {
                return Ok(prepared);
            }
        }
        let tracking = quote(&format!("refs/remotes/origin/{branch}"));
        let fetch_step = if fetch {
            fetch_script(branch)
        } else {
            String::new()
        };
        // Authors are kept by the rebase; the controller commits the rebased commits.
        let script = format!(
            "{fetch_step}\
             tip=$(g rev-parse --verify -q {tracking}^{{commit}}) || tip=\n\
             head=$(g rev-parse --verify -q 'HEAD^{{commit}}') || head=\n\
             if [ -n \"$head\" ]; then g reset -q --hard || exit $?; fi\n\
             g clean -ffdxq || exit $?\n\
             rebased=0\n\
             if [ -n \"$tip\" ] && [ -n \"$head\" ] && ! g merge-base --is-ancestor \"$tip\" \"$head\"; then\n\
               if ! said=$(g rebase -q \"$tip\" 2>&1); then\n\
                 files=$(g diff --name-only --diff-filter=U)\n\
                 g rebase --abort >/dev/null 2>&1\n\
                 if [ -n \"$files\" ]; then echo \"tip=$tip\"; echo \"$files\"; exit {EXIT_CONFLICT}; fi\n\
                 printf '%s\\n' \"$said\" >&2; exit {EXIT_REBASE}\n\
               fi\n\
               head=$(g rev-parse HEAD) || exit $?\n\
               rebased=1\n\
             fi\n\
             commits=\n\
             if [ -n \"$head\" ]; then commits=$(g rev-list \"$head\" ${{tip:+--not \"$tip\"}}) || exit $?; fi\n\
             echo \"tip=$tip\"\n\
             echo \"head=$head\"\n\
             echo \"rebased=$rebased\"\n\
             echo \"commits=\"$commits\n"
        );
        let out = self
            .script(&script, identity_env(committer, committer), fetch)
            .await?;
        let field = |name: &str| {
            out.stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        match out.code {
            Some(0) => Ok(Prepared {
                tip: field("tip"),
                head: field("head"),
                rebased: field("rebased").as_deref() == Some("1"),
                commits: field("commits")
                    .map(|c| c.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default(),
            }),
            Some(EXIT_CONFLICT) => Err(DeliveryError::Conflict {
                branch: branch.to_string(),
                files: out
                    .stdout
                    .lines()
                    .filter(|l| !l.starts_with("tip="))
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(", "),
                tip: field("tip").unwrap_or_default(),
            }),
            Some(EXIT_FETCH) => Err(failed(&format!("fetch origin {branch}"), &out)),
            Some(EXIT_REBASE) => Err(failed(&format!("rebase onto {branch}"), &out)),
            _ => Err(failed("reset --hard && clean -ffdx", &out)),
        }
    }

    /// Fetches `branch` of `origin` and answers its tip; `None` when the branch does not
    /// exist there (yet).
    pub async fn fetch_tip(&self, branch: &str) -> Result<Option<String>, DeliveryError> {
        if let Some(native) = self.native() {
            let owned = branch.to_string();
            let fetched = native
                .with("fetch origin", move |repo| native::fetch(repo, &owned))
                .await?;
            // `None`: the product is not on this host; git fetches.
            if let Some(tip) = fetched {
                return Ok(tip.map(|t| t.to_string()));
            }
        }
        let tracking = quote(&format!("refs/remotes/origin/{branch}"));
        let script = format!(
            "{}g rev-parse --verify -q {tracking}^{{commit}} || true\n",
            fetch_script(branch)
        );
        let out = self.script(&script, BTreeMap::new(), true).await?;
        if !out.success() {
            return Err(failed(&format!("fetch origin {branch}"), &out));
        }
        let tip = out.stdout.trim();
        Ok((!tip.is_empty()).then(|| tip.to_string()))
    }

    /// Moves the workspace to `commit` exactly (for checking the branch as others left it).
    pub async fn reset_to(&self, commit: &str) -> Result<(), DeliveryError> {
        let script = format!("g reset -q --hard {} && g clean -ffdxq", quote(commit));
        let out = self.script(&script, BTreeMap::new(), false).await?;
        if out.success() {
            Ok(())
        } else {
            Err(failed(&format!("reset --hard {commit}"), &out))
        }
    }

    /// Pushes HEAD to `branch` if, and only if, the branch is still at `tip` (`None`: it
    /// does not exist), and answers the commit pushed. Refuses (as a [`DeliveryError::Git`])
    /// to push a HEAD that does not descend from `tip`: the lease must never stand in for a
    /// force.
    pub async fn push(&self, branch: &str, tip: Option<&str>) -> Result<String, DeliveryError> {
        if let Some(native) = self.native() {
            let (owned, from) = (branch.to_string(), tip.map(str::to_string));
            let pushed = native
                .with("push", move |repo| {
                    native::push(repo, &owned, from.as_deref())
                })
                .await?;
            // `None`: the product receives through its own git (hooks, settings, a URL).
            if let Some(head) = pushed {
                return Ok(head);
            }
        }
        let target = format!("refs/heads/{branch}");
        let lease = format!("--force-with-lease={target}:{}", tip.unwrap_or_default());
        // A review branch is the controller's own: it may be replaced, never a product's.
        let descends = match tip.filter(|_| !branch.starts_with(REVIEW_PREFIX)) {
            Some(tip) => format!(
                "g merge-base --is-ancestor {} \"$head\" || {{ echo \"head=$head\"; exit {EXIT_NOT_DESCENDANT}; }}\n",
                quote(tip)
            ),
            None => String::new(),
        };
        let script = format!(
            "head=$(g rev-parse --verify -q 'HEAD^{{commit}}') || exit {EXIT_NOTHING}\n\
             {descends}\
             echo \"head=$head\"\n\
             g push --porcelain --no-verify {} origin \"$head:{}\"\n",
            quote(&lease),
            target
        );
        let out = self.script(&script, BTreeMap::new(), true).await?;
        let head = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("head="))
            .map(str::trim)
            .unwrap_or_default()
            .to_string();
        match out.code {
            Some(0) => return Ok(head),
            Some(EXIT_NOTHING) => {
                return Err(DeliveryError::Git {
                    command: "push".into(),
                    detail: "nothing is committed".into(),
                });
            }
            Some(EXIT_NOT_DESCENDANT) => {
                return Err(DeliveryError::Git {
                    command: "push".into(),
                    detail: format!(
                        "{head} does not descend from {branch}'s tip {}",
                        tip.unwrap_or_default()
                    ),
                });
            }
            _ => {}
        }
        match porcelain_status(&out.stdout, &target) {
            Some(PorcelainStatus::Stale(message, lost)) => Err(DeliveryError::Stale {
                branch: branch.to_string(),
                message: match lost {
                    Lost::Lease => message,
                    // The server says which lock, and whether a git process may have died
                    // holding it.
                    Lost::ServerLock => with_remote_lines(&message, &out.stderr),
                },
                lost,
            }),
            Some(PorcelainStatus::Refused(message)) => Err(DeliveryError::Refused {
                remote: self.remote().await,
                branch: branch.to_string(),
                message: with_remote_lines(&message, &out.stderr),
            }),
            None => Err(failed(&format!("push origin {target}"), &out)),
        }
    }

    /// What publishing `to` onto `from` would change (`git diff from to`), cut at
    /// [`DIFF_LIMIT`] bytes; everything `to` holds when `from` is `None`.
    pub async fn diff(&self, from: Option<&str>, to: &str) -> Result<String, DeliveryError> {
        // Git's empty tree: a branch that does not exist yet holds nothing.
        let from = from.unwrap_or("4b825dc642cb6eb9a060e54bf8d69288fbee4904");
        let script = format!("g diff --no-color {} {}", quote(from), quote(to));
        let (out, mut diff, _) = self.streamed(&script, BTreeMap::new()).await?;
        if !out.success() {
            return Err(failed("diff", &out));
        }
        if diff.len() > DIFF_LIMIT {
            let mut cut = DIFF_LIMIT;
            while !diff.is_char_boundary(cut) {
                cut -= 1;
            }
            diff.truncate(cut);
            diff.push_str("\n[... the diff is cut here; the branch holds all of it]\n");
        }
        Ok(diff)
    }

    /// Where `origin` points, for messages.
    async fn remote(&self) -> String {
        match self
            .script("g remote get-url origin", BTreeMap::new(), false)
            .await
        {
            Ok(out) if out.success() => out.stdout.trim().to_string(),
            _ => "origin".into(),
        }
    }
}

/// The script step that fetches `branch` of `origin` into its tracking ref, or removes that
/// ref when the remote has no such branch (it is gone, or never was); exits with
/// [`EXIT_FETCH`] when the fetch fails otherwise.
fn fetch_script(branch: &str) -> String {
    let tracking = quote(&format!("refs/remotes/origin/{branch}"));
    let refspec = quote(&format!(
        "+refs/heads/{branch}:refs/remotes/origin/{branch}"
    ));
    format!(
        "if ! said=$(g fetch -q --no-tags origin {refspec} 2>&1); then\n\
           case \"$said\" in\n\
             *\"couldn't find remote ref\"*) g update-ref -d {tracking} ;;\n\
             *) printf '%s\\n' \"$said\" >&2; exit {EXIT_FETCH} ;;\n\
           esac\n\
         fi\n"
    )
}

/// A refusal when `findings` holds any.
fn refuse_secrets(findings: Vec<Finding>) -> Result<(), Refused> {
    if findings.is_empty() {
        Ok(())
    } else {
        Err(Refused { findings })
    }
}

fn quote(text: &str) -> String {
    crate::tools::shell_quote(text)
}

/// What `git push --porcelain` said of one ref.
#[derive(Debug, PartialEq, Eq)]
enum PorcelainStatus {
    /// Lost a race: the lease or fast-forward check failed, or the server's own update.
    Stale(String, Lost),
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
        if summary.starts_with("[rejected]") {
            Some(PorcelainStatus::Stale(summary, Lost::Lease))
        } else if raced {
            Some(PorcelainStatus::Stale(summary, Lost::ServerLock))
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

/// A change too large to be scanned for secrets, which is refused rather than let through
/// unscanned.
fn too_large(what: &str) -> DeliveryError {
    DeliveryError::Git {
        command: format!("diff (secret scan before the {what})"),
        detail: format!(
            "the change adds more than {} MiB of text, more than is scanned for secrets; \
             commit it in smaller parts",
            MAX_SCANNED_BYTES / (1024 * 1024)
        ),
    }
}

fn failed(command: &str, out: &RunOutcome) -> DeliveryError {
    DeliveryError::Git {
        command: command.to_string(),
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
            Some(PorcelainStatus::Stale(
                "[rejected] (stale info)".into(),
                Lost::Lease
            ))
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
                "[remote rejected] (failed to update ref)".into(),
                Lost::ServerLock
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
