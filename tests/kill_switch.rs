//! The kill switch, with the real binary, a real store and real processes: `proto stop`
//! reaches a running controller from another process, every task's processes are killed,
//! nothing is pushed, the goals say they are stopped; a controller started again stays
//! stopped; `proto resume` lets the work finish; stop and resume are in the git audit with
//! who and why.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/company.rs"]
mod company;

use std::fs::File;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use cli::{get_json, git, processes_naming, proto, text, wait_for};
use company::small_company;

const GOALS: usize = 3;

/// Goals whose playbook waits (in a shell loop naming `release` on its command line) until
/// `release` exists, then writes their file.
fn waiting_goals(release: &Path) -> String {
    (0..GOALS)
        .map(|n| {
            format!(
                "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: g{n}}}\nspec:\n  product: app\n  owner: ceo\n  description: g{n}.txt exists.\n  check: {{file: {{path: g{n}.txt}}}}\n  playbook:\n    - run: \"while [ ! -f {} ]; do sleep 0.05; done; echo {n} > g{n}.txt\"\n    - commit: {{message: g{n}}}\n",
                release.display()
            )
        })
        .collect()
}

/// A watching `proto run` (no `--once`), its output in files beside the state.
fn watching(home: &Path, company: &Path, state: &Path, name: &str) -> Child {
    let out = File::create(home.join(format!("{name}.out"))).unwrap();
    let err = File::create(home.join(format!("{name}.err"))).unwrap();
    std::process::Command::new(cli::bin())
        .args([
            "run",
            company.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--poll",
            "1s",
        ])
        .env("HOME", home)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap()
}

fn reasons(home: &Path, state: &Path) -> Vec<String> {
    get_json(home, state, "goals")
        .as_array()
        .map(|goals| {
            goals
                .iter()
                .map(|g| g["reason"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_stop_kills_every_task_holds_across_a_restart_and_resume_finishes_the_work() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let release = home.join("release");
    let marker = release.to_str().unwrap().to_string();
    let company = small_company(home, &waiting_goals(&release));
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace("capacity: 2", "capacity: 4"),
    )
    .unwrap();
    git(&company, &["commit", "-qam", "room for every goal at once"]);
    let state = home.join("state");
    let state_arg = state.to_str().unwrap();

    let mut controller = watching(home, &company, &state, "first");
    wait_for(
        "every goal's command to run",
        Duration::from_secs(60),
        || processes_naming(&marker) == GOALS,
    );

    let stopped = proto(
        home,
        &["stop", "--reason", "fire drill", "--state-dir", state_arg],
    );
    assert!(stopped.status.success(), "{}", text(&stopped));
    // It returns once the controller has cancelled every task: their processes are gone.
    assert!(
        text(&stopped).contains("no task is running"),
        "{}",
        text(&stopped)
    );
    assert_eq!(processes_naming(&marker), 0, "{}", text(&stopped));
    wait_for(
        "the goals' processes to be killed",
        Duration::from_secs(30),
        || processes_naming(&marker) == 0,
    );
    wait_for(
        "every goal to say it is stopped",
        Duration::from_secs(30),
        || reasons(home, &state) == vec!["Stopped"; GOALS],
    );
    let goals = get_json(home, &state, "goals").to_string();
    assert!(goals.contains("fire drill"), "{goals}");
    // The stop is in the company's record in git too.
    wait_for(
        "the stop to be committed to .proto/status.yaml",
        Duration::from_secs(30),
        || {
            let shown = cli::git_output(&company, &["show", "HEAD:.proto/status.yaml"]);
            let status = String::from_utf8_lossy(&shown.stdout);
            status.contains("stopped:") && status.contains("fire drill")
        },
    );
    // Nothing was delivered: the product has no branch yet.
    let refs = git(
        &home.join("app.git"),
        &["for-each-ref", "--format=%(refname)"],
    );
    assert!(refs.trim().is_empty(), "{refs}");

    // A controller started again stays stopped: nothing runs.
    controller.kill().unwrap();
    controller.wait().unwrap();
    let mut controller = watching(home, &company, &state, "second");
    wait_for(
        "the restarted controller to apply its revision",
        Duration::from_secs(30),
        || std::fs::read_to_string(home.join("second.err")).is_ok_and(|e| e.contains("applied")),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        processes_naming(&marker),
        0,
        "a stopped controller started work"
    );
    assert_eq!(reasons(home, &state), vec!["Stopped"; GOALS]);

    // Resumed, the work runs again and finishes.
    std::fs::write(&release, "go").unwrap();
    let resumed = proto(home, &["resume", "--state-dir", state_arg]);
    assert!(resumed.status.success(), "{}", text(&resumed));
    wait_for("every goal to be met", Duration::from_secs(60), || {
        reasons(home, &state) == vec!["CheckPassed"; GOALS]
    });
    wait_for(
        "stop and resume to reach the git audit",
        Duration::from_secs(30),
        || {
            let audit: String = std::fs::read_dir(company.join(".proto/audit"))
                .map(|files| {
                    files
                        .filter_map(|f| std::fs::read_to_string(f.ok()?.path()).ok())
                        .collect()
                })
                .unwrap_or_default();
            audit.contains("\"action\":\"stop\"")
                && audit.contains("fire drill")
                && audit.contains("\"action\":\"resume\"")
        },
    );
    controller.kill().unwrap();
    controller.wait().unwrap();
    let again = proto(home, &["resume", "--state-dir", state_arg]);
    assert!(text(&again).contains("not stopped"), "{}", text(&again));
}

/// A stop made before the controller ever ran holds from its first pass: `run --once` ends
/// without starting anything, and the company's record in git says who stopped it and why.
#[test]
fn a_controller_started_while_stopped_starts_nothing_and_records_the_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let release = home.join("release");
    let marker = release.to_str().unwrap().to_string();
    let company = small_company(home, &waiting_goals(&release));
    let state = home.join("state");
    let state_arg = state.to_str().unwrap();
    let stopped = proto(
        home,
        &["stop", "--reason", "audit week", "--state-dir", state_arg],
    );
    assert!(stopped.status.success(), "{}", text(&stopped));
    let out = proto(
        home,
        &[
            "run",
            company.to_str().unwrap(),
            "--once",
            "--state-dir",
            state_arg,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(processes_naming(&marker), 0);
    assert_eq!(reasons(home, &state), vec!["Stopped"; GOALS]);
    let status = git(&company, &["show", "HEAD:.proto/status.yaml"]);
    assert!(
        status.contains("stopped:") && status.contains("audit week"),
        "{status}"
    );
    let refs = git(
        &home.join("app.git"),
        &["for-each-ref", "--format=%(refname)"],
    );
    assert!(refs.trim().is_empty(), "{refs}");
}
