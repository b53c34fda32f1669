//! The SSH computer's overhead per command: a trivial command (`true`) through
//! `Computer::run` on the warm pooled connection, against the OpenSSH client's fresh login
//! per command (`ssh -o ControlMaster=no host true`), both against the same real `sshd`
//! the benchmark starts on 127.0.0.1 (with the remote shell's `~/.bashrc` masked, which
//! Debian's bash reads for every command sshd starts: what it does is the remote's cost, not
//! SSH's). Prints the mean per command of each and the ratio;
//! the goal is ≤ 5 ms per command on the pool.
//!
//! Run with `cargo bench --bench ssh`. `cargo test --all-targets` runs it without
//! `--bench` with a few commands of each, so it stays working.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly by design

#[path = "../tests/support/sshd.rs"]
mod sshd;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proto::computer::{Computer, Origin, RunRequest, Workspace};
use sshd::{Sshd, whoami};
use tokio_util::sync::CancellationToken;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (pooled_runs, fresh_runs) = if full { (500, 30) } else { (5, 2) };
    // The remote user's `~/.bashrc` is left out of both figures: see `start_plain_shell`.
    let sshd = Sshd::start_plain_shell();
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("ws");
    std::fs::create_dir(&root).unwrap();
    let ssh = sshd.computer(&scratch.path().join("work"));
    let ws = Workspace::elsewhere(&root);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let request = RunRequest {
        command: "true".into(),
        cwd: String::new(),
        env: BTreeMap::new(),
        timeout: Duration::from_secs(30),
        origin: Origin::Agent,
        stdin: None,
    };
    let cancel = CancellationToken::new();
    let pooled = runtime.block_on(async {
        // Warm: the connection is made, and the first exec channel opened.
        for _ in 0..3 {
            assert!(
                ssh.run(&ws, &request, None, &cancel)
                    .await
                    .unwrap()
                    .success()
            );
        }
        let started = Instant::now();
        for _ in 0..pooled_runs {
            let out = ssh.run(&ws, &request, None, &cancel).await.unwrap();
            assert!(out.success(), "{}", out.summary());
        }
        started.elapsed() / pooled_runs
    });

    let known = sshd.known_hosts();
    let started = Instant::now();
    for _ in 0..fresh_runs {
        let status = Command::new("ssh")
            .args(["-o", "ControlMaster=no", "-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .arg("-i")
            .arg(sshd.path("clientkey"))
            .args(["-p", &sshd.port.to_string()])
            .arg(format!("{}@127.0.0.1", whoami()))
            .arg("true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("the OpenSSH client runs (apt-get install openssh-client)");
        assert!(status.success(), "ssh {status}");
    }
    let fresh = started.elapsed() / fresh_runs;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "ssh: `true` through Computer::run on the warm pool: {:.2} ms per command ({pooled_runs} commands; goal ≤ 5 ms)",
        ms(pooled)
    );
    println!(
        "ssh: `ssh -o ControlMaster=no host true` (a fresh login each): {:.2} ms per command ({fresh_runs} commands)",
        ms(fresh)
    );
    println!(
        "ssh: the pool is {:.1}x faster (goal ≥ 50x)",
        fresh.as_secs_f64() / pooled.as_secs_f64().max(f64::EPSILON)
    );
}
