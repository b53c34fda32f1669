//! The engine end to end, against real git: `proto init` + `proto run --once` on the
//! example, a pushed goal dispatched and recorded, a `git://` remote served by `git daemon`,
//! an invalid revision that leaves the last good one running, a stalled goal and `retry`, a
//! quiet reconcile that commits nothing, and a SIGKILL in the middle of a playbook.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/company.rs"]
mod company;
#[path = "support/git_daemon.rs"]
mod git_daemon;
#[path = "support/mock_llm.rs"]
mod mock_llm;

use company::{recorded_text, recorded_tool, small_company};

use cli::{bin, get_json, git, proto, text, wait_for};
use git_daemon::Daemon;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn goals_json(home: &Path, state: &Path) -> serde_json::Value {
    get_json(home, state, "goals")
}

/// `proto get tasks -o json`: every task with its spend.
fn tasks_json(home: &Path, state: &Path) -> serde_json::Value {
    get_json(home, state, "tasks")
}

fn reason(goals: &serde_json::Value, name: &str) -> String {
    goals
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no goal {name} in {goals:#}"))["reason"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every audit record the controller committed, as text.
fn audit_text(company: &Path) -> String {
    std::fs::read_dir(company.join(".proto/audit"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect()
}

/// Declares the npm MCP server `everything` as `every` in the company's `.mcp.json`.
fn declare_everything_server(company: &Path) {
    let npm = std::env::var_os("PROTO_TEST_NPM")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/npm"));
    let everything = npm.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        everything.is_file(),
        "run scripts/test.sh to install the npm MCP servers"
    );
    std::fs::write(
        company.join(".mcp.json"),
        serde_json::json!({ "mcpServers": { "every": { "command": "node", "args": [everything.to_str().unwrap(), "stdio"] } } }).to_string(),
    )
    .unwrap();
}

/// The audit record of the MCP server's `echo` call, checked to have echoed.
fn audited_echo(company: &Path) -> serde_json::Value {
    let audit = audit_text(company);
    let echo = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["action"] == "mcp__every__echo")
        .unwrap_or_else(|| panic!("no MCP call audited: {audit}"));
    assert_eq!(echo["outcome"]["content"], "Echo: from mcp", "{echo:#}");
    assert_eq!(echo["outcome"]["isError"], false);
    echo
}

/// Writes the recorded turns to `replay.jsonl` and commits the company as it stands.
fn commit_replay(company: &Path, turns: &[String], message: &str) {
    std::fs::write(company.join("replay.jsonl"), turns.join("\n") + "\n").unwrap();
    git(company, &["add", "-A"]);
    git(company, &["commit", "-q", "-m", message]);
}

/// Declares a replay provider reading `replay.jsonl` in the company repository.
fn use_recorded_model(company: &Path) {
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace(
            "  mission: Test.\n",
            "  mission: Test.\n  models:\n    providers: [{name: recorded, type: replay, file: replay.jsonl}]\n",
        ),
    )
    .unwrap();
}

fn goal(name: &str, file: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: {name}}}\nspec:\n  product: app\n  owner: ceo\n  description: {name} holds.\n  check: {{file: {{path: {file}}}}}\n  playbook:\n    - write: {{path: {file}, content: \"{name}\\n\"}}\n    - commit: {{message: \"Make {name} hold\"}}\n{extra}"
    )
}

#[test]
fn the_example_runs_offline_and_records_everything_in_git() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("example");
    let out = proto(home.path(), &["init", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let state = home.path().join("state");
    let company = dir.join("company");
    let out = proto(
        home.path(),
        &[
            "run",
            company.to_str().unwrap(),
            "--once",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    // No key here: the declared provider is shown, and why it is not used.
    let providers = get_json(home.path(), &state, "providers");
    assert_eq!(providers[0]["name"], "anthropic", "{providers:#}");
    assert_eq!(providers[0]["state"], "NotConfigured", "{providers:#}");
    assert_eq!(providers[0]["baseUrl"], "https://api.anthropic.com");
    assert!(
        providers[0]["lastError"]
            .as_str()
            .unwrap()
            .contains("ANTHROPIC_API_KEY holds no API key"),
        "{providers:#}"
    );
    let goals = goals_json(home.path(), &state);
    for met in [
        "hello-api-serves-hello",
        "hello-api-greets-the-world",
        "hello-api-tests-pass",
        "hello-api-readme",
        "hello-api-license",
        "hello-api-ci",
        "docs-site-index",
    ] {
        assert_eq!(reason(&goals, met), "CheckPassed", "{met}: {all}");
    }
    for waiting in ["docs-site-quickstart", "hello-api-security-review"] {
        assert_eq!(reason(&goals, waiting), "NoModel", "{waiting}: {all}");
    }
    assert!(all.contains("Waiting on something outside"), "{all}");
    // The product's work is on its branch.
    let log = git(&dir.join("hello-api.git"), &["log", "--format=%s", "main"]);
    assert!(log.contains("Serve GET /hello with a self-test"), "{log}");
    assert!(log.contains("Greet the world"), "{log}");
    // The company repository holds the record, and its working tree is clean.
    // Finished work is recorded in commits of its own (together when tasks finish close
    // together), each task's verdict in a message.
    let log = git(&company, &["log", "--format=%an %B"]);
    assert!(log.lines().any(|l| l.starts_with("proto proto: ")), "{log}");
    for met in [
        "hello-api-serves-hello",
        "hello-api-greets-the-world",
        "docs-site-index",
    ] {
        assert!(log.contains(&format!("{met} met")), "{met}: {log}");
    }
    assert_eq!(git(&company, &["status", "--porcelain"]), "");
    let status = std::fs::read_to_string(company.join(".proto/status.yaml")).unwrap();
    assert!(
        status.contains("hello-api-serves-hello") && status.contains("CheckPassed"),
        "{status}"
    );
    let plan =
        std::fs::read_to_string(company.join(".proto/planning/hello-api/tasks.json")).unwrap();
    assert!(plan.contains("\"status\": \"done\""), "{plan}");
    let audit = audit_text(&company);
    assert!(
        audit.contains("\"action\":\"write\"") && audit.contains("+++ b/app.py"),
        "{audit}"
    );

    // A quiet reconcile makes no commit.
    let head = git(&company, &["rev-parse", "HEAD"]);
    let out = proto(
        home.path(),
        &[
            "run",
            company.to_str().unwrap(),
            "--once",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        git(&company, &["rev-parse", "HEAD"]),
        head,
        "a quiet reconcile committed"
    );

    // get tasks / describe goal read the store.
    let tasks = tasks_json(home.path(), &state);
    assert!(tasks.as_array().unwrap().len() >= 7);
    let out = proto(
        home.path(),
        &[
            "describe",
            "goal",
            "hello-api-readme",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert!(text(&out).contains("CheckPassed"), "{}", text(&out));
}

#[test]
fn a_pushed_goal_is_dispatched_met_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let company = small_company(tmp.path(), &goal("first", "first.txt", ""));
    let state = tmp.path().join("state");
    let run = || run_once(tmp.path(), &company, &state);
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The user adds a goal and commits it.
    std::fs::write(
        company.join("second.yaml"),
        goal("second", "second.txt", ""),
    )
    .unwrap();
    // The controller commits its records to the same repository meanwhile.
    cli::git_beside_the_controller(&company, &["add", "second.yaml"]);
    cli::git_beside_the_controller(&company, &["commit", "-q", "-m", "Add a second goal"]);
    let out = run();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let goals = goals_json(tmp.path(), &state);
    assert_eq!(reason(&goals, "second"), "CheckPassed");
    let files = git(
        &tmp.path().join("app.git"),
        &["ls-tree", "--name-only", "main"],
    );
    assert!(files.contains("second.txt"), "{files}");
    let last = git(&company, &["log", "-1", "--format=%an <%ae> %s"]);
    assert!(
        last.starts_with("proto-bot <bot@localhost> proto: second"),
        "{last}"
    );
    // Delivered work leaves no workspace behind.
    // (The product's mirror stays: the next workspace is made from it.)
    let left: Vec<_> = std::fs::read_dir(state.join("work"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|name| name != proto::gitops::workspace::MIRRORS)
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn an_invalid_revision_keeps_the_last_good_one_running() {
    let tmp = tempfile::tempdir().unwrap();
    let company = small_company(tmp.path(), &goal("good", "good.txt", ""));
    let state = tmp.path().join("state");
    let run = || run_once(tmp.path(), &company, &state);
    assert_eq!(run().status.code(), Some(0));
    std::fs::write(
        company.join("bad.yaml"),
        goal("bad", "bad.txt", "  ownr: nobody\n"),
    )
    .unwrap();
    git(&company, &["add", "bad.yaml"]);
    git(&company, &["commit", "-q", "-m", "Break the declaration"]);
    let bad = git(&company, &["rev-parse", "HEAD"]);
    let out = run();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("bad.yaml") && all.contains("ownr"), "{all}");
    let status = recorded_status(&state).unwrap();
    assert_eq!(status["lastAttemptedRevision"], bad.as_str());
    assert_ne!(status["lastAppliedRevision"], bad.as_str());
    assert!(
        status["errors"][0]
            .as_str()
            .unwrap()
            .contains("unknown field"),
        "{status:#}"
    );
    assert_eq!(
        reason(&goals_json(tmp.path(), &state), "good"),
        "CheckPassed"
    );
}

#[test]
fn exhausted_attempts_stall_the_goal_until_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let never = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: never}\nspec:\n  product: app\n  owner: ceo\n  description: Never holds.\n  check: {command: {run: 'test -f impossible.txt'}}\n  playbook: [{write: {path: other.txt, content: x}}]\n  budget: {attempts: 2}\n";
    let company = small_company(tmp.path(), never);
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("Stalled") && all.contains("never"), "{all}");
    assert_eq!(
        reason(&goals_json(tmp.path(), &state), "never"),
        "AttemptsExhausted"
    );
    let out = proto(
        tmp.path(),
        &["retry", "never", "--state-dir", state.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let tasks = tasks_json(tmp.path(), &state);
    assert_eq!(tasks[0]["state"], "queued", "{tasks:#}");
}

#[test]
fn a_git_remote_is_cloned_reconciled_and_pushed_to() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let company = small_company(&work, &goal("remote", "remote.txt", ""));
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    git(
        &served,
        &[
            "clone",
            "-q",
            "--bare",
            company.to_str().unwrap(),
            "company.git",
        ],
    );
    git(&served, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    let d = Daemon::start(&served);
    let url = format!("git://127.0.0.1:{}/company.git", d.port);
    let state = tmp.path().join("state");
    let out = proto(
        tmp.path(),
        &[
            "run",
            &url,
            "--once",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        reason(&goals_json(tmp.path(), &state), "remote"),
        "CheckPassed"
    );
    let files = git(&served.join("app.git"), &["ls-tree", "--name-only", "main"]);
    assert!(files.contains("remote.txt"), "{files}");
    let log = git(
        &served.join("company.git"),
        &["log", "--format=%an %s", "main"],
    );
    assert!(log.contains("proto-bot proto: remote"), "{log}");
}

#[test]
fn sigkill_in_the_middle_of_a_playbook_loses_nothing_and_repeats_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let slow = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: slow}\nspec:\n  product: app\n  owner: ceo\n  description: Slow work.\n  check: {file: {path: done.txt}}\n  playbook:\n    - write: {path: notes.txt, content: \"notes\\n\"}\n    - run: \"touch started && sleep 5\"\n    - write: {path: done.txt, content: \"done\\n\"}\n    - commit: {message: \"Do the slow work\"}\n";
    let company = small_company(tmp.path(), slow);
    let state = tmp.path().join("state");
    let mut child = Command::new(bin())
        .args([
            "run",
            company.to_str().unwrap(),
            "--once",
            "--state-dir",
            state.to_str().unwrap(),
        ])
        .env("HOME", tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the playbook is inside its `run` step, then kill -9.
    let deadline = Instant::now() + Duration::from_secs(60);
    let started = loop {
        let found = std::fs::read_dir(state.join("work"))
            .ok()
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path().join("started"))
            .find(|p| p.exists());
        if let Some(p) = found {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the playbook never reached its run step"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert!(started.exists());
    let out = run_once(tmp.path(), &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        reason(&goals_json(tmp.path(), &state), "slow"),
        "CheckPassed"
    );
    let log = git(&tmp.path().join("app.git"), &["log", "--format=%s", "main"]);
    assert_eq!(
        log.lines().filter(|l| *l == "Do the slow work").count(),
        1,
        "{log}"
    );
}

/// The status the engine recorded in the store of `state`.
fn recorded_status(state: &Path) -> Option<serde_json::Value> {
    let store = proto::store::Store::open(state).ok()?;
    serde_json::from_str(&store.status().ok()??).ok()
}

fn status_reason(state: &Path, goal: &str) -> Option<String> {
    let status = recorded_status(state)?;
    status["goals"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == goal)
        .and_then(|g| g["reason"].as_str())
        .map(String::from)
}

#[test]
fn a_running_controller_picks_up_a_new_commit_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let company = small_company(tmp.path(), &goal("first", "first.txt", ""));
    let state = tmp.path().join("state");
    let child = Command::new(bin())
        .args([
            "run",
            company.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--poll",
            "1s",
        ])
        .env("HOME", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first goal", Duration::from_secs(60), || {
        status_reason(&state, "first").as_deref() == Some("CheckPassed")
    });
    // The user commits a new goal while the controller runs: the watcher notices.
    std::fs::write(
        company.join("second.yaml"),
        goal("second", "second.txt", ""),
    )
    .unwrap();
    // The controller commits its records to the same repository meanwhile.
    cli::git_beside_the_controller(&company, &["add", "second.yaml"]);
    cli::git_beside_the_controller(&company, &["commit", "-q", "-m", "Add a second goal"]);
    wait_for("the second goal", Duration::from_secs(60), || {
        status_reason(&state, "second").as_deref() == Some("CheckPassed")
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("second"));
}

#[test]
fn a_suspended_company_does_no_work_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let company = small_company(tmp.path(), &goal("held", "held.txt", ""));
    let text_before = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        text_before.replace("  mission: Test.\n", "  mission: Test.\n  suspend: true\n"),
    )
    .unwrap();
    git(&company, &["commit", "-q", "-am", "Suspend"]);
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(reason(&goals_json(tmp.path(), &state), "held"), "Suspended");
    let out = proto(
        tmp.path(),
        &[
            "get",
            "tasks",
            "--state-dir",
            state.to_str().unwrap(),
            "-o",
            "json",
        ],
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
}

#[test]
fn a_goal_without_a_playbook_is_worked_by_its_agent_through_a_model() {
    let tmp = tempfile::tempdir().unwrap();
    let agent_goal = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: written}\nspec:\n  product: app\n  owner: ceo\n  description: hello.txt greets from the agent.\n  check: {file: {path: hello.txt, matches: 'hello from the agent'}}\n";
    let company = small_company(tmp.path(), agent_goal);
    // A replay provider: recorded model responses in the Anthropic wire shape.
    std::fs::write(
        company.join("replay.jsonl"),
        concat!(
            r#"{"response":{"id":"m1","model":"claude-sonnet-4-5","content":[{"type":"text","text":"I will write it."},{"type":"tool_use","id":"t1","name":"Write","input":{"file_path":"hello.txt","content":"hello from the agent\n"}}],"stop_reason":"tool_use","usage":{"input_tokens":1200,"output_tokens":40}}}"#,
            "\n",
            r#"{"response":{"id":"m2","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Wrote hello.txt."}],"stop_reason":"end_turn","usage":{"input_tokens":30,"output_tokens":8,"cache_read_input_tokens":1200}}}"#,
            "\n"
        ),
    )
    .unwrap();
    use_recorded_model(&company);
    git(&company, &["add", "-A"]);
    git(&company, &["commit", "-q", "-m", "Record a model"]);
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert_eq!(
        reason(&goals_json(tmp.path(), &state), "written"),
        "CheckPassed",
        "{all}"
    );
    let log = git(&tmp.path().join("app.git"), &["log", "--format=%s", "main"]);
    assert_eq!(log, "written: work by ceo");
    let audit = audit_text(&company);
    assert!(
        audit.contains("\"action\":\"Write\"") && audit.contains("+hello from the agent"),
        "{audit}"
    );
    assert!(audit.contains("\"action\":\"model\""), "{audit}");
    let out = proto(
        tmp.path(),
        &[
            "describe",
            "goal",
            "written",
            "--state-dir",
            state.to_str().unwrap(),
            "-o",
            "json",
        ],
    );
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(view["spentUsd"].as_f64().unwrap() > 0.0, "{view:#}");
    // `proto logs`: the task's life, the model's turns and the tool calls, in order.
    let logs = proto(
        tmp.path(),
        &[
            "logs",
            "--goal",
            "written",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    let logs = text(&logs);
    let at = |needle: &str| {
        logs.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in the logs:\n{logs}"))
    };
    assert!(at("task.queued") < at("task.started"), "{logs}");
    assert!(
        at("ceo: claude-sonnet-4-5 turn 1 (1200 in, 0 cached, 40 out")
            < at("ceo: Write(hello.txt)"),
        "{logs}"
    );
    assert!(
        at("ceo: Write(hello.txt)") < at("turn 2 (30 in, 1200 cached"),
        "{logs}"
    );
    assert!(at("turn 2") < at("task.succeeded"), "{logs}");
    let json = proto(
        tmp.path(),
        &[
            "logs",
            "--tail",
            "50",
            "--state-dir",
            state.to_str().unwrap(),
            "-o",
            "json",
        ],
    );
    let activities: Vec<serde_json::Value> = String::from_utf8(json.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "agent.tool")
        .collect();
    assert!(
        activities
            .iter()
            .any(|e| e["data"]["call"] == "Write(hello.txt)" && e["data"]["ok"] == true),
        "{activities:#?}"
    );
}

#[test]
fn permission_rules_and_hooks_stand_between_the_model_and_the_workspace() {
    let tmp = tempfile::tempdir().unwrap();
    let agent_goal = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: guarded}\nspec:\n  product: app\n  owner: ceo\n  description: hello.txt exists.\n  check: {file: {path: hello.txt}}\n";
    let company = small_company(tmp.path(), agent_goal);
    // A real hook script: it refuses writes to secret.txt (exit 2, reason on stderr).
    let hook = tmp.path().join("no-secrets.sh");
    std::fs::write(
        &hook,
        "#!/bin/sh\ninput=$(cat)\ncase \"$input\" in *secret.txt*) echo 'secret.txt is off limits' >&2; exit 2;; esac\nexit 0\n",
    )
    .unwrap();
    std::fs::create_dir_all(company.join(".claude")).unwrap();
    std::fs::write(
        company.join(".claude/settings.json"),
        serde_json::json!({
            "permissions": { "deny": ["Bash(rm *)"] },
            "hooks": { "PreToolUse": [ { "matcher": "Write", "hooks": [ { "type": "command", "command": format!("sh {}", hook.display()) } ] } ] }
        })
        .to_string(),
    )
    .unwrap();
    use_recorded_model(&company);
    commit_replay(
        &company,
        &[
            recorded_tool(
                "t1",
                "Write",
                serde_json::json!({"file_path": "secret.txt", "content": "x"}),
            ),
            recorded_tool("t2", "Bash", serde_json::json!({"command": "rm -rf ."})),
            recorded_tool(
                "t3",
                "Write",
                serde_json::json!({"file_path": "hello.txt", "content": "hi\n"}),
            ),
            recorded_text("done"),
        ],
        "Guard the workspace",
    );
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        reason(&goals_json(tmp.path(), &state), "guarded"),
        "CheckPassed"
    );
    let files = git(
        &tmp.path().join("app.git"),
        &["ls-tree", "--name-only", "main"],
    );
    assert_eq!(files, "hello.txt");
    let audit = audit_text(&company);
    assert!(
        audit.contains("blocked by a PreToolUse hook: secret.txt is off limits"),
        "{audit}"
    );
    assert!(audit.contains("refused by the permission rules"), "{audit}");
}

#[test]
fn a_judge_check_is_graded_by_a_model_with_a_validated_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let judged = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: judged}\nspec:\n  product: app\n  owner: ceo\n  description: A quickstart exists.\n  check: {judge: {rubric: 'quickstart.md explains how to run the app', model: haiku}}\n";
    let company = small_company(tmp.path(), judged);
    let text_turn = |t: &str| {
        serde_json::json!({"response": {"content": [{"type": "text", "text": t}], "stop_reason": "end_turn", "usage": {"input_tokens": 20, "output_tokens": 10}}}).to_string()
    };
    use_recorded_model(&company);
    commit_replay(
        &company,
        &[
        // The judge before the work: not met.
        text_turn(r#"{"pass": false, "reason": "there is no quickstart.md"}"#),
        // The owner agent writes it.
        serde_json::json!({"response": {"content": [{"type": "tool_use", "id": "w", "name": "Write", "input": {"file_path": "quickstart.md", "content": "Run: python3 app.py\n"}}], "stop_reason": "tool_use", "usage": {"input_tokens": 30, "output_tokens": 12}}}).to_string(),
        text_turn("Wrote quickstart.md."),
        // The judge after the work reads the file, then passes citing it.
        serde_json::json!({"response": {"content": [{"type": "tool_use", "id": "r", "name": "Read", "input": {"file_path": "quickstart.md"}}], "stop_reason": "tool_use", "usage": {"input_tokens": 30, "output_tokens": 12}}}).to_string(),
        text_turn(r#"Checked. {"pass": true, "reason": "quickstart.md says how to run it", "evidence": ["quickstart.md:1"]}"#),
        ],
        "A judged goal",
    );
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let goals = goals_json(tmp.path(), &state);
    assert_eq!(reason(&goals, "judged"), "CheckPassed", "{goals:#}");
    assert!(
        goals
            .to_string()
            .contains("judge: quickstart.md says how to run it"),
        "{goals:#}"
    );
}

/// A judge's pass counts only with evidence from its own reading: passing without citing
/// anything, citing a file it never read, or citing a file that is not there, each leaves
/// the goal unmet with the reason, and the work is not delivered.
#[test]
fn a_judge_that_passes_without_evidence_does_not_meet_the_goal() {
    let text_turn = |t: &str| {
        serde_json::json!({"response": {"content": [{"type": "text", "text": t}], "stop_reason": "end_turn", "usage": {"input_tokens": 20, "output_tokens": 10}}}).to_string()
    };
    let read = |path: &str| {
        serde_json::json!({"response": {"content": [{"type": "tool_use", "id": "r", "name": "Read", "input": {"file_path": path}}], "stop_reason": "tool_use", "usage": {"input_tokens": 30, "output_tokens": 12}}}).to_string()
    };
    let cases = [
        (
            vec![text_turn(r#"{"pass": true, "reason": "looks done"}"#)],
            "without citing evidence",
        ),
        (
            vec![text_turn(
                r#"{"pass": true, "reason": "looks done", "evidence": ["quickstart.md"]}"#,
            )],
            "none of its own tool calls read or found",
        ),
        (
            vec![
                read("missing.md"),
                text_turn(r#"{"pass": true, "reason": "looks done", "evidence": ["missing.md"]}"#),
            ],
            "none of its own tool calls read or found",
        ),
    ];
    for (judge_after, why) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let judged = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: judged}\nspec:\n  product: app\n  owner: ceo\n  description: A quickstart exists.\n  budget: {attempts: 1}\n  check: {judge: {rubric: 'quickstart.md explains how to run the app', model: haiku}}\n";
        let company = small_company(tmp.path(), judged);
        use_recorded_model(&company);
        let mut exchanges = vec![
            text_turn(r#"{"pass": false, "reason": "there is no quickstart.md"}"#),
            serde_json::json!({"response": {"content": [{"type": "tool_use", "id": "w", "name": "Write", "input": {"file_path": "quickstart.md", "content": "Run: python3 app.py\n"}}], "stop_reason": "tool_use", "usage": {"input_tokens": 30, "output_tokens": 12}}}).to_string(),
            text_turn("Wrote quickstart.md."),
        ];
        exchanges.extend(judge_after);
        commit_replay(&company, &exchanges, "A judged goal");
        let state = tmp.path().join("state");
        let out = run_once(tmp.path(), &company, &state);
        let goals = goals_json(tmp.path(), &state);
        assert_ne!(reason(&goals, "judged"), "CheckPassed", "{goals:#}");
        assert!(
            goals.to_string().contains(why),
            "{why}: {goals:#}\n{}",
            text(&out)
        );
        // Nothing reached the product.
        let log = git(
            &tmp.path().join("app.git"),
            &["log", "--all", "--format=%s"],
        );
        assert!(!log.contains("judged"), "{log}");
    }
}

#[test]
fn an_agent_uses_a_real_mcp_server_through_act() {
    let tmp = tempfile::tempdir().unwrap();
    let mcp_goal = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: echoed}\nspec:\n  product: app\n  owner: ceo\n  description: echo.txt holds what the MCP server echoed.\n  check: {file: {path: echo.txt, matches: 'Echo. from mcp'}}\n";
    let company = small_company(tmp.path(), mcp_goal);
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace("  mission: Test.\n", "  mission: Test.\n  models:\n    providers: [{name: recorded, type: replay, file: replay.jsonl}]\n")
            .replace("tools: [Read, Write, Edit, Bash, Git]", "tools: [Read, Write, Edit, Bash, Git, mcp__every]"),
    )
    .unwrap();
    declare_everything_server(&company);
    commit_replay(
        &company,
        &[
            recorded_tool(
                "e",
                "mcp__every__echo",
                serde_json::json!({"message": "from mcp"}),
            ),
            recorded_tool(
                "w",
                "Write",
                serde_json::json!({"file_path": "echo.txt", "content": "Echo: from mcp\n"}),
            ),
            recorded_text("done"),
        ],
        "An MCP server",
    );
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        reason(&goals_json(tmp.path(), &state), "echoed"),
        "CheckPassed"
    );
    audited_echo(&company);
}

/// A delegated agent's session comes from the same builder as the owner's: it has exactly
/// the tools its own declaration grants, MCP servers' tools included, though the agent that
/// delegates to it holds none.
#[test]
fn a_delegated_agent_has_the_mcp_tools_its_declaration_grants() {
    let tmp = tempfile::tempdir().unwrap();
    let goal_text = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: echoed}\nspec:\n  product: app\n  owner: ceo\n  description: echo.txt holds what the MCP server echoed.\n  check: {file: {path: echo.txt, matches: 'Echo. from mcp'}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: writer}\nspec: {title: Writer, reportsTo: ceo, model: sonnet, description: Writes what servers say., prompt: Write well., tools: [Write, mcp__every]}\n";
    let company = small_company(tmp.path(), goal_text);
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace("  mission: Test.\n", "  mission: Test.\n  models:\n    providers: [{name: recorded, type: replay, file: replay.jsonl}]\n")
            .replace("tools: [Read, Write, Edit, Bash, Git]", "tools: [Read, Delegate]"),
    )
    .unwrap();
    declare_everything_server(&company);
    commit_replay(
        &company,
        &[
            recorded_tool(
                "d",
                "Delegate",
                serde_json::json!({"agent": "writer", "description": "echo it", "prompt": "Echo 'from mcp' with the server and write it to echo.txt."}),
            ),
            recorded_tool(
                "e",
                "mcp__every__echo",
                serde_json::json!({"message": "from mcp"}),
            ),
            recorded_tool(
                "w",
                "Write",
                serde_json::json!({"file_path": "echo.txt", "content": "Echo: from mcp\n"}),
            ),
            recorded_text("Wrote echo.txt."),
            recorded_text("The writer did it."),
        ],
        "A writer with a server",
    );
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        reason(&goals_json(tmp.path(), &state), "echoed"),
        "CheckPassed"
    );
    let echo = audited_echo(&company);
    assert_eq!(echo["agent"], "writer", "{echo:#}");
}

#[test]
fn a_spent_token_budget_stops_the_agent_with_a_clear_status() {
    let tmp = tempfile::tempdir().unwrap();
    let goal_text = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: costly}\nspec:\n  product: app\n  owner: ceo\n  description: Needs many turns.\n  check: {file: {path: never.txt}}\n  budget: {attempts: 1}\n";
    let company = small_company(tmp.path(), goal_text);
    let turn = serde_json::json!({"response": {"content": [{"type": "tool_use", "id": "r", "name": "Read", "input": {"file_path": "x"}}], "stop_reason": "tool_use", "usage": {"input_tokens": 900, "output_tokens": 200}}}).to_string();
    std::fs::write(
        company.join("replay.jsonl"),
        format!("{turn}\n{turn}\n{turn}\n"),
    )
    .unwrap();
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace(
            "  mission: Test.\n",
            "  mission: Test.\n  budgets: {tokensPerTask: 1000}\n  models:\n    providers: [{name: recorded, type: replay, file: replay.jsonl}]\n",
        ),
    )
    .unwrap();
    git(&company, &["add", "-A"]);
    git(&company, &["commit", "-q", "-m", "A small budget"]);
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    let goals = goals_json(tmp.path(), &state);
    assert_eq!(reason(&goals, "costly"), "AttemptsExhausted");
    assert!(
        goals
            .to_string()
            .contains("token budget exceeded: 1100 tokens spent of 1000"),
        "{goals:#}"
    );
}

#[test]
fn an_agent_delegates_to_another_who_works_and_reports_back() {
    let tmp = tempfile::tempdir().unwrap();
    let goal_text = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: greeted}\nspec:\n  product: app\n  owner: ceo\n  description: hello.txt greets.\n  check: {file: {path: hello.txt}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: writer}\nspec: {title: Writer, reportsTo: ceo, model: sonnet, description: Writes greetings and short texts., prompt: Write well., tools: [Write]}\n";
    let company = small_company(tmp.path(), goal_text);
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace("  mission: Test.\n", "  mission: Test.\n  models:\n    providers: [{name: recorded, type: replay, file: replay.jsonl}]\n")
            .replace("tools: [Read, Write, Edit, Bash, Git]", "tools: [Read, Delegate]"),
    )
    .unwrap();
    commit_replay(
        &company,
        &[
            recorded_tool(
                "d",
                "Delegate",
                serde_json::json!({"agent": "writer", "description": "write the greeting", "prompt": "Write hello.txt saying hi."}),
            ),
            recorded_tool(
                "w",
                "Write",
                serde_json::json!({"file_path": "hello.txt", "content": "hi\n"}),
            ),
            recorded_text("Wrote hello.txt."),
            recorded_text("The writer did it."),
        ],
        "A team of two",
    );
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        reason(&goals_json(tmp.path(), &state), "greeted"),
        "CheckPassed"
    );
    let audit: Vec<serde_json::Value> = std::fs::read_dir(company.join(".proto/audit"))
        .unwrap()
        .flat_map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    let delegated = audit.iter().find(|r| r["action"] == "Delegate").unwrap();
    assert_eq!(delegated["agent"], "ceo");
    assert_eq!(
        delegated["outcome"]["content"],
        "writer reports: Wrote hello.txt."
    );
    let write = audit.iter().find(|r| r["action"] == "Write").unwrap();
    assert_eq!(write["agent"], "writer");
    let tasks = tasks_json(tmp.path(), &state);
    let child = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["owner"] == "writer")
        .unwrap();
    assert_eq!(child["state"], "succeeded", "{tasks:#}");
}

#[test]
fn a_conversation_killed_mid_tool_call_resumes_without_asking_the_model_again() {
    use serde_json::json;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tool_use = mock_llm::anthropic_stream(&[
        mock_llm::message_start(
            "m1",
            "claude-sonnet-4-5",
            json!({"input_tokens": 50, "output_tokens": 1}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"command\": \"touch marker && sleep 5 && touch done.txt\"}"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 20}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]);
    let mock = rt.block_on(mock_llm::MockLlm::start(vec![
        mock_llm::Reply::sse(tool_use),
        mock_llm::Reply::sse(mock_llm::text_stream("m2", "Started it.", "end_turn")),
    ]));
    let tmp = tempfile::tempdir().unwrap();
    let goal_text = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: started}\nspec:\n  product: app\n  owner: ceo\n  description: The work has started.\n  check: {file: {path: done.txt}}\n";
    killed_in_a_command_then_resumed(tmp.path(), goal_text, "started", &mock, 1);
    // The first turn came from the journal; only the second was asked for.
    let requests = mock.requests();
    assert_eq!(
        requests.len(),
        2,
        "the model was asked again for a recorded turn"
    );
    assert_eq!(requests[1].header("x-api-key"), Some("sk-test"));
}

#[test]
fn a_model_turn_killed_mid_call_is_asked_again_and_recorded_once() {
    use serde_json::json;
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The second turn's answer never comes while the first controller lives.
    let stalled = mock_llm::Reply {
        delay: Duration::from_secs(60),
        ..mock_llm::Reply::sse(mock_llm::text_stream("m2", "Done.", "end_turn"))
    };
    let mock = rt.block_on(mock_llm::MockLlm::start(vec![
        mock_llm::tool_use(
            "1",
            "Write",
            json!({"file_path": "hello.txt", "content": "hi\n"}),
        ),
        stalled,
        mock_llm::Reply::sse(mock_llm::text_stream("m3", "Done.", "end_turn")),
    ]));
    let tmp = tempfile::tempdir().unwrap();
    let goal_text = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: hello}\nspec:\n  product: app\n  owner: ceo\n  description: hello.txt exists.\n  check: {file: {path: hello.txt}}\n";
    let company = small_company(tmp.path(), goal_text);
    use_mock_model(&company, &mock);
    let state = tmp.path().join("state");
    let run = || cli::run_command(tmp.path(), &company, &state);
    let mut child = run().spawn().unwrap();
    wait_for("the second model call", Duration::from_secs(60), || {
        mock.requests().len() == 2
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();

    let out = run().output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        reason(&goals_json(tmp.path(), &state), "hello"),
        "CheckPassed"
    );
    // The recorded first turn was not asked again; the interrupted one was, once.
    assert_eq!(mock.requests().len(), 3);
    // Nothing was recorded of the interrupted call: one audit record per answered turn.
    assert_eq!(model_calls(&company), 2);
    assert_eq!(
        git(&tmp.path().join("app.git"), &["show", "main:hello.txt"]),
        "hi"
    );
}

#[test]
fn a_resumed_conversation_replays_its_file_changes_into_a_fresh_clone() {
    use serde_json::json;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(mock_llm::MockLlm::start(vec![
        mock_llm::tool_use(
            "1",
            "Write",
            json!({"file_path": "plan.md", "content": "the plan\n"}),
        ),
        mock_llm::tool_use(
            "2",
            "Bash",
            json!({"command": "touch marker && sleep 5 && touch built.txt"}),
        ),
        mock_llm::Reply::sse(mock_llm::text_stream("m3", "Built it.", "end_turn")),
    ]));
    let tmp = tempfile::tempdir().unwrap();
    let goal_text = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: built}\nspec:\n  product: app\n  owner: ceo\n  description: Planned and built.\n  check: {command: {run: 'grep -q \"the plan\" plan.md && test -f built.txt'}}\n";
    killed_in_a_command_then_resumed(tmp.path(), goal_text, "built", &mock, 2);
    // The Write was not asked for again, yet its file is in what was delivered.
    assert_eq!(mock.requests().len(), 3);
    let app = tmp.path().join("app.git");
    assert_eq!(git(&app, &["show", "main:plan.md"]), "the plan");
    assert_eq!(
        git(&app, &["log", "--format=%an|%s", "main"]),
        "ceo|built: work by ceo"
    );
}

#[test]
fn a_store_locked_longer_than_its_busy_timeout_delays_the_run_but_does_not_end_it() {
    let tmp = tempfile::tempdir().unwrap();
    let slow = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: slow}\nspec:\n  product: app\n  owner: ceo\n  description: Slow work.\n  check: {file: {path: done.txt}}\n  playbook:\n    - run: \"touch $HOME/started && sleep 2\"\n    - write: {path: done.txt, content: \"done\\n\"}\n";
    let company = small_company(tmp.path(), slow);
    // The step signals that it started in HOME, outside its workspace: test scaffolding,
    // run unconfined.
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace("capacity: 2}", "capacity: 2, sandbox: off}"),
    )
    .unwrap();
    git(&company, &["commit", "-qam", "No sandbox"]);
    let state = tmp.path().join("state");
    let mut child = cli::run_command(tmp.path(), &company, &state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the step", Duration::from_secs(60), || {
        tmp.path().join("started").exists()
    });
    // Another process holds the write lock past twice the store's 10 s busy timeout: the
    // step's journal write gives up (the attempt fails), then so does the controller's
    // recording of that attempt, which its error policy tries again later.
    let conn = rusqlite::Connection::open(state.join("proto.db")).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    std::thread::sleep(Duration::from_secs(23));
    conn.execute_batch("COMMIT").unwrap();
    drop(conn);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        reason(&goals_json(tmp.path(), &state), "slow"),
        "CheckPassed"
    );
    assert_eq!(
        git(&tmp.path().join("app.git"), &["show", "main:done.txt"]),
        "done"
    );
}

/// A small company with `goal_text` worked through `mock`: the controller is killed with
/// SIGKILL once the agent's command has started (after `turns` model turns), then run again
/// to the end, where goal `goal` must be met.
fn killed_in_a_command_then_resumed(
    home: &Path,
    goal_text: &str,
    goal: &str,
    mock: &mock_llm::MockLlm,
    turns: usize,
) {
    let company = small_company(home, goal_text);
    use_mock_model(&company, mock);
    let state = home.join("state");
    let run = || cli::run_command(home, &company, &state);
    let mut child = run().spawn().unwrap();
    cli::kill_once_marked(&mut child, &state.join("work"));
    assert_eq!(mock.requests().len(), turns, "model turns before the kill");
    let out = run().output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(reason(&goals_json(home, &state), goal), "CheckPassed");
}

/// Points `company` at `mock` (an Anthropic-speaking server) and commits it.
fn use_mock_model(company: &Path, mock: &mock_llm::MockLlm) {
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace(
            "  mission: Test.\n",
            &format!("  mission: Test.\n  models:\n    providers: [{{name: mock, type: anthropic, baseUrl: '{}', apiKeyEnv: PROTO_TEST_KEY}}]\n", mock.base_url()),
        ),
    )
    .unwrap();
    git(company, &["commit", "-q", "-am", "A live model"]);
}

/// Runs `proto run --once` on `company` with its state in `state`.
fn run_once(home: &Path, company: &Path, state: &Path) -> Output {
    proto(
        home,
        &[
            "run",
            company.to_str().unwrap(),
            "--once",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    )
}

/// Model calls the controller made, from the audit.
fn model_calls(company: &Path) -> usize {
    audit_text(company).matches("\"action\":\"model\"").count()
}

#[test]
fn a_spent_dollar_budget_ends_the_work_and_the_goal_waits_for_more() {
    let tmp = tempfile::tempdir().unwrap();
    let goal_text = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: pricey}\nspec:\n  product: app\n  owner: ceo\n  description: Needs many turns.\n  check: {file: {path: never.txt}}\n  budget: {usd: 0.005}\n";
    let company = small_company(tmp.path(), goal_text);
    // Each turn costs $0.006 on Sonnet ($3 in, $15 out per million): the first one already
    // spends the goal's budget, so the second is never asked for.
    let turn = serde_json::json!({"response": {"content": [{"type": "tool_use", "id": "r", "name": "Read", "input": {"file_path": "x"}}], "stop_reason": "tool_use", "usage": {"input_tokens": 1000, "output_tokens": 200}}}).to_string();
    std::fs::write(company.join("replay.jsonl"), format!("{turn}\n{turn}\n")).unwrap();
    use_recorded_model(&company);
    git(&company, &["add", "-A"]);
    git(&company, &["commit", "-q", "-m", "A small dollar budget"]);
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let goals = goals_json(tmp.path(), &state);
    assert_eq!(reason(&goals, "pricey"), "BudgetExhausted", "{goals:#}");
    let message = goals
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "pricey")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message
            .contains("the goal's budget is spent ($0.0060 of $0.01, the goal's spec.budget.usd)"),
        "{message}"
    );
    assert_eq!(model_calls(&company), 1);
    // The task ended; the next reconcile plans no new work while the budget is spent.
    let again = run_once(tmp.path(), &company, &state);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(model_calls(&company), 1, "no model call past the budget");
    let tasks = tasks_json(tmp.path(), &state);
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    assert_eq!(tasks[0]["state"], "cancelled");
    assert_eq!(tasks[0]["spend"]["inputTokens"], 1000);
    assert!((tasks[0]["spend"]["usd"].as_f64().unwrap() - 0.006).abs() < 1e-9);
}

#[test]
fn an_ask_rule_parks_the_task_waiting_for_approval() {
    let tmp = tempfile::tempdir().unwrap();
    let goal_text = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: release}\nspec:\n  product: app\n  owner: ceo\n  description: The release is tagged.\n  check: {file: {path: released.txt}}\n";
    let company = small_company(tmp.path(), goal_text);
    std::fs::create_dir_all(company.join(".claude")).unwrap();
    std::fs::write(
        company.join(".claude/settings.json"),
        serde_json::json!({ "permissions": { "ask": ["Bash(git tag *)"] } }).to_string(),
    )
    .unwrap();
    use_recorded_model(&company);
    commit_replay(
        &company,
        &[
            recorded_tool(
                "t1",
                "Bash",
                serde_json::json!({"command": "git tag v1.0.0"}),
            ),
            recorded_text("worked around it"),
        ],
        "Tags need a person",
    );
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let goals = goals_json(tmp.path(), &state);
    assert_eq!(reason(&goals, "release"), "WaitingApproval", "{goals:#}");
    assert!(
        goals
            .to_string()
            .contains("Bash(git tag v1.0.0) needs approval"),
        "{goals:#}"
    );
    assert!(all.contains("Waiting on something outside"), "{all}");
    // The model was not told "refused" and left to work around it: one call, then parked.
    assert_eq!(model_calls(&company), 1);
    assert!(
        audit_text(&company).contains("needs a person's approval first"),
        "{}",
        audit_text(&company)
    );
    // A parked task holds its goal: the next reconcile neither redoes nor replaces it.
    let again = run_once(tmp.path(), &company, &state);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(model_calls(&company), 1);
    let tasks = tasks_json(tmp.path(), &state);
    assert_eq!(tasks.as_array().unwrap().len(), 1, "{tasks:#}");
    assert_eq!(tasks[0]["state"], "waitingApproval");
    assert_eq!(tasks[0]["attempts"], 0, "waiting is not a failed attempt");
}

#[test]
fn older_tool_output_is_cleared_when_the_context_window_fills() {
    use serde_json::json;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let write = |id: &str, file: &str| {
        mock_llm::tool_use(
            id,
            "Write",
            json!({"file_path": file, "content": format!("{file}\n")}),
        )
    };
    let mock = rt.block_on(mock_llm::MockLlm::start(vec![
        write("1", "a.txt"),
        write("2", "b.txt"),
        write("3", "c.txt"),
        write("4", "d.txt"),
        mock_llm::Reply::sse(mock_llm::text_stream("5", "Wrote four files.", "end_turn")),
    ]));
    let tmp = tempfile::tempdir().unwrap();
    let goal_text = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: four}\nspec:\n  product: app\n  owner: ceo\n  description: Four files exist.\n  check: {file: {path: d.txt}}\n";
    let company = small_company(tmp.path(), goal_text);
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    // Each scripted turn reports 70 tokens: more than 75 % of an 80-token window.
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace(
            "  mission: Test.\n",
            &format!(
                "  mission: Test.\n  models:\n    providers: [{{name: mock, type: anthropic, baseUrl: '{}', apiKeyEnv: PROTO_TEST_KEY}}]\n    prices: [{{model: claude-sonnet-4-5, input: 3, output: 15, contextWindow: 80}}]\n",
                mock.base_url()
            ),
        ),
    )
    .unwrap();
    git(&company, &["add", "-A"]);
    git(&company, &["commit", "-q", "-m", "A tiny context window"]);
    let state = tmp.path().join("state");
    let out = cli::run_command(tmp.path(), &company, &state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let requests = mock.requests();
    assert_eq!(requests.len(), 5);
    let results = |n: usize| -> Vec<String> {
        requests[n].body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
            .filter(|b| b["type"] == "tool_result")
            .map(|b| b["content"].to_string())
            .collect()
    };
    // Until the conversation is longer than the kept tail, nothing is cleared.
    assert!(
        results(3).iter().all(|r| !r.contains("output cleared")),
        "{:?}",
        results(3)
    );
    // Then the oldest result goes; the calls and the newest results stay.
    let last = results(4);
    assert_eq!(last.len(), 4);
    assert!(last[0].contains("output cleared"), "{last:?}");
    assert!(
        last[1..].iter().all(|r| !r.contains("output cleared")),
        "{last:?}"
    );
    let calls = requests[4].body["messages"]
        .to_string()
        .matches("\"tool_use\"")
        .count();
    assert_eq!(calls, 4, "every call is still in the conversation");
}

#[test]
fn a_delegated_agents_ask_parks_the_whole_task() {
    let tmp = tempfile::tempdir().unwrap();
    let goal_text = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: tagged}\nspec:\n  product: app\n  owner: ceo\n  description: The release is tagged.\n  check: {file: {path: tagged.txt}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: releaser}\nspec: {title: Release manager, reportsTo: ceo, model: sonnet, description: Tags releases., prompt: Release carefully., tools: [Bash]}\n";
    let company = small_company(tmp.path(), goal_text);
    use_recorded_model(&company);
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace(
            "tools: [Read, Write, Edit, Bash, Git]",
            "tools: [Read, Delegate]",
        ),
    )
    .unwrap();
    std::fs::create_dir_all(company.join(".claude")).unwrap();
    std::fs::write(
        company.join(".claude/settings.json"),
        serde_json::json!({ "permissions": { "ask": ["Bash(git tag *)"] } }).to_string(),
    )
    .unwrap();
    commit_replay(
        &company,
        &[
            recorded_tool(
                "d",
                "Delegate",
                serde_json::json!({"agent": "releaser", "description": "tag the release", "prompt": "Tag v1.0.0."}),
            ),
            recorded_tool(
                "t",
                "Bash",
                serde_json::json!({"command": "git tag v1.0.0"}),
            ),
        ],
        "Tags need a person, whoever asks",
    );
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let goals = goals_json(tmp.path(), &state);
    assert_eq!(reason(&goals, "tagged"), "WaitingApproval", "{goals:#}");
    assert!(
        goals
            .to_string()
            .contains("Bash(git tag v1.0.0) (asked by releaser)"),
        "{goals:#}"
    );
    // The parent task waits, and so does the child that asked; neither counts as failed.
    let tasks = tasks_json(tmp.path(), &state);
    let states: Vec<(&str, &str)> = tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["owner"].as_str().unwrap(), t["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        vec![("releaser", "waitingApproval"), ("ceo", "waitingApproval")],
        "{tasks:#}"
    );
}

#[test]
fn an_agent_loads_a_skill_it_holds_and_no_other() {
    let tmp = tempfile::tempdir().unwrap();
    let goal_text = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: noted}\nspec:\n  product: app\n  owner: ceo\n  description: NOTES.md exists.\n  check: {file: {path: NOTES.md}}\n";
    let company = small_company(tmp.path(), goal_text);
    use_recorded_model(&company);
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace(
            "tools: [Read, Write, Edit, Bash, Git]",
            "tools: [Read, Write], skills: [release-notes]",
        ),
    )
    .unwrap();
    cli::write(
        &company,
        ".claude/skills/release-notes/SKILL.md",
        "---\nname: release-notes\ndescription: Writes release notes from merged changes.\n---\nGroup changes under Added, Changed and Fixed; one line each.\n",
    );
    // Settings with permission rules: holding a skill still allows loading it.
    cli::write(
        &company,
        ".claude/settings.json",
        r#"{"permissions": {"deny": ["Bash(rm *)"]}}"#,
    );
    cli::write(
        &company,
        ".claude/skills/pricing/SKILL.md",
        "---\nname: pricing\ndescription: Sets prices.\n---\nNever discount.\n",
    );
    commit_replay(
        &company,
        &[
            recorded_tool("s1", "Skill", serde_json::json!({"skill": "release-notes"})),
            recorded_tool("s2", "Skill", serde_json::json!({"skill": "pricing"})),
            recorded_tool(
                "w",
                "Write",
                serde_json::json!({"file_path": "NOTES.md", "content": "## Added\n- notes\n"}),
            ),
            recorded_text("Done."),
        ],
        "A skill to load",
    );
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        reason(&goals_json(tmp.path(), &state), "noted"),
        "CheckPassed"
    );
    let audit: Vec<serde_json::Value> = audit_text(&company)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let skills: Vec<&serde_json::Value> = audit.iter().filter(|r| r["action"] == "Skill").collect();
    assert_eq!(skills.len(), 2, "{audit:#?}");
    let loaded = skills[0]["outcome"]["content"].as_str().unwrap();
    assert!(
        loaded.contains("Group changes under Added, Changed and Fixed")
            && loaded.contains("<skill name=\"release-notes\""),
        "{loaded}"
    );
    assert_eq!(skills[0]["outcome"]["isError"], false);
    assert_eq!(skills[1]["outcome"]["isError"], true);
    assert_eq!(
        skills[1]["outcome"]["content"],
        "ceo holds no skill named pricing"
    );
}

#[test]
fn a_model_server_that_is_down_is_waited_for_and_the_goal_met_once_it_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let goal_text = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: greeted}\nspec:\n  product: app\n  owner: ceo\n  description: hello.txt exists.\n  check: {file: {path: hello.txt}}\n  budget: {attempts: 2}\n";
    let company = small_company(tmp.path(), goal_text);
    let down = mock_llm::down_address();
    // Written as llama.cpp and the OpenAI SDK document it, with `/v1`.
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace(
            "  mission: Test.\n",
            &format!("  mission: Test.\n  models:\n    providers: [{{name: local, type: anthropic, baseUrl: 'http://{down}/v1/', apiKeyEnv: PROTO_TEST_KEY}}]\n"),
        ),
    )
    .unwrap();
    git(
        &company,
        &["commit", "-q", "-am", "A model server that is not up yet"],
    );
    let state = tmp.path().join("state");
    let child = cli::run_command(tmp.path(), &company, &state)
        .spawn()
        .unwrap();
    let goal = |goals: &serde_json::Value| {
        goals
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "greeted")
            .cloned()
            .unwrap_or_default()
    };
    let mut waiting = serde_json::Value::Null;
    wait_for(
        "the goal to wait for the provider",
        Duration::from_secs(60),
        || {
            let Some(status) = recorded_status(&state) else {
                return false;
            };
            waiting = goal(&status["goals"]);
            waiting["reason"] == "ProviderUnavailable"
        },
    );
    let message = waiting["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("connection refused to {down}")),
        "{waiting:#}"
    );
    // Waiting spends no attempt, however long it lasts (the goal allows only two).
    std::thread::sleep(Duration::from_secs(4));
    let status = recorded_status(&state).unwrap();
    assert_eq!(
        goal(&status["goals"])["reason"],
        "ProviderUnavailable",
        "{status:#}"
    );
    assert_eq!(goal(&status["goals"])["attempts"], 0, "{status:#}");
    // `proto get providers` shows the provider and what its breaker saw.
    let providers = get_json(tmp.path(), &state, "providers");
    let local = &providers[0];
    assert_eq!(local["name"], "local", "{providers:#}");
    assert_eq!(local["type"], "anthropic");
    assert_eq!(local["baseUrl"], format!("http://{down}/v1/"));
    assert!(
        local["lastError"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{providers:#}"
    );
    assert!(local["lastSuccessAt"].is_null(), "{providers:#}");
    // The server comes up: the breaker's trial call finds it, and the work goes on.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(mock_llm::MockLlm::start_on(
        down,
        vec![
            mock_llm::tool_use(
                "1",
                "Write",
                serde_json::json!({"file_path": "hello.txt", "content": "hello\n"}),
            ),
            mock_llm::Reply::sse(mock_llm::text_stream("2", "Wrote it.", "end_turn")),
        ],
    ));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let goals = goals_json(tmp.path(), &state);
    assert_eq!(reason(&goals, "greeted"), "CheckPassed", "{goals:#}");
    assert_eq!(goal(&goals)["attempts"], 1, "{goals:#}");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path, "/v1/messages");
    // Only the start of the outage is recorded in git, not every try.
    let log = git(&company, &["log", "--format=%B"]);
    assert_eq!(
        log.matches("waits for the model provider").count(),
        1,
        "{log}"
    );
    let providers = get_json(tmp.path(), &state, "providers");
    assert_eq!(providers[0]["state"], "Closed", "{providers:#}");
    assert!(providers[0]["lastSuccessAt"].is_string(), "{providers:#}");
    let table = text(&proto(
        tmp.path(),
        &["get", "providers", "--state-dir", state.to_str().unwrap()],
    ));
    assert!(
        table.contains("NAME") && table.contains("local") && table.contains("Closed"),
        "{table}"
    );
}

#[test]
fn a_delegated_agents_provider_outage_makes_the_whole_task_wait_then_resume() {
    use serde_json::json;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(mock_llm::MockLlm::start(vec![
        // The CEO delegates; the writer's first call finds the server failing (a 500 is the
        // server's trouble, not the request's).
        mock_llm::tool_use(
            "d",
            "Delegate",
            json!({"agent": "writer", "description": "write the greeting", "prompt": "Write hello.txt saying hi."}),
        ),
        mock_llm::Reply::error(
            500,
            json!({"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}),
        ),
        // Then it answers: the CEO's delegation resumes from its journal and the writer works.
        mock_llm::tool_use(
            "w",
            "Write",
            json!({"file_path": "hello.txt", "content": "hi\n"}),
        ),
        mock_llm::Reply::sse(mock_llm::text_stream("w2", "Wrote hello.txt.", "end_turn")),
        mock_llm::Reply::sse(mock_llm::text_stream("c2", "The writer did it.", "end_turn")),
    ]));
    let tmp = tempfile::tempdir().unwrap();
    let goal_text = "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: greeted}\nspec:\n  product: app\n  owner: ceo\n  description: hello.txt greets.\n  check: {file: {path: hello.txt}}\n  budget: {attempts: 1}\n---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: writer}\nspec: {title: Writer, reportsTo: ceo, model: sonnet, description: Writes greetings and short texts., prompt: Write well., tools: [Write]}\n";
    let company = small_company(tmp.path(), goal_text);
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace(
            "tools: [Read, Write, Edit, Bash, Git]",
            "tools: [Read, Delegate]",
        ),
    )
    .unwrap();
    use_mock_model(&company, &mock);
    let state = tmp.path().join("state");
    let out = cli::run_command(tmp.path(), &company, &state)
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let goals = goals_json(tmp.path(), &state);
    // One attempt allowed, and the outage did not spend it.
    assert_eq!(reason(&goals, "greeted"), "CheckPassed", "{goals:#}\n{all}");
    assert!(all.contains("waits for the model provider"), "{all}");
    let requests = mock.requests();
    assert_eq!(requests.len(), 5, "the CEO's first turn is not asked again");
    let tasks = tasks_json(tmp.path(), &state);
    let child = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["owner"] == "writer")
        .unwrap();
    assert_eq!(child["state"], "succeeded", "{tasks:#}");
}
