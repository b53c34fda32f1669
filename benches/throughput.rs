//! Throughput of `proto run --once` over trivial playbook goals: how many tasks per second the
//! controller gets through when the work itself costs nothing, so what is measured is the
//! controller's own cost per task (planning, the store, cloning a workspace, running the
//! playbook, the check, the compare-and-swap delivery to the product's branch, the records
//! committed to the company repository).
//!
//! It generates, in a temporary directory, a company repository (real git, committed) with one
//! product whose repository is a bare `app.git`, one local computer, the CEO and N goals: goal
//! `g<i>` checks that `g<i>.txt` exists and its playbook writes it and commits. It then runs the
//! `proto` binary as `proto run company --once --state-dir state` (HOME in the temporary
//! directory, `RUST_LOG=warn`) and prints the goals, the capacity, the wall time, tasks/s and
//! the user and system CPU seconds of the controller and every process it ran
//! (`getrusage(RUSAGE_CHILDREN)` around the run). Finally it verifies the work: `main` of
//! `app.git` holds exactly the N files, in N commits, each adding one of them. A run that
//! fails verification panics; its directory is kept for a look.
//!
//! Run with `cargo bench --bench throughput` (the `proto` binary cargo built for the bench
//! profile). Environment:
//! - `PROTO_BENCH_GOALS`: the number of goals (default 1000);
//! - `PROTO_BENCH_CAPACITY`: the computer's capacity, tasks at once (default 1);
//! - `PROTO_BIN`: another `proto` binary to measure (to compare two builds);
//! - `PROTO_BENCH_SECONDS`: stop the controller (SIGTERM, then wait for it) after that many
//!   seconds and report the goals delivered to `main` per second of the run; the work on
//!   `main` is still verified (one commit per delivered file), not that every goal was met.
//!
//! `cargo test --all-targets` runs this binary without `--bench`; it then runs 5 goals with the
//! whole verification, so the benchmark stays a working test.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly by design

#[path = "../tests/support/cli.rs"]
mod cli;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli::{git, git_output};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Goals per YAML file (multi-document), so the company is not a file per goal.
const GOALS_PER_FILE: usize = 50;

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The company repository at `dir/company` with `goals` goals, and the bare product
/// repository `dir/app.git`.
fn generate(dir: &Path, goals: usize, capacity: u32) -> std::path::PathBuf {
    let company = dir.join("company");
    std::fs::create_dir_all(company.join("goals")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        format!(
            "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {{name: bench}}\nspec:\n  mission: Measure throughput.\n  ceo: ceo\n  writeback: {{author: {{name: proto-bot, email: bot@localhost}}}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {{name: ceo}}\nspec: {{title: CEO, model: sonnet, description: Runs it., prompt: Run it., tools: [Read, Write, Edit, Bash, Git]}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Product\nmetadata: {{name: app}}\nspec: {{description: The app., lead: ceo, repo: {{url: ../app.git, branch: main}}}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Computer\nmetadata: {{name: here}}\nspec: {{local: {{}}, capacity: {capacity}}}\n"
        ),
    )
    .unwrap();
    for first in (0..goals).step_by(GOALS_PER_FILE) {
        let mut yaml = String::new();
        for i in first..(first + GOALS_PER_FILE).min(goals) {
            write!(
                yaml,
                "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: g{i}}}\nspec:\n  product: app\n  owner: ceo\n  description: g{i}.txt exists.\n  check: {{file: {{path: g{i}.txt}}}}\n  playbook:\n    - write: {{path: g{i}.txt, content: \"{i}\\n\"}}\n    - commit: {{message: \"g{i}\"}}\n"
            )
            .unwrap();
        }
        std::fs::write(
            company.join(format!("goals/goals-{:04}.yaml", first / GOALS_PER_FILE)),
            yaml,
        )
        .unwrap();
    }
    git(&company, &["init", "-q", "-b", "main"]);
    git(&company, &["add", "-A"]);
    git(&company, &["commit", "-q", "-m", "Declare the company"]);
    git(dir, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    company
}

/// User and system CPU seconds of every terminated and waited-for child of this process (and
/// of their waited-for descendants).
fn children_cpu() -> (f64, f64) {
    // SAFETY: `rusage` is plain data (all zeroes is a valid value), and getrusage only
    // writes the struct it is given.
    let (rc, usage) = unsafe {
        let mut usage: nix::libc::rusage = std::mem::zeroed();
        let rc = nix::libc::getrusage(nix::libc::RUSAGE_CHILDREN, &mut usage);
        (rc, usage)
    };
    assert_eq!(rc, 0, "getrusage failed");
    let seconds = |t: nix::libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (seconds(usage.ru_utime), seconds(usage.ru_stime))
}

/// The files on `main` of the bare repository, and the files each of its commits changed,
/// oldest first (empty when the branch does not exist yet).
fn delivered(repo: &Path) -> (BTreeSet<String>, Vec<Vec<String>>) {
    if !git_output(repo, &["rev-parse", "--verify", "-q", "refs/heads/main"])
        .status
        .success()
    {
        return (BTreeSet::new(), Vec::new());
    }
    let files = git(repo, &["ls-tree", "--name-only", "main"])
        .lines()
        .map(str::to_string)
        .collect();
    let count: usize = git(repo, &["rev-list", "--count", "main"]).parse().unwrap();
    // One "@<id>" line per commit, then the files it changed against its parent (the root
    // commit against the empty tree).
    let log = git(
        repo,
        &[
            "log",
            "--reverse",
            "--format=@%H",
            "--name-only",
            "--no-renames",
            "main",
        ],
    );
    let mut commits: Vec<Vec<String>> = Vec::new();
    for line in log.lines() {
        if line.starts_with('@') {
            commits.push(Vec::new());
        } else if !line.is_empty() {
            commits.last_mut().unwrap().push(line.to_string());
        }
    }
    assert_eq!(
        commits.len(),
        count,
        "git log and git rev-list --count disagree"
    );
    (files, commits)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and then a few goals are enough to show the benchmark still works.
    let full = std::env::args().any(|a| a == "--bench");
    let goals: usize = if full {
        env_number("PROTO_BENCH_GOALS", 1000)
    } else {
        5
    };
    let capacity: u32 = env_number("PROTO_BENCH_CAPACITY", 1);
    let limit = if full {
        std::env::var("PROTO_BENCH_SECONDS")
            .ok()
            .map(|_| Duration::from_secs_f64(env_number("PROTO_BENCH_SECONDS", 0.0)))
    } else {
        None
    };
    let (bin, which) = match std::env::var("PROTO_BIN") {
        Ok(path) => (path, "PROTO_BIN"),
        Err(_) => (
            env!("CARGO_BIN_EXE_proto").to_string(),
            "built by cargo for this bench",
        ),
    };
    if !full {
        println!(
            "throughput: smoke run of {goals} goals (`cargo bench --bench throughput` runs {})",
            env_number("PROTO_BENCH_GOALS", 1000)
        );
    }
    println!("throughput: proto binary {bin} ({which})");

    // Kept when anything fails, for a look; removed after a verified run.
    let dir = &tempfile::Builder::new()
        .prefix("proto-throughput-")
        .tempdir()
        .unwrap()
        .keep();
    let started = Instant::now();
    let company = generate(dir, goals, capacity);
    println!(
        "throughput: generated {goals} goals in {:.1} s at {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    let state = dir.join("state");
    let log = dir.join("proto.log");

    let cpu_before = children_cpu();
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .args([
            "run",
            company.to_str().unwrap(),
            "--once",
            "--state-dir",
            state.to_str().unwrap(),
        ])
        .env("HOME", dir)
        .env("RUST_LOG", "warn")
        .env_remove("ANTHROPIC_API_KEY")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("proto.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let mut stopped = None;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if stopped.is_none() && limit.is_some_and(|l| started.elapsed() >= l) {
            kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
            stopped = Some(started.elapsed());
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = children_cpu();
    let (user, sys) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);

    let fail = |why: String| -> ! {
        let log = std::fs::read_to_string(dir.join("proto.log")).unwrap_or_default();
        let out = std::fs::read_to_string(dir.join("proto.out")).unwrap_or_default();
        let tail = |s: &str| {
            s.lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "throughput: {why}\nkept {}\n--- proto stdout (tail)\n{}\n--- proto stderr (tail)\n{}",
            dir.display(),
            tail(&out),
            tail(&log)
        );
    };

    if stopped.is_none() && !status.success() {
        fail(format!("proto run --once exited with {status}"));
    }
    let (files, commits) = delivered(&dir.join("app.git"));
    let expected: BTreeSet<String> = (0..goals).map(|i| format!("g{i}.txt")).collect();
    if let Some(odd) = files.iter().find(|f| !expected.contains(*f)) {
        fail(format!(
            "main of app.git holds {odd:?}, which no goal writes"
        ));
    }
    if stopped.is_none() && files != expected {
        let missing: Vec<_> = expected.difference(&files).take(10).collect();
        fail(format!(
            "main of app.git holds {} of the {goals} files; missing e.g. {missing:?}",
            files.len()
        ));
    }
    if commits.len() != files.len() {
        fail(format!(
            "main of app.git has {} commits for {} files (one commit per goal expected)",
            commits.len(),
            files.len()
        ));
    }
    if let Some((n, changed)) = commits
        .iter()
        .enumerate()
        .find(|(_, changed)| changed.len() != 1)
    {
        fail(format!(
            "commit {} of main changes {changed:?}, not exactly one goal's file",
            n + 1
        ));
    }
    let done = files.len();
    let rate = done as f64 / seconds;
    match stopped {
        Some(at) => println!(
            "throughput: stopped with SIGTERM after {:.1} s; {done} of {goals} goals delivered on main, each in its own commit (verified)",
            at.as_secs_f64()
        ),
        None => {
            println!("throughput: all {goals} goals delivered on main, one commit each (verified)")
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        println!("throughput: cannot remove {}: {e}", dir.display());
    }
    println!(
        "throughput: goals {goals}  capacity {capacity}  delivered {done}  seconds {seconds:.2}  tasks/s {rate:.2}  user CPU s {user:.2}  sys CPU s {sys:.2}"
    );
}
