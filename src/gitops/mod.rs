//! Git as the record. [`Writeback`] commits the controller's records (`.proto/planning`,
//! `.proto/audit`, `.proto/status.yaml`) to the company repository, one commit per finished
//! task, authored as the Company's `writeback.author`, and pushes them: a rejected push is
//! fetched, rebased and retried, never forced. [`workspace`] does the product side: clone a
//! product repository into a task workspace, commit the work, push the branch.

pub mod workspace;

use std::path::PathBuf;

use thiserror::Error;

use crate::source::GitSource;

#[derive(Debug, Error)]
pub enum GitopsError {
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error(
        "{path} has uncommitted changes in the controller's files ({files}); commit or discard them, the controller will not overwrite them"
    )]
    DirtyControllerFiles { path: PathBuf, files: String },
    #[error("push to {remote} rejected {attempts} times; giving up for now: {message}")]
    PushRejected {
        remote: String,
        attempts: u32,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A git identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

/// One change to a file of the declaration folder (a path such as `.proto/status.yaml`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileChange {
    /// Replace the file's content.
    Write { path: String, content: Vec<u8> },
    /// Append to the file (creating it): re-applied on top of the remote's version when a
    /// push has to be rebased, so concurrent appends are never lost.
    Append { path: String, content: Vec<u8> },
}

/// Commits to the company repository the source reads from.
pub struct Writeback {
    _source_path: PathBuf,
}

impl Writeback {
    /// Writes to `source`'s repository on `branch` (default: the source's branch), inside
    /// the source's sub-folder. `push` is the Company's `writeback.push`: whether to push
    /// when the source is a remote.
    pub fn new(
        source: &GitSource,
        branch: Option<&str>,
        author: Identity,
        push: bool,
    ) -> Result<Writeback, GitopsError> {
        let _ = (source, branch, author, push);
        todo!()
    }

    /// One commit with `changes` and `message`; `Ok(None)` when the changes change nothing.
    /// For a local repository with a working tree, the branch moves as `git pull` would move
    /// it and the working tree's controller files are brought up to date; if the user has
    /// uncommitted changes to those files, nothing is written and
    /// [`GitopsError::DirtyControllerFiles`] says so.
    pub fn commit(
        &self,
        changes: &[FileChange],
        message: &str,
    ) -> Result<Option<String>, GitopsError> {
        let _ = (changes, message);
        todo!()
    }

    /// A file of the declaration folder at the branch head, if it exists.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, GitopsError> {
        let _ = path;
        todo!()
    }
}
