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
use std::path::Path;

use git2::{ObjectType, Oid, Repository};

use super::GitopsError;
use super::ref_update::{self, Swap};

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
        write_loose(&source, &have, &objects)?;
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
/// the handful of trees and files it changed). No pack is built, so nothing searches for
/// deltas between the megabytes of two versions of a status file.
pub fn copy_loose(
    source: &Repository,
    target: &Repository,
    tip: Oid,
) -> Result<usize, GitopsError> {
    let have = target.odb()?;
    let objects = missing(source, &have, [tip])?;
    write_loose(source, &have, &objects)?;
    Ok(objects.len())
}

/// Each of `objects` of `source` written into `have`, one loose object each.
fn write_loose(
    source: &Repository,
    have: &git2::Odb<'_>,
    objects: &[Oid],
) -> Result<(), GitopsError> {
    let from = source.odb()?;
    for id in objects {
        let object = from.read(*id)?;
        have.write(object.kind(), object.data())?;
    }
    Ok(())
}

/// A push between repositories on this host: the objects `tip` reaches that `target`
/// lacks are copied loose, then `refname` is moved to `tip` only from `from` (`None`: only
/// if it does not exist), by git under its own lock file (see [`super::ref_update`]), so a
/// concurrent `git push` and this one exclude each other. Objects are written before the
/// ref that names them.
pub fn push(
    source: &Repository,
    target: &Repository,
    refname: &str,
    tip: Oid,
    from: Option<Oid>,
) -> Result<Swap, GitopsError> {
    copy_loose(source, target, tip)?;
    ref_update::compare_and_swap(target.path(), refname, tip, from)
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
        for entry in tree.iter() {
            let id = entry.id();
            let old = before
                .as_ref()
                .and_then(|b| b.get_name_bytes(entry.name_bytes()))
                .map(|e| (e.id(), e.kind()));
            if old.is_some_and(|(old, _)| old == id) {
                continue;
            }
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    let old_tree = old
                        .filter(|(_, kind)| *kind == Some(ObjectType::Tree))
                        .map(|(old, _)| old);
                    trees.push((id, old_tree));
                }
                Some(ObjectType::Blob) if seen.insert(id) => objects.push(id),
                // A submodule's commit lives in its own repository.
                _ => {}
            }
        }
    }
    Ok(())
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
            push(&source, &target, "refs/heads/main", head, None).unwrap(),
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
}
