//! A commit's tree as the loader reads it: the paths and blob ids of its files are listed up
//! front (git has them without reading any file), and a file's bytes are read only when the
//! loader asks. With [`crate::spec::Loader`] this makes a new revision cost what changed in
//! it, not the size of the company.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use git2::{ObjectType, Oid, Repository, Tree};

use super::SourceError;
use crate::spec::tree::{BlobId, CONTROLLER_DIRS, FileTree, TreeError};

/// The files of one commit's declaration folder, read on demand.
pub struct GitTree {
    /// Behind a lock because the loader reads from several threads and a `Repository`
    /// may be used by one at a time.
    repo: Mutex<Repository>,
    label: String,
    /// Every regular file by path, with its blob id.
    files: BTreeMap<String, Oid>,
}

impl GitTree {
    pub(super) fn new(repo: Repository, label: String, entries: Vec<(String, Oid)>) -> GitTree {
        GitTree {
            repo: Mutex::new(repo),
            label,
            files: entries.into_iter().collect(),
        }
    }

    fn oid(&self, path: &str) -> Result<Oid, TreeError> {
        self.files
            .get(path)
            .copied()
            .ok_or_else(|| TreeError::NotFound(path.to_owned()))
    }
}

impl FileTree for GitTree {
    fn files(&self) -> Result<Vec<String>, TreeError> {
        Ok(self.files.keys().cloned().collect())
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

/// Adds every file under `tree` to `out` with its blob id, `prefix`-relative, skipping what
/// the snapshot skips: submodules, symbolic links, and the controller's folders at the root.
pub(super) fn list(
    repo: &Repository,
    tree: &Tree<'_>,
    prefix: &str,
    out: &mut Vec<(String, Oid)>,
) -> Result<(), SourceError> {
    for entry in tree.iter() {
        let name = String::from_utf8_lossy(entry.name_bytes());
        let path = if prefix.is_empty() {
            name.into_owned()
        } else {
            format!("{prefix}/{name}")
        };
        match entry.kind() {
            Some(ObjectType::Tree) => {
                if prefix.is_empty() && CONTROLLER_DIRS.contains(&path.as_str()) {
                    continue;
                }
                let sub = repo.find_tree(entry.id())?;
                list(repo, &sub, &path, out)?;
            }
            Some(ObjectType::Blob) if entry.filemode() != i32::from(git2::FileMode::Link) => {
                out.push((path, entry.id()));
            }
            _ => {}
        }
    }
    Ok(())
}
