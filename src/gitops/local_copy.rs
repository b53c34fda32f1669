//! Objects copied between repositories on this host, in-process and at a cost that follows
//! what is new rather than the repository's size: a product fetched into its mirror
//! ([`fetch`]), a record commit pushed to a company repository ([`copy_loose`]).
//!
//! libgit2's own fetch over its local transport marks every tree and blob of what the
//! mirror has as uninteresting before it packs what it lacks: each workspace made looked up
//! every file of the product's tip (a syscall each for loose objects), so the cost of
//! making a workspace grew with the product's file count. Here the commits the mirror lacks
//! are found by walking back from the product's branch tips until a commit the mirror has;
//! each such commit's tree is compared with its first parent's, entry by entry, descending
//! only into subtrees that differ, and what differs is written loose when it is a few
//! objects and packed otherwise, as git's `fetch.unpackLimit` decides. A merge's other parents are new commits walked in
//! turn, or commits the mirror has with everything under them, so nothing reachable is
//! missed; an object the mirror already had (a file reverted to an earlier version) may be
//! packed again, which costs only its bytes.
//!
//! The branches are then mirrored exactly, as `+refs/heads/*:refs/heads/*` with pruning:
//! new ones added, moved ones forced, gone ones removed; no tags. Objects are written before
//! the refs that name them, so a process killed between the two leaves only unnamed objects.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository};

use super::ref_update::{self, Swap};
use super::{GitopsError, loose};

/// Fewer objects than this are fetched into a mirror loose (git's `fetch.unpackLimit`).
const UNPACK_LIMIT: usize = 100;

/// Brings `mirror`'s branches to those of the repository at `product` (see the module), and
/// answers how many objects it copied.
pub fn fetch(mirror: &Path, product: &Path) -> Result<usize, GitopsError> {
    let source = Repository::open(product).map_err(|e| failed(&e))?;
    let target = Repository::open_bare(mirror)?;
    let tips = branches(&source)?;
    let have = target.odb()?;
    let objects = missing(&source, &have, tips.values().copied())?;
    if objects.len() <= UNPACK_LIMIT {
        // A few objects (a task's commit): loose, as git's fetch leaves fewer than its
        // `fetch.unpackLimit`; building a pack searched for deltas and wrote an index each
        // time. The mirror's roll-up packs them later.
        Copier::new(&source, Trust::Source)?.write(&Into::of(&target)?, &objects)?;
    } else {
        let mut pack = source.packbuilder()?;
        for object in &objects {
            pack.insert_object(*object, None)?;
        }
        let mut bytes = git2::Buf::new();
        pack.write_buf(&mut bytes)?;
        let mut writer = have.packwriter()?;
        std::io::Write::write_all(&mut writer, &bytes).map_err(|e| GitopsError::Command {
            what: "fetch the product into its mirror".into(),
            message: e.to_string(),
        })?;
        writer.commit()?;
    }
    mirror_branches(&target, &tips)?;
    Ok(objects.len())
}

/// Writes into `target`'s object store, one loose object each, what `tip` reaches that it
/// does not have (a record commit pushed to a company repository on this host: a commit and
/// the handful of trees and files it changed; a product's tip fetched into a workspace). No
/// pack is built, so nothing searches for deltas between the megabytes of two versions of a
/// status file. `source` is trusted: a repository the controller keeps.
pub fn copy_loose(
    source: &Repository,
    target: &Repository,
    tip: Oid,
) -> Result<usize, GitopsError> {
    let into = Into::of(target)?;
    let objects = missing(source, &into.odb, [tip])?;
    Copier::new(source, Trust::Source)?.write(&into, &objects)?;
    Ok(objects.len())
}

/// A repository's object store that objects are copied into: its folder of loose objects,
/// and the store that answers which it has.
struct Into<'r> {
    objects: PathBuf,
    odb: git2::Odb<'r>,
}

impl<'r> Into<'r> {
    fn of(repo: &'r Repository) -> Result<Into<'r>, GitopsError> {
        Ok(Into {
            objects: repo.path().join("objects"),
            odb: repo.odb()?,
        })
    }

    /// The store at an objects folder (a mirror a workspace reads through).
    fn folder(objects: &Path) -> Result<Into<'static>, GitopsError> {
        let odb = git2::Odb::new()?;
        odb.add_disk_alternate(&objects.to_string_lossy())?;
        Ok(Into {
            objects: objects.to_path_buf(),
            odb,
        })
    }
}

/// Whether the bytes of the source's objects are taken as they are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trust {
    /// A repository the controller keeps (a product, a mirror, its own clone).
    Source,
    /// A workspace, whose store any process of an attempt could have written: each object
    /// is hashed before it enters a trusted store, as `index-pack` checks what a fetch
    /// brings, so none enters under a name its content does not have.
    Check,
}

/// Copies objects of one source repository, one loose object each. An object loose in
/// the source's own store is copied as its compressed bytes, read (and checked) once for
/// every target; one packed or reached through alternates is read and written again by
/// libgit2.
struct Copier<'r> {
    from: git2::Odb<'r>,
    own: PathBuf,
    trust: Trust,
    read: HashMap<Oid, Vec<u8>>,
}

impl<'r> Copier<'r> {
    fn new(source: &'r Repository, trust: Trust) -> Result<Copier<'r>, GitopsError> {
        Ok(Copier {
            from: source.odb()?,
            own: source.path().join("objects"),
            trust,
            read: HashMap::new(),
        })
    }

    /// Writes `objects` into `into`, in their order.
    fn write(&mut self, into: &Into<'_>, objects: &[Oid]) -> Result<(), GitopsError> {
        for id in objects {
            if !self.read.contains_key(id)
                && let Some(bytes) = read_loose(&self.own, *id, self.trust)?
            {
                self.read.insert(*id, bytes);
            }
            match self.read.get(id) {
                Some(bytes) => loose::put(&into.objects, *id, bytes)?,
                None => {
                    let object = self.from.read(*id)?;
                    // Objects are not hashed when read (see `tune_libgit2`): one whose bytes
                    // do not hash to its name must not enter under another name while the
                    // one named stays missing.
                    let written = into.odb.write(object.kind(), object.data())?;
                    if written != *id {
                        return Err(corrupt(*id, &format!("its content hashes to {written}")));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The compressed bytes of object `id` when it is loose in the `objects` folder, checked
/// to hold what its name says unless the store is trusted; `None` when it is not loose
/// there.
fn read_loose(objects: &Path, id: Oid, trust: Trust) -> Result<Option<Vec<u8>>, GitopsError> {
    let path = loose::path(objects, id);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(GitopsError::Io { path, source }),
    };
    if trust == Trust::Check {
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&bytes[..]), &mut plain)
            .map_err(|e| corrupt(id, &e.to_string()))?;
        let (kind, content) =
            loose::parse(&plain).ok_or_else(|| corrupt(id, "no object header"))?;
        if Oid::hash_object(kind, content)? != id {
            return Err(corrupt(id, "its content hashes to another name"));
        }
    }
    Ok(Some(bytes))
}

fn corrupt(id: Oid, why: &str) -> GitopsError {
    GitopsError::Command {
        what: "copy objects between repositories".into(),
        message: format!("object {id} is corrupt: {why}"),
    }
}

/// A push between repositories on this host: the objects `tip` reaches that `target`
/// lacks are copied loose, then `refname` is moved to `tip` only from `from` (`None`: only
/// if it does not exist), by git under its own lock file (see [`super::ref_update`]), so a
/// concurrent `git push` and this one exclude each other. Objects are written before the
/// ref that names them.
///
/// `workspace`: the source is a task's workspace, which reads objects through its mirror's
/// `objects` folder (given). What it pushes is checked as it is copied (see [`Trust`]),
/// and once the branch moved the mirror gets the objects it lacks as well, so its next
/// fetch finds the commit there and copies nothing (each fetch compared the two versions
/// of every tree the commit changed, a product's root tree among them).
pub fn push(
    source: &Repository,
    target: &Repository,
    refname: &str,
    tip: Oid,
    from: Option<Oid>,
    workspace: Option<&Path>,
) -> Result<Swap, GitopsError> {
    let trust = match workspace {
        Some(_) => Trust::Check,
        None => Trust::Source,
    };
    let into = Into::of(target)?;
    let objects = missing(source, &into.odb, [tip])?;
    let mut copier = Copier::new(source, trust)?;
    copier.write(&into, &objects)?;
    let swap = ref_update::compare_and_swap(target.path(), refname, tip, from)?;
    if let (Swap::Moved, Some(mirror)) = (&swap, workspace) {
        // A mirror missing a few objects costs only the next fetch: nothing fails here.
        let fed = Into::folder(mirror).and_then(|mirror| {
            let objects = missing(source, &mirror.odb, [tip])?;
            copier.write(&mirror, &objects)
        });
        if let Err(e) = fed {
            tracing::debug!(mirror = %mirror.display(), "the pushed objects are left to the next fetch: {e}");
        }
    }
    Ok(swap)
}

/// git's default `gc.auto`.
const GC_AUTO: usize = 6700;

/// `git gc --auto` in `repo` when its loose objects pile up, sampled as git samples them
/// (one of the 256 folders of loose objects against the repository's own `gc.auto`; 0:
/// never). A push here writes loose objects, as `unpack-objects` does for a small push,
/// and `receive-pack` runs this after every push; here it starts only when there is work
/// for it. Its failure fails nothing: the push is done.
pub fn collect_garbage(repo: &Repository) {
    const SAMPLE: &str = "objects/17";
    let path = repo.path();
    let loose = std::fs::read_dir(path.join(SAMPLE)).map_or(0, Iterator::count);
    if loose == 0 {
        return;
    }
    let gc_auto = repo
        .config()
        .and_then(|c| c.get_i64("gc.auto"))
        .map_or(GC_AUTO, |n| usize::try_from(n).unwrap_or(0));
    if gc_auto == 0 || loose <= gc_auto.div_ceil(256) {
        return;
    }
    // The controller's git turns automatic collection off; here it is asked for.
    let limit = format!("gc.auto={gc_auto}");
    if let Err(e) = super::workspace::git(
        Some(path),
        &[
            "-c",
            &limit,
            "-c",
            "gc.autoDetach=false",
            "gc",
            "--auto",
            "--quiet",
        ],
        "gc --auto",
    ) {
        tracing::warn!(repository = %path.display(), "{e}");
    }
}

/// The objects `tips` reach that `have` lacks: the commits it lacks, and of each the trees
/// and blobs its first parent's tree does not hold (see the module).
fn missing(
    source: &Repository,
    have: &git2::Odb<'_>,
    tips: impl IntoIterator<Item = Oid>,
) -> Result<Vec<Oid>, GitopsError> {
    let mut objects = Vec::new();
    let mut seen = HashSet::new();
    let commits = missing_commits(source, have, tips)?;
    for commit in &commits {
        commit_objects(source, *commit, &mut objects, &mut seen)?;
    }
    // Written in this order, loose, one by one: every tree and blob before any commit, and
    // each commit after its parents. A copy cut short then never leaves a commit whose
    // tree or parents are missing, and a commit present is what the next copy's walk
    // stops at (see `missing_commits`).
    objects.extend(parents_first(source, &commits)?);
    Ok(objects)
}

/// `commits` ordered so that each comes after those of its parents that are among them.
fn parents_first(source: &Repository, commits: &[Oid]) -> Result<Vec<Oid>, GitopsError> {
    let among: HashSet<Oid> = commits.iter().copied().collect();
    let mut placed = HashSet::new();
    let mut order = Vec::with_capacity(commits.len());
    for start in commits {
        // Depth first without recursion: a commit is placed once its parents are.
        let mut stack = vec![(*start, false)];
        while let Some((id, parents_placed)) = stack.pop() {
            if placed.contains(&id) {
                continue;
            }
            if parents_placed {
                placed.insert(id);
                order.push(id);
                continue;
            }
            stack.push((id, true));
            for parent in source.find_commit(id)?.parent_ids() {
                if among.contains(&parent) && !placed.contains(&parent) {
                    stack.push((parent, false));
                }
            }
        }
    }
    Ok(order)
}

/// The product's branches and the commits they point at (a symbolic one resolved).
fn branches(repo: &Repository) -> Result<HashMap<String, Oid>, GitopsError> {
    let mut tips = HashMap::new();
    for reference in repo.references_glob("refs/heads/*")? {
        let reference = reference?;
        // A name that is not UTF-8 cannot be written through libgit2's API: not mirrored.
        let Ok(name) = reference.name().map(str::to_owned) else {
            continue;
        };
        let resolved = reference.resolve()?;
        if let Some(target) = resolved.target() {
            tips.insert(name, target);
        }
    }
    Ok(tips)
}

/// The commits reachable from `tips` that the mirror does not have, each once.
fn missing_commits(
    source: &Repository,
    have: &git2::Odb<'_>,
    tips: impl IntoIterator<Item = Oid>,
) -> Result<Vec<Oid>, GitopsError> {
    let mut stack: Vec<Oid> = tips.into_iter().collect();
    let mut seen = HashSet::new();
    let mut missing = Vec::new();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) || have.exists(id) {
            continue;
        }
        let commit = source.find_commit(id)?;
        stack.extend(commit.parent_ids());
        missing.push(id);
    }
    Ok(missing)
}

/// Adds to `objects` the trees and blobs `commit`'s tree holds that its first parent's
/// does not (not the commit itself); `seen` holds what was added before.
fn commit_objects(
    source: &Repository,
    commit: Oid,
    objects: &mut Vec<Oid>,
    seen: &mut HashSet<Oid>,
) -> Result<(), GitopsError> {
    let commit = source.find_commit(commit)?;
    let before = match commit.parent_ids().next() {
        Some(parent) => Some(source.find_commit(parent)?.tree_id()),
        None => None,
    };
    // An explicit stack of (tree, the same path's tree before): no recursion, however deep.
    let mut trees = vec![(commit.tree_id(), before)];
    while let Some((tree, before)) = trees.pop() {
        if Some(tree) == before || !seen.insert(tree) {
            continue;
        }
        objects.push(tree);
        let tree = source.find_tree(tree)?;
        let before = before.map(|b| source.find_tree(b)).transpose()?;
        // Both trees list their entries in git's order: one walk pairs them, where a lookup
        // per entry cost a search of the old tree for each file of a large folder.
        let mut old_entries = before.iter().flat_map(git2::Tree::iter).peekable();
        for entry in tree.iter() {
            let id = entry.id();
            let is_tree = entry.kind() == Some(ObjectType::Tree);
            let mut old = None;
            while let Some(o) = old_entries.peek() {
                let order = git_order(
                    o.name_bytes(),
                    o.kind() == Some(ObjectType::Tree),
                    entry.name_bytes(),
                    is_tree,
                );
                if order == std::cmp::Ordering::Greater {
                    break;
                }
                if order == std::cmp::Ordering::Equal {
                    old = Some(o.id());
                }
                old_entries.next();
                if old.is_some() {
                    break;
                }
            }
            if old == Some(id) {
                continue;
            }
            match entry.kind() {
                // A folder that was a file before is new as a whole: `old` names a folder.
                Some(ObjectType::Tree) => trees.push((id, old)),
                Some(ObjectType::Blob) if seen.insert(id) => objects.push(id),
                // A submodule's commit lives in its own repository.
                _ => {}
            }
        }
    }
    Ok(())
}

/// Two tree entries in git's order: by name, a folder's as if it ended in `/`.
fn git_order(a: &[u8], a_tree: bool, b: &[u8], b_tree: bool) -> std::cmp::Ordering {
    let n = a.len().min(b.len());
    a[..n].cmp(&b[..n]).then_with(|| {
        let next = |name: &[u8], tree: bool| name.get(n).copied().or(tree.then_some(b'/'));
        next(a, a_tree).cmp(&next(b, b_tree))
    })
}

/// Sets the mirror's branches to `tips` exactly.
fn mirror_branches(target: &Repository, tips: &HashMap<String, Oid>) -> Result<(), GitopsError> {
    for (name, id) in tips {
        let current = target
            .find_reference(name)
            .ok()
            .and_then(|r| r.resolve().ok())
            .and_then(|r| r.target());
        if current != Some(*id) {
            target.reference(name, *id, true, "fetch")?;
        }
    }
    let mut gone = Vec::new();
    for reference in target.references_glob("refs/heads/*")? {
        let reference = reference?;
        if let Ok(name) = reference.name()
            && !tips.contains_key(name)
        {
            gone.push(name.to_owned());
        }
    }
    for name in gone {
        target.find_reference(&name)?.delete()?;
    }
    Ok(())
}

fn failed(e: &git2::Error) -> GitopsError {
    GitopsError::Command {
        what: "fetch the product into its mirror".into(),
        message: e.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::test_git::{git, write};
    use std::path::PathBuf;

    fn commit(work: &Path, message: &str) {
        git(work, &["add", "-A"]);
        git(work, &["commit", "-q", "-m", message]);
    }

    /// A bare product and a bare mirror under `dir`, and a checkout on `main` whose
    /// `origin` is the product.
    fn repositories(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let (product, work, mirror) = (
            dir.join("app.git"),
            dir.join("work"),
            dir.join("mirror.git"),
        );
        for bare in [&product, &mirror] {
            git(
                dir,
                &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
            );
        }
        git(dir, &["init", "-q", "-b", "main", work.to_str().unwrap()]);
        git(
            &work,
            &["remote", "add", "origin", product.to_str().unwrap()],
        );
        (product, work, mirror)
    }

    /// The mirror holds every object its branches reach, and exactly the product's branches.
    fn assert_mirrors(mirror: &Path, product: &Path) {
        git(mirror, &["fsck", "--connectivity-only", "--no-dangling"]);
        let refs = |dir: &Path| {
            git(
                dir,
                &[
                    "for-each-ref",
                    "--format=%(refname) %(objectname)",
                    "refs/heads",
                ],
            )
        };
        assert_eq!(refs(mirror), refs(product));
    }

    #[test]
    fn a_mirror_gets_every_branch_and_object_and_then_only_what_is_new() {
        let tmp = tempfile::tempdir().unwrap();
        let (product, work, mirror) = repositories(tmp.path());
        for i in 0..200 {
            write(&work, &format!("files/f{i}.txt"), &format!("{i}\n"));
        }
        write(&work, "deep/a/b/c/d/e.txt", "deep\n");
        commit(&work, "first");
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        git(&work, &["checkout", "-q", "-b", "feature"]);
        write(&work, "deep/a/b/other.txt", "feature\n");
        commit(&work, "feature");
        git(&work, &["push", "-q", "origin", "feature", "HEAD:doomed"]);

        // A fresh mirror: everything.
        let first = fetch(&mirror, &product).unwrap();
        assert!(first > 200, "all of it: {first}");
        assert_mirrors(&mirror, &product);
        // Nothing new: nothing copied.
        assert_eq!(fetch(&mirror, &product).unwrap(), 0);

        // One file changed deep down on main, then a merge of the feature; a branch
        // deleted and another moved back.
        git(&work, &["checkout", "-q", "main"]);
        write(&work, "deep/a/b/c/d/e.txt", "changed\n");
        commit(&work, "change");
        git(&work, &["merge", "-q", "--no-ff", "-m", "merge", "feature"]);
        git(&work, &["push", "-q", "origin", "main"]);
        git(&work, &["push", "-q", "origin", ":doomed"]);
        git(&work, &["push", "-q", "-f", "origin", "main~2:feature"]);
        let second = fetch(&mirror, &product).unwrap();
        // Two commits; the changed file and the five trees above it; the merge's three
        // trees (root, deep, a) and b; not the 200 untouched files.
        assert!(second < 20, "only what changed: {second}");
        assert_mirrors(&mirror, &product);
    }

    #[test]
    fn entries_pair_up_in_gits_order_across_a_file_that_becomes_a_folder() {
        // git's order puts a folder `x` after `x-y` and `x.z` and before `x0`.
        let names = [
            ("x", false),
            ("x", true),
            ("x-y", false),
            ("x.z", false),
            ("x0", true),
        ];
        let repo_dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(repo_dir.path()).unwrap();
        let blob = repo.blob(b"x").unwrap();
        let mut folder = repo.treebuilder(None).unwrap();
        folder.insert("inner", blob, 0o100644).unwrap();
        let folder = folder.write().unwrap();
        for with_file in [true, false] {
            let mut builder = repo.treebuilder(None).unwrap();
            for (name, is_tree) in names {
                if *name == *"x" && is_tree == with_file {
                    continue;
                }
                let (id, mode) = if is_tree {
                    (folder, 0o040000)
                } else {
                    (blob, 0o100644)
                };
                builder.insert(name, id, mode).unwrap();
            }
            let tree = repo.find_tree(builder.write().unwrap()).unwrap();
            let listed: Vec<_> = tree.iter().collect();
            for pair in listed.windows(2) {
                let order = git_order(
                    pair[0].name_bytes(),
                    pair[0].kind() == Some(ObjectType::Tree),
                    pair[1].name_bytes(),
                    pair[1].kind() == Some(ObjectType::Tree),
                );
                assert_eq!(
                    order,
                    std::cmp::Ordering::Less,
                    "{:?}",
                    pair.iter().map(|e| e.name()).collect::<Vec<_>>()
                );
            }
        }

        let tmp = tempfile::tempdir().unwrap();
        let (product, work, mirror) = repositories(tmp.path());
        for (name, _) in &names[2..] {
            write(&work, &format!("{name}/f"), "f\n");
        }
        write(&work, "x", "a file\n");
        commit(&work, "a file");
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        fetch(&mirror, &product).unwrap();
        git(&work, &["rm", "-q", "x"]);
        write(&work, "x/inner", "now a folder\n");
        commit(&work, "a folder");
        git(&work, &["rm", "-q", "-r", "x"]);
        write(&work, "x", "a file again\n");
        commit(&work, "a file again");
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        fetch(&mirror, &product).unwrap();
        assert_mirrors(&mirror, &product);
        git(&mirror, &["fsck", "--no-dangling"]);
    }

    #[test]
    fn trees_nested_deeper_than_any_stack_would_like_are_copied() {
        let tmp = tempfile::tempdir().unwrap();
        let (product, work, mirror) = repositories(tmp.path());
        let deep: Vec<&str> = std::iter::repeat_n("d", 1000).collect();
        write(&work, &format!("{}/leaf", deep.join("/")), "x\n");
        commit(&work, "deep");
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        fetch(&mirror, &product).unwrap();
        assert_mirrors(&mirror, &product);
    }

    #[test]
    fn a_commit_is_copied_as_loose_objects_of_what_it_adds() {
        let tmp = tempfile::tempdir().unwrap();
        let (target, work, _) = repositories(tmp.path());
        for i in 0..100 {
            write(&work, &format!("goals/g{i}.yaml"), &format!("{i}\n"));
        }
        commit(&work, "first");
        let (source, company) = (
            Repository::open(&work).unwrap(),
            Repository::open_bare(&target).unwrap(),
        );
        let first = source.head().unwrap().target().unwrap();
        assert!(copy_loose(&source, &company, first).unwrap() > 100);
        company
            .reference("refs/heads/main", first, false, "t")
            .unwrap();
        write(&work, ".proto/status.yaml", "goals: []\n");
        commit(&work, "record");
        let second = source.head().unwrap().target().unwrap();
        // The commit, its root tree, the new .proto tree and the file.
        assert_eq!(copy_loose(&source, &company, second).unwrap(), 4);
        company
            .reference("refs/heads/main", second, true, "t")
            .unwrap();
        git(&target, &["fsck", "--connectivity-only", "--no-dangling"]);
        assert_eq!(copy_loose(&source, &company, second).unwrap(), 0);
    }

    /// A push writes loose objects; once git's sample of them passes the repository's own
    /// `gc.auto`, they are packed (and a repository whose `gc.auto` is 0 is left alone).
    #[test]
    fn loose_objects_a_push_piles_up_are_packed_as_gc_auto_says() {
        let dir = tempfile::tempdir().unwrap();
        let (product, work, _) = repositories(dir.path());
        for i in 0..3_000 {
            write(&work, &format!("many/{i}.txt"), &format!("{i}\n"));
        }
        commit(&work, "many");
        let source = Repository::open(&work).unwrap();
        let head = source.head().unwrap().target().unwrap();
        let target = Repository::open_bare(&product).unwrap();
        git(&product, &["config", "gc.auto", "0"]);
        assert_eq!(
            push(&source, &target, "refs/heads/main", head, None, None).unwrap(),
            Swap::Moved
        );
        collect_garbage(&target);
        assert!(git(&product, &["count-objects", "-v"]).contains("packs: 0"));
        git(&product, &["config", "gc.auto", "256"]);
        collect_garbage(&target);
        let counts = git(&product, &["count-objects", "-v"]);
        assert!(counts.contains("packs: 1"), "{counts}");
        assert!(counts.starts_with("count: 0\n"), "{counts}");
        git(&product, &["fsck", "--no-dangling"]);
    }

    /// A copy cut short must never leave a commit without its tree or its parents: every
    /// tree and blob comes before any commit, and each commit after its parents, merges
    /// included.
    #[test]
    fn objects_are_copied_trees_and_files_first_then_commits_after_their_parents() {
        let dir = tempfile::tempdir().unwrap();
        let (product, work, _) = repositories(dir.path());
        write(&work, "a.txt", "a\n");
        commit(&work, "base");
        git(&work, &["checkout", "-q", "-b", "side"]);
        write(&work, "side/s.txt", "s\n");
        commit(&work, "side one");
        write(&work, "side/s.txt", "s2\n");
        commit(&work, "side two");
        git(&work, &["checkout", "-q", "main"]);
        write(&work, "b.txt", "b\n");
        commit(&work, "main");
        git(&work, &["merge", "-q", "--no-edit", "side"]);
        let source = Repository::open(&work).unwrap();
        let head = source.head().unwrap().target().unwrap();
        let target = Repository::open_bare(&product).unwrap();
        let objects = missing(&source, &target.odb().unwrap(), [head]).unwrap();
        let kinds: Vec<ObjectType> = objects
            .iter()
            .map(|id| source.find_object(*id, None).unwrap().kind().unwrap())
            .collect();
        let first_commit = kinds.iter().position(|k| *k == ObjectType::Commit).unwrap();
        assert!(
            kinds[first_commit..]
                .iter()
                .all(|k| *k == ObjectType::Commit)
        );
        assert_eq!(kinds.len() - first_commit, 5, "every commit once");
        let commits = &objects[first_commit..];
        for (at, id) in commits.iter().enumerate() {
            for parent in source.find_commit(*id).unwrap().parent_ids() {
                let placed = commits.iter().position(|c| *c == parent).unwrap();
                assert!(placed < at, "{id} comes before its parent {parent}");
            }
        }
        assert_eq!(commits.last(), Some(&head));
        assert_eq!(copy_loose(&source, &target, head).unwrap(), objects.len());
        target
            .reference("refs/heads/main", head, true, "t")
            .unwrap();
        git(&product, &["fsck", "--no-dangling"]);
    }

    /// A workspace's push leaves the objects in its mirror too: the mirror's next fetch
    /// copies nothing, and the mirror is whole.
    #[test]
    fn a_workspace_push_feeds_the_mirror_so_its_next_fetch_copies_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (product, work, mirror) = repositories(dir.path());
        for i in 0..50 {
            write(&work, &format!("f{i}.txt"), &format!("{i}\n"));
        }
        commit(&work, "base");
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        fetch(&mirror, &product).unwrap();
        write(&work, "f7.txt", "changed\n");
        write(&work, "new/g.txt", "new\n");
        commit(&work, "work");
        let source = Repository::open(&work).unwrap();
        let base = source.revparse_single("HEAD~1").unwrap().id();
        let head = source.head().unwrap().target().unwrap();
        let target = Repository::open_bare(&product).unwrap();
        let swap = push(
            &source,
            &target,
            "refs/heads/main",
            head,
            Some(base),
            Some(&mirror.join("objects")),
        )
        .unwrap();
        assert_eq!(swap, Swap::Moved);
        assert_eq!(
            fetch(&mirror, &product).unwrap(),
            0,
            "the push fed the mirror"
        );
        assert_mirrors(&mirror, &product);
        git(&product, &["fsck", "--no-dangling"]);
    }

    /// An object of a workspace whose bytes do not hash to its name (a process rewrote the
    /// store) is refused before it enters the product: the branch stays where it was.
    #[test]
    fn a_workspace_object_that_is_not_what_its_name_says_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (product, work, mirror) = repositories(dir.path());
        write(&work, "a.txt", "a\n");
        write(&work, "b.txt", "b\n");
        commit(&work, "base");
        let blob = |name: &str| git(&work, &["rev-parse", &format!("HEAD:{name}")]);
        let loose = |id: &str| work.join(".git/objects").join(&id[..2]).join(&id[2..]);
        let (a, b) = (loose(&blob("a.txt")), loose(&blob("b.txt")));
        std::fs::remove_file(&a).unwrap();
        std::fs::copy(&b, &a).unwrap();
        let source = Repository::open(&work).unwrap();
        let head = source.head().unwrap().target().unwrap();
        let target = Repository::open_bare(&product).unwrap();
        let refused = push(
            &source,
            &target,
            "refs/heads/main",
            head,
            None,
            Some(&mirror.join("objects")),
        )
        .unwrap_err();
        assert!(refused.to_string().contains("is corrupt"), "{refused}");
        assert!(target.find_reference("refs/heads/main").is_err());
        let named = Oid::from_str(&blob("a.txt")).unwrap();
        assert!(!target.odb().unwrap().exists(named));
    }
}
