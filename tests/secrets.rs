//! Secrets never leave, end to end with the real binary and real git: real-format fake
//! credentials (AWS's documented example keys, a GitHub token shape, a private key block)
//! written by a playbook or by an agent are refused at the commit, so the product's branch
//! never holds them and the goal says why; a command that echoes a key is recorded in the
//! company's audit with the key redacted, so `git log -p` of the company never shows it; and
//! ordinary work full of hashes, UUIDs and base64 is delivered as before.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/company.rs"]
mod company;

use std::path::Path;

use cli::{get_json, git, run_command, text};
use company::{recorded_text, recorded_tool, small_company};

/// Real-format fake credentials, built at run time so this file holds none whole.
fn aws_key_id() -> String {
    ["AKIA", "IOSFODNN7", "EXAMPLE"].concat()
}
fn aws_secret() -> String {
    ["wJalrXUtnFEMI/K7MDENG", "/bPxRfiCYEXAMPLEKEY"].concat()
}
fn github_token() -> String {
    ["ghp_", "u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d"].concat()
}
fn private_key_body() -> &'static str {
    "YgCfrL1spNxnyVmihA/2O76UMFxFkM/R5Kjp1vRt+1fjORS/6ilI8ihN5KXSc7Tv"
}
fn private_key() -> String {
    let body = private_key_body();
    format!(
        "-----BEGIN RSA {p}-----\n{body}\n{body}\n-----END RSA {p}-----\n",
        p = "PRIVATE KEY"
    )
}

/// Every fake credential, as a string no git history may hold.
fn all_secrets() -> Vec<String> {
    vec![
        aws_key_id(),
        aws_secret(),
        github_token(),
        private_key_body().to_string(),
    ]
}

/// A goal met by `steps` (YAML list items indented by four spaces) when `file` exists; one
/// attempt, so a refusal is final.
fn goal(name: &str, file: &str, steps: &str) -> String {
    format!(
        "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: {name}}}\nspec:\n  product: app\n  owner: ceo\n  description: {name}.\n  check: {{file: {{path: {file}}}}}\n  budget: {{attempts: 1}}\n  playbook:\n{steps}"
    )
}

fn goal_status(home: &Path, state: &Path, name: &str) -> serde_json::Value {
    get_json(home, state, "goals")
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no goal {name}"))
}

/// Everything the controller ever committed to the company repository (the test's own
/// declaration holds the secrets the playbooks and the recorded model use).
fn company_history(company: &Path) -> String {
    git(company, &["log", "-p", "--all", "--", ".proto"])
}

/// Everything the product's branch holds, in every commit (empty when it has none).
fn product_history(dir: &Path) -> String {
    let out = cli::git_output(&dir.join("app.git"), &["log", "-p", "--all"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn playbooks_cannot_commit_secrets_and_the_records_of_what_they_ran_are_redacted() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml_quoted = |s: &str| serde_json::to_string(s).unwrap();
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
    let clean = format!(
        "commit 7ce85d8f3a1b2c4d5e6f708192a3b4c5d6e7f809\nsha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\nid: 123e4567-e89b-12d3-a456-426614174000\n<img src=\"data:image/png;base64,{png}\">\nAPI_KEY = os.environ[\"API_KEY\"]\n"
    );
    let goals = [
        goal(
            "leaky-config",
            "config.ini",
            &format!(
                "    - write: {{path: config.ini, content: {}}}\n    - commit: {{message: \"Add the config\"}}\n",
                yaml_quoted(&format!(
                    "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                    aws_key_id(),
                    aws_secret()
                ))
            ),
        ),
        goal(
            "leaky-key",
            "deploy_key",
            &format!(
                "    - write: {{path: deploy_key, content: {}}}\n",
                yaml_quoted(&private_key())
            ),
        ),
        goal(
            "noisy",
            "notes.txt",
            &format!(
                "    - run: {}\n    - write: {{path: notes.txt, content: \"clean\\n\"}}\n",
                yaml_quoted(&format!("echo GH_TOKEN={} >/dev/null", github_token()))
            ),
        ),
        // A commit made by a command, past the controller's commit scan: caught before the
        // push.
        goal(
            "smuggled",
            "smuggled.txt",
            &format!(
                "    - run: {}\n    - write: {{path: smuggled.txt, content: \"clean\\n\"}}\n",
                yaml_quoted(&format!(
                    "printf 'token = %s\\n' {} > t.txt && git add t.txt && git -c user.name=a -c user.email=a@example.com commit -qm smuggle",
                    github_token()
                ))
            ),
        ),
        // A secret committed and removed again by the next commit: the history a push
        // publishes still holds it, though the two commits together change nothing.
        goal(
            "hidden",
            "hidden.txt",
            &format!(
                "    - run: {}\n    - write: {{path: hidden.txt, content: \"clean\\n\"}}\n",
                yaml_quoted(&format!(
                    "printf 'token = %s\\n' {} > h.txt && git add h.txt && git -c user.name=a -c user.email=a@example.com commit -qm hide && git rm -q h.txt && git -c user.name=a -c user.email=a@example.com commit -qm unhide",
                    github_token()
                ))
            ),
        ),
        goal(
            "ordinary",
            "data.txt",
            &format!(
                "    - write: {{path: data.txt, content: {}}}\n",
                yaml_quoted(&clean)
            ),
        ),
    ]
    .concat();
    let company = small_company(tmp.path(), &goals);
    let state = tmp.path().join("state");
    let out = run_command(tmp.path(), &company, &state).output().unwrap();
    let said = text(&out);

    // The secrets' goals are not met, and say why: file, line and rule, never the secret.
    for (goal, place, rule) in [
        ("leaky-config", "config.ini:2", "high-entropy-assignment"),
        ("leaky-key", "deploy_key:1", "private-key"),
        ("smuggled", "t.txt:1", ""),
        ("hidden", "h.txt:1", ""),
    ] {
        let status = goal_status(tmp.path(), &state, goal);
        assert_eq!(status["ready"], "False", "{status:#}\n{said}");
        let message = status["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("{place} looks like a secret")) && message.contains(rule),
            "{goal}: {message}"
        );
    }
    // The work without secrets is delivered, the command's record with it.
    for goal in ["noisy", "ordinary"] {
        let status = goal_status(tmp.path(), &state, goal);
        assert_eq!(status["ready"], "True", "{goal}: {status:#}\n{said}");
    }
    let product = product_history(tmp.path());
    assert!(product.contains("notes.txt") && product.contains("data.txt"));
    assert!(product.contains("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"));
    assert!(!product.contains("config.ini") && !product.contains("deploy_key"));
    assert!(!product.contains("smuggle"), "{product}");
    assert!(!product.contains("hide"), "{product}");

    // Neither repository ever held a secret; the audit says what was refused, redacted.
    let history = company_history(&company);
    for secret in all_secrets() {
        assert!(!product.contains(&secret), "the product holds {secret}");
        assert!(
            !history.contains(&secret),
            "the company holds {secret}:\n{history}"
        );
    }
    assert!(history.contains("echo GH_TOKEN=(redacted)"), "{history}");
    assert!(history.contains("looks like a secret"), "{history}");

    // The refusals are events.
    let events = git(&company, &["log", "-1", "--format=%H"]);
    assert!(!events.is_empty());
    let logs = cli::proto(
        tmp.path(),
        &["logs", "--state-dir", state.to_str().unwrap()],
    );
    assert!(
        text(&logs).contains("looks like a secret"),
        "{}",
        text(&logs)
    );
}

#[test]
fn an_agents_commit_of_a_secret_is_undone_and_the_model_told_why() {
    let tmp = tempfile::tempdir().unwrap();
    let agent_goal = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: token}\nspec:\n  product: app\n  owner: ceo\n  description: The deploy script exists.\n  check: {file: {path: deploy.sh}}\n  budget: {attempts: 1}\n";
    let company = small_company(tmp.path(), agent_goal);
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace(
            "  mission: Test.\n",
            "  mission: Test.\n  models:\n    providers: [{name: recorded, type: replay, file: replay.jsonl}]\n",
        ),
    )
    .unwrap();
    let script = format!("#!/bin/sh\nexport GITHUB_TOKEN={}\n", github_token());
    let turns = [
        recorded_tool(
            "t1",
            "Write",
            serde_json::json!({"file_path": "deploy.sh", "content": script}),
        ),
        recorded_tool(
            "t2",
            "Git",
            serde_json::json!({"args": ["add", "deploy.sh"]}),
        ),
        recorded_tool(
            "t3",
            "Git",
            serde_json::json!({"args": ["commit", "-m", "Add the deploy script"]}),
        ),
        recorded_tool(
            "t4",
            "Git",
            serde_json::json!({"args": ["log", "--oneline"]}),
        ),
        recorded_text("done"),
    ];
    std::fs::write(company.join("replay.jsonl"), turns.join("\n") + "\n").unwrap();
    git(&company, &["add", "-A"]);
    git(&company, &["commit", "-q", "-m", "A scripted agent"]);
    let state = tmp.path().join("state");
    let out = run_command(tmp.path(), &company, &state).output().unwrap();
    let said = text(&out);

    // The agent's commit was refused with the reason, as its tool result.
    let history = company_history(&company);
    let audit: Vec<serde_json::Value> = git(&company, &["show", "main:.proto/audit"])
        .lines()
        .filter(|l| l.ends_with(".jsonl"))
        .flat_map(|f| {
            git(&company, &["show", &format!("main:.proto/audit/{f}")])
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let commit = audit
        .iter()
        .find(|r| r["action"] == "Git" && r["input"]["args"][0] == "commit")
        .unwrap_or_else(|| panic!("no commit audited: {history}\n{said}"));
    assert_eq!(commit["outcome"]["isError"], true, "{commit:#}");
    let reason = commit["outcome"]["content"].as_str().unwrap();
    assert!(
        reason.contains("deploy.sh:2 looks like a secret") && reason.contains("github-pat"),
        "{reason}"
    );
    // Undone: the log the agent asked for next shows no commit.
    let log = audit
        .iter()
        .find(|r| r["action"] == "Git" && r["input"]["args"][0] == "log")
        .unwrap();
    assert!(
        !log["outcome"]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("Add the deploy script"),
        "{log:#}"
    );
    // Nothing pushed, nothing recorded with the token; the goal is not met.
    let product = product_history(tmp.path());
    let status = goal_status(tmp.path(), &state, "token");
    assert_eq!(status["ready"], "False", "{status:#}\n{said}");
    for secret in all_secrets() {
        assert!(!product.contains(&secret), "the product holds {secret}");
        assert!(!history.contains(&secret), "the company holds {secret}");
    }
    assert!(history.contains("GITHUB_TOKEN=(redacted)"), "{history}");
}
