//! A generated company of trivial work, for the benchmarks that run the controller: agents,
//! goals that wait on a goal no one can meet, and goals any computer meets at once (write
//! one file, commit). The product `app` works on the computers labelled `role: work`, so a
//! benchmark can add a computer of its own beside them.

#![allow(dead_code)] // each benchmark uses its own subset

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::cli::git;

pub const HEADER: &str = "apiVersion: proto.dev/v1alpha1";

/// One trivial goal of product `app`: write `<name>.txt`, commit; met when the file exists.
pub fn trivial_goal(name: &str, extra: &str) -> String {
    goal_of(name, "app", extra)
}

/// One trivial goal of `product`; `extra` is more of its spec (indented by two).
pub fn goal_of(name: &str, product: &str, extra: &str) -> String {
    format!(
        "---\n{HEADER}\nkind: Goal\nmetadata: {{name: {name}}}\nspec:\n  product: {product}\n  owner: ceo\n  description: {name}.txt exists.\n  check: {{file: {{path: {name}.txt}}}}\n{extra}  playbook:\n    - write: {{path: {name}.txt, content: \"{name}\\n\"}}\n    - commit: {{message: \"{name}\"}}\n"
    )
}

/// A company repository at `dir/company` (committed) with `agents` extra agents, `waiting`
/// goals that wait on `gate` (a goal only a model can work, and no model is configured),
/// and `trivial` goals anyone can meet; the product is the bare `dir/app.git`.
pub fn company(
    dir: &Path,
    capacity: usize,
    agents: usize,
    waiting: usize,
    trivial: usize,
) -> PathBuf {
    let company = dir.join("company");
    std::fs::create_dir_all(company.join("goals")).unwrap();
    let mut head = format!(
        "{HEADER}\nkind: Company\nmetadata: {{name: bench}}\nspec:\n  mission: Measure scale.\n  ceo: ceo\n  writeback: {{author: {{name: proto-bot, email: bot@localhost}}}}\n---\n{HEADER}\nkind: Agent\nmetadata: {{name: ceo}}\nspec: {{title: CEO, model: sonnet, description: Runs it., prompt: Run it., tools: [Read, Write, Edit, Bash, Git]}}\n---\n{HEADER}\nkind: Product\nmetadata: {{name: app}}\nspec: {{description: The app., lead: ceo, repo: {{url: ../app.git, branch: main}}, computers: {{matchLabels: {{role: work}}}}}}\n---\n{HEADER}\nkind: Computer\nmetadata: {{name: here, labels: {{role: work}}}}\nspec: {{local: {{}}, capacity: {capacity}}}\n---\n{HEADER}\nkind: Goal\nmetadata: {{name: gate}}\nspec: {{product: app, owner: ceo, description: Needs a model., check: {{file: {{path: gate.txt}}}}}}\n"
    );
    let mut files: Vec<(String, String)> = Vec::new();
    for first in (0..agents).step_by(100) {
        let mut yaml = String::new();
        for i in first..(first + 100).min(agents) {
            write!(yaml, "---\n{HEADER}\nkind: Agent\nmetadata: {{name: a{i}}}\nspec: {{title: Agent {i}, reportsTo: ceo, model: haiku, description: Does part {i}., prompt: Do part {i}.}}\n").unwrap();
        }
        files.push((format!("agents-{first:05}.yaml"), yaml));
    }
    for first in (0..waiting).step_by(100) {
        let mut yaml = String::new();
        for i in first..(first + 100).min(waiting) {
            yaml.push_str(&trivial_goal(&format!("w{i}"), "  dependsOn: [gate]\n"));
        }
        files.push((format!("goals/waiting-{first:05}.yaml"), yaml));
    }
    for first in (0..trivial).step_by(50) {
        let mut yaml = String::new();
        for i in first..(first + 50).min(trivial) {
            yaml.push_str(&trivial_goal(&format!("g{i}"), ""));
        }
        files.push((format!("goals/trivial-{first:05}.yaml"), yaml));
    }
    head.push('\n');
    std::fs::write(company.join("company.yaml"), head).unwrap();
    for (name, yaml) in files {
        std::fs::write(company.join(name), yaml).unwrap();
    }
    git(&company, &["init", "-q", "-b", "main"]);
    git(&company, &["add", "-A"]);
    git(&company, &["commit", "-q", "-m", "Declare the company"]);
    git(dir, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    company
}
