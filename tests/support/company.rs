//! The smallest company the end-to-end tests run: a CEO, one product in a bare repository
//! beside the company repository, one local computer, and the goals a test gives.

use std::path::{Path, PathBuf};

use crate::cli::git;

/// A minimal company in a fresh git repository at `dir/company`, with a bare product
/// repository `dir/app.git`. `goals` are extra YAML documents. The CEO declares `model: sonnet`,
/// so scripted models answer the agent's turns only (`auto` would ask a classifier first).
pub fn small_company(dir: &Path, goals: &str) -> PathBuf {
    let company = dir.join("company");
    std::fs::create_dir_all(&company).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {name: small}\nspec:\n  mission: Test.\n  ceo: ceo\n  writeback: {author: {name: proto-bot, email: bot@localhost}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: ceo}\nspec: {title: CEO, model: sonnet, description: Runs it., prompt: Run it., tools: [Read, Write, Edit, Bash, Git]}\n---\napiVersion: proto.dev/v1alpha1\nkind: Product\nmetadata: {name: app}\nspec: {description: The app., lead: ceo, repo: {url: ../app.git, branch: main}}\n---\napiVersion: proto.dev/v1alpha1\nkind: Computer\nmetadata: {name: here}\nspec: {local: {}, capacity: 2}\n",
    )
    .unwrap();
    std::fs::write(company.join("goals.yaml"), goals).unwrap();
    git(&company, &["init", "-q", "-b", "main"]);
    git(&company, &["add", "-A"]);
    git(&company, &["commit", "-q", "-m", "Declare the company"]);
    git(dir, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    company
}

/// A recorded model turn (a replay file's line) that calls one tool.
#[allow(dead_code)] // not every test binary that includes this module replays a model
pub fn recorded_tool(id: &str, name: &str, input: serde_json::Value) -> String {
    serde_json::json!({"response": {"content": [{"type": "tool_use", "id": id, "name": name, "input": input}], "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 5}}}).to_string()
}

/// A recorded model turn that ends with `text`.
#[allow(dead_code)] // not every test binary that includes this module replays a model
pub fn recorded_text(text: &str) -> String {
    serde_json::json!({"response": {"content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 2}}}).to_string()
}
