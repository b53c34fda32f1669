//! Hooks as real shell scripts in temporary directories: blocking with exit 2, allowing,
//! asking and rewriting through JSON, crashing and timing out with and without `failClosed`,
//! matcher selection, and the JSON each hook receives on stdin.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proto::policy::hooks::{HookDecision, HookInput, HookOutcome, Session, Site, matcher_selects};
use proto::spec::claude::{Hook, HookMatcher, Settings};
use serde_json::{Value, json};

/// Writes an executable script into `dir` and returns the command that runs it.
fn script(dir: &Path, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_string_lossy().into_owned()
}

fn hook(command: &str) -> Hook {
    Hook {
        kind: "command".into(),
        command: Some(command.into()),
        prompt: None,
        url: None,
        timeout: None,
        fail_closed: false,
    }
}

fn on(event: &str, matchers: Vec<(&str, Vec<Hook>)>) -> BTreeMap<String, Vec<HookMatcher>> {
    let mut map = BTreeMap::new();
    map.insert(
        event.to_string(),
        matchers
            .into_iter()
            .map(|(m, hooks)| HookMatcher {
                matcher: Some(m.to_string()),
                hooks,
            })
            .collect(),
    );
    map
}

/// Runs the hooks on this host's computer, in the event's `cwd` as the workspace.
async fn run_hooks(hooks: &BTreeMap<String, Vec<HookMatcher>>, input: &HookInput) -> HookOutcome {
    let computer = proto::computer::Local::new("here", &input.cwd);
    let workspace = proto::computer::Workspace::new(&input.cwd);
    let cancel = tokio_util::sync::CancellationToken::new();
    let site = Site {
        computer: &computer,
        workspace: &workspace,
        cancel: &cancel,
    };
    proto::policy::hooks::run_hooks(&site, hooks, input).await
}

fn session(dir: &Path) -> Session {
    Session {
        session_id: "task-42".into(),
        transcript_path: dir.join("transcript.jsonl"),
        cwd: dir.to_path_buf(),
    }
}

async fn pre(hooks: &BTreeMap<String, Vec<HookMatcher>>, dir: &Path, tool: &str) -> HookOutcome {
    let input = HookInput::pre_tool_use(&session(dir), tool, &json!({ "command": "rm -rf /" }));
    run_hooks(hooks, &input).await
}

#[tokio::test]
async fn exit_2_blocks_with_stderr_as_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = script(
        dir.path(),
        "guard.sh",
        "cat >/dev/null\necho 'rm -rf is not allowed here' >&2\nexit 2",
    );
    let out = pre(
        &on("PreToolUse", vec![("Bash", vec![hook(&cmd)])]),
        dir.path(),
        "Bash",
    )
    .await;
    assert_eq!(
        out.decision,
        HookDecision::Block {
            reason: "rm -rf is not allowed here".into()
        }
    );
    assert!(out.is_blocked());
    assert_eq!(out.runs[0].exit_code, Some(2));
    assert!(out.errors.is_empty());
}

#[tokio::test]
async fn json_allow_ask_and_deny() {
    let dir = tempfile::tempdir().unwrap();
    let decision = |d: &str| {
        format!(
            r#"cat >/dev/null
printf '%s' '{{"hookSpecificOutput":{{"hookEventName":"PreToolUse","permissionDecision":"{d}","permissionDecisionReason":"because {d}"}}}}'"#
        )
    };
    let allow = script(dir.path(), "allow.sh", &decision("allow"));
    let ask = script(dir.path(), "ask.sh", &decision("ask"));
    let deny = script(dir.path(), "deny.sh", &decision("deny"));

    let out = pre(
        &on("PreToolUse", vec![("", vec![hook(&allow)])]),
        dir.path(),
        "Bash",
    )
    .await;
    assert_eq!(
        out.decision,
        HookDecision::Allow {
            reason: Some("because allow".into())
        }
    );
    // Ask beats allow; deny beats both.
    let out = pre(
        &on("PreToolUse", vec![("*", vec![hook(&allow), hook(&ask)])]),
        dir.path(),
        "Bash",
    )
    .await;
    assert_eq!(
        out.decision,
        HookDecision::Ask {
            reason: "because ask".into()
        }
    );
    let out = pre(
        &on(
            "PreToolUse",
            vec![
                ("*", vec![hook(&allow), hook(&ask)]),
                ("Bash", vec![hook(&deny)]),
            ],
        ),
        dir.path(),
        "Bash",
    )
    .await;
    assert_eq!(
        out.decision,
        HookDecision::Block {
            reason: "because deny".into()
        }
    );
    assert_eq!(out.runs.len(), 3);
}

#[tokio::test]
async fn legacy_decision_block_and_continue_false() {
    let dir = tempfile::tempdir().unwrap();
    let block = script(
        dir.path(),
        "block.sh",
        r#"printf '{"decision":"block","reason":"tests must pass first"}'"#,
    );
    let stop = script(
        dir.path(),
        "stop.sh",
        r#"printf '{"continue":false,"stopReason":"budget review"}'"#,
    );
    let hooks = on("Stop", vec![("", vec![hook(&block)])]);
    let out = run_hooks(&hooks, &HookInput::stop(&session(dir.path()), false)).await;
    assert_eq!(
        out.decision,
        HookDecision::Block {
            reason: "tests must pass first".into()
        }
    );
    let hooks = on("Stop", vec![("", vec![hook(&stop)])]);
    let out = run_hooks(&hooks, &HookInput::stop(&session(dir.path()), false)).await;
    assert_eq!(
        out.decision,
        HookDecision::Block {
            reason: "budget review".into()
        }
    );
}

#[tokio::test]
async fn updated_input_rewrites_the_call_and_the_last_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let first = script(
        dir.path(),
        "first.sh",
        r#"printf '{"hookSpecificOutput":{"hookEventName":"PreToolUse","updatedInput":{"command":"first"}}}'"#,
    );
    // The second hook reads the command from stdin and rewrites it with a dry-run flag.
    let second = script(
        dir.path(),
        "second.sh",
        r#"input=$(cat)
case "$input" in
  *'"command":"rm -rf /"'*) printf '{"hookSpecificOutput":{"hookEventName":"PreToolUse","permissionDecision":"allow","updatedInput":{"command":"echo would run: rm -rf /"}}}' ;;
  *) exit 1 ;;
esac"#,
    );
    let out = pre(
        &on(
            "PreToolUse",
            vec![("Bash", vec![hook(&first), hook(&second)])],
        ),
        dir.path(),
        "Bash",
    )
    .await;
    assert_eq!(
        out.updated_input,
        Some(json!({ "command": "echo would run: rm -rf /" }))
    );
    assert_eq!(out.decision, HookDecision::Allow { reason: None });
    assert!(out.errors.is_empty(), "{:?}", out.errors);
}

#[tokio::test]
async fn a_crash_is_noted_unless_the_hook_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let crash = script(dir.path(), "crash.sh", "echo 'jq: not found' >&2\nexit 127");
    let out = pre(
        &on("PreToolUse", vec![("Bash", vec![hook(&crash)])]),
        dir.path(),
        "Bash",
    )
    .await;
    assert_eq!(out.decision, HookDecision::Continue);
    assert_eq!(out.errors.len(), 1);
    assert!(
        out.errors[0].contains("exited with code 127: jq: not found"),
        "{:?}",
        out.errors
    );

    let closed = Hook {
        fail_closed: true,
        ..hook(&crash)
    };
    let out = pre(
        &on("PreToolUse", vec![("Bash", vec![closed])]),
        dir.path(),
        "Bash",
    )
    .await;
    match &out.decision {
        HookDecision::Block { reason } => {
            assert!(reason.contains("fail-closed hook"), "{reason}");
            assert!(reason.contains("exited with code 127"), "{reason}");
        }
        other => panic!("expected a block, got {other:?}"),
    }
    // A fail-closed hook that answers normally does not block.
    let fine = Hook {
        fail_closed: true,
        ..hook(&script(dir.path(), "fine.sh", "exit 0"))
    };
    let out = pre(
        &on("PreToolUse", vec![("Bash", vec![fine])]),
        dir.path(),
        "Bash",
    )
    .await;
    assert_eq!(out.decision, HookDecision::Continue);
}

#[tokio::test]
async fn a_timeout_is_noted_or_blocks_when_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let slow = script(dir.path(), "slow.sh", "sleep 30");
    let open = Hook {
        timeout: Some(1),
        ..hook(&slow)
    };
    let closed = Hook {
        fail_closed: true,
        ..open.clone()
    };
    let started = Instant::now();
    let out = pre(
        &on("PreToolUse", vec![("Bash", vec![open])]),
        dir.path(),
        "Bash",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the hook was not stopped"
    );
    assert_eq!(out.decision, HookDecision::Continue);
    assert!(out.runs[0].timed_out);
    assert!(
        out.errors[0].contains("timed out after 1s"),
        "{:?}",
        out.errors
    );

    let out = pre(
        &on("PreToolUse", vec![("Bash", vec![closed])]),
        dir.path(),
        "Bash",
    )
    .await;
    assert!(out.is_blocked(), "{:?}", out.decision);
    assert!(
        out.errors.is_empty(),
        "a blocking failure is the decision, not an error"
    );
}

#[tokio::test]
async fn hooks_of_one_event_run_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let hooks: Vec<Hook> = (0..4)
        .map(|i| hook(&script(dir.path(), &format!("s{i}.sh"), "sleep 1")))
        .collect();
    let started = Instant::now();
    let out = pre(&on("PreToolUse", vec![("*", hooks)]), dir.path(), "Bash").await;
    assert_eq!(out.runs.len(), 4);
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn matchers_select_by_tool_name() {
    let dir = tempfile::tempdir().unwrap();
    let mark = |name: &str| {
        script(
            dir.path(),
            &format!("{name}.sh"),
            &format!("cat >/dev/null\necho {name} >> ran.txt"),
        )
    };
    let hooks = on(
        "PreToolUse",
        vec![
            ("Bash", vec![hook(&mark("bash"))]),
            ("Edit|Write", vec![hook(&mark("files"))]),
            ("*", vec![hook(&mark("star"))]),
            ("", vec![hook(&mark("empty"))]),
            ("mcp__github__.*", vec![hook(&mark("github"))]),
        ],
    );
    for (tool, expected) in [
        ("Bash", vec!["bash", "empty", "star"]),
        ("Write", vec!["empty", "files", "star"]),
        ("Edit", vec!["empty", "files", "star"]),
        ("MultiEdit", vec!["empty", "star"]),
        ("Read", vec!["empty", "star"]),
        ("mcp__github__create_issue", vec!["empty", "github", "star"]),
    ] {
        let ran = dir.path().join("ran.txt");
        let _ = std::fs::remove_file(&ran);
        pre(&hooks, dir.path(), tool).await;
        let mut names: Vec<String> = std::fs::read_to_string(&ran)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        names.sort();
        assert_eq!(names, expected, "hooks run for {tool}");
    }

    let table: &[(Option<&str>, Option<&str>, bool)] = &[
        (None, Some("Bash"), true),
        (Some(""), Some("Bash"), true),
        (Some("*"), Some("Bash"), true),
        (Some("Bash"), Some("Bash"), true),
        (Some("Bash"), Some("BashOutput"), false),
        (Some("Edit|Write"), Some("Write"), true),
        (Some("Edit|Write"), Some("MultiEdit"), false),
        (Some("Notebook.*"), Some("NotebookEdit"), true),
        (Some("mcp__.*__write.*"), Some("mcp__fs__write_file"), true),
        (Some("Bash"), None, true),
    ];
    for (matcher, target, expected) in table {
        assert_eq!(
            matcher_selects(*matcher, *target),
            Ok(*expected),
            "{matcher:?} for {target:?}"
        );
    }
    assert!(matcher_selects(Some("(unclosed"), Some("Bash")).is_err());
}

#[tokio::test]
async fn a_broken_matcher_blocks_only_fail_closed_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let ok = script(dir.path(), "ok.sh", "exit 0");
    let closed = Hook {
        fail_closed: true,
        ..hook(&ok)
    };
    let out = pre(
        &on("PreToolUse", vec![("(bad", vec![hook(&ok)])]),
        dir.path(),
        "Bash",
    )
    .await;
    assert_eq!(out.decision, HookDecision::Continue);
    assert_eq!(out.errors.len(), 1);
    let out = pre(
        &on("PreToolUse", vec![("(bad", vec![closed])]),
        dir.path(),
        "Bash",
    )
    .await;
    assert!(out.is_blocked());
}

#[tokio::test]
async fn stdin_carries_the_documented_json() {
    let dir = tempfile::tempdir().unwrap();
    let dump = script(
        dir.path(),
        "dump.sh",
        "cat > \"$CLAUDE_PROJECT_DIR/stdin-$(pwd | tr / _).json\"",
    );
    let hooks = {
        let mut h = on("PostToolUse", vec![("Write", vec![hook(&dump)])]);
        h.extend(on("PreToolUse", vec![("Write", vec![hook(&dump)])]));
        h
    };
    let ws = dir.path();
    let file = |ws: &Path| -> PathBuf {
        ws.join(format!(
            "stdin-{}.json",
            ws.to_string_lossy().replace('/', "_")
        ))
    };
    let input = json!({ "file_path": "src/a.rs", "content": "fn main() {}" });
    let out = run_hooks(
        &hooks,
        &HookInput::post_tool_use(&session(ws), "Write", &input, &json!({ "success": true })),
    )
    .await;
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let seen: Value = serde_json::from_str(&std::fs::read_to_string(file(ws)).unwrap()).unwrap();
    assert_eq!(
        seen,
        json!({
            "session_id": "task-42",
            "transcript_path": ws.join("transcript.jsonl").to_string_lossy(),
            "cwd": ws.to_string_lossy(),
            "hook_event_name": "PostToolUse",
            "tool_name": "Write",
            "tool_input": input,
            "tool_response": { "success": true },
        })
    );
    // The hook ran in the workspace (the file name encodes its working directory).
    run_hooks(
        &hooks,
        &HookInput::pre_tool_use(&session(ws), "Write", &input),
    )
    .await;
    let seen: Value = serde_json::from_str(&std::fs::read_to_string(file(ws)).unwrap()).unwrap();
    assert_eq!(seen["hook_event_name"], "PreToolUse");
    assert!(seen.get("tool_response").is_none());
}

#[tokio::test]
async fn events_without_hooks_and_unsupported_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let out = pre(&BTreeMap::new(), dir.path(), "Bash").await;
    assert_eq!(out.decision, HookDecision::Continue);
    assert!(out.runs.is_empty());

    let prompt = Hook {
        kind: "prompt".into(),
        command: None,
        prompt: Some("Is this safe?".into()),
        url: None,
        timeout: None,
        fail_closed: true,
    };
    let out = pre(
        &on("PreToolUse", vec![("", vec![prompt])]),
        dir.path(),
        "Bash",
    )
    .await;
    assert!(out.is_blocked(), "an unsupported fail-closed hook blocks");
}

#[tokio::test]
async fn hooks_load_from_settings_json_and_plain_stdout_is_context() {
    let dir = tempfile::tempdir().unwrap();
    let hello = script(dir.path(), "hello.sh", "echo 'Remember: run cargo fmt'");
    let settings: Settings = serde_json::from_value(json!({
        "hooks": {
            "SessionStart": [
                { "matcher": "startup", "hooks": [{ "type": "command", "command": hello, "timeout": 5, "failClosed": true }] }
            ]
        }
    }))
    .unwrap();
    let out = run_hooks(
        &settings.hooks,
        &HookInput::session_start(&session(dir.path()), "startup"),
    )
    .await;
    assert_eq!(out.decision, HookDecision::Continue);
    assert_eq!(out.additional_context, vec!["Remember: run cargo fmt"]);
    let out = run_hooks(
        &settings.hooks,
        &HookInput::session_start(&session(dir.path()), "resume"),
    )
    .await;
    assert!(out.runs.is_empty(), "the matcher selects the source");
}

#[tokio::test]
async fn hooks_do_not_see_the_controllers_environment() {
    let dir = tempfile::tempdir().unwrap();
    // Cargo sets CARGO_PKG_NAME for the test process; a hook must not inherit it (nor, so,
    // a model key in the controller's environment). PATH still passes.
    let env = script(
        dir.path(),
        "env.sh",
        "echo \"pkg=${CARGO_PKG_NAME:-unset} path=${PATH:+set} project=$CLAUDE_PROJECT_DIR\"",
    );
    assert!(std::env::var_os("CARGO_PKG_NAME").is_some());
    let hooks = on("SessionStart", vec![("", vec![hook(&env)])]);
    let out = run_hooks(
        &hooks,
        &HookInput::session_start(&session(dir.path()), "startup"),
    )
    .await;
    assert_eq!(
        out.additional_context,
        vec![format!(
            "pkg=unset path=set project={}",
            dir.path().display()
        )]
    );
}

#[tokio::test]
async fn a_flood_of_output_is_capped_and_does_not_stall() {
    let dir = tempfile::tempdir().unwrap();
    // 8 MiB on stdout and stderr, without reading stdin, then a block.
    let flood = script(
        dir.path(),
        "flood.sh",
        "head -c 8388608 /dev/zero | tr '\\0' x\nhead -c 8388608 /dev/zero | tr '\\0' y >&2\nexit 2",
    );
    let hooks = on("PreToolUse", vec![("Write", vec![hook(&flood)])]);
    let big = json!({ "file_path": "a", "content": "z".repeat(4 << 20) });
    let out = run_hooks(
        &hooks,
        &HookInput::pre_tool_use(&session(dir.path()), "Write", &big),
    )
    .await;
    assert!(out.is_blocked());
    assert_eq!(out.runs[0].stdout.len(), 1 << 20);
    // Stderr is the tail every command run keeps.
    let stderr = &out.runs[0].stderr;
    assert!(!stderr.is_empty() && stderr.len() <= 1 << 20 && stderr.ends_with('y'));
}

#[tokio::test]
async fn continue_false_halts_and_subagent_stop_matches_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let halt = script(
        dir.path(),
        "halt.sh",
        r#"printf '{"continue":false,"stopReason":"enough","decision":"block","reason":"more"}'"#,
    );
    let hooks = on("Stop", vec![("", vec![hook(&halt)])]);
    let out = run_hooks(&hooks, &HookInput::stop(&session(dir.path()), true)).await;
    // `continue: false` wins over the block, and Stop can tell the two apart by `halt`.
    assert_eq!(out.halt.as_deref(), Some("enough"));
    assert!(out.is_blocked());

    let log = dir.path().join("seen.json");
    let seen = script(dir.path(), "seen.sh", &format!("cat > {}", log.display()));
    let hooks = on("SubagentStop", vec![("writer|tester", vec![hook(&seen)])]);
    let out = run_hooks(
        &hooks,
        &HookInput::subagent_stop(&session(dir.path()), "ceo", false),
    )
    .await;
    assert!(out.runs.is_empty(), "the matcher selects the agent type");
    let out = run_hooks(
        &hooks,
        &HookInput::subagent_stop(&session(dir.path()), "writer", true),
    )
    .await;
    assert_eq!(out.runs.len(), 1);
    let input: Value = serde_json::from_str(&std::fs::read_to_string(&log).unwrap()).unwrap();
    assert_eq!(input["hook_event_name"], "SubagentStop");
    assert_eq!(input["agent_type"], "writer");
    assert_eq!(input["stop_hook_active"], true);
}
