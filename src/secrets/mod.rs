//! Secrets never leave: what the controller writes to git (an agent's commits, the playbook's
//! and delivery's commits, the company's records) is scanned for credentials first. A commit
//! of product work that adds one is refused with [`Refused`], whose message names the file,
//! line and rule so the agent can take the value out; the company's records (audit lines
//! carry tool inputs such as a `Write`'s content or a command line) are written with the
//! secret replaced by [`MARKER`] instead, because the record of what happened must not be
//! lost. What a tool shows the model is not scanned: the agent needs to see its own work.
//!
//! Two detectors, one result:
//! - the rules ([`rules`]): gitleaks' default rule set (MIT) with the Kingfisher and
//!   secrets-scanner packs, as the `secrets_scanner` crate bundles and matches them. Chosen
//!   over a hand-written list because keeping ~1,000 vendor formats right is a project of its
//!   own; over the `keyspoor` crate because it needs a newer Rust than this project's.
//! - the entropy check ([`entropy`]): a random-looking value assigned to a secret-like name.
//!
//! ```
//! let text = "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n";
//! let found = proto::secrets::scan("config.ini", text);
//! assert_eq!(found[0].line, 1);
//! assert!(!proto::secrets::redact("config.ini", text).contains("AKIA"));
//! ```

mod entropy;
mod rules;

use std::fmt;

use thiserror::Error;

use rules::Hit;

/// What a secret is replaced with where it is redacted: plain in JSON strings, YAML scalars,
/// markdown and shell, and matched by no rule.
pub const MARKER: &str = "(redacted)";

/// Excerpts are cut to this many characters.
const EXCERPT_CHARS: usize = 120;

/// One secret found: where, by which rule, and the line it is on with the secret replaced by
/// [`MARKER`]. It never holds the secret itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The file, as the caller named it (empty for text that is no file).
    pub file: String,
    /// 1-based line in the file.
    pub line: usize,
    /// The rule's id (`aws-access-token`, `private-key`, `high-entropy-assignment`).
    pub rule: String,
    /// What the rule looks for, in its own words (first clause).
    pub description: String,
    /// The line, redacted.
    pub excerpt: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = if self.file.is_empty() {
            format!("line {}", self.line)
        } else {
            format!("{}:{}", self.file, self.line)
        };
        write!(
            f,
            "{place} looks like a secret ({}; rule {}): `{}`",
            self.description, self.rule, self.excerpt
        )
    }
}

/// A commit refused because what it adds holds secrets.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub struct Refused {
    pub findings: Vec<Finding>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not committed: ")?;
        for (i, finding) in self.findings.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{finding}")?;
        }
        write!(
            f,
            ". Remove the value (read it from the environment or a secret store at run time \
             instead) and commit again; nothing was committed or pushed"
        )
    }
}

/// Every secret in `text`, the content of `file` (a path, or empty).
pub fn scan(file: &str, text: &str) -> Vec<Finding> {
    let hits = hits(file, text);
    hits.iter()
        .map(|hit| Finding {
            file: file.to_string(),
            line: line_of(text, hit.start),
            rule: hit.rule.clone(),
            description: short(&hit.description),
            excerpt: excerpt(text, hit.start, &hits),
        })
        .collect()
}

/// `text` with every secret [`scan`] finds replaced by [`MARKER`].
pub fn redact(file: &str, text: &str) -> String {
    let hits = hits(file, text);
    replace(text, &ranges(&hits))
}

/// The secrets a unified diff (`git diff -U0`) adds: its added lines are scanned file by
/// file, with the files' line numbers. Removed and unchanged lines are not: taking a secret
/// out must not be refused.
pub fn scan_diff(diff: &str) -> Vec<Finding> {
    added_lines(diff)
        .into_iter()
        .flat_map(|file| {
            let text: String = file.lines.iter().map(|(_, l)| format!("{l}\n")).collect();
            scan(&file.path, &text)
                .into_iter()
                .map(|mut finding| {
                    if let Some((number, _)) = file.lines.get(finding.line.saturating_sub(1)) {
                        finding.line = *number;
                    }
                    finding
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The findings of both detectors, in text order, one per span (a span two rules match is
/// reported by the first).
fn hits(file: &str, text: &str) -> Vec<Hit> {
    let mut hits = rules::hits(file, text);
    hits.extend(entropy::hits(text));
    // `apiKeyEnv: ANTHROPIC_API_KEY` names where a key is, which is what we ask for: the
    // generic rules weigh the name's letters as if it were random.
    hits.retain(|hit| !is_variable_name(text.get(hit.start..hit.end).unwrap_or_default()));
    hits.sort_by(|a, b| (a.start, a.end, &a.rule).cmp(&(b.start, b.end, &b.rule)));
    let mut kept: Vec<Hit> = Vec::new();
    for hit in hits {
        if kept.iter().any(|k| k.start < hit.end && hit.start < k.end) {
            continue;
        }
        kept.push(hit);
    }
    kept
}

/// An environment variable's name (`ANTHROPIC_API_KEY`): capitals and digits in words
/// joined by underscores. A rule without a secret group matches the assignment whole
/// (`apiKeyEnv: ANTHROPIC_API_KEY`): its value is the last word.
fn is_variable_name(span: &str) -> bool {
    let name = span
        .split(|c: char| c.is_whitespace() || "=:\"'`$(){},;".contains(c))
        .rfind(|word| !word.is_empty())
        .unwrap_or_default();
    name.contains('_')
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The byte ranges of `hits`, merged, widened to character boundaries.
fn ranges(hits: &[Hit]) -> Vec<(usize, usize)> {
    let mut ranges: Vec<(usize, usize)> = hits.iter().map(|h| (h.start, h.end)).collect();
    ranges.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

fn replace(text: &str, ranges: &[(usize, usize)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut cursor = 0;
    for &(start, end) in ranges {
        let start = floor_boundary(text, start.max(cursor));
        let end = ceil_boundary(text, end);
        if end <= cursor {
            continue;
        }
        out.push_str(&text[cursor..start.max(cursor)]);
        out.push_str(MARKER);
        cursor = end;
    }
    out.push_str(&text[cursor.min(text.len())..]);
    out
}

fn floor_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line holding `at`, every secret on it redacted, cut to [`EXCERPT_CHARS`].
fn excerpt(text: &str, at: usize, hits: &[Hit]) -> String {
    let start = text[..floor_boundary(text, at)]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let end = text[floor_boundary(text, at)..]
        .find('\n')
        .map_or(text.len(), |i| at + i);
    let on_line: Vec<(usize, usize)> = ranges(hits)
        .into_iter()
        .filter(|&(s, e)| s < end && e > start)
        .map(|(s, e)| (s.max(start) - start, e.min(end) - start))
        .collect();
    let line = replace(&text[start..end], &on_line);
    let line = line.trim();
    if line.chars().count() > EXCERPT_CHARS {
        format!("{}…", line.chars().take(EXCERPT_CHARS).collect::<String>())
    } else {
        line.to_string()
    }
}

/// A rule's description up to its first comma: "Identified a pattern that may indicate AWS
/// credentials, risking …" reads as what it is without the sales pitch.
fn short(description: &str) -> String {
    let first = description.split(", ").next().unwrap_or(description);
    first.trim().trim_end_matches('.').to_string()
}

/// The lines one file of a diff adds: (line number in the new file, text).
struct AddedLines {
    path: String,
    lines: Vec<(usize, String)>,
}

fn added_lines(diff: &str) -> Vec<AddedLines> {
    let mut files: Vec<AddedLines> = Vec::new();
    let mut in_hunk = false;
    let mut next_line = 0usize;
    for line in diff.lines() {
        if line.starts_with("diff --git ") {
            in_hunk = false;
            files.push(AddedLines {
                path: String::new(),
                lines: Vec::new(),
            });
        } else if !in_hunk && let Some(path) = line.strip_prefix("+++ ") {
            // git ends the line with a tab when the name holds a space.
            let path = path.trim_end_matches('\t').trim_matches('"');
            let path = path.strip_prefix("b/").unwrap_or(path);
            if let Some(file) = files.last_mut() {
                file.path = path.to_string();
            }
        } else if let Some(header) = line.strip_prefix("@@ ") {
            in_hunk = true;
            // `@@ -a,b +c,d @@`: the added lines start at line c of the new file.
            next_line = header
                .split_whitespace()
                .find_map(|part| part.strip_prefix('+'))
                .and_then(|range| range.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
        } else if in_hunk && let Some(added) = line.strip_prefix('+') {
            if let Some(file) = files.last_mut() {
                file.lines.push((next_line, added.to_string()));
            }
            next_line += 1;
        } else if in_hunk && line.starts_with(' ') {
            next_line += 1;
        }
    }
    files.retain(|f| !f.lines.is_empty());
    files
}

#[cfg(test)]
mod tests;
