//! A fast path for the YAML declarations are mostly written in: block mappings and
//! sequences, one-line flow collections, plain and simply quoted scalars, literal blocks.
//!
//! At 10,000 resources `granit-parser` took about half of a full load: it builds and moves
//! large token and event values for every scalar. This reader walks the text once, byte by
//! byte, and builds the same [`Node`] tree, positions included, with one copy per scalar.
//!
//! It never decides anything the full parser would decide differently: on whatever it does
//! not know for certain (anchors, tags, escapes, multi-line scalars, empty values, tabs,
//! non-ASCII text, any error) it gives up and [`super::yaml::parse_documents`] parses the
//! text with `granit-parser`, which also words every error. `tests` below compare the two on
//! valid and broken input.

use std::borrow::Cow;

use super::diag::Pos;
use super::yaml::{MAX_DEPTH, Node, Value, resolve_plain};

/// Collections deeper than this are left to the full parser, which refuses them at
/// [`MAX_DEPTH`] with its own message.
const DEPTH_LIMIT: usize = MAX_DEPTH - 4;

/// Mappings with more keys than this are left to the full parser: duplicate keys are found
/// here by a scan, which must stay short.
const MAX_KEYS: usize = 64;

/// Why the fast path gave up; the caller parses the text fully.
struct GiveUp;

type R<T> = Result<T, GiveUp>;

/// The documents of `text`, empty ones dropped, as `parse_documents` would return them; `None`
/// when the text uses anything this reader does not handle.
pub fn parse(text: &str) -> Option<Vec<Node>> {
    let bytes = text.as_bytes();
    // ASCII without control characters (so a byte's column is its character's), ending in a
    // line feed (so every line, the last included, ends the same way).
    if !bytes
        .iter()
        .all(|&b| b == b'\n' || (b' '..=b'~').contains(&b))
        || bytes.last().is_some_and(|&b| b != b'\n')
    {
        return None;
    }
    let mut reader = Reader {
        text,
        b: bytes,
        at: 0,
        line: 1,
        line_start: 0,
    };
    reader.documents().ok()
}

struct Reader<'t> {
    text: &'t str,
    b: &'t [u8],
    /// The byte read next.
    at: usize,
    /// The 1-based line `at` is on, and where that line starts.
    line: u32,
    line_start: usize,
}

/// The next line with content, as [`Reader::peek`] finds it.
enum Next {
    End,
    /// A `---` line.
    Marker,
    /// Content indented this many spaces.
    Content(usize),
}

impl<'t> Reader<'t> {
    fn byte(&self, i: usize) -> u8 {
        self.b.get(i).copied().unwrap_or(b'\n')
    }

    fn pos(&self, i: usize) -> Pos {
        let col = u32::try_from(i - self.line_start + 1).unwrap_or(u32::MAX);
        Pos::new(self.line, col)
    }

    /// Moves to the start of the next line (`at` is on the current one).
    fn next_line(&mut self) {
        match self.b[self.at..].iter().position(|&b| b == b'\n') {
            Some(n) => {
                self.at += n + 1;
                self.line += 1;
                self.line_start = self.at;
            }
            None => {
                self.at = self.b.len();
                self.line_start = self.at;
            }
        }
    }

    /// From the start of a line, skips blank and comment lines and finds what comes next;
    /// `at` stays at the start of that line.
    fn peek(&mut self) -> R<Next> {
        loop {
            if self.at >= self.b.len() {
                return Ok(Next::End);
            }
            let start = self.at;
            let mut i = start;
            while self.b[i] == b' ' {
                i += 1;
            }
            match self.b[i] {
                b'\n' | b'#' => self.next_line(),
                b'-' | b'.' if i == start && self.b[i..].starts_with(b"---\n") => {
                    return Ok(Next::Marker);
                }
                b'-' | b'.'
                    if i == start
                        && (self.b[i..].starts_with(b"---") || self.b[i..].starts_with(b"...")) =>
                {
                    return Err(GiveUp);
                }
                _ => return Ok(Next::Content(i - start)),
            }
        }
    }

    fn documents(&mut self) -> R<Vec<Node>> {
        let mut docs = Vec::new();
        loop {
            match self.peek()? {
                Next::End => break,
                Next::Marker => self.next_line(),
                Next::Content(0) => {
                    // A document is a mapping here; a scalar or list at the root is rare.
                    self.at = self.line_start;
                    if self.is_dash(self.at) {
                        return Err(GiveUp);
                    }
                    docs.push(self.mapping(0, 0, self.at)?);
                }
                Next::Content(_) => return Err(GiveUp),
            }
        }
        if docs.is_empty() {
            // Nothing but comments and markers: let the full parser say what that is.
            return Err(GiveUp);
        }
        Ok(docs)
    }

    /// `- ` (or `-` ending the line) at `i`: a sequence entry.
    fn is_dash(&self, i: usize) -> bool {
        self.byte(i) == b'-' && matches!(self.byte(i + 1), b' ' | b'\n')
    }

    /// A block mapping whose keys are indented `indent` spaces; its first key is at `first`
    /// (on the current line, perhaps after a sequence's `- `).
    fn mapping(&mut self, indent: usize, depth: usize, first: usize) -> R<Node> {
        if depth >= DEPTH_LIMIT {
            return Err(GiveUp);
        }
        let mut entries: Vec<(Node, Node)> = Vec::new();
        let mut key_at = first;
        let map_pos = self.pos(first);
        loop {
            let key = self.key(key_at)?;
            if entries.len() >= MAX_KEYS || entries.iter().any(|(k, _)| same_key(k, &key)) {
                return Err(GiveUp);
            }
            // `at` is just past the `:`.
            self.skip_spaces();
            let value = if self.at_line_end() {
                self.next_line();
                match self.peek()? {
                    Next::Content(n) if n > indent => {
                        let i = self.line_start + n;
                        if self.is_dash(i) {
                            self.sequence(n, false, depth + 1)?
                        } else {
                            self.mapping(n, depth + 1, i)?
                        }
                    }
                    Next::Content(n) if n == indent && self.is_dash(self.line_start + n) => {
                        self.sequence(n, true, depth + 1)?
                    }
                    // An empty value (null) or a parent's next key: the full parser decides.
                    _ => return Err(GiveUp),
                }
            } else if self.byte(self.at) == b'|' {
                self.literal(indent)?
            } else {
                let value = self.inline(depth + 1)?;
                self.end_line()?;
                value
            };
            entries.push((key, value));
            match self.peek()? {
                Next::Content(n) if n == indent => {
                    key_at = self.line_start + n;
                    if self.is_dash(key_at) {
                        // An indentless sequence's next entry belongs to it, not here.
                        return Err(GiveUp);
                    }
                }
                Next::Content(n) if n > indent => return Err(GiveUp),
                _ => break,
            }
        }
        entries.shrink_to_fit();
        Ok(Node {
            pos: map_pos,
            value: Value::Map(entries),
        })
    }

    /// A block sequence whose dashes are indented `indent` spaces; `indentless` when they are
    /// at the indent of the mapping key it is the value of. `at` is at its first line.
    fn sequence(&mut self, indent: usize, indentless: bool, depth: usize) -> R<Node> {
        if depth >= DEPTH_LIMIT {
            return Err(GiveUp);
        }
        let mut items = Vec::new();
        let mut seq_pos = None;
        loop {
            let dash = self.line_start + indent;
            if self.byte(dash + 1) != b' ' {
                return Err(GiveUp);
            }
            self.at = dash + 1;
            self.skip_spaces();
            let start = self.at;
            if self.at_line_end() || self.is_dash(start) {
                return Err(GiveUp);
            }
            // The full parser places an indentless sequence at its first entry's content and
            // any other at its first dash.
            seq_pos.get_or_insert(self.pos(if indentless { start } else { dash }));
            let item = if self.looks_like_key(start) {
                let inner = start - self.line_start;
                self.mapping(inner, depth + 1, start)?
            } else {
                let item = self.inline(depth + 1)?;
                self.end_line()?;
                item
            };
            items.push(item);
            match self.peek()? {
                Next::Content(n) if n == indent => {
                    if !self.is_dash(self.line_start + n) {
                        if indentless {
                            break;
                        }
                        return Err(GiveUp);
                    }
                }
                Next::Content(n) if n > indent => return Err(GiveUp),
                _ => break,
            }
        }
        items.shrink_to_fit();
        Ok(Node {
            pos: seq_pos.ok_or(GiveUp)?,
            value: Value::Seq(items),
        })
    }

    /// Whether a block mapping key (`name:` then a space or the line's end) starts at `i`.
    fn looks_like_key(&self, i: usize) -> bool {
        let mut j = i;
        while is_key_byte(self.byte(j)) {
            j += 1;
        }
        j > i && self.byte(j) == b':' && matches!(self.byte(j + 1), b' ' | b'\n')
    }

    /// A block mapping key at `i`, leaving `at` past its `:`.
    fn key(&mut self, i: usize) -> R<Node> {
        if !self.looks_like_key(i) || !is_plain_start(self.b, i) {
            return Err(GiveUp);
        }
        let mut j = i;
        while is_key_byte(self.byte(j)) {
            j += 1;
        }
        self.at = j + 1;
        Ok(Node {
            pos: self.pos(i),
            value: resolve_plain(Cow::Borrowed(&self.text[i..j])),
        })
    }

    fn skip_spaces(&mut self) {
        while self.byte(self.at) == b' ' {
            self.at += 1;
        }
    }

    /// Whether only spaces and perhaps a comment remain on the line (`at` past the spaces).
    fn at_line_end(&self) -> bool {
        match self.byte(self.at) {
            b'\n' => true,
            // A comment needs a space before it, which was just skipped.
            b'#' => self.at > self.line_start && self.b[self.at - 1] == b' ',
            _ => false,
        }
    }

    /// Requires the rest of the line to be blank or a comment, and moves to the next line.
    fn end_line(&mut self) -> R<()> {
        self.skip_spaces();
        if !self.at_line_end() {
            return Err(GiveUp);
        }
        self.next_line();
        Ok(())
    }

    /// A value that starts and ends on this line: a flow collection, a quoted or plain scalar.
    fn inline(&mut self, depth: usize) -> R<Node> {
        let start = self.at;
        match self.byte(start) {
            b'{' | b'[' => self.flow(depth),
            b'"' | b'\'' => self.quoted(),
            _ => {
                // A plain scalar runs to the line's end or a comment.
                if !is_plain_start(self.b, start) {
                    return Err(GiveUp);
                }
                let mut end = start;
                loop {
                    match self.byte(end) {
                        b'\n' => break,
                        b'#' if self.b[end - 1] == b' ' => break,
                        // `a: b: c` is an error; `a: b:` too.
                        b':' if matches!(self.byte(end + 1), b' ' | b'\n') => {
                            return Err(GiveUp);
                        }
                        _ => end += 1,
                    }
                }
                self.at = end;
                let text = self.text[start..end].trim_end_matches(' ');
                Ok(Node {
                    pos: self.pos(start),
                    value: resolve_plain(Cow::Borrowed(text)),
                })
            }
        }
    }

    /// A quoted scalar without escapes, closed on its line.
    fn quoted(&mut self) -> R<Node> {
        let start = self.at;
        let quote = self.b[start];
        let len = self.b[start + 1..]
            .iter()
            .position(|&b| b == quote || b == b'\n' || b == b'\\')
            .ok_or(GiveUp)?;
        let end = start + 1 + len;
        // A backslash escapes in double quotes; `''` is a quote in single ones; both rare.
        if self.b[end] != quote || self.byte(end + 1) == quote || self.b[end] == b'\\' {
            return Err(GiveUp);
        }
        self.at = end + 1;
        Ok(Node {
            pos: self.pos(start),
            value: Value::Str(self.text[start + 1..end].to_string()),
        })
    }

    /// A flow mapping or sequence closed on its line; `at` is at its bracket.
    fn flow(&mut self, depth: usize) -> R<Node> {
        if depth >= DEPTH_LIMIT {
            return Err(GiveUp);
        }
        let open = self.at;
        let pos = self.pos(open);
        let is_map = self.b[open] == b'{';
        let close = if is_map { b'}' } else { b']' };
        self.at += 1;
        self.skip_spaces();
        let mut items = Vec::new();
        let mut entries: Vec<(Node, Node)> = Vec::new();
        if self.byte(self.at) != close {
            loop {
                if is_map {
                    let key = self.flow_scalar()?;
                    if self.byte(self.at) != b':' || self.byte(self.at + 1) != b' ' {
                        return Err(GiveUp);
                    }
                    if entries.len() >= MAX_KEYS || entries.iter().any(|(k, _)| same_key(k, &key)) {
                        return Err(GiveUp);
                    }
                    self.at += 1;
                    self.skip_spaces();
                    let value = self.flow_value(depth)?;
                    entries.push((key, value));
                } else {
                    items.push(self.flow_value(depth)?);
                }
                self.skip_spaces();
                match self.byte(self.at) {
                    b',' => {
                        self.at += 1;
                        self.skip_spaces();
                        // A trailing comma, or an empty entry: the full parser decides.
                        if matches!(self.byte(self.at), b',' | b']' | b'}') {
                            return Err(GiveUp);
                        }
                    }
                    b if b == close => break,
                    _ => return Err(GiveUp),
                }
            }
        }
        self.at += 1;
        let value = if is_map {
            entries.shrink_to_fit();
            Value::Map(entries)
        } else {
            items.shrink_to_fit();
            Value::Seq(items)
        };
        Ok(Node { pos, value })
    }

    fn flow_value(&mut self, depth: usize) -> R<Node> {
        match self.byte(self.at) {
            b'{' | b'[' => self.flow(depth + 1),
            b'"' | b'\'' => self.quoted(),
            _ => self.flow_scalar(),
        }
    }

    /// A plain scalar inside a flow collection: up to `,`, a bracket or `: `, spaces trimmed.
    fn flow_scalar(&mut self) -> R<Node> {
        let start = self.at;
        if !is_plain_start(self.b, start) {
            return Err(GiveUp);
        }
        let mut end = start;
        loop {
            match self.byte(end) {
                b',' | b'[' | b']' | b'{' | b'}' => break,
                b':' if self.byte(end + 1) == b' ' => break,
                // Other colons, comments and line ends inside flow text: rare, and subtle.
                b':' | b'#' | b'\n' => return Err(GiveUp),
                _ => end += 1,
            }
        }
        self.at = end;
        let text = self.text[start..end].trim_end_matches(' ');
        if text.is_empty() {
            return Err(GiveUp);
        }
        Ok(Node {
            pos: self.pos(start),
            value: resolve_plain(Cow::Borrowed(text)),
        })
    }

    /// A literal block scalar (`|` alone, clipped) under a key indented `parent` spaces.
    /// `at` is at the `|`; leaves `at` at the line after its last line.
    fn literal(&mut self, parent: usize) -> R<Node> {
        self.at += 1;
        self.skip_spaces();
        if self.byte(self.at) != b'\n' {
            // `|-`, `|+`, `|2`, a comment: rare enough to leave to the full parser.
            return Err(GiveUp);
        }
        self.next_line();
        let indent = self.indent_here();
        if self.at >= self.b.len() || indent <= parent || self.byte(self.at + indent) == b'\n' {
            return Err(GiveUp);
        }
        let pos = Pos::new(self.line, u32::try_from(indent + 1).unwrap_or(u32::MAX));
        let mut text = String::new();
        // Blank lines are kept only when content follows them (clip chomping).
        let mut blanks = 0;
        while self.at < self.b.len() {
            let n = self.indent_here();
            let first = self.at + n;
            if self.b[first] == b'\n' {
                if n > 0 {
                    // Lines of spaces only follow rules of their own.
                    return Err(GiveUp);
                }
                blanks += 1;
                self.next_line();
                continue;
            }
            if n < indent {
                break;
            }
            for _ in 0..blanks {
                text.push('\n');
            }
            blanks = 0;
            let end = first
                + self.b[first..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .ok_or(GiveUp)?;
            text.push_str(&self.text[self.at + indent..end]);
            text.push('\n');
            self.next_line();
        }
        Ok(Node {
            pos,
            value: Value::Str(text),
        })
    }

    /// The spaces at the start of the line `at` is at the start of.
    fn indent_here(&self) -> usize {
        self.b[self.at..].iter().take_while(|&&b| b == b' ').count()
    }
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/')
}

/// Whether a plain scalar may start at `i`: not with an indicator, and `-` only before a
/// letter or digit.
fn is_plain_start(b: &[u8], i: usize) -> bool {
    match b.get(i) {
        Some(c) if c.is_ascii_alphanumeric() => true,
        Some(b'_' | b'.' | b'/' | b'~' | b'(' | b'$' | b'=' | b'^' | b'+' | b'<' | b';') => true,
        Some(b'-') => b.get(i + 1).is_some_and(u8::is_ascii_alphanumeric),
        _ => false,
    }
}

/// Keys compare as text, as the full parser's duplicate check does.
fn same_key(a: &Node, b: &Node) -> bool {
    a.key_text() == b.key_text()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::yaml::parse_with_granit;

    /// Texts the fast path reads, and some it must leave to the full parser.
    const SEEDS: &[&str] = &[
        "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: g-1}\nspec:\n  check:\n    command: {run: test -f x, timeout: 30s}\n  dependsOn: [g-0]\n  playbook:\n    - write: {path: x, content: done}\n    - commit: {message: goal 1}\n  prompt: |\n    You are agent 1.\n\n      Indented.\n    Done.\n\n  budget: {usd: 1, attempts: 3}\n",
        "a: 1\nb:\n- x\n- y: 2\n  z: [1, {q: r}]\n- 'it'\nc: \"d\" # c\n# full\n\nd: |\n  l1\n\n    l2\n  l3\n\n\ne: {}\nf: []\n",
        "---\nk: v\n---\n---\nnull: 1\ntrue: 2\n1: 3\n0x1F: a\n1.5: b\n",
        "x:\n  y:\n    z:\n      - a\n      -   b: c\n          d: e\n      - [a, b , c ]\n  w: ~\n",
        "p: |\n    deep\n  # not a comment\n  x\nq: a:b\nr: a #b\ns: http://x.y/z\nt: -7\nu: .5\nv: +1\n",
        "list:\n  - |\n    lit\n  - {a: 'b', c: \"d\"}\n  - - nested\nm: { a : b }\n",
        "a: 1\nb: 2\na: 3\n",
        "a: {x: 1, x: 2}\n",
        "a: b: c\n",
        "a:\n  - x\n b: 1\n",
        "a: 'it''s'\nb: \"\\t\"\n",
        "a: &x 1\nb: *x\nc: !!str 2\n",
        "a:\n",
        "a: x\n  continued\n",
        "a: [x,\n  y]\n",
        "a: |-\n  x\n",
        "a: caf\u{e9}\n",
        "a:\tb\n",
        "- a\n- b\n",
        "--- # c\na: 1\n",
    ];

    /// Whatever the fast path returns, the full parser returns too.
    fn agrees(text: &str) -> bool {
        match parse(text) {
            None => true,
            Some(fast) => parse_with_granit(text).is_ok_and(|full| full == fast),
        }
    }

    #[test]
    fn reads_what_the_full_parser_reads() {
        for seed in SEEDS {
            assert!(agrees(seed), "{seed}");
        }
        assert!(parse(SEEDS[0]).is_some());
        assert!(parse(SEEDS[1]).is_some());
        assert!(parse(SEEDS[2]).is_some());
    }

    #[test]
    fn gives_up_on_what_it_does_not_know() {
        for text in &SEEDS[6..] {
            assert!(parse(text).is_none(), "{text}");
        }
    }

    /// Random edits of the seeds (the development harness ran some millions of them): the
    /// fast path either agrees with the full parser or leaves the text to it.
    #[test]
    fn agrees_on_random_edits() {
        let pieces = [
            " ", "  ", "\n", ":", ": ", "- ", "-", "#", " #", "'", "\"", "{", "}", "[", "]", ",",
            "|", "a", "1", "&a ", "*a", "!", "\t", "---\n", "...", "\\", "?", ">", "~", "null",
            "\r", "%", "@", "`", ":x", "''",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut below = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % n as u64).unwrap_or(0)
        };
        let mut handled = 0;
        for _ in 0..20_000 {
            let mut lines: Vec<String> = SEEDS[below(SEEDS.len())]
                .split_inclusive('\n')
                .map(str::to_string)
                .collect();
            for _ in 0..1 + below(3) {
                if lines.is_empty() {
                    break;
                }
                let i = below(lines.len());
                match below(7) {
                    0 => {
                        lines.remove(i);
                    }
                    1 => lines.insert(i, lines[i].clone()),
                    2 => lines[i].insert_str(0, "  "),
                    3 => lines[i] = lines[i].trim_start_matches(' ').to_string(),
                    _ => {
                        let line = &lines[i];
                        let mut at = below(line.len().max(1));
                        while !line.is_char_boundary(at) {
                            at -= 1;
                        }
                        let mut end = (at + below(3)).min(line.len());
                        while !line.is_char_boundary(end) {
                            end += 1;
                        }
                        let piece = pieces[below(pieces.len())];
                        lines[i] = format!("{}{piece}{}", &line[..at], &line[end..]);
                    }
                }
            }
            let text = lines.concat();
            assert!(agrees(&text), "{text:?}");
            handled += usize::from(parse(&text).is_some());
        }
        assert!(handled > 1_000, "{handled}");
    }
}
