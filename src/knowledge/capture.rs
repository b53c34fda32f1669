//! What the company learns from its own work, as knowledge entries: the pure half of
//! knowledge capture. When an attempt ends, [`derive`] turns what happened into
//! [`Capture`]s without a model — a failure and the change that then met the goal, an
//! attempt budget spent on an error that would not go away, an approval a person denied —
//! and an agent adds its own through the `Remember` tool. The store keeps every capture
//! until the controller's record commit writes it (see `engine::records`); there
//! [`merge`] folds it into the entry file already at its path, so the same lesson seen
//! again gains an evidence line rather than a twin file.
//!
//! An entry's path is `.proto/knowledge/<kind>/<slug>.md`; the slug of a lesson comes from
//! the goal and the failure's [`signature`] (the error with its numbers, hashes, paths and
//! times taken out), so "exit status 1 at 12:01 in /tmp/a1b2" and "exit status 2 at 13:40
//! in /tmp/c3d4" are one lesson.
//!
//! ```text
//! ---
//! title: "build: the check failed: <n> tests failed; fixed"
//! tags: ["build", "lesson"]
//! product: "app"
//! goal: "build"
//! task: 12
//! sourceCommit: "4f1c..."
//! confidence: "high"
//! created: "2026-12-06T08:00:00Z"
//! signature: "the check failed: <n> tests failed"
//! ---
//! ... the failure, the change that fixed it ...
//!
//! ## Evidence
//! - 2026-12-06T08:00:00Z task 12 attempt 2: failed with this error, then met (4f1c...)
//! ```

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{FOLDER, KnowledgeKind};

/// The heading evidence lines are listed under.
pub const EVIDENCE_HEADING: &str = "## Evidence";
/// How much of an error an entry quotes.
const ERROR_CHARS: usize = 1500;
/// How much of the fixing change an entry quotes.
const DIFF_CHARS: usize = 3000;
/// How long a signature is at most.
const SIGNATURE_CHARS: usize = 200;

/// How much an entry may be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Confidence {
    /// Observed by the controller: the check's own verdict before and after.
    High,
    /// Said by an agent (the `Remember` tool), not verified.
    Medium,
    /// Seen without its outcome (a failure not resolved yet).
    Low,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::High => "high",
            Confidence::Medium => "medium",
            Confidence::Low => "low",
        }
    }
}

/// One thing learned, waiting to be written as (or into) an entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capture {
    pub kind: KnowledgeKind,
    /// The entry's file name without `.md`: equal slugs are the same lesson.
    pub slug: String,
    pub title: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<i64>,
    /// The product commit the lesson was drawn from (the delivered fix), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_commit: Option<String>,
    pub confidence: Confidence,
    pub created: DateTime<Utc>,
    /// The failure's signature, for lessons drawn from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    pub body: String,
    /// One line saying where and when this was seen; what a repeat adds to the entry.
    pub evidence: String,
    /// Only adds its evidence to an entry that exists (a failure seen again): never makes
    /// one on its own.
    #[serde(default)]
    pub evidence_only: bool,
}

impl Capture {
    /// Where the entry lives, from the declaration's root.
    pub fn path(&self) -> String {
        entry_path(self.kind, &self.slug)
    }

    /// The entry file as first written: frontmatter, body, and the first evidence line.
    pub fn render(&self) -> String {
        let mut front = vec![
            format!("title: {}", quote(&self.title)),
            format!(
                "tags: [{}]",
                self.tags
                    .iter()
                    .map(|t| quote(t))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ];
        if let Some(product) = &self.product {
            front.push(format!("product: {}", quote(product)));
        }
        if let Some(goal) = &self.goal {
            front.push(format!("goal: {}", quote(goal)));
        }
        if let Some(task) = self.task {
            front.push(format!("task: {task}"));
        }
        if let Some(commit) = &self.source_commit {
            front.push(format!("sourceCommit: {}", quote(commit)));
        }
        front.push(format!("confidence: {}", quote(self.confidence.as_str())));
        front.push(format!("created: {}", quote(&time(self.created))));
        if let Some(signature) = &self.signature {
            front.push(format!("signature: {}", quote(signature)));
        }
        format!(
            "---\n{}\n---\n{}\n\n{EVIDENCE_HEADING}\n- {}\n",
            front.join("\n"),
            self.body.trim(),
            self.evidence_line()
        )
    }

    fn evidence_line(&self) -> String {
        one_line(&self.evidence)
    }
}

/// `.proto/knowledge/<kind>/<slug>.md`.
pub fn entry_path(kind: KnowledgeKind, slug: &str) -> String {
    format!("{FOLDER}/{}/{slug}.md", kind.as_str())
}

/// The entry `capture` makes of `existing` (the file at its path, if there is one):
/// `existing` with the capture's evidence line added, a new entry, or `None` when nothing
/// changes (the line is there already: the capture was written before; or an
/// evidence-only capture finds no entry to add to).
pub fn merge(existing: Option<&str>, capture: &Capture) -> Option<String> {
    let line = format!("- {}", capture.evidence_line());
    match existing {
        None if capture.evidence_only => None,
        None => Some(capture.render()),
        Some(text) if text.lines().any(|l| l.trim_end() == line) => None,
        Some(text) => {
            let mut out = text.trim_end().to_string();
            if !text.lines().any(|l| l.trim_end() == EVIDENCE_HEADING) {
                out.push_str("\n\n");
                out.push_str(EVIDENCE_HEADING);
            }
            out.push('\n');
            out.push_str(&line);
            out.push('\n');
            Some(out)
        }
    }
}

/// What a failure is, whatever run it happened in: the error lowercased, with hashes,
/// paths, times and numbers replaced by placeholders and spaces collapsed, so the same
/// failure seen twice has one signature.
pub fn signature(error: &str) -> String {
    static PATTERNS: std::sync::LazyLock<Vec<(regex::Regex, &'static str)>> =
        std::sync::LazyLock::new(|| {
            [
                // Times first: they hold numbers and colons.
                (
                    r"\d{4}-\d{2}-\d{2}[t ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(z|[+-]\d{2}:?\d{2})?",
                    "<time>",
                ),
                (r"\b\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\b", "<time>"),
                (r"(\.{0,2}/)?[\w.\-]+(/[\w.\-]+)+/?", "<path>"),
                (r"\b(0x)?[0-9a-f]{7,}\b", "<hex>"),
                (r"\d+(\.\d+)?", "<n>"),
                (r"\s+", " "),
            ]
            .into_iter()
            .filter_map(|(p, r)| regex::Regex::new(p).ok().map(|re| (re, r)))
            .collect()
        });
    let mut text = error.to_lowercase();
    for (re, with) in PATTERNS.iter() {
        text = re.replace_all(&text, *with).into_owned();
    }
    text.trim().chars().take(SIGNATURE_CHARS).collect()
}

/// A short stable id of `text` (the first hex digits of its SHA-256).
pub fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..4])
}

/// A file-name-safe form of `text`: lowercase letters, digits and dashes, at most 40.
pub fn slug_of(text: &str) -> String {
    let mut slug = String::new();
    for c in text.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-').to_string();
    if slug.is_empty() {
        "entry".into()
    } else {
        slug
    }
}

/// How an attempt ended, as capture sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ending<'a> {
    /// The goal is met (`delivered` holds the work, when there was work).
    Met { delivered: Option<&'a str> },
    /// The attempt failed with `error`; `exhausted` when it was the last one allowed.
    Failed { error: &'a str, exhausted: bool },
}

/// What [`derive`] reads about an attempt that ended.
#[derive(Clone, Debug)]
pub struct Ended<'a> {
    pub goal: &'a str,
    pub description: &'a str,
    pub product: &'a str,
    pub task: i64,
    /// Which attempt of the task this was (1 = the first).
    pub attempt: u32,
    pub ending: Ending<'a>,
    /// The error the attempt before this one ended with, if it failed.
    pub earlier_error: Option<&'a str>,
    /// The unified diff of what this attempt changed, if it changed files.
    pub change: Option<&'a str>,
    pub now: DateTime<Utc>,
}

/// The entries an ended attempt teaches, without a model:
/// - met after a failure: a `lesson_learned` entry with the failure and the change that
///   then met the goal (confidence high: the check said both);
/// - failed: evidence for the lesson of the same failure, if one exists;
/// - failed with no attempt left: a `lesson_learned` entry that the failure was not
///   resolved (confidence low), so the next worker starts from what did not work.
pub fn derive(ended: &Ended<'_>) -> Vec<Capture> {
    let at = time(ended.now);
    match ended.ending {
        Ending::Met { delivered } => {
            let Some(error) = ended.earlier_error else {
                return Vec::new();
            };
            let signature = signature(error);
            let mut body = format!(
                "Goal `{}` ({}) failed with:\n\n```text\n{}\n```\n",
                ended.goal,
                one_line(ended.description),
                cut(error, ERROR_CHARS)
            );
            match ended.change.filter(|c| !c.trim().is_empty()) {
                Some(diff) => body.push_str(&format!(
                    "\nThe change that then met it:\n\n```diff\n{}\n```\n",
                    cut(diff, DIFF_CHARS)
                )),
                None => body.push_str("\nThe next attempt met it without changing a file.\n"),
            }
            let delivered_text = delivered.map(|d| format!(" ({})", short(d)));
            vec![Capture {
                kind: KnowledgeKind::LessonLearned,
                slug: lesson_slug(ended.goal, &signature),
                title: format!("{}: {}; fixed", ended.goal, cut_line(&signature, 100)),
                tags: vec![ended.goal.to_string(), "lesson".into(), "fixed".into()],
                product: Some(ended.product.to_string()),
                goal: Some(ended.goal.to_string()),
                task: Some(ended.task),
                source_commit: delivered.map(str::to_string),
                confidence: Confidence::High,
                created: ended.now,
                signature: Some(signature),
                body,
                evidence: format!(
                    "{at} task {} attempt {}: failed with this error, then met{}",
                    ended.task,
                    ended.attempt,
                    delivered_text.unwrap_or_default()
                ),
                evidence_only: false,
            }]
        }
        Ending::Failed { error, exhausted } => {
            let signature = signature(error);
            let seen_again = Capture {
                kind: KnowledgeKind::LessonLearned,
                slug: lesson_slug(ended.goal, &signature),
                title: format!("{}: {}", ended.goal, cut_line(&signature, 100)),
                tags: vec![ended.goal.to_string(), "lesson".into()],
                product: Some(ended.product.to_string()),
                goal: Some(ended.goal.to_string()),
                task: Some(ended.task),
                source_commit: None,
                confidence: Confidence::Low,
                created: ended.now,
                signature: Some(signature.clone()),
                body: String::new(),
                evidence: format!(
                    "{at} task {} attempt {}: failed with this error again",
                    ended.task, ended.attempt
                ),
                evidence_only: true,
            };
            let mut captures = vec![seen_again];
            if exhausted {
                captures.push(Capture {
                    kind: KnowledgeKind::LessonLearned,
                    slug: format!("unresolved-{}", lesson_slug(ended.goal, &signature)),
                    title: format!(
                        "{}: {} (not resolved)",
                        ended.goal,
                        cut_line(&signature, 100)
                    ),
                    tags: vec![ended.goal.to_string(), "lesson".into(), "unresolved".into()],
                    product: Some(ended.product.to_string()),
                    goal: Some(ended.goal.to_string()),
                    task: Some(ended.task),
                    source_commit: None,
                    confidence: Confidence::Low,
                    created: ended.now,
                    signature: Some(signature),
                    body: format!(
                        "Goal `{}` ({}) used up its attempts; the last one ended with:\n\n```text\n{}\n```\n\nWhat was tried did not work: start from a different approach.\n",
                        ended.goal,
                        one_line(ended.description),
                        cut(error, ERROR_CHARS)
                    ),
                    evidence: format!(
                        "{at} task {} attempt {}: attempts exhausted with this error",
                        ended.task, ended.attempt
                    ),
                    evidence_only: false,
                });
            }
            captures
        }
    }
}

/// A person denied an action of a goal's work: what they said, so agents stop asking.
pub fn denial(
    goal: &str,
    product: Option<&str>,
    task: i64,
    action: &str,
    by: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Capture {
    Capture {
        kind: KnowledgeKind::LessonLearned,
        slug: format!("denied-{}-{}", slug_of(goal), short_hash(action)),
        title: format!("{goal}: {action} was denied"),
        tags: vec![
            goal.to_string(),
            "approval".into(),
            "denied".into(),
            action.to_string(),
        ],
        product: product.map(str::to_string),
        goal: Some(goal.to_string()),
        task: Some(task),
        source_commit: None,
        confidence: Confidence::High,
        created: now,
        signature: None,
        body: format!(
            "A person was asked to approve `{action}` for goal `{goal}` and denied it.\n\nTheir reason: {}\n\nDo not ask for the same action again without addressing the reason.\n",
            one_line(reason)
        ),
        evidence: format!(
            "{} task {task}: {action} denied by {by}: {}",
            time(now),
            cut_line(reason, 200)
        ),
        evidence_only: false,
    }
}

/// What an agent asked to be remembered (the `Remember` tool).
pub fn remembered(
    kind: KnowledgeKind,
    title: &str,
    body: &str,
    tags: Vec<String>,
    (agent, goal, product, task, step): (&str, &str, Option<&str>, i64, u32),
    now: DateTime<Utc>,
) -> Capture {
    Capture {
        kind,
        slug: format!("{}-{}", slug_of(title), short_hash(&title.to_lowercase())),
        title: one_line(title),
        tags,
        product: product.map(str::to_string),
        goal: Some(goal.to_string()),
        task: Some(task),
        source_commit: None,
        confidence: Confidence::Medium,
        created: now,
        signature: None,
        body: body.trim().to_string(),
        // No time: a call made again after a restart adds no second line.
        evidence: format!("task {task} step {step}: remembered by {agent}"),
        evidence_only: false,
    }
}

/// The lessons among `captures` (of any goal) that bear on `query` — a retry's goal and
/// its last error — best first, at most `limit`: the captures of each entry folded into the
/// entry as the record commit would write it, then ranked as every session's knowledge is
/// (BM25, see [`Knowledge::rank`]). Lessons of another product are left out.
pub fn ranked_lessons(
    captures: &[Capture],
    query: &str,
    product: Option<&str>,
    limit: usize,
) -> Vec<super::Entry> {
    let mut files: std::collections::BTreeMap<String, String> = Default::default();
    for capture in captures
        .iter()
        .filter(|c| c.kind == KnowledgeKind::LessonLearned)
    {
        let path = capture.path();
        let existing = files.get(&path).map(String::as_str);
        if let Some(text) = merge(existing, capture) {
            files.insert(path, text);
        }
    }
    let (knowledge, _) = super::Knowledge::parse(
        files
            .into_iter()
            .map(|(p, t)| (p, t.into_bytes()))
            .collect(),
    );
    knowledge
        .rank(query, product, limit)
        .into_iter()
        .map(|r| r.entry.clone())
        .collect()
}

/// What the summary model is told: answer with one entry as JSON, or `null`.
pub const SUMMARY_SYSTEM: &str = "You write down what a finished task taught, for the agents that come after. Read the goal and the steps that met it, and answer with one JSON object and nothing else: {\"kind\": one of \"technical_decision\", \"learning\", \"pattern\", \"best_practice\", \"lesson_learned\", \"title\": one line, \"body\": a few sentences of markdown, \"tags\": [words]}. Say only what a later agent could use; if the task taught nothing worth keeping, answer null. Never include secrets.";

/// The summary model's answer as a capture: `None` for `null` or an answer that is not the
/// JSON asked for (a summary is never worth failing a task over).
pub fn summarized(
    answer: &str,
    (goal, product, task): (&str, &str, i64),
    now: DateTime<Utc>,
) -> Option<Capture> {
    let text = answer.trim();
    let text = text
        .strip_prefix("```json")
        .or_else(|| text.strip_prefix("```"))
        .map(|t| t.trim_end().trim_end_matches("```"))
        .unwrap_or(text);
    let value: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
    let field = |k: &str| value.get(k).and_then(serde_json::Value::as_str);
    let kind = KnowledgeKind::from_folder(field("kind")?)?;
    let (title, body) = (field("title")?.trim(), field("body")?.trim());
    if title.is_empty() || body.is_empty() {
        return None;
    }
    let tags = value
        .get("tags")
        .and_then(serde_json::Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut capture = remembered(
        kind,
        title,
        body,
        tags,
        ("summary", goal, Some(product), task, 0),
        now,
    );
    capture.evidence = format!("task {task}: summarized after the goal was met");
    Some(capture)
}

/// The slug of the lesson of `goal` failing with `signature`.
pub fn lesson_slug(goal: &str, signature: &str) -> String {
    format!("{}-{}", slug_of(goal), short_hash(signature))
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A YAML double-quoted scalar (a JSON string is one).
fn quote(text: &str) -> String {
    serde_json::Value::String(one_line(text)).to_string()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn cut_line(text: &str, max: usize) -> String {
    cut(&one_line(text), max)
}

fn cut(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max).collect();
    format!("{kept}\n[... cut]")
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::Knowledge;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-06T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn ended<'a>(ending: Ending<'a>, earlier: Option<&'a str>) -> Ended<'a> {
        Ended {
            goal: "build",
            description: "The build passes.",
            product: "app",
            task: 7,
            attempt: 2,
            ending,
            earlier_error: earlier,
            change: Some("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-bad\n+good\n"),
            now: now(),
        }
    }

    #[test]
    fn signatures_forget_numbers_hashes_paths_and_times() {
        let a = signature(
            "Check FAILED at 2026-12-06T08:00:01Z: exit status 1 in /tmp/work/a1b2 (commit 4f1c9e2d7a)",
        );
        let b = signature(
            "check failed at 2027-01-02 13:40:59: exit status 2 in /var/tmp/zz/c3 (commit 00ffee11223344)",
        );
        assert_eq!(a, b);
        assert_eq!(
            a,
            "check failed at <time>: exit status <n> in <path> (commit <hex>)"
        );
        assert_ne!(signature("exit status 1"), signature("no such file"));
    }

    #[test]
    fn a_failure_then_a_fix_is_one_lesson_with_its_change() {
        let captures = derive(&ended(
            Ending::Met {
                delivered: Some("4f1c9e2d7a00"),
            },
            Some("the check fails: grep found no 'good' in out.txt (exit 1)"),
        ));
        assert_eq!(captures.len(), 1);
        let lesson = &captures[0];
        assert_eq!(lesson.kind, KnowledgeKind::LessonLearned);
        assert!(
            lesson
                .path()
                .starts_with(".proto/knowledge/lesson_learned/build-")
        );
        let text = lesson.render();
        assert!(text.contains("+good"), "{text}");
        assert!(text.contains("grep found no 'good'"), "{text}");
        assert!(text.contains("confidence: \"high\""), "{text}");
        // What is written is an entry the reader takes in.
        let (k, warnings) = Knowledge::parse(vec![(lesson.path(), text.into_bytes())]);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(k.entries()[0].product.as_deref(), Some("app"));
        assert!(k.entries()[0].title.starts_with("build: the check fails"));
        // Met at the first try: nothing learned.
        assert!(derive(&ended(Ending::Met { delivered: None }, None)).is_empty());
    }

    #[test]
    fn the_same_failure_again_adds_evidence_not_a_twin() {
        let first = derive(&ended(
            Ending::Met { delivered: None },
            Some("exit status 1 at 08:00"),
        ))
        .remove(0);
        let entry = merge(None, &first).unwrap();
        // Written twice (a commit whose note was lost): unchanged.
        assert_eq!(merge(Some(&entry), &first), None);
        let mut again = ended(
            Ending::Failed {
                error: "exit status 2 at 09:13",
                exhausted: false,
            },
            None,
        );
        again.task = 9;
        let seen = derive(&again);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path(), first.path());
        let grown = merge(Some(&entry), &seen[0]).unwrap();
        assert_eq!(grown.matches("\n- ").count(), 2, "{grown}");
        assert!(grown.contains("task 9 attempt 2: failed with this error again"));
        // With no lesson yet, a failure alone writes nothing.
        assert_eq!(merge(None, &seen[0]), None);
        // The last attempt's failure is recorded as not resolved.
        let exhausted = derive(&ended(
            Ending::Failed {
                error: "exit status 2",
                exhausted: true,
            },
            None,
        ));
        assert_eq!(exhausted.len(), 2);
        assert!(exhausted[1].slug.starts_with("unresolved-build-"));
    }

    #[test]
    fn a_retry_ranks_the_lessons_of_similar_failures_first() {
        let lesson = |goal: &str, error: &str| {
            let mut e = ended(Ending::Met { delivered: None }, Some(error));
            e.goal = goal;
            derive(&e).remove(0)
        };
        let captures = vec![
            lesson(
                "docs",
                "markdown link check failed: dead link to the changelog",
            ),
            lesson("build", "cargo test failed: assertion in parser module"),
            lesson("lint", "clippy warning: needless borrow"),
        ];
        let ranked = ranked_lessons(
            &captures,
            "api: cargo test failed: assertion in router module",
            Some("app"),
            2,
        );
        assert_eq!(ranked[0].title, captures[1].title, "{ranked:#?}");
        assert!(ranked.len() <= 2);
        // Another product's lessons stay with it.
        assert!(ranked_lessons(&captures, "cargo test failed", Some("site"), 3).is_empty());
    }

    #[test]
    fn a_summary_is_kept_only_when_it_is_the_entry_asked_for() {
        let ok = summarized(
            "```json\n{\"kind\": \"pattern\", \"title\": \"Greetings live in out.txt\", \"body\": \"Write one word.\", \"tags\": [\"greet\"]}\n```",
            ("greet", "app", 4),
            now(),
        )
        .unwrap();
        assert_eq!(ok.kind, KnowledgeKind::Pattern);
        assert_eq!(ok.tags, vec!["greet"]);
        assert!(
            ok.path()
                .starts_with(".proto/knowledge/pattern/greetings-live-in-out-txt-")
        );
        assert_eq!(summarized("null", ("g", "app", 4), now()), None);
        assert_eq!(summarized("I learned a lot.", ("g", "app", 4), now()), None);
        assert_eq!(
            summarized(
                "{\"kind\": \"gossip\", \"title\": \"t\", \"body\": \"b\"}",
                ("g", "app", 4),
                now()
            ),
            None
        );
    }

    #[test]
    fn denials_and_remembered_entries_have_stable_paths() {
        let a = denial(
            "release",
            Some("app"),
            3,
            "publish_npm",
            "alice",
            "not before Monday",
            now(),
        );
        let b = denial("release", None, 4, "publish_npm", "bob", "no", now());
        assert_eq!(a.path(), b.path());
        assert!(a.render().contains("not before Monday"));
        let r = remembered(
            KnowledgeKind::BestPractice,
            "Run the linter before committing",
            "cargo clippy first.",
            vec!["lint".into()],
            ("ceo", "build", Some("app"), 5, 3),
            now(),
        );
        assert!(
            r.path()
                .starts_with(".proto/knowledge/best_practice/run-the-linter-before-committing-"),
            "{}",
            r.path()
        );
        assert_eq!(r.confidence, Confidence::Medium);
    }
}
