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
    #[error("{why}")]
    Refused { path: String, why: Refusal },
    #[error("{path}: {source}")]
    Git {
        path: String,
        #[source]
        source: git2::Error,
    },
}

/// Why a path of the tree was left out, or could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("symbolic link to \"{target}\" leaves the repository; not followed")]
    LeavesTree {
        target: String,
        /// Whether it names a folder (whose files may have been declarations).
        folder: bool,
    },
    #[error("symbolic link loop; not followed")]
    Loop,
    #[error("symbolic link to \"{target}\", which does not exist")]
    Dangling { target: String },
    #[error("symbolic links lead more than {0} folders deep; not followed")]
    TooDeep(usize),
    #[error("symbolic links lead to more than {0} entries; the rest is not listed")]
    TooMany(usize),
    #[error("not a regular file ({0}); not read")]
    NotRegular(&'static str),
    #[error("is a folder, not a file")]
    Folder,
    #[error("file name is not valid UTF-8; rename it")]
    NameNotUtf8,
    #[error("larger than {0} bytes; not read")]
    TooLarge(usize),
}

/// A path the tree left out of its files, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub path: String,
    pub why: Refusal,
}

impl Refused {
    /// How the loader reports it: an error where a declaration or a Claude Code file may
    /// have been lost (the company would load with less than it says), a warning for a
    /// folder elsewhere that could not be followed or a name that cannot be read, and
    /// nothing for links elsewhere in a working copy (`node_modules/.bin`, `.venv`), which
    /// were never Proto's to read.
    pub fn diagnostic(&self) -> Option<super::Diagnostic> {
        use super::Diagnostic;
        let path = self.path.as_str();
        let declaration = super::claude::role_of(path).is_some()
            || path.ends_with(".yaml")
            || path.ends_with(".yml")
            || path == ".claude"
            || path.starts_with(".claude/");
        let pos = super::Pos::default();
        let message = self.why.to_string();
        match &self.why {
            Refusal::Dangling { .. } => {
                declaration.then(|| Diagnostic::warning(path, pos, message))
            }
            _ if declaration => Some(Diagnostic::error(path, pos, message)),
            Refusal::LeavesTree { folder: true, .. }
            | Refusal::Loop
            | Refusal::TooDeep(_)
            | Refusal::TooMany(_)
            | Refusal::NameNotUtf8 => Some(Diagnostic::warning(path, pos, message)),
            _ => None,
        }
    }
}

/// What a tree holds: its files, and the paths it left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub files: Vec<String>,
    pub refused: Vec<Refused>,
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
    /// The files, with the paths left out and why (symbolic links that leave the tree,
    /// loops, special files); the loader reports those.
    fn listing(&self) -> Result<Listing, TreeError> {
        Ok(Listing {
            files: self.files()?,
            refused: Vec::new(),
        })
    }
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

pub(super) fn skipped_at_root(name: &str) -> bool {
    CONTROLLER_DIRS.contains(&name)
}

/// A directory on disk. Symbolic links are followed while they resolve inside the directory
/// (teams link `.claude/agents` or `CLAUDE.md` to a shared folder); links that leave it, loops
/// and special files (FIFOs, devices, sockets) are refused, and files are read with their
/// size bounded while reading (see [`super::safe_fs`]).
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
}

impl FileTree for DirTree {
    fn files(&self) -> Result<Vec<String>, TreeError> {
        Ok(self.listing()?.files)
    }

    fn listing(&self) -> Result<Listing, TreeError> {
        super::safe_fs::walk(&self.root)
    }

    fn size(&self, path: &str) -> Result<u64, TreeError> {
        super::safe_fs::size(&self.root, path)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, TreeError> {
        super::safe_fs::read(&self.root, path, super::yaml::MAX_FILE_BYTES)
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
    refused: Vec<Refused>,
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

    /// Records a path left out of the tree (a symbolic link that leaves it, say), for the
    /// loader to report.
    pub fn refuse(&mut self, path: impl Into<String>, why: Refusal) -> &mut Self {
        self.refused.push(Refused {
            path: path.into(),
            why,
        });
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

    fn listing(&self) -> Result<Listing, TreeError> {
        Ok(Listing {
            files: self.files()?,
            refused: self.refused.clone(),
        })
    }

    fn size(&self, path: &str) -> Result<u64, TreeError> {
        self.files
            .get(path)
            .map(|c| c.len() as u64)
            .ok_or_else(|| missing(&self.files, path))
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, TreeError> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| missing(&self.files, path))
    }

    fn label(&self) -> String {
        self.label.clone()
    }

    fn blob_id(&self, path: &str) -> Option<BlobId> {
        self.blob_ids.get(path).copied()
    }
}

/// Why `path` is not a file of a tree whose files are `files`: it is a folder of them, or
/// it is not there at all.
pub fn missing<V>(files: &BTreeMap<String, V>, path: &str) -> TreeError {
    let folder = format!("{}/", path.trim_end_matches('/'));
    let is_folder = files
        .range(folder.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&folder));
    if is_folder {
        TreeError::Refused {
            path: path.to_owned(),
            why: Refusal::Folder,
        }
    } else {
        TreeError::NotFound(path.to_owned())
    }
}
