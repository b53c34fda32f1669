//! How fast the kill switch holds: a watching `proto run` with 50 tasks at once — half run a
//! real long command, half stream a model turn from a local server speaking the Anthropic
//! SSE format that never ends its turn — then `proto stop`, timed from the moment the
//! command is started to the moment the last of the tasks' processes is gone and the last
//! model stream is closed. Then `proto resume`, wait until all 50 run again, and stop again:
//! `PROTO_KILL_ROUNDS` rounds (default 10). Prints p50 / p99 / max; the goal is p99 ≤ 1 s.
//!
//! Run with `cargo bench --bench kill_switch`. `cargo test --all-targets` runs it without
//! `--bench` with 6 tasks and 2 rounds, so it stays working.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly by design

#[path = "../tests/support/cli.rs"]
mod cli;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cli::{git, processes_naming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server that answers every request with the start of a streamed message and then pings
/// forever: a model turn that is still streaming when the stop comes. It counts the streams
/// open now.
struct EndlessModel {
    url: String,
    open: Arc<AtomicUsize>,
}

impl EndlessModel {
    fn start(runtime: &tokio::runtime::Runtime) -> EndlessModel {
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicUsize::new(0));
        let counter = open.clone();
        runtime.spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let open = counter.clone();
                tokio::spawn(async move {
                    // The request: headers, then as many body bytes as Content-Length says.
                    let mut request = Vec::new();
                    let mut buf = [0u8; 8192];
                    loop {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        if let Some(end) = find(&request, b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if request.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    open.fetch_add(1, Ordering::SeqCst);
                    let start = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n\
                        event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n\
                        event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
                    let mut alive = socket.write_all(start.as_bytes()).await.is_ok();
                    while alive {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let delta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"thinking \"}}\n\n";
                        alive = socket.write_all(delta.as_bytes()).await.is_ok()
                            && socket.flush().await.is_ok();
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        EndlessModel { url, open }
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A company of `commands` goals running a long command and `models` goals an agent works
/// with the endless model, on one computer with room for all.
fn company(
    dir: &Path,
    marker: &str,
    url: &str,
    commands: usize,
    models: usize,
) -> std::path::PathBuf {
    let company = dir.join("company");
    std::fs::create_dir_all(&company).unwrap();
    let mut yaml = format!(
        "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {{name: drill}}\nspec:\n  mission: Test.\n  ceo: ceo\n  models:\n    providers: [{{name: endless, type: anthropic, baseUrl: '{url}', apiKeyEnv: PROTO_BENCH_KEY}}]\n---\n\
         apiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {{name: ceo}}\nspec: {{title: CEO, model: sonnet, description: Runs it., prompt: Run it., tools: [Read, Write, Bash]}}\n---\n\
         apiVersion: proto.dev/v1alpha1\nkind: Product\nmetadata: {{name: app}}\nspec: {{description: The app., lead: ceo, repo: {{url: ../app.git, branch: main}}}}\n---\n\
         apiVersion: proto.dev/v1alpha1\nkind: Computer\nmetadata: {{name: here}}\nspec: {{local: {{}}, capacity: {}}}\n",
        commands + models
    );
    for n in 0..commands {
        yaml.push_str(&format!(
            "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: run{n}}}\nspec:\n  product: app\n  owner: ceo\n  description: run{n}.txt exists.\n  check: {{file: {{path: run{n}.txt}}}}\n  playbook:\n    - run: \"while true; do sleep 0.05; done # {marker}\"\n"
        ));
    }
    for n in 0..models {
        yaml.push_str(&format!(
            "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: model{n}}}\nspec:\n  product: app\n  owner: ceo\n  description: model{n}.txt exists.\n  check: {{file: {{path: model{n}.txt}}}}\n"
        ));
    }
    std::fs::write(company.join("company.yaml"), yaml).unwrap();
    git(&company, &["init", "-q", "-b", "main"]);
    git(&company, &["add", "-A"]);
    git(&company, &["commit", "-q", "-m", "a company for the drill"]);
    git(dir, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    company
}

fn proto(dir: &Path, args: &[&str]) {
    let out = Command::new(cli::bin())
        .args(args)
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", cli::text(&out));
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (commands, models, rounds) = if bench {
        let rounds = std::env::var("PROTO_KILL_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(10);
        (25, 25, rounds)
    } else {
        (3, 3, 2)
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let model = EndlessModel::start(&runtime);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let marker = format!("kill-switch-drill-{}", std::process::id());
    let company = company(dir, &marker, &model.url, commands, models);
    let state = dir.join("state");
    let state_arg = state.to_str().unwrap().to_string();
    let log = std::fs::File::create(dir.join("run.err")).unwrap();
    let mut controller: Child = Command::new(cli::bin())
        .args(["run", company.to_str().unwrap(), "--state-dir", &state_arg])
        .env("HOME", dir)
        .env("PROTO_BENCH_KEY", "sk-bench")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut times = Vec::new();
    for round in 0..rounds {
        let waiting = Instant::now();
        while !(processes_naming(&marker) >= commands && model.open() == models) {
            if waiting.elapsed() > Duration::from_secs(120) {
                let log = std::fs::read_to_string(dir.join("run.err")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "round {round}: {} of {commands} commands and {} of {models} streams run after two minutes; the controller's log ends:\n{}",
                    processes_naming(&marker),
                    model.open(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let started = Instant::now();
        proto(
            dir,
            &["stop", "--reason", "drill", "--state-dir", &state_arg],
        );
        while processes_naming(&marker) > 0 || model.open() > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "round {round}: {} processes and {} streams still there after a minute",
                processes_naming(&marker),
                model.open()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        times.push(started.elapsed());
        proto(dir, &["resume", "--state-dir", &state_arg]);
    }
    let _ = controller.kill();
    let _ = controller.wait();
    times.sort();
    println!(
        "kill_switch: {} tasks ({commands} commands, {models} model streams), {rounds} rounds: stop to the last process gone and the last stream closed  p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms  (goal: p99 <= 1000 ms: {})",
        commands + models,
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        if percentile(&times, 0.99) <= Duration::from_secs(1) {
            "met"
        } else {
            "NOT met"
        }
    );
}
