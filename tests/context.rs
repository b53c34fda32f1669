//! What an agent's model is told, end to end: a company repository (real git) with skills,
//! rules with and without `paths`, memory and `.proto/knowledge`, a product repository with
//! its own `CLAUDE.md`, and a live Anthropic-shaped mock that records every request. The
//! assertions read those requests: what is in the system prompt, what the first message
//! carries, and where a path-scoped rule appears — also after a crash and a resume.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/mock_llm.rs"]
mod mock_llm;

use std::path::{Path, PathBuf};
use std::process::Command;

use cli::{git, text, write};
use serde_json::{Value, json};

/// A company whose `ceo` holds two skills, with a rule for everything and one for
/// `src/**/*.ts`, company memory, three knowledge entries (one broken), and a product whose
/// repository has its own `CLAUDE.md` importing a conventions file.
fn company(dir: &Path, model_url: &str, tools: &str, goal: &str) -> PathBuf {
    let company = dir.join("company");
    write(
        &company,
        "company.yaml",
        &format!(
            "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {{name: ctx}}\nspec:\n  mission: Test.\n  ceo: ceo\n  \
             models:\n    default: sonnet\n    providers: [{{name: mock, type: anthropic, baseUrl: '{model_url}', apiKeyEnv: PROTO_TEST_KEY}}]\n  \
             writeback: {{author: {{name: proto-bot, email: bot@localhost}}}}\n---\n\
             apiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {{name: ceo}}\n\
             spec: {{title: CEO, description: Runs it., prompt: Run it., tools: [{tools}], skills: [release-notes, db-migrations]}}\n---\n\
             apiVersion: proto.dev/v1alpha1\nkind: Product\nmetadata: {{name: app}}\nspec: {{description: The app., lead: ceo, repo: {{url: ../app.git, branch: main}}}}\n---\n\
             apiVersion: proto.dev/v1alpha1\nkind: Computer\nmetadata: {{name: here}}\nspec: {{local: {{}}, capacity: 1}}\n"
        ),
    );
    write(&company, "goals.yaml", goal);
    write(
        &company,
        "CLAUDE.md",
        "COMPANY-MEMORY: we ship on Tuesdays.\n",
    );
    write(
        &company,
        ".claude/skills/release-notes/SKILL.md",
        "---\nname: release-notes\ndescription: Writes release notes for a new version from the changelog.\n---\n\
         SKILL-BODY-RELEASE: group the changes as Added, Fixed, Removed.\n",
    );
    write(
        &company,
        ".claude/skills/db-migrations/SKILL.md",
        "---\nname: db-migrations\ndescription: Plans database schema migrations with a rollback.\n---\n\
         SKILL-BODY-MIGRATIONS: write the down migration first.\n",
    );
    write(
        &company,
        ".claude/rules/general.md",
        "RULE-GENERAL: be brief.\n",
    );
    write(
        &company,
        ".claude/rules/typescript.md",
        "---\npaths:\n  - \"src/**/*.ts\"\n---\nRULE-SCOPED-TS: strict types, never `any`.\n",
    );
    write(
        &company,
        ".proto/knowledge/learning/changelog-first.md",
        "---\ntitle: Release notes come from the changelog\ntags: [release, changelog]\n---\n\
         KNOWLEDGE-BEST: read CHANGELOG.md first; the commit log is noisy.\n",
    );
    write(
        &company,
        ".proto/knowledge/pattern/http-caching.md",
        "KNOWLEDGE-UNRELATED: HTTP responses carry cache headers.\n",
    );
    write(
        &company,
        ".proto/knowledge/learning/broken.md",
        "---\ntitle: never closed\n",
    );
    git(&company, &["init", "-q", "-b", "main"]);
    git(&company, &["add", "-A"]);
    git(&company, &["commit", "-q", "-m", "Declare the company"]);

    let seed = dir.join("app-seed");
    write(
        &seed,
        "CLAUDE.md",
        "PRODUCT-MEMORY: the app is TypeScript.\n@docs/conventions.md\n",
    );
    write(
        &seed,
        "docs/conventions.md",
        "IMPORTED-CONVENTION: two-space indent.\n",
    );
    write(&seed, "src/index.ts", "export const greeting = 1;\n");
    write(&seed, "CHANGELOG.md", "## 2.0\n- Added greetings\n");
    write(
        &seed,
        ".claude/rules/voice.md",
        "PRODUCT-RULE-VOICE: release notes speak in the past tense.\n",
    );
    write(
        &seed,
        ".claude/rules/docs/markdown.md",
        "---\npaths: [\"*.md\"]\n---\nPRODUCT-RULE-MD: wrap prose at 100 columns.\n",
    );
    git(&seed, &["init", "-q", "-b", "main"]);
    git(&seed, &["add", "-A"]);
    git(&seed, &["commit", "-q", "-m", "Seed the app"]);
    git(
        dir,
        &["clone", "-q", "--bare", seed.to_str().unwrap(), "app.git"],
    );
    company
}

fn goal(name: &str, description: &str, file: &str) -> String {
    format!(
        "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: {name}}}\nspec:\n  product: app\n  owner: ceo\n  \
         description: {description}\n  check: {{file: {{path: {file}}}}}\n"
    )
}

fn run(dir: &Path, company: &Path) -> Command {
    cli::run_command(dir, company, &dir.join("state"))
}

fn system_text(request: &Value) -> String {
    request["system"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["text"].as_str().unwrap().to_string())
        .collect()
}

/// The text of every block of one message (text blocks and tool results).
fn message_text(message: &Value) -> String {
    message["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| match b["type"].as_str() {
            Some("text") => b["text"].as_str().unwrap().to_string(),
            Some("tool_result") => match &b["content"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            _ => String::new(),
        })
        .collect()
}

fn last_message(request: &Value) -> String {
    message_text(request["messages"].as_array().unwrap().last().unwrap())
}

fn breakpoints(request: &Value) -> usize {
    request.to_string().matches("\"cache_control\"").count()
}

#[test]
fn the_model_gets_matched_skills_knowledge_product_memory_and_scoped_rules_on_touch() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(mock_llm::MockLlm::start(vec![
        mock_llm::tool_use("1", "Read", json!({"file_path": "CHANGELOG.md"})),
        mock_llm::tool_use("2", "Read", json!({"file_path": "src/index.ts"})),
        mock_llm::tool_use(
            "3",
            "Edit",
            json!({"file_path": "src/index.ts", "old_string": "= 1", "new_string": "= 2"}),
        ),
        mock_llm::tool_use(
            "4",
            "Write",
            json!({"file_path": "RELEASE-NOTES.md", "content": "## 2.0\n### Added\n- greetings\n"}),
        ),
        mock_llm::Reply::sse(mock_llm::text_stream("5", "Wrote the notes.", "end_turn")),
    ]));
    let tmp = tempfile::tempdir().unwrap();
    let company = company(
        tmp.path(),
        &mock.base_url(),
        "Read, Write, Edit",
        &goal(
            "notes-v2",
            "The release notes for version 2 are written from the changelog.",
            "RELEASE-NOTES.md",
        ),
    );
    let out = run(tmp.path(), &company).output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    // The broken entry is named and skipped; the run goes on.
    assert!(
        all.contains(".proto/knowledge/learning/broken.md: frontmatter is not closed"),
        "{all}"
    );
    let requests: Vec<Value> = mock.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(requests.len(), 5, "{all}");

    // The system prompt: only what every task of this agent shares.
    let first = &requests[0];
    let system = system_text(first);
    assert_eq!(first["system"].as_array().unwrap().len(), 1);
    for wanted in [
        "Run it.",
        "COMPANY-MEMORY",
        "RULE-GENERAL",
        "- release-notes: Writes release notes",
        "- db-migrations: Plans database schema migrations",
    ] {
        assert!(system.contains(wanted), "{wanted} missing from: {system}");
    }
    for unwanted in [
        "RULE-SCOPED-TS",
        "SKILL-BODY",
        "KNOWLEDGE",
        "PRODUCT-MEMORY",
        "notes-v2",
    ] {
        assert!(!system.contains(unwanted), "{unwanted} in: {system}");
    }
    // Its cache breakpoint sits on that stable prefix; never more than four in all.
    assert!(first["system"][0]["cache_control"].is_object(), "{first:#}");
    assert!(requests.iter().all(|r| breakpoints(r) <= 4));

    // The first message: the task's context, then the task.
    let opening = message_text(&first["messages"][0]);
    for wanted in [
        "SKILL-BODY-RELEASE",
        "PRODUCT-MEMORY",
        "IMPORTED-CONVENTION",
        "KNOWLEDGE-BEST",
        "file=\".proto/knowledge/learning/changelog-first.md\"",
        "<rule name=\"voice\" scope=\"product\">\nPRODUCT-RULE-VOICE",
    ] {
        assert!(opening.contains(wanted), "{wanted} missing from: {opening}");
    }
    for unwanted in [
        "SKILL-BODY-MIGRATIONS",
        "KNOWLEDGE-UNRELATED",
        "RULE-SCOPED-TS",
        "PRODUCT-RULE-MD",
    ] {
        assert!(!opening.contains(unwanted), "{unwanted} in: {opening}");
    }
    let task_at = opening.find("Goal `notes-v2`").unwrap();
    assert!(
        opening.find("KNOWLEDGE-BEST").unwrap() < task_at,
        "{opening}"
    );

    // The product repository's scoped rule comes with the first Markdown file read.
    let changelog = last_message(&requests[1]);
    assert!(
        changelog.contains("<rule name=\"docs/markdown\"") && changelog.contains("PRODUCT-RULE-MD"),
        "{changelog}"
    );
    assert_eq!(
        requests[4].to_string().matches("PRODUCT-RULE-MD").count(),
        1,
        "the product's rule is given once"
    );
    // The scoped rule: not after reading CHANGELOG.md, but after reading src/index.ts,
    // following the file's content, and only that once.
    assert!(!requests[1].to_string().contains("RULE-SCOPED-TS"));
    let read = last_message(&requests[2]);
    let content_at = read.find("export const greeting").unwrap();
    let rule_at = read
        .find("RULE-SCOPED-TS")
        .unwrap_or_else(|| panic!("{read}"));
    assert!(content_at < rule_at, "{read}");
    assert!(read.contains("<rule name=\"typescript\""), "{read}");
    let edited = last_message(&requests[3]);
    assert!(!edited.contains("RULE-SCOPED-TS"), "{edited}");
    assert_eq!(
        requests[4].to_string().matches("RULE-SCOPED-TS").count(),
        1,
        "the rule is given once"
    );
}

#[test]
fn a_resumed_conversation_gives_the_scoped_rule_where_it_gave_it_before() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(mock_llm::MockLlm::start(vec![
        // Fails: the file comes later. Resumed, it must fail the same way, not be run again.
        mock_llm::tool_use("0", "Read", json!({"file_path": "later.txt"})),
        mock_llm::tool_use("1", "Read", json!({"file_path": "src/index.ts"})),
        mock_llm::tool_use(
            "2",
            "Bash",
            // It also changes the product's memory: the resumed conversation must still
            // start as the recorded one did.
            json!({"command": "echo CHANGED-MEMORY >> CLAUDE.md && echo LATER-CONTENT > later.txt && touch marker && sleep 5 && touch done.txt"}),
        ),
        mock_llm::Reply::sse(mock_llm::text_stream("3", "Done.", "end_turn")),
    ]));
    let tmp = tempfile::tempdir().unwrap();
    let company = company(
        tmp.path(),
        &mock.base_url(),
        "Read, Bash",
        &goal("started", "The work has started.", "done.txt"),
    );
    let mut child = run(tmp.path(), &company).spawn().unwrap();
    cli::kill_once_marked(&mut child, &tmp.path().join("state/work"));
    assert_eq!(mock.requests().len(), 3);

    let out = run(tmp.path(), &company).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let requests: Vec<Value> = mock.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(requests.len(), 4, "recorded turns are not asked again");
    // The conversation rebuilt from the journal is the one the model saw before the crash:
    // the failed Read's error, the rule in the second Read's result, the same first message.
    let before = requests[2]["messages"].as_array().unwrap();
    let after = requests[3]["messages"].as_array().unwrap();
    assert!(
        message_text(&before[2]).contains("later.txt"),
        "{:#}",
        before[2]
    );
    assert!(message_text(&before[4]).contains("RULE-SCOPED-TS"));
    assert!(!message_text(&after[0]).contains("CHANGED-MEMORY"));
    let strip = |m: &Value| {
        let mut m = m.clone();
        for block in m["content"].as_array_mut().unwrap() {
            block.as_object_mut().unwrap().remove("cache_control");
        }
        m
    };
    for i in 0..before.len() {
        assert_eq!(strip(&before[i]), strip(&after[i]), "message {i} differs");
    }
}
