//! A task's workspace: a directory holding a clone of the product repository. Every path an
//! action names is resolved here, and anything that would land outside (`..`, absolute
//! paths, symbolic links pointing out) is refused.

use std::path::{Path, PathBuf};

use super::ComputerError;

/// A workspace root and the computer-side rules for paths inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Workspace { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute path of `relative`, refusing any path that resolves outside the root
    /// (after following symbolic links of the parts that exist).
    pub fn resolve(&self, relative: &str) -> Result<PathBuf, ComputerError> {
        let _ = relative;
        todo!()
    }
}
