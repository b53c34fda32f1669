//! The Kubernetes source: the Proto resources of one namespace, kept by `kube::runtime`
//! reflectors (a watch per kind, no polling), presented to the engine as revisions of a tree
//! of YAML files that the loader reads and validates exactly as it reads a repository.
//!
//! A revision is a digest of the (kind, name, resourceVersion) set. Each resource is
//! validated on its own account: one whose document fails validation is kept out of the tree
//! (or replaced by its last good version), so a broken resource never stops the others; its
//! messages are kept for its status. A Goal being deleted is left out, so the engine cancels
//! its work before the finalizer lets it go; a deleted Company is replaced by its last good
//! version suspended, so everything holds until one is declared again.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::declared::{self, Declared, Key};
use crate::source::{Source, SourceError};
use crate::spec::kinds::{Agent, Company, Computer, Goal, Product};
use crate::spec::schema::Kind;
use crate::spec::{FileTree, Loader, MemTree};

/// How many revisions the source remembers ([`Source::tree`] of an older one fails).
const KEPT_REVISIONS: usize = 16;

/// The reflectors' stores, one per kind: what the API server last said.
#[derive(Clone)]
pub struct Stores {
    pub companies: Store<Company>,
    pub products: Store<Product>,
    pub computers: Store<Computer>,
    pub agents: Store<Agent>,
    pub goals: Store<Goal>,
}

impl Stores {
    /// Waits until every kind has been listed once.
    async fn ready(&self) -> Result<(), SourceError> {
        let failed = |e: reflector::store::WriterDropped| SourceError::Watch(e.to_string());
        self.companies.wait_until_ready().await.map_err(failed)?;
        self.products.wait_until_ready().await.map_err(failed)?;
        self.computers.wait_until_ready().await.map_err(failed)?;
        self.agents.wait_until_ready().await.map_err(failed)?;
        self.goals.wait_until_ready().await.map_err(failed)?;
        Ok(())
    }
}

/// What the source saw of one resource at a revision, for its status and finalizer.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub generation: Option<i64>,
    pub uid: Option<String>,
    /// It has a deletion timestamp: it is on its way out.
    pub deleting: bool,
}

/// One revision of the namespace.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub revision: String,
    tree: MemTree,
    /// A digest of the tree's files: equal digests, the same declaration. What statuses
    /// name as their observed revision (the revision itself moves with every status
    /// written).
    pub content: String,
    /// Whether the tree validates as a whole (it does not while no Company is declared).
    pub valid: bool,
    /// A digest of the resources as rendered, before validation: equal digests (and the
    /// same last good versions), the same tree.
    rendered: String,
    /// Why each resource left out of the tree (or held at its last good version) is
    /// invalid: the loader's messages, located.
    pub invalid: BTreeMap<Key, Vec<String>>,
    /// Every resource in the namespace.
    pub seen: BTreeMap<Key, Seen>,
}

/// A resource's document, or `None` for one that is not declared any longer (deleting),
/// or why it cannot be rendered.
type Rendered = Result<Option<Vec<u8>>, String>;

/// The files of a tree by path, each with the resource it renders.
type Files = BTreeMap<String, (Key, Vec<u8>)>;

/// A resource as the source renders it.
struct Current {
    key: Key,
    document: Rendered,
    seen: Seen,
}

#[derive(Default)]
struct State {
    snapshots: VecDeque<Arc<Snapshot>>,
    /// Rendered documents by key, with the resourceVersion they were rendered at.
    rendered: HashMap<Key, (Option<String>, Rendered)>,
    /// The last version of each resource that was valid with the others.
    last_good: HashMap<Key, Vec<u8>>,
    /// The last valid Company, rendered suspended: what stands in when it is deleted.
    suspended_company: Option<(String, Vec<u8>)>,
    loader: Loader,
}

/// Keeps the reflectors running; dropping it stops them.
pub struct Watching {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The Proto resources of one namespace, as a [`Source`].
pub struct KubeSource {
    namespace: String,
    label: String,
    base: PathBuf,
    stores: Stores,
    state: Mutex<State>,
}

/// Starts a reflector over one kind in `namespace`: every change it sees sends to
/// `trigger`, as a commit does for a git source (one pending trigger is as good as many).
fn reflect<K: Declared>(
    client: &Client,
    namespace: &str,
    trigger: &mpsc::Sender<()>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Store<K> {
    let (reader, writer) = reflector::store::<K>();
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let trigger = trigger.clone();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    let _ = trigger.try_send(());
                }
                // The watcher backs off and resumes by itself; the store keeps the last
                // listing meanwhile.
                Err(e) => tracing::warn!(kind = K::KIND.as_str(), "watch: {e}"),
            }
        }
    }));
    reader
}

impl KubeSource {
    /// Starts watching the five kinds in `namespace` and waits until each has been listed.
    /// Paths in the declaration (a product's relative repository) are relative to `base`.
    pub async fn start(
        client: Client,
        namespace: &str,
        base: &Path,
        trigger: mpsc::Sender<()>,
    ) -> Result<(KubeSource, Watching), SourceError> {
        let mut tasks = Vec::new();
        let stores = Stores {
            companies: reflect(&client, namespace, &trigger, &mut tasks),
            products: reflect(&client, namespace, &trigger, &mut tasks),
            computers: reflect(&client, namespace, &trigger, &mut tasks),
            agents: reflect(&client, namespace, &trigger, &mut tasks),
            goals: reflect(&client, namespace, &trigger, &mut tasks),
        };
        let watching = Watching { tasks };
        stores.ready().await?;
        Ok((
            KubeSource {
                namespace: namespace.to_string(),
                label: format!("namespace {namespace}"),
                base: base.to_path_buf(),
                stores,
                state: Mutex::new(State::default()),
            },
            watching,
        ))
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The newest revision taken (by [`Source::head`]), if any.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.lock().snapshots.back().cloned()
    }

    /// The revision `revision`, while the source remembers it.
    pub fn snapshot(&self, revision: &str) -> Option<Arc<Snapshot>> {
        self.lock()
            .snapshots
            .iter()
            .rev()
            .find(|s| s.revision == revision)
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The digest of the (kind, name, resourceVersion) set.
    fn revision(&self) -> String {
        let mut hash = Sha256::new();
        let mut add = |kind: Kind, name: Option<&str>, version: Option<&str>| {
            for part in [kind.as_str(), name.unwrap_or(""), version.unwrap_or("")] {
                hash.update(part.as_bytes());
                hash.update([0]);
            }
        };
        fn each<K: Declared>(
            store: &Store<K>,
            add: &mut impl FnMut(Kind, Option<&str>, Option<&str>),
        ) {
            let mut state = store.state();
            state.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
            for object in state {
                let meta = object.meta();
                add(
                    K::KIND,
                    meta.name.as_deref(),
                    meta.resource_version.as_deref(),
                );
            }
        }
        each(&self.stores.companies, &mut add);
        each(&self.stores.products, &mut add);
        each(&self.stores.computers, &mut add);
        each(&self.stores.agents, &mut add);
        each(&self.stores.goals, &mut add);
        hex::encode(&hash.finalize()[..20])
    }

    /// Every resource, rendered (reusing what was rendered at the same resourceVersion).
    fn current(&self, state: &mut State) -> Vec<Current> {
        let mut out = Vec::new();
        fn each<K: Declared>(store: &Store<K>, state: &mut State, out: &mut Vec<Current>) {
            for object in store.state() {
                let meta = object.meta();
                let name = meta.name.clone().unwrap_or_default();
                let key = (K::KIND, name);
                let version = meta.resource_version.clone();
                let deleting = meta.deletion_timestamp.is_some();
                let document = match state.rendered.get(&key) {
                    Some((at, document)) if *at == version => document.clone(),
                    _ => {
                        let document = if deleting {
                            Ok(None)
                        } else {
                            declared::render(object.as_ref(), object.spec())
                                .map(Some)
                                .map_err(|e| format!("cannot be read: {e}"))
                        };
                        state
                            .rendered
                            .insert(key.clone(), (version, document.clone()));
                        document
                    }
                };
                out.push(Current {
                    key,
                    document,
                    seen: Seen {
                        generation: meta.generation,
                        uid: meta.uid.clone(),
                        deleting,
                    },
                });
            }
        }
        each(&self.stores.companies, state, &mut out);
        each(&self.stores.products, state, &mut out);
        each(&self.stores.computers, state, &mut out);
        each(&self.stores.agents, state, &mut out);
        each(&self.stores.goals, state, &mut out);
        let present: HashSet<&Key> = out.iter().map(|c| &c.key).collect();
        state.rendered.retain(|key, _| present.contains(key));
        if let Some((name, company)) = &state.suspended_company {
            let declared = out
                .iter()
                .any(|c| c.key.0 == Kind::Company && matches!(c.document, Ok(Some(_))));
            if !declared {
                // Deleted: its last good version stands in, suspended, so everything holds.
                out.push(Current {
                    key: (Kind::Company, name.clone()),
                    document: Ok(Some(company.clone())),
                    seen: Seen {
                        generation: None,
                        uid: None,
                        deleting: true,
                    },
                });
            }
        }
        out
    }

    /// Takes the revision `revision` of what the stores hold now.
    fn take(&self, revision: String) -> Arc<Snapshot> {
        let mut state = self.lock();
        let current = self.current(&mut state);
        let mut files: Files = BTreeMap::new();
        let mut invalid: BTreeMap<Key, Vec<String>> = BTreeMap::new();
        let mut seen = BTreeMap::new();
        for c in current {
            match c.document {
                Ok(Some(document)) => {
                    files.insert(declared::path(c.key.0, &c.key.1), (c.key.clone(), document));
                }
                Ok(None) => {}
                Err(message) => {
                    let path = declared::path(c.key.0, &c.key.1);
                    invalid.insert(c.key.clone(), vec![format!("{path}: {message}")]);
                }
            }
            // A stand-in Company has no resource behind it.
            if c.seen.uid.is_some() || !seen.contains_key(&c.key) {
                seen.insert(c.key, c.seen);
            }
        }
        let unreadable: Vec<(String, String)> = invalid
            .iter()
            .map(|((kind, name), m)| (declared::path(*kind, name), m.join("\n")))
            .collect();
        let rendered = digest(
            files
                .iter()
                .map(|(p, (_, d))| (p.as_str(), d.as_slice()))
                .chain(unreadable.iter().map(|(p, m)| (p.as_str(), m.as_bytes()))),
        );
        if let Some(last) = state.snapshots.back()
            && last.rendered == rendered
        {
            // Only statuses or bookkeeping changed: the same tree at a new revision.
            let snapshot = Arc::new(Snapshot {
                revision,
                seen,
                ..(**last).clone()
            });
            keep(&mut state, snapshot.clone());
            return snapshot;
        }
        let label = self.label.clone();
        let Settled {
            tree,
            files: held,
            valid,
        } = settle(&label, files, &mut invalid, &mut state);
        let content = digest(held.iter().map(|(p, (_, d))| (p.as_str(), d.as_slice())));
        let snapshot = Arc::new(Snapshot {
            revision,
            tree,
            content,
            rendered,
            valid,
            invalid,
            seen,
        });
        keep(&mut state, snapshot.clone());
        snapshot
    }
}

fn keep(state: &mut State, snapshot: Arc<Snapshot>) {
    state.snapshots.push_back(snapshot);
    while state.snapshots.len() > KEPT_REVISIONS {
        state.snapshots.pop_front();
    }
}

fn digest<'a>(files: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut hash = Sha256::new();
    for (path, content) in files {
        hash.update(path.as_bytes());
        hash.update([0]);
        hash.update((content.len() as u64).to_le_bytes());
        hash.update(content);
    }
    hex::encode(hash.finalize())
}

fn tree_of(label: &str, files: &Files) -> MemTree {
    let mut tree = MemTree::new(label).with_blob_ids();
    for (path, (_, content)) in files {
        tree.insert(path.clone(), content.clone());
    }
    tree
}

/// What [`settle`] leaves: the tree, its files, and whether it validates.
struct Settled {
    tree: MemTree,
    files: Files,
    valid: bool,
}

/// Validates the resources together, and takes out (or back to its last good version)
/// each one the loader finds an error in, until the rest validates or no error names a
/// resource (no Company at all): one broken resource never stops the others. Returns the
/// tree and the files in it; `invalid` gets each broken resource's messages.
fn settle(
    label: &str,
    mut files: Files,
    invalid: &mut BTreeMap<Key, Vec<String>>,
    state: &mut State,
) -> Settled {
    let mut replaced: HashSet<Key> = HashSet::new();
    loop {
        let tree = tree_of(label, &files);
        let diagnostics = match state.loader.load_and_validate(&tree) {
            Ok(_) => {
                for (key, content) in files.values() {
                    if !replaced.contains(key) {
                        state.last_good.insert(key.clone(), content.clone());
                    }
                    if key.0 == Kind::Company && !replaced.contains(key) {
                        state.suspended_company = suspended(content).map(|c| (key.1.clone(), c));
                    }
                }
                let present: HashSet<&Key> = files.values().map(|(k, _)| k).collect();
                state
                    .last_good
                    .retain(|k, _| present.contains(k) || k.0 == Kind::Company);
                return Settled {
                    tree,
                    files,
                    valid: true,
                };
            }
            Err(diagnostics) => diagnostics,
        };
        let mut bad: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for d in diagnostics.iter().filter(|d| d.is_error()) {
            let path = crate::spec::diag::display_path(&d.file);
            if files.contains_key(&path) {
                bad.entry(path).or_default().push(d.to_string());
            }
        }
        if bad.is_empty() {
            // Nothing to take out: the whole set is unusable (the engine says why).
            return Settled {
                tree,
                files,
                valid: false,
            };
        }
        for (path, messages) in bad {
            let Some((key, content)) = files.remove(&path) else {
                continue;
            };
            if !replaced.contains(&key) {
                invalid.entry(key.clone()).or_default().extend(messages);
            }
            if let Some(good) = state.last_good.get(&key)
                && *good != content
                && replaced.insert(key.clone())
            {
                files.insert(path, (key, good.clone()));
            }
        }
    }
}

/// A valid Company's document with `suspend: true`.
fn suspended(company: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(company).ok()?;
    let mut document: serde_json::Value = serde_saphyr::from_str(text).ok()?;
    document
        .get_mut("spec")?
        .as_object_mut()?
        .insert("suspend".into(), serde_json::Value::Bool(true));
    serde_saphyr::to_string(&document)
        .ok()
        .map(String::into_bytes)
}

impl Source for KubeSource {
    fn label(&self) -> &str {
        &self.label
    }

    /// The reflectors keep the stores current: nothing to fetch.
    fn fetch(&self) -> Result<(), SourceError> {
        Ok(())
    }

    fn head(&self) -> Result<String, SourceError> {
        let revision = self.revision();
        if self.latest().is_some_and(|s| s.revision == revision) {
            return Ok(revision);
        }
        Ok(self.take(revision).revision.clone())
    }

    fn tree(&self, revision: &str) -> Result<Box<dyn FileTree>, SourceError> {
        match self.snapshot(revision) {
            Some(snapshot) => Ok(Box::new(snapshot.tree.clone())),
            None => Err(SourceError::Revision {
                revision: revision.to_string(),
                source_label: self.label.clone(),
            }),
        }
    }

    fn only_controller_changes(&self, from: &str, to: &str) -> Result<bool, SourceError> {
        Ok(match (self.snapshot(from), self.snapshot(to)) {
            (Some(from), Some(to)) => from.content == to.content,
            _ => false,
        })
    }

    /// The cluster keeps no records of the controller's.
    fn controller_files(
        &self,
        _revision: &str,
        _folder: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
        Ok(Vec::new())
    }

    fn resolve_repo(&self, url: &str) -> String {
        if crate::source::remote::is_url(url) {
            return url.to_owned();
        }
        crate::source::remote::normalize(&self.base.join(url))
            .to_string_lossy()
            .into_owned()
    }

    fn base_dir(&self) -> &Path {
        &self.base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPANY: &str = "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {name: acme}\nspec: {mission: Test., ceo: ceo}\n";
    const CEO: &str = "apiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: ceo}\nspec: {title: CEO, description: Runs it., prompt: Run it.}\n";
    const APP: &str = "apiVersion: proto.dev/v1alpha1\nkind: Product\nmetadata: {name: app}\nspec: {description: App., lead: ceo}\n";

    fn goal(name: &str, owner: &str) -> String {
        format!(
            "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: {name}}}\nspec: {{product: app, owner: {owner}, description: d, check: {{file: {{path: x}}}}}}\n"
        )
    }

    fn files(resources: &[(Kind, &str, String)]) -> Files {
        resources
            .iter()
            .map(|(kind, name, text)| {
                (
                    declared::path(*kind, name),
                    ((*kind, name.to_string()), text.clone().into_bytes()),
                )
            })
            .collect()
    }

    fn company(goals: &[(&str, &str)]) -> Files {
        let mut all = vec![
            (Kind::Company, "acme", COMPANY.to_string()),
            (Kind::Agent, "ceo", CEO.to_string()),
            (Kind::Product, "app", APP.to_string()),
        ];
        for (name, owner) in goals {
            all.push((Kind::Goal, name, goal(name, owner)));
        }
        files(&all)
    }

    #[test]
    fn a_broken_resource_is_left_out_with_its_located_message_and_the_rest_validates() {
        let mut state = State::default();
        let mut invalid = BTreeMap::new();
        let Settled {
            tree,
            files: held,
            valid,
        } = settle(
            "namespace acme",
            company(&[("good", "ceo"), ("bad", "nobody")]),
            &mut invalid,
            &mut state,
        );
        assert!(valid);
        assert!(held.contains_key("goals/good.yaml"));
        assert!(!held.contains_key("goals/bad.yaml"));
        assert!(crate::spec::load_and_validate(&tree).is_ok());
        let messages = &invalid[&(Kind::Goal, "bad".to_string())];
        assert!(messages[0].starts_with("goals/bad.yaml:"), "{messages:?}");
        assert!(messages[0].contains("Goal/bad"), "{messages:?}");
        assert!(messages[0].contains("nobody"), "{messages:?}");
    }

    #[test]
    fn a_resource_broken_after_a_good_version_keeps_its_last_good_version() {
        let mut state = State::default();
        let mut invalid = BTreeMap::new();
        settle("ns", company(&[("g", "ceo")]), &mut invalid, &mut state);
        assert!(invalid.is_empty());
        let Settled {
            files: held, valid, ..
        } = settle("ns", company(&[("g", "nobody")]), &mut invalid, &mut state);
        assert!(valid);
        let (_, kept) = &held["goals/g.yaml"];
        assert_eq!(String::from_utf8_lossy(kept), goal("g", "ceo"));
        assert!(invalid.contains_key(&(Kind::Goal, "g".to_string())));
    }

    #[test]
    fn without_a_company_nothing_validates_and_a_deleted_one_stands_in_suspended() {
        let mut state = State::default();
        let mut invalid = BTreeMap::new();
        let mut no_company = company(&[("g", "ceo")]);
        no_company.remove("companies/acme.yaml");
        assert!(!settle("ns", no_company, &mut invalid, &mut state).valid);
        settle("ns", company(&[]), &mut invalid, &mut state);
        let (name, stand_in) = state.suspended_company.clone().unwrap();
        assert_eq!(name, "acme");
        let mut tree = MemTree::new("ns");
        tree.insert("companies/acme.yaml", stand_in);
        tree.insert("agents/ceo.yaml", CEO);
        let (spec, _) = crate::spec::load_and_validate(&tree).unwrap();
        assert!(spec.company().unwrap().spec.suspend);
    }
}
