//! SessionStart, Stop and SubagentStop hooks end to end: real shell-script hooks, the real
//! `proto run --once`, and a scripted Anthropic server that records what the model was
//! sent. What a hook says must reach the model; a Stop hook that blocks must cost exactly one
//! more turn; the continuation cap must hold; and a conversation rebuilt after `kill -9`
//! must reuse the journaled hook outcomes instead of asking the hooks again.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/mock_llm.rs"]
mod mock_llm;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cli::{bin, get_json, git, run_command, text};
use mock_llm::{MockLlm, Recorded, Reply};
use serde_json::{Value, json};

/// A company whose model is the mock at `base_url`, with `extra` YAML documents (goals,
/// agents) and `.claude/settings.json` holding `hooks`; the product is a bare repository.
fn company(dir: &Path, base_url: &str, ceo_tools: &str, extra: &str, hooks: Value) -> PathBuf {
    let company = dir.join("company");
    std::fs::create_dir_all(company.join(".claude")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        format!(
            "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {{name: small}}\nspec:\n  mission: Test.\n  ceo: ceo\n  models:\n    default: sonnet\n    providers: [{{name: mock, type: anthropic, baseUrl: '{base_url}', apiKeyEnv: PROTO_TEST_KEY}}]\n  writeback: {{author: {{name: proto-bot, email: bot@localhost}}}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {{name: ceo}}\nspec: {{title: CEO, description: Runs it., prompt: Run it., tools: {ceo_tools}}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Product\nmetadata: {{name: app}}\nspec: {{description: The app., lead: ceo, repo: {{url: ../app.git, branch: main}}}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Computer\nmetadata: {{name: here}}\nspec: {{local: {{}}, capacity: 2}}\n"
        ),
    )
    .unwrap();
    std::fs::write(company.join("goals.yaml"), extra).unwrap();
    std::fs::write(
        company.join(".claude/settings.json"),
        json!({ "hooks": hooks }).to_string(),
    )
    .unwrap();
    git(&company, &["init", "-q", "-b", "main"]);
    git(&company, &["add", "-A"]);
    git(&company, &["commit", "-q", "-m", "Declare the company"]);
    git(dir, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    company
}

/// A goal owned by the CEO, met when `file` exists.
fn goal(file: &str) -> String {
    format!(
        "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: work}}\nspec:\n  product: app\n  owner: ceo\n  description: {file} exists.\n  check: {{file: {{path: {file}}}}}\n"
    )
}

/// Writes a hook script into `dir`; the hooks entry runs it with `sh`.
fn hook(dir: &Path, name: &str, body: &str) -> Value {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    json!({ "type": "command", "command": format!("sh {}", path.display()) })
}

/// Every JSON input a logging hook appended to `log`, one per line.
fn inputs(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn goal_reason(home: &Path, state: &Path) -> String {
    let goals = get_json(home, state, "goals");
    goals[0]["reason"].as_str().unwrap_or_default().to_string()
}

/// Every audit record the controller committed.
fn audit(company: &Path) -> Vec<Value> {
    std::fs::read_dir(company.join(".proto/audit"))
        .unwrap()
        .flat_map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// A streamed answer that ends the turn with `words`.
fn say(id: &str, words: &str) -> Reply {
    Reply::sse(mock_llm::text_stream(id, words, "end_turn"))
}

/// The messages of a request, without prompt-cache breakpoints (they move every turn).
fn messages(request: &Recorded) -> Vec<Value> {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("cache_control");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut all = request.body["messages"].clone();
    strip(&mut all);
    all.as_array().unwrap().clone()
}

/// The text of one message's text blocks.
fn words(message: &Value) -> String {
    message["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"].as_str())
        .collect()
}

#[test]
fn session_start_context_reaches_the_model_and_a_stop_hook_keeps_the_agent_going() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(MockLlm::start(vec![
        say("m1", "All done."),
        mock_llm::tool_use(
            "m2",
            "Write",
            json!({"file_path": "hello.txt", "content": "hi\n"}),
        ),
        say("m3", "Tests pass; done."),
    ]));
    let tmp = tempfile::tempdir().unwrap();
    let (start_log, stop_log, marker, transcript) = (
        tmp.path().join("start.log"),
        tmp.path().join("stop.log"),
        tmp.path().join("blocked-once"),
        tmp.path().join("transcript.jsonl"),
    );
    let hooks = json!({
        "SessionStart": [{ "matcher": "startup", "hooks": [
            hook(tmp.path(), "plain.sh", &format!("cat >> {}\necho >> {0}\necho 'Plain: the staging server is down'\n", start_log.display())),
            hook(tmp.path(), "json.sh", "cat >/dev/null\nprintf '{\"hookSpecificOutput\":{\"hookEventName\":\"SessionStart\",\"additionalContext\":\"JSON: indent with tabs\"}}'\n"),
        ]}],
        "Stop": [{ "hooks": [hook(tmp.path(), "stop.sh", &format!(
            "input=$(cat)\necho \"$input\" >> {}\necho \"$input\" | python3 -c 'import json,shutil,sys; shutil.copy(json.load(sys.stdin)[\"transcript_path\"], sys.argv[1])' {t}\nif [ ! -e {m} ]; then touch {m}; echo 'run the tests first' >&2; exit 2; fi\n",
            stop_log.display(), m = marker.display(), t = transcript.display()
        ))]}],
    });
    let company = company(
        tmp.path(),
        &mock.base_url(),
        "[Read, Write]",
        &goal("hello.txt"),
        hooks,
    );
    let state = tmp.path().join("state");
    let out = run_command(tmp.path(), &company, &state).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(goal_reason(tmp.path(), &state), "CheckPassed");

    let requests = mock.requests();
    assert_eq!(requests.len(), 3, "one more turn than the model asked for");
    // Both hooks' output is in the first user message, after the task, not in the system
    // prompt (which stays the same for every session of the agent, for the prompt cache).
    let first = words(&messages(&requests[0])[0]);
    assert!(first.starts_with("Goal `work`"), "{first}");
    assert!(
        first.contains("Plain: the staging server is down")
            && first.contains("JSON: indent with tabs"),
        "{first}"
    );
    assert!(!requests[0].body["system"].to_string().contains("staging"));
    // The block's reason is the next user message; the first message is unchanged.
    let second = messages(&requests[1]);
    assert_eq!(second.len(), 3);
    assert_eq!(second[0], messages(&requests[0])[0]);
    assert_eq!(words(&second[1]), "All done.");
    assert_eq!(words(&second[2]), "Stop hook feedback: run the tests first");

    let started = inputs(&start_log);
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["hook_event_name"], "SessionStart");
    assert_eq!(started[0]["source"], "startup");
    assert_eq!(started[0]["model"], "claude-sonnet-4-5");
    let stops = inputs(&stop_log);
    assert_eq!(stops.len(), 2, "{stops:#?}");
    assert_eq!(stops[0]["hook_event_name"], "Stop");
    assert_eq!(stops[0]["stop_hook_active"], false);
    assert_eq!(stops[0]["last_assistant_message"], "All done.");
    assert_eq!(stops[1]["stop_hook_active"], true);
    assert_eq!(stops[1]["last_assistant_message"], "Tests pass; done.");
    assert_eq!(stops[0]["cwd"], started[0]["cwd"]);
    // The transcript the hook was pointed at held the whole conversation, as JSON lines.
    let transcript = inputs(&transcript);
    // Task, "All done.", the hook's feedback, the Write, its result, the last words.
    assert_eq!(transcript.len(), 6, "{transcript:#?}");
    assert_eq!(transcript[0]["type"], "user");
    assert_eq!(transcript[5]["type"], "assistant");
    assert_eq!(
        transcript[5]["message"]["content"][0]["text"],
        "Tests pass; done."
    );

    // Each outcome is a journaled, audited step.
    let audit = audit(&company);
    let stop_records: Vec<&Value> = audit.iter().filter(|r| r["action"] == "Stop").collect();
    assert_eq!(stop_records.len(), 2, "{audit:#?}");
    assert!(
        stop_records
            .iter()
            .any(|r| r["outcome"]["continue"] == "run the tests first"),
        "{stop_records:#?}"
    );
    assert!(
        audit.iter().any(|r| r["action"] == "SessionStart"
            && r["outcome"]["context"][1] == "JSON: indent with tabs"),
        "{audit:#?}"
    );
}

#[test]
fn a_subagent_stop_hook_keeps_a_delegated_agent_going() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(MockLlm::start(vec![
        mock_llm::tool_use(
            "c1",
            "Delegate",
            json!({"agent": "writer", "description": "write the greeting", "prompt": "Write hello.txt saying hi."}),
        ),
        mock_llm::tool_use(
            "w1",
            "Write",
            json!({"file_path": "hello.txt", "content": "hi\n"}),
        ),
        say("w2", "Wrote hello.txt."),
        say("w3", "Spelling checked."),
        say("c2", "The writer did it."),
    ]));
    let tmp = tempfile::tempdir().unwrap();
    let (sub_log, stop_log, start_log, marker) = (
        tmp.path().join("subagent.log"),
        tmp.path().join("stop.log"),
        tmp.path().join("start.log"),
        tmp.path().join("blocked-once"),
    );
    let logger = |name: &str, log: &Path| {
        hook(
            tmp.path(),
            name,
            &format!("cat >> {}\necho >> {0}\n", log.display()),
        )
    };
    let hooks = json!({
        "SessionStart": [{ "hooks": [logger("start.sh", &start_log)] }],
        "Stop": [{ "hooks": [logger("stop.sh", &stop_log)] }],
        // Selected by the agent's name, as Claude Code selects by the subagent's type.
        "SubagentStop": [
            { "matcher": "tester", "hooks": [hook(tmp.path(), "never.sh", "exit 2\n")] },
            { "matcher": "writer", "hooks": [hook(tmp.path(), "sub.sh", &format!(
                "input=$(cat)\necho \"$input\" >> {}\nif [ ! -e {m} ]; then touch {m}; echo '{{\"decision\":\"block\",\"reason\":\"check the spelling\"}}'; fi\n",
                sub_log.display(), m = marker.display()
            ))] },
        ],
    });
    let writer = "---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: writer}\nspec: {title: Writer, reportsTo: ceo, description: Writes greetings., prompt: Write well., tools: [Write]}\n";
    let company = company(
        tmp.path(),
        &mock.base_url(),
        "[Read, Delegate]",
        &format!("{}{writer}", goal("hello.txt")),
        hooks,
    );
    let state = tmp.path().join("state");
    let out = run_command(tmp.path(), &company, &state).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(goal_reason(tmp.path(), &state), "CheckPassed");

    let requests = mock.requests();
    assert_eq!(requests.len(), 5);
    let writer_again = messages(&requests[3]);
    assert_eq!(
        words(writer_again.last().unwrap()),
        "Stop hook feedback: check the spelling"
    );
    // The delegating agent reads the child's final words, after the hook was satisfied.
    let back = messages(&requests[4]);
    assert!(
        back.last()
            .unwrap()
            .to_string()
            .contains("writer reports: Spelling checked."),
        "{back:#?}"
    );

    let subs = inputs(&sub_log);
    assert_eq!(subs.len(), 2, "{subs:#?}");
    assert_eq!(subs[0]["hook_event_name"], "SubagentStop");
    assert_eq!(subs[0]["agent_type"], "writer");
    assert_eq!(subs[0]["stop_hook_active"], false);
    assert_eq!(subs[0]["last_assistant_message"], "Wrote hello.txt.");
    assert_eq!(subs[1]["stop_hook_active"], true);
    assert!(subs[0]["agent_id"].as_str().unwrap().starts_with("task-"));
    // Stop and SessionStart are the delegating agent's alone, as in Claude Code.
    let stops = inputs(&stop_log);
    assert_eq!(stops.len(), 1, "{stops:#?}");
    assert_eq!(stops[0]["last_assistant_message"], "The writer did it.");
    assert_eq!(inputs(&start_log).len(), 1);
    assert_ne!(stops[0]["session_id"], subs[0]["session_id"]);
}

#[test]
fn stop_hooks_keep_a_session_going_only_up_to_the_cap() {
    let cap = proto::policy::MAX_STOP_CONTINUATIONS as usize;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut replies = vec![mock_llm::tool_use(
        "m0",
        "Write",
        json!({"file_path": "hello.txt", "content": "hi\n"}),
    )];
    replies.extend((0..=cap).map(|i| say(&format!("m{}", i + 1), "Done.")));
    let mock = rt.block_on(MockLlm::start(replies));
    let tmp = tempfile::tempdir().unwrap();
    let stop_log = tmp.path().join("stop.log");
    // A hook that never lets the agent stop, and ignores stop_hook_active.
    let hooks = json!({
        "Stop": [{ "hooks": [hook(tmp.path(), "stubborn.sh", &format!(
            "cat >> {}\necho >> {0}\necho 'not yet' >&2\nexit 2\n", stop_log.display()
        ))]}],
    });
    let company = company(
        tmp.path(),
        &mock.base_url(),
        "[Read, Write]",
        &goal("hello.txt"),
        hooks,
    );
    let state = tmp.path().join("state");
    let out = run_command(tmp.path(), &company, &state).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The session ended at the cap; the goal's check decided.
    assert_eq!(goal_reason(tmp.path(), &state), "CheckPassed");
    assert_eq!(mock.requests().len(), 1 + cap + 1);
    let stops = inputs(&stop_log);
    assert_eq!(stops.len(), cap + 1);
    assert_eq!(stops[0]["stop_hook_active"], false);
    assert!(stops[1..].iter().all(|s| s["stop_hook_active"] == true));
    let audit = audit(&company);
    let capped: Vec<&Value> = audit
        .iter()
        .filter(|r| r["action"] == "Stop" && r["outcome"]["capped"] == true)
        .collect();
    assert_eq!(capped.len(), 1, "{audit:#?}");
    assert_eq!(capped[0]["outcome"]["blocked"], "not yet");
    assert_eq!(capped[0]["outcome"]["continue"], Value::Null);
}

#[test]
fn a_restarted_session_reuses_journaled_hook_outcomes_instead_of_asking_again() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(MockLlm::start(vec![
        say("m1", "Done."),
        mock_llm::tool_use(
            "m2",
            "Bash",
            json!({"command": "touch marker && sleep 5 && touch done.txt"}),
        ),
        say("m3", "Tests ran."),
    ]));
    let tmp = tempfile::tempdir().unwrap();
    let (start_log, stop_log, blocked) = (
        tmp.path().join("start.log"),
        tmp.path().join("stop.log"),
        tmp.path().join("blocked-once"),
    );
    let hooks = json!({
        "SessionStart": [{ "hooks": [hook(tmp.path(), "start.sh", &format!(
            "input=$(cat)\necho \"$input\" >> {}\ncase \"$input\" in *resume*) echo 'Context from resume';; *) echo 'Context from startup';; esac\n",
            start_log.display()
        ))]}],
        "Stop": [{ "hooks": [hook(tmp.path(), "stop.sh", &format!(
            "input=$(cat)\necho \"$input\" >> {}\nif [ ! -e {m} ]; then touch {m}; echo 'run the tests first' >&2; exit 2; fi\n",
            stop_log.display(), m = blocked.display()
        ))]}],
    });
    let company = company(
        tmp.path(),
        &mock.base_url(),
        "[Read, Bash]",
        &goal("done.txt"),
        hooks,
    );
    let state = tmp.path().join("state");
    let mut child = run_command(tmp.path(), &company, &state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    cli::kill_once_marked(&mut child, &state.join("work"));
    assert_eq!(mock.requests().len(), 2, "two turns before the kill");
    assert_eq!(inputs(&stop_log).len(), 1);

    let out = run_command(tmp.path(), &company, &state).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(goal_reason(tmp.path(), &state), "CheckPassed");
    let requests = mock.requests();
    assert_eq!(requests.len(), 3, "a recorded turn was asked for again");

    // SessionStart ran once for the start and once, with `resume`, for the restart; its
    // recorded context was reused and the resume output left out.
    let sources: Vec<Value> = inputs(&start_log)
        .iter()
        .map(|i| i["source"].clone())
        .collect();
    assert_eq!(sources, vec![json!("startup"), json!("resume")]);
    // The journaled Stop block was reused: the hook ran for the first end of turn (before
    // the kill) and the last (after it), not again for the first.
    let stops = inputs(&stop_log);
    assert_eq!(stops.len(), 2, "{stops:#?}");
    assert_eq!(stops[1]["stop_hook_active"], true);
    assert_eq!(stops[1]["last_assistant_message"], "Tests ran.");
    // The rebuilt conversation is the one the model saw before the kill.
    let before = messages(&requests[1]);
    let after = messages(&requests[2]);
    assert_eq!(after[..before.len()], before[..]);
    let first = words(&after[0]);
    assert!(first.contains("Context from startup"), "{first}");
    assert!(!first.contains("Context from resume"), "{first}");
    assert_eq!(words(&after[2]), "Stop hook feedback: run the tests first");
}

#[test]
fn a_fail_closed_session_start_hook_that_fails_refuses_the_session() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(MockLlm::start(vec![]));
    let tmp = tempfile::tempdir().unwrap();
    let mut broken = hook(
        tmp.path(),
        "broken.sh",
        "echo 'vault unreachable' >&2\nexit 1\n",
    );
    broken["failClosed"] = json!(true);
    let hooks = json!({ "SessionStart": [{ "hooks": [broken] }] });
    let company = company(
        tmp.path(),
        &mock.base_url(),
        "[Read, Write]",
        &format!("{}  budget: {{attempts: 1}}\n", goal("hello.txt")),
        hooks,
    );
    let state = tmp.path().join("state");
    let out = run_command(tmp.path(), &company, &state).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(mock.requests().is_empty(), "the model was asked anyway");
    let status = Command::new(bin())
        .args([
            "get",
            "goals",
            "--state-dir",
            state.to_str().unwrap(),
            "-o",
            "json",
        ])
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        status.contains("SessionStart refused the session: fail-closed hook")
            && status.contains("vault unreachable"),
        "{status}"
    );
}
