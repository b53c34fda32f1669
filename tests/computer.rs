//! The local computer against real processes and a real filesystem: exit codes, streamed
//! output, timeouts and cancellation that kill the whole process group, environment and
//! working folder, output tails, and the workspace's refusal of paths that lead outside;
//! an attached process talked to through its streams and stopped, group and all, when
//! dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::computer::{
    AttachRequest, Computer, ComputerError, Local, Origin, Output, RunOutcome, RunRequest,
    Workspace, WorkspaceSpec,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Far below the 30 s sleeps the tests start: finishing under it proves they were killed.
const KILLED_WELL_BEFORE: Duration = Duration::from_secs(20);

fn setup() -> (tempfile::TempDir, Local, Workspace) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    std::fs::create_dir(&root).unwrap();
    let local = Local::new("local", dir.path().join("work"));
    (dir, local, Workspace::new(root))
}

fn request(command: &str) -> RunRequest {
    RunRequest {
        command: command.to_string(),
        cwd: String::new(),
        env: BTreeMap::new(),
        timeout: Duration::from_secs(60),
        origin: Origin::Agent,
        stdin: None,
    }
}

async fn run(local: &Local, ws: &Workspace, command: &str) -> RunOutcome {
    local
        .run(ws, &request(command), None, &CancellationToken::new())
        .await
        .unwrap()
}

/// Waits (boundedly) for a file the command writes, and returns its trimmed content.
async fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + KILLED_WELL_BEFORE;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a process has ended: its /proc entry gone, or a zombie waiting for init.
fn dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

/// Waits (boundedly) for a killed process to end; SIGKILL is delivered asynchronously.
async fn assert_dies(pid: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dead(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn exit_codes_and_output_are_reported() {
    let (_dir, local, ws) = setup();
    let ok = run(&local, &ws, "echo out; echo err >&2").await;
    assert_eq!(ok.code, Some(0));
    assert!(ok.success());
    assert_eq!(ok.stdout, "out\n");
    assert_eq!(ok.stderr, "err\n");
    assert!(!ok.timed_out && !ok.cancelled);

    let failed = run(&local, &ws, "echo nope >&2; exit 3").await;
    assert_eq!(failed.code, Some(3));
    assert!(!failed.success());
    assert_eq!(failed.summary(), "exit status 3: nope");

    let signalled = run(&local, &ws, "kill -9 $$").await;
    assert_eq!(signalled.code, None);
    assert!(!signalled.timed_out && !signalled.cancelled);
    assert_eq!(signalled.summary(), "killed by a signal");
}

#[tokio::test]
async fn output_streams_while_the_command_runs_in_order() {
    let (_dir, local, ws) = setup();
    let root = ws.root().to_path_buf();
    let local = Arc::new(local);
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Each step waits for the test to have seen the previous chunk, so the order is not left
    // to scheduling and the chunks provably arrive before the command ends.
    let script = "echo one; until [ -e go1 ]; do sleep 0.01; done; \
                  echo two >&2; until [ -e go2 ]; do sleep 0.01; done; \
                  printf 'three\\nfour'";
    let running = tokio::spawn({
        let (local, ws) = (local.clone(), ws.clone());
        async move {
            local
                .run(&ws, &request(script), Some(tx), &CancellationToken::new())
                .await
        }
    });
    let mut next = async || {
        tokio::time::timeout(KILLED_WELL_BEFORE, rx.recv())
            .await
            .unwrap()
    };
    assert_eq!(next().await, Some(Output::Stdout("one\n".into())));
    std::fs::write(root.join("go1"), "").unwrap();
    assert_eq!(next().await, Some(Output::Stderr("two\n".into())));
    std::fs::write(root.join("go2"), "").unwrap();
    assert_eq!(next().await, Some(Output::Stdout("three\n".into())));
    assert_eq!(next().await, Some(Output::Stdout("four".into())));
    assert_eq!(next().await, None, "the channel closes when the run ends");

    let outcome = running.await.unwrap().unwrap();
    assert_eq!(outcome.code, Some(0));
    assert_eq!(outcome.stdout, "one\nthree\nfour");
    assert_eq!(outcome.stderr, "two\n");
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let (_dir, local, ws) = setup();
    let started = Instant::now();
    let outcome = local
        .run(
            &ws,
            &RunRequest {
                timeout: Duration::from_secs(2),
                ..request("sleep 30 & echo $! > bg.pid; echo started; sleep 30")
            },
            None,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(started.elapsed() < KILLED_WELL_BEFORE);
    assert!(outcome.timed_out);
    assert!(!outcome.cancelled);
    assert_eq!(outcome.code, None);
    assert_eq!(
        outcome.stdout, "started\n",
        "output before the kill is kept"
    );
    assert!(
        outcome.summary().starts_with("timed out after "),
        "{}",
        outcome.summary()
    );

    let background = wait_for_file(&ws.root().join("bg.pid")).await;
    assert_dies(&background).await;
}

#[tokio::test]
async fn cancellation_kills_the_whole_process_group() {
    let (_dir, local, ws) = setup();
    let local = Arc::new(local);
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let (local, ws, cancel) = (local.clone(), ws.clone(), cancel.clone());
        async move {
            let script = "echo $$ > sh.pid; sleep 30 & echo $! > bg.pid; wait";
            local.run(&ws, &request(script), None, &cancel).await
        }
    });
    let shell = wait_for_file(&ws.root().join("sh.pid")).await;
    let background = wait_for_file(&ws.root().join("bg.pid")).await;
    let started = Instant::now();
    cancel.cancel();
    let outcome = running.await.unwrap().unwrap();
    assert!(started.elapsed() < KILLED_WELL_BEFORE);
    assert!(outcome.cancelled);
    assert!(!outcome.timed_out);
    assert_eq!(outcome.code, None);
    assert_eq!(outcome.summary(), "cancelled");
    assert_dies(&shell).await;
    assert_dies(&background).await;
}

/// Git removes its ref lock (`refs/heads/main.lock`) on `SIGTERM` but not on `SIGKILL`: a
/// cancelled command is asked to end first, so what it cleans up on a signal is cleaned up,
/// and one that ignores the request is killed after the grace.
#[tokio::test]
async fn cancellation_lets_a_command_clean_up_and_then_kills_one_that_will_not_end() {
    let (_dir, local, ws) = setup();
    let local = Arc::new(local);
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let (local, ws, cancel) = (local.clone(), ws.clone(), cancel.clone());
        async move {
            // A child that cleans up, and a child that ignores the request to end.
            let script = "sh -c 'trap \"rm -f main.lock; exit 1\" TERM; touch main.lock; \
                          while :; do sleep 0.05; done' & \
                          sh -c 'trap \"\" TERM; echo $$ > stubborn.pid; \
                          while :; do sleep 0.05; done' & wait";
            local.run(&ws, &request(script), None, &cancel).await
        }
    });
    let stubborn = wait_for_file(&ws.root().join("stubborn.pid")).await;
    while !ws.root().join("main.lock").exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cancel.cancel();
    let outcome = running.await.unwrap().unwrap();
    assert!(outcome.cancelled);
    assert!(
        !ws.root().join("main.lock").exists(),
        "the command was killed before it could remove its lock"
    );
    assert_dies(&stubborn).await;
}

#[tokio::test]
async fn an_abandoned_run_kills_its_process_group() {
    let (_dir, local, ws) = setup();
    let pid_file = ws.root().join("bg.pid");
    let cancel = CancellationToken::new();
    let req = request("sleep 30 & echo $! > bg.pid; wait");
    tokio::select! {
        _ = local.run(&ws, &req, None, &cancel) => panic!("the run ended by itself"),
        _ = wait_for_file(&pid_file) => {}
    }
    // The run's future is dropped here, mid-run.
    let background = wait_for_file(&pid_file).await;
    assert_dies(&background).await;
}

#[tokio::test]
async fn a_background_process_holding_the_output_does_not_hold_the_run() {
    let (_dir, local, ws) = setup();
    let started = Instant::now();
    let outcome = run(&local, &ws, "sleep 30 & echo $! > bg.pid; echo done").await;
    assert!(started.elapsed() < KILLED_WELL_BEFORE);
    assert_eq!(outcome.code, Some(0));
    assert!(!outcome.timed_out);
    assert_eq!(outcome.stdout, "done\n");
    // Ending normally kills nothing: the background process is the command's business.
    let background = wait_for_file(&ws.root().join("bg.pid")).await;
    assert!(!dead(&background));
    std::process::Command::new("kill")
        .args(["-9", &background])
        .status()
        .unwrap();
}

#[tokio::test]
async fn environment_and_working_folder_apply() {
    let (_dir, local, ws) = setup();
    std::fs::create_dir_all(ws.root().join("sub/dir")).unwrap();
    let outcome = local
        .run(
            &ws,
            &RunRequest {
                cwd: "sub/dir".into(),
                env: BTreeMap::from([("GREETING".to_string(), "hello there".to_string())]),
                ..request("pwd -P; echo \"$GREETING\"; test -n \"$PATH\" && echo inherited")
            },
            None,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    let expected = std::fs::canonicalize(ws.root().join("sub/dir")).unwrap();
    assert_eq!(
        outcome.stdout,
        format!("{}\nhello there\ninherited\n", expected.display())
    );

    let stdin = run(&local, &ws, "cat; echo end").await;
    assert_eq!(
        stdin.stdout, "end\n",
        "stdin is empty, never the controller's"
    );
}

#[tokio::test]
async fn working_folders_outside_or_missing_are_refused() {
    let (_dir, local, ws) = setup();
    let cancel = CancellationToken::new();
    for cwd in ["..", "/tmp", "a/../.."] {
        let req = RunRequest {
            cwd: cwd.into(),
            ..request("true")
        };
        let err = local.run(&ws, &req, None, &cancel).await.unwrap_err();
        assert!(
            matches!(err, ComputerError::OutsideWorkspace { .. }),
            "{cwd}: {err}"
        );
    }
    let req = RunRequest {
        cwd: "missing".into(),
        ..request("true")
    };
    let err = local.run(&ws, &req, None, &cancel).await.unwrap_err();
    assert!(matches!(err, ComputerError::Io { .. }), "{err}");
}

#[tokio::test]
async fn outcomes_keep_the_last_64_kib_while_streaming_everything() {
    let (_dir, local, ws) = setup();
    let (tx, mut rx) = mpsc::unbounded_channel();
    // 200 000 bytes on one line, then a short one; on stderr, many short lines.
    let script = "head -c 200000 /dev/zero | tr '\\0' a; echo; echo END; \
                  i=0; while [ $i -lt 20000 ]; do echo line $i >&2; i=$((i+1)); done";
    let outcome = local
        .run(&ws, &request(script), Some(tx), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(outcome.code, Some(0));
    assert!(outcome.stdout.len() <= 64 * 1024);
    assert!(outcome.stdout.len() > 60 * 1024);
    assert!(outcome.stdout.ends_with("aaaa\nEND\n"));
    assert!(outcome.stderr.len() <= 64 * 1024);
    assert!(outcome.stderr.ends_with("line 19999\n"));
    assert!(!outcome.stderr.contains("line 0\n"));

    let mut streamed = String::new();
    let mut stderr_lines = 0;
    while let Some(chunk) = rx.recv().await {
        match chunk {
            Output::Stdout(text) => {
                assert!(text.len() <= 16 * 1024, "a long line is streamed in pieces");
                streamed.push_str(&text);
            }
            Output::Stderr(text) => {
                assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
                stderr_lines += 1;
            }
        }
    }
    assert_eq!(streamed.len(), 200_000 + "\nEND\n".len());
    assert_eq!(stderr_lines, 20_000);
}

#[test]
fn paths_resolve_inside_the_workspace() {
    let (_dir, _local, ws) = setup();
    let root = std::fs::canonicalize(ws.root()).unwrap();
    std::fs::create_dir(root.join("sub")).unwrap();
    symlink("sub", root.join("inner")).unwrap();
    assert_eq!(ws.resolve("a/b.txt").unwrap(), root.join("a/b.txt"));
    assert_eq!(ws.resolve("./a/../b").unwrap(), root.join("b"));
    assert_eq!(ws.resolve(".").unwrap(), root);
    assert_eq!(ws.resolve("sub/").unwrap(), root.join("sub"));
    assert_eq!(
        ws.resolve("inner/new.txt").unwrap(),
        root.join("inner/new.txt")
    );
    assert!(
        ws.resolve("~file").is_err(),
        "a leading ~ is refused outright"
    );
}

#[test]
fn paths_leading_outside_are_refused() {
    let (dir, _local, ws) = setup();
    let root = ws.root();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(dir.path().join("secret"), "s").unwrap();
    symlink("/etc", root.join("etc")).unwrap();
    symlink("..", root.join("up")).unwrap();
    symlink("sub/../../secret", root.join("sneaky")).unwrap();
    symlink("/nonexistent-proto-test/file", root.join("dangling")).unwrap();
    symlink("../../outside-new", root.join("sub/dangling-up")).unwrap();
    for path in [
        "",
        "/etc/passwd",
        "~",
        "~/x",
        "..",
        "../ws2/x",
        "a/../../x",
        "sub/../../secret",
        "etc",
        "etc/passwd",
        "etc/new-file",
        "up/secret",
        "sneaky",
        "dangling",
        "sub/dangling-up",
        "sub/dangling-up/deeper",
    ] {
        match ws.resolve(path) {
            Err(ComputerError::OutsideWorkspace { path: named }) => assert_eq!(named, path),
            other => panic!("{path:?} was not refused: {other:?}"),
        }
    }
    // Out through a link and back in again lands inside: what counts is where it lands.
    assert!(ws.resolve("up/ws/sub").is_ok());
}

#[test]
fn symbolic_link_loops_are_errors() {
    let (_dir, _local, ws) = setup();
    symlink("loop", ws.root().join("loop")).unwrap();
    assert!(ws.resolve("loop/x").is_err());
}

#[test]
fn a_root_reached_through_a_link_still_works() {
    let (dir, _local, ws) = setup();
    let via_link = dir.path().join("link-to-ws");
    symlink(ws.root(), &via_link).unwrap();
    let linked = Workspace::new(&via_link);
    let root = std::fs::canonicalize(ws.root()).unwrap();
    assert_eq!(linked.resolve("x").unwrap(), root.join("x"));
    assert!(linked.resolve("../link-to-ws/x").is_err());
}

#[tokio::test]
async fn files_round_trip_through_the_workspace() {
    let (_dir, local, ws) = setup();
    local.write(&ws, "a/b/c.txt", b"hello\n").await.unwrap();
    assert_eq!(
        std::fs::read(ws.root().join("a/b/c.txt")).unwrap(),
        b"hello\n"
    );
    assert_eq!(
        local.read(&ws, "a/b/c.txt").await.unwrap(),
        Some(b"hello\n".to_vec())
    );
    local.write(&ws, "a/b/c.txt", b"again").await.unwrap();
    assert_eq!(
        local.read(&ws, "./a/b/../b/c.txt").await.unwrap(),
        Some(b"again".to_vec())
    );
    assert_eq!(local.read(&ws, "missing.txt").await.unwrap(), None);
    assert_eq!(local.read(&ws, "missing/deeper.txt").await.unwrap(), None);
    assert!(matches!(
        local.read(&ws, "a").await,
        Err(ComputerError::Io { .. })
    ));
}

#[tokio::test]
async fn files_outside_the_workspace_are_neither_read_nor_written() {
    let (dir, local, ws) = setup();
    symlink("/etc", ws.root().join("etc")).unwrap();
    symlink(dir.path(), ws.root().join("parent")).unwrap();
    assert!(matches!(
        local.read(&ws, "etc/passwd").await,
        Err(ComputerError::OutsideWorkspace { .. })
    ));
    assert!(matches!(
        local.read(&ws, "/etc/passwd").await,
        Err(ComputerError::OutsideWorkspace { .. })
    ));
    for path in ["../escaped", "parent/escaped", "parent/deep/escaped"] {
        assert!(matches!(
            local.write(&ws, path, b"x").await,
            Err(ComputerError::OutsideWorkspace { .. })
        ));
    }
    assert!(!dir.path().join("escaped").exists());
    assert!(!dir.path().join("deep").exists());
}

#[tokio::test]
async fn local_is_healthy_and_named() {
    let (_dir, local, _ws) = setup();
    assert!(local.healthy().await.is_ok());
    assert_eq!(local.name(), "local");
}

/// A heartbeat and the check after a failed attempt probe one computer at once: neither may
/// take the other's probe for the computer's failure (each once removed the file the other
/// had written, and a healthy computer was taken for lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probes_of_one_computer_at_once_all_find_it_healthy() {
    let (_dir, local, _ws) = setup();
    let local = std::sync::Arc::new(local);
    for _ in 0..20 {
        let probes: Vec<_> = (0..8)
            .map(|_| {
                let local = local.clone();
                tokio::spawn(async move { local.healthy().await })
            })
            .collect();
        for probe in probes {
            let answer = probe.await.unwrap();
            assert!(answer.is_ok(), "{answer:?}");
        }
    }
}

fn git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

#[tokio::test]
async fn workspaces_are_clones_named_after_the_task_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("product");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "product\n").unwrap();
    git(&repo, &["add", "README.md"]);
    git(&repo, &["commit", "-q", "-m", "first"]);

    let workdir = dir.path().join("work");
    let local = Local::new("local", &workdir);
    let spec = WorkspaceSpec {
        repo: repo.display().to_string(),
        branch: "main".into(),
        task: "goal/ship it".into(),
    };
    let ws = local.workspace(&spec).await.unwrap();
    let expected: PathBuf = workdir.join("goal-ship-it");
    assert_eq!(ws.root(), expected);
    assert_eq!(
        local.read(&ws, "README.md").await.unwrap(),
        Some(b"product\n".to_vec())
    );

    // A restarted task finds its workspace as it left it.
    local
        .write(&ws, "progress.txt", b"half done")
        .await
        .unwrap();
    let again = local.workspace(&spec).await.unwrap();
    assert_eq!(again, ws);
    assert_eq!(
        local.read(&again, "progress.txt").await.unwrap(),
        Some(b"half done".to_vec())
    );

    // Delivered work's workspace goes; the next task of the key starts from the branch.
    local.discard(&spec).await.unwrap();
    assert!(!expected.exists());
    local.discard(&spec).await.unwrap();
    let fresh = local.workspace(&spec).await.unwrap();
    assert_eq!(local.read(&fresh, "progress.txt").await.unwrap(), None);
}

#[tokio::test]
async fn commands_never_see_the_controllers_secrets() {
    // Set in a child process's environment only: tests share this process's environment.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "secret_probe",
            "--nocapture",
            "--include-ignored",
        ])
        .env("ANTHROPIC_API_KEY", "sk-test-secret")
        .env("PROTO_SECRET_PROBE", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("probe: key hidden, PATH kept"), "{text}");
}

#[tokio::test]
#[ignore = "run by commands_never_see_the_controllers_secrets in a child process"]
async fn secret_probe() {
    if std::env::var_os("PROTO_SECRET_PROBE").is_none() {
        return;
    }
    let (_dir, local, ws) = setup();
    let out = run(
        &local,
        &ws,
        "echo \"key=[${ANTHROPIC_API_KEY:-}] path=[${PATH:+set}]\"",
    )
    .await;
    assert_eq!(out.stdout.trim(), "key=[] path=[set]");
    println!("probe: key hidden, PATH kept");
}

#[tokio::test]
async fn processes_left_running_are_stopped_when_the_attempt_releases_its_computer() {
    let (dir, first, ws) = setup();
    let second = Local::new("local", dir.path().join("work"));
    // Each leaves a server-like process behind, one level down (a child of a child).
    let started = run(
        &first,
        &ws,
        "sh -c 'sleep 300 >/dev/null 2>&1 & echo $! > first.pid'",
    )
    .await;
    assert!(started.success(), "{started:?}");
    run(
        &second,
        &ws,
        "sleep 300 >/dev/null 2>&1 & echo $! > second.pid",
    )
    .await;
    let first_pid = wait_for_file(&ws.root().join("first.pid")).await;
    let second_pid = wait_for_file(&ws.root().join("second.pid")).await;
    assert!(!dead(&first_pid) && !dead(&second_pid));

    // Only what this computer's commands started is stopped.
    assert_eq!(first.release().await.unwrap(), 1);
    assert_dies(&first_pid).await;
    assert!(!dead(&second_pid), "another attempt's process was stopped");
    assert_eq!(first.release().await.unwrap(), 0, "nothing is left");
    assert_eq!(second.release().await.unwrap(), 1);
    assert_dies(&second_pid).await;
}

#[tokio::test]
async fn a_listing_names_the_files_below_a_folder_and_stays_inside() {
    let (_dir, local, ws) = setup();
    for path in [".claude/rules/a.md", ".claude/rules/deep/b.md", "other.txt"] {
        local.write(&ws, path, b"x").await.unwrap();
    }
    assert_eq!(
        local.list(&ws, ".claude/rules").await.unwrap(),
        vec![".claude/rules/a.md", ".claude/rules/deep/b.md"]
    );
    assert!(local.list(&ws, "missing").await.unwrap().is_empty());
    assert!(matches!(
        local.list(&ws, "../..").await,
        Err(ComputerError::OutsideWorkspace { .. })
    ));
}

/// A long-lived process started with `attach` (a shell reading lines) answers what it is
/// sent, runs in the workspace with a plain environment and the request's variables, keeps
/// its stderr, and is stopped with what it started once its handle drops.
#[tokio::test]
async fn an_attached_process_talks_through_its_streams_and_dies_with_its_handle() {
    let (_dir, local, ws) = setup();
    // `CARGO_PKG_NAME` (cargo sets it for this test) stands for a controller secret.
    let script = "sleep 30 & echo $! > bg.pid; echo started >&2; \
                  while read line; do echo \"$line from $PWD with $GREETING and ${CARGO_PKG_NAME:-nothing}\"; done";
    let request = AttachRequest {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        env: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
        origin: Origin::Controller,
    };
    let mut attached = local.attach(Some(&ws), &request).await.unwrap();
    attached.stdin.write_all(b"ping\n").await.unwrap();
    attached.stdin.flush().await.unwrap();
    let mut stdout = BufReader::new(attached.stdout);
    let mut line = String::new();
    stdout.read_line(&mut line).await.unwrap();
    let root = std::fs::canonicalize(ws.root()).unwrap();
    assert_eq!(
        line.trim(),
        format!("ping from {} with hello and nothing", root.display())
    );
    assert!(attached.process.running());
    let background = wait_for_file(&ws.root().join("bg.pid")).await;
    // Its stderr is read beside the streams handed back: it arrives in its own time.
    let deadline = Instant::now() + KILLED_WELL_BEFORE;
    while !attached.process.stderr().contains("started") {
        assert!(Instant::now() < deadline, "no stderr kept");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    drop(attached.process);
    assert_dies(&background).await;
    // Its output ends with it.
    line.clear();
    assert_eq!(stdout.read_line(&mut line).await.unwrap(), 0);
}

#[tokio::test]
async fn attaching_a_missing_program_or_folder_is_a_spawn_error() {
    let (dir, local, ws) = setup();
    let request = AttachRequest {
        program: "proto-no-such-program".into(),
        args: Vec::new(),
        env: BTreeMap::new(),
        origin: Origin::Controller,
    };
    let e = local.attach(Some(&ws), &request).await.unwrap_err();
    assert!(matches!(e, ComputerError::Spawn { .. }), "{e:?}");
    assert!(e.to_string().contains("proto-no-such-program"), "{e}");

    let gone = Workspace::new(dir.path().join("gone"));
    let sh = AttachRequest {
        program: "sh".into(),
        ..request
    };
    let e = local.attach(Some(&gone), &sh).await.unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}
