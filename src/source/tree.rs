//! A commit's tree as the loader reads it: the paths and blob ids of its files are listed up
//! front (git has them without reading any file), and a file's bytes are read only when the
//! loader asks. With [`crate::spec::Loader`] this makes a new revision cost what changed in
//! it, not the size of the company.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use git2::{ObjectType, Oid, Repository, Tree};

use super::SourceError;
use crate::spec::safe_fs::{MAX_LINK_DEPTH, MAX_LINKED_ENTRIES};
use crate::spec::tree::{
    BlobId, CONTROLLER_DIRS, FileTree, Listing, Refusal, Refused, TreeError, missing,
};

/// The files of one commit's declaration folder, read on demand.
pub struct GitTree {
    /// Behind a lock because the loader reads from several threads and a `Repository`
    /// may be used by one at a time.
    repo: Mutex<Repository>,
    label: String,
    /// Every regular file by path, with its blob id.
    files: BTreeMap<String, Oid>,
    /// Paths left out (links that leave the tree, loops...), for the loader to report.
    refused: Vec<Refused>,
}

impl GitTree {
    pub(super) fn new(repo: Repository, label: String, listed: Listed) -> GitTree {
        GitTree {
            repo: Mutex::new(repo),
            label,
            files: listed.entries.into_iter().collect(),
            refused: listed.refused,
        }
    }

    fn oid(&self, path: &str) -> Result<Oid, TreeError> {
        self.files
            .get(path)
            .copied()
            .ok_or_else(|| missing(&self.files, path))
    }
}

impl FileTree for GitTree {
    fn files(&self) -> Result<Vec<String>, TreeError> {
        Ok(self.files.keys().cloned().collect())
    }

    fn listing(&self) -> Result<Listing, TreeError> {
        Ok(Listing {
            files: self.files()?,
            refused: self.refused.clone(),
        })
    }

    fn size(&self, path: &str) -> Result<u64, TreeError> {
        let oid = self.oid(path)?;
        let repo = self.repo.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the object's header is inflated: an oversized file is refused unread.
        let header = repo.odb().and_then(|odb| odb.read_header(oid));
        header
            .map(|(size, _)| size as u64)
            .map_err(|source| TreeError::Git {
                path: path.to_owned(),
                source,
            })
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, TreeError> {
        let oid = self.oid(path)?;
        let repo = self.repo.lock().unwrap_or_else(PoisonError::into_inner);
        let blob = repo.find_blob(oid);
        blob.map(|b| b.content().to_vec())
            .map_err(|source| TreeError::Git {
                path: path.to_owned(),
                source,
            })
    }

    fn label(&self) -> String {
        self.label.clone()
    }

    fn blob_id(&self, path: &str) -> Option<BlobId> {
        self.files
            .get(path)
            .and_then(|oid| BlobId::from_bytes(oid.as_bytes()))
    }
}

/// What a walk of a commit's tree found: each file's path and blob id, and the paths left
/// out with the reason (for the loader to report).
#[derive(Debug, Default)]
pub(super) struct Listed {
    pub entries: Vec<(String, Oid)>,
    pub refused: Vec<Refused>,
}

/// Adds every file under `tree` to `out` with its blob id, `prefix`-relative, skipping
/// submodules and the controller's folders at the root. `tree` is the folder `at` of the
/// commit's tree `root`. Symbolic links (blobs of mode 120000 holding the target path) are
/// resolved against `root`, as a checkout would resolve them: a link to a file lists that
/// file's blob under the link's path, a link to a folder lists the folder's files under it;
/// links that leave the repository, dangle or loop are refused (see
/// [`crate::spec::Refusal`]).
pub(super) fn list(
    repo: &Repository,
    (root, at): (&Tree<'_>, &str),
    tree: &Tree<'_>,
    prefix: &str,
    out: &mut Listed,
) -> Result<(), SourceError> {
    let mut walker = Walker {
        repo,
        root,
        out,
        linked_entries: 0,
    };
    let real: Vec<String> = at
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    walker.walk(tree, prefix, &real, 0)
}

/// The longest symbolic link target read: a path, not a document.
const MAX_LINK_BYTES: usize = 4096;

/// Links followed while resolving one path, as the kernel's own limit on link chains.
const MAX_LINK_HOPS: usize = 40;

struct Walker<'a, 'r> {
    repo: &'r Repository,
    root: &'a Tree<'r>,
    out: &'a mut Listed,
    linked_entries: usize,
}

/// An object a path resolves to.
enum Target {
    File(Oid),
    Folder(Oid),
}

impl Walker<'_, '_> {
    fn refuse(&mut self, path: String, why: Refusal) {
        self.out.refused.push(Refused { path, why });
    }

    /// Lists `tree`, whose real path under the root is `real` (links resolved), as `rel`;
    /// `links` counts the linked folders passed through to get here.
    fn walk(
        &mut self,
        tree: &Tree<'_>,
        rel: &str,
        real: &[String],
        links: usize,
    ) -> Result<(), SourceError> {
        for entry in tree.iter() {
            let shown = crate::spec::echo::name_from_bytes(entry.name_bytes());
            let path = if rel.is_empty() {
                shown
            } else {
                format!("{rel}/{shown}")
            };
            let Ok(name) = entry.name() else {
                self.refuse(path, Refusal::NameNotUtf8);
                continue;
            };
            if links > 0 {
                self.linked_entries += 1;
                if self.linked_entries > MAX_LINKED_ENTRIES {
                    self.refuse(path, Refusal::TooMany(MAX_LINKED_ENTRIES));
                    return Ok(());
                }
            }
            let mut child_real = real.to_vec();
            child_real.push(name.to_owned());
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    if rel.is_empty() && CONTROLLER_DIRS.contains(&name) {
                        continue;
                    }
                    let sub = self.repo.find_tree(entry.id())?;
                    self.walk(&sub, &path, &child_real, links)?;
                }
                Some(ObjectType::Blob) if entry.filemode() == i32::from(git2::FileMode::Link) => {
                    match self.resolve_link(real, entry.id()) {
                        Err(why) => self.refuse(path, why),
                        Ok((_, Target::File(oid))) => self.out.entries.push((path, oid)),
                        Ok((target, Target::Folder(oid))) => {
                            if real.starts_with(&target) {
                                // The link names a folder it is inside of.
                                self.refuse(path, Refusal::Loop);
                            } else if links >= MAX_LINK_DEPTH {
                                self.refuse(path, Refusal::TooDeep(MAX_LINK_DEPTH));
                            } else {
                                let sub = self.repo.find_tree(oid)?;
                                self.walk(&sub, &path, &target, links + 1)?;
                            }
                        }
                    }
                }
                Some(ObjectType::Blob) => self.out.entries.push((path, entry.id())),
                _ => {}
            }
        }
        Ok(())
    }

    /// The target text of the link blob `oid`.
    fn link_text(&self, oid: Oid) -> Result<String, Refusal> {
        let dangling = |target: &str| Refusal::Dangling {
            target: target.to_owned(),
        };
        let size = self
            .repo
            .odb()
            .and_then(|odb| odb.read_header(oid))
            .map_err(|_| dangling("?"))?
            .0;
        if size > MAX_LINK_BYTES {
            return Err(dangling("(a target longer than 4096 bytes)"));
        }
        let blob = self.repo.find_blob(oid).map_err(|_| dangling("?"))?;
        Ok(String::from_utf8_lossy(blob.content()).into_owned())
    }

    /// Resolves the link blob `oid` found in the folder `dir` (a real path under the root),
    /// following further links on the way, as `realpath` does on a checkout.
    fn resolve_link(&self, dir: &[String], oid: Oid) -> Result<(Vec<String>, Target), Refusal> {
        let first = self.link_text(oid)?;
        let leaves = |target: &str| Refusal::LeavesTree {
            target: target.to_owned(),
            folder: false,
        };
        let dangling = |target: &str| Refusal::Dangling {
            target: target.to_owned(),
        };
        if first.starts_with('/') {
            return Err(leaves(&first));
        }
        let mut done: Vec<String> = dir.to_vec();
        let mut rest: VecDeque<String> = first.split('/').map(str::to_owned).collect();
        let mut hops = 1;
        // What `done` names, when known without looking it up again.
        let mut current = None;
        while let Some(part) = rest.pop_front() {
            match part.as_str() {
                "" | "." => continue,
                ".." => {
                    if done.pop().is_none() {
                        return Err(leaves(&first));
                    }
                    current = None;
                    continue;
                }
                _ => {}
            }
            let mut path = done.clone();
            path.push(part.clone());
            let entry = self
                .root
                .get_path(Path::new(&path.join("/")))
                .map_err(|_| dangling(&first))?;
            match entry.kind() {
                Some(ObjectType::Blob) if entry.filemode() == i32::from(git2::FileMode::Link) => {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return Err(Refusal::Loop);
                    }
                    let next = self.link_text(entry.id())?;
                    if next.starts_with('/') {
                        return Err(leaves(&next));
                    }
                    for piece in next.split('/').rev() {
                        rest.push_front(piece.to_owned());
                    }
                }
                Some(ObjectType::Tree) => {
                    done.push(part);
                    current = Some(Target::Folder(entry.id()));
                }
                Some(ObjectType::Blob) => {
                    if rest.iter().any(|p| !p.is_empty() && p != ".") {
                        // A file used as a folder.
                        return Err(dangling(&first));
                    }
                    done.push(part);
                    current = Some(Target::File(entry.id()));
                }
                _ => return Err(Refusal::NotRegular("a submodule")),
            }
        }
        // After `..` (or a target of `.`) the folder is looked up from its path.
        let current = match current {
            Some(target) => target,
            None if done.is_empty() => Target::Folder(self.root.id()),
            None => Target::Folder(
                self.root
                    .get_path(Path::new(&done.join("/")))
                    .map_err(|_| dangling(&first))?
                    .id(),
            ),
        };
        Ok((done, current))
    }
}
