//! The git source: where the declaration comes from. A local repository (bare or not) or a
//! remote URL (`file://`, `git://`, `https://`, `ssh://`) fetched into a cache. Declarations
//! are read from the committed tree of the tracked branch (optionally a sub-folder, as
//! Flux's `spec.path`), never from a working directory. Changes are noticed by `notify` for
//! local repositories and by polling for remotes; the engine also takes triggers from
//! webhooks.

pub mod watch;

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::spec::MemTree;

#[derive(Debug, Error)]
pub enum SourceError {
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("{0}: not a git repository, and not a URL")]
    NotARepository(String),
    #[error("branch {branch} not found in {source_label}")]
    NoBranch {
        branch: String,
        source_label: String,
    },
    #[error("{path}: no such folder at revision {revision}")]
    NoPath { path: String, revision: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("watch: {0}")]
    Watch(String),
}

/// A declaration source backed by git.
pub struct GitSource {
    label: String,
}

impl GitSource {
    /// Opens `location`: a path to a repository (bare or with a working tree), or a URL,
    /// which is cloned (bare) into `cache_dir` on first use. `branch` defaults to the
    /// repository's HEAD branch; `subpath` selects the folder holding the declaration.
    pub fn open(
        location: &str,
        branch: Option<&str>,
        subpath: Option<&str>,
        cache_dir: &Path,
    ) -> Result<GitSource, SourceError> {
        let _ = (location, branch, subpath, cache_dir);
        todo!()
    }

    /// A name for messages: the path or URL, and the branch.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The tracked branch.
    pub fn branch(&self) -> &str {
        todo!()
    }

    /// The selected sub-folder ("" for the repository root).
    pub fn subpath(&self) -> &str {
        todo!()
    }

    /// Whether the source is a remote (fetched and polled) rather than a local repository.
    pub fn is_remote(&self) -> bool {
        todo!()
    }

    /// For a remote: fetch the tracked branch into the cache. For a local repository:
    /// nothing (it is read directly).
    pub fn fetch(&self) -> Result<(), SourceError> {
        todo!()
    }

    /// The commit id at the tip of the tracked branch.
    pub fn head(&self) -> Result<String, SourceError> {
        todo!()
    }

    /// The files of the sub-folder at `revision`, as a tree the loader reads. The
    /// controller's folders (`.proto/`, `approvals/`) are left out.
    pub fn snapshot(&self, revision: &str) -> Result<MemTree, SourceError> {
        let _ = revision;
        todo!()
    }

    /// Whether every path changed between the two commits lies in the controller's own
    /// folders (`.proto/`, `approvals/` of the sub-folder) or outside the sub-folder: such
    /// commits need no reconcile of the desired state.
    pub fn only_controller_changes(&self, from: &str, to: &str) -> Result<bool, SourceError> {
        let _ = (from, to);
        todo!()
    }

    /// Resolves a product repository URL as written in a Product (a path relative to the
    /// company repository, or a URL) to something `git clone` takes: an absolute path for
    /// a local company repository, a URL resolved against the remote's URL otherwise.
    pub fn resolve_repo(&self, url: &str) -> String {
        let _ = url;
        todo!()
    }

    /// The local repository (or the cache clone of a remote): what writeback commits to.
    pub fn repository_path(&self) -> &Path {
        todo!()
    }
}
