//! Context assembly: what an agent knows when its session starts, and what it learns as it
//! touches files.
//!
//! The order serves the prompt cache. The system prompt holds only what every task of one
//! agent shares — its own prompt, the company's memory (`CLAUDE.md` and imports), the rules
//! without `paths`, and the descriptions of the skills it holds — so the cache breakpoint on
//! the system prefix is reused from task to task. What belongs to one task goes into the
//! first user message, ahead of the task itself: the bodies of the skills the task activates,
//! the product repository's own `CLAUDE.md`, and the knowledge entries that best match it.
//!
//! Rules with `paths` come later still, as in Claude Code: the first time a `Read`, `Write`
//! or `Edit` touches a matching file, the rule is appended to that tool's result, once per
//! session. Which rules are given is worked out from the tool calls in conversation order,
//! so a session rebuilt from its journal after a crash gives them at the same places.

use std::collections::BTreeSet;
use std::path::{Component, Path};

use ignore::gitignore::GitignoreBuilder;
use serde_json::Value;

use crate::computer::{Computer, Workspace};
use crate::knowledge::{Knowledge, Ranked, terms};
use crate::model::SystemBlock;
use crate::policy::ToolCall;
use crate::spec::claude::{MAX_IMPORT_HOPS, find_imports, load_memory, resolve as resolve_import};
use crate::spec::{AgentSpec, FileTree, MemTree, Memory, Rule, Skill, Spec};

/// At most this many skill bodies join one task's context.
pub const MAX_ACTIVE_SKILLS: usize = 3;
/// At most this many knowledge entries join one task's context.
pub const MAX_KNOWLEDGE_ENTRIES: usize = 5;
/// An entry longer than this is cut, saying where the rest is.
pub const MAX_KNOWLEDGE_ENTRY_CHARS: usize = 2_000;
/// Entries stop joining once their text reaches this much.
pub const MAX_KNOWLEDGE_CHARS: usize = 8_000;
/// Product memory files larger than this are left out.
pub const MAX_MEMORY_BYTES: usize = 256 * 1024;
/// Where a product repository keeps its memory, as Claude Code looks for it.
pub const PRODUCT_MEMORY_FILES: [&str; 2] = ["CLAUDE.md", ".claude/CLAUDE.md"];

/// The system prompt: the agent's own prompt, then the company's memory, the rules that
/// apply everywhere, and the skills it may activate (descriptions only; a body comes with
/// a task that matches it). The same for every task of the agent.
pub fn system_prompt(spec: &Spec, agent_name: &str, agent: &AgentSpec) -> Vec<SystemBlock> {
    let mut text = format!(
        "You are {agent_name}, {} of the company.\n\n{}\n",
        agent.title,
        agent.prompt.trim()
    );
    // Nested `CLAUDE.md` files are memory for work under their folder only, as in Claude
    // Code; the system prompt is every task's, so it holds only the global ones.
    for memory in spec.claude.global_memory() {
        text.push_str(&format!(
            "\n<memory file=\"{}\">\n{}\n</memory>\n",
            memory.file,
            memory.expanded.trim()
        ));
    }
    for rule in spec.claude.rules.iter().filter(|r| r.paths.is_empty()) {
        text.push_str(&format!(
            "\n<rule name=\"{}\">\n{}\n</rule>\n",
            rule.name,
            rule.body.trim()
        ));
    }
    let skills: Vec<_> = held_skills(spec, agent).collect();
    if !skills.is_empty() {
        text.push_str(
            "\nSkills you may use (say which you apply; the instructions of those that match \
             a task come with it, and the Skill tool loads any other's):\n",
        );
        for skill in skills {
            text.push_str(&format!("- {}: {}\n", skill.name, skill.description));
        }
    }
    vec![SystemBlock::text(text)]
}

fn held_skills<'a>(spec: &'a Spec, agent: &'a AgentSpec) -> impl Iterator<Item = &'a Skill> {
    spec.claude
        .skills
        .iter()
        .filter(|s| agent.skills.iter().any(|r| s.answers_to(r)))
}

/// The rules that apply only to some paths: they wait for a tool call that touches one.
pub fn scoped_rules(spec: &Spec) -> Vec<Rule> {
    spec.claude
        .rules
        .iter()
        .filter(|r| !r.paths.is_empty())
        .cloned()
        .collect()
}

/// How strongly a task's text calls for a skill; `None` when it does not. A skill named in
/// the text is called for outright; otherwise at least two of the significant words of its
/// description must occur in the text (one, for a description of fewer than three).
pub fn skill_score(skill: &Skill, about: &str) -> Option<usize> {
    let wanted: BTreeSet<String> = terms(about).into_iter().collect();
    let described: BTreeSet<String> = terms(&format!(
        "{} {}",
        skill.name.replace(['-', '_'], " "),
        skill.description
    ))
    .into_iter()
    .collect();
    let shared = described.intersection(&wanted).count();
    let needed = if described.len() < 3 { 1 } else { 2 };
    let named = phrase(about).contains(&phrase(&skill.name));
    match (named, shared >= needed) {
        // A mention outranks any overlap of words.
        (true, _) => Some(1000 + shared),
        (false, true) => Some(shared),
        (false, false) => None,
    }
}

/// Lowercase words separated by single spaces, padded, so a phrase matches whole words.
fn phrase(text: &str) -> String {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    format!(" {} ", words.join(" "))
}

/// The skills an agent holds that the task's text activates, best first (equal scores by
/// name), at most [`MAX_ACTIVE_SKILLS`].
pub fn activated_skills<'a>(spec: &'a Spec, agent: &'a AgentSpec, about: &str) -> Vec<&'a Skill> {
    let mut scored: Vec<(usize, &Skill)> = held_skills(spec, agent)
        .filter_map(|s| skill_score(s, about).map(|score| (score, s)))
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
    scored
        .into_iter()
        .take(MAX_ACTIVE_SKILLS)
        .map(|(_, s)| s)
        .collect()
}

/// The product repository's memory: `CLAUDE.md` (and `.claude/CLAUDE.md`) at the workspace
/// root with their `@imports` followed inside the workspace, read through the computer.
/// The imports are fetched hop by hop, then expanded by the same code that expands the
/// company's memory.
pub async fn product_memory(computer: &dyn Computer, workspace: &Workspace) -> Vec<Memory> {
    let mut out = Vec::new();
    for root in PRODUCT_MEMORY_FILES {
        let Some(text) = read_text(computer, workspace, root).await else {
            continue;
        };
        let mut tree = MemTree::new("the workspace");
        tree.insert(root, text.clone());
        let mut frontier = vec![(root.to_string(), text.clone())];
        for _ in 0..=MAX_IMPORT_HOPS {
            let mut next = Vec::new();
            for (file, content) in &frontier {
                for (_, target) in find_imports(content) {
                    let Some(path) = resolve_import(file, &target) else {
                        continue;
                    };
                    if tree.size(&path).is_ok() {
                        continue;
                    }
                    if let Some(imported) = read_text(computer, workspace, &path).await {
                        tree.insert(path.clone(), imported.clone());
                        next.push((path, imported));
                    }
                }
            }
            frontier = next;
        }
        let mut diagnostics = Vec::new();
        let memory = load_memory(root, &text, &tree, &mut diagnostics);
        for d in diagnostics {
            tracing::warn!("product memory: {d}");
        }
        out.push(memory);
    }
    out
}

/// Where a product repository keeps its rules (Claude Code's project rules).
const PRODUCT_RULES_DIR: &str = ".claude/rules";

/// The product repository's own rules, `.claude/rules/**/*.md`, read through the computer. A
/// broken one is left out with a warning naming it. (Its `settings.json` is not read: agents
/// commit to product repositories, and must not be able to loosen their own permissions.)
pub async fn product_rules(computer: &dyn Computer, workspace: &Workspace) -> Vec<Rule> {
    let files = match computer.list(workspace, PRODUCT_RULES_DIR).await {
        Ok(files) => files,
        Err(e) => {
            tracing::warn!("{PRODUCT_RULES_DIR}: cannot list: {e}");
            return Vec::new();
        }
    };
    let mut rules = Vec::new();
    for file in files.iter().filter(|f| f.ends_with(".md")) {
        let Some(text) = read_text(computer, workspace, file).await else {
            continue;
        };
        let mut diagnostics = Vec::new();
        match crate::spec::claude::load_rule(file, &text, &mut diagnostics) {
            Some(rule) if diagnostics.is_empty() => rules.push(rule),
            _ => {
                for d in diagnostics {
                    tracing::warn!("product rule left out: {d}");
                }
            }
        }
    }
    rules
}

async fn read_text(computer: &dyn Computer, workspace: &Workspace, path: &str) -> Option<String> {
    match computer.read(workspace, path).await {
        Ok(Some(bytes)) if bytes.len() <= MAX_MEMORY_BYTES => String::from_utf8(bytes).ok(),
        Ok(Some(bytes)) => {
            tracing::warn!(
                "{path}: {} bytes; memory files are limited to {MAX_MEMORY_BYTES}; left out",
                bytes.len()
            );
            None
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("{path}: cannot read: {e}");
            None
        }
    }
}

/// What a task's context is gathered from.
pub struct Sources<'a> {
    pub spec: &'a Spec,
    /// Whose session it is and for which goal (for the audit record of what was gathered).
    pub agent_name: &'a str,
    pub goal: &'a str,
    pub knowledge: &'a Knowledge,
    pub product: &'a str,
    pub computer: &'a dyn Computer,
    pub workspace: &'a Workspace,
}

/// The task-specific context, gathered.
#[derive(Debug, Default)]
pub struct TaskContext<'a> {
    pub skills: Vec<&'a Skill>,
    pub product_memory: Vec<Memory>,
    /// The product repository's rules: those without `paths` join the first message, the
    /// others are given on touch like the company's.
    pub product_rules: Vec<Rule>,
    pub knowledge: Vec<Ranked<'a>>,
}

impl<'a> TaskContext<'a> {
    /// Gathers what bears on a task whose text (goal, check, delegated prompt) is `about`.
    pub async fn gather(sources: &Sources<'a>, agent: &'a AgentSpec, about: &str) -> Self {
        TaskContext {
            skills: activated_skills(sources.spec, agent, about),
            product_memory: product_memory(sources.computer, sources.workspace).await,
            product_rules: product_rules(sources.computer, sources.workspace).await,
            knowledge: sources
                .knowledge
                .rank(about, Some(sources.product), MAX_KNOWLEDGE_ENTRIES),
        }
    }

    /// The first user message: the context, then the task.
    pub fn first_message(&self, task: &str) -> String {
        let mut parts = Vec::new();
        for skill in &self.skills {
            parts.push(format!(
                "<skill name=\"{}\" file=\"{}\">\n{}\n</skill>",
                skill.name,
                skill.file,
                skill.body.trim()
            ));
        }
        for memory in &self.product_memory {
            parts.push(format!(
                "<memory file=\"{}\" scope=\"product\">\n{}\n</memory>",
                memory.file,
                memory.expanded.trim()
            ));
        }
        for rule in self.product_rules.iter().filter(|r| r.paths.is_empty()) {
            parts.push(format!(
                "<rule name=\"{}\" scope=\"product\">\n{}\n</rule>",
                rule.name,
                rule.body.trim()
            ));
        }
        let mut budget = MAX_KNOWLEDGE_CHARS;
        for ranked in &self.knowledge {
            let entry = ranked.entry;
            if budget == 0 {
                break;
            }
            let body = cut(
                &entry.body,
                MAX_KNOWLEDGE_ENTRY_CHARS.min(budget),
                &entry.path,
            );
            budget = budget.saturating_sub(body.chars().count());
            parts.push(format!(
                "<knowledge file=\"{}\" kind=\"{}\" title=\"{}\">\n{}\n</knowledge>",
                entry.path,
                entry.kind.as_str(),
                entry.title.replace('"', "'"),
                body
            ));
        }
        if parts.is_empty() {
            return task.to_string();
        }
        format!(
            "<context>\nGathered for this task: the skills it calls for, the product's memory, and what \
             the company has learned that bears on it.\n\n{}\n</context>\n\n{task}",
            parts.join("\n\n")
        )
    }
}

impl TaskContext<'_> {
    /// The rules a session gives when a tool call first touches a matching file: the
    /// company's and the product repository's rules that have `paths`.
    pub fn scoped_rules(&self, spec: &Spec) -> Vec<Rule> {
        let mut rules = scoped_rules(spec);
        rules.extend(
            self.product_rules
                .iter()
                .filter(|r| !r.paths.is_empty())
                .cloned(),
        );
        rules
    }
}

/// Journal step of a session's task-specific start (its first message and scoped rules),
/// beyond any step of a conversation, below the judge's.
pub const CONTEXT_STEP: u32 = 4_000_000;

/// A session's task-specific start: its first user message (the context, then `task`) and
/// the path-scoped rules it gives on touch.
///
/// Gathered once per attempt and journaled as step [`CONTEXT_STEP`] of `journal.1`: the files
/// it reads (memory, rules, knowledge) may change while the task runs, and a conversation
/// resumed after a restart must start exactly as the recorded responses saw it.
pub async fn session_start(
    sources: &Sources<'_>,
    agent: &AgentSpec,
    about: &str,
    task: &str,
    journal: (&crate::store::Store, crate::store::TaskId),
) -> Result<(String, Vec<Rule>), crate::store::StoreError> {
    #[derive(serde::Serialize, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Start {
        message: String,
        scoped_rules: Vec<Rule>,
    }
    let (store, task_id) = journal;
    if let Some(done) = store.action(task_id, CONTEXT_STEP)?
        && done.finished_at.is_some()
        && let Some(start) = done
            .outcome
            .and_then(|o| serde_json::from_value::<Start>(o).ok())
    {
        return Ok((start.message, start.scoped_rules));
    }
    let context = TaskContext::gather(sources, agent, about).await;
    let start = Start {
        message: context.first_message(task),
        scoped_rules: context.scoped_rules(sources.spec),
    };
    let now = chrono::Utc::now();
    let input = serde_json::json!({ "about": about.chars().take(500).collect::<String>() });
    let summary = serde_json::json!({
        "skills": context.skills.iter().map(|s| &s.name).collect::<Vec<_>>(),
        "knowledge": context.knowledge.iter().map(|k| &k.entry.path).collect::<Vec<_>>(),
        "productMemory": context.product_memory.iter().map(|m| &m.file).collect::<Vec<_>>(),
        "scopedRules": start.scoped_rules.iter().map(|r| &r.name).collect::<Vec<_>>(),
    });
    let audit = crate::store::AuditRecord {
        id: 0,
        time: now,
        agent: sources.agent_name.to_string(),
        goal: Some(sources.goal.to_string()),
        task: Some(task_id),
        action: "context".into(),
        input,
        outcome: summary,
        diff: None,
    };
    let outcome = serde_json::to_value(&start).unwrap_or_default();
    // Gathering only reads: the entry is written whole once it is known.
    store.record(
        &crate::store::StepRecord {
            task: task_id,
            goal: sources.goal,
            entry: crate::store::Entry::Whole {
                step: CONTEXT_STEP,
                tool: "Context",
                input: &audit.input,
                outcome: &outcome,
                started_at: now,
            },
            cost: None,
            audit: Some(&audit),
            activity: None,
        },
        chrono::Utc::now(),
    )?;
    Ok((start.message, start.scoped_rules))
}

fn cut(text: &str, max: usize, path: &str) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) => format!("{}\n[... cut; the rest is in {path}]", &text[..at]),
    }
}

/// The path scoped rules were given for in one session, in the order of its tool calls.
#[derive(Debug, Default)]
pub struct RulesGiven {
    names: BTreeSet<String>,
}

impl RulesGiven {
    /// The result content of a successful tool call, with every scoped rule the call brings
    /// into play for the first time appended (`<rule name=...>...</rule>`). Only the call as
    /// the model made it is looked at, so replaying the journal gives the same text.
    pub fn after_call(
        &mut self,
        rules: &[Rule],
        call: &ToolCall,
        root: &Path,
        mut content: String,
    ) -> String {
        let Some(path) = touched_path(call, root) else {
            return content;
        };
        for rule in rules {
            if self.names.contains(&rule.name) || !rule_applies(rule, &path) {
                continue;
            }
            self.names.insert(rule.name.clone());
            content.push_str(&format!(
                "\n\n<rule name=\"{}\" paths=\"{}\">\n{}\n</rule>",
                rule.name,
                rule.paths.join(", "),
                rule.body.trim()
            ));
        }
        content
    }
}

/// The workspace-relative file a `Read`, `Write` or `Edit` works on; `None` for other tools
/// and for paths outside the workspace.
pub fn touched_path(call: &ToolCall, root: &Path) -> Option<String> {
    let raw = match call {
        ToolCall::Tool { name, input } if matches!(name.as_str(), "Read" | "Write" | "Edit") => {
            input.get("file_path").and_then(Value::as_str)?
        }
        ToolCall::Write { path, .. } | ToolCall::Edit { path, .. } => path.as_str(),
        _ => return None,
    };
    let path = Path::new(raw);
    let relative = if path.is_absolute() {
        let canonical = std::fs::canonicalize(root).ok();
        path.strip_prefix(root)
            .ok()
            .or_else(|| canonical.as_deref().and_then(|c| path.strip_prefix(c).ok()))?
    } else {
        path
    };
    let mut parts: Vec<String> = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Whether a rule's `paths` (gitignore-style globs from the workspace root: `src/**/*.ts`,
/// `*.md` at any depth, `docs/` for everything under it, `{ts,tsx}` alternatives) match
/// `path`. A pattern that cannot be parsed matches nothing, and is said so.
pub fn rule_applies(rule: &Rule, path: &str) -> bool {
    let mut builder = GitignoreBuilder::new(".");
    for pattern in &rule.paths {
        if let Err(e) = builder.add_line(None, pattern) {
            tracing::warn!(rule = %rule.file, "paths: {pattern}: {e}; ignored");
        }
    }
    match builder.build() {
        Ok(matcher) => matcher.matched_path_or_any_parents(path, false).is_ignore(),
        Err(e) => {
            tracing::warn!(rule = %rule.file, "paths: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn skill(name: &str, description: &str) -> Skill {
        Skill {
            name: name.into(),
            description: description.into(),
            allowed_tools: Vec::new(),
            body: format!("{name} body"),
            file: format!(".claude/skills/{name}/SKILL.md"),
            name_pos: Default::default(),
            tools_pos: Default::default(),
        }
    }

    fn rule(name: &str, paths: &[&str]) -> Rule {
        Rule {
            name: name.into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            body: format!("{name} body"),
            file: format!(".claude/rules/{name}.md"),
        }
    }

    fn read(path: &str) -> ToolCall {
        ToolCall::Tool {
            name: "Read".into(),
            input: json!({ "file_path": path }),
        }
    }

    #[test]
    fn skills_activate_on_shared_words_or_their_name() {
        let notes = skill(
            "release-notes",
            "Writes release notes for a new version from the changelog.",
        );
        let migrations = skill(
            "db-migrations",
            "Plans database schema migrations with a rollback.",
        );
        let about = "Goal ship-v2: notes on the release of version 2 come from CHANGELOG.md";
        assert!(skill_score(&notes, about).is_some());
        assert_eq!(skill_score(&migrations, about), None);
        // One shared word is not enough for a description that says more.
        assert_eq!(skill_score(&migrations, "the database is slow"), None);
        assert!(skill_score(&migrations, "add a schema migration").is_some());
        // Naming the skill activates it, and outranks overlap.
        let named = skill_score(&migrations, "use db-migrations here").unwrap_or(0);
        assert!(named > skill_score(&notes, about).unwrap_or(0));
        assert_eq!(skill_score(&migrations, "db"), None);
    }

    #[test]
    fn only_held_skills_activate_best_first() {
        let mut spec = Spec::default();
        spec.claude.skills = vec![
            skill("a-notes", "Release notes and changelog."),
            skill("b-notes", "Release notes from the changelog for a version."),
            skill("c-notes", "Release notes."),
        ];
        let agent = AgentSpec {
            skills: vec!["a-notes".into(), "b-notes".into()],
            ..AgentSpec::default()
        };
        let names: Vec<&str> =
            activated_skills(&spec, &agent, "release notes, version 2, changelog")
                .iter()
                .map(|s| s.name.as_str())
                .collect();
        assert_eq!(names, vec!["b-notes", "a-notes"]);
    }

    #[test]
    fn the_system_prompt_holds_unscoped_rules_and_skill_descriptions_only() {
        let mut spec = Spec::default();
        spec.claude.skills = vec![skill("release-notes", "Writes release notes.")];
        spec.claude.rules = vec![rule("always", &[]), rule("typescript", &["**/*.ts"])];
        let agent = AgentSpec {
            title: "Writer".into(),
            prompt: "Write.".into(),
            skills: vec!["release-notes".into()],
            ..AgentSpec::default()
        };
        let system = system_prompt(&spec, "writer", &agent);
        assert_eq!(system.len(), 1);
        let text = &system[0].text;
        assert!(text.contains("always body"), "{text}");
        assert!(!text.contains("typescript body"), "{text}");
        assert!(
            text.contains("- release-notes: Writes release notes."),
            "{text}"
        );
        assert!(!text.contains("release-notes body"), "{text}");
        assert_eq!(scoped_rules(&spec).len(), 1);
    }

    #[test]
    fn rule_paths_follow_gitignore_globs() {
        let ts = rule("ts", &["src/**/*.{ts,tsx}"]);
        assert!(rule_applies(&ts, "src/a.ts"));
        assert!(rule_applies(&ts, "src/ui/b.tsx"));
        assert!(!rule_applies(&ts, "lib/a.ts"));
        assert!(!rule_applies(&ts, "src/a.js"));
        let md = rule("md", &["*.md"]);
        assert!(rule_applies(&md, "README.md") && rule_applies(&md, "docs/x.md"));
        let docs = rule("docs", &["docs/"]);
        assert!(rule_applies(&docs, "docs/guide/x.txt"));
        assert!(!rule_applies(&docs, "src/docs.txt"));
        let negated = rule("not-tests", &["src/**", "!src/tests/**"]);
        assert!(rule_applies(&negated, "src/a.rs"));
        assert!(!rule_applies(&negated, "src/tests/a.rs"));
    }

    #[test]
    fn touched_paths_are_workspace_relative() {
        let root = Path::new("/work/task");
        assert_eq!(
            touched_path(&read("src/a.ts"), root).as_deref(),
            Some("src/a.ts")
        );
        assert_eq!(
            touched_path(&read("/work/task/./src/../src/a.ts"), root).as_deref(),
            Some("src/a.ts")
        );
        assert_eq!(touched_path(&read("/etc/passwd"), root), None);
        assert_eq!(touched_path(&read("../outside.ts"), root), None);
        let bash = ToolCall::Tool {
            name: "Bash".into(),
            input: json!({ "command": "cat src/a.ts" }),
        };
        assert_eq!(touched_path(&bash, root), None);
    }

    #[test]
    fn a_scoped_rule_is_given_once_on_the_first_matching_call_and_the_same_on_replay() {
        let rules = vec![rule("ts", &["**/*.ts"]), rule("docs", &["docs/**"])];
        let root = Path::new("/w");
        let calls = [
            read("README.md"),
            read("src/a.ts"),
            read("src/b.ts"),
            read("docs/x.md"),
        ];
        let run = || {
            let mut given = RulesGiven::default();
            calls
                .iter()
                .map(|c| given.after_call(&rules, c, root, "content".into()))
                .collect::<Vec<_>>()
        };
        let results = run();
        assert_eq!(results[0], "content");
        assert!(results[1].contains("<rule name=\"ts\"") && results[1].contains("ts body"));
        assert_eq!(results[2], "content", "given once");
        assert!(results[3].contains("docs body") && !results[3].contains("ts body"));
        // A session rebuilt from the same calls gives the same results.
        assert_eq!(run(), results);
    }

    #[test]
    fn the_first_message_puts_the_context_before_the_task_within_its_caps() {
        let notes = skill("release-notes", "Writes release notes.");
        let long = "x".repeat(MAX_KNOWLEDGE_ENTRY_CHARS * 2);
        let (knowledge, _) = Knowledge::parse(vec![(
            ".proto/knowledge/learning/long.md".into(),
            format!("---\ntitle: Release \"notes\"\n---\nrelease {long}\n").into_bytes(),
        )]);
        let context = TaskContext {
            skills: vec![&notes],
            product_memory: Vec::new(),
            product_rules: vec![
                Rule {
                    name: "style".into(),
                    paths: Vec::new(),
                    body: "Tabs, not spaces.".into(),
                    file: ".claude/rules/style.md".into(),
                },
                Rule {
                    name: "api".into(),
                    paths: vec!["src/api/**".into()],
                    body: "Version every route.".into(),
                    file: ".claude/rules/api.md".into(),
                },
            ],
            knowledge: knowledge.rank("release", None, 5),
        };
        let message = context.first_message("Do the task.");
        assert!(message.starts_with("<context>"), "{message}");
        assert!(message.ends_with("</context>\n\nDo the task."));
        assert!(message.contains("release-notes body"));
        // The product's unscoped rule comes with the task; its scoped one waits for a touch.
        assert!(message.contains("<rule name=\"style\" scope=\"product\">\nTabs, not spaces."));
        assert!(!message.contains("Version every route."));
        let scoped = context.scoped_rules(&Spec::default());
        assert_eq!(scoped.len(), 1);
        assert_eq!(scoped[0].name, "api");
        assert!(message.contains(
            "<knowledge file=\".proto/knowledge/learning/long.md\" kind=\"learning\" title=\"Release 'notes'\">"
        ));
        assert!(message.contains("[... cut; the rest is in .proto/knowledge/learning/long.md]"));
        assert!(message.len() < MAX_KNOWLEDGE_ENTRY_CHARS + 1_000);
        assert_eq!(TaskContext::default().first_message("Do it."), "Do it.");
    }
}
