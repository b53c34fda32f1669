//! Reads every declaration in a file tree: YAML documents carrying `apiVersion`/`kind`, and
//! the Claude Code files (`.claude/agents`, skills, rules, settings, `.mcp.json`, `CLAUDE.md`).
//!
//! Each YAML document is parsed once into a positioned tree, its shape checked against the
//! kind's schema (all problems, each at its line), then deserialized into the typed spec.
//! A broken document is reported and skipped; the rest still load, so one run shows all errors.

use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;

use super::claude;
use super::diag::{Diagnostic, Pos, did_you_mean};
use super::kinds::API_VERSION;
use super::schema::{Document, Kind, document_schema};
use super::shape::{self, Compiled};
use super::tree::FileTree;
use super::yaml::{self, MAX_FILE_BYTES, Node};
use super::{Origin, Resource, Spec};

/// Documents whose `apiVersion` starts otherwise belong to another API and are skipped.
const API_GROUP_PREFIX: &str = "proto.dev/";

/// Loads every declaration in `tree`. Problems local to one file are returned alongside the
/// spec; cross-document checks are [`super::validate`]'s job. [`super::Loader`] does the same
/// revision after revision, re-reading only the files that changed.
pub fn load(tree: &dyn FileTree) -> (Spec, Vec<Diagnostic>) {
    super::loader::load_once(tree)
}

/// The JSON Schema of each kind, built and compiled once: every document is checked against
/// one.
fn schemas() -> &'static [(Kind, Compiled<'static>)] {
    static JSON: OnceLock<Vec<(Kind, serde_json::Value)>> = OnceLock::new();
    static COMPILED: OnceLock<Vec<(Kind, Compiled<'static>)>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        JSON.get_or_init(|| {
            Kind::ALL
                .iter()
                .map(|k| (*k, document_schema(*k)))
                .collect()
        })
        .iter()
        .map(|(k, schema)| (*k, Compiled::new(schema)))
        .collect()
    })
}

/// Loads one file (`role` is its Claude Code role, `None` for YAML) into a spec of its own,
/// with the keys of its goals.
pub(super) fn load_file(
    tree: &dyn FileTree,
    path: &str,
    role: Option<claude::Role>,
) -> (Spec, Vec<Diagnostic>) {
    let mut spec = Spec::default();
    let mut diags = Vec::new();
    if let Some(text) = read_text(tree, path, &mut diags) {
        match role {
            Some(role) => {
                // Editors on Windows save JSON with a byte-order mark; Claude Code reads
                // such files, and YAML and Markdown here already accept one.
                let text = match role {
                    claude::Role::Settings | claude::Role::Mcp => {
                        text.strip_prefix('\u{feff}').unwrap_or(&text)
                    }
                    _ => &text,
                };
                claude::load_file(role, path, text, tree, &mut spec, &mut diags)
            }
            None => load_yaml(path, text, schemas(), &mut spec, &mut diags),
        }
    }
    spec.goal_keys = spec
        .goals
        .iter()
        .map(|g| (g.name().to_string(), super::goal_key(g)))
        .collect();
    (spec, diags)
}

/// Reads a file as UTF-8, refusing oversized ones before reading them.
pub(super) fn read_text(
    tree: &dyn FileTree,
    path: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<String> {
    let fail = |diags: &mut Vec<Diagnostic>, message: String| {
        diags.push(Diagnostic::error(path, Pos::default(), message));
        None
    };
    match tree.size(path) {
        Ok(size) if size > MAX_FILE_BYTES as u64 => {
            return fail(
                diags,
                format!("file is {size} bytes; declarations are limited to {MAX_FILE_BYTES} bytes"),
            );
        }
        Ok(_) => {}
        Err(e) => return fail(diags, e.to_string()),
    }
    match tree.read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Some(text),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let bytes = e.as_bytes();
                let before = String::from_utf8_lossy(&bytes[..at]);
                let line = before.matches('\n').count() + 1;
                let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                let pos = Pos::new(
                    u32::try_from(line).unwrap_or(u32::MAX),
                    u32::try_from(col).unwrap_or(u32::MAX),
                );
                diags.push(Diagnostic::error(
                    path,
                    pos,
                    format!(
                        "not UTF-8 text (byte 0x{:02X}); save the file as UTF-8",
                        bytes[at]
                    ),
                ));
                None
            }
        },
        Err(e) => fail(diags, e.to_string()),
    }
}

fn load_yaml(
    path: &str,
    text: String,
    schemas: &[(Kind, Compiled<'static>)],
    spec: &mut Spec,
    diags: &mut Vec<Diagnostic>,
) {
    let docs = match yaml::parse_documents(&text) {
        Ok(docs) => docs,
        Err(e) => {
            diags.push(Diagnostic::error(
                path,
                e.pos,
                format!("invalid YAML: {}", e.message),
            ));
            return;
        }
    };
    let source = super::Source::owned(text, 0);
    for (index, doc) in docs.into_iter().enumerate() {
        let at = At {
            path,
            source: &source,
            index,
        };
        load_document(&at, doc, schemas, spec, diags);
    }
}

/// Where a document is: its file, the file's text and its place among the file's documents.
struct At<'a> {
    path: &'a str,
    source: &'a Arc<super::Source>,
    index: usize,
}

fn load_document(
    at: &At,
    doc: Node,
    schemas: &[(Kind, Compiled<'static>)],
    spec: &mut Spec,
    diags: &mut Vec<Diagnostic>,
) {
    let path = at.path;
    let api_version = doc.get("apiVersion");
    let kind_node = doc.get("kind");
    if api_version.is_none() && kind_node.is_none() {
        // Not a declaration (a CI config, a values file): not ours to judge.
        return;
    }
    if let Some(other) = api_version
        .and_then(Node::as_str)
        .filter(|v| !v.starts_with(API_GROUP_PREFIX))
    {
        // Another API's document (a Kubernetes manifest, a skill's template): not Proto's.
        tracing::debug!(
            file = path,
            api_version = other,
            "not a proto.dev document; skipped"
        );
        return;
    }
    let name = doc
        .at("metadata.name")
        .and_then(Node::as_str)
        .unwrap_or("?")
        .to_string();
    let Some(kind_node) = kind_node else {
        diags.push(
            Diagnostic::error(path, doc.pos, "missing required field")
                .field("kind")
                .hint(Some(
                    "expected Company, Product, Computer, Agent or Goal".into(),
                )),
        );
        return;
    };
    if !matches!(kind_node.value, yaml::Value::Str(_)) {
        diags.push(
            Diagnostic::error(
                path,
                kind_node.pos,
                format!("expected a string, found {}", kind_node.type_name()),
            )
            .field("kind")
            .hint(Some(
                "expected Company, Product, Computer, Agent or Goal".into(),
            )),
        );
        return;
    }
    let kind_text = kind_node.scalar_text();
    let Some(kind) = Kind::ALL.into_iter().find(|k| k.as_str() == kind_text) else {
        diags.push(
            Diagnostic::error(path, kind_node.pos, format!("unknown kind \"{kind_text}\""))
                .field("kind")
                .hint(
                    did_you_mean(&kind_text, Kind::ALL.iter().map(|k| k.as_str())).or_else(|| {
                        Some("expected Company, Product, Computer, Agent or Goal".into())
                    }),
                ),
        );
        return;
    };
    let resource = format!("{}/{}", kind.as_str(), name);
    match api_version {
        None => {
            spec.broken.push((kind, name.clone()));
            diags.push(
                Diagnostic::error(path, doc.pos, "missing required field")
                    .resource(&resource)
                    .field("apiVersion")
                    .hint(Some(format!("add apiVersion: {API_VERSION}"))),
            );
            return;
        }
        Some(v) if v.as_str() != Some(API_VERSION) => {
            spec.broken.push((kind, name.clone()));
            diags.push(
                Diagnostic::error(
                    path,
                    v.pos,
                    format!("unknown apiVersion \"{}\"", v.scalar_text()),
                )
                .resource(&resource)
                .field("apiVersion")
                .hint(Some(format!("expected {API_VERSION}"))),
            );
            return;
        }
        Some(_) => {}
    }
    let problems = match schemas.iter().find(|(k, _)| *k == kind) {
        Some((_, schema)) => shape::check_compiled(&doc, schema),
        None => shape::check(&doc, &serde_json::Value::Null),
    };
    if !problems.is_empty() {
        spec.broken.push((kind, name.clone()));
        diags.extend(problems.into_iter().map(|p| {
            Diagnostic::error(path, p.pos, p.message)
                .resource(&resource)
                .field(p.path)
                .hint(p.hint)
        }));
        return;
    }
    match kind {
        Kind::Company => push(
            Kind::Company,
            at,
            doc,
            &resource,
            &mut spec.companies,
            diags,
        ),
        Kind::Product => push(Kind::Product, at, doc, &resource, &mut spec.products, diags),
        Kind::Computer => push(
            Kind::Computer,
            at,
            doc,
            &resource,
            &mut spec.computers,
            diags,
        ),
        Kind::Agent => push(Kind::Agent, at, doc, &resource, &mut spec.agents, diags),
        Kind::Goal => push(Kind::Goal, at, doc, &resource, &mut spec.goals, diags),
    }
}

fn push<S: DeserializeOwned>(
    kind: Kind,
    at: &At,
    doc: Node,
    resource: &str,
    into: &mut Vec<super::Declared<S>>,
    diags: &mut Vec<Diagnostic>,
) {
    // The shape check has passed, so this only fails on what the schema cannot express.
    match yaml::de::from_node::<Document<S>>(&doc) {
        Ok(d) => into.push(std::sync::Arc::new(Resource {
            kind,
            metadata: d.metadata,
            spec: d.spec,
            origin: Origin {
                file: at.path.to_string(),
                pos: doc.pos,
                source: at.source.clone(),
                doc: at.index,
                flat: false,
            },
        })),
        Err(e) => diags.push(Diagnostic::error(at.path, doc.pos, e.to_string()).resource(resource)),
    }
}
