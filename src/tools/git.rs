//! `Git`: the `git` CLI in the workspace, limited to a safe set of subcommands (status,
//! diff, log, show, add, commit, branch, `checkout -b`, rev-parse). Pushing, history
//! rewriting, resets, configuration and anything that throws work away are refused: the
//! controller pushes the workspace's branch itself, and history is the company's record.
//!
//! Arguments are passed as a list and quoted for the shell, so an argument is never shell
//! syntax. Commits are made as the task's author (`GIT_AUTHOR_*`/`GIT_COMMITTER_*`), and a
//! commit that adds a secret is undone and refused (see [`crate::secrets`]).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::bash::{run_shell, timeout};
use super::{Input, Tool, ToolContext, ToolError, ToolOutput, shell_quote};

/// Subcommands that may run at all.
const ALLOWED: [&str; 9] = [
    "status",
    "diff",
    "log",
    "show",
    "add",
    "commit",
    "branch",
    "checkout",
    "rev-parse",
];

/// Options refused whatever the subcommand: forcing, rewriting history, skipping hooks,
/// writing or reading files outside the repository (`--output`, `diff --no-index`), running
/// other programs.
const REFUSED_OPTIONS: [&str; 9] = [
    "--force",
    "-f",
    "--amend",
    "--no-verify",
    "--no-index",
    "--output",
    "--exec",
    "--ext-diff",
    "--upload-pack",
];

/// Options of `branch` that delete, rename, copy or configure branches.
const REFUSED_BRANCH_OPTIONS: [&str; 14] = [
    "-d",
    "-D",
    "--delete",
    "-m",
    "-M",
    "--move",
    "-c",
    "-C",
    "--copy",
    "-u",
    "--set-upstream-to",
    "--unset-upstream",
    "--edit-description",
    "--track",
];

pub struct Git;

#[async_trait]
impl Tool for Git {
    fn name(&self) -> &str {
        "Git"
    }

    fn description(&self) -> &str {
        "Runs git in the workspace with args as a list, e.g. [\"commit\", \"-m\", \"Add x\"]. \
         Allowed: status, diff, log, show, add, commit, branch (list or create), \
         checkout -b, rev-parse. Pushing, resets, amending, forcing and configuration are \
         refused; the controller pushes the branch when the task is done."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "args": {"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "The arguments to git, the subcommand first"},
                "timeout": {"type": "integer", "minimum": 1, "maximum": super::bash::MAX_TIMEOUT_MS, "description": "Optional timeout in milliseconds"}
            },
            "required": ["args"],
            "additionalProperties": false
        })
    }

    async fn run(&self, input: &Value, ctx: &ToolContext<'_>) -> Result<ToolOutput, ToolError> {
        let input = Input::new(input, &["args", "timeout"])?;
        let args = input
            .opt_strings("args")?
            .ok_or_else(|| ToolError::invalid("args", "required"))?;
        check(&args)?;
        let timeout: Duration = timeout(&input)?;
        let mut line = String::from("git --no-pager");
        for arg in &args {
            line.push(' ');
            line.push_str(&shell_quote(arg));
        }
        let mut env = BTreeMap::new();
        for (key, value) in [
            ("GIT_AUTHOR_NAME", &ctx.author.name),
            ("GIT_AUTHOR_EMAIL", &ctx.author.email),
            ("GIT_COMMITTER_NAME", &ctx.author.name),
            ("GIT_COMMITTER_EMAIL", &ctx.author.email),
        ] {
            env.insert(key.to_string(), value.clone());
        }
        // Never wait on a prompt or an editor nobody will answer.
        env.insert("GIT_TERMINAL_PROMPT".to_string(), "0".to_string());
        env.insert("GIT_EDITOR".to_string(), "true".to_string());
        if args.first().map(String::as_str) != Some("commit") {
            return run_shell(ctx, &line, timeout, env).await;
        }
        // A commit is checked after git made it, on exactly what it holds (`-a`, paths and
        // the index all decide that): one that adds a secret is undone before anything can
        // push it, its changes left staged for the agent to fix.
        let git = crate::gitops::delivery::Git {
            computer: ctx.computer,
            workspace: ctx.workspace,
            cancel: ctx.cancel,
        };
        let before = git.head().await.map_err(delivery_error)?;
        let out = run_shell(ctx, &line, timeout, env).await?;
        let after = git.head().await.map_err(delivery_error)?;
        if out.is_error || after.is_none() || after == before {
            return Ok(out);
        }
        let findings = git
            .secrets_since(before.as_deref())
            .await
            .map_err(delivery_error)?;
        if findings.is_empty() {
            return Ok(out);
        }
        git.uncommit(before.as_deref())
            .await
            .map_err(delivery_error)?;
        Err(ToolError::Secrets(crate::secrets::Refused { findings }))
    }
}

fn delivery_error(e: crate::gitops::delivery::DeliveryError) -> ToolError {
    match e {
        crate::gitops::delivery::DeliveryError::Cancelled => {
            ToolError::Halt(super::Halt::Cancelled)
        }
        crate::gitops::delivery::DeliveryError::Computer(e) => ToolError::Computer(e),
        e => ToolError::Failed(e.to_string()),
    }
}

/// Refuses what is not in the safe set, naming why.
fn check(args: &[String]) -> Result<(), ToolError> {
    let Some(subcommand) = args.first() else {
        return Err(ToolError::invalid("args", "is empty; name a subcommand"));
    };
    if subcommand.starts_with('-') {
        // `-c key=value`, `-C dir`, `--git-dir`: options before the subcommand change
        // configuration or where git works.
        return Err(ToolError::Refused(format!(
            "git option `{subcommand}` before the subcommand"
        )));
    }
    if !ALLOWED.contains(&subcommand.as_str()) {
        return Err(ToolError::Refused(format!(
            "`git {}` is not allowed; allowed subcommands: {}",
            args.join(" "),
            ALLOWED.join(", ")
        )));
    }
    let rest = &args[1..];
    for arg in rest {
        if arg == "--" {
            break;
        }
        for name in option_names(subcommand, arg) {
            if REFUSED_OPTIONS.contains(&name.as_str())
                || (subcommand == "branch" && REFUSED_BRANCH_OPTIONS.contains(&name.as_str()))
                // `commit -n` skips the hooks (`log -n 5` is only a count).
                || (subcommand == "commit" && name == "-n")
            {
                return Err(ToolError::Refused(format!(
                    "`{arg}` is not allowed with `git {subcommand}`"
                )));
            }
        }
    }
    if subcommand == "checkout" {
        // Only creating a branch: a plain checkout of files or commits can discard work.
        let creates = matches!(rest, [flag, name, ..] if flag == "-b" && !name.starts_with('-'));
        if !creates || rest.len() > 3 {
            return Err(ToolError::Refused(
                "only `git checkout -b <branch> [<start>]` is allowed".to_string(),
            ));
        }
    }
    Ok(())
}

/// The options `arg` stands for: `--name=value` is `--name`; a cluster of short options
/// (`-am`, `-fd`) is each letter up to the first that takes a value (`-mfix` is `-m fix`,
/// not `-f`).
fn option_names(subcommand: &str, arg: &str) -> Vec<String> {
    if arg.starts_with("--") {
        return vec![arg.split('=').next().unwrap_or_default().to_string()];
    }
    let Some(letters) = arg.strip_prefix('-') else {
        return Vec::new();
    };
    // Short options of the allowed subcommands whose value may follow glued on.
    let takes_value = match subcommand {
        "commit" => "mFcCt",
        "log" | "show" | "diff" => "nUSGO",
        _ => "",
    };
    let mut names = Vec::new();
    for letter in letters.chars() {
        names.push(format!("-{letter}"));
        if takes_value.contains(letter) || !letter.is_ascii_alphabetic() {
            break;
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn safe_commands_pass_and_dangerous_ones_are_refused() {
        for ok in [
            "status",
            "log --oneline -5",
            "log -n 3",
            "log -n3",
            "commit -am fix",
            "commit -mfix",
            "add -A",
            "commit -m x",
            "add -A",
            "branch",
            "branch feature",
            "checkout -b feature",
            "diff -- -n",
        ] {
            assert!(check(&args(ok)).is_ok(), "{ok}");
        }
        for refused in [
            "push --force",
            "push",
            "reset --hard",
            "config user.name x",
            "-c core.editor=x status",
            "commit --amend -m x",
            "commit --no-verify -m x",
            "add -f secret",
            "branch -D main",
            "checkout main",
            "checkout -- file",
            "diff --output=/tmp/x",
            "diff --no-index /etc/passwd x",
            "commit -n -m x",
            "commit -anm x",
            "add -fA secret",
            "branch -fd main",
            "rebase main",
            "clean -fdx",
        ] {
            assert!(
                matches!(check(&args(refused)), Err(ToolError::Refused(_))),
                "{refused}"
            );
        }
    }
}
