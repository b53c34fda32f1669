//! A company whose agents come only from Claude Code files (`tests/fixtures/claude-code/`):
//! subagents, skills, rules, settings, `.mcp.json` and `CLAUDE.md` with imports, each written
//! in Claude Code's own format. Loading it must give back exactly what the files say.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proto::spec::claude::{self, Hook, HookMatcher, McpServer, McpTransport, TOOLS};
use proto::spec::{self, AgentSpec, Diagnostic, DirTree, Resource, Severity, Skill, Spec};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/claude-code")
}

fn load() -> (Spec, Vec<Diagnostic>) {
    match spec::load_and_validate(&DirTree::new(root())) {
        Ok(ok) => ok,
        Err(diagnostics) => {
            let all: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            panic!("the fixture does not validate:\n{}", all.join("\n"))
        }
    }
}

fn agent<'a>(spec: &'a Spec, name: &str) -> &'a Resource<AgentSpec> {
    match spec.agent(name) {
        Some(a) => a,
        None => panic!("agent {name} was not loaded"),
    }
}

fn skill<'a>(spec: &'a Spec, name: &str) -> &'a Skill {
    match spec.claude.skills.iter().find(|s| s.name == name) {
        Some(s) => s,
        None => panic!("skill {name} was not loaded"),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_fixture_validates_with_only_the_import_depth_warning() {
    let (spec, diagnostics) = load();
    assert_eq!(
        diagnostics.len(),
        1,
        "unexpected diagnostics: {:#?}",
        diagnostics
    );
    let d = &diagnostics[0];
    assert_eq!(d.severity, Severity::Warning);
    assert_eq!(d.file, Path::new("docs/deeper/four.md"));
    assert_eq!((d.pos.line, d.pos.col), (3, 1));
    assert_eq!(d.field.as_deref(), Some("@five.md"));
    assert_eq!(
        d.message,
        format!(
            "imports nest deeper than {} hops; not followed",
            claude::MAX_IMPORT_HOPS
        )
    );
    assert_eq!(
        spec.summary(),
        "1 Company, 1 Product, 1 Computer, 3 Agents, 1 Goal, 2 skills, 2 rules, \
         2 MCP servers, 1 memory file"
    );
}

#[test]
fn the_yaml_kinds_point_at_the_markdown_agents() {
    let (spec, _) = load();
    let Some(company) = spec.company() else {
        panic!("no single company")
    };
    assert_eq!(company.name(), "widgets");
    assert_eq!(company.spec.ceo, "lead-engineer");
    let Some(product) = spec.product("widget-service") else {
        panic!("no product")
    };
    assert_eq!(product.spec.lead, "lead-engineer");
    assert_eq!(spec.computers.len(), 1);
    assert!(spec.computers[0].spec.local.is_some());
    let Some(goal) = spec.goal("tests-pass") else {
        panic!("no goal")
    };
    assert_eq!(goal.spec.owner, "test-runner");
    assert_eq!(goal.spec.product, "widget-service");
}

#[test]
fn every_agent_comes_from_a_subagent_file() {
    let (spec, _) = load();
    let mut found: Vec<(&str, &str, bool)> = spec
        .agents
        .iter()
        .map(|a| (a.name(), a.origin.file.as_str(), a.origin.flat))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            (
                "code-reviewer",
                ".claude/agents/reviewers/code-reviewer.md",
                true
            ),
            ("lead-engineer", ".claude/agents/lead-engineer.md", true),
            ("test-runner", ".claude/agents/test-runner.md", true),
        ]
    );
}

#[test]
fn names_descriptions_titles_and_prompts_are_read_from_the_files() {
    let (spec, _) = load();

    let lead = agent(&spec, "lead-engineer");
    assert_eq!(lead.spec.title, "Lead Engineer");
    assert_eq!(
        lead.spec.description,
        "Leads engineering on the widget service. Use proactively to plan a change, split it \
         into tasks and hand them to the code reviewer and the test runner."
    );
    assert_eq!(
        lead.spec.prompt,
        "You are the lead engineer of the widget service.\n\
         \n\
         Plan each change before you start: write the steps down with your todo list,\n\
         then delegate review to the code-reviewer and test runs to the test-runner.\n\
         File a ticket for anything you decide not to do now.\n"
    );

    let reviewer = agent(&spec, "code-reviewer");
    assert_eq!(reviewer.spec.title, "Code Reviewer");
    assert_eq!(
        reviewer.spec.description,
        "Expert code review specialist. Use immediately after writing or modifying code to \
         check quality, security and maintainability."
    );
    assert_eq!(
        reviewer.spec.prompt,
        "You are a senior code reviewer.\n\
         \n\
         When invoked:\n\
         1. Run `git diff` to see the recent changes.\n\
         2. Focus on the modified files.\n\
         3. Report problems by priority: critical, warnings, suggestions.\n"
    );

    let runner = agent(&spec, "test-runner");
    assert_eq!(runner.spec.title, "Test Runner");
    assert_eq!(
        runner.spec.description,
        "Runs the test suite and fixes failures. Use proactively after code changes."
    );
    assert_eq!(
        runner.spec.prompt,
        "You are a test automation expert.\n\
         \n\
         Run the tests that cover the change. When a test fails, find the cause,\n\
         fix the code (not the test, unless the test is wrong) and run it again.\n"
    );
    assert_eq!(runner.spec.skills, strings(&["running-tests"]));

    // Nothing the files do not say is made up.
    for a in &spec.agents {
        assert_eq!(a.spec.department, None, "{}", a.name());
        assert_eq!(a.spec.thinking, None, "{}", a.name());
        assert_eq!(a.spec.max_turns, None, "{}", a.name());
        assert!(!a.spec.prompt.starts_with("---"), "{}", a.name());
    }
}

#[test]
fn claude_code_tool_names_are_normalized() {
    let (spec, _) = load();
    // Task -> Delegate, TodoWrite -> Planning; MCP tools pass through.
    assert_eq!(
        agent(&spec, "lead-engineer").spec.tools,
        strings(&[
            "Read",
            "Grep",
            "Glob",
            "Bash",
            "Delegate",
            "Planning",
            "mcp__tickets__create_ticket",
        ])
    );
    assert_eq!(
        agent(&spec, "code-reviewer").spec.tools,
        strings(&["Read", "Grep", "Glob", "Bash"])
    );
    // No `tools` line: every tool, as in Claude Code.
    assert_eq!(agent(&spec, "test-runner").spec.tools, strings(&TOOLS));
}

#[test]
fn inherit_means_no_model_of_its_own() {
    let (spec, _) = load();
    assert_eq!(
        agent(&spec, "lead-engineer").spec.model.as_deref(),
        Some("opus")
    );
    assert_eq!(agent(&spec, "code-reviewer").spec.model, None);
    assert_eq!(
        agent(&spec, "test-runner").spec.model.as_deref(),
        Some("haiku")
    );
}

#[test]
fn subagents_report_to_the_ceo_by_default() {
    let (spec, _) = load();
    assert_eq!(agent(&spec, "lead-engineer").spec.reports_to, None);
    assert_eq!(
        agent(&spec, "code-reviewer").spec.reports_to.as_deref(),
        Some("lead-engineer")
    );
    assert_eq!(
        agent(&spec, "test-runner").spec.reports_to.as_deref(),
        Some("lead-engineer")
    );
}

#[test]
fn skills_keep_their_names_descriptions_and_allowed_tools() {
    let (spec, _) = load();
    let mut names: Vec<&str> = spec.claude.skills.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, vec!["reviewing-changes", "running-tests"]);

    let running = skill(&spec, "running-tests");
    assert_eq!(running.file, ".claude/skills/running-tests/SKILL.md");
    assert_eq!(
        running.description,
        "Runs the Rust test suite and explains failures. Use when asked to run tests, check \
         a change, or investigate a failing test."
    );
    assert_eq!(
        running.allowed_tools,
        strings(&["Bash(cargo test *)", "Read", "Grep"])
    );
    assert!(running.body.starts_with("# Running tests\n"));

    let reviewing = skill(&spec, "reviewing-changes");
    assert_eq!(reviewing.file, ".claude/skills/reviewing-changes/SKILL.md");
    assert_eq!(
        reviewing.description,
        "Reviews a diff for correctness, naming and missing tests. Use when reviewing a pull \
         request or the working tree's changes."
    );
    // MultiEdit is Claude Code's name for an edit tool: it becomes Edit.
    assert_eq!(
        reviewing.allowed_tools,
        strings(&["Read", "Grep", "Glob", "Bash(git diff *)", "Edit"])
    );
    assert!(reviewing.body.starts_with("# Reviewing changes\n"));
}

#[test]
fn rules_keep_their_paths() {
    let (spec, _) = load();
    let rules: BTreeMap<&str, (&[String], &str, &str)> = spec
        .claude
        .rules
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                (r.paths.as_slice(), r.body.as_str(), r.file.as_str()),
            )
        })
        .collect();
    assert_eq!(
        rules.keys().copied().collect::<Vec<_>>(),
        vec!["style", "testing"]
    );

    let (paths, body, file) = rules["testing"];
    assert_eq!(paths, strings(&["tests/**/*.rs", "src/**/tests.rs"]));
    assert!(body.starts_with("# Testing rules\n"), "{body:?}");
    assert_eq!(file, ".claude/rules/testing.md");

    // No frontmatter: applies everywhere, and the whole file is the body.
    let (paths, body, file) = rules["style"];
    assert!(paths.is_empty());
    assert_eq!(
        body,
        "# Style\n\n- Run `cargo fmt` before committing.\n- Prefer `?` over `unwrap()` outside tests.\n"
    );
    assert_eq!(file, ".claude/rules/style.md");
}

#[test]
fn settings_keep_permission_rules_in_order() {
    let (spec, _) = load();
    let Some(settings) = &spec.claude.settings else {
        panic!("settings.json was not loaded")
    };
    assert_eq!(settings.file, ".claude/settings.json");
    let p = &settings.permissions;
    assert_eq!(
        p.allow,
        strings(&[
            "Bash(cargo test *)",
            "Bash(git diff *)",
            "Bash(git status)",
            "Read",
            "Edit(src/**)",
        ])
    );
    assert_eq!(p.ask, strings(&["Bash(git push *)", "Write"]));
    assert_eq!(
        p.deny,
        strings(&[
            "Read(./.env)",
            "Read(./secrets/**)",
            "Bash(rm -rf *)",
            "WebFetch",
        ])
    );
    assert_eq!(p.default_mode.as_deref(), Some("default"));

    assert_eq!(
        claude::parse_permission_rule(&p.ask[0]),
        Ok(("Bash", Some("git push *")))
    );
    assert_eq!(
        claude::parse_permission_rule(&p.deny[0]),
        Ok(("Read", Some("./.env")))
    );
    assert_eq!(
        claude::parse_permission_rule(&p.ask[1]),
        Ok(("Write", None))
    );
}

#[test]
fn settings_keep_hooks_by_event_with_matchers_and_timeouts() {
    let (spec, _) = load();
    let Some(settings) = &spec.claude.settings else {
        panic!("settings.json was not loaded")
    };
    let command = |command: &str, timeout: u64| Hook {
        kind: "command".into(),
        command: Some(command.into()),
        prompt: None,
        url: None,
        timeout: Some(timeout),
        fail_closed: false,
    };
    let expected: BTreeMap<String, Vec<HookMatcher>> = BTreeMap::from([
        (
            "PreToolUse".to_string(),
            vec![HookMatcher {
                matcher: Some("Bash".into()),
                hooks: vec![command(
                    "\"$CLAUDE_PROJECT_DIR\"/.claude/hooks/check-bash.sh",
                    10,
                )],
            }],
        ),
        (
            "PostToolUse".to_string(),
            vec![HookMatcher {
                matcher: Some("Edit|Write".into()),
                hooks: vec![command("cargo fmt --all", 60)],
            }],
        ),
        (
            "Stop".to_string(),
            vec![HookMatcher {
                matcher: None,
                hooks: vec![command("cargo test --quiet", 300)],
            }],
        ),
        (
            "SessionStart".to_string(),
            vec![HookMatcher {
                matcher: Some("startup".into()),
                hooks: vec![command("git status --short", 5)],
            }],
        ),
    ]);
    assert_eq!(settings.hooks, expected);
    for event in settings.hooks.keys() {
        assert!(claude::HOOK_EVENTS.contains(&event.as_str()), "{event}");
    }
}

#[test]
fn mcp_servers_keep_their_transports() {
    let (spec, _) = load();
    assert_eq!(
        spec.claude.mcp_servers,
        vec![
            McpServer {
                name: "filesystem".into(),
                transport: McpTransport::Stdio {
                    command: "npx".into(),
                    args: strings(&["-y", "@modelcontextprotocol/server-filesystem", "."]),
                    env: BTreeMap::new(),
                },
                file: ".mcp.json".into(),
            },
            McpServer {
                name: "tickets".into(),
                transport: McpTransport::Http {
                    url: "http://127.0.0.1:13001/mcp".into(),
                    // Kept as written: `${VAR}` is expanded when the server is reached.
                    headers: BTreeMap::from([(
                        "Authorization".to_string(),
                        "Bearer ${TICKETS_TOKEN}".to_string(),
                    )]),
                },
                file: ".mcp.json".into(),
            },
        ]
    );
}

#[test]
fn memory_follows_imports_in_order_up_to_the_hop_limit() {
    let (spec, _) = load();
    assert_eq!(spec.claude.memory.len(), 1);
    let memory = &spec.claude.memory[0];
    assert_eq!(memory.file, "CLAUDE.md");
    let on_disk = std::fs::read_to_string(root().join("CLAUDE.md"))
        .unwrap_or_else(|e| panic!("cannot read CLAUDE.md: {e}"));
    assert_eq!(memory.text, on_disk);

    // CLAUDE.md -> conventions -> one -> two -> three -> four is five hops, Claude Code's
    // documented limit; four.md's import of five.md would be a sixth.
    assert_eq!(
        memory.imports,
        strings(&[
            "docs/conventions.md",
            "docs/deeper/one.md",
            "docs/deeper/two.md",
            "docs/deeper/three.md",
            "docs/deeper/four.md",
        ])
    );
    assert_eq!(memory.imports.len(), claude::MAX_IMPORT_HOPS);

    // The expanded text is the file itself, then each import in the order it was read.
    assert!(memory.expanded.starts_with(&memory.text));
    let mut last = 0;
    for marker in [
        "CONVENTIONS-MARKER",
        "ONE-MARKER",
        "TWO-MARKER",
        "THREE-MARKER",
        "FOUR-MARKER",
    ] {
        let Some(at) = memory.expanded.find(marker) else {
            panic!("{marker} is missing from the expanded memory")
        };
        assert!(at > last, "{marker} is out of order");
        last = at;
    }
    assert!(!memory.expanded.contains("FIVE-MARKER"));
}

#[test]
fn code_and_email_addresses_are_not_imports() {
    let (spec, _) = load();
    let memory = &spec.claude.memory[0];
    // The text mentions @not-imported.md in a code span and in a fenced block, and has
    // an e-mail address; none of them is an import, although not-imported.md exists.
    assert!(root().join("not-imported.md").is_file());
    assert!(memory.text.contains("`@not-imported.md`"));
    assert!(memory.text.contains("```markdown\n@not-imported.md\n```"));
    assert!(memory.text.contains("a@b.com"));
    let found: Vec<String> = claude::find_imports(&memory.text)
        .into_iter()
        .map(|(_, target)| target)
        .collect();
    assert_eq!(found, strings(&["docs/conventions.md"]));
    assert!(!memory.imports.iter().any(|i| i.contains("not-imported")));
    assert!(!memory.expanded.contains("NOT-IMPORTED-MARKER"));
    assert!(!memory.imports.iter().any(|i| i.contains("b.com")));
}
