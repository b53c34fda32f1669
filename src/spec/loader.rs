//! Loading a company revision after revision, re-reading only what changed.
//!
//! Every file is loaded on its own (its documents, its own diagnostics, its goals' keys); only
//! the cross-document checks need the whole set. So a [`Loader`] keeps each file's result
//! keyed by its path and blob id, and on the next revision reads and parses just the files
//! whose blob id changed (or that have none: a directory on disk), then assembles the spec
//! and runs the cross-document validation on it. The outcome is the same as a full load of
//! the tree, diagnostics included; `tests/incremental.rs` checks that over random edits.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let source = proto::source::GitSource::open(".", None, None, std::path::Path::new("/tmp"))?;
//! let mut loader = proto::spec::Loader::new();
//! let first = loader.load_and_validate(&source.tree("HEAD~1")?); // parses every file
//! let next = loader.load_and_validate(&source.tree("HEAD")?); // parses what changed
//! # Ok(()) }
//! ```
//!
//! `CLAUDE.md` files are never reused: their `@imports` pull in other files, so their result
//! depends on more than their own bytes (they are few and small).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::claude::{self, Role};
use super::diag::{Diagnostic, Pos};
use super::load::load_file;
use super::tree::{BlobId, FileTree};
use super::{Spec, finish};

/// What one file contributed: its resources (with their goals' keys) and its diagnostics.
#[derive(Debug, Default)]
pub(super) struct Part {
    pub spec: Spec,
    pub diags: Vec<Diagnostic>,
}

/// A file's result as it was at one blob id.
struct Cached {
    id: BlobId,
    part: Arc<Part>,
}

/// How much of the last load was reused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Files the loader considered (YAML and Claude Code files).
    pub files: usize,
    /// Files read and parsed.
    pub parsed: usize,
    /// Files whose earlier result was reused, unread.
    pub reused: usize,
}

/// Loads revisions of one company, reusing the results of files that did not change.
#[derive(Default)]
pub struct Loader {
    cache: HashMap<String, Cached>,
    stats: LoadStats,
}

impl Loader {
    pub fn new() -> Loader {
        Loader::default()
    }

    /// Like [`super::load`], reusing what the previous loads parsed. Files absent from
    /// `tree` are forgotten.
    pub fn load(&mut self, tree: &dyn FileTree) -> (Spec, Vec<Diagnostic>) {
        let (out, stats) = run(tree, Some(&mut self.cache));
        self.stats = stats;
        out
    }

    /// Like [`super::load_and_validate`], reusing what the previous loads parsed.
    #[allow(clippy::type_complexity)] // the same shape as `load_and_validate`
    pub fn load_and_validate(
        &mut self,
        tree: &dyn FileTree,
    ) -> Result<(Spec, Vec<Diagnostic>), Vec<Diagnostic>> {
        let (spec, diags) = self.load(tree);
        finish(spec, diags)
    }

    /// What the last load read and what it reused.
    pub fn stats(&self) -> LoadStats {
        self.stats
    }
}

/// Below this many files to parse a thread is not worth starting.
const MIN_FILES_PER_THREAD: usize = 64;

/// Loads `tree` with nothing to reuse and nothing kept: [`super::load`].
pub(super) fn load_once(tree: &dyn FileTree) -> (Spec, Vec<Diagnostic>) {
    run(tree, None).0
}

/// Loads `tree`; with a cache, reuses and refreshes it.
fn run(
    tree: &dyn FileTree,
    cache: Option<&mut HashMap<String, Cached>>,
) -> ((Spec, Vec<Diagnostic>), LoadStats) {
    let mut spec = Spec {
        source: tree.label(),
        ..Spec::default()
    };
    let mut diags = Vec::new();
    let files = match tree.listing() {
        Ok(listing) => {
            // Links out of the tree, loops, special files: reported where they are.
            diags.extend(listing.refused.iter().filter_map(|r| r.diagnostic()));
            listing.files
        }
        Err(e) => {
            diags.push(Diagnostic::error(
                tree.label(),
                Pos::default(),
                e.to_string(),
            ));
            if let Some(cache) = cache {
                cache.clear();
            }
            return ((spec, diags), LoadStats::default());
        }
    };
    let relevant: Vec<(String, Option<Role>)> = files
        .into_iter()
        .filter_map(|p| {
            let role = claude::role_of(&p);
            // Nothing under `.claude/` is a declaration: YAML there is Claude Code's
            // (a skill's templates and examples).
            let yaml = (p.ends_with(".yaml") || p.ends_with(".yml")) && !p.starts_with(".claude/");
            (role.is_some() || yaml).then_some((p, role))
        })
        .collect();
    // Which files can be reused, and with which id each is remembered for the next load.
    let ids: Vec<Option<BlobId>> = relevant
        .iter()
        .map(|(p, role)| {
            let reusable = cache.is_some() && *role != Some(Role::Memory);
            reusable.then(|| tree.blob_id(p)).flatten()
        })
        .collect();
    let mut parts: Vec<Option<Arc<Part>>> = relevant
        .iter()
        .zip(&ids)
        .map(|((path, _), id)| {
            let cached = cache.as_deref().and_then(|c| c.get(path))?;
            (Some(cached.id) == *id).then(|| Arc::clone(&cached.part))
        })
        .collect();
    let todo: Vec<usize> = (0..relevant.len())
        .filter(|i| parts[*i].is_none())
        .collect();
    let stats = LoadStats {
        files: relevant.len(),
        parsed: todo.len(),
        reused: relevant.len() - todo.len(),
    };
    for (i, part) in parse(tree, &relevant, &todo) {
        parts[i] = Some(Arc::new(part));
    }
    if let Some(cache) = cache {
        cache.clear();
        for (((path, _), id), part) in relevant.iter().zip(&ids).zip(&parts) {
            if let (Some(id), Some(part)) = (id, part) {
                let part = Arc::clone(part);
                cache.insert(path.clone(), Cached { id: *id, part });
            }
        }
    }
    reserve(&mut spec, &mut diags, parts.iter().flatten());
    for part in parts.into_iter().flatten() {
        // Without a cache each part has one owner and is moved, not copied.
        match Arc::try_unwrap(part) {
            Ok(part) => absorb_owned(&mut spec, &mut diags, part),
            Err(shared) => absorb_shared(&mut spec, &mut diags, &shared),
        }
    }
    claude::settle(&mut spec, &mut diags);
    // Claude Code subagents answer to the main session; in a company that is the CEO.
    if let Some(ceo) = spec.company().map(|c| c.spec.ceo.clone()) {
        for agent in spec.agents.iter_mut().filter(|a| a.origin.flat) {
            if agent.spec.reports_to.is_none() && agent.metadata.name != ceo {
                Arc::make_mut(agent).spec.reports_to = Some(ceo.clone());
            }
        }
    }
    ((spec, diags), stats)
}

/// Loads the files at `todo` (indexes into `files`). Files are independent: threads take them
/// one at a time from a shared counter (files differ a lot in cost), and each result is put
/// back at its index, so the outcome is the same whatever the thread count.
fn parse(
    tree: &dyn FileTree,
    files: &[(String, Option<Role>)],
    todo: &[usize],
) -> Vec<(usize, Part)> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(todo.len().div_ceil(MIN_FILES_PER_THREAD).max(1));
    let load = |i: usize| {
        let (path, role) = &files[i];
        let (spec, diags) = load_file(tree, path, *role);
        (i, Part { spec, diags })
    };
    if threads == 1 {
        return todo.iter().map(|i| load(*i)).collect();
    }
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    while let Some(i) = todo.get(next.fetch_add(1, Ordering::Relaxed)) {
                        out.push(load(*i));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Sizes the spec's lists for every part at once: grown part by part, the lists of 10,000
/// resources were copied over and over as they doubled, each time into fresh pages.
fn reserve<'p>(
    spec: &mut Spec,
    diags: &mut Vec<Diagnostic>,
    parts: impl Iterator<Item = &'p Arc<Part>> + Clone,
) {
    let total = |count: fn(&Part) -> usize| parts.clone().map(|p| count(p)).sum::<usize>();
    spec.companies.reserve(total(|p| p.spec.companies.len()));
    spec.products.reserve(total(|p| p.spec.products.len()));
    spec.computers.reserve(total(|p| p.spec.computers.len()));
    spec.agents.reserve(total(|p| p.spec.agents.len()));
    spec.goals.reserve(total(|p| p.spec.goals.len()));
    spec.goal_keys.reserve(total(|p| p.spec.goal_keys.len()));
    diags.reserve(total(|p| p.diags.len()));
}

fn absorb_owned(spec: &mut Spec, diags: &mut Vec<Diagnostic>, part: Part) {
    let Part { spec: p, diags: d } = part;
    spec.companies.extend(p.companies);
    spec.products.extend(p.products);
    spec.computers.extend(p.computers);
    spec.agents.extend(p.agents);
    spec.goals.extend(p.goals);
    spec.broken.extend(p.broken);
    spec.goal_keys.extend(p.goal_keys);
    spec.claude.skills.extend(p.claude.skills);
    spec.claude.rules.extend(p.claude.rules);
    spec.claude.mcp_servers.extend(p.claude.mcp_servers);
    spec.claude.memory.extend(p.claude.memory);
    spec.claude.skipped.extend(p.claude.skipped);
    if p.claude.settings.is_some() {
        spec.claude.settings = p.claude.settings;
    }
    diags.extend(d);
}

fn absorb_shared(spec: &mut Spec, diags: &mut Vec<Diagnostic>, part: &Part) {
    let p = &part.spec;
    spec.companies.extend_from_slice(&p.companies);
    spec.products.extend_from_slice(&p.products);
    spec.computers.extend_from_slice(&p.computers);
    spec.agents.extend_from_slice(&p.agents);
    spec.goals.extend_from_slice(&p.goals);
    spec.broken.extend_from_slice(&p.broken);
    spec.goal_keys
        .extend(p.goal_keys.iter().map(|(k, v)| (k.clone(), v.clone())));
    spec.claude.skills.extend_from_slice(&p.claude.skills);
    spec.claude.rules.extend_from_slice(&p.claude.rules);
    spec.claude
        .mcp_servers
        .extend_from_slice(&p.claude.mcp_servers);
    spec.claude.memory.extend_from_slice(&p.claude.memory);
    spec.claude.skipped.extend_from_slice(&p.claude.skipped);
    if p.claude.settings.is_some() {
        spec.claude.settings.clone_from(&p.claude.settings);
    }
    diags.extend_from_slice(&part.diags);
}
