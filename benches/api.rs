//! The HTTP API under load (issue 16): a release `proto run --listen` on a loopback port,
//! watching a company of 10,000 resources whose trivial goals are being worked (capacity 1,
//! a few hundred queued behind the one running, thousands more waiting), while
//!
//! - 200 Server-Sent Events clients follow `/api/v1/events/stream` for the whole run;
//!   afterwards every client's event ids are compared with the store's events table over
//!   the same window: an id the store holds that a client never got is lost;
//! - reads arrive open-loop at 1,000 requests/s (a page of goals, one goal, a page of tasks,
//!   company, computers in turn) for a fixed time: each request's latency counts from when it was
//!   due, not from when a busy client got round to sending it, so a server that falls
//!   behind shows it;
//! - pushes reach it through a signed GitHub webhook: each commits one new goal to the
//!   company repository (a bare repository served as the payload's `owner/name`, watched
//!   with an hour between polls, so only the webhook makes it look) and times from the
//!   push to the goal's `TaskStarted` event. Pushed goals belong to a product of their own
//!   with its own computer, so they measure the way from push to dispatch, not the queue
//!   of trivial work.
//!
//! The controller's resident set (`VmRSS`, and its peak `VmHWM`) is read at its first task,
//! after a warm-up of the same work without the API load (the controller's own growth
//! while it writes its first status and record commits), and at the load's end; the
//! growth under the load is from the warm-up's end. Each figure is one line starting
//! `api:`, with its goal beside it. The load generator shares the machine with the
//! controller, so on a small or busy machine the figures carry its cost too.
//!
//! Run with `cargo bench --bench api`. Environment: `PROTO_API_SECONDS` (default 20),
//! `PROTO_API_WARMUP` (seconds, default 15), `PROTO_API_PUSHES` (default 10),
//! `PROTO_API_RATE` (reads per second, default 1,000) and `PROTO_API_CLIENTS` (event
//! streams, default 200): a run with few of both shows what the controller's memory does
//! with the same work and no API load. `cargo test --all-targets` runs it without
//! `--bench` on tiny sizes, so it stays working.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly by design

#[path = "../tests/support/cli.rs"]
mod cli;
#[path = "support/company.rs"]
mod company;
#[path = "support/measure.rs"]
mod measure;
#[path = "../tests/support/server.rs"]
mod server;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cli::git;
use company::{HEADER, company, goal_of};
use futures_util::StreamExt;
use measure::{first_event, memory, percentile, started_at};
use proto::store::EventKind;
use server::{Controller, TOKEN, examples, sign, take_events};
use tokio::sync::{Semaphore, watch};

/// What one run measures.
struct Size {
    resources: usize,
    /// Trivial goals queued at capacity 1: enough to keep a task running all along.
    trivial: usize,
    clients: usize,
    rate: f64,
    seconds: u64,
    /// The same work without the API load before it starts (see [`run`]).
    warmup: u64,
    pushes: usize,
}

/// The reads, in the order they are sent.
const READS: [&str; 5] = ["goals", "goal", "tasks", "company", "computers"];
/// Items per page of a list read.
const PAGE: usize = 100;
/// Requests in flight at most: past that a due request waits (and its wait counts).
const IN_FLIGHT: usize = 256;
/// How long the controller may take to apply a company of 10,000 resources.
const START: Duration = Duration::from_secs(300);
const WAIT: Duration = Duration::from_secs(120);
/// How long after the last read was due the load waits for answers.
const GRACE: Duration = Duration::from_secs(10);

fn number(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: {v:?} is not a number"))
    })
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let size = if full {
        let seconds = number("PROTO_API_SECONDS", 20);
        let warmup = number("PROTO_API_WARMUP", 15);
        Size {
            resources: 10_000,
            trivial: 300 + 25 * (seconds + warmup) as usize,
            clients: number("PROTO_API_CLIENTS", 200) as usize,
            rate: number("PROTO_API_RATE", 1000) as f64,
            seconds,
            warmup,
            pushes: number("PROTO_API_PUSHES", 10) as usize,
        }
    } else {
        println!("api: smoke run on tiny sizes (`cargo bench --bench api` for the figures)");
        Size {
            resources: 60,
            trivial: 20,
            clients: 4,
            rate: 50.0,
            seconds: 2,
            warmup: 1,
            pushes: 2,
        }
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(size));
}

/// The company, served as the bare repository `<dir>/<owner>/<name>.git` that GitHub's
/// example push payload names, and a clone of it to push from.
struct Served {
    url: String,
    work: PathBuf,
    payload: Vec<u8>,
    /// Names of the declared goals, for `/api/v1/goals/<name>`.
    goals: Vec<String>,
}

fn serve(dir: &Path, size: &Size) -> Served {
    let push = examples("push")
        .into_iter()
        .find(|p| p["ref"] == "refs/heads/master")
        .unwrap();
    let full_name = push["repository"]["full_name"]
        .as_str()
        .unwrap()
        .to_string();
    let (owner, name) = full_name.split_once('/').unwrap();
    let home = dir.join(owner);
    // company, ceo, product, computer, gate, and the pushes' product and computer = 7.
    let rest = size.resources - 7 - size.trivial;
    let agents = rest / 2;
    let waiting = rest - agents;
    let work = company(&home, 1, agents, waiting, size.trivial);
    std::fs::write(
        work.join("fresh.yaml"),
        format!(
            "{HEADER}\nkind: Product\nmetadata: {{name: fresh}}\nspec: {{description: What is pushed., lead: ceo, repo: {{url: ../fresh.git, branch: main}}, computers: {{matchLabels: {{role: push}}}}}}\n---\n{HEADER}\nkind: Computer\nmetadata: {{name: quick, labels: {{role: push}}}}\nspec: {{local: {{}}, capacity: 1}}\n"
        ),
    )
    .unwrap();
    cli::commit_all(&work, "A product for what is pushed");
    git(&home, &["init", "-q", "--bare", "-b", "main", "fresh.git"]);
    git(&work, &["branch", "-m", "main", "master"]);
    let bare = home.join(format!("{name}.git"));
    git(
        &home,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
    let goals = (0..size.trivial)
        .map(|i| format!("g{i}"))
        .chain((0..waiting).map(|i| format!("w{i}")))
        .collect();
    Served {
        url: format!("file://{}", bare.display()),
        work,
        payload: serde_json::to_vec(&push).unwrap(),
        goals,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()
        .unwrap()
}

fn last_event(conn: &rusqlite::Connection) -> i64 {
    conn.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))
        .unwrap()
}

/// How many tasks the engine has started.
fn dispatched(conn: &rusqlite::Connection) -> i64 {
    conn.query_row(
        "SELECT COUNT(*) FROM events WHERE kind = ?1",
        [EventKind::Dispatched.as_str()],
        |r| r.get(0),
    )
    .unwrap()
}

async fn run(size: Size) {
    let tmp = tempfile::Builder::new()
        .prefix("proto-api-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let served = serve(dir, &size);
    let state = dir.join("state");
    let t0 = Instant::now();
    let c = Controller::start(
        dir,
        Some(&served.url),
        &state,
        &["--branch", "master", "--poll", "1h"],
    );
    let pid = c.child.id();
    let http = client();

    // Ready (the first revision applied), and the trivial work under way.
    loop {
        let ready = http.get(c.url("/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(t0.elapsed() < START, "never ready:\n{}", c.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let conn = measure::store(dir);
    while dispatched(&conn) == 0 {
        assert!(t0.elapsed() < START, "no task started:\n{}", c.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "api: company of {} resources ready in {:.1} s ({} trivial goals at capacity 1, {} SSE clients, {} reads/s for {} s, {} pushes)",
        size.resources,
        t0.elapsed().as_secs_f64(),
        size.trivial,
        size.clients,
        size.rate,
        size.seconds,
        size.pushes
    );
    // The controller grows for seconds after its first task whatever the API does: its
    // first status of every goal, record commits and their pushes (measured: about 30 MiB
    // over 12 s with one client reading once a second, then flat). The load's growth is
    // counted from after that much of the same work without it.
    let rss_started = memory(pid, "VmRSS").unwrap();
    tokio::time::sleep(Duration::from_secs(size.warmup)).await;
    let rss_before = memory(pid, "VmRSS").unwrap();
    let peak_before = memory(pid, "VmHWM").unwrap();
    let tasks_before = dispatched(&conn);

    // The event stream's clients, each connected before the load starts.
    let start_id = last_event(&conn);
    let (end_tx, end_rx) = watch::channel(None::<i64>);
    let mut followers = Vec::new();
    let connections = futures_util::future::join_all((0..size.clients).map(|_| {
        http.get(c.url(&format!("/api/v1/events/stream?after={start_id}")))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(24 * 3600))
            .send()
    }))
    .await;
    for response in connections {
        let response = response.unwrap();
        assert_eq!(response.status(), 200);
        followers.push(tokio::spawn(follow(response, end_rx.clone())));
    }

    // The pushes, from a thread of their own (git and the store's polling block), during
    // the reads.
    let pushing = {
        let handle = tokio::runtime::Handle::current();
        let (work, payload, hook) = (
            served.work.clone(),
            served.payload.clone(),
            c.url("/hooks/github"),
        );
        let (dir, pushes) = (dir.to_path_buf(), size.pushes);
        std::thread::spawn(move || push_samples(&handle, &dir, &work, &hook, &payload, pushes))
    };
    let reads = load(&http, &c, &size, &served.goals).await;
    let samples = tokio::task::spawn_blocking(move || pushing.join())
        .await
        .unwrap()
        .unwrap();
    let rss_after = memory(pid, "VmRSS").unwrap();
    let peak = memory(pid, "VmHWM").unwrap();
    let tasks_during = dispatched(&conn) - tasks_before;

    // Every client holds every event the store recorded in the window.
    let end_id = last_event(&conn);
    end_tx.send_replace(Some(end_id));
    let expected: Vec<i64> = {
        let mut stmt = conn
            .prepare("SELECT id FROM events WHERE id > ?1 AND id <= ?2 ORDER BY id")
            .unwrap();
        stmt.query_map([start_id, end_id], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let mut lost = 0;
    let mut out_of_order = 0;
    for follower in followers {
        let ids = tokio::time::timeout(WAIT, follower)
            .await
            .expect("an event stream to reach the store's last event")
            .unwrap();
        out_of_order += ids.windows(2).filter(|w| w[0] >= w[1]).count();
        let got: BTreeSet<i64> = ids.into_iter().filter(|id| *id <= end_id).collect();
        lost += expected.iter().filter(|id| !got.contains(id)).count();
    }
    // A whole list, as the dashboard reads it: its size and what it takes once the load
    // is over (the shared answer is rebuilt when the store changed).
    let mut whole = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let body = http
            .get(c.url("/api/v1/goals"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        whole.push(t.elapsed().as_secs_f64() * 1000.0);
        bytes = body.len();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(c);

    println!(
        "api: a whole list of every goal: {:.1} MB, read in p50 {:.1} ms, max {:.1} ms (5 reads, 200 ms apart, after the load)",
        bytes as f64 / 1e6,
        percentile(&whole, 50.0),
        percentile(&whole, 100.0)
    );
    println!(
        "api: tasks started during the load: {tasks_during} ({} of them pushed goals)",
        size.pushes
    );
    report_reads(&reads, &size);
    println!(
        "api: SSE {} clients × {} events (ids {}..={end_id})  lost: {lost}  out of order: {out_of_order}  (goal: 0)",
        size.clients,
        expected.len(),
        start_id + 1
    );
    println!(
        "api: push→dispatch through the GitHub webhook  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} pushes, beside the reads and streams)  (goal: p50 ≤ 50 ms)",
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        percentile(&samples, 100.0),
        samples.len()
    );
    println!(
        "api: controller RSS {rss_started:.1} MiB at its first task, {rss_before:.1} MiB after {} s more of the same work without the API load (peak {peak_before:.1})",
        size.warmup
    );
    println!(
        "api: controller RSS {rss_after:.1} MiB at the load's end: growth under the load {:+.1} MiB, {:+.1} MiB since its first task (peak VmHWM {peak:.1} MiB)  (goal: growth under the load < 50 MB)",
        rss_after - rss_before,
        rss_after - rss_started
    );
    assert_eq!(lost, 0, "events lost by the SSE clients");
    assert_eq!(out_of_order, 0, "events out of order on an SSE stream");
    assert_eq!(samples.len(), size.pushes);
    assert!(
        tasks_during > size.pushes as i64,
        "the trivial goals' tasks ran during the load"
    );
}

/// Reads one client's stream until it has seen the store's last event of the window.
async fn follow(response: reqwest::Response, mut end: watch::Receiver<Option<i64>>) -> Vec<i64> {
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut ids = Vec::new();
    loop {
        if let Some(end) = *end.borrow_and_update()
            && ids.last().is_some_and(|last| *last >= end)
        {
            return ids;
        }
        tokio::select! {
            chunk = stream.next() => match chunk {
                Some(Ok(chunk)) => {
                    buffer.push_str(&String::from_utf8_lossy(&chunk));
                    ids.extend(take_events(&mut buffer).into_iter().map(|e| e.0));
                }
                // The stream ended: what it delivered is what this client got.
                _ => return ids,
            },
            _ = end.changed() => {}
        }
    }
}

/// What became of one read.
enum Outcome {
    /// 200 and the whole body, this many ms after it was due.
    Answered(f64),
    /// Answered with another status: a fault of the server, not of the load.
    Refused(u16),
    /// No answer before [`GRACE`] after the load's end (or the connection failed).
    Unanswered,
}

struct Read {
    endpoint: usize,
    outcome: Outcome,
}

struct Reads {
    all: Vec<Read>,
    /// From the first request due to the last answer.
    seconds: f64,
}

/// Reads at `size.rate` per second for `size.seconds`, open-loop: each is sent when due
/// (or as soon as one of [`IN_FLIGHT`] is free) and timed from when it was due. Whatever
/// is not answered [`GRACE`] after the last was due counts as unanswered, so a server
/// that cannot keep up shows it without making the run last for ever.
async fn load(http: &reqwest::Client, c: &Controller, size: &Size, goals: &[String]) -> Reads {
    let total = (size.rate * size.seconds as f64) as usize;
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let start = tokio::time::Instant::now();
    let give_up = start + Duration::from_secs(size.seconds) + GRACE;
    let mut requests = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / size.rate);
        tokio::time::sleep_until(due).await;
        let endpoint = i % READS.len();
        let path = match READS[endpoint] {
            // A spread of goals: a multiplicative hash of the request's number.
            "goal" => format!(
                "/api/v1/goals/{}",
                goals[(i.wrapping_mul(2_654_435_761)) % goals.len()]
            ),
            // Lists a page at a time, as kubectl reads lists in chunks and a paged page
            // does: a whole list of 10,000 goals is megabytes (timed on its own below).
            list @ ("goals" | "tasks") => format!("/api/v1/{list}?limit={PAGE}"),
            read => format!("/api/v1/{read}"),
        };
        let (http, url, permits) = (http.clone(), c.url(&path), permits.clone());
        requests.push(tokio::spawn(async move {
            let read = async {
                let _permit = permits.acquire_owned().await.unwrap();
                match http.get(url).bearer_auth(TOKEN).send().await {
                    Ok(response) if response.status() == 200 => match response.bytes().await {
                        Ok(_) => Outcome::Answered(due.elapsed().as_secs_f64() * 1000.0),
                        Err(_) => Outcome::Unanswered,
                    },
                    Ok(response) => Outcome::Refused(response.status().as_u16()),
                    Err(_) => Outcome::Unanswered,
                }
            };
            let outcome = tokio::time::timeout_at(give_up, read)
                .await
                .unwrap_or(Outcome::Unanswered);
            Read { endpoint, outcome }
        }));
    }
    let mut all = Vec::with_capacity(total);
    for request in requests {
        all.push(request.await.unwrap());
    }
    Reads {
        all,
        seconds: start.elapsed().as_secs_f64(),
    }
}

fn latencies(reads: &Reads, endpoint: Option<usize>) -> Vec<f64> {
    reads
        .all
        .iter()
        .filter(|r| endpoint.is_none_or(|e| e == r.endpoint))
        .filter_map(|r| match r.outcome {
            Outcome::Answered(ms) => Some(ms),
            _ => None,
        })
        .collect()
}

fn report_reads(reads: &Reads, size: &Size) {
    let answered = latencies(reads, None);
    let refused: Vec<u16> = reads
        .all
        .iter()
        .filter_map(|r| match r.outcome {
            Outcome::Refused(status) => Some(status),
            _ => None,
        })
        .collect();
    let unanswered = reads.all.len() - answered.len() - refused.len();
    println!(
        "api: reads {} due at {} /s over {} s: achieved {:.0} /s ({} answered in {:.1} s, {unanswered} unanswered, {} refused)  (goal: {} /s)",
        reads.all.len(),
        size.rate,
        size.seconds,
        answered.len() as f64 / reads.seconds,
        answered.len(),
        reads.seconds,
        refused.len(),
        size.rate
    );
    println!(
        "api: read latency from when due  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (goal: p99 < 50 ms)",
        percentile(&answered, 50.0),
        percentile(&answered, 99.0),
        percentile(&answered, 100.0)
    );
    for (endpoint, read) in READS.iter().enumerate() {
        let these = latencies(reads, Some(endpoint));
        println!(
            "api:   {read:<9}  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} answered)",
            percentile(&these, 50.0),
            percentile(&these, 99.0),
            percentile(&these, 100.0),
            these.len()
        );
    }
    assert!(refused.is_empty(), "reads answered with {refused:?}");
}

/// Commits a new goal of product `fresh`, pushes it to the served repository, delivers
/// GitHub's push payload signed, and times from the push to the goal's `TaskStarted`;
/// `pushes` times, each once the one before has finished its work.
fn push_samples(
    runtime: &tokio::runtime::Handle,
    dir: &Path,
    work: &Path,
    hook: &str,
    payload: &[u8],
    pushes: usize,
) -> Vec<f64> {
    let conn = measure::store(dir);
    let http = client();
    let mut samples = Vec::new();
    let mut git_push_ms = Vec::new();
    for n in 0..pushes {
        let name = format!("pushed{n}");
        // The controller pushes its records to the same branch: start from them.
        git(work, &["pull", "-q", "--rebase", "origin", "master"]);
        std::fs::write(
            work.join(format!("goals/{name}.yaml")),
            goal_of(&name, "fresh", "").trim_start_matches("---\n"),
        )
        .unwrap();
        git(work, &["add", "-A"]);
        git(work, &["commit", "-q", "-m", &format!("Add {name}")]);
        // Timed from when the push has landed (the repository holds the commit), which is
        // when a forge sends its webhook; the client's own packing and sending is not the
        // controller's latency (it is printed on its own).
        let pushed = loop {
            let before = chrono::Utc::now();
            if cli::git_output(work, &["push", "-q", "origin", "master"])
                .status
                .success()
            {
                let landed = chrono::Utc::now();
                git_push_ms.push((landed - before).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                break landed;
            }
            // A record of the controller's landed first: on top of it, and again.
            git(work, &["pull", "-q", "--rebase", "origin", "master"]);
        };
        let (status, text) = runtime.block_on(async {
            let response = http
                .post(hook)
                .header("content-type", "application/json")
                .header("x-github-event", "push")
                .header("x-hub-signature-256", format!("sha256={}", sign(payload)))
                .body(payload.to_vec())
                .send()
                .await
                .unwrap();
            (response.status(), response.text().await.unwrap())
        });
        assert_eq!(status, 202, "{text}");
        assert!(text.contains("refreshing"), "{text}");
        let t0 = Instant::now();
        let started = loop {
            if let Some(at) = started_at(&conn, &name) {
                break at;
            }
            assert!(t0.elapsed() < WAIT, "{name} was never dispatched");
            std::thread::sleep(Duration::from_millis(1));
        };
        samples.push((started - pushed).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        while first_event(&conn, &name, EventKind::AttemptFinished).is_none() {
            assert!(t0.elapsed() < WAIT, "{name}'s task never finished");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    println!(
        "api: the client's git push itself (not counted above)  p50 {:.1} ms",
        percentile(&git_push_ms, 50.0)
    );
    samples
}
