//! Whether the controller's cost grows with the company: the figures of issue 10, side by
//! side in one run.
//!
//! 1. **Throughput** of `proto run --once` over N trivial playbook goals (each writes one file
//!    and commits; its check is that the file exists) at capacity 1 and 2, next to a shell
//!    loop doing the same git work (clone, write, commit, push per goal); and the
//!    controller's time between tasks: from the moment each attempt's worker handed it
//!    back (the `ended` of its `TaskFinished` event) to the next `TaskStarted` (p50 / p99 /
//!    max; meaningful at capacity 1, where the next task can only start then, and at
//!    capacity 2 a retry's back-off can be the gap), and the loop's own part of it: from
//!    when it took the attempt in (the event's time) to the next start, which leaves out
//!    how late the OS woke its thread. Each size is
//!    run until about 2,000 tasks were done (at most five runs; 200 goals: five) and the
//!    median rate printed with the spread, then the rate at the largest size as a share of
//!    the rate at the smallest: a run of 200 goals lasts a second or two and swings with the
//!    machine.
//! 2. **Push → dispatch**: a watching `proto run` on a company of R resources (agents, goals
//!    waiting on a goal that needs a model, one product, one computer). Each sample commits
//!    one new goal file to the company repository and times from the commit to the goal's
//!    `TaskStarted` event (p50 / p99 of the samples). At the largest size the store first
//!    holds F finished tasks (goals met by a `--once` run of the same company), and the
//!    watching controller's peak RSS (`VmHWM`) is printed.
//!
//! Run with `cargo bench --bench scale`. Environment (comma lists):
//! - `PROTO_SCALE_GOALS` (default `200,2000`; empty for none), `PROTO_SCALE_CAPACITIES`
//!   (default `1,2`);
//! - `PROTO_SCALE_SHELL_SECONDS` (default 300): the shell loop stops after this long and its
//!   rate is what it did until then (it only slows down as the product grows, so a cut-short
//!   loop is measured at its fastest);
//! - `PROTO_SCALE_RESOURCES` (default `100,10000`), `PROTO_SCALE_PUSHES` (default 25),
//!   `PROTO_SCALE_FINISHED` (default 2000);
//! - `PROTO_SCALE_DIR`: where the companies, products and workspaces are made (default: the
//!   system's temporary folder); a fresh workspace is a checkout of the product's files, so
//!   the file system's cost of creating files shows in every figure;
//! - `PROTO_BIN`: another `proto` binary to measure.
//!
//! `cargo test --all-targets` runs it without `--bench` on tiny sizes, so it stays working.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly by design

#[path = "../tests/support/cli.rs"]
mod cli;
#[path = "support/company.rs"]
mod company;
#[path = "support/measure.rs"]
mod measure;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli::git;
use company::{company, trivial_goal};
use measure::{peak_rss, percentile, started_at, store, time};

fn list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{name}: {v:?} is not a number"))
        })
        .collect()
}

fn number(name: &str, default: usize) -> usize {
    list(name, &default.to_string())[0]
}

fn proto(bin: &str, dir: &Path, company: &Path, once: bool) -> Child {
    let mut args = vec![
        "run".to_string(),
        company.display().to_string(),
        "--state-dir".into(),
        dir.join("state").display().to_string(),
    ];
    if once {
        args.push("--once".into());
    }
    Command::new(bin)
        .args(&args)
        .env("HOME", dir)
        .env("RUST_LOG", "warn")
        .env_remove("ANTHROPIC_API_KEY")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("proto.out")).unwrap())
        .stderr(std::fs::File::create(dir.join("proto.log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"))
}

/// Waits for `child`, sampling its peak RSS; panics with its log when it fails.
fn finish(mut child: Child, dir: &Path) -> f64 {
    let mut peak = 0.0_f64;
    let status = loop {
        if let Some(rss) = peak_rss(child.id()) {
            peak = peak.max(rss);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        let log = std::fs::read_to_string(dir.join("proto.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "proto exited with {status} in {}:\n{}",
            dir.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    peak
}

/// The time between tasks, in ms, from each attempt's end to the next task started: `wall`
/// from when its worker handed it back (the `ended` of its `TaskFinished` event), which
/// includes how late the OS woke the loop; `own` from when the loop took it in (the
/// event's own time), the loop's own time until the next start.
struct Gaps {
    wall: Vec<f64>,
    own: Vec<f64>,
}

fn gaps(dir: &Path) -> Gaps {
    let conn = store(dir);
    // The engine's own event kinds, by their stored names.
    let finished = proto::store::EventKind::AttemptFinished.as_str();
    let dispatched = proto::store::EventKind::Dispatched.as_str();
    let mut stmt = conn
        .prepare(
            "SELECT kind, time, json_extract(data, '$.ended') FROM events
             WHERE kind IN (?1, ?2) ORDER BY id",
        )
        .unwrap();
    let events: Vec<(String, String, Option<String>)> = stmt
        .query_map([finished, dispatched], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let ms = |d: chrono::Duration| d.num_microseconds().unwrap_or(0) as f64 / 1000.0;
    let mut gaps = Gaps {
        wall: Vec::new(),
        own: Vec::new(),
    };
    let mut last: Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = None;
    for (kind, at, end) in events {
        match (kind.as_str(), last) {
            (k, _) if k == finished => {
                last = Some((time(end.as_deref().unwrap_or(&at)), time(&at)))
            }
            (k, Some((ended, taken))) if k == dispatched => {
                gaps.wall.push(ms(time(&at) - ended));
                gaps.own.push(ms(time(&at) - taken));
                last = None;
            }
            _ => {}
        }
    }
    gaps
}

/// A fresh folder for one measurement, under `PROTO_SCALE_DIR` (default: the system's
/// temporary folder). Workspaces are made there, so its file system's cost of creating
/// files is part of every figure: name the folder in the figures you quote.
fn workdir(tag: &str) -> PathBuf {
    let prefix = format!("proto-scale-{tag}-");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
    match std::env::var_os("PROTO_SCALE_DIR") {
        Some(base) => {
            std::fs::create_dir_all(&base).unwrap();
            builder.tempdir_in(base)
        }
        None => builder.tempdir(),
    }
    .unwrap()
    .keep()
}

/// One `proto run --once` over `goals` trivial goals: its rate, gaps between tasks (ms) and
/// peak RSS (MiB).
fn throughput_run(bin: &str, goals: usize, capacity: usize) -> (f64, Gaps, f64) {
    let dir = workdir("throughput");
    let company = company(&dir, capacity, 0, 0, goals);
    let started = Instant::now();
    let child = proto(bin, &dir, &company, true);
    let peak = finish(child, &dir);
    let seconds = started.elapsed().as_secs_f64();
    let delivered: usize = git(&dir.join("app.git"), &["rev-list", "--count", "main"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        delivered,
        goals,
        "one commit per goal on main ({})",
        dir.display()
    );
    let gaps = gaps(&dir);
    std::fs::remove_dir_all(&dir).ok();
    (goals as f64 / seconds, gaps, peak)
}

/// `runs` runs of [`throughput_run`]: prints the median rate (a run of 200 goals lasts a
/// second or two and swings with the machine, so one run says little), the spread, the
/// gaps of all runs together and the highest peak; answers the median rate.
fn throughput(bin: &str, goals: usize, capacity: usize, runs: usize) -> f64 {
    let (mut rates, mut peak) = (Vec::new(), 0f64);
    let mut gaps = Gaps {
        wall: Vec::new(),
        own: Vec::new(),
    };
    for _ in 0..runs.max(1) {
        let (rate, run_gaps, run_peak) = throughput_run(bin, goals, capacity);
        rates.push(rate);
        gaps.wall.extend(run_gaps.wall);
        gaps.own.extend(run_gaps.own);
        peak = peak.max(run_peak);
    }
    let median = percentile(&rates, 50.0);
    let spread = match rates.len() {
        1 => "1 run".to_string(),
        n => format!(
            "median of {n} runs, {:.1}-{:.1}",
            percentile(&rates, 0.0),
            percentile(&rates, 100.0)
        ),
    };
    println!(
        "scale: throughput  goals {goals:>5}  capacity {capacity}  {median:>6.2} tasks/s  ({spread})  between tasks p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms (the loop's own: p99 {:.2}  max {:.2})  peak RSS {peak:.0} MiB",
        percentile(&gaps.wall, 50.0),
        percentile(&gaps.wall, 99.0),
        percentile(&gaps.wall, 100.0),
        percentile(&gaps.own, 99.0),
        percentile(&gaps.own, 100.0),
    );
    median
}

/// The same git work as a goal, in a shell loop: clone, write, commit, push.
fn shell_loop(goals: usize, limit: Duration) {
    let dir = workdir("shell");
    git(&dir, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    // Background gc and maintenance off, as the controller's own git has them: a detached
    // `gc --auto` still writing in the last clone made `rm -rf` fail at 2,000 goals.
    let script = "set -e\nexport GIT_CONFIG_COUNT=2 GIT_CONFIG_KEY_0=gc.auto GIT_CONFIG_VALUE_0=0 GIT_CONFIG_KEY_1=maintenance.auto GIT_CONFIG_VALUE_1=false\ni=0\nend=$(( $(date +%s) + $2 ))\nwhile [ $i -lt $1 ] && [ $(date +%s) -lt $end ]; do\n  rm -rf ws\n  git clone -q app.git ws 2>/dev/null\n  cd ws\n  echo g$i > g$i.txt\n  git add g$i.txt\n  git -c user.name=b -c user.email=b@b commit -q -m g$i\n  git push -q origin HEAD:main\n  cd ..\n  i=$((i+1))\ndone\necho $i\n";
    let started = Instant::now();
    let out = Command::new("sh")
        .args([
            "-c",
            script,
            "loop",
            &goals.to_string(),
            &limit.as_secs().to_string(),
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seconds = started.elapsed().as_secs_f64();
    let done: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    println!(
        "scale: shell loop  goals {goals:>5}  did {done}  {:>6.2} tasks/s  ({seconds:.1} s{})",
        done as f64 / seconds,
        if done < goals {
            ", stopped at the time limit"
        } else {
            ""
        }
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn push_to_dispatch(bin: &str, resources: usize, finished: usize, pushes: usize) {
    let dir = workdir("push");
    // company, ceo, product, computer, gate = 5; the rest half agents, half goals.
    let finished = finished.min(resources.saturating_sub(5));
    let rest = resources.saturating_sub(5 + finished);
    let agents = rest / 2;
    let waiting = rest - agents;
    let company = company(&dir, 1, agents, waiting, finished);
    let mut setup = String::new();
    if finished > 0 {
        let started = Instant::now();
        finish(proto(bin, &dir, &company, true), &dir);
        write!(
            setup,
            ", after {finished} tasks finished in {:.0} s",
            started.elapsed().as_secs_f64()
        )
        .unwrap();
    }
    let mut watching = Watching(proto(bin, &dir, &company, false));
    let conn = store_when_ready(&dir);
    // Until the controller runs the company (the last declared goal waits in its status).
    let up = Instant::now();
    while up.elapsed() < Duration::from_secs(300) {
        let ready: bool = conn
            .query_row("SELECT COUNT(*) FROM revisions", [], |r| r.get::<_, i64>(0))
            .map(|n| n > 0)
            .unwrap_or(false);
        if ready && std::fs::read_to_string(dir.join("proto.log")).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let mut samples = Vec::new();
    for n in 0..pushes {
        let name = format!("pushed{n}");
        std::fs::write(
            company.join(format!("goals/{name}.yaml")),
            trivial_goal(&name, "").trim_start_matches("---\n"),
        )
        .unwrap();
        // The watching controller commits its records to this checked-out branch too: a
        // person's git meeting its index lock waits and tries again, as a person would.
        cli::git_beside_the_controller(&company, &["add", "-A"]);
        let before = chrono::Utc::now();
        cli::git_beside_the_controller(&company, &["commit", "-q", "-m", &format!("Add {name}")]);
        let t0 = Instant::now();
        let at = loop {
            if let Some(at) = started_at(&conn, &name) {
                break at;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{name} was never dispatched ({})",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        samples.push((at - before).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        // Let its work finish, so the next sample starts from a quiet controller.
        std::thread::sleep(Duration::from_millis(600));
    }
    let peak = peak_rss(watching.0.id()).unwrap_or(f64::NAN);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watching.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    watching.0.wait().unwrap();
    println!(
        "scale: push→dispatch  resources {resources:>6}{setup}  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms ({pushes} one-file commits)  peak RSS {peak:.0} MiB",
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        percentile(&samples, 100.0),
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A watching controller, killed if the benchmark panics before it stops it (a leftover
/// would go on using the machine the next figures are taken on).
struct Watching(Child);

impl Drop for Watching {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.0.kill().ok();
            self.0.wait().ok();
        }
    }
}

fn store_when_ready(dir: &Path) -> rusqlite::Connection {
    let t0 = Instant::now();
    loop {
        if dir.join("state/proto.db").exists()
            && let Ok(conn) = rusqlite::Connection::open(dir.join("state/proto.db"))
            && conn
                .query_row("SELECT COUNT(*) FROM revisions", [], |r| r.get::<_, i64>(0))
                .is_ok()
        {
            return conn;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no store in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let bin =
        std::env::var("PROTO_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_proto").to_string());
    println!("scale: proto binary {bin}");
    let (goals, capacities, resources, pushes, finished, shell) = if full {
        (
            list("PROTO_SCALE_GOALS", "200,2000"),
            list("PROTO_SCALE_CAPACITIES", "1,2"),
            list("PROTO_SCALE_RESOURCES", "100,10000"),
            number("PROTO_SCALE_PUSHES", 25),
            number("PROTO_SCALE_FINISHED", 2000),
            Duration::from_secs(number("PROTO_SCALE_SHELL_SECONDS", 300) as u64),
        )
    } else {
        println!("scale: smoke run on tiny sizes (`cargo bench --bench scale` for the figures)");
        (vec![4], vec![1], vec![40], 2, 3, Duration::from_secs(30))
    };
    // Each size gets runs enough for about 2,000 tasks (at most five): one run of 200 goals
    // is over in a second or two.
    let mut rates = std::collections::BTreeMap::new();
    for &n in &goals {
        shell_loop(n, shell);
        let runs = if full {
            2000usize.div_ceil(n.max(1)).clamp(1, 5)
        } else {
            1
        };
        for &c in &capacities {
            rates.insert((c, n), throughput(&bin, n, c, runs));
        }
    }
    if let (Some(&small), Some(&large)) = (goals.iter().min(), goals.iter().max())
        && small < large
    {
        for &c in &capacities {
            println!(
                "scale: throughput  capacity {c}  rate at {large} goals {:.0} % of the rate at {small}",
                100.0 * rates[&(c, large)] / rates[&(c, small)]
            );
        }
    }
    let largest = resources.iter().copied().max().unwrap_or(0);
    for &r in &resources {
        let done = if r == largest { finished } else { 0 };
        push_to_dispatch(&bin, r, done, pushes);
    }
}
