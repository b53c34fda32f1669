//! The SSH computer against a real OpenSSH server (a private `sshd` on a free port of
//! 127.0.0.1, with its own host key and an authorized client key): exit codes and streamed
//! output, environment and working folder, timeout and cancellation stopping the remote
//! process group (SIGTERM first), `release`, files over SFTP with the workspace's refusals,
//! a workspace cloned on the remote and delivered by the same `Git` delivery Local uses,
//! strict host key checks (unknown and changed keys refused, `accept-new` recording), and a
//! dead or silent host giving an error rather than a hang; and `proto run --once` meeting a
//! playbook goal on a Computer declared with `ssh:`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/company.rs"]
mod company;
#[path = "support/git_daemon.rs"]
mod git_daemon;
#[path = "support/sshd.rs"]
mod sshd;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use proto::computer::ssh::{HostKeys, Login, SshError};
use proto::computer::{
    AttachRequest, Computer, ComputerError, Origin, Output, RunOutcome, RunRequest, Ssh, Workspace,
    WorkspaceSpec,
};
use proto::gitops::Identity;
use proto::gitops::delivery::Git;
use sshd::{Sshd, keygen, whoami};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A bound on every wait of these tests, far above what each step takes.
const PATIENCE: Duration = Duration::from_secs(30);

/// A server, its computer and an empty workspace folder (the remote is this host, so the
/// test can look at the remote's files directly).
fn setup() -> (Sshd, Ssh, Workspace, tempfile::TempDir) {
    let sshd = Sshd::start();
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("ws");
    std::fs::create_dir(&root).unwrap();
    let ssh = sshd.computer(&scratch.path().join("work"));
    (sshd, ssh, Workspace::elsewhere(root), scratch)
}

fn request(command: &str) -> RunRequest {
    RunRequest {
        command: command.to_string(),
        cwd: String::new(),
        env: BTreeMap::new(),
        timeout: PATIENCE,
        origin: Origin::Agent,
        stdin: None,
    }
}

async fn run(ssh: &Ssh, ws: &Workspace, command: &str) -> RunOutcome {
    ssh.run(ws, &request(command), None, &CancellationToken::new())
        .await
        .unwrap()
}

/// Whether process `pid` runs on the remote, asked by a second command there (a zombie
/// waiting to be reaped does not count).
async fn alive(ssh: &Ssh, ws: &Workspace, pid: &str) -> bool {
    let out = run(
        ssh,
        ws,
        &format!(
            "kill -0 {pid} 2>/dev/null || exit 1; \
             [ \"$(sed 's/.*) //' /proc/{pid}/stat | cut -c1)\" != Z ]"
        ),
    )
    .await;
    out.success()
}

/// Waits (boundedly) for a file the remote command writes; its trimmed content.
async fn wait_for_file(ssh: &Ssh, ws: &Workspace, path: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(bytes) = ssh.read(ws, path).await.unwrap() {
            let text = String::from_utf8(bytes).unwrap();
            if text.ends_with('\n') {
                return text.trim().to_string();
            }
        }
        assert!(Instant::now() < deadline, "{path} never appeared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn exit_codes_and_streamed_output_are_reported() {
    let (_sshd, ssh, ws, _scratch) = setup();
    let (sender, mut receiver) = mpsc::unbounded_channel();
    let out = ssh
        .run(
            &ws,
            &request("echo out; echo err >&2; echo more; exit 3"),
            Some(sender),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(out.code, Some(3));
    assert!(!out.timed_out && !out.cancelled);
    assert_eq!(out.stdout, "out\nmore\n");
    // The wrapper's process-group line is the computer's, not the command's.
    assert_eq!(out.stderr, "err\n");
    let (mut stdout, mut stderr) = (String::new(), String::new());
    while let Some(chunk) = receiver.recv().await {
        match chunk {
            Output::Stdout(text) => stdout.push_str(&text),
            Output::Stderr(text) => stderr.push_str(&text),
        }
    }
    assert_eq!((stdout.as_str(), stderr.as_str()), ("out\nmore\n", "err\n"));

    assert_eq!(run(&ssh, &ws, "true").await.code, Some(0));
    assert_eq!(run(&ssh, &ws, "exit 42").await.code, Some(42));
    let missing = run(&ssh, &ws, "no-such-program-here").await;
    assert_eq!(missing.code, Some(127), "{missing:?}");
    assert!(ssh.healthy().await.is_ok());
}

#[tokio::test]
async fn output_streams_while_the_command_runs() {
    let (_sshd, ssh, ws, _scratch) = setup();
    let (sender, mut receiver) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let running = {
        let (ssh, ws, cancel) = (&ssh, &ws, cancel.clone());
        async move {
            ssh.run(
                ws,
                &request("echo first; while [ ! -f go ]; do sleep 0.05; done; echo second"),
                Some(sender),
                &cancel,
            )
            .await
            .unwrap()
        }
    };
    let watching = async {
        // The first line arrives while the command still waits for `go`.
        let first = tokio::time::timeout(PATIENCE, receiver.recv())
            .await
            .unwrap();
        assert_eq!(first, Some(Output::Stdout("first\n".into())));
        std::fs::write(ws.root().join("go"), "").unwrap();
        let mut rest = String::new();
        while let Some(Output::Stdout(text)) = receiver.recv().await {
            rest.push_str(&text);
        }
        rest
    };
    let (out, rest) = tokio::join!(running, watching);
    assert_eq!(out.code, Some(0));
    assert_eq!(rest, "second\n");
}

#[tokio::test]
async fn environment_and_working_folder_apply() {
    let (_sshd, ssh, ws, _scratch) = setup();
    std::fs::create_dir_all(ws.root().join("sub/dir")).unwrap();
    let mut req = request("printf '%s|%s|' \"$GREETING\" \"$OTHER\"; pwd");
    req.cwd = "sub/./dir".into();
    req.env
        .insert("GREETING".into(), "hello 'world' $HOME `id`".into());
    req.env.insert("OTHER".into(), "two\nlines".into());
    let out = ssh
        .run(&ws, &req, None, &CancellationToken::new())
        .await
        .unwrap();
    let root = std::fs::canonicalize(ws.root()).unwrap();
    assert_eq!(
        out.stdout,
        format!(
            "hello 'world' $HOME `id`|two\nlines|{}\n",
            root.join("sub/dir").display()
        )
    );

    // Outside the workspace, or missing: refused before anything runs.
    for (cwd, outside) in [("..", true), ("/tmp", true), ("nope", false)] {
        req.cwd = cwd.into();
        let err = ssh
            .run(&ws, &req, None, &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(
            matches!(err, ComputerError::OutsideWorkspace { .. }),
            outside,
            "{cwd}: {err}"
        );
    }
    // A name no shell could export is refused, not spliced into the script.
    let mut bad = request("true");
    bad.env.insert("A;touch pwned".into(), "x".into());
    assert!(
        ssh.run(&ws, &bad, None, &CancellationToken::new())
            .await
            .is_err()
    );
    assert!(!ws.root().join("pwned").exists());
}

#[tokio::test]
async fn a_timeout_stops_the_whole_remote_process_group() {
    let (_sshd, ssh, ws, _scratch) = setup();
    let mut req = request("sleep 300 & echo $! > bg.pid; echo $$ > sh.pid; wait");
    req.timeout = Duration::from_secs(2);
    let out = ssh
        .run(&ws, &req, None, &CancellationToken::new())
        .await
        .unwrap();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.code, None);
    assert!(
        out.summary().starts_with("timed out after"),
        "{}",
        out.summary()
    );
    for file in ["bg.pid", "sh.pid"] {
        let pid = wait_for_file(&ssh, &ws, file).await;
        assert!(!alive(&ssh, &ws, &pid).await, "{file} {pid} still runs");
    }
}

#[tokio::test]
async fn cancellation_stops_the_group_with_sigterm_first() {
    let (_sshd, ssh, ws, _scratch) = setup();
    let cancel = CancellationToken::new();
    // The shell cleans up on SIGTERM (as git removes its ref locks); the background
    // sleep is in the same group and is stopped too.
    let command = "trap 'echo cleaned > cleaned; exit 0' TERM; sleep 300 & echo $! > bg.pid; \
                   echo $$ > sh.pid; while :; do sleep 0.1; done";
    let req = request(command);
    let running = ssh.run(&ws, &req, None, &cancel);
    let cancelling = async {
        wait_for_file(&ssh, &ws, "sh.pid").await;
        cancel.cancel();
    };
    let (out, ()) = tokio::join!(running, cancelling);
    let out = out.unwrap();
    assert!(out.cancelled, "{out:?}");
    assert_eq!(out.code, None);
    assert_eq!(wait_for_file(&ssh, &ws, "cleaned").await, "cleaned");
    for file in ["bg.pid", "sh.pid"] {
        let pid = wait_for_file(&ssh, &ws, file).await;
        assert!(!alive(&ssh, &ws, &pid).await, "{file} {pid} still runs");
    }
}

#[tokio::test]
async fn a_group_that_ignores_sigterm_is_killed() {
    let (_sshd, ssh, ws, _scratch) = setup();
    let cancel = CancellationToken::new();
    let command = "trap '' TERM; echo $$ > sh.pid; while :; do sleep 0.1; done";
    let req = request(command);
    let running = ssh.run(&ws, &req, None, &cancel);
    let cancelling = async {
        wait_for_file(&ssh, &ws, "sh.pid").await;
        cancel.cancel();
    };
    let (out, ()) = tokio::join!(running, cancelling);
    assert!(out.unwrap().cancelled);
    let pid = wait_for_file(&ssh, &ws, "sh.pid").await;
    assert!(!alive(&ssh, &ws, &pid).await, "{pid} still runs");
}

#[tokio::test]
async fn release_stops_what_the_commands_left_running() {
    let (_sshd, ssh, ws, _scratch) = setup();
    // The background process lets go of the streams, so the run ends at once.
    let out = run(
        &ssh,
        &ws,
        "sleep 300 >/dev/null 2>&1 </dev/null & echo $! > bg.pid",
    )
    .await;
    assert!(out.success());
    let pid = wait_for_file(&ssh, &ws, "bg.pid").await;
    assert!(alive(&ssh, &ws, &pid).await);
    // Another attempt's computer (same connection, another marker) stops nothing of it.
    let other = ssh.marked("another-task".into());
    assert_eq!(other.release().await.unwrap(), 0);
    assert!(alive(&ssh, &ws, &pid).await);
    assert_eq!(ssh.release().await.unwrap(), 1);
    assert!(!alive(&ssh, &ws, &pid).await, "{pid} still runs");
    assert_eq!(ssh.release().await.unwrap(), 0);
}

#[tokio::test]
async fn a_new_controller_stops_what_the_previous_ones_tasks_left_on_the_remote() {
    let (sshd, ssh, ws, scratch) = setup();
    let state = scratch.path().join("state");
    let elsewhere = scratch.path().join("other-state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    // Two tasks of a controller with this state, one of a controller with another, each
    // leaving a process running (as a killed controller would).
    let mut pids = Vec::new();
    for (n, (dir, task)) in [(&state, 1), (&state, 2), (&elsewhere, 1)]
        .into_iter()
        .enumerate()
    {
        let task = ssh.marked(proto::computer::local::run_marker(dir, task));
        let out = run(
            &task,
            &ws,
            &format!("sleep 300 >/dev/null 2>&1 </dev/null & echo $! > bg{n}.pid"),
        )
        .await;
        assert!(out.success());
        pids.push(wait_for_file(&ssh, &ws, &format!("bg{n}.pid")).await);
    }
    // The next controller with the same state: its first touch of the computer stops its
    // predecessor's processes, and only those.
    let next = sshd
        .computer(&scratch.path().join("work"))
        .stopping_leftovers(proto::computer::local::marker_prefix(&state));
    let spec = WorkspaceSpec {
        repo: "/nowhere".into(),
        branch: "main".into(),
        task: "t".into(),
    };
    next.discard(&spec).await.unwrap();
    assert!(!alive(&ssh, &ws, &pids[0]).await, "{} still runs", pids[0]);
    assert!(!alive(&ssh, &ws, &pids[1]).await, "{} still runs", pids[1]);
    assert!(
        alive(&ssh, &ws, &pids[2]).await,
        "another state's process was stopped"
    );
    // Once: a task started since is not stopped by a later attempt's first touch.
    let task = next.marked(proto::computer::local::run_marker(&state, 3));
    let out = run(
        &task,
        &ws,
        "sleep 300 >/dev/null 2>&1 </dev/null & echo $! > bg3.pid",
    )
    .await;
    assert!(out.success());
    let pid = wait_for_file(&ssh, &ws, "bg3.pid").await;
    next.marked("another".into()).discard(&spec).await.unwrap();
    assert!(alive(&ssh, &ws, &pid).await);
    assert_eq!(task.release().await.unwrap(), 1);
    let _ = ssh
        .marked(proto::computer::local::run_marker(&elsewhere, 1))
        .release()
        .await;
}

#[tokio::test]
async fn files_round_trip_over_sftp_and_paths_outside_are_refused() {
    let (_sshd, ssh, ws, scratch) = setup();
    ssh.write(&ws, "a/b/c.txt", b"content\n").await.unwrap();
    assert_eq!(
        std::fs::read_to_string(ws.root().join("a/b/c.txt")).unwrap(),
        "content\n"
    );
    ssh.write(&ws, "a/b/c.txt", b"short").await.unwrap();
    assert_eq!(
        ssh.read(&ws, "a/b/c.txt").await.unwrap().as_deref(),
        Some(&b"short"[..])
    );
    assert_eq!(ssh.read(&ws, "missing.txt").await.unwrap(), None);
    ssh.write(&ws, "top.txt", b"x").await.unwrap();
    assert_eq!(
        ssh.list(&ws, ".").await.unwrap(),
        vec!["a/b/c.txt".to_string(), "top.txt".to_string()]
    );
    assert_eq!(ssh.list(&ws, "a").await.unwrap(), vec!["a/b/c.txt"]);
    assert!(ssh.list(&ws, "none").await.unwrap().is_empty());

    // Outside, lexically or through a link.
    std::fs::write(scratch.path().join("secret"), "s").unwrap();
    std::os::unix::fs::symlink(scratch.path(), ws.root().join("out")).unwrap();
    for path in [
        "../secret",
        "/etc/passwd",
        "~/x",
        "out/secret",
        "a/../../secret",
    ] {
        let read = ssh.read(&ws, path).await.unwrap_err();
        assert!(
            matches!(read, ComputerError::OutsideWorkspace { .. }),
            "{path}: {read}"
        );
        let write = ssh.write(&ws, path, b"no").await.unwrap_err();
        assert!(
            matches!(write, ComputerError::OutsideWorkspace { .. }),
            "{path}: {write}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("secret")).unwrap(),
        "s"
    );

    // Into `.git`, however spelt or linked.
    std::fs::create_dir_all(ws.root().join(".git/hooks")).unwrap();
    std::os::unix::fs::symlink(".git/hooks", ws.root().join("hooks")).unwrap();
    for path in [
        ".git/config",
        "./.git/hooks/pre-commit",
        "a/../.git/x",
        "hooks/pre-commit",
        "vendor/lib/.git/config",
    ] {
        let err = ssh.write(&ws, path, b"#!/bin/sh").await.unwrap_err();
        assert!(matches!(err, ComputerError::GitDir { .. }), "{path}: {err}");
    }
    assert!(!ws.root().join(".git/hooks/pre-commit").exists());
    // Reading `.git` is allowed, as on this host.
    std::fs::write(ws.root().join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    assert!(ssh.read(&ws, ".git/HEAD").await.unwrap().is_some());
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_workspace_cloned_on_the_remote_is_delivered_by_the_same_git_delivery() {
    let (_sshd, ssh, _ws, scratch) = setup();
    let base = scratch.path();
    git(base, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    git(base, &["init", "-q", "-b", "main", "seed"]);
    std::fs::write(base.join("seed/README.md"), "seed\n").unwrap();
    git(&base.join("seed"), &["add", "-A"]);
    git(
        &base.join("seed"),
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-qm",
            "Seed",
        ],
    );
    let repo = base.join("app.git");
    git(
        &base.join("seed"),
        &["push", "-q", repo.to_str().unwrap(), "main"],
    );

    let spec = WorkspaceSpec {
        repo: repo.display().to_string(),
        branch: "main".into(),
        task: "goal/ship it".into(),
    };
    let workspace = ssh.workspace(&spec).await.unwrap();
    assert_eq!(workspace.root(), base.join("work/goal-ship-it"));
    assert_eq!(
        ssh.read(&workspace, "README.md").await.unwrap().as_deref(),
        Some(&b"seed\n"[..])
    );
    // Made again for a restarted task: the same workspace, as it was left.
    ssh.write(&workspace, "feature.txt", b"made remotely\n")
        .await
        .unwrap();
    assert_eq!(ssh.workspace(&spec).await.unwrap().root(), workspace.root());

    let cancel = CancellationToken::new();
    let delivery = Git {
        computer: &ssh,
        workspace: &workspace,
        cancel: &cancel,
    };
    let bot = Identity {
        name: "proto-bot".into(),
        email: "bot@example.com".into(),
    };
    let commit = delivery
        .commit_all("Add the feature", &Identity::agent("ceo", &bot), &bot)
        .await
        .unwrap()
        .expect("a commit");
    let prepared = delivery.prepare("main", &bot, true).await.unwrap();
    assert!(!prepared.up_to_date());
    delivery
        .push("main", prepared.tip.as_deref())
        .await
        .unwrap();
    assert_eq!(git(&repo, &["rev-parse", "main"]).trim(), commit);
    assert_eq!(git(&repo, &["show", "main:feature.txt"]), "made remotely\n");

    // A branch the product does not have yet starts at its default branch.
    let feature = WorkspaceSpec {
        branch: "feature/x".into(),
        task: "other".into(),
        ..spec.clone()
    };
    let other = ssh.workspace(&feature).await.unwrap();
    let head = ssh
        .run(
            &other,
            &request("git symbolic-ref HEAD; cat feature.txt"),
            None,
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!(head.stdout, "refs/heads/feature/x\nmade remotely\n");

    ssh.discard(&spec).await.unwrap();
    assert!(!workspace.root().exists());
    assert!(other.root().exists());

    // A product the remote cannot reach: the clone's own reason.
    let missing = WorkspaceSpec {
        repo: base.join("nope.git").display().to_string(),
        task: "missing".into(),
        ..spec
    };
    let err = ssh.workspace(&missing).await.unwrap_err();
    assert!(err.to_string().contains("nope.git"), "{err}");
}

#[tokio::test]
async fn an_unknown_host_key_is_refused_and_accept_new_records_it() {
    let sshd = Sshd::start();
    let scratch = tempfile::tempdir().unwrap();
    let known = scratch.path().join("known_hosts");
    let ws = Workspace::elsewhere(scratch.path());

    // Strict, with a file that does not know the host (or does not exist).
    let strict = Ssh::new("r", sshd.target(known.clone(), HostKeys::Strict), None);
    let err = strict
        .run(&ws, &request("true"), None, &CancellationToken::new())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ComputerError::Ssh(SshError::UnknownHostKey { .. })),
        "{text}"
    );
    assert!(text.contains(&format!("127.0.0.1:{}", sshd.port)), "{text}");
    assert!(text.contains("SHA256:"), "{text}");
    assert!(text.contains(&known.display().to_string()), "{text}");
    assert!(!known.exists(), "a strict check records nothing");
    assert!(strict.healthy().await.is_err());

    // accept-new: recorded, and trusted from then on by a strict check.
    let accepting = Ssh::new("r", sshd.target(known.clone(), HostKeys::AcceptNew), None);
    assert!(run(&accepting, &ws, "true").await.success());
    let recorded = std::fs::read_to_string(&known).unwrap();
    let recorded: Vec<&str> = recorded.lines().filter(|l| !l.is_empty()).collect();
    let host_key = std::fs::read_to_string(sshd.path("hostkey.pub")).unwrap();
    let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    assert_eq!(
        recorded,
        [format!("[127.0.0.1]:{} {}", sshd.port, host_key.join(" "))]
    );
    let strict = Ssh::new("r", sshd.target(known, HostKeys::Strict), None);
    assert!(run(&strict, &ws, "true").await.success());
}

#[tokio::test]
async fn a_changed_host_key_is_refused_even_under_accept_new() {
    let sshd = Sshd::start();
    let scratch = tempfile::tempdir().unwrap();
    keygen(&scratch.path().join("impostor"));
    let impostor = std::fs::read_to_string(scratch.path().join("impostor.pub")).unwrap();
    let impostor: Vec<&str> = impostor.split_whitespace().take(2).collect();
    let known = scratch.path().join("known_hosts");
    let line = format!("[127.0.0.1]:{} {}\n", sshd.port, impostor.join(" "));
    std::fs::write(&known, format!("# header\n{line}")).unwrap();
    let ws = Workspace::elsewhere(scratch.path());
    for host_keys in [HostKeys::Strict, HostKeys::AcceptNew] {
        let ssh = Ssh::new("r", sshd.target(known.clone(), host_keys), None);
        let err = ssh
            .run(&ws, &request("true"), None, &CancellationToken::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ComputerError::Ssh(SshError::ChangedHostKey { .. })),
            "{host_keys:?}: {err}"
        );
        assert!(err.to_string().contains("differs"), "{err}");
    }
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        format!("# header\n{line}")
    );
}

#[tokio::test]
async fn a_dead_or_silent_host_is_an_error_not_a_hang() {
    let mut sshd = Sshd::start();
    let scratch = tempfile::tempdir().unwrap();
    let ws = Workspace::elsewhere(scratch.path());
    let ssh = Ssh::new("r", sshd.target(sshd.known_hosts(), HostKeys::Strict), None);
    assert!(run(&ssh, &ws, "true").await.success());
    sshd.kill();
    // A new connection to the dead host: refused at once.
    let dead = Ssh::new("r", sshd.target(sshd.known_hosts(), HostKeys::Strict), None);
    let err = tokio::time::timeout(
        PATIENCE,
        dead.run(&ws, &request("true"), None, &CancellationToken::new()),
    )
    .await
    .expect("no hang")
    .unwrap_err();
    assert!(
        matches!(err, ComputerError::Ssh(SshError::Connect { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains("cannot connect to 127.0.0.1"),
        "{err}"
    );
    assert!(dead.healthy().await.is_err());

    // A host that accepts the connection and never answers: the connect timeout.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut target = sshd.target(sshd.known_hosts(), HostKeys::Strict);
    target.port = port;
    target.connect_timeout = Duration::from_secs(1);
    let silent = Ssh::new("r", target, None);
    let err = tokio::time::timeout(
        PATIENCE,
        silent.run(&ws, &request("true"), None, &CancellationToken::new()),
    )
    .await
    .expect("no hang")
    .unwrap_err();
    assert!(err.to_string().contains("no answer"), "{err}");
    drop(listener);
}

#[tokio::test]
async fn a_wrong_client_key_is_refused_with_who_was_refused() {
    let sshd = Sshd::start();
    let scratch = tempfile::tempdir().unwrap();
    keygen(&scratch.path().join("stranger"));
    let mut target = sshd.target(sshd.known_hosts(), HostKeys::Strict);
    target.login = Login::KeyFile(scratch.path().join("stranger"));
    let ssh = Ssh::new("r", target, None);
    let err = ssh
        .run(
            &Workspace::elsewhere(scratch.path()),
            &request("true"),
            None,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ComputerError::Ssh(SshError::Auth { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("stranger"), "{err}");
}

#[test]
fn run_once_meets_a_playbook_goal_on_an_ssh_computer() {
    let sshd = Sshd::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    cli::git(dir, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    let remote_work = dir.join("remote-work");
    let company = dir.join("company");
    std::fs::create_dir_all(&company).unwrap();
    let yaml = r#"apiVersion: proto.dev/v1alpha1
kind: Company
metadata: {name: small}
spec:
  mission: Test.
  ceo: ceo
  writeback: {author: {name: proto-bot, email: bot@example.com}}
---
apiVersion: proto.dev/v1alpha1
kind: Agent
metadata: {name: ceo}
spec: {title: CEO, description: Runs it., prompt: Run it., tools: [Read, Write, Bash]}
---
apiVersion: proto.dev/v1alpha1
kind: Computer
metadata: {name: faraway}
spec:
  ssh: {host: 127.0.0.1, port: PORT, user: USER, identityFile: 'KEY', knownHosts: 'KNOWN'}
  workdir: 'WORK'
---
apiVersion: proto.dev/v1alpha1
kind: Product
metadata: {name: app}
spec: {description: A product., lead: ceo, repo: {url: '../app.git', branch: main}}
---
apiVersion: proto.dev/v1alpha1
kind: Goal
metadata: {name: noted}
spec:
  product: app
  owner: ceo
  description: noted.
  check: {file: {path: notes.txt, matches: ran}}
  playbook:
    - write: {path: notes.txt, content: "hello\n"}
    - run: "echo \"ran in $PWD\" >> notes.txt"
    - commit: {message: "Take notes"}
"#
    .replace("PORT", &sshd.port.to_string())
    .replace("USER", &whoami())
    .replace("KEY", &sshd.path("clientkey").display().to_string())
    .replace("KNOWN", &sshd.known_hosts().display().to_string())
    .replace("WORK", &remote_work.display().to_string());
    std::fs::write(company.join("company.yaml"), yaml).unwrap();
    cli::git(&company, &["init", "-q", "-b", "main"]);
    cli::git(&company, &["add", "-A"]);
    cli::git(&company, &["commit", "-q", "-m", "Declare the company"]);
    let state = dir.join("state");
    let out = cli::run_command(dir, &company, &state).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", cli::text(&out));
    let goals = cli::get_json(dir, &state, "goals");
    let noted = goals
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "noted")
        .unwrap();
    assert_eq!(noted["reason"], "CheckPassed", "{noted}");
    let app = dir.join("app.git");
    let notes = cli::git(&app, &["show", "main:notes.txt"]);
    let workspace = std::fs::canonicalize(&remote_work).unwrap().join("noted");
    assert!(
        notes.starts_with(&format!("hello\nran in {}", workspace.display())),
        "{notes}"
    );
    assert_eq!(
        cli::git(&app, &["log", "-1", "--format=%cn|%s", "main"]).trim(),
        "proto-bot|Take notes"
    );
    // The work was done in the SSH computer's workdir, not the controller's.
    assert!(remote_work.is_dir());
    assert!(!state.join("work").join("noted").exists());
}

#[tokio::test]
async fn commands_and_files_share_one_pooled_connection() {
    let (sshd, ssh, ws, _scratch) = setup();
    for n in 0..5 {
        assert!(run(&ssh, &ws, &format!("echo {n} > f{n}")).await.success());
        assert!(ssh.read(&ws, &format!("f{n}")).await.unwrap().is_some());
    }
    // A task's computer (another marker) rides the same connection.
    let task = ssh.marked("task-1".into());
    assert!(run(&task, &ws, "true").await.success());
    let log = std::fs::read_to_string(sshd.path("sshd.log")).unwrap();
    assert_eq!(log.matches("Accepted publickey").count(), 1, "{log}");
}

#[tokio::test]
async fn an_abandoned_run_stops_its_remote_process_group() {
    let (_sshd, ssh, ws, _scratch) = setup();
    let req = request("sleep 300 & echo $! > bg.pid; wait");
    // The run's future is dropped once the command is under way.
    let cancel = CancellationToken::new();
    tokio::select! {
        _ = ssh.run(&ws, &req, None, &cancel) => {
            panic!("the command cannot have ended by itself")
        }
        _ = wait_for_file(&ssh, &ws, "bg.pid") => {}
    }
    let pid = wait_for_file(&ssh, &ws, "bg.pid").await;
    // Stopped in the background, with the grace: waited for, boundedly.
    let deadline = Instant::now() + PATIENCE;
    while alive(&ssh, &ws, &pid).await {
        assert!(Instant::now() < deadline, "{pid} still runs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_dropped_connection_is_made_again() {
    let (sshd, ssh, ws, _scratch) = setup();
    assert!(run(&ssh, &ws, "true").await.success());
    // The server's side of the connection dies; the listener lives on.
    let sessions = sshd::descendants(sshd.child.id());
    assert!(!sessions.is_empty());
    for pid in sessions {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let again = run(&ssh, &ws, "echo again").await;
    assert_eq!(again.stdout, "again\n");
    assert!(ssh.read(&ws, "nothing-here").await.unwrap().is_none());
    let log = std::fs::read_to_string(sshd.path("sshd.log")).unwrap();
    assert_eq!(log.matches("Accepted publickey").count(), 2, "{log}");
}

#[tokio::test]
async fn large_files_and_outputs_arrive_whole() {
    let (_sshd, ssh, ws, _scratch) = setup();
    let content: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    ssh.write(&ws, "big.bin", &content).await.unwrap();
    assert_eq!(std::fs::read(ws.root().join("big.bin")).unwrap(), content);
    assert_eq!(ssh.read(&ws, "big.bin").await.unwrap().unwrap(), content);

    let (sender, mut receiver) = mpsc::unbounded_channel();
    let out = ssh
        .run(
            &ws,
            &request("seq 1 100000"),
            Some(sender),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    let expected: String = (1..=100_000).map(|n| format!("{n}\n")).collect();
    let mut streamed = String::new();
    while let Some(Output::Stdout(text)) = receiver.recv().await {
        streamed.push_str(&text);
    }
    assert_eq!(streamed, expected);
    // The outcome keeps the last 64 KiB.
    assert_eq!(out.stdout.len(), 64 * 1024);
    assert!(expected.ends_with(&out.stdout));
}

#[tokio::test]
async fn a_command_whose_connection_drops_is_stopped_over_a_new_one() {
    let (sshd, ssh, ws, _scratch) = setup();
    let req = request("sleep 300 & echo $! > bg.pid; echo $$ > sh.pid; wait");
    let cancel = CancellationToken::new();
    let running = ssh.run(&ws, &req, None, &cancel);
    let dropping = async {
        wait_for_file(&ssh, &ws, "sh.pid").await;
        // Only the server's processes die: the command itself lives on, orphaned.
        for pid in sshd::descendants(sshd.child.id()) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sshd" {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    };
    let (ran, ()) = tokio::join!(running, dropping);
    let err = ran.unwrap_err();
    assert!(err.to_string().contains("connection dropped"), "{err}");
    for file in ["bg.pid", "sh.pid"] {
        let pid = wait_for_file(&ssh, &ws, file).await;
        assert!(!alive(&ssh, &ws, &pid).await, "{file} {pid} still runs");
    }
}

/// `tool` called with `input` on the SSH computer, as an agent's call runs it.
async fn tool(ssh: &Ssh, ws: &Workspace, name: &str, input: serde_json::Value) -> String {
    let author = Identity {
        name: "ada".into(),
        email: "ada@example.com".into(),
    };
    let cancel = CancellationToken::new();
    let ctx = proto::tools::ToolContext {
        computer: ssh,
        workspace: ws,
        cancel: &cancel,
        agent: "ada",
        author: &author,
        planning_file: None,
        step: None,
    };
    let out = proto::tools::builtin(name)
        .unwrap()
        .run(&input, &ctx)
        .await
        .unwrap();
    assert!(!out.is_error, "{name}: {}", out.content);
    out.content
}

#[tokio::test]
async fn grep_and_glob_search_the_remote_workspace_not_this_hosts() {
    // The server's sessions see a tmpfs over `hidden`: the remote's files there are not
    // this host's, and this host's are not the remote's.
    let scratch = tempfile::tempdir().unwrap();
    let hidden = scratch.path().join("hidden");
    std::fs::create_dir(&hidden).unwrap();
    let sshd = Sshd::start_hiding(&hidden);
    let ssh = sshd.computer(&scratch.path().join("work"));
    let root = hidden.join("ws");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("host.rs"), "fn only_on_the_host() {}\n").unwrap();
    let ws = Workspace::elsewhere(&root);
    let made = run(
        &ssh,
        // The workspace is made on the remote from the folder above it.
        &Workspace::elsewhere(&hidden),
        &format!(
            "mkdir -p {r}/src {r}/target && cd {r} && git init -q . && \
             printf 'target/\\n*.log\\n' > .gitignore && \
             printf 'fn main() {{\\n    let answer = 42;\\n    println!(\"{{answer}}\");\\n}}\\n' > src/main.rs && \
             printf 'pub fn Answer() {{}}\\n' > src/lib.rs && \
             printf 'answer = 1\\n' > notes.log && printf 'answer\\n' > target/out.rs && \
             printf 'const ANSWER = 1;\\n' > src/app.js",
            r = root.display()
        ),
    )
    .await;
    assert!(made.success(), "{}", made.summary());
    assert!(
        !root.join("src").exists(),
        "the remote's files are not this host's"
    );

    let globbed = tool(&ssh, &ws, "Glob", serde_json::json!({"pattern": "**/*.rs"})).await;
    let mut listed: Vec<&str> = globbed.lines().collect();
    listed.sort();
    assert_eq!(listed, ["src/lib.rs", "src/main.rs"], "{globbed}");
    let under = tool(
        &ssh,
        &ws,
        "Glob",
        serde_json::json!({"pattern": "*.js", "path": "src"}),
    )
    .await;
    assert_eq!(under, "src/app.js");
    assert_eq!(
        tool(&ssh, &ws, "Glob", serde_json::json!({"pattern": "host.rs"})).await,
        "No files found"
    );

    let files = tool(
        &ssh,
        &ws,
        "Grep",
        serde_json::json!({"pattern": "answer", "-i": true}),
    )
    .await;
    let mut found: Vec<&str> = files.lines().skip(1).collect();
    found.sort();
    assert!(files.starts_with("Found 3 files"), "{files}");
    assert_eq!(
        found,
        ["src/app.js", "src/lib.rs", "src/main.rs"],
        "{files}"
    );
    let content = tool(
        &ssh,
        &ws,
        "Grep",
        serde_json::json!({"pattern": "answer", "output_mode": "content", "-B": 1, "glob": "*.rs"}),
    )
    .await;
    assert_eq!(
        content,
        "src/main.rs-1-fn main() {\nsrc/main.rs:2:    let answer = 42;\nsrc/main.rs:3:    println!(\"{answer}\");"
    );
    let counted = tool(
        &ssh,
        &ws,
        "Grep",
        serde_json::json!({"pattern": "answer", "output_mode": "count", "type": "rust", "-i": true}),
    )
    .await;
    assert_eq!(
        counted,
        "src/lib.rs:1\nsrc/main.rs:2\n\nFound 3 matching lines across 2 files"
    );
    assert_eq!(
        tool(
            &ssh,
            &ws,
            "Grep",
            serde_json::json!({"pattern": "only_on_the_host"})
        )
        .await,
        "No files found"
    );
    // A bad pattern is refused as this host refuses it.
    let cancel = CancellationToken::new();
    let author = Identity {
        name: "ada".into(),
        email: "ada@example.com".into(),
    };
    let ctx = proto::tools::ToolContext {
        computer: &ssh,
        workspace: &ws,
        cancel: &cancel,
        agent: "ada",
        author: &author,
        planning_file: None,
        step: None,
    };
    let refused = proto::tools::builtin("Grep")
        .unwrap()
        .run(&serde_json::json!({"pattern": "("}), &ctx)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, proto::tools::ToolError::InvalidInput { ref field, .. } if field == "pattern"),
        "{refused}"
    );
}

/// The `run:` step (or `Bash` command) whose computer loses its sshd: it leaves `started`
/// in the workdir of the computer it runs on, then takes a while.
const SLOW_STEP: &str = "touch ../started && sleep 4 && echo \"ran in $PWD\" >> notes.txt";

/// A company with two SSH computers, `east` and `west` (one server each, workspaces in
/// `<name>-work`), a product served by `git daemon`, and the goal `noted` (notes.txt says
/// `ran`) met by `work`: a playbook, or the model of `models`.
fn two_computer_company(
    dir: &Path,
    servers: &[Sshd; 2],
    daemon: u16,
    models: &str,
    work: &str,
) -> std::path::PathBuf {
    let computer = |name: &str, sshd: &Sshd| {
        format!(
            "apiVersion: proto.dev/v1alpha1\nkind: Computer\nmetadata: {{name: {name}}}\nspec:\n  \
             ssh: {{host: 127.0.0.1, port: {port}, user: {user}, identityFile: '{key}', knownHosts: '{known}'}}\n  \
             workdir: '{work}'\n---\n",
            port = sshd.port,
            user = whoami(),
            key = sshd.path("clientkey").display(),
            known = sshd.known_hosts().display(),
            work = dir.join(format!("{name}-work")).display(),
        )
    };
    let yaml = format!(
        r#"apiVersion: proto.dev/v1alpha1
kind: Company
metadata: {{name: small}}
spec:
  mission: Test.
  ceo: ceo
  writeback: {{author: {{name: proto-bot, email: bot@example.com}}}}
{models}---
apiVersion: proto.dev/v1alpha1
kind: Agent
metadata: {{name: ceo}}
spec: {{title: CEO, model: sonnet, description: Runs it., prompt: Run it., tools: [Read, Write, Bash]}}
---
{east}{west}apiVersion: proto.dev/v1alpha1
kind: Product
metadata: {{name: app}}
spec: {{description: A product., lead: ceo, repo: {{url: 'git://127.0.0.1:{daemon}/app.git', branch: main}}}}
---
apiVersion: proto.dev/v1alpha1
kind: Goal
metadata: {{name: noted}}
spec:
  product: app
  owner: ceo
  description: notes.txt says where the work ran.
  check: {{file: {{path: notes.txt, matches: ran}}}}
{work}"#,
        east = computer("east", &servers[0]),
        west = computer("west", &servers[1]),
    );
    let company = dir.join("company");
    std::fs::create_dir_all(&company).unwrap();
    std::fs::write(company.join("company.yaml"), yaml).unwrap();
    cli::git(&company, &["init", "-q", "-b", "main"]);
    cli::git(&company, &["add", "-A"]);
    cli::git(&company, &["commit", "-q", "-m", "Declare the company"]);
    company
}

/// How a run with one computer killed under it ended.
struct Failover {
    dir: tempfile::TempDir,
    state: std::path::PathBuf,
    app: std::path::PathBuf,
    /// The computer killed, and the other.
    first: &'static str,
    other: &'static str,
    output: String,
}

/// `proto run --once` of the two-computer company (`models` and `work` as there, `replay`
/// the model's recorded turns if any); whichever computer the slow step starts on loses its
/// sshd (sessions and listener, SIGKILL) while the step's command runs.
fn run_with_a_computer_killed(models: &str, work: &str, replay: &[String]) -> Failover {
    let mut servers = [Sshd::start(), Sshd::start()];
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let served = dir.join("served");
    std::fs::create_dir_all(&served).unwrap();
    cli::git(&served, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    let daemon = git_daemon::Daemon::start(&served);
    let company = two_computer_company(dir, &servers, daemon.port, models, work);
    if !replay.is_empty() {
        std::fs::write(company.join("replay.jsonl"), replay.join("\n") + "\n").unwrap();
        cli::git(&company, &["add", "-A"]);
        cli::git(&company, &["commit", "-q", "-m", "The model's turns"]);
    }
    let state = dir.join("state");
    let log = dir.join("run.log");
    let mut run = cli::run_command(dir, &company, &state)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("run.err")).unwrap())
        .spawn()
        .unwrap();

    let names = ["east", "west"];
    let deadline = Instant::now() + PATIENCE;
    let first = loop {
        if let Some(n) = (0..2).find(|&n| dir.join(format!("{}-work/started", names[n])).exists()) {
            break n;
        }
        if Instant::now() > deadline {
            let _ = run.kill();
            panic!("the step never started");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    servers[first].kill_all();

    let deadline = Instant::now() + PATIENCE * 4;
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = run.kill();
            panic!("the run never ended");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = format!(
        "{}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default(),
        std::fs::read_to_string(dir.join("run.err")).unwrap_or_default()
    );
    assert_eq!(status.code(), Some(0), "{output}");
    drop(daemon);
    Failover {
        state,
        app: served.join("app.git"),
        first: names[first],
        other: names[1 - first],
        output,
        dir: tmp,
    }
}

impl Failover {
    /// The goal was met once, by work done on the computer that answered, in one counted
    /// attempt; the lost computer is unhealthy, with the reason.
    fn assert_moved_and_delivered_once(&self) -> serde_json::Value {
        let dir = self.dir.path();
        let goals = cli::get_json(dir, &self.state, "goals");
        let noted = goals
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "noted")
            .unwrap();
        assert_eq!(noted["reason"], "CheckPassed", "{noted}\n{}", self.output);
        let notes = cli::git(&self.app, &["show", "main:notes.txt"]);
        let moved_to = std::fs::canonicalize(dir.join(format!("{}-work", self.other))).unwrap();
        assert!(
            notes.starts_with(&format!("hello\nran in {}/noted", moved_to.display())),
            "{notes}"
        );
        assert_eq!(notes.matches("ran in").count(), 1, "{notes}");
        assert_eq!(
            cli::git(&self.app, &["log", "--format=%an", "main"])
                .lines()
                .count(),
            1,
            "exactly one commit of the work"
        );
        let tasks = cli::get_json(dir, &self.state, "tasks");
        let task = &tasks.as_array().unwrap()[0];
        assert_eq!(task["state"], "succeeded", "{task}");
        assert_eq!(task["computer"], self.other, "{task}");
        assert_eq!(
            task["attempts"], 1,
            "the lost attempt is not counted: {task}"
        );
        let computers = cli::get_json(dir, &self.state, "computers");
        let lost = computers
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == self.first)
            .unwrap()
            .clone();
        assert_eq!(lost["healthy"], false, "{lost}");
        assert_eq!(lost["kind"], "ssh", "{lost}");
        assert!(
            lost["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{lost}"
        );
        lost
    }
}

#[test]
fn a_task_whose_sshd_dies_mid_command_moves_to_the_other_computer_and_is_delivered_once() {
    let playbook = format!(
        "  playbook:\n    - write: {{path: notes.txt, content: \"hello\\n\"}}\n    - run: {}\n    - commit: {{message: \"Take notes\"}}\n",
        serde_json::to_string(SLOW_STEP).unwrap()
    );
    let run = run_with_a_computer_killed("", &playbook, &[]);
    let lost = run.assert_moved_and_delivered_once();
    let (dir, state) = (run.dir.path(), run.state.to_str().unwrap());
    assert_eq!(
        cli::git(&run.app, &["log", "--format=%cn|%s", "main"]).trim(),
        "proto-bot|Take notes"
    );
    let described = cli::proto(
        dir,
        &[
            "describe",
            "computer",
            run.first,
            "-o",
            "json",
            "--state-dir",
            state,
        ],
    );
    let described: serde_json::Value = serde_json::from_slice(&described.stdout).unwrap();
    assert_eq!(described["computer"], lost, "{described}");
    assert_eq!(described["tasks"], serde_json::json!([]), "{described}");
    let table = cli::text(&cli::proto(
        dir,
        &["get", "computers", "--state-dir", state],
    ));
    assert!(table.contains("RUNNING/CAPACITY"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(run.other) && l.contains("true") && l.contains("0/1")),
        "{table}"
    );
}

#[test]
fn an_agent_whose_computer_is_lost_resumes_from_its_journal_on_the_other() {
    // Three recorded turns, played once each: a resumed session that asked the model again
    // for a turn its journal holds would run out of them, or skip the command.
    let turns = [
        serde_json::json!({"response": {"content": [{"type": "tool_use", "id": "t1", "name": "Write", "input": {"file_path": "notes.txt", "content": "hello\n"}}], "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 5}}}),
        serde_json::json!({"response": {"content": [{"type": "tool_use", "id": "t2", "name": "Bash", "input": {"command": SLOW_STEP}}], "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 5}}}),
        serde_json::json!({"response": {"content": [{"type": "text", "text": "Noted."}], "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 2}}}),
    ]
    .map(|t| t.to_string());
    let run = run_with_a_computer_killed(
        "  models:\n    providers: [{name: recorded, type: replay, file: replay.jsonl}]\n",
        "",
        &turns,
    );
    run.assert_moved_and_delivered_once();
}

/// Hooks run where the workspace is: on the SSH computer, in its workspace, with the event
/// on stdin (the remote shell sees the SSH session; the controller's keys never reach it).
#[tokio::test]
async fn hooks_run_on_the_remote_in_its_workspace() {
    use proto::policy::hooks::{HookInput, Session, Site, run_hooks};
    use proto::spec::claude::{Hook, HookMatcher};
    let (_sshd, ssh, ws, _scratch) = setup();
    let hook = Hook {
        kind: "command".into(),
        command: Some(
            "{ pwd -P; cat; echo; echo \"ssh=${SSH_CONNECTION:+yes} key=${ANTHROPIC_API_KEY:-none}\"; } > seen.txt"
                .into(),
        ),
        prompt: None,
        url: None,
        timeout: None,
        fail_closed: false,
    };
    let hooks = BTreeMap::from([(
        "PreToolUse".to_string(),
        vec![HookMatcher {
            matcher: Some("Write".into()),
            hooks: vec![hook],
        }],
    )]);
    let session = Session {
        session_id: "task-7".into(),
        transcript_path: ws.root().join("t.jsonl"),
        cwd: ws.root().to_path_buf(),
    };
    let input = HookInput::pre_tool_use(&session, "Write", &serde_json::json!({"file_path": "a"}));
    let cancel = CancellationToken::new();
    let site = Site {
        computer: &ssh,
        workspace: &ws,
        cancel: &cancel,
    };
    let out = run_hooks(&site, &hooks, &input).await;
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    let seen = String::from_utf8(ssh.read(&ws, "seen.txt").await.unwrap().unwrap()).unwrap();
    let mut lines = seen.lines();
    assert_eq!(
        Path::new(lines.next().unwrap()),
        std::fs::canonicalize(ws.root()).unwrap()
    );
    let event: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(event["hook_event_name"], "PreToolUse");
    assert_eq!(event["tool_name"], "Write");
    assert_eq!(lines.next(), Some("ssh=yes key=none"));
}

/// `attach` on the remote: a shell reading lines answers through the channel, in the
/// workspace and with the request's variables; its stderr is kept without the wrapper's
/// group line; dropping its handle stops the whole remote group.
#[tokio::test]
async fn an_attached_remote_process_talks_through_the_channel_and_dies_with_its_handle() {
    let (_sshd, ssh, ws, _scratch) = setup();
    let script = "sleep 30 & echo $! > bg.pid; echo started >&2; \
                  while read line; do echo \"$line from $PWD with $GREETING\"; done";
    let request = AttachRequest {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        env: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
        origin: Origin::Agent,
    };
    let mut attached = ssh.attach(Some(&ws), &request).await.unwrap();
    let mut stdout = BufReader::new(attached.stdout);
    let mut line = String::new();
    for word in ["ping", "pong"] {
        attached
            .stdin
            .write_all(format!("{word}\n").as_bytes())
            .await
            .unwrap();
        attached.stdin.flush().await.unwrap();
        line.clear();
        stdout.read_line(&mut line).await.unwrap();
        assert_eq!(
            line.trim(),
            format!("{word} from {} with hello", ws.root().display())
        );
    }
    let background = wait_for_file(&ssh, &ws, "bg.pid").await;
    assert!(attached.process.running());
    // Its stderr comes on the channel beside the output, in its own time.
    let deadline = Instant::now() + PATIENCE;
    while attached.process.stderr().trim() != "started" {
        assert!(Instant::now() < deadline, "{:?}", attached.process.stderr());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    drop(attached.process);
    let deadline = Instant::now() + PATIENCE;
    while alive(&ssh, &ws, &background).await {
        assert!(
            Instant::now() < deadline,
            "{background} outlived its handle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An agent on an SSH computer uses a stdio MCP server (the real npm server-filesystem),
/// which runs on the remote in the task's workspace: the file its tool writes is in the
/// remote workspace, which this host cannot see (the server's sessions have a `tmpfs` over
/// the remote workdir), and it is delivered from there.
#[test]
fn an_agent_on_an_ssh_computer_uses_a_stdio_mcp_server_started_there() {
    let npm = std::env::var_os("PROTO_TEST_NPM")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/npm"));
    let server = npm.join("node_modules/.bin/mcp-server-filesystem");
    assert!(
        server.exists(),
        "run scripts/test.sh to install the npm MCP servers"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let remote_work = dir.join("remote-work");
    std::fs::create_dir_all(&remote_work).unwrap();
    let sshd = Sshd::start_hiding(&remote_work);
    let goal = "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: served}\nspec:\n  product: app\n  owner: ceo\n  description: mcp.txt was written by the MCP server.\n  check: {file: {path: mcp.txt, matches: remote}}\n";
    let company = company::small_company(dir, goal);
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    let computer = format!(
        "spec: {{ssh: {{host: 127.0.0.1, port: {}, user: {}, identityFile: '{}', knownHosts: '{}'}}, workdir: '{}'}}\n",
        sshd.port,
        whoami(),
        sshd.path("clientkey").display(),
        sshd.known_hosts().display(),
        remote_work.display()
    );
    let yaml = yaml
        .replace(
            "  mission: Test.\n",
            "  mission: Test.\n  models:\n    providers: [{name: recorded, type: replay, file: replay.jsonl}]\n",
        )
        .replace(
            "tools: [Read, Write, Edit, Bash, Git]",
            "tools: [Read, mcp__files]",
        )
        .replace("spec: {local: {}, capacity: 2}\n", &computer);
    std::fs::write(company.join("company.yaml"), yaml).unwrap();
    std::fs::write(
        company.join(".mcp.json"),
        serde_json::json!({"mcpServers": {"files": {"command": server.to_str().unwrap(), "args": ["."]}}}).to_string(),
    )
    .unwrap();
    let turns = [
        company::recorded_tool(
            "w",
            "mcp__files__write_file",
            serde_json::json!({"path": "mcp.txt", "content": "written on the remote\n"}),
        ),
        company::recorded_text("done"),
    ];
    std::fs::write(company.join("replay.jsonl"), turns.join("\n") + "\n").unwrap();
    cli::git(&company, &["add", "-A"]);
    cli::git(
        &company,
        &["commit", "-q", "-m", "An MCP server on the SSH computer"],
    );

    let state = dir.join("state");
    let out = cli::run_command(dir, &company, &state).output().unwrap();
    let all = cli::text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let goals = cli::get_json(dir, &state, "goals");
    assert_eq!(goals[0]["reason"], "CheckPassed", "{goals:#} {all}");
    let delivered = cli::git(&dir.join("app.git"), &["show", "main:mcp.txt"]);
    assert_eq!(delivered.trim(), "written on the remote");
    // The workspace was on the remote only: this host sees nothing of it.
    assert_eq!(std::fs::read_dir(&remote_work).unwrap().count(), 0);
}
