//! `Glob` and `Grep` on an SSH computer: the files are listed and searched on the remote,
//! and the answer has the shape this host's search gives ([`crate::computer::search`]).
//!
//! The listing is the remote git's (`git ls-files --cached --others --exclude-standard`:
//! what `.gitignore` keeps, a workspace being a clone), with each file's kind and change
//! time from `stat`; the glob and the file type are then judged here by the same
//! [`Filter`] as on this host, and the pattern is compiled here first, so a bad one is
//! refused with the same message. The search runs over exactly the kept files, given to
//! the remote on standard input: by ripgrep (`rg --json`) where the remote has it, else by
//! GNU `grep -P` (Perl syntax, close to ripgrep's; no `multiline`).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{Pool, SCRIPT_TIMEOUT, collect, sftp};
use crate::computer::search::{
    self, Filter, GlobRequest, LineKind, Listed, SKIPPED, SearchField, SearchMode, SearchRequest,
    entries, push_lines,
};
use crate::computer::{ComputerError, FileHits, Workspace};
use crate::tools::shell_quote as quote;

/// The files of a remote workspace a glob keeps, newest first.
pub async fn glob(
    pool: &Pool,
    workspace: &Workspace,
    request: &GlobRequest,
    cancel: &CancellationToken,
) -> Result<Vec<String>, ComputerError> {
    let filter = Filter::new(Some(&request.glob), None, SearchField::Pattern)?;
    let Some(listed) = listing(pool, workspace, &request.path, &filter, cancel).await? else {
        return Ok(Vec::new());
    };
    Ok(listed.files.into_iter().map(|(_, path)| path).collect())
}

/// A search of a remote workspace's files.
pub async fn search(
    pool: &Pool,
    workspace: &Workspace,
    request: &SearchRequest,
    cancel: &CancellationToken,
) -> Result<Vec<FileHits>, ComputerError> {
    // Refused here, as this host refuses it, before anything runs there.
    search::matcher(request)?;
    let filter = Filter::new(
        request.glob.as_deref(),
        request.file_type.as_deref(),
        SearchField::Glob,
    )?;
    let Some(listed) = listing(pool, workspace, &request.path, &filter, cancel).await? else {
        return Ok(Vec::new());
    };
    let mut files: Vec<String> = listed.files.into_iter().map(|(_, path)| path).collect();
    if request.mode != SearchMode::FilesWithMatches {
        files.sort();
    }
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let mut input = Vec::new();
    for file in &files {
        input.extend_from_slice(file.as_bytes());
        input.push(0);
    }
    let script = search_script(&listed.root, request);
    let ran = tokio::select! {
        ran = collect(pool, &script, Some(&input), SCRIPT_TIMEOUT) => ran?,
        () = cancel.cancelled() => return Ok(Vec::new()),
    };
    let (_, stdout, stderr) = ran;
    let (tool, found) = stdout.split_once('\n').unwrap_or((stdout.as_str(), ""));
    let by_file = match tool {
        "rg" => parse_rg(found, request),
        "grep" => parse_grep(found, request),
        "multiline" => {
            return Err(ComputerError::Search {
                field: SearchField::Pattern,
                reason: "multiline needs ripgrep (`rg`) on the computer, which it lacks".into(),
            });
        }
        _ => {
            return Err(ComputerError::Workspace(format!(
                "searching on {}: {}",
                pool.target().address(),
                stderr.trim()
            )));
        }
    };
    Ok(ordered(files, by_file, request))
}

/// The hits in the order of `files`, stopping one entry past the request's limit.
fn ordered(
    files: Vec<String>,
    mut by_file: HashMap<String, FileHits>,
    request: &SearchRequest,
) -> Vec<FileHits> {
    let context = request.mode == SearchMode::Content && (request.before > 0 || request.after > 0);
    let mut hits = Vec::new();
    for file in files {
        let Some(found) = by_file.remove(&file) else {
            continue;
        };
        if found.matches == 0 {
            continue;
        }
        hits.push(found);
        if request
            .limit
            .is_some_and(|limit| entries(request.mode, context, &hits) > limit)
        {
            break;
        }
    }
    hits
}

/// The remote workspace root (links resolved) and the files under a start path that
/// `.gitignore` keeps and `filter` admits, newest first.
struct Listing {
    root: String,
    files: Vec<Listed>,
}

/// Lists the kept files under `path`; `None` when cancelled.
async fn listing(
    pool: &Pool,
    workspace: &Workspace,
    path: &str,
    filter: &Filter,
    cancel: &CancellationToken,
) -> Result<Option<Listing>, ComputerError> {
    let link = pool.link().await?;
    let sftp_session = link.sftp().await?;
    let root_text = sftp::text(workspace.root());
    let root = sftp_session
        .canonicalize(root_text.clone())
        .await
        .map_err(|e| sftp::io_error(&root_text, e))?;
    let start = if path.is_empty() {
        String::new()
    } else {
        // Inside the workspace where its links lead, and there.
        let located = sftp::locate(&sftp_session, workspace, path, false).await?;
        if sftp_session
            .symlink_metadata(sftp::text(&located.landing))
            .await
            .is_err()
        {
            return Err(ComputerError::Search {
                field: SearchField::Path,
                reason: format!("{path}: no such file or directory"),
            });
        }
        sftp::text(&located.inside)
    };
    let pathspec = if start.is_empty() {
        ".".to_string()
    } else {
        format!(":(literal){start}")
    };
    let script = format!(
        "cd {root} || exit 2\n\
         git ls-files -z --cached --others --exclude-standard -- {pathspec} \
         | xargs -0 -r stat --printf '%Y:%F:%n\\0' --\n",
        root = quote(&root),
        pathspec = quote(&pathspec),
    );
    let ran = tokio::select! {
        ran = collect(pool, &script, None, SCRIPT_TIMEOUT) => ran?,
        () = cancel.cancelled() => return Ok(None),
    };
    let (code, stdout, stderr) = ran;
    if code == Some(2) || (stdout.is_empty() && !stderr.trim().is_empty()) {
        return Err(ComputerError::Workspace(format!(
            "listing files on {}: {}",
            pool.target().address(),
            stderr.trim()
        )));
    }
    let mut files = Vec::new();
    for record in stdout.split('\0') {
        let mut parts = record.splitn(3, ':');
        let (Some(time), Some(kind), Some(file)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        // Links are not followed, as on this host; `.git` and the scratch folder never
        // searched.
        if !kind.starts_with("regular")
            || Path::new(file)
                .components()
                .any(|c| SKIPPED.iter().any(|s| c.as_os_str() == *s))
        {
            continue;
        }
        if !filter.admits(&relative_to_start(file, &start)) {
            continue;
        }
        let modified = time
            .parse::<u64>()
            .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        files.push((modified, file.to_string()));
    }
    search::newest_first(&mut files);
    Ok(Some(Listing { root, files }))
}

/// `file` (relative to the workspace root) relative to the search's start; a start that is
/// the file itself gives its name.
fn relative_to_start<'a>(file: &'a str, start: &str) -> std::borrow::Cow<'a, Path> {
    let path = Path::new(file);
    if start.is_empty() {
        return path.into();
    }
    match path.strip_prefix(start) {
        Ok(inside) if !inside.as_os_str().is_empty() => inside.into(),
        _ => path
            .file_name()
            .map(Path::new)
            .unwrap_or(path)
            .to_path_buf()
            .into(),
    }
}

/// The remote search over the NUL-separated files on its standard input; its first line
/// names the tool that ran.
fn search_script(root: &str, request: &SearchRequest) -> String {
    let context = |flag: &str, n: usize| {
        if request.mode == SearchMode::Content && n > 0 {
            format!(" {flag} {n}")
        } else {
            String::new()
        }
    };
    let case = if request.case_insensitive { " -i" } else { "" };
    let (before, after) = (context("-B", request.before), context("-A", request.after));
    let pattern = quote(&request.pattern);
    let multiline = if request.multiline {
        " -U --multiline-dotall"
    } else {
        ""
    };
    let fallback = if request.multiline {
        "echo multiline".to_string()
    } else {
        format!("echo grep; xargs -0 -r grep -P -I -n -H -Z{case}{before}{after} -e {pattern} --")
    };
    format!(
        "cd {root} || exit 2\n\
         if command -v rg >/dev/null 2>&1; then\n\
           echo rg; xargs -0 -r rg --json --no-config{case}{multiline}{before}{after} -e {pattern} --\n\
         else\n\
           {fallback}\n\
         fi\n\
         exit 0\n",
        root = quote(root),
    )
}

/// Adds a line to a file's hits, with a `--` where a gap in the numbers shows one group
/// ended and another began (as the searcher here marks it, when there is context).
fn add(hits: &mut FileHits, kind: LineKind, number: u64, text: &[u8], request: &SearchRequest) {
    if kind == LineKind::Match {
        hits.matches += 1;
    }
    if request.mode != SearchMode::Content {
        return;
    }
    let context = request.before > 0 || request.after > 0;
    let last = hits
        .lines
        .iter()
        .rev()
        .find(|l| l.kind != LineKind::Break)
        .map(|l| l.number);
    if context && last.is_some_and(|last| number > last + 1) {
        hits.lines.push(search::Line {
            kind: LineKind::Break,
            number: 0,
            text: String::new(),
        });
    }
    push_lines(&mut hits.lines, kind, number, text);
}

fn entry<'a>(by_file: &'a mut HashMap<String, FileHits>, path: &str) -> &'a mut FileHits {
    by_file.entry(path.to_string()).or_insert_with(|| FileHits {
        path: path.to_string(),
        matches: 0,
        lines: Vec::new(),
    })
}

/// ripgrep's JSON lines: `match` and `context` messages, with the path, the first line's
/// number and the lines' text.
fn parse_rg(found: &str, request: &SearchRequest) -> HashMap<String, FileHits> {
    let mut by_file = HashMap::new();
    for line in found.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let kind = match message["type"].as_str() {
            Some("match") => LineKind::Match,
            Some("context") => LineKind::Context,
            _ => continue,
        };
        let data = &message["data"];
        // A name or line that is not UTF-8 comes as base64 `bytes`: such files are left
        // out, as the tools name files by text.
        let (Some(path), Some(number)) =
            (data["path"]["text"].as_str(), data["line_number"].as_u64())
        else {
            continue;
        };
        let text = data["lines"]["text"].as_str().unwrap_or_default();
        add(
            entry(&mut by_file, path),
            kind,
            number,
            text.as_bytes(),
            request,
        );
    }
    by_file
}

/// GNU grep's `-H -n -Z` lines: `path\0N:text` for a match, `path\0N-text` for context;
/// its `--` lines are left out (gaps are found from the numbers, as for ripgrep).
fn parse_grep(found: &str, request: &SearchRequest) -> HashMap<String, FileHits> {
    let mut by_file = HashMap::new();
    for line in found.lines() {
        let Some((path, rest)) = line.split_once('\0') else {
            continue;
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (number, rest) = rest.split_at(digits);
        let Ok(number) = number.parse::<u64>() else {
            continue;
        };
        let kind = match rest.as_bytes().first() {
            Some(b':') => LineKind::Match,
            Some(b'-') => LineKind::Context,
            _ => continue,
        };
        add(
            entry(&mut by_file, path),
            kind,
            number,
            &rest.as_bytes()[1..],
            request,
        );
    }
    by_file
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(mode: SearchMode, context: usize) -> SearchRequest {
        SearchRequest {
            pattern: "x".into(),
            path: String::new(),
            glob: None,
            file_type: None,
            case_insensitive: false,
            multiline: false,
            mode,
            before: context,
            after: context,
            limit: None,
        }
    }

    #[test]
    fn ripgrep_and_grep_answers_read_the_same() {
        let rg = concat!(
            r#"{"type":"begin","data":{"path":{"text":"a.txt"}}}"#,
            "\n",
            r#"{"type":"match","data":{"path":{"text":"a.txt"},"lines":{"text":"x1\n"},"line_number":1}}"#,
            "\n",
            r#"{"type":"context","data":{"path":{"text":"a.txt"},"lines":{"text":"y\n"},"line_number":2}}"#,
            "\n",
            r#"{"type":"match","data":{"path":{"text":"a.txt"},"lines":{"text":"x5\n"},"line_number":5}}"#,
            "\n",
        );
        let grep = "a.txt\u{0}1:x1\na.txt\u{0}2-y\n--\na.txt\u{0}5:x5\n";
        let request = request(SearchMode::Content, 1);
        let (from_rg, from_grep) = (parse_rg(rg, &request), parse_grep(grep, &request));
        assert_eq!(from_rg, from_grep);
        let hits = &from_rg["a.txt"];
        assert_eq!(hits.matches, 2);
        let kinds: Vec<LineKind> = hits.lines.iter().map(|l| l.kind).collect();
        assert_eq!(
            kinds,
            [
                LineKind::Match,
                LineKind::Context,
                LineKind::Break,
                LineKind::Match
            ]
        );
        assert_eq!(hits.lines[3].text, "x5");
    }

    #[test]
    fn a_start_path_is_cut_from_the_files_it_lists() {
        assert_eq!(relative_to_start("src/a.rs", "src"), Path::new("a.rs"));
        assert_eq!(relative_to_start("src/a.rs", "src/a.rs"), Path::new("a.rs"));
        assert_eq!(relative_to_start("src/a.rs", ""), Path::new("src/a.rs"));
    }
}
