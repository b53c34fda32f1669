//! Checks a document's shape against its kind's JSON Schema, collecting every problem.
//!
//! Serde stops at the first error in a document; users fixing a file want them all at once,
//! each at its own line. So before typed deserialization, the positioned YAML tree is walked
//! against the schema that `schemars` derives from the very same Rust types: unknown fields
//! (with "did you mean"), missing required fields, wrong types and values outside an enum.
//! Only the subset of JSON Schema that our types produce is understood.

use serde_json::{Map, Value as Json};

use super::diag::{Pos, closest, did_you_mean};
use super::yaml::{self, Node, Value};

/// One shape problem: where, which field, what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeError {
    pub pos: Pos,
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

/// Walks `node` against `schema` (a root schema holding `$defs`).
pub fn check(node: &Node, schema: &Json) -> Vec<ShapeError> {
    check_compiled(node, &Compiled::new(schema))
}

/// Walks `node` against a schema compiled once for many documents.
pub fn check_compiled(node: &Node, schema: &Compiled<'_>) -> Vec<ShapeError> {
    let mut errors = Vec::new();
    schema.walk(node, schema.root, &Path::Root, node.pos, &mut errors);
    errors
}

/// A schema with each of its sub-schemas' keywords looked up once. Walking the JSON form
/// looked up `$ref`, `anyOf`, `oneOf`, `const`, `type`, `enum`, ... by name in every node's
/// schema, for every node of every document: a fifth of the time it took to load a large
/// company.
pub struct Compiled<'a> {
    nodes: Vec<Schema<'a>>,
    root: usize,
}

/// One sub-schema, `$ref`s resolved; children are indexes into [`Compiled::nodes`].
#[derive(Default)]
struct Schema<'a> {
    /// `anyOf` (or else `oneOf`): each branch, and whether its own `type` is `"null"`.
    alternatives: Option<Vec<(usize, bool)>>,
    constant: Option<&'a Json>,
    types: Vec<&'a str>,
    enumeration: Option<&'a [Json]>,
    /// The range an integer must be in.
    minimum: Option<i128>,
    maximum: i128,
    items: Option<usize>,
    /// The properties by name, and the JSON map for the names in order (for messages).
    properties: Vec<(&'a str, usize)>,
    names: Option<&'a Map<String, Json>>,
    additional: Additional,
    required: Vec<&'a str>,
}

#[derive(Default)]
enum Additional {
    #[default]
    Allowed,
    Refused,
    Checked(usize),
}

impl<'a> Compiled<'a> {
    pub fn new(root: &'a Json) -> Self {
        let mut compiled = Compiled {
            nodes: Vec::new(),
            root: 0,
        };
        let mut seen = std::collections::HashMap::new();
        compiled.root = compiled.compile(root, root, &mut seen);
        compiled
    }

    fn compile(
        &mut self,
        root: &'a Json,
        schema: &'a Json,
        seen: &mut std::collections::HashMap<*const Json, usize>,
    ) -> usize {
        let schema = resolve(root, schema);
        if let Some(index) = seen.get(&std::ptr::from_ref(schema)) {
            return *index;
        }
        // Registered before its children, which may refer back to it.
        let index = self.nodes.len();
        self.nodes.push(Schema::default());
        seen.insert(std::ptr::from_ref(schema), index);
        let mut node = Schema {
            constant: schema.get("const"),
            enumeration: schema
                .get("enum")
                .and_then(Json::as_array)
                .map(Vec::as_slice),
            names: schema.get("properties").and_then(Json::as_object),
            ..Schema::default()
        };
        if let Some(branches) = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Json::as_array)
        {
            node.alternatives = Some(
                branches
                    .iter()
                    .map(|b| {
                        let null = b.get("type").and_then(Json::as_str) == Some("null");
                        (self.compile(root, b, seen), null)
                    })
                    .collect(),
            );
        }
        node.types = match schema.get("type") {
            Some(Json::String(s)) => vec![s.as_str()],
            Some(Json::Array(items)) => items.iter().filter_map(Json::as_str).collect(),
            _ => Vec::new(),
        };
        let bound = |key: &str| {
            let b = schema.get(key)?;
            b.as_i64()
                .map(i128::from)
                .or_else(|| b.as_u64().map(i128::from))
        };
        node.minimum = bound("minimum");
        node.maximum =
            bound("maximum").unwrap_or_else(|| match schema.get("format").and_then(Json::as_str) {
                Some("uint8") => i128::from(u8::MAX),
                Some("uint16") => i128::from(u16::MAX),
                Some("uint32") => i128::from(u32::MAX),
                Some("int32") => i128::from(i32::MAX),
                Some("uint64" | "uint") => i128::from(u64::MAX),
                _ => i128::from(i64::MAX),
            });
        node.items = schema.get("items").map(|i| self.compile(root, i, seen));
        if let Some(names) = node.names {
            node.properties = names
                .iter()
                .map(|(name, prop)| (name.as_str(), self.compile(root, prop, seen)))
                .collect();
        }
        node.additional = match schema.get("additionalProperties") {
            Some(Json::Bool(false)) => Additional::Refused,
            Some(extra @ Json::Object(_)) => Additional::Checked(self.compile(root, extra, seen)),
            _ => Additional::Allowed,
        };
        node.required = schema
            .get("required")
            .and_then(Json::as_array)
            .map(|r| r.iter().filter_map(Json::as_str).collect())
            .unwrap_or_default();
        self.nodes[index] = node;
        index
    }
}

/// Follows `$ref`s from `schema` into the root's `$defs`.
fn resolve<'a>(root: &'a Json, mut schema: &'a Json) -> &'a Json {
    // Bounded: our schemas never chain more than a few references.
    for _ in 0..16 {
        let Some(reference) = schema.get("$ref").and_then(Json::as_str) else {
            break;
        };
        let name = reference.rsplit('/').next().unwrap_or_default();
        match root
            .get("$defs")
            .or_else(|| root.get("definitions"))
            .and_then(|defs| defs.get(name))
        {
            Some(target) => schema = target,
            None => break,
        }
    }
    schema
}

/// Where a node sits in its document, rendered (`spec.playbook[1].run`) only when a problem
/// is reported there: most nodes have none, and formatting every node's path was a tenth of
/// the time it takes to load a large company.
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Field(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl Path<'_> {
    fn render(&self) -> String {
        match self {
            Path::Root => String::new(),
            Path::Field(parent, field) => join(&parent.render(), field),
            Path::Index(parent, i) => format!("{}[{i}]", parent.render()),
        }
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

impl Compiled<'_> {
    /// `anchor` is where the node was introduced (its key), the place to point at when a field
    /// of it is missing.
    fn walk(
        &self,
        node: &Node,
        schema: usize,
        path: &Path<'_>,
        anchor: Pos,
        errors: &mut Vec<ShapeError>,
    ) {
        let Some(schema) = self.nodes.get(schema) else {
            return;
        };
        if let Some(branches) = &schema.alternatives {
            self.walk_alternatives(node, branches, path, anchor, errors);
            return;
        }
        if let Some(expected) = schema.constant {
            if !same(node, expected) {
                errors.push(ShapeError {
                    pos: node.pos,
                    path: path.render(),
                    message: format!("must be {expected}, found {}", describe(node)),
                    hint: None,
                });
            }
            return;
        }
        let allowed = &schema.types;
        if !allowed.is_empty() && !allowed.iter().any(|t| type_matches(node, t)) {
            let wanted: Vec<&str> = allowed
                .iter()
                .filter(|t| **t != "null")
                .map(|t| type_noun(t))
                .collect();
            errors.push(ShapeError {
                pos: node.pos,
                path: path.render(),
                message: format!("expected {}, found {}", wanted.join(" or "), describe(node)),
                hint: quote_hint(node, allowed),
            });
            return;
        }
        if let Some(options) = schema.enumeration {
            if !options.iter().any(|o| same(node, o)) {
                let names: Vec<&str> = options.iter().filter_map(Json::as_str).collect();
                let text = node.scalar_text();
                errors.push(ShapeError {
                    pos: node.pos,
                    path: path.render(),
                    message: format!(
                        "unknown value \"{text}\"; expected one of {}",
                        names.join(", ")
                    ),
                    hint: did_you_mean(&text, names.iter().copied()),
                });
            }
            return;
        }
        match &node.value {
            Value::Number(text) => check_integer(text, node.pos, schema, path, errors),
            Value::Map(entries) => self.walk_object(node, entries, schema, path, anchor, errors),
            Value::Seq(items) => {
                if let Some(item_schema) = schema.items {
                    for (i, item) in items.iter().enumerate() {
                        self.walk(item, item_schema, &Path::Index(path, i), item.pos, errors);
                    }
                }
            }
            _ => {}
        }
    }

    fn walk_object(
        &self,
        node: &Node,
        entries: &[(Node, Node)],
        schema: &Schema<'_>,
        path: &Path<'_>,
        anchor: Pos,
        errors: &mut Vec<ShapeError>,
    ) {
        let empty = Map::new();
        let names = schema.names.unwrap_or(&empty);
        // A misspelt field is reported once, as unknown with a suggestion, not also as missing.
        let mut suggested: Vec<&str> = Vec::new();
        for (key, value) in entries {
            let name = key.key_text();
            let name = name.as_ref();
            let field_path = Path::Field(path, name);
            if let Some((_, prop)) = schema.properties.iter().find(|(n, _)| *n == name) {
                self.walk(value, *prop, &field_path, key.pos, errors);
            } else {
                if let Some(near) = closest(name, names.keys().map(String::as_str)) {
                    suggested.push(near);
                }
                match schema.additional {
                    Additional::Refused => errors.push(ShapeError {
                        pos: key.pos,
                        path: field_path.render(),
                        message: "unknown field".into(),
                        hint: did_you_mean(name, names.keys().map(String::as_str)).or_else(|| {
                            Some(format!(
                                "expected one of {}",
                                names
                                    .keys()
                                    .map(String::as_str)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        }),
                    }),
                    Additional::Checked(extra) => {
                        self.walk(value, extra, &field_path, key.pos, errors)
                    }
                    Additional::Allowed => {}
                }
            }
        }
        for field in &schema.required {
            if node.get(field).is_none() && !suggested.contains(field) {
                errors.push(ShapeError {
                    pos: anchor,
                    path: Path::Field(path, field).render(),
                    message: "missing required field".into(),
                    hint: None,
                });
            }
        }
    }

    fn walk_alternatives(
        &self,
        node: &Node,
        branches: &[(usize, bool)],
        path: &Path<'_>,
        anchor: Pos,
        errors: &mut Vec<ShapeError>,
    ) {
        let mut best: Option<Vec<ShapeError>> = None;
        // Rendered once a branch fails; a node that fits its first branch never needs it.
        let mut rendered: Option<String> = None;
        for (branch, _) in branches {
            let mut attempt = Vec::new();
            self.walk(node, *branch, path, anchor, &mut attempt);
            if attempt.is_empty() {
                return;
            }
            let path = rendered.get_or_insert_with(|| path.render()).as_str();
            // Prefer the branch whose type matched (its errors are about fields, not types).
            let type_mismatch = attempt.len() == 1
                && attempt[0].path == path
                && attempt[0].message.starts_with("expected ");
            let better = match &best {
                None => true,
                Some(b) => {
                    let b_mismatch =
                        b.len() == 1 && b[0].path == path && b[0].message.starts_with("expected ");
                    (b_mismatch && !type_mismatch)
                        || (b_mismatch == type_mismatch && attempt.len() < b.len())
                }
            };
            if better {
                best = Some(attempt);
            }
        }
        let non_null = branches.iter().filter(|(_, null)| !null).count();
        let path = rendered.unwrap_or_else(|| path.render());
        if let Some(mut found) = best {
            if non_null == 1 || found.iter().any(|e| e.path != path) {
                errors.append(&mut found);
                return;
            }
            errors.push(ShapeError {
                pos: node.pos,
                path,
                message: format!("unexpected {}", describe(node)),
                hint: None,
            });
        }
    }
}

fn check_integer(
    text: &str,
    pos: Pos,
    schema: &Schema<'_>,
    path: &Path<'_>,
    errors: &mut Vec<ShapeError>,
) {
    if !yaml::is_integer_text(text) {
        return;
    }
    // Integers compare exactly (as i128): through f64, u64::MAX would print rounded as
    // 18446744073709552000 and neighbours of a bound would compare equal to it.
    let (min, max) = (schema.minimum, schema.maximum);
    // Integers beyond i128 are out of any range we accept.
    let v = yaml::parse_i128(text).unwrap_or(i128::MAX);
    if min.is_some_and(|m| v < m) || v > max {
        let range = format!("{}..={max}", min.map_or(String::new(), |m| m.to_string()),);
        errors.push(ShapeError {
            pos,
            path: path.render(),
            message: format!("{text} is out of range {range}"),
            hint: None,
        });
    }
}

/// Whether `node` holds the JSON value `expected`; strings, the common case of `const` and
/// `enum`, are compared without converting the node.
fn same(node: &Node, expected: &Json) -> bool {
    match (&node.value, expected) {
        (Value::Str(text), Json::String(want)) => text == want,
        (Value::Str(_), _) | (_, Json::String(_)) => false,
        _ => node.to_json() == *expected,
    }
}

fn type_matches(node: &Node, ty: &str) -> bool {
    if let ("integer", Value::Number(text)) = (ty, &node.value) {
        return yaml::is_integer_text(text);
    }
    matches!(
        (ty, &node.value),
        ("null", Value::Null)
            | ("boolean", Value::Bool(_))
            | ("number", Value::Number(_))
            | ("string", Value::Str(_))
            | ("array", Value::Seq(_))
            | ("object", Value::Map(_))
    )
}

fn type_noun(ty: &str) -> &'static str {
    match ty {
        "boolean" => "a boolean",
        "integer" => "an integer",
        "number" => "a number",
        "string" => "a string",
        "array" => "a list",
        "object" => "a mapping",
        _ => "a value",
    }
}

fn describe(node: &Node) -> String {
    match &node.value {
        Value::Str(s) if s.chars().count() <= 40 => format!("\"{s}\""),
        Value::Number(text) => format!("{} {text}", node.type_name()),
        Value::Bool(b) => format!("{} ({b})", node.type_name()),
        _ => node.type_name().to_string(),
    }
}

/// YAML reads `on`, `1.10` or `yes` as non-strings; quoting fixes it.
fn quote_hint(node: &Node, allowed: &[&str]) -> Option<String> {
    let scalar = matches!(node.value, Value::Bool(_) | Value::Number(_));
    (scalar && allowed.contains(&"string")).then(|| format!("quote it: \"{}\"", node.scalar_text()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::yaml::parse_one;
    use serde_json::json;

    fn schema() -> Json {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["owner", "check"],
            "properties": {
                "owner": {"type": "string"},
                "priority": {"$ref": "#/$defs/Priority"},
                "check": {"anyOf": [{"$ref": "#/$defs/Check"}, {"type": "null"}]},
                "attempts": {"type": ["integer", "null"], "format": "uint32", "minimum": 0}
            },
            "$defs": {
                "Priority": {"type": "string", "enum": ["critical", "high", "medium", "low"]},
                "Check": {"type": "object", "additionalProperties": false,
                          "properties": {"run": {"type": "string"}}}
            }
        })
    }

    #[test]
    fn collects_every_problem_with_its_position() {
        let node = parse_one("ownr: x\npriority: urgent\ncheck:\n  rn: 1\nattempts: -1\n").unwrap();
        let errors = check(&node, &schema());
        let rendered: Vec<String> = errors
            .iter()
            .map(|e| {
                format!(
                    "{}:{} {}: {} {:?}",
                    e.pos.line, e.pos.col, e.path, e.message, e.hint
                )
            })
            .collect();
        assert_eq!(
            rendered,
            vec![
                "1:1 ownr: unknown field Some(\"did you mean \\\"owner\\\"?\")",
                "2:11 priority: unknown value \"urgent\"; expected one of critical, high, medium, low None",
                "4:3 check.rn: unknown field Some(\"did you mean \\\"run\\\"?\")",
                "5:11 attempts: -1 is out of range 0..=4294967295 None",
            ]
        );
    }

    #[test]
    fn a_number_where_a_string_belongs_suggests_quoting() {
        let node = parse_one("owner: 1.10\ncheck: {run: x}\n").unwrap();
        let errors = check(&node, &schema());
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].message, "expected a string, found a number 1.10");
        assert_eq!(errors[0].hint.as_deref(), Some("quote it: \"1.10\""));
    }
}
