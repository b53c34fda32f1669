//! A company that learns, end to end against real git and the real `proto` binary: a
//! failure and the change that then met the goal become one `lesson_learned` entry,
//! committed once with the record; the same failure again adds evidence, not files; a
//! retry's first message carries the ranked lessons; an agent's `Remember` is committed and
//! audited; the miner proposes one improvement goal for a failure that keeps coming back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/company.rs"]
mod company;
#[path = "support/mock_llm.rs"]
mod mock_llm;

use std::path::Path;

use cli::{get_json, git, proto, text};
use company::{recorded_text, small_company};

/// A goal worked by the CEO's model, met when `out.txt` says `good`.
fn greet_goal(description: &str) -> String {
    format!(
        "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: greet}}\nspec:\n  product: app\n  owner: ceo\n  description: {description}\n  check: {{command: {{run: 'grep -q good out.txt'}}}}\n"
    )
}

/// A recorded turn that writes `content` to out.txt, answered only to a request whose
/// newest user content holds `matching` (when given).
fn write_out(id: &str, content: &str, matching: Option<&str>) -> String {
    let mut exchange = serde_json::json!({"response": {"content": [{"type": "tool_use", "id": id, "name": "Write", "input": {"file_path": "out.txt", "content": content}}], "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 5}}});
    if let Some(m) = matching {
        exchange["match"] = serde_json::json!(m);
    }
    exchange.to_string()
}

/// A recorded turn that calls `Remember`.
fn remember(id: &str, title: &str, body: &str) -> String {
    serde_json::json!({"response": {"content": [{"type": "tool_use", "id": id, "name": "Remember", "input": {"kind": "best_practice", "title": title, "body": body}}], "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 5}}}).to_string()
}

/// Declares a replay provider reading `replay.jsonl`, writes `turns` there, and commits.
fn replay(company: &Path, turns: &[String], message: &str) {
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    if !yaml.contains("recorded") {
        std::fs::write(
            company.join("company.yaml"),
            yaml.replace(
                "  mission: Test.\n",
                "  mission: Test.\n  models:\n    providers: [{name: recorded, type: replay, file: replay.jsonl}]\n",
            )
            .replace("tools: [Read, Write, Edit, Bash, Git]", "tools: [Read, Write, Edit, Bash, Git, Remember]"),
        )
        .unwrap();
    }
    std::fs::write(company.join("replay.jsonl"), turns.join("\n") + "\n").unwrap();
    git(company, &["add", "-A"]);
    git(company, &["commit", "-q", "-m", message]);
}

fn run_once(home: &Path, company: &Path, state: &Path) -> std::process::Output {
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

/// The files of `.proto/knowledge/<kind>/` in the company's working tree, sorted.
fn entries(company: &Path, kind: &str) -> Vec<String> {
    let dir = company.join(".proto/knowledge").join(kind);
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(read) => read
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Commits of the company repository that touched `path`.
fn commits_touching(company: &Path, path: &str) -> usize {
    git(company, &["log", "--format=%H", "--", path])
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

#[test]
fn a_failure_then_a_fix_is_one_lesson_and_the_same_failure_again_adds_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let company = small_company(tmp.path(), &greet_goal("out.txt says good."));
    // Attempt 1 writes the wrong word (the check fails); attempt 2 writes the right one.
    replay(
        &company,
        &[
            write_out("t1", "bad\n", None),
            recorded_text("Wrote it."),
            write_out("t2", "good\n", Some("earlier attempt(s) failed")),
            recorded_text("Fixed it."),
        ],
        "Record a model",
    );
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let lessons = entries(&company, "lesson_learned");
    assert_eq!(lessons.len(), 1, "{lessons:?}\n{all}");
    assert!(lessons[0].starts_with("greet-"), "{lessons:?}");
    let path = format!(".proto/knowledge/lesson_learned/{}", lessons[0]);
    let entry = std::fs::read_to_string(company.join(&path)).unwrap();
    // The failing check's output and the change that then met the goal, with frontmatter.
    assert!(
        entry.contains("the check still fails") && entry.contains("exit status 1"),
        "{entry}"
    );
    assert_eq!(entry.matches("+good").count(), 1, "{entry}");
    for key in [
        "title:",
        "tags:",
        "product: \"app\"",
        "goal: \"greet\"",
        "task:",
        "sourceCommit:",
        "confidence: \"high\"",
        "created:",
    ] {
        assert!(entry.contains(key), "{key} missing:\n{entry}");
    }
    assert_eq!(commits_touching(&company, &path), 1, "committed once");
    assert_eq!(entry.matches("\n- ").count(), 1, "{entry}");

    // The goal made unmet again (the product reset, the goal reworded so a new task is
    // due), failing the same way twice more before the fix.
    let clone = tmp.path().join("clone");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            tmp.path().join("app.git").to_str().unwrap(),
            "clone",
        ],
    );
    git(&clone, &["rm", "-q", "out.txt"]);
    git(&clone, &["commit", "-q", "-m", "Reset"]);
    git(&clone, &["push", "-q", "origin", "main"]);
    std::fs::write(
        company.join("goals.yaml"),
        greet_goal("out.txt says good, again."),
    )
    .unwrap();
    replay(
        &company,
        &[
            write_out("t1", "bad\n", None),
            recorded_text("Wrote it."),
            write_out("t2", "bad again\n", Some("earlier attempt(s) failed")),
            recorded_text("Wrote it."),
            // The retry is told the ranked lesson of the first run's fix.
            write_out("t3", "good\n", Some("Lessons from earlier failures")),
            recorded_text("Fixed it."),
        ],
        "Reword the goal",
    );
    let out = run_once(tmp.path(), &company, &state);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert_eq!(entries(&company, "lesson_learned"), lessons, "{all}");
    let entry = std::fs::read_to_string(company.join(&path)).unwrap();
    assert_eq!(
        entry.matches("failed with this error again").count(),
        2,
        "{entry}"
    );
    assert_eq!(
        entry.matches("error, then met").count(),
        2,
        "{entry}\n{all}"
    );
    assert_eq!(
        commits_touching(&company, &path),
        4,
        "one commit per attempt that saw it"
    );
    // `proto get knowledge` lists it from the company repository.
    let listed = get_knowledge(tmp.path(), &company, &["--kind", "lesson_learned"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");
    assert_eq!(listed[0]["path"], path);
    assert_eq!(listed[0]["product"], "app");
    let none = get_knowledge(tmp.path(), &company, &["--product", "site"]);
    assert_eq!(none.as_array().unwrap().len(), 0, "{none:#}");
    let _ = get_json;
}

/// `proto get knowledge COMPANY -o json [args]`.
fn get_knowledge(home: &Path, company: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["get", "knowledge", company.to_str().unwrap()];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = proto(home, &all);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn what_an_agent_remembers_is_committed_with_the_record_and_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let company = small_company(tmp.path(), &greet_goal("out.txt says good."));
    replay(
        &company,
        &[
            remember(
                "r1",
                "Greetings are one word",
                "out.txt holds one lowercase word. token=ghp_u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d",
            ),
            write_out("t1", "good\n", None),
            recorded_text("Done."),
        ],
        "Record a model",
    );
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let kept = entries(&company, "best_practice");
    assert_eq!(kept.len(), 1, "{kept:?}\n{all}");
    assert!(kept[0].starts_with("greetings-are-one-word-"), "{kept:?}");
    let entry = std::fs::read_to_string(
        company
            .join(".proto/knowledge/best_practice")
            .join(&kept[0]),
    )
    .unwrap();
    assert!(entry.contains("one lowercase word"), "{entry}");
    assert!(entry.contains("confidence: \"medium\""), "{entry}");
    assert!(
        !entry.contains("ghp_u8jz"),
        "the secret reached git:\n{entry}"
    );
    let audit: String = std::fs::read_dir(company.join(".proto/audit"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(audit.contains("\"action\":\"Remember\""), "{audit}");
}

/// A goal whose playbook fails with an error that differs in its numbers and paths only.
fn breaking_goal(name: &str) -> String {
    format!(
        "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: {name}}}\nspec:\n  product: app\n  owner: ceo\n  description: {name} builds.\n  check: {{command: {{run: 'test -f never.txt'}}}}\n  playbook:\n    - run: 'echo \"build broke at $(date +%s%N) in /tmp/w$$\"; exit 3'\n  budget: {{attempts: 1}}\n"
    )
}

fn proposal_branches(company: &Path) -> Vec<String> {
    git(
        company,
        &[
            "branch",
            "--list",
            "proto/proposals/*",
            "--format=%(refname:short)",
        ],
    )
    .lines()
    .map(str::to_string)
    .filter(|l| !l.is_empty())
    .collect()
}

fn mine(home: &Path, company: &Path, state: &Path) -> String {
    let out = proto(
        home,
        &[
            "mine",
            company.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    all
}

#[test]
fn a_failure_in_six_tasks_is_proposed_once_as_a_goal_that_validates() {
    let tmp = tempfile::tempdir().unwrap();
    let goals: String = (1..=6)
        .map(|i| breaking_goal(&format!("part{i}")))
        .collect();
    let company = small_company(tmp.path(), &goals);
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = mine(tmp.path(), &company, &state);
    let branches = proposal_branches(&company);
    assert_eq!(branches.len(), 1, "{branches:?}\n{said}");
    let branch = &branches[0];
    let slug = branch.trim_start_matches("proto/proposals/");
    // One commit on the branch, adding one Goal with the evidence.
    let added = git(
        &company,
        &["diff", "--name-only", &format!("main...{branch}")],
    );
    assert_eq!(added.trim(), format!("goals/proposals/{slug}.yaml"));
    let file = git(
        &company,
        &["show", &format!("{branch}:goals/proposals/{slug}.yaml")],
    );
    assert_eq!(file.matches("kind: Goal").count(), 1, "{file}");
    assert_eq!(file.matches("#   20").count(), 6, "{file}");
    for i in 1..=6 {
        assert!(file.contains(&format!("goal part{i}:")), "{file}");
    }
    // The watched branch is untouched by the proposal: it waits for a merge.
    assert!(!company.join("goals/proposals").exists());
    let listed = get_json(tmp.path(), &state, "proposals");
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");
    assert_eq!(listed[0]["branch"], branch.as_str());

    // A seventh failure: still one proposal.
    std::fs::write(company.join("goals.yaml"), goals + &breaking_goal("part7")).unwrap();
    git(&company, &["commit", "-q", "-am", "One more part"]);
    let out = run_once(tmp.path(), &company, &state);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = mine(tmp.path(), &company, &state);
    assert!(said.contains("nothing new to propose"), "{said}");
    assert_eq!(proposal_branches(&company), branches);
    assert_eq!(
        get_json(tmp.path(), &state, "proposals")
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The proposal, checked out, is a valid company.
    let checkout = tmp.path().join("proposal");
    git(
        &company,
        &["worktree", "add", "-q", checkout.to_str().unwrap(), branch],
    );
    let out = proto(tmp.path(), &["validate", checkout.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
}

/// A recorded turn calling `name` with `input`.
fn call(id: &str, name: &str, input: serde_json::Value) -> String {
    company::recorded_tool(id, name, input)
}

/// Model calls the controller made, from the committed audit.
fn model_calls(company: &Path) -> usize {
    std::fs::read_dir(company.join(".proto/audit"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>()
        .matches("\"action\":\"model\"")
        .count()
}

/// Pushes a change to the product's `main` from a fresh clone.
fn change_product(dir: &Path, name: &str, change: impl FnOnce(&Path)) {
    let clone = dir.join(name);
    git(
        dir,
        &["clone", "-q", dir.join("app.git").to_str().unwrap(), name],
    );
    change(&clone);
    git(&clone, &["add", "-A"]);
    git(&clone, &["commit", "-q", "-m", name]);
    git(&clone, &["push", "-q", "origin", "HEAD:main"]);
}

#[test]
fn a_met_goal_is_distilled_into_a_playbook_that_meets_it_again_without_a_model() {
    let tmp = tempfile::tempdir().unwrap();
    let company = small_company(tmp.path(), &greet_goal("out.txt says good."));
    change_product(tmp.path(), "seed", |c| {
        std::fs::write(c.join("README.md"), "The app.\n").unwrap()
    });
    // Several tool calls: a read that fails (a dead end), a first wrong write, a command,
    // then the write that meets the goal.
    replay(
        &company,
        &[
            call(
                "c1",
                "Read",
                serde_json::json!({"file_path": "missing.txt"}),
            ),
            write_out("c2", "bad\n", None),
            call(
                "c3",
                "Bash",
                serde_json::json!({"command": "mkdir -p notes && echo checked > notes/check.txt"}),
            ),
            write_out("c4", "good\n", None),
            recorded_text("Done."),
        ],
        "Record a model",
    );
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let calls = model_calls(&company);
    assert_eq!(calls, 5, "{all}");
    let branch = "proto/proposals/playbook-greet";
    assert!(
        git(&company, &["branch", "--list", branch]).contains("playbook-greet"),
        "no proposal:\n{all}"
    );
    let proposed = git(&company, &["show", &format!("{branch}:goals.yaml")]);
    assert!(proposed.contains("playbook:"), "{proposed}\n{all}");
    assert!(
        !proposed.contains("bad"),
        "the dead end was kept:\n{proposed}"
    );
    assert!(
        !proposed.contains("missing.txt"),
        "the read was kept:\n{proposed}"
    );
    let listed = get_json(tmp.path(), &state, "proposals");
    assert_eq!(listed[0]["reason"], "playbook", "{listed:#}");
    let first = git(&tmp.path().join("app.git"), &["show", "--format=", "main"]);

    // A person merges the proposal; the product is reset, so the goal must be met again.
    git(
        &company,
        &[
            "merge",
            "-q",
            "--no-ff",
            "-m",
            "Adopt the greet playbook",
            branch,
        ],
    );
    change_product(tmp.path(), "reset", |c| {
        std::fs::remove_file(c.join("out.txt")).unwrap();
        std::fs::remove_dir_all(c.join("notes")).unwrap();
    });
    let out = run_once(tmp.path(), &company, &state);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let goals = get_json(tmp.path(), &state, "goals");
    assert_eq!(goals[0]["reason"], "CheckPassed", "{goals:#}");
    assert_eq!(model_calls(&company), calls, "a model was called:\n{all}");
    let log = git(
        &tmp.path().join("app.git"),
        &["log", "-1", "--format=%s", "main"],
    );
    assert_eq!(log, "greet: playbook");
    let again = git(&tmp.path().join("app.git"), &["show", "--format=", "main"]);
    assert_eq!(again, first, "not the same product diff");
}

#[test]
fn a_playbook_that_no_longer_meets_the_goal_falls_back_to_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let goal = greet_goal("out.txt says good.")
        + "  playbook:\n    - write: {path: out.txt, content: \"stale\\n\"}\n    - commit: {message: stale}\n";
    let company = small_company(tmp.path(), &goal);
    change_product(tmp.path(), "seed", |c| {
        std::fs::write(c.join("README.md"), "The app.\n").unwrap()
    });
    replay(
        &company,
        &[write_out("c1", "good\n", None), recorded_text("Done.")],
        "Record a model",
    );
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert_eq!(model_calls(&company), 2, "{all}");
    let log = git(&tmp.path().join("app.git"), &["log", "--format=%s", "main"]);
    assert_eq!(log.lines().next(), Some("greet: work by ceo"), "{all}");
    assert!(!log.contains("stale"), "{log}");
}

/// A goal the CEO's model works, met when `file` says `good`; `extra` is more of its spec.
fn good_file_goal(name: &str, file: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: {name}}}\nspec:\n  product: app\n  owner: ceo\n  description: {file} says good.\n  check: {{command: {{run: 'grep -q good {file}'}}}}\n{extra}"
    )
}

#[test]
fn a_retry_is_told_the_ranked_lesson_of_a_similar_goal_by_a_scripted_server() {
    let tmp = tempfile::tempdir().unwrap();
    let goals = good_file_goal("alpha", "a.txt", "")
        + &good_file_goal("beta", "b.txt", "  dependsOn: [alpha]\n");
    let company = small_company(tmp.path(), &goals);
    let write = |id: &str, file: &str, content: &str| {
        mock_llm::tool_use(
            id,
            "Write",
            serde_json::json!({"file_path": file, "content": content}),
        )
    };
    let done = |id: &str| mock_llm::Reply::sse(mock_llm::text_stream(id, "Done.", "end_turn"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    // alpha fails once, then is fixed (a lesson); beta, which waits for alpha, fails the
    // same way, and its retry is asked for with the lesson.
    let mock = rt.block_on(mock_llm::MockLlm::start(vec![
        write("a1", "a.txt", "bad\n"),
        done("a2"),
        write("a3", "a.txt", "good\n"),
        done("a4"),
        write("b1", "b.txt", "bad\n"),
        done("b2"),
        write("b3", "b.txt", "good\n"),
        done("b4"),
    ]));
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace(
            "  mission: Test.\n",
            &format!("  mission: Test.\n  models:\n    providers: [{{name: mock, type: anthropic, baseUrl: '{}', apiKeyEnv: PROTO_TEST_KEY}}]\n", mock.base_url()),
        ),
    )
    .unwrap();
    git(&company, &["commit", "-q", "-am", "A live model"]);
    let state = tmp.path().join("state");
    let out = cli::run_command(tmp.path(), &company, &state)
        .output()
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let requests = mock.requests();
    assert_eq!(requests.len(), 8, "{all}");
    let first_message = |n: usize| requests[n].body["messages"][0].to_string();
    // The first attempts are told no lessons; beta's retry is told alpha's, with its fix.
    assert!(!first_message(0).contains("Lessons from earlier failures"));
    assert!(!first_message(4).contains("Lessons from earlier failures"));
    let retry = first_message(6);
    assert!(retry.contains("Lessons from earlier failures"), "{retry}");
    assert!(
        retry.contains(".proto/knowledge/lesson_learned/alpha-"),
        "{retry}"
    );
    assert!(retry.contains("+good"), "{retry}");
    drop(rt);
}

#[test]
fn with_summaries_on_a_cheap_model_call_writes_down_what_a_met_task_taught() {
    let tmp = tempfile::tempdir().unwrap();
    let company = small_company(tmp.path(), &greet_goal("out.txt says good."));
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace(
            "  ceo: ceo\n",
            "  ceo: ceo\n  learning: {summaries: true}\n",
        ),
    )
    .unwrap();
    let summary = serde_json::json!({"match": "The steps that met it", "response": {"content": [{"type": "text", "text": "{\"kind\": \"pattern\", \"title\": \"Greetings are written to out.txt\", \"body\": \"One word, lowercase.\", \"tags\": [\"greet\"]}"}], "stop_reason": "end_turn", "usage": {"input_tokens": 300, "output_tokens": 40}}}).to_string();
    replay(
        &company,
        &[
            write_out("t1", "good\n", None),
            recorded_text("Done."),
            summary,
        ],
        "Record a model",
    );
    let state = tmp.path().join("state");
    let out = run_once(tmp.path(), &company, &state);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let kept = entries(&company, "pattern");
    assert_eq!(kept.len(), 1, "{kept:?}\n{all}");
    let entry =
        std::fs::read_to_string(company.join(".proto/knowledge/pattern").join(&kept[0])).unwrap();
    assert!(entry.contains("One word, lowercase."), "{entry}");
    // Paid for like any turn: the summary's call is in the task's spend.
    let tasks = get_json(tmp.path(), &state, "tasks");
    assert_eq!(tasks[0]["spend"]["outputTokens"], 5 + 2 + 40, "{tasks:#}");
}
