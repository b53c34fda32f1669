//! The Claude Code corpus (`tests/claude_corpus/`): a company repository whose Claude Code
//! files look like the ones teams publish, loaded as Claude Code loads them. The test records,
//! in `expected.txt`, the outcome of every file (loaded, loaded with warnings, skipped, memory
//! and its scope, not a declaration, not read), what was loaded (so "loaded" means "with the
//! same meaning"), and every diagnostic, in the style of `tests/malformed/`.
//!
//! Run with `UPDATE_EXPECTED=1` to rewrite `expected.txt` from the current output, then review
//! the diff.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/files.rs"]
mod files;
use files::files_under;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use proto::spec::claude::{self, McpTransport, ORIGINAL_NAME, Role};
use proto::spec::{self, Diagnostic, MemTree, Spec};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/claude_corpus")
}

/// The corpus loaded: it must load (with warnings), since no Claude Code file may take the
/// company down.
fn load() -> (Vec<String>, Spec, Vec<Diagnostic>) {
    let mut tree = MemTree::new("corpus");
    let files = files_under(&corpus().join("repo"));
    let paths = files.iter().map(|(p, _)| p.clone()).collect();
    for (path, content) in files {
        tree.insert(path, content);
    }
    match spec::load_and_validate(&tree) {
        Ok((spec, warnings)) => (paths, spec, warnings),
        Err(all) => {
            let all: Vec<String> = all.iter().map(ToString::to_string).collect();
            panic!("the corpus does not load:\n{}", all.join("\n"))
        }
    }
}

/// What became of one file.
fn outcome(path: &str, spec: &Spec, warned: &BTreeSet<String>) -> String {
    let skipped = spec.claude.skipped.iter().any(|s| s.file == path);
    let imported = spec
        .claude
        .memory
        .iter()
        .any(|m| m.imports.iter().any(|i| i == path));
    let declares = |file: &str| {
        spec.companies.iter().any(|r| r.origin.file == file)
            || spec.products.iter().any(|r| r.origin.file == file)
            || spec.computers.iter().any(|r| r.origin.file == file)
            || spec.agents.iter().any(|r| r.origin.file == file)
            || spec.goals.iter().any(|r| r.origin.file == file)
    };
    let yaml = path.ends_with(".yaml") || path.ends_with(".yml");
    let what = match claude::role_of(path) {
        Some(_) if skipped => return "skipped".into(),
        Some(Role::Memory) => {
            let scope = claude::memory_scope(path);
            if scope.is_empty() {
                "memory for every agent".to_string()
            } else {
                format!("memory for work under {scope}/")
            }
        }
        Some(_) => "loaded".into(),
        None if yaml && path.starts_with(".claude/") => "not read (YAML under .claude/)".into(),
        None if yaml && declares(path) => "declaration".into(),
        None if yaml => "not a declaration".into(),
        None if imported => "imported into memory".into(),
        None => "not read".into(),
    };
    if warned.contains(path) {
        format!("{what}, with warnings")
    } else {
        what
    }
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

/// What was loaded, one line a thing, sorted.
fn meaning(spec: &Spec) -> String {
    let mut lines = Vec::new();
    for a in &spec.agents {
        let written = a
            .metadata
            .annotations
            .get(ORIGINAL_NAME)
            .map_or(String::new(), |w| format!(" (written \"{w}\")"));
        lines.push(format!(
            "{}{written} <- {}: tools {}; skills {}; model {}; reportsTo {}",
            a.id(),
            a.origin.file,
            list(&a.spec.tools),
            list(&a.spec.skills),
            a.spec.model.as_deref().unwrap_or("-"),
            a.spec.reports_to.as_deref().unwrap_or("-"),
        ));
    }
    for p in &spec.products {
        lines.push(format!("{}: lead {}", p.id(), p.spec.lead));
    }
    for g in &spec.goals {
        lines.push(format!("{}: owner {}", g.id(), g.spec.owner));
    }
    for s in &spec.claude.skills {
        lines.push(format!(
            "Skill/{} <- {}: allowed-tools {}; description \"{}\"",
            s.name,
            s.file,
            list(&s.allowed_tools),
            s.description
        ));
    }
    for r in &spec.claude.rules {
        lines.push(format!("Rule/{}: paths {}", r.name, list(&r.paths)));
    }
    for m in &spec.claude.mcp_servers {
        let how = match &m.transport {
            McpTransport::Stdio { command, args, .. } => {
                format!("stdio {command} {}", args.join(" "))
            }
            McpTransport::Http { url, .. } => format!("http {url}"),
        };
        lines.push(format!("MCP server {}: {}", m.name, how.trim_end()));
    }
    if let Some(settings) = &spec.claude.settings {
        let p = &settings.permissions;
        lines.push(format!(
            "Settings: allow {}; ask {}; deny {}; hooks on {}",
            list(&p.allow),
            list(&p.ask),
            list(&p.deny),
            list(&settings.hooks.keys().cloned().collect::<Vec<_>>())
        ));
    }
    for m in &spec.claude.memory {
        lines.push(format!(
            "Memory {} (scope \"{}\"): imports {}",
            m.file,
            m.scope,
            list(&m.imports)
        ));
    }
    lines.sort();
    lines.join("\n")
}

fn render() -> String {
    let (paths, spec, diagnostics) = load();
    let warned: BTreeSet<String> = diagnostics
        .iter()
        .map(|d| spec::diag::display_path(&d.file))
        .collect();
    let mut out = String::from("# outcome of every file\n");
    for path in &paths {
        writeln!(out, "{path}: {}", outcome(path, &spec, &warned)).unwrap();
    }
    out.push_str("\n# what was loaded\n");
    out.push_str(&meaning(&spec));
    out.push_str("\n\n# summary\n");
    out.push_str(&spec.summary());
    out.push_str("\n\n# diagnostics\n");
    for d in &diagnostics {
        writeln!(out, "{d}").unwrap();
    }
    out
}

#[test]
fn the_corpus_loads_as_claude_code_loads_it() {
    let actual = render();
    let expected_path = corpus().join("expected.txt");
    if std::env::var_os("UPDATE_EXPECTED").is_some() {
        std::fs::write(&expected_path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    if actual != expected {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(10)
            .map(|(i, (e, a))| format!("line {}:\n  expected: {e}\n  actual:   {a}", i + 1))
            .collect();
        panic!(
            "the corpus loads differently from tests/claude_corpus/expected.txt \
             (UPDATE_EXPECTED=1 rewrites it; review the diff):\n{}\n--- actual\n{actual}",
            diff.join("\n")
        );
    }
}

#[test]
fn every_skipped_file_is_named_by_a_located_warning() {
    let (_, spec, diagnostics) = load();
    assert!(!spec.claude.skipped.is_empty());
    for skipped in &spec.claude.skipped {
        let located = diagnostics.iter().any(|d| {
            spec::diag::display_path(&d.file) == skipped.file
                && d.pos.line > 0
                && !d.is_error()
                && d.message.ends_with("file skipped")
        });
        assert!(
            located,
            "{} was skipped without a located warning",
            skipped.file
        );
    }
}

#[test]
fn subagents_answer_to_the_names_they_were_written_with() {
    let (_, spec, _) = load();
    let by = |name: &str| spec.agent(name).map(|a| a.name().to_string());
    assert_eq!(by("CSharpExpert").as_deref(), Some("csharpexpert"));
    assert_eq!(by("csharpexpert").as_deref(), Some("csharpexpert"));
    assert_eq!(
        by("microsoft_learn_contributor").as_deref(),
        Some("microsoft-learn-contributor")
    );
    assert_eq!(by("NoSuchAgent"), None);
}

#[test]
fn nested_memory_stays_out_of_every_agents_system_prompt() {
    let (_, spec, _) = load();
    let agent = spec.agent("code-reviewer").unwrap();
    let prompt: String = proto::agent::context::system_prompt(&spec, agent.name(), &agent.spec)
        .iter()
        .map(|b| b.text.clone())
        .collect();
    assert!(prompt.contains("<memory file=\"CLAUDE.md\">"), "{prompt}");
    assert!(
        prompt.contains("Orders go through `OrderService`"),
        "the import is expanded"
    );
    assert!(!prompt.contains("products/web/CLAUDE.md"), "{prompt}");
    assert!(!prompt.contains("pdf-processing/CLAUDE.md"), "{prompt}");
    let for_web: Vec<&str> = spec
        .claude
        .memory_for("products/web/src/Orders.cs")
        .map(|m| m.file.as_str())
        .collect();
    assert_eq!(for_web, vec!["CLAUDE.md", "products/web/CLAUDE.md"]);
}

#[test]
fn a_goal_owned_by_a_skipped_subagent_names_the_skipped_file() {
    let mut tree = MemTree::new("corpus");
    for (path, content) in files_under(&corpus().join("repo")) {
        tree.insert(path, content);
    }
    tree.insert(
        "goals/audit.yaml",
        "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata:\n  name: audit\nspec:\n  product: web\n  owner: security-auditor\n  description: Audited.\n  check:\n    command: { run: \"true\" }\n",
    );
    let Err(diagnostics) = spec::load_and_validate(&tree) else {
        panic!("a Proto goal owned by no loaded agent must fail, as Proto's kinds stay strict")
    };
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        vec![
            "goals/audit.yaml:7:3: Goal/audit: spec.owner: Agent \"security-auditor\" is not declared \
             (its file .claude/agents/security-auditor.md was skipped: see the warning there)"
        ]
    );
}

#[test]
fn an_incremental_loader_gives_the_same_outcome_revision_after_revision() {
    let mut tree = MemTree::new("corpus").with_blob_ids();
    for (path, content) in files_under(&corpus().join("repo")) {
        tree.insert(path, content);
    }
    let once = spec::load_and_validate(&tree).unwrap();
    let mut loader = spec::Loader::new();
    let first = loader.load_and_validate(&tree).unwrap();
    let second = loader.load_and_validate(&tree).unwrap();
    assert!(loader.stats().reused > 0, "{:?}", loader.stats());
    for (spec, diagnostics) in [first, second] {
        assert_eq!(spec, once.0);
        assert_eq!(diagnostics, once.1);
    }
}
