//! What the end-to-end tests share: running the real `proto` binary with an isolated HOME,
//! real `git` with a fixed identity, and small waits and readers.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_proto")
}

/// Runs `proto` with an isolated HOME; returns the output.
pub fn proto(home: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("HOME", home)
        .env_remove("ANTHROPIC_API_KEY")
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
}

/// `proto get WHAT --state-dir STATE -o json`, parsed.
pub fn get_json(home: &Path, state: &Path, what: &str) -> serde_json::Value {
    let out = proto(
        home,
        &[
            "get",
            what,
            "--state-dir",
            state.to_str().unwrap(),
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `proto run COMPANY --once --state-dir STATE`, not yet started, with output piped. The
/// mock model's key variable (`PROTO_TEST_KEY`) is set; the real one is not passed on.
pub fn run_command(home: &Path, company: &Path, state: &Path) -> Command {
    let mut command = Command::new(bin());
    command
        .args([
            "run",
            company.to_str().unwrap(),
            "--once",
            "--state-dir",
            state.to_str().unwrap(),
        ])
        .env("HOME", home)
        .env("PROTO_TEST_KEY", "sk-test")
        .env_remove("ANTHROPIC_API_KEY")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `git` in `dir` as a fixed author, with no user or system configuration (and `main`
/// as the first branch); panics with stderr when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = git_output(dir, args);
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// [`git`] without the check, for commands expected to fail.
pub fn git_output(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Founder")
        .env("GIT_AUTHOR_EMAIL", "founder@example.com")
        .env("GIT_COMMITTER_NAME", "Founder")
        .env("GIT_COMMITTER_EMAIL", "founder@example.com")
        .output()
        .unwrap()
}

/// Commits everything in `dir`; returns the new commit's id.
pub fn commit_all(dir: &Path, message: &str) -> String {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

/// Writes `content` to `root/path`, creating folders.
pub fn write(root: &Path, path: &str, content: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, content).unwrap();
}

/// Standard output then standard error, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills the controller `child` with SIGKILL as soon as an agent's command has started in one
/// of the workspaces under `work` (the command touches `marker` first), and reaps it.
pub fn kill_once_marked(child: &mut Child, work: &Path) {
    wait_for(
        "the agent's command to start",
        Duration::from_secs(60),
        || {
            std::fs::read_dir(work)
                .ok()
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .any(|e| e.path().join("marker").exists())
        },
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
}

/// How many processes now running have `marker` on their command line (a test's commands
/// carry a marker of their own, so nothing else is counted).
pub fn processes_naming(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmdline| String::from_utf8_lossy(cmdline).contains(marker))
        .count()
}

/// `git` in a repository the controller also writes (its record commits): retried while
/// the controller holds the index or a ref locked; panics on any other failure.
pub fn git_beside_the_controller(dir: &Path, args: &[&str]) {
    for _ in 0..500 {
        let out = git_output(dir, args);
        if out.status.success() {
            return;
        }
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains(".lock") || said.contains("cannot lock ref"),
            "git {args:?}: {said}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("git {args:?}: the repository stayed locked");
}
