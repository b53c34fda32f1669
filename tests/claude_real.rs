//! Measures how Proto loads real Claude Code files collected outside the repository (issue 11:
//! "at least 99 % of the files Claude Code loads are loaded with the same meaning, every broken
//! file is skipped with a located message and never takes the company down").
//!
//! The collection is not in the tree. Point `PROTO_CLAUDE_REAL` at a folder of cases, one
//! folder a case (any depth), each holding the files of one Claude Code file as they would sit
//! in a repository (`.claude/agents/x.md`, `.claude/skills/x/SKILL.md` with its extra files,
//! `.claude/settings.json`, `.mcp.json`, `.claude/rules/*.md`,
//! `CLAUDE.md`), then run
//!
//! ```text
//! PROTO_CLAUDE_REAL=/path/to/cases cargo test --test claude_real -- --ignored --nocapture
//! ```
//!
//! Each case is loaded in a minimal company (a Company and its CEO) and classified: loaded
//! (with how many warnings), skipped (with the message), or the company failed. Whether Claude
//! Code loads the file is decided as Claude Code decides it: agents need YAML frontmatter
//! (read again with Claude Code's own quoting when it is not YAML) with `name` and
//! `description`; a `SKILL.md` loads with YAML frontmatter or none; settings must be JSON
//! whose `hooks` and `permissions` have the shapes Claude Code's schema requires (it skips
//! the whole file otherwise); `.mcp.json` must be JSON with an object of servers; rules and
//! memory are any Markdown. A file Claude Code loads that Proto skips, or that fails the
//! company, counts against the goal, as does a broken file that fails the company. The rates
//! per kind and the most frequent reasons are printed; set `PROTO_CLAUDE_REAL_LIST=1` to list
//! every case not loaded. Where the collection comes from, and how to rebuild it:
//! `tests/claude_real/SOURCES.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a measurement

#[path = "support/files.rs"]
mod files;
use files::files_under;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proto::spec::{self, MemTree};

const COMPANY: &str = "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata:\n  name: real\nspec:\n  mission: Measure real Claude Code files.\n  ceo: ceo\n";
const CEO: &str = "apiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata:\n  name: ceo\nspec:\n  title: Chief Executive Officer\n  description: Runs the company.\n  tools: [Read, Delegate, Planning]\n  prompt: You run the company.\n";

/// Every case folder: a folder holding `.claude/` or `.mcp.json`.
fn cases(root: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    if root.join(".claude").is_dir()
        || root.join(".mcp.json").is_file()
        || root.join("CLAUDE.md").is_file()
    {
        out.push(root.to_path_buf());
        return;
    }
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for d in dirs {
        cases(&d, out);
    }
}

/// The case's main file and its kind.
fn main_file(files: &[(String, Vec<u8>)]) -> Option<(&'static str, String, Vec<u8>)> {
    for (p, c) in files {
        let kind = if p.starts_with(".claude/agents/") && p.ends_with(".md") {
            "agent"
        } else if p.starts_with(".claude/skills/")
            && p.matches('/').count() == 3
            && p.ends_with("/SKILL.md")
        {
            "skill"
        } else if p == ".claude/settings.json" || p == ".claude/settings.local.json" {
            "settings"
        } else if p == ".mcp.json" {
            "mcp"
        } else if p.starts_with(".claude/rules/") && p.ends_with(".md") {
            "rule"
        } else if p == "CLAUDE.md" {
            "memory"
        } else {
            continue;
        };
        return Some((kind, p.clone(), c.clone()));
    }
    None
}

fn frontmatter(text: &str) -> Option<&str> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Claude Code's `^---\s*\n`.
    let (first, rest) = text.split_at(text.find('\n')? + 1);
    if first.trim_end() != "---" {
        return None;
    }
    let mut at = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some(&rest[..at]);
        }
        at += line.len();
    }
    None
}

/// Claude Code's `quoteProblematicValues`, which it applies when the frontmatter is not YAML,
/// then parses again: every `key: value` line (key of letters, `_` and `-`) whose value is
/// not quoted and holds one of `{}[]*&#!|>%@`` ` or `: ` gets its value double-quoted.
fn claude_quote(yaml: &str) -> String {
    let special = |v: &str| v.contains(": ") || v.contains(|c| "{}[]*&#!|>%@`".contains(c));
    yaml.split('\n')
        .map(|line| {
            let Some((key, rest)) = line.split_once(':') else {
                return line.to_string();
            };
            let value = rest.trim_start();
            let key_ok = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphabetic() || c == '_' || c == '-');
            let quoted = value.len() >= 2
                && ((value.starts_with('"') && value.ends_with('"'))
                    || (value.starts_with('\'') && value.ends_with('\'')));
            if key_ok
                && rest.starts_with(char::is_whitespace)
                && !value.is_empty()
                && !quoted
                && special(value)
            {
                format!(
                    "{key}: \"{}\"",
                    value.replace('\\', "\\\\").replace('"', "\\\"")
                )
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Would Claude Code load this file? (An approximation of it, documented at the top.)
fn claude_loads(kind: &str, content: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(content) else {
        return false;
    };
    match kind {
        // Rules and memory are Markdown: Claude Code reads any of it.
        "rule" | "memory" => true,
        "agent" | "skill" => {
            let Some(fm) = frontmatter(text) else {
                // Claude Code loads a SKILL.md without frontmatter (named after its folder,
                // described by its first line); a subagent needs a name.
                let bare = text.trim_start_matches('\u{feff}');
                return kind == "skill" && !bare.starts_with("---");
            };
            let parsed = serde_saphyr::from_str::<serde_json::Value>(fm)
                .or_else(|_| serde_saphyr::from_str::<serde_json::Value>(&claude_quote(fm)));
            let Ok(v) = parsed else {
                return false;
            };
            if kind == "skill" {
                return v.is_object();
            }
            let s = |k: &str| {
                v.get(k)
                    .and_then(|x| x.as_str())
                    .is_some_and(|x| !x.trim().is_empty())
            };
            s("name") && s("description")
        }
        // Settings: Claude Code validates the file against its schema and skips it whole
        // ("Files with errors are skipped entirely") when hooks or permissions have the wrong
        // shape; the common shapes are checked here.
        "settings" => {
            serde_json::from_str::<serde_json::Value>(text.trim_start_matches('\u{feff}'))
                .is_ok_and(|v| v.is_object() && settings_shape(&v))
        }
        // JSON with an object at the top (and, in `.mcp.json`, an object of servers).
        _ => serde_json::from_str::<serde_json::Value>(text.trim_start_matches('\u{feff}'))
            .is_ok_and(|v| {
                v.is_object()
                    && (kind != "mcp" || v.get("mcpServers").is_none_or(|s| s.is_object()))
            }),
    }
}

/// Whether `hooks` and `permissions` have the shapes Claude Code's schema requires.
fn settings_shape(v: &serde_json::Value) -> bool {
    let hooks_ok = v.get("hooks").is_none_or(|h| {
        h.as_object().is_some_and(|events| {
            events.values().all(|matchers| {
                matchers.as_array().is_some_and(|ms| {
                    ms.iter().all(|m| {
                        m.get("hooks").is_some_and(serde_json::Value::is_array)
                            && m.get("matcher").is_none_or(serde_json::Value::is_string)
                    })
                })
            })
        })
    });
    let strings = |x: &serde_json::Value| {
        x.as_array()
            .is_some_and(|a| a.iter().all(serde_json::Value::is_string))
    };
    let permissions_ok = v.get("permissions").is_none_or(|p| {
        p.is_object()
            && ["allow", "ask", "deny"]
                .iter()
                .all(|k| p.get(*k).is_none_or(strings))
    });
    hooks_ok && permissions_ok
}

/// A message with its particulars blanked, to count reasons.
fn reason(message: &str) -> String {
    if std::env::var_os("PROTO_CLAUDE_REAL_RAW").is_some() {
        return message.chars().take(140).collect();
    }
    let mut out = String::new();
    let mut quoted = None;
    for c in message.chars() {
        match quoted {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quoted = None;
            }
            Some(_) => {}
            None if c == '"' || c == '`' => {
                out.push(c);
                quoted = Some(c);
            }
            None => out.push(c),
        }
    }
    out.chars().take(140).collect()
}

fn top_n() -> usize {
    std::env::var("PROTO_CLAUDE_REAL_TOP")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40)
}

#[test]
#[ignore = "needs a collection of real files: set PROTO_CLAUDE_REAL"]
fn real_claude_code_files() {
    let Ok(root) = std::env::var("PROTO_CLAUDE_REAL") else {
        println!("PROTO_CLAUDE_REAL is not set: nothing measured");
        return;
    };
    let list = std::env::var_os("PROTO_CLAUDE_REAL_LIST").is_some();
    let mut all = Vec::new();
    cases(Path::new(&root), &mut all);
    // kind -> [claude loads & proto loads, claude loads & proto skips, claude loads & company failed,
    //          broken & skipped, broken & loaded, broken & company failed]
    let mut counts: BTreeMap<&str, [usize; 6]> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut warnings: BTreeMap<String, usize> = BTreeMap::new();
    let mut warned: BTreeMap<&str, usize> = BTreeMap::new();
    for case in &all {
        let fs = files_under(case);
        let Some((kind, main, content)) = main_file(&fs) else {
            continue;
        };
        let loads = claude_loads(kind, &content);
        let mut tree = MemTree::new("real");
        tree.insert("company.yaml", COMPANY.as_bytes().to_vec());
        tree.insert("agents/ceo.yaml", CEO.as_bytes().to_vec());
        for (p, c) in fs {
            tree.insert(p, c);
        }
        let c = counts.entry(kind).or_default();
        let base = if loads { 0 } else { 3 };
        match spec::load_and_validate(&tree) {
            Ok((spec, diags)) => {
                let skipped = spec.claude.skipped.iter().any(|s| s.file == main);
                if std::env::var("PROTO_CLAUDE_REAL_SHOW")
                    .is_ok_and(|w| case.to_string_lossy().contains(&w))
                {
                    for a in spec.agents.iter().filter(|a| a.origin.file == main) {
                        println!(
                            "SHOW {}: {} tools {:?} model {:?} description {:?}",
                            case.display(),
                            a.id(),
                            a.spec.tools,
                            a.spec.model,
                            a.spec.description
                        );
                    }
                }
                if let Ok(pat) = std::env::var("PROTO_CLAUDE_REAL_DIAG") {
                    for d in diags.iter().filter(|d| d.to_string().contains(&pat)) {
                        println!("DIAG {}: {d}", case.display());
                    }
                }
                let mine: Vec<_> = diags
                    .iter()
                    .filter(|d| d.file.to_string_lossy() == main)
                    .collect();
                if skipped && !loads && list {
                    println!(
                        "BROKEN {}: {}",
                        case.display(),
                        mine.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("\n    ")
                    );
                }
                if skipped {
                    c[base + if loads { 1 } else { 0 }] += 1;
                    if loads {
                        let why = mine
                            .iter()
                            .map(|d| d.message.clone())
                            .collect::<Vec<_>>()
                            .join(" | ");
                        *reasons
                            .entry(format!("{kind} skipped: {}", reason(&why)))
                            .or_default() += 1;
                        if list {
                            println!(
                                "SKIPPED {}: {}",
                                case.display(),
                                mine.iter()
                                    .map(ToString::to_string)
                                    .collect::<Vec<_>>()
                                    .join("\n    ")
                            );
                        }
                    }
                } else {
                    c[base + if loads { 0 } else { 1 }] += 1;
                    if !mine.is_empty() {
                        *warned.entry(kind).or_default() += 1;
                    }
                    for d in &diags {
                        *warnings
                            .entry(format!("{kind}: {}", reason(&d.message)))
                            .or_default() += 1;
                    }
                }
            }
            Err(diags) => {
                c[base + 2] += 1;
                let errors: Vec<String> = diags
                    .iter()
                    .filter(|d| d.severity == spec::Severity::Error)
                    .map(|d| d.message.clone())
                    .collect();
                *reasons
                    .entry(format!(
                        "{kind} company failed: {}",
                        reason(&errors.join(" | "))
                    ))
                    .or_default() += 1;
                if list {
                    println!(
                        "FAILED {}: {}",
                        case.display(),
                        diags
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("\n    ")
                    );
                }
            }
        }
    }
    println!("\n{} cases under {root}", all.len());
    println!(
        "kind      | Claude Code loads: loaded  skipped  failed  rate    | broken: skipped  loaded  failed | loaded with warnings"
    );
    let mut total = [0usize; 6];
    for (kind, c) in &counts {
        let n = c[0] + c[1] + c[2];
        println!(
            "{kind:9} | {n:5}: {:6} {:8} {:7}  {:6.2}% | {:6} {:7} {:7} | {}",
            c[0],
            c[1],
            c[2],
            100.0 * c[0] as f64 / n.max(1) as f64,
            c[3],
            c[4],
            c[5],
            warned.get(kind).copied().unwrap_or(0)
        );
        for (t, x) in total.iter_mut().zip(c) {
            *t += x;
        }
    }
    let n = total[0] + total[1] + total[2];
    println!(
        "all       | {n:5}: {:6} {:8} {:7}  {:6.2}% | {:6} {:7} {:7}",
        total[0],
        total[1],
        total[2],
        100.0 * total[0] as f64 / n.max(1) as f64,
        total[3],
        total[4],
        total[5]
    );
    let top = |m: &BTreeMap<String, usize>, title: &str| {
        let mut v: Vec<_> = m.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        println!("\n{title}:");
        for (r, k) in v.iter().take(top_n()) {
            println!("{k:6}  {r}");
        }
    };
    top(
        &reasons,
        "Reasons Proto did not load a file Claude Code loads",
    );
    top(&warnings, "Warnings on loaded files");
}
