//! YAML documents as trees that remember where every node came from.
//!
//! Built from the event stream of `granit-parser` (the parser under `serde-saphyr`), with
//! an explicit stack rather than recursion, so no input can overflow the stack. Limits
//! refuse oversized input, deep nesting, alias bombs and duplicate keys with clear messages.
//! Scalars are resolved with the YAML 1.2 core schema (only `true`/`false` are booleans;
//! `yes`, `on` and `y` stay strings), and numbers keep their source text so messages quote
//! what the user wrote (`1.10`, not `1.1`).
//!
//! Why not `serde-saphyr::Spanned` on every node: it was correct but cost about 30 µs a
//! document; building the tree from events directly is several times faster.

use std::borrow::Cow;
use std::collections::HashMap;

use granit_parser::{Event, Parser, ScalarStyle, ScanError};

use super::diag::Pos;

/// Inputs larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
/// Deeper nesting than this is refused (declarations are a handful of levels deep).
pub const MAX_DEPTH: usize = 64;
/// Alias expansions beyond this many nodes in one file are refused ("billion laughs").
pub const MAX_ALIAS_NODES: usize = 100_000;

/// A YAML node and the position it starts at.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// The value of a node. Mapping keys keep their own positions.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// A number as written (`42`, `-1.5e3`, `0x1F`).
    Number(String),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The entry under `key`, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node of `key` (to point at the key rather than its value).
    pub fn key(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(k, _)| k)
    }

    fn entry(&self, key: &str) -> Option<&(Node, Node)> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.as_str() == Some(key)),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An integer, if this is a number that is one and fits.
    pub fn as_i64(&self) -> Option<i64> {
        match &self.value {
            Value::Number(text) => parse_int(text),
            _ => None,
        }
    }

    /// Follows a dotted path such as `spec.playbook[1].run`; `None` when any part is missing.
    pub fn at(&self, path: &str) -> Option<&Node> {
        self.walk(path, false)
    }

    /// Like [`Node::at`], but a final mapping field resolves to its key node, the place to
    /// point at when the field's value is wrong or incomplete.
    pub fn key_at(&self, path: &str) -> Option<&Node> {
        self.walk(path, true)
    }

    fn walk(&self, path: &str, key_last: bool) -> Option<&Node> {
        let mut node = self;
        let parts: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
        for (n, part) in parts.iter().enumerate() {
            let (name, indexes) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (*part, ""),
            };
            if !name.is_empty() {
                let (k, v) = node.entry(name)?;
                node = if key_last && n + 1 == parts.len() && indexes.is_empty() {
                    k
                } else {
                    v
                };
            }
            for index in indexes.split('[').filter(|s| !s.is_empty()) {
                let i: usize = index.trim_end_matches(']').parse().ok()?;
                node = match &node.value {
                    Value::Seq(items) => items.get(i)?,
                    _ => return None,
                };
            }
        }
        Some(node)
    }

    /// Moves every position `by` lines down: a document parsed out of a larger file (a
    /// markdown frontmatter) is located in that file.
    pub fn shift_lines(&mut self, by: u32) {
        if self.pos.line > 0 {
            self.pos.line += by;
        }
        match &mut self.value {
            Value::Seq(items) => items.iter_mut().for_each(|n| n.shift_lines(by)),
            Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                k.shift_lines(by);
                v.shift_lines(by);
            }),
            _ => {}
        }
    }

    /// Where to point for a problem with `path`: the field's key if it exists, else the key
    /// of the deepest ancestor that does.
    pub fn pos_of(&self, path: &str) -> Pos {
        let parts: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
        for len in (1..=parts.len()).rev() {
            let prefix = parts[..len].join(".");
            if let Some(n) = self.key_at(&prefix) {
                return n.pos;
            }
            // `tools[4]` inside a comma-separated string: point at `tools`.
            if let Some(bracket) = prefix.rfind('[')
                && let Some(n) = self.key_at(&prefix[..bracket])
            {
                return n.pos;
            }
        }
        self.pos
    }

    /// A short noun for the node's type, for messages ("found a mapping").
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The same data as JSON, for typed deserialization after the shape has been checked.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Number(text) => number_to_json(text),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Like [`Node::scalar_text`], borrowed where the node holds its text: keys are
    /// compared by it many times while building and checking a document.
    pub fn key_text(&self) -> Cow<'_, str> {
        match &self.value {
            Value::Number(text) | Value::Str(text) => Cow::Borrowed(text),
            _ => Cow::Owned(self.scalar_text()),
        }
    }

    /// A scalar as text, numbers as written (mapping keys are compared as text).
    pub fn scalar_text(&self) -> String {
        match &self.value {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Number(text) | Value::Str(text) => text.clone(),
            Value::Seq(_) => "[...]".into(),
            Value::Map(_) => "{...}".into(),
        }
    }
}

fn parse_int(text: &str) -> Option<i64> {
    parse_i128(text).and_then(|v| i64::try_from(v).ok())
}

/// An integer scalar (decimal, `0x` hex or `0o` octal, signed) exactly, as wide as any
/// bound a schema states (`u64::MAX` included); `None` if it is not one or is wider.
pub fn parse_i128(text: &str) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    // `from_str_radix` would take a second sign; the text already had its one.
    if digits.starts_with(['+', '-']) {
        return None;
    }
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i128::from_str_radix(oct, 8).ok()?
    } else {
        digits.parse::<i128>().ok()?
    };
    Some(if negative { -value } else { value })
}

fn number_to_json(text: &str) -> serde_json::Value {
    if let Some(i) = parse_int(text) {
        return serde_json::Value::from(i);
    }
    let cleaned = text.strip_prefix('+').unwrap_or(text);
    if let Ok(u) = cleaned.parse::<u64>() {
        return serde_json::Value::from(u);
    }
    cleaned
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Whether a number's text is an integer (of any size).
pub fn is_integer_text(text: &str) -> bool {
    let digits = text.trim_start_matches(['-', '+']);
    !digits.is_empty()
        && (digits.bytes().all(|b| b.is_ascii_digit())
            || digits
                .strip_prefix("0x")
                .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()))
            || digits
                .strip_prefix("0o")
                .is_some_and(|o| !o.is_empty() && o.bytes().all(|b| (b'0'..=b'7').contains(&b))))
}

/// Resolves a plain scalar by the YAML 1.2 core schema. Takes the parser's text as it comes,
/// so text the parser already copied is not copied again.
pub(super) fn resolve_plain(text: Cow<'_, str>) -> Value {
    match text.as_ref() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    // Only these start a number: most scalars are names and sentences, checked in one byte.
    let numeric = matches!(
        text.as_bytes().first(),
        Some(b'0'..=b'9' | b'-' | b'+' | b'.')
    );
    if numeric && (is_integer_text(&text) || is_float_text(&text)) {
        Value::Number(text.into_owned())
    } else {
        Value::Str(text.into_owned())
    }
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_float_text(text: &str) -> bool {
    let s = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (!int.is_empty() || !frac.is_empty())
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

/// Why a YAML text could not be read: the message and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

impl SyntaxError {
    fn at(pos: Pos, message: impl Into<String>) -> Self {
        SyntaxError {
            pos,
            message: message.into(),
        }
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn marker_pos(m: &granit_parser::Marker) -> Pos {
    Pos::new(to_u32(m.line()), to_u32(m.col() + 1))
}

/// Turns the scanner's wording into a user's.
fn scan_error(text: &str, e: &ScanError) -> SyntaxError {
    let mut pos = marker_pos(e.marker());
    let info = e.info();
    if info.contains("tab") {
        // Point at the tab itself, which the scanner may have reported from the line before.
        let from = (pos.line as usize).saturating_sub(1);
        for (n, line) in text.lines().enumerate().skip(from).take(2) {
            if let Some(col) = line.find('\t') {
                pos = Pos::new(to_u32(n + 1), to_u32(line[..col].chars().count() + 1));
                break;
            }
        }
        return SyntaxError::at(pos, "a tab is used for indentation; indent with spaces");
    }
    if info.contains("recursion") || info.contains("nesting") {
        return SyntaxError::at(pos, format!("nested deeper than {MAX_DEPTH} levels"));
    }
    SyntaxError::at(pos, info)
}

/// A collection being built.
enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        /// Built lazily for large mappings, so duplicate detection stays linear.
        index: Option<HashMap<String, Pos>>,
    },
}

struct Builder<'t> {
    text: &'t str,
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, usize)>,
    alias_nodes: usize,
    docs: Vec<Node>,
    root: Option<Node>,
}

fn count_nodes(node: &Node) -> usize {
    let mut count = 0;
    let mut todo = vec![node];
    while let Some(n) = todo.pop() {
        count += 1;
        match &n.value {
            Value::Seq(items) => todo.extend(items),
            Value::Map(entries) => entries.iter().for_each(|(k, v)| {
                todo.push(k);
                todo.push(v);
            }),
            _ => {}
        }
    }
    count
}

impl Builder<'_> {
    fn open(&mut self, frame: Frame, pos: Pos) -> Result<(), SyntaxError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(SyntaxError::at(
                pos,
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            self.anchors
                .insert(anchor, (node.clone(), count_nodes(node)));
        }
    }

    /// Adds a finished node to the collection being built, or makes it the document root.
    fn push(&mut self, node: Node) -> Result<(), SyntaxError> {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                key,
                index,
                ..
            }) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    let name = k.key_text();
                    let first = match index {
                        Some(index) => index.get(name.as_ref()).copied(),
                        None => entries
                            .iter()
                            .find(|(e, _)| e.key_text() == name)
                            .map(|(e, _)| e.pos),
                    };
                    if let Some(first) = first {
                        return Err(SyntaxError::at(
                            k.pos,
                            format!(
                                "duplicate key \"{name}\" (first at {}:{})",
                                first.line, first.col
                            ),
                        ));
                    }
                    if let Some(index) = index {
                        index.insert(name.into_owned(), k.pos);
                    } else if entries.len() >= 32 {
                        let mut built: HashMap<String, Pos> = entries
                            .iter()
                            .map(|(e, _)| (e.scalar_text(), e.pos))
                            .collect();
                        built.insert(name.into_owned(), k.pos);
                        *index = Some(built);
                    }
                    entries.push((k, node));
                }
            },
        }
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, pos: Pos) -> Result<(), SyntaxError> {
        match event {
            Event::DocumentStart(..) => self.root = None,
            Event::DocumentEnd => {
                if let Some(root) = self.root.take()
                    && root.value != Value::Null
                {
                    self.docs.push(root);
                }
                self.anchors.clear();
            }
            Event::Scalar(text, style, anchor, tag) => {
                let forced_str = tag
                    .as_ref()
                    .is_some_and(|t| t.to_string().ends_with(":str"));
                let value = if style == ScalarStyle::Plain && !forced_str {
                    resolve_plain(text)
                } else {
                    Value::Str(Cow::into_owned(text))
                };
                let node = Node { pos, value };
                self.remember(anchor, &node);
                self.push(node)?;
            }
            Event::SequenceStart(_, anchor, _) => self.open(
                Frame::Seq {
                    pos,
                    anchor,
                    items: Vec::new(),
                },
                pos,
            )?,
            Event::MappingStart(_, anchor, _) => self.open(
                Frame::Map {
                    pos,
                    anchor,
                    entries: Vec::new(),
                    key: None,
                    index: None,
                },
                pos,
            )?,
            Event::SequenceEnd | Event::MappingEnd => {
                // Trees live as long as their revision runs (every resource keeps its own), so
                // collections give back what their growth over-reserved.
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq {
                        pos,
                        anchor,
                        mut items,
                    }) => {
                        items.shrink_to_fit();
                        (
                            Node {
                                pos,
                                value: Value::Seq(items),
                            },
                            anchor,
                        )
                    }
                    Some(Frame::Map {
                        pos,
                        anchor,
                        mut entries,
                        ..
                    }) => {
                        entries.shrink_to_fit();
                        (
                            Node {
                                pos,
                                value: Value::Map(entries),
                            },
                            anchor,
                        )
                    }
                    None => return Err(SyntaxError::at(pos, "unbalanced collection end")),
                };
                self.remember(anchor, &node);
                self.push(node)?;
            }
            Event::Alias(id) => {
                let Some((node, count)) = self.anchors.get(&id) else {
                    return Err(SyntaxError::at(pos, "alias to an unknown anchor"));
                };
                self.alias_nodes += count;
                if self.alias_nodes > MAX_ALIAS_NODES {
                    return Err(SyntaxError::at(
                        pos,
                        format!(
                            "aliases expand to more than {MAX_ALIAS_NODES} nodes; refusing a possible \"billion laughs\" document"
                        ),
                    ));
                }
                let node = Node {
                    pos,
                    value: node.value.clone(),
                };
                self.push(node)?;
            }
            Event::UnresolvedAlias(name) => {
                return Err(SyntaxError::at(
                    pos,
                    format!("alias *{name} refers to no anchor"),
                ));
            }
            _ => {}
        }
        let _ = self.text;
        Ok(())
    }
}

/// Parses every document of a YAML text. Empty documents are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(SyntaxError::at(
            Pos::default(),
            format!(
                "file is {} bytes; declarations are limited to {MAX_FILE_BYTES} bytes",
                text.len()
            ),
        ));
    }
    // Most declarations are plain block YAML, which the fast path reads several times faster.
    if let Some(docs) = super::simple_yaml::parse(text) {
        return Ok(docs);
    }
    parse_with_granit(text)
}

/// Parses with `granit-parser`, whatever the text holds: what [`parse_documents`] does when
/// the fast path gives up.
pub(super) fn parse_with_granit(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut builder = Builder {
        text,
        stack: Vec::new(),
        anchors: HashMap::new(),
        alias_nodes: 0,
        docs: Vec::new(),
        root: None,
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| scan_error(text, &e))?;
        builder.event(event, marker_pos(&span.start))?;
    }
    Ok(builder.docs)
}

/// Parses a text that must hold exactly one document (frontmatter, for example).
pub fn parse_one(text: &str) -> Result<Node, SyntaxError> {
    let mut docs = parse_documents(text)?;
    match docs.len() {
        0 => Ok(Node {
            pos: Pos::new(1, 1),
            value: Value::Map(Vec::new()),
        }),
        1 => Ok(docs.remove(0)),
        _ => Err(SyntaxError::at(
            docs[1].pos,
            "expected one YAML document, found several",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_know_their_positions() {
        let docs = parse_documents("a: 1\nb:\n  c: [x, y]\n---\nz: true\n").unwrap();
        assert_eq!(docs.len(), 2);
        let c = docs[0].at("b.c[1]").unwrap();
        assert_eq!(c.as_str(), Some("y"));
        assert_eq!(c.pos, Pos::new(3, 10));
        assert_eq!(docs[0].key("b").unwrap().pos, Pos::new(2, 1));
        assert_eq!(docs[0].pos_of("b.c"), Pos::new(3, 3));
        assert_eq!(docs[0].pos_of("b.missing"), Pos::new(2, 1));
        assert_eq!(docs[1].get("z").unwrap().value, Value::Bool(true));
    }

    #[test]
    fn scalars_follow_the_core_schema_and_keep_their_text() {
        let doc =
            parse_one("a: yes\nb: 1.10\nc: ~\nd: '42'\ne: -7\nf: 1e3\ng: on\nh: 0x1F\n").unwrap();
        assert_eq!(doc.get("a").unwrap().value, Value::Str("yes".into()));
        assert_eq!(doc.get("b").unwrap().scalar_text(), "1.10");
        assert_eq!(doc.get("c").unwrap().value, Value::Null);
        assert_eq!(doc.get("d").unwrap().value, Value::Str("42".into()));
        assert_eq!(doc.get("e").unwrap().as_i64(), Some(-7));
        assert_eq!(doc.get("f").unwrap().to_json(), serde_json::json!(1000.0));
        assert_eq!(doc.get("g").unwrap().value, Value::Str("on".into()));
        assert_eq!(doc.get("h").unwrap().as_i64(), Some(31));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse_documents("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(err.pos.line >= 2, "{err:?}");
        assert!(!err.message.is_empty());
        let dup = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(
            dup,
            SyntaxError::at(Pos::new(3, 1), "duplicate key \"a\" (first at 1:1)")
        );
        let tab = parse_documents("a:\n\tb: 1\n").unwrap_err();
        assert_eq!(tab.pos, Pos::new(2, 1));
    }

    #[test]
    fn large_mappings_still_catch_duplicates() {
        let mut text: String = (0..100).map(|i| format!("k{i}: {i}\n")).collect();
        text.push_str("k7: again\n");
        let err = parse_documents(&text).unwrap_err();
        assert_eq!(err.message, "duplicate key \"k7\" (first at 8:1)");
    }

    #[test]
    fn aliases_expand_within_budget() {
        let doc = parse_one("base: &b {x: 1}\ncopy: *b\n").unwrap();
        assert_eq!(doc.get("copy").unwrap().get("x").unwrap().as_i64(), Some(1));
        assert_eq!(doc.get("copy").unwrap().pos, Pos::new(2, 7));
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_refused() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = (b'a' + i - 1) as char;
            let cur = (b'a' + i) as char;
            bomb.push_str(&format!(
                "{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let err = parse_documents(&bomb).unwrap_err();
        assert!(err.message.contains("billion laughs"), "{err:?}");
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(
            parse_documents(&deep)
                .unwrap_err()
                .message
                .contains("nested deeper")
        );
        let deep_block: String = (0..200)
            .map(|i| format!("{}k:\n", "  ".repeat(i)))
            .collect();
        assert!(
            parse_documents(&deep_block)
                .unwrap_err()
                .message
                .contains("nested deeper")
        );
    }
}

/// Typed values straight from a tree, without an intermediate JSON value: loading 10,000
/// documents spends its time parsing, not copying.
pub mod de {
    use std::borrow::Cow;

    use serde::de::value::{BorrowedStrDeserializer, Error, StrDeserializer};
    use serde::de::{
        self, DeserializeOwned, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
    };

    use super::{Node, Value, parse_int};

    /// Deserializes `T` from a node.
    pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, Error> {
        T::deserialize(node)
    }

    impl<'de> Deserializer<'de> for &'de Node {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match &self.value {
                Value::Null => visitor.visit_unit(),
                Value::Bool(b) => visitor.visit_bool(*b),
                Value::Number(text) => {
                    if let Some(i) = parse_int(text) {
                        visitor.visit_i64(i)
                    } else if let Ok(u) = text.trim_start_matches('+').parse::<u64>() {
                        visitor.visit_u64(u)
                    } else {
                        let f: f64 = text
                            .trim_start_matches('+')
                            .parse()
                            .map_err(|_| de::Error::custom(format!("invalid number {text}")))?;
                        visitor.visit_f64(f)
                    }
                }
                Value::Str(s) => visitor.visit_borrowed_str(s),
                Value::Seq(items) => visitor.visit_seq(Items(items.iter())),
                Value::Map(entries) => visitor.visit_map(Entries {
                    entries: entries.iter(),
                    value: None,
                }),
            }
        }

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.value {
                Value::Null => visitor.visit_none(),
                _ => visitor.visit_some(self),
            }
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            match &self.value {
                Value::Str(s) => {
                    let variant: StrDeserializer<'_, Error> = s.as_str().into_deserializer();
                    visitor.visit_enum(variant)
                }
                _ => Err(de::Error::custom(format!(
                    "expected a string, found {}",
                    self.type_name()
                ))),
            }
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
        }
    }

    struct Items<'a>(std::slice::Iter<'a, Node>);

    impl<'de> SeqAccess<'de> for Items<'de> {
        type Error = Error;
        fn next_element_seed<T: de::DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>, Error> {
            self.0.next().map(|n| seed.deserialize(n)).transpose()
        }
    }

    struct Entries<'a> {
        entries: std::slice::Iter<'a, (Node, Node)>,
        value: Option<&'a Node>,
    }

    impl<'de> MapAccess<'de> for Entries<'de> {
        type Error = Error;
        fn next_key_seed<K: de::DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Error> {
            match self.entries.next() {
                Some((k, v)) => {
                    self.value = Some(v);
                    // Keys are text whatever they look like (`1: x` is the key "1"), as in
                    // the schema check.
                    // Borrowed where the key holds its text, so naming a field allocates
                    // nothing.
                    match k.key_text() {
                        Cow::Borrowed(text) => seed
                            .deserialize(BorrowedStrDeserializer::<Error>::new(text))
                            .map(Some),
                        Cow::Owned(text) => {
                            let key: de::value::StringDeserializer<Error> =
                                text.into_deserializer();
                            seed.deserialize(key).map(Some)
                        }
                    }
                }
                None => Ok(None),
            }
        }
        fn next_value_seed<V: de::DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> Result<V::Value, Error> {
            match self.value.take() {
                Some(v) => seed.deserialize(v),
                None => Err(de::Error::custom("a value without its key")),
            }
        }
    }
}
