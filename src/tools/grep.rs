//! `Grep`: searches file contents with ripgrep's own crates (`ignore` for the walk and
//! `.gitignore`, `grep-regex` and `grep-searcher` for matching), in Claude Code's shapes:
//! `files_with_matches` (the default), `content` with line numbers and context, or `count`.
//!
//! Like `Glob`, it walks the workspace root on this host: the `Computer` trait has no
//! listing or search operation yet.

use std::io;
use std::path::Path;

use async_trait::async_trait;
use grep_regex::RegexMatcherBuilder;
use grep_searcher::{BinaryDetection, Searcher, SearcherBuilder, Sink, SinkContext, SinkMatch};
use serde_json::{Value, json};

use super::glob::{search_root, walker};
use super::{Effect, Input, Tool, ToolContext, ToolError, ToolOutput, truncate};

/// The most output the model is shown, in characters (as for `Bash`).
const MAX_OUTPUT_CHARS: usize = 30_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Content,
    FilesWithMatches,
    Count,
}

struct Options {
    mode: Mode,
    line_numbers: bool,
    before: usize,
    after: usize,
    head_limit: Option<usize>,
}

pub struct Grep;

#[async_trait]
impl Tool for Grep {
    fn name(&self) -> &str {
        "Grep"
    }

    fn description(&self) -> &str {
        "Searches file contents with a regular expression (ripgrep syntax), honouring \
         .gitignore. output_mode \"files_with_matches\" (default) lists matching files, \
         newest first; \"content\" shows matching lines (with -n line numbers and -A/-B/-C \
         context); \"count\" shows matches per file. Filter files with glob (\"*.rs\") or \
         type (\"rust\"); head_limit keeps the first N lines or entries; multiline lets a \
         pattern span lines."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "pattern": {"type": "string", "description": "The regular expression to search for"},
                "path": {"type": "string", "description": "File or directory to search in; defaults to the workspace root"},
                "glob": {"type": "string", "description": "Glob to filter files (e.g. \"*.js\", \"*.{ts,tsx}\")"},
                "type": {"type": "string", "description": "File type to search (e.g. js, py, rust, go)"},
                "output_mode": {"type": "string", "enum": ["content", "files_with_matches", "count"], "description": "What to show; defaults to files_with_matches"},
                "-i": {"type": "boolean", "description": "Case insensitive search"},
                "-n": {"type": "boolean", "description": "Show line numbers (content mode); defaults to true"},
                "-A": {"type": "integer", "minimum": 0, "description": "Lines to show after each match (content mode)"},
                "-B": {"type": "integer", "minimum": 0, "description": "Lines to show before each match (content mode)"},
                "-C": {"type": "integer", "minimum": 0, "description": "Lines to show before and after each match (content mode)"},
                "head_limit": {"type": "integer", "minimum": 1, "description": "Show only the first N lines or entries"},
                "multiline": {"type": "boolean", "description": "Let patterns span lines and `.` match newlines"}
            },
            "required": ["pattern"],
            "additionalProperties": false
        })
    }

    fn effect(&self) -> Effect {
        Effect::Inspects
    }

    async fn run(&self, input: &Value, ctx: &ToolContext<'_>) -> Result<ToolOutput, ToolError> {
        let input = Input::new(
            input,
            &[
                "pattern",
                "path",
                "glob",
                "type",
                "output_mode",
                "-i",
                "-n",
                "-A",
                "-B",
                "-C",
                "head_limit",
                "multiline",
            ],
        )?;
        let pattern = input.str("pattern")?;
        let mode = match input.opt_str("output_mode")? {
            None | Some("files_with_matches") => Mode::FilesWithMatches,
            Some("content") => Mode::Content,
            Some("count") => Mode::Count,
            Some(other) => {
                return Err(ToolError::invalid(
                    "output_mode",
                    format!("{other}: expected content, files_with_matches or count"),
                ));
            }
        };
        let lines = |field: &str| -> Result<Option<usize>, ToolError> {
            Ok(input
                .opt_u64(field)?
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)))
        };
        let context = lines("-C")?;
        let options = Options {
            mode,
            line_numbers: input.bool_or("-n", true)?,
            before: lines("-B")?.or(context).unwrap_or(0),
            after: lines("-A")?.or(context).unwrap_or(0),
            head_limit: lines("head_limit")?.filter(|n| *n > 0),
        };
        let multiline = input.bool_or("multiline", false)?;
        let mut matcher = RegexMatcherBuilder::new();
        matcher
            .case_insensitive(input.bool_or("-i", false)?)
            .multi_line(true)
            .dot_matches_new_line(multiline);
        if !multiline {
            // Lets the searcher go line by line: the pattern can never match a newline.
            matcher.line_terminator(Some(b'\n'));
        }
        let matcher = matcher
            .build(pattern)
            .map_err(|e| ToolError::invalid("pattern", e.to_string()))?;
        let search = search_root(ctx, input.opt_str("path")?)?;
        let glob = input.opt_str("glob")?.map(|g| ("glob", g));
        let walk = walker(&search, glob, input.opt_str("type")?)?;
        let root = ctx.workspace.root().to_path_buf();
        let cancel = ctx.cancel.clone();

        let output = tokio::task::spawn_blocking(move || {
            let mut files = super::glob::collect_files(&root, walk, &cancel)?;
            if options.mode != Mode::FilesWithMatches {
                // Lines read best file by file in path order; file lists come newest first.
                files.sort();
            }
            let mut searcher = SearcherBuilder::new()
                .line_number(true)
                .multi_line(multiline)
                .before_context(if options.mode == Mode::Content {
                    options.before
                } else {
                    0
                })
                .after_context(if options.mode == Mode::Content {
                    options.after
                } else {
                    0
                })
                // Binary files are skipped, as ripgrep does by default.
                .binary_detection(BinaryDetection::quit(0))
                .build();
            search_files(&mut searcher, &matcher, &root, files, &options, &cancel)
        })
        .await
        .map_err(|e| ToolError::Failed(format!("Grep: {e}")))??;
        if ctx.cancel.is_cancelled() {
            return Ok(ToolOutput::error("cancelled"));
        }
        Ok(ToolOutput::ok(output))
    }
}

/// Searches `files` (newest first, relative to `root`) and renders the result per mode.
fn search_files(
    searcher: &mut Searcher,
    matcher: &grep_regex::RegexMatcher,
    root: &Path,
    files: Vec<String>,
    options: &Options,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<String, ToolError> {
    let mut entries: Vec<String> = Vec::new();
    let mut matched_files = 0usize;
    let mut total_matches = 0usize;
    for file in files {
        if cancel.is_cancelled() {
            break;
        }
        let mut sink = Collector::new(options.line_numbers);
        // An unreadable file is skipped, as ripgrep does (with a warning we do not need).
        if searcher
            .search_path(matcher, root.join(&file), &mut sink)
            .is_err()
            || sink.matches == 0
        {
            continue;
        }
        matched_files += 1;
        total_matches += sink.matches;
        match options.mode {
            Mode::FilesWithMatches => entries.push(file),
            Mode::Count => entries.push(format!("{file}:{}", sink.matches)),
            Mode::Content => {
                if matched_files > 1 && (options.before > 0 || options.after > 0) {
                    entries.push("--".to_string());
                }
                entries.extend(sink.lines.into_iter().map(|l| format!("{file}{l}")));
            }
        }
        // Stops one past the limit, so the output can say it was cut.
        if let Some(limit) = options.head_limit
            && entries.len() > limit
        {
            break;
        }
    }
    if matched_files == 0 {
        return Ok(match options.mode {
            Mode::FilesWithMatches => "No files found".to_string(),
            _ => "No matches found".to_string(),
        });
    }
    let shown_limit = options.head_limit.unwrap_or(usize::MAX);
    let cut = entries.len() > shown_limit;
    entries.truncate(shown_limit);
    let mut text = match options.mode {
        Mode::FilesWithMatches => format!(
            "Found {} {}\n{}",
            entries.len(),
            if entries.len() == 1 { "file" } else { "files" },
            entries.join("\n")
        ),
        // Totals only when every file was searched.
        Mode::Count if !cut => format!(
            "{}\n\nFound {total_matches} matching lines across {matched_files} files",
            entries.join("\n")
        ),
        Mode::Count | Mode::Content => entries.join("\n"),
    };
    if cut {
        text.push_str(&format!(
            "\n\n[Showing the first {shown_limit} entries (head_limit)]"
        ));
    }
    Ok(truncate(&text, MAX_OUTPUT_CHARS))
}

/// Gathers one file's matching lines (`:line:text`) and context lines (`-line-text`),
/// ripgrep's format minus the file name, which the caller puts in front.
struct Collector {
    line_numbers: bool,
    matches: usize,
    lines: Vec<String>,
}

impl Collector {
    fn new(line_numbers: bool) -> Self {
        Collector {
            line_numbers,
            matches: 0,
            lines: Vec::new(),
        }
    }

    fn push(&mut self, separator: char, first_line: Option<u64>, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        // A multiline match spans several lines: each gets its own number.
        for (offset, line) in text.lines().enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            match first_line.filter(|_| self.line_numbers) {
                Some(n) => self
                    .lines
                    .push(format!("{separator}{}{separator}{line}", n + offset as u64)),
                None => self.lines.push(format!("{separator}{line}")),
            }
        }
    }
}

impl Sink for Collector {
    type Error = io::Error;

    fn matched(&mut self, _: &Searcher, found: &SinkMatch<'_>) -> Result<bool, io::Error> {
        self.matches += 1;
        self.push(':', found.line_number(), found.bytes());
        Ok(true)
    }

    fn context(&mut self, _: &Searcher, context: &SinkContext<'_>) -> Result<bool, io::Error> {
        self.push('-', context.line_number(), context.bytes());
        Ok(true)
    }

    fn context_break(&mut self, _: &Searcher) -> Result<bool, io::Error> {
        self.lines.push("--".to_string());
        Ok(true)
    }
}
