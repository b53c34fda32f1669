//! `git write-tree` for a workspace's commit, with the new trees written stored (see
//! [`super::loose`]) rather than deflated.
//!
//! libgit2 writes the index's trees through a repository made for the purpose: its object
//! store is an in-memory one (libgit2's "mempack"), first in line for writes, over the
//! workspace's own store and those it borrows from, for reads. A tree that exists already
//! is not written again (libgit2 finds it first); a new one lands in memory, hashed but
//! not deflated, and libgit2's read-back of the written tree into the index's tree cache
//! finds it there without inflating it. The new trees are then written to the workspace's
//! store as stored zlib, subtrees before the trees that hold them, before anything names
//! them: a commit, a branch.

use std::collections::HashSet;

use git2::{Index, ObjectType, Oid, Repository};

use super::loose;

/// Above the default loose (1) and packed (2) stores: libgit2 writes into the store of the
/// highest priority that can take a write.
const IN_MEMORY_FIRST: i32 = 1000;

/// The tree of `index`, as `index.write_tree()` would make it in `repo` (and with the
/// index's tree cache brought up to date), the new trees written stored.
pub(super) fn write_tree(repo: &Repository, index: &mut Index) -> Result<Oid, git2::Error> {
    let objects = repo.path().join("objects");
    let odb = git2::Odb::new()?;
    // The handle is not needed: the store lives as long as the odb that holds it.
    odb.add_new_mempack_backend(IN_MEMORY_FIRST)?;
    odb.add_disk_alternate(&objects.to_string_lossy())?;
    let scratch = Repository::from_odb(odb)?;
    let root = index.write_tree_to(&scratch)?;
    for (id, content) in new_trees(&scratch, &repo.odb()?, root)? {
        loose::write_stored(&objects, id, ObjectType::Tree, &content)
            .map_err(|e| git2::Error::from_str(&e.to_string()))?;
    }
    Ok(root)
}

/// The trees under `root` (itself included) that `on_disk` does not have, each with its
/// content, a tree after every tree it holds.
fn new_trees(
    scratch: &Repository,
    on_disk: &git2::Odb<'_>,
    root: Oid,
) -> Result<Vec<(Oid, Vec<u8>)>, git2::Error> {
    let in_memory = scratch.odb()?;
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    // An explicit stack: no recursion, however deep the folders.
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) || on_disk.exists(id) {
            continue;
        }
        let object = in_memory.read(id)?;
        let tree = scratch.find_tree(id)?;
        stack.extend(
            tree.iter()
                .filter(|entry| entry.kind() == Some(ObjectType::Tree))
                .map(|entry| entry.id()),
        );
        found.push((id, object.data().to_vec()));
    }
    // Found parents first: written in reverse, every subtree is there before its parent.
    found.reverse();
    Ok(found)
}
