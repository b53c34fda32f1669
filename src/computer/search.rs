//! Searching a workspace, for the `Glob` and `Grep` tools: the typed request and answer of
//! [`Computer::glob`](super::Computer::glob) and [`Computer::search`](super::Computer::search),
//! the path filter both kinds of computer share, and this host's in-process search with
//! ripgrep's own crates (`ignore` for the walk and `.gitignore`, `grep-regex` and
//! `grep-searcher` for matching).
//!
//! A search lists the files under a start path that `.gitignore` keeps (hidden files
//! included, `.git` and the scratch folder skipped), keeps those a glob and a file type
//! admit, and orders them: newest first for a listing (ties by path), by path for lines and
//! counts. Files are named relative to the workspace root, as the other tools take them.
//!
//! ```text
//! SearchRequest { pattern: "fn main", path: "src", glob: Some("*.rs"), mode: Content, .. }
//!   -> [FileHits { path: "src/main.rs", matches: 1, lines: [Line { Match, 3, "fn main() {" }] }]
//! ```

use std::io;
use std::path::Path;
use std::time::SystemTime;

use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use grep_searcher::{BinaryDetection, Searcher, SearcherBuilder, Sink, SinkContext, SinkMatch};
use ignore::WalkBuilder;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::types::Types;
use tokio_util::sync::CancellationToken;

use super::ComputerError;
use super::workspace::SCRATCH;

/// Folders never searched: git's own and the tools' scratch space.
pub const SKIPPED: [&str; 2] = [".git", SCRATCH];

/// The files whose path matches a glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobRequest {
    /// Gitignore syntax, relative to `path` (`*.rs` at any depth, `src/*.rs` anchored).
    pub glob: String,
    /// Where to start, relative to the workspace root ("" for the root).
    pub path: String,
}

/// A search of file contents with a regular expression (ripgrep syntax).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchRequest {
    pub pattern: String,
    /// Where to start (a folder or a file), relative to the workspace root ("" for the root).
    pub path: String,
    /// Only files matching this glob (as [`GlobRequest::glob`]).
    pub glob: Option<String>,
    /// Only files of this ripgrep type (`rust`, `py`, ...).
    pub file_type: Option<String>,
    pub case_insensitive: bool,
    /// The pattern may span lines, and `.` matches a newline.
    pub multiline: bool,
    pub mode: SearchMode,
    /// Context lines before and after each match ([`SearchMode::Content`] only).
    pub before: usize,
    pub after: usize,
    /// The search may stop once more than this many entries are found (see
    /// [`entries`]); the caller shows no more than that.
    pub limit: Option<usize>,
}

/// What a search reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchMode {
    /// The files with a match, newest first.
    FilesWithMatches,
    /// The matching lines (and context) of each file, files by path.
    Content,
    /// The number of matching lines of each file, files by path.
    Count,
}

/// One file's part of a search's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHits {
    /// Relative to the workspace root.
    pub path: String,
    /// Matching lines (a multiline match counts once).
    pub matches: usize,
    /// The lines, in order ([`SearchMode::Content`] only).
    pub lines: Vec<Line>,
}

/// A line of a file's hits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub kind: LineKind,
    /// 1-based; 0 for a [`LineKind::Break`].
    pub number: u64,
    /// Without its line terminator.
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    Match,
    Context,
    /// A gap between two groups of lines (ripgrep's `--`).
    Break,
}

/// Which input a refused search names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchField {
    Pattern,
    Glob,
    Type,
    Path,
}

impl std::fmt::Display for SearchField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SearchField::Pattern => "pattern",
            SearchField::Glob => "glob",
            SearchField::Type => "type",
            SearchField::Path => "path",
        })
    }
}

fn refused(field: SearchField, reason: impl Into<String>) -> ComputerError {
    ComputerError::Search {
        field,
        reason: reason.into(),
    }
}

/// How many output entries `hits` make in `mode` (one per file, or its lines and, with
/// context, a `--` before every file but the first): what [`SearchRequest::limit`] counts.
pub fn entries(mode: SearchMode, context: bool, hits: &[FileHits]) -> usize {
    match mode {
        SearchMode::FilesWithMatches | SearchMode::Count => hits.len(),
        SearchMode::Content => {
            let lines: usize = hits.iter().map(|h| h.lines.len()).sum();
            lines
                + if context {
                    hits.len().saturating_sub(1)
                } else {
                    0
                }
        }
    }
}

/// The regular expression of a request, checked and compiled as ripgrep would.
pub fn matcher(request: &SearchRequest) -> Result<RegexMatcher, ComputerError> {
    let mut matcher = RegexMatcherBuilder::new();
    matcher
        .case_insensitive(request.case_insensitive)
        .multi_line(true)
        .dot_matches_new_line(request.multiline);
    if !request.multiline {
        // Lets the searcher go line by line: the pattern can never match a newline.
        matcher.line_terminator(Some(b'\n'));
    }
    matcher
        .build(&request.pattern)
        .map_err(|e| refused(SearchField::Pattern, e.to_string()))
}

/// Which files a search keeps, judged by their path relative to the search's start: a glob
/// and a ripgrep file type. The same on every computer, so a remote's listing is filtered
/// exactly as this host's.
pub struct Filter {
    glob: Option<Gitignore>,
    types: Option<Types>,
}

impl Filter {
    /// `glob` is refused as `glob_field` (the `Glob` tool calls its glob `pattern`).
    pub fn new(
        glob: Option<&str>,
        file_type: Option<&str>,
        glob_field: SearchField,
    ) -> Result<Filter, ComputerError> {
        let glob = match glob {
            None => None,
            Some(pattern) => {
                // A one-line ignore file is a glob matcher with gitignore's rules (`*.rs` at
                // any depth, `src/*.rs` anchored, `**`, `{a,b}`), without a direct `globset`
                // use. Paths are given relative, so its root never strips anything.
                let mut matcher = GitignoreBuilder::new("/");
                matcher
                    .add_line(None, pattern)
                    .map_err(|e| refused(glob_field, format!("{pattern}: {e}")))?;
                Some(
                    matcher
                        .build()
                        .map_err(|e| refused(glob_field, format!("{pattern}: {e}")))?,
                )
            }
        };
        let types = match file_type {
            None => None,
            Some(name) => {
                let mut types = ignore::types::TypesBuilder::new();
                types.add_defaults();
                types.select(name);
                let types = types
                    .build()
                    .map_err(|e| refused(SearchField::Type, format!("{name}: {e}")))?;
                if !types.definitions().iter().any(|d| d.name() == name) {
                    return Err(refused(
                        SearchField::Type,
                        format!("{name}: not a known file type (try rust, py, js, ts, go, md)"),
                    ));
                }
                Some(types)
            }
        };
        Ok(Filter { glob, types })
    }

    /// Whether a file at `relative` (to the search's start) is kept.
    pub fn admits(&self, relative: &Path) -> bool {
        self.glob
            .as_ref()
            .is_none_or(|g| g.matched(relative, false).is_ignore())
            && self
                .types
                .as_ref()
                .is_none_or(|t| !t.matched(relative, false).is_ignore())
    }
}

/// A listed file: its path relative to the workspace root, and when it was last changed.
pub type Listed = (SystemTime, String);

/// Orders listed files newest first, ties by path (a stable order).
pub fn newest_first(files: &mut [Listed]) {
    files.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
}

/// The files under `start` (absolute, inside `root`) that `.gitignore` keeps and `filter`
/// admits, newest first: this host's listing. Blocking.
pub fn walk(root: &Path, start: &Path, filter: &Filter, cancel: &CancellationToken) -> Vec<String> {
    let canonical_root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mut builder = WalkBuilder::new(start);
    builder
        .hidden(false)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|entry| !SKIPPED.iter().any(|s| entry.file_name() == *s));
    let mut found: Vec<Listed> = Vec::new();
    for entry in builder.build() {
        if cancel.is_cancelled() {
            break;
        }
        // An unreadable folder or a broken ignore file is skipped, as ripgrep does.
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        // A start that is a file is its own relative path (its name).
        let relative = entry
            .path()
            .strip_prefix(start)
            .ok()
            .filter(|r| !r.as_os_str().is_empty())
            .or_else(|| entry.path().file_name().map(Path::new))
            .unwrap_or(entry.path());
        if !filter.admits(relative) {
            continue;
        }
        let modified = entry
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        found.push((modified, display_path(root, &canonical_root, entry.path())));
    }
    newest_first(&mut found);
    found.into_iter().map(|(_, path)| path).collect()
}

/// `path` relative to the workspace root, for the model to pass back to the other tools.
fn display_path(root: &Path, canonical_root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .or_else(|_| path.strip_prefix(canonical_root))
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// This host's search of `request` under `start` (absolute, inside `root`). Blocking.
pub fn search_here(
    root: &Path,
    start: &Path,
    request: &SearchRequest,
    cancel: &CancellationToken,
) -> Result<Vec<FileHits>, ComputerError> {
    let matcher = matcher(request)?;
    let filter = Filter::new(
        request.glob.as_deref(),
        request.file_type.as_deref(),
        SearchField::Glob,
    )?;
    let mut files = walk(root, start, &filter, cancel);
    if request.mode != SearchMode::FilesWithMatches {
        // Lines read best file by file in path order; file lists come newest first.
        files.sort();
    }
    let content = request.mode == SearchMode::Content;
    let mut searcher = SearcherBuilder::new()
        .line_number(true)
        .multi_line(request.multiline)
        .before_context(if content { request.before } else { 0 })
        .after_context(if content { request.after } else { 0 })
        // Binary files are skipped, as ripgrep does by default.
        .binary_detection(BinaryDetection::quit(0))
        .build();
    let context = content && (request.before > 0 || request.after > 0);
    let mut hits: Vec<FileHits> = Vec::new();
    let mut count = 0usize;
    for file in files {
        if cancel.is_cancelled() {
            break;
        }
        let mut sink = Collector {
            keep_lines: content,
            hits: FileHits {
                path: file,
                matches: 0,
                lines: Vec::new(),
            },
        };
        // An unreadable file is skipped, as ripgrep does (with a warning we do not need).
        let path = root.join(&sink.hits.path);
        if searcher.search_path(&matcher, &path, &mut sink).is_err() || sink.hits.matches == 0 {
            continue;
        }
        count += entries(request.mode, context, std::slice::from_ref(&sink.hits))
            + usize::from(context && !hits.is_empty());
        hits.push(sink.hits);
        // Stops one past the limit, so the caller can say it was cut.
        if request.limit.is_some_and(|limit| count > limit) {
            break;
        }
    }
    Ok(hits)
}

/// Gathers one file's matching and context lines.
struct Collector {
    keep_lines: bool,
    hits: FileHits,
}

impl Collector {
    fn push(&mut self, kind: LineKind, first_line: Option<u64>, bytes: &[u8]) {
        if !self.keep_lines {
            return;
        }
        push_lines(&mut self.hits.lines, kind, first_line.unwrap_or(0), bytes);
    }
}

/// Adds the lines of `bytes` (a multiline match spans several: each gets its own number).
pub fn push_lines(lines: &mut Vec<Line>, kind: LineKind, first: u64, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for (offset, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        lines.push(Line {
            kind,
            number: first + offset as u64,
            text: line.to_string(),
        });
    }
}

impl Sink for Collector {
    type Error = io::Error;

    fn matched(&mut self, _: &Searcher, found: &SinkMatch<'_>) -> Result<bool, io::Error> {
        self.hits.matches += 1;
        self.push(LineKind::Match, found.line_number(), found.bytes());
        Ok(true)
    }

    fn context(&mut self, _: &Searcher, context: &SinkContext<'_>) -> Result<bool, io::Error> {
        self.push(LineKind::Context, context.line_number(), context.bytes());
        Ok(true)
    }

    fn context_break(&mut self, _: &Searcher) -> Result<bool, io::Error> {
        if self.keep_lines {
            self.hits.lines.push(Line {
                kind: LineKind::Break,
                number: 0,
                text: String::new(),
            });
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_judges_paths_relative_to_the_start() {
        let filter = Filter::new(Some("*.rs"), None, SearchField::Glob).unwrap();
        assert!(filter.admits(Path::new("src/main.rs")));
        assert!(!filter.admits(Path::new("README.md")));
        let anchored = Filter::new(Some("src/*.rs"), None, SearchField::Glob).unwrap();
        assert!(anchored.admits(Path::new("src/main.rs")));
        assert!(!anchored.admits(Path::new("lib/src/x.rs")));
        let typed = Filter::new(None, Some("py"), SearchField::Glob).unwrap();
        assert!(typed.admits(Path::new("a/b.py")));
        assert!(!typed.admits(Path::new("a/b.rs")));
        assert!(matches!(
            Filter::new(None, Some("nope"), SearchField::Glob),
            Err(ComputerError::Search {
                field: SearchField::Type,
                ..
            })
        ));
    }

    #[test]
    fn entries_count_lines_and_separators() {
        let hit = |n: usize| FileHits {
            path: "a".into(),
            matches: n,
            lines: vec![
                Line {
                    kind: LineKind::Match,
                    number: 1,
                    text: String::new()
                };
                n
            ],
        };
        let hits = [hit(2), hit(3)];
        assert_eq!(entries(SearchMode::Count, false, &hits), 2);
        assert_eq!(entries(SearchMode::Content, false, &hits), 5);
        assert_eq!(entries(SearchMode::Content, true, &hits), 6);
    }
}
