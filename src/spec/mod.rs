//! The declaration: what people wrote, typed, located and validated.
//!
//! [`load`] reads a company from any [`FileTree`] (YAML documents plus the Claude Code files
//! people already have), [`validate`] checks everything that crosses documents, and
//! [`load_and_validate`] does both, returning every problem at once. The resulting [`Spec`] is
//! immutable: the planner and the engine only ever read it.

pub mod claude;
pub mod diag;
pub mod duration;
pub mod echo;
mod import;
pub mod json_pos;
pub mod kinds;
mod load;
mod loader;
pub mod safe_fs;
pub mod schema;
pub mod shape;
mod simple_yaml;
pub mod status;
pub mod tree;
pub mod validate;
pub mod yaml;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use claude::{ClaudeFiles, McpServer, Memory, Rule, Settings, Skill};
pub use diag::{Diagnostic, Pos, Severity};
pub use kinds::*;
pub use load::load;
pub use loader::{LoadStats, Loader};
pub use schema::{Kind, Metadata};
pub use tree::{BlobId, DirTree, FileTree, Listing, MemTree, Refusal, Refused, TreeError};
pub use validate::validate;

use yaml::Node;

/// Where a resource was declared: its file, its position, and the text it was parsed from
/// (so that cross-document checks can point at the exact field).
#[derive(Clone, Debug, PartialEq)]
pub struct Origin {
    pub file: String,
    pub pos: Pos,
    /// The YAML the resource's document is one of; shared by the documents of a file, and by
    /// every revision in which the file did not change (an incremental [`Loader`]).
    pub source: Arc<Source>,
    /// Which document of `source`.
    pub doc: usize,
    /// Markdown agents keep their fields at the top of the frontmatter, not under `spec`.
    pub flat: bool,
}

impl Origin {
    /// A field path as the user sees it in this file (markdown agents have no `spec.`).
    pub fn display_field<'f>(&self, path: &'f str) -> &'f str {
        if self.flat {
            match path {
                "spec" | "kind" => "",
                _ => path.strip_prefix("spec.").unwrap_or(path),
            }
        } else {
            path
        }
    }

    /// The position of a field given by its path in the YAML form (`spec.owner`).
    pub fn pos_of(&self, path: &str) -> Pos {
        let path = if self.flat {
            path.strip_prefix("spec.").unwrap_or(path)
        } else {
            path
        };
        self.node_pos(path)
    }

    /// The position of a field given by its path in the document as written.
    pub fn node_pos(&self, path: &str) -> Pos {
        self.source
            .document(self.doc)
            .map_or(self.pos, |node| node.pos_of(path))
    }
}

/// The YAML text resources were parsed from. Their trees are not kept: a company's parsed
/// documents take several times the memory of its resources, and only a diagnostic needs
/// them (to point at a field), so the text is parsed again then, once.
#[derive(Debug)]
pub struct Source {
    text: Box<str>,
    /// Lines of the file before `text` (a markdown file's `---` line).
    shift: u32,
    parsed: std::sync::OnceLock<Vec<Node>>,
}

impl Source {
    pub fn new(text: &str, shift: u32) -> Arc<Self> {
        Self::owned(text.into(), shift)
    }

    /// Like [`Source::new`], keeping the text read from the file rather than a copy of it.
    pub fn owned(text: String, shift: u32) -> Arc<Self> {
        Arc::new(Self {
            text: text.into_boxed_str(),
            shift,
            parsed: std::sync::OnceLock::new(),
        })
    }

    /// The `index`th document, parsed on first use.
    fn document(&self, index: usize) -> Option<&Node> {
        self.parsed
            .get_or_init(|| {
                let mut docs = yaml::parse_documents(&self.text).unwrap_or_default();
                if self.shift > 0 {
                    docs.iter_mut().for_each(|d| d.shift_lines(self.shift));
                }
                docs
            })
            .get(index)
    }
}

/// Two sources are the same when their text and place in the file are.
impl PartialEq for Source {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.shift == other.shift
    }
}

/// A resource as a spec holds it: shared, so that a revision reuses the resources of the
/// files it did not change (see [`Loader`]) without copying them, and a company of thousands
/// of resources is held once however many revisions are alive (the running one, the one
/// being loaded, the loader's cache).
pub type Declared<S> = Arc<Resource<S>>;

/// One declared resource of kind `S`.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource<S> {
    pub kind: Kind,
    pub metadata: Metadata,
    pub spec: S,
    pub origin: Origin,
}

impl<S> Resource<S> {
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// `Kind/name`, as diagnostics and `kubectl` show it.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind.as_str(), self.metadata.name)
    }

    /// An error about one of this resource's fields, pointing at that field.
    pub fn error(&self, field: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(self.origin.file.clone(), self.origin.pos_of(field), message)
            .resource(self.id())
            .field(self.origin.display_field(field))
    }
}

/// A whole company as declared at one revision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spec {
    /// What the company was loaded from (a directory, a commit).
    pub source: String,
    /// All `Company` documents; a valid spec has exactly one.
    pub companies: Vec<Declared<CompanySpec>>,
    pub products: Vec<Declared<ProductSpec>>,
    pub computers: Vec<Declared<ComputerSpec>>,
    pub agents: Vec<Declared<AgentSpec>>,
    pub goals: Vec<Declared<GoalSpec>>,
    pub claude: ClaudeFiles,
    /// Resources that were declared but failed to load: their errors are already reported,
    /// so references to them must not be reported again as "not declared".
    pub broken: Vec<(Kind, String)>,
    /// Each goal's key by name (see [`goal_key`]), computed once when its file was loaded:
    /// the planner needs every goal's key on every pass, and the spec does not change.
    pub goal_keys: HashMap<String, String>,
    /// Where each goal is in `goals`, by name, for [`Spec::goal`].
    pub goal_index: NameIndex,
}

/// Positions in a list by name, built on the first lookup: the engine looks goals up by name
/// for every task, and a scan of 5,000 goals each time made that quadratic. The spec is not
/// meant to change once loaded, but its lists are public: a lookup checks that the position it
/// finds still holds the name, and scans when it does not.
#[derive(Clone, Default)]
pub struct NameIndex(std::sync::OnceLock<HashMap<String, usize>>);

impl NameIndex {
    fn find<'s, T>(
        &self,
        items: &'s [T],
        name_of: impl Fn(&T) -> &str,
        name: &str,
    ) -> Option<&'s T> {
        self.position(items, name_of, name)
            .and_then(|i| items.get(i))
    }

    /// Where the first item named `name` is in `items`.
    fn position<T>(&self, items: &[T], name_of: impl Fn(&T) -> &str, name: &str) -> Option<usize> {
        let index = self.0.get_or_init(|| {
            let mut index = HashMap::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                // The first of equal names wins, as a scan would find it.
                index.entry(name_of(item).to_string()).or_insert(i);
            }
            index
        });
        match index.get(name) {
            Some(i) if items.get(*i).is_some_and(|item| name_of(item) == name) => Some(*i),
            _ => items.iter().position(|item| name_of(item) == name),
        }
    }
}

/// A cache, not part of the value: two specs with the same resources are equal whatever
/// either has looked up.
impl PartialEq for NameIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for NameIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NameIndex")
    }
}

impl Spec {
    /// The company, when exactly one is declared.
    pub fn company(&self) -> Option<&Resource<CompanySpec>> {
        match self.companies.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The agent named `name`; a Claude Code subagent also answers to the name it was
    /// written with when Proto derived a DNS label from it (`CSharpExpert`).
    pub fn agent(&self, name: &str) -> Option<&Resource<AgentSpec>> {
        self.agents
            .iter()
            .find(|a| a.name() == name)
            .or_else(|| {
                self.agents.iter().find(|a| {
                    a.origin.flat
                        && a.metadata
                            .annotations
                            .get(claude::ORIGINAL_NAME)
                            .map(String::as_str)
                            == Some(name)
                })
            })
            .map(|a| &**a)
    }

    /// Where the goal named `name` is in [`Spec::goals`] (the declaration's order).
    pub fn goal_position(&self, name: &str) -> Option<usize> {
        self.goal_index
            .position(&self.goals, |g: &Declared<GoalSpec>| g.name(), name)
    }

    pub fn goal(&self, name: &str) -> Option<&Resource<GoalSpec>> {
        self.goal_index
            .find(&self.goals, |g: &Declared<GoalSpec>| g.name(), name)
            .map(|g| &**g)
    }

    /// The key of `goal` (see [`goal_key`]): the one computed at load time, or computed now
    /// for a goal the loader did not see.
    pub fn key_of(&self, goal: &Resource<GoalSpec>) -> Cow<'_, str> {
        match self.goal_keys.get(goal.name()) {
            Some(key) => Cow::Borrowed(key),
            None => Cow::Owned(goal_key(goal)),
        }
    }

    pub fn product(&self, name: &str) -> Option<&Resource<ProductSpec>> {
        self.products
            .iter()
            .find(|p| p.name() == name)
            .map(|p| &**p)
    }

    /// Resources per kind, for the one-line summary.
    pub fn counts(&self) -> BTreeMap<Kind, usize> {
        BTreeMap::from([
            (Kind::Company, self.companies.len()),
            (Kind::Product, self.products.len()),
            (Kind::Computer, self.computers.len()),
            (Kind::Agent, self.agents.len()),
            (Kind::Goal, self.goals.len()),
        ])
    }

    /// `1 Company, 2 Products, ...` plus the Claude Code files, as `proto validate` prints.
    pub fn summary(&self) -> String {
        let plural = |n: usize, one: &str| {
            if n == 1 {
                format!("{n} {one}")
            } else {
                format!("{n} {one}s")
            }
        };
        let mut parts: Vec<String> = self
            .counts()
            .into_iter()
            .map(|(kind, n)| plural(n, kind.as_str()))
            .collect();
        parts.push(plural(self.claude.skills.len(), "skill"));
        parts.push(plural(self.claude.rules.len(), "rule"));
        parts.push(plural(self.claude.mcp_servers.len(), "MCP server"));
        parts.push(plural(self.claude.memory.len(), "memory file"));
        let mut summary = parts.join(", ");
        // Named here too, so a skipped file is not lost among the warnings.
        if !self.claude.skipped.is_empty() {
            let files: Vec<&str> = self
                .claude
                .skipped
                .iter()
                .map(|s| s.file.as_str())
                .collect();
            summary.push_str(&format!(
                "; skipped {}: {}",
                plural(files.len(), "Claude Code file"),
                files.join(", ")
            ));
        }
        summary
    }
}

/// Loads and validates; `Ok` carries the spec and any warnings, `Err` every diagnostic
/// (errors and warnings) when at least one is an error.
pub fn load_and_validate(tree: &dyn FileTree) -> Result<(Spec, Vec<Diagnostic>), Vec<Diagnostic>> {
    let (spec, diagnostics) = load(tree);
    finish(spec, diagnostics)
}

/// Adds the cross-document diagnostics to what loading found, in a stable order.
fn finish(
    spec: Spec,
    mut diagnostics: Vec<Diagnostic>,
) -> Result<(Spec, Vec<Diagnostic>), Vec<Diagnostic>> {
    diagnostics.extend(validate(&spec));
    diagnostics.sort_by(|a, b| (&a.file, a.pos, &a.message).cmp(&(&b.file, b.pos, &b.message)));
    diagnostics.dedup();
    if diagnostics.iter().any(Diagnostic::is_error) {
        Err(diagnostics)
    } else {
        Ok((spec, diagnostics))
    }
}

/// The idempotency key of a goal's work: its name and a hash of its spec, so that one
/// revision of a goal gets exactly one live task and an edit gets a fresh one. Stored as task
/// keys, so it must not change between versions of Proto.
pub fn goal_key(goal: &Resource<GoalSpec>) -> String {
    // The canonical JSON is hashed as it is written, not gathered into a string first (10,000
    // goals are keyed on every full load); a spec that cannot be written hashes as "".
    let mut hash = Fnv1a::default();
    if serde_json::to_writer(&mut hash, &goal.spec).is_err() {
        hash = Fnv1a::default();
    }
    format!("{}@{:012x}", goal.name(), hash.0 & 0xffff_ffff_ffff)
}

/// FNV-1a: stable across builds and platforms, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = Fnv1a::default();
    hash.add(bytes);
    hash.0
}

/// An FNV-1a hash being computed.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn add(&mut self, bytes: &[u8]) {
        self.0 = bytes.iter().fold(self.0, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    }
}

impl std::io::Write for Fnv1a {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.add(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goals(names: &[&str]) -> Spec {
        let mut tree = MemTree::new("test");
        let mut text = String::new();
        for name in names {
            text.push_str(&format!(
                "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: {name}}}\nspec:\n  product: p\n  owner: a\n  description: d\n  check:\n    command: {{run: 'true'}}\n"
            ));
        }
        tree.insert("goals.yaml", text);
        load(&tree).0
    }

    #[test]
    fn goal_keys_hash_the_canonical_json_as_before() {
        let spec = goals(&["a"]);
        let goal = &spec.goals[0];
        let canonical = serde_json::to_string(&goal.spec).unwrap();
        let expected = format!("a@{:012x}", fnv1a(canonical.as_bytes()) & 0xffff_ffff_ffff);
        assert_eq!(goal_key(goal), expected);
        assert_eq!(spec.goal_keys.get("a"), Some(&expected));
    }

    #[test]
    fn goals_are_found_by_name_even_after_the_list_changed() {
        let mut spec = goals(&["a", "b", "c"]);
        assert_eq!(spec.goal("b").map(Resource::name), Some("b"));
        assert!(spec.goal("z").is_none());
        // The index was built; the list changes under it.
        spec.goals.remove(0);
        assert_eq!(spec.goal("b").map(Resource::name), Some("b"));
        assert_eq!(spec.goal("c").map(Resource::name), Some("c"));
        assert!(spec.goal("a").is_none());
        let copy = spec.clone();
        assert_eq!(copy, spec);
        assert_eq!(copy.goal("c").map(Resource::name), Some("c"));
    }
}
