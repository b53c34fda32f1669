//! `proto audit` end to end, against real git: the example run by `proto run --once`, then
//! queried with each filter (and the results checked against what was asked), an old and a
//! malformed line committed by hand, the same trail read from a bare clone and through a
//! `file://` URL, an agent's `Write` through a recorded model with its diff, a trail under
//! a declaration's folder (`--path`), and bad arguments refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/company.rs"]
mod company;

use std::path::Path;
use std::process::Output;

use cli::{commit_all, git, proto, text, write};
use serde_json::Value;

/// `proto audit COMPANY ARGS...`, asserted to succeed.
fn audit(home: &Path, company: &Path, args: &[&str]) -> Output {
    let mut all = vec!["audit", company.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = proto(home, &all);
    assert!(out.status.success(), "proto {all:?}: {}", text(&out));
    out
}

/// `proto audit COMPANY ARGS... -o json`, parsed.
fn records(home: &Path, company: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = args.to_vec();
    all.extend_from_slice(&["-o", "json"]);
    let out = audit(home, company, &all);
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
        .as_array()
        .unwrap()
        .clone()
}

fn field<'a>(record: &'a Value, name: &str) -> &'a str {
    record[name].as_str().unwrap_or("")
}

/// Runs the example company once under `home`; returns the company repository.
fn run_example(home: &Path) -> std::path::PathBuf {
    let dir = home.join("example");
    let out = proto(home, &["init", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let company = dir.join("company");
    let state = home.join("state");
    let out = proto(
        home,
        &[
            "run",
            company.to_str().unwrap(),
            "--once",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    company
}

#[test]
fn the_example_s_trail_is_queried_by_every_filter() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let company = run_example(home);

    let all = records(home, &company, &[]);
    assert!(all.len() >= 10, "{all:#?}");
    let times: Vec<&str> = all.iter().map(|r| field(r, "time")).collect();
    let parsed: Vec<chrono::DateTime<chrono::Utc>> =
        times.iter().map(|t| t.parse().unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // --agent: only that agent's, and some.
    let agent = "technical-writer";
    let got = records(home, &company, &["--agent", agent]);
    assert!(!got.is_empty());
    assert!(got.iter().all(|r| field(r, "agent") == agent), "{got:#?}");
    let expected = all.iter().filter(|r| field(r, "agent") == agent).count();
    assert_eq!(got.len(), expected);

    // --goal
    let goal = "hello-api-greets-the-world";
    let got = records(home, &company, &["--goal", goal]);
    assert!(!got.is_empty());
    assert!(got.iter().all(|r| field(r, "goal") == goal), "{got:#?}");

    // --task: the task of the goal's records.
    let task = got[0]["task"].as_i64().unwrap();
    let by_task = records(home, &company, &["--task", &task.to_string()]);
    assert!(!by_task.is_empty());
    assert!(by_task.iter().all(|r| r["task"] == task), "{by_task:#?}");

    // --action: exact, and a glob.
    let pushes = records(home, &company, &["--action", "push"]);
    assert!(!pushes.is_empty());
    assert!(pushes.iter().all(|r| field(r, "action") == "push"));
    let globbed = records(home, &company, &["--action", "*i*"]);
    let actions: std::collections::BTreeSet<&str> =
        globbed.iter().map(|r| field(r, "action")).collect();
    assert!(
        actions.contains("write") && actions.contains("commit") && actions.contains("edit"),
        "{actions:?}"
    );
    assert!(actions.iter().all(|a| a.contains('i')), "{actions:?}");

    // Filters combine with AND.
    let got = records(home, &company, &["--agent", agent, "--action", "write"]);
    assert!(!got.is_empty());
    assert!(
        got.iter()
            .all(|r| field(r, "agent") == agent && field(r, "action") == "write"),
        "{got:#?}"
    );
    assert!(records(home, &company, &["--agent", agent, "--goal", goal]).is_empty());

    // Every write carries its diff in JSON; the table counts its lines; --diff prints it.
    let writes = records(home, &company, &["--action", "write"]);
    assert!(!writes.is_empty());
    assert!(
        writes
            .iter()
            .all(|r| field(r, "diff").starts_with("--- a/")),
        "{writes:#?}"
    );
    let yaml =
        String::from_utf8(audit(home, &company, &["--action", "write", "-o", "yaml"]).stdout)
            .unwrap();
    assert!(
        yaml.contains("diff:") && yaml.contains("+++ b/app.py"),
        "{yaml}"
    );
    let table = String::from_utf8(audit(home, &company, &[]).stdout).unwrap();
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("TIME"), "{table}");
    assert_eq!(lines.count(), all.len(), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(" edit ") && l.contains("+1/-1") && l.contains("path=app.py")),
        "{table}"
    );
    let long = String::from_utf8(
        audit(
            home,
            &company,
            &["--goal", goal, "--action", "edit", "--diff"],
        )
        .stdout,
    )
    .unwrap();
    assert!(
        long.contains("action=edit") && long.contains("+GREETING = \"Hello, world\""),
        "{long}"
    );

    // An old record and a malformed line, committed by hand: --since leaves the old one
    // out; the bad line is named with its file, commit and line, and the rest still print.
    let old = r#"{"id":1,"time":"2020-01-01T00:00:00+00:00","agent":"founder","goal":null,"task":null,"action":"Bash","input":{"command":"ls"},"outcome":{"exitCode":0},"diff":null}"#;
    write(
        &company,
        ".proto/audit/2020-01-01.jsonl",
        &format!("{old}\n{{\"id\": 2, \"time\": \"yesterday\"}}\n"),
    );
    let commit = commit_all(&company, "An old record and a broken one");
    let out = audit(home, &company, &["-o", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let located = format!(".proto/audit/2020-01-01.jsonl:2 (commit {})", &commit[..12]);
    assert!(
        stderr.contains("warning: ") && stderr.contains(&located),
        "{stderr}"
    );
    let with_old: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(with_old.len(), all.len() + 1);
    assert_eq!(field(&with_old[0], "agent"), "founder", "oldest first");
    let recent = records(home, &company, &["--since", "7d"]);
    assert_eq!(recent.len(), all.len());
    assert!(recent.iter().all(|r| field(r, "agent") != "founder"));
    assert_eq!(records(home, &company, &["--agent", "founder"]).len(), 1);

    // Only what is committed counts: an uncommitted line in the checkout is not read.
    write(&company, ".proto/audit/2020-01-02.jsonl", old);
    assert_eq!(records(home, &company, &["--agent", "founder"]).len(), 1);
    std::fs::remove_file(company.join(".proto/audit/2020-01-02.jsonl")).unwrap();

    // The same trail from a bare clone, by path and through a URL (fetched into the cache
    // under --state-dir, as `proto run` does).
    let bare = home.join("company.git");
    git(
        home,
        &[
            "clone",
            "-q",
            "--bare",
            company.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    assert_eq!(records(home, &bare, &[]).len(), all.len() + 1);
    let url = format!("file://{}", bare.display());
    let state = home.join("query-state");
    let out = proto(
        home,
        &[
            "audit",
            &url,
            "--state-dir",
            state.to_str().unwrap(),
            "--agent",
            agent,
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let remote: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        remote.len(),
        all.iter().filter(|r| field(r, "agent") == agent).count()
    );
}

#[test]
fn bad_arguments_are_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let company = company::small_company(home, "");
    let path = company.to_str().unwrap();
    for (args, says) in [
        (
            vec!["audit", path, "--since", "2 hours"],
            "invalid value '2 hours' for '--since <DURATION>': invalid duration",
        ),
        (vec!["audit", path, "-o", "xml"], "invalid value 'xml'"),
        (
            vec!["audit", path, "--task", "seven"],
            "invalid value 'seven'",
        ),
        (
            vec!["audit", path, "--diff", "-o", "json"],
            "cannot be used with",
        ),
    ] {
        let out = proto(home, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }
    // Not a repository: named, and a failure.
    let out = proto(home, &["audit", home.join("nowhere").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("nowhere"), "{}", text(&out));
    // A company with no audit yet: nothing to print, and no error.
    let out = proto(home, &["audit", path]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("No audit records match"),
        "{}",
        text(&out)
    );
    assert_eq!(
        String::from_utf8(proto(home, &["audit", path, "-o", "json"]).stdout).unwrap(),
        "[]\n"
    );
}

#[test]
fn an_agent_s_write_is_audited_with_its_diff() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let goal = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: written}\nspec:\n  product: app\n  owner: ceo\n  description: hello.txt greets from the agent.\n  check: {file: {path: hello.txt, matches: 'hello from the agent'}}\n";
    let company = company::small_company(home, goal);
    write(
        &company,
        "replay.jsonl",
        concat!(
            r#"{"response":{"id":"m1","model":"claude-sonnet-4-5","content":[{"type":"tool_use","id":"t1","name":"Write","input":{"file_path":"hello.txt","content":"hello from the agent\n"}}],"stop_reason":"tool_use","usage":{"input_tokens":100,"output_tokens":10}}}"#,
            "\n",
            r#"{"response":{"id":"m2","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Wrote hello.txt."}],"stop_reason":"end_turn","usage":{"input_tokens":30,"output_tokens":8}}}"#,
            "\n"
        ),
    );
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    write(
        &company,
        "company.yaml",
        &yaml.replace(
            "  mission: Test.\n",
            "  mission: Test.\n  models:\n    providers: [{name: recorded, type: replay, file: replay.jsonl}]\n",
        ),
    );
    commit_all(&company, "Record a model");
    let state = home.join("state");
    let out = proto(
        home,
        &[
            "run",
            company.to_str().unwrap(),
            "--once",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let writes = records(home, &company, &["--action", "Write"]);
    assert_eq!(writes.len(), 1, "{writes:#?}");
    let w = &writes[0];
    assert_eq!(
        (field(w, "agent"), field(w, "goal")),
        ("ceo", "written"),
        "{w:#}"
    );
    assert!(field(w, "diff").contains("+hello from the agent"), "{w:#}");
    assert_eq!(w["input"]["file_path"], "hello.txt");
    let models = records(home, &company, &["--agent", "ceo", "--action", "mod?l"]);
    assert_eq!(models.len(), 2, "{models:#?}");
    assert!(models.iter().all(|r| r["diff"].is_null()));
    let long =
        String::from_utf8(audit(home, &company, &["--action", "Write", "--diff"]).stdout).unwrap();
    assert!(
        long.starts_with(&field(w, "time")[..19])
            && long.contains("Z ceo goal=written task=")
            && long.contains("+hello from the agent"),
        "{long}"
    );
}

#[test]
fn a_declaration_in_a_folder_has_its_audit_there() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let repo = home.join("monorepo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let line = r#"{"id":1,"time":"2026-01-02T03:04:05+00:00","agent":"ceo","goal":"g","task":1,"action":"Bash","input":{"command":"make"},"outcome":{"exitCode":0},"diff":null}"#;
    write(
        &repo,
        "company/.proto/audit/2026-01-02.jsonl",
        &format!("{line}\nnot a record\n"),
    );
    write(&repo, ".proto/audit/2026-01-02.jsonl", "");
    let commit = commit_all(&repo, "A trail in a folder");
    let out = audit(home, &repo, &["--path", "company", "-o", "json"]);
    let found: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found.len(), 1, "{}", text(&out));
    assert_eq!(field(&found[0], "action"), "Bash");
    let warning = format!(
        "company/.proto/audit/2026-01-02.jsonl:2 (commit {})",
        &commit[..12]
    );
    assert!(text(&out).contains(&warning), "{}", text(&out));
    // The repository's root has no records of its own.
    assert!(records(home, &repo, &[]).is_empty());
}
