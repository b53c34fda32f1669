//! A judge's verdict, and what makes it count. A judge grades a workspace against a rubric
//! with read-only tools; its pass stands only if it cites what it looked at — paths it read
//! or searched, or commands it ran, in its own tool calls of this session — and every path
//! it cites exists. A judge that answers "met" without reading has not judged: that is a
//! failed check, with the reason, never a goal reported met.

use std::path::Path;

use serde::Deserialize;

use super::Called;
use crate::computer::workspace::normalize;
use crate::computer::{Computer, Workspace};

/// The judge's instructions: inspect with read-only tools, answer with a verdict citing its
/// evidence.
pub const JUDGE_SYSTEM: &str = "You are a strict, fair reviewer. Inspect the workspace with the Read, Glob and Grep \
tools and grade it against the rubric you are given. Do not guess: read the files the rubric is about. When you \
have decided, answer with one JSON object and nothing else: {\"pass\": true or false, \"reason\": \"one or two \
sentences\", \"evidence\": [\"each path you read or searched that shows it, as you gave it to the tool\"]}. A pass \
that cites nothing you read is not accepted.";

/// The judge's verdict, as it must answer.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Verdict {
    pub pass: bool,
    pub reason: String,
    /// Paths the judge read or searched, or commands it ran, that show its verdict.
    #[serde(default)]
    pub evidence: Vec<String>,
}

/// The first JSON object in `text` that is a valid verdict.
pub fn parse_verdict(text: &str) -> Option<Verdict> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    (start < end)
        .then(|| serde_json::from_str(&text[start..=end]).ok())
        .flatten()
}

/// What a judge's answer decides: `Ok` with the reason of a pass that stands, `Err` with why
/// the check fails (the judge said so, or its pass cannot be shown).
pub async fn judged(
    text: &str,
    calls: &[Called],
    computer: &dyn Computer,
    workspace: &Workspace,
) -> Result<String, String> {
    let verdict = parse_verdict(text)
        .ok_or_else(|| "the judge answered without a valid JSON verdict".to_string())?;
    if !verdict.pass {
        return Err(format!("judge: {}", verdict.reason));
    }
    let paths = cited_paths(&verdict, calls, workspace.root())?;
    for path in paths {
        if !exists(computer, workspace, &path).await {
            return Err(format!(
                "the judge passed citing {path}, which does not exist in the workspace"
            ));
        }
    }
    Ok(format!("judge: {}", verdict.reason))
}

/// The workspace paths a passing verdict cites, each backed by one of the judge's own
/// successful calls; or why the pass does not stand. Commands it ran count as evidence but
/// name no path.
pub fn cited_paths(
    verdict: &Verdict,
    calls: &[Called],
    root: &Path,
) -> Result<Vec<String>, String> {
    let cited: Vec<&str> = verdict
        .evidence
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .collect();
    if cited.is_empty() {
        return Err(
            "the judge passed without citing evidence (no path it read, no command it ran)".into(),
        );
    }
    let mut paths = Vec::new();
    for item in cited {
        if calls.iter().any(|c| c.ok && command_of(c) == Some(item)) {
            continue;
        }
        let path = workspace_path(strip_lines(item), root);
        if !calls.iter().any(|c| c.ok && backs(c, &path, root)) {
            return Err(format!(
                "the judge passed citing {item}, which none of its own tool calls read or found"
            ));
        }
        paths.push(path);
    }
    Ok(paths)
}

fn command_of(call: &Called) -> Option<&str> {
    call.input
        .get("command")
        .and_then(|c| c.as_str())
        .map(str::trim)
}

/// Whether `call` read `path`, searched in it, or found it.
fn backs(call: &Called, path: &str, root: &Path) -> bool {
    let named = ["file_path", "path"]
        .iter()
        .filter_map(|k| call.input.get(*k).and_then(|v| v.as_str()))
        .any(|p| workspace_path(p, root) == path);
    // A search lists what it found, one path to a line (`path` or `path:line:text`).
    let found = matches!(call.tool.as_str(), "Glob" | "Grep")
        && call.output.lines().any(|line| {
            let line = workspace_path(line.trim(), root);
            line.strip_prefix(path)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
        });
    named || found
}

/// `src/a.rs:12` or `src/a.rs:12-20` → `src/a.rs`.
fn strip_lines(item: &str) -> &str {
    match item.rsplit_once(':') {
        Some((path, lines))
            if !lines.is_empty() && lines.chars().all(|c| c.is_ascii_digit() || c == '-') =>
        {
            path
        }
        _ => item,
    }
}

/// A path as the workspace names it: relative to its root, in the one normal form every
/// workspace guard judges ([`normalize`]: no `.`, no `..`, no trailing `/`); `.` for the
/// root. A path outside the root is left as written, so it backs nothing.
fn workspace_path(raw: &str, root: &Path) -> String {
    let relative = Path::new(raw).strip_prefix(root).unwrap_or(Path::new(raw));
    match normalize(&relative.to_string_lossy()) {
        Some(p) if p.as_os_str().is_empty() => ".".into(),
        Some(p) => p.to_string_lossy().into_owned(),
        None => raw.to_string(),
    }
}

async fn exists(computer: &dyn Computer, workspace: &Workspace, path: &str) -> bool {
    if path == "." {
        return true;
    }
    matches!(computer.read(workspace, path).await, Ok(Some(_)))
        || computer.list(workspace, path).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(tool: &str, input: serde_json::Value, output: &str, ok: bool) -> Called {
        Called {
            tool: tool.into(),
            input,
            output: output.into(),
            ok,
        }
    }

    fn verdict(evidence: &[&str]) -> Verdict {
        Verdict {
            pass: true,
            reason: "fine".into(),
            evidence: evidence.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn verdicts_are_validated() {
        assert_eq!(
            parse_verdict(
                "Looks good.\n{\"pass\": true, \"reason\": \"all there\", \"evidence\": [\"a.txt\"]}"
            ),
            Some(verdict(&["a.txt"]).with_reason("all there"))
        );
        assert_eq!(parse_verdict("{\"pass\": \"yes\"}"), None);
        assert_eq!(parse_verdict("no json"), None);
    }

    impl Verdict {
        fn with_reason(mut self, reason: &str) -> Self {
            self.reason = reason.into();
            self
        }
    }

    #[test]
    fn a_pass_must_cite_what_the_judge_itself_read() {
        let root = Path::new("/w/ws");
        let read = call(
            "Read",
            json!({"file_path": "/w/ws/docs/a.md"}),
            "1\thello",
            true,
        );
        let failed = call(
            "Read",
            json!({"file_path": "b.md"}),
            "does not exist",
            false,
        );
        let grep = call(
            "Grep",
            json!({"pattern": "hello", "path": "src"}),
            "src/x.rs:3:hello\n/w/ws/src/y.rs",
            true,
        );
        let run = call("Bash", json!({"command": "cargo test"}), "ok", true);
        let calls = [read, failed, grep, run];
        type Case<'a> = (&'a [&'a str], Result<Vec<&'a str>, &'a str>);
        let table: [Case; 9] = [
            (&[], Err("without citing evidence")),
            (&["  "], Err("without citing evidence")),
            (&["docs/a.md"], Ok(vec!["docs/a.md"])),
            (&["./docs/a.md:1-3"], Ok(vec!["docs/a.md"])),
            (&["/w/ws/docs/a.md"], Ok(vec!["docs/a.md"])),
            // Read but failed: not evidence.
            (&["b.md"], Err("none of its own tool calls")),
            // Found by a search, or searched in.
            (
                &["src/x.rs", "src/y.rs", "src"],
                Ok(vec!["src/x.rs", "src/y.rs", "src"]),
            ),
            (&["cargo test"], Ok(vec![])),
            (&["docs/a.md", "README.md"], Err("README.md")),
        ];
        for (evidence, expected) in table {
            let got = cited_paths(&verdict(evidence), &calls, root);
            match (got, expected) {
                (Ok(paths), Ok(want)) => assert_eq!(paths, want, "{evidence:?}"),
                (Err(why), Err(want)) => assert!(why.contains(want), "{evidence:?}: {why}"),
                (got, want) => panic!("{evidence:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
