//! What distillation saves: a fixed mix of 30 goals met twice. Round one: each goal is met
//! by its agent through a model (a replay provider answering in the Anthropic wire shape with
//! recorded token counts), and the controller distills each met attempt into a playbook,
//! verified by a replay in a fresh workspace and proposed on `proto/proposals/playbook-<goal>`.
//! A person merges every proposal; the product is reset (every goal unmet again). Round two:
//! the same goals are met again. It prints the model tokens and dollars of each round (from
//! the store's spend, as `proto get tasks` shows it) and checks the goal: round two ≤ 10 % of
//! round one's tokens, with every goal met in both rounds.
//!
//! A goal counts as met in a round only when a task of that round met it. Run with
//! `cargo bench --bench learning`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly by design

#[path = "../tests/support/cli.rs"]
mod cli;

use std::path::Path;

use cli::{git, proto};

const GOALS: usize = 30;

/// The company: a CEO worked by the replay provider, one product, one local computer
/// taking one task at a time (so the recorded turns are asked for in goal order), and a goal
/// per file (so each proposal changes its own file and all merge cleanly).
fn company(dir: &Path) -> std::path::PathBuf {
    let company = dir.join("company");
    std::fs::create_dir_all(company.join("goals")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {name: learns}\nspec:\n  mission: Bench.\n  ceo: ceo\n  models:\n    providers: [{name: recorded, type: replay, file: replay.jsonl}]\n  writeback: {author: {name: proto-bot, email: bot@localhost}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: ceo}\nspec: {title: CEO, model: sonnet, description: Runs it., prompt: Run it., tools: [Read, Write, Edit, Bash]}\n---\napiVersion: proto.dev/v1alpha1\nkind: Product\nmetadata: {name: app}\nspec: {description: The app., lead: ceo, repo: {url: ../app.git, branch: main}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Computer\nmetadata: {name: here}\nspec: {local: {}, capacity: 1}\n",
    )
    .unwrap();
    let mut turns = Vec::new();
    for i in 1..=GOALS {
        let name = format!("g{i:02}");
        // A mix: plain files, a file in a folder, and some made by a command.
        let (check, call) = match i % 3 {
            0 => (
                format!("grep -q done-{i} out-{i}.txt"),
                serde_json::json!({"type": "tool_use", "id": format!("w{i}"), "name": "Write", "input": {"file_path": format!("out-{i}.txt"), "content": format!("done-{i}\n")}}),
            ),
            1 => (
                format!("grep -q done-{i} docs/{i}/note.md"),
                serde_json::json!({"type": "tool_use", "id": format!("w{i}"), "name": "Write", "input": {"file_path": format!("docs/{i}/note.md"), "content": format!("# Note\n\ndone-{i}\n")}}),
            ),
            _ => (
                format!("grep -q done-{i} gen-{i}.txt"),
                serde_json::json!({"type": "tool_use", "id": format!("w{i}"), "name": "Bash", "input": {"command": format!("echo done-{i} > gen-{i}.txt")}}),
            ),
        };
        std::fs::write(
            company.join("goals").join(format!("{name}.yaml")),
            format!(
                "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: {name}}}\nspec:\n  product: app\n  owner: ceo\n  description: Part {i} is done.\n  check: {{command: {{run: '{check}'}}}}\n"
            ),
        )
        .unwrap();
        // Token counts of a small real task: the system prompt and tools cached after the
        // first turn.
        turns.push(
            serde_json::json!({"match": name, "response": {"id": format!("a{i}"), "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "I will do it."}, call], "stop_reason": "tool_use", "usage": {"input_tokens": 2400, "output_tokens": 120}}})
                .to_string(),
        );
        turns.push(
            serde_json::json!({"response": {"id": format!("b{i}"), "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "Done."}], "stop_reason": "end_turn", "usage": {"input_tokens": 300, "output_tokens": 10, "cache_read_input_tokens": 2400}}})
                .to_string(),
        );
    }
    std::fs::write(company.join("replay.jsonl"), turns.join("\n") + "\n").unwrap();
    git(&company, &["init", "-q", "-b", "main"]);
    git(&company, &["add", "-A"]);
    git(&company, &["commit", "-q", "-m", "Declare the company"]);
    git(dir, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    let seed = dir.join("seed");
    git(dir, &["clone", "-q", "app.git", "seed"]);
    std::fs::write(seed.join("README.md"), "The app.\n").unwrap();
    git(&seed, &["add", "-A"]);
    git(&seed, &["commit", "-q", "-m", "Seed"]);
    git(&seed, &["push", "-q", "origin", "HEAD:main"]);
    company
}

/// Runs one round; returns (tokens, dollars, goals met) of the tasks it made.
fn round(home: &Path, company: &Path, state: &Path, after: i64) -> (u64, f64, usize) {
    let out = proto(
        home,
        &[
            "run",
            company.to_str().unwrap(),
            "--once",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Why a met goal was not distilled, if one was not.
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        if line.contains("playbook") && !line.contains("proposed a playbook") {
            eprintln!("{line}");
        }
    }
    let tasks = cli::get_json(home, state, "tasks");
    let mine: Vec<&serde_json::Value> = tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["id"].as_i64().unwrap() > after)
        .collect();
    let tokens = mine
        .iter()
        .map(|t| {
            t["spend"]["inputTokens"].as_u64().unwrap_or(0)
                + t["spend"]["outputTokens"].as_u64().unwrap_or(0)
        })
        .sum();
    let usd = mine
        .iter()
        .map(|t| t["spend"]["usd"].as_f64().unwrap_or(0.0))
        .sum();
    // Met in this round: a task of this round succeeded for the goal (its check passed on
    // the product's branch), and the goal's status says so.
    let goals = cli::get_json(home, state, "goals");
    let met = goals
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["reason"] == "CheckPassed")
        .filter(|g| {
            mine.iter()
                .any(|t| t["goal"] == g["name"] && t["state"] == "succeeded")
        })
        .count();
    (tokens, usd, met)
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let company = company(home);
    let state = home.join("state");

    let (tokens1, usd1, met1) = round(home, &company, &state, 0);
    println!("round one: {met1}/{GOALS} goals met by the model: {tokens1} tokens, ${usd1:.4}");

    // A person adopts every proposed playbook.
    let branches = git(
        &company,
        &[
            "branch",
            "--list",
            "proto/proposals/playbook-*",
            "--format=%(refname:short)",
        ],
    );
    let branches: Vec<&str> = branches.lines().filter(|l| !l.is_empty()).collect();
    println!("proposed playbooks: {}", branches.len());
    for branch in &branches {
        git(
            &company,
            &[
                "merge",
                "-q",
                "--no-ff",
                "-m",
                &format!("Adopt {branch}"),
                branch,
            ],
        );
    }
    // The product reset: every goal unmet again.
    let reset = home.join("reset");
    git(home, &["clone", "-q", "app.git", "reset"]);
    git(&reset, &["rm", "-q", "-r", "--ignore-unmatch", "docs", "."]);
    git(&reset, &["checkout", "-q", "HEAD", "--", "README.md"]);
    git(&reset, &["commit", "-q", "-m", "Reset"]);
    git(&reset, &["push", "-q", "origin", "HEAD:main"]);

    let last = cli::get_json(home, &state, "tasks")
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .max()
        .unwrap_or(0);
    let (tokens2, usd2, met2) = round(home, &company, &state, last);
    println!("round two: {met2}/{GOALS} goals met again: {tokens2} tokens, ${usd2:.4}");
    let ratio = tokens2 as f64 / (tokens1.max(1)) as f64;
    println!(
        "round two / round one: {:.1} % of the tokens, {:.1} % of the dollars (goal: ≤ 10 % of the tokens)",
        ratio * 100.0,
        usd2 / usd1.max(f64::MIN_POSITIVE) * 100.0
    );
    assert_eq!(met1, GOALS, "round one did not meet every goal");
    assert_eq!(met2, GOALS, "round two did not meet every goal");
    assert!(
        ratio <= 0.10,
        "round two cost {:.1} % of round one",
        ratio * 100.0
    );
}
