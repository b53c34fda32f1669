//! The file tree a company is loaded from: a working directory, a git commit's tree (see
//! `source::GitTree`), or an in-memory map for tests and benchmarks. The loader sees only this
//! trait, so it never cares where the bytes live. A tree that knows its files' content ids
//! (git blob ids) says so through [`FileTree::blob_id`], which lets
//! [`super::Loader`] skip the files that did not change since the last revision.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Folders at the top of a company repository that hold the controller's own records, never
/// desired state.
pub const CONTROLLER_DIRS: [&str; 2] = [".proto", "approvals"];

/// A failure to list or read the tree.
#[derive(Debug, Error)]
pub enum TreeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no such file in the tree")]
    NotFound(String),
    #[error("{path}: {source}")]
    Git {
        path: String,
        #[source]
        source: git2::Error,
    },
}

/// The id of a file's content: equal ids mean equal bytes. For git trees it is the blob id,
/// which git already knows without reading the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlobId(pub [u8; 20]);

impl BlobId {
    /// The git blob id of `content` (what `git hash-object` prints), for trees that hold bytes
    /// rather than git objects; `None` if hashing failed, and the file is then read each time.
    pub fn of(content: &[u8]) -> Option<BlobId> {
        git2::Oid::hash_object(git2::ObjectType::Blob, content)
            .ok()
            .and_then(|oid| BlobId::from_bytes(oid.as_bytes()))
    }

    /// From the 20 bytes of a git object id.
    pub fn from_bytes(bytes: &[u8]) -> Option<BlobId> {
        <[u8; 20]>::try_from(bytes).ok().map(BlobId)
    }
}

/// A read-only tree of files addressed by `/`-separated relative paths.
pub trait FileTree: Sync {
    /// Every regular file, sorted, excluding `.git/` and the controller's folders.
    fn files(&self) -> Result<Vec<String>, TreeError>;
    /// The size of a file in bytes, to refuse oversized files before reading them.
    fn size(&self, path: &str) -> Result<u64, TreeError>;
    fn read(&self, path: &str) -> Result<Vec<u8>, TreeError>;
    /// How the tree is named in messages (a directory, a commit).
    fn label(&self) -> String;
    /// The id of a file's content when the tree knows it without reading the file; `None`
    /// when it does not (a directory on disk), and the loader then reads the file every time.
    fn blob_id(&self, _path: &str) -> Option<BlobId> {
        None
    }
}

fn skipped_at_root(name: &str) -> bool {
    CONTROLLER_DIRS.contains(&name)
}

/// A directory on disk. Symbolic links are not followed, so a tree cannot point outside itself.
#[derive(Clone, Debug)]
pub struct DirTree {
    root: PathBuf,
}

impl DirTree {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirTree { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn walk(&self, dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), TreeError> {
        let io = |source| TreeError::Io {
            path: dir.to_path_buf(),
            source,
        };
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == ".git" || (rel.is_empty() && skipped_at_root(&name)) {
                continue;
            }
            let kind = entry.file_type().map_err(io)?;
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if kind.is_dir() {
                self.walk(&entry.path(), &child, out)?;
            } else if kind.is_file() {
                out.push(child);
            }
        }
        Ok(())
    }
}

impl FileTree for DirTree {
    fn files(&self) -> Result<Vec<String>, TreeError> {
        let mut out = Vec::new();
        self.walk(&self.root, "", &mut out)?;
        out.sort();
        Ok(out)
    }

    fn size(&self, path: &str) -> Result<u64, TreeError> {
        let full = self.root.join(path);
        std::fs::metadata(&full)
            .map(|m| m.len())
            .map_err(|source| TreeError::Io { path: full, source })
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, TreeError> {
        let full = self.root.join(path);
        std::fs::read(&full).map_err(|source| TreeError::Io { path: full, source })
    }

    fn label(&self) -> String {
        self.root.display().to_string()
    }
}

/// Files held in memory, optionally with their blob ids (see [`MemTree::with_blob_ids`]).
#[derive(Clone, Debug, Default)]
pub struct MemTree {
    files: BTreeMap<String, Vec<u8>>,
    label: String,
    /// Whether [`FileTree::blob_id`] answers; off by default, since hashing costs a pass
    /// over every byte and a one-shot load gains nothing from it.
    ids: bool,
    blob_ids: BTreeMap<String, BlobId>,
}

impl MemTree {
    pub fn new(label: impl Into<String>) -> Self {
        MemTree {
            label: label.into(),
            ..MemTree::default()
        }
    }

    /// A tree that knows the git blob id of every file, as a git commit's tree does, so an
    /// incremental [`super::Loader`] can skip unchanged files.
    pub fn with_blob_ids(mut self) -> Self {
        self.ids = true;
        self.blob_ids = self
            .files
            .iter()
            .filter_map(|(path, content)| Some((path.clone(), BlobId::of(content)?)))
            .collect();
        self
    }

    pub fn insert(&mut self, path: impl Into<String>, content: impl Into<Vec<u8>>) -> &mut Self {
        let (path, content) = (path.into(), content.into());
        if self.ids {
            match BlobId::of(&content) {
                Some(id) => self.blob_ids.insert(path.clone(), id),
                None => self.blob_ids.remove(&path),
            };
        }
        self.files.insert(path, content);
        self
    }

    /// Removes a file; `true` if it was there.
    pub fn remove(&mut self, path: &str) -> bool {
        self.blob_ids.remove(path);
        self.files.remove(path).is_some()
    }
}

impl FileTree for MemTree {
    fn files(&self) -> Result<Vec<String>, TreeError> {
        Ok(self
            .files
            .keys()
            .filter(|p| {
                let first = p.split('/').next().unwrap_or_default();
                !skipped_at_root(first) && !p.split('/').any(|part| part == ".git")
            })
            .cloned()
            .collect())
    }

    fn size(&self, path: &str) -> Result<u64, TreeError> {
        self.files
            .get(path)
            .map(|c| c.len() as u64)
            .ok_or_else(|| TreeError::NotFound(path.into()))
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, TreeError> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| TreeError::NotFound(path.into()))
    }

    fn label(&self) -> String {
        self.label.clone()
    }

    fn blob_id(&self, path: &str) -> Option<BlobId> {
        self.blob_ids.get(path).copied()
    }
}
