//! A task's workspace: a directory holding a clone of the product repository. Every path an
//! action names is resolved here, and anything that would land outside (`..`, absolute
//! paths, symbolic links pointing out) is refused.

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::ComputerError;

/// How many symbolic links a path may pass through before it is taken for a loop (Linux's
/// own limit).
const MAX_SYMLINKS: u32 = 40;

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
        let outside = || ComputerError::OutsideWorkspace {
            path: relative.to_string(),
        };
        // `~` would mean a home folder to a shell, never a folder of the workspace.
        if relative.is_empty() || relative.starts_with('~') || Path::new(relative).is_absolute() {
            return Err(outside());
        }
        let root = std::fs::canonicalize(&self.root).map_err(|source| ComputerError::Io {
            path: self.root.display().to_string(),
            source,
        })?;

        // Lexically first: `..` may not climb above the root, whatever the disk holds.
        let mut inside = PathBuf::new();
        for component in Path::new(relative).components() {
            match component {
                Component::Normal(part) => inside.push(part),
                Component::CurDir => {}
                Component::ParentDir => {
                    if !inside.pop() {
                        return Err(outside());
                    }
                }
                Component::RootDir | Component::Prefix(_) => return Err(outside()),
            }
        }
        let path = root.join(&inside);

        // Then physically: where the path lands once the links on its way are followed.
        let landing = physical(&path).map_err(|source| ComputerError::Io {
            path: relative.to_string(),
            source,
        })?;
        if landing.starts_with(&root) {
            Ok(path)
        } else {
            Err(outside())
        }
    }
}

/// Where `path` (absolute) lands on disk, resolved one part at a time as the kernel would:
/// symbolic links are followed (dangling ones too, since writing through a link creates its
/// target) and `..` steps back from where the links led. Parts that do not exist hold no
/// links, so they are taken as written.
fn physical(path: &Path) -> io::Result<PathBuf> {
    let mut landing = PathBuf::from("/");
    // Parts still to walk, the next one last.
    let mut pending: Vec<OsString> = Vec::new();
    push_parts(&mut pending, path);
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            landing.pop();
            continue;
        }
        let candidate = landing.join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::other("too many levels of symbolic links"));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    landing = PathBuf::from("/");
                }
                push_parts(&mut pending, &target);
            }
            Ok(_) => landing = candidate,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                landing = candidate;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(landing)
}

/// Pushes the parts of `path` so that its first part is popped next (`.` and `/` dropped).
fn push_parts(pending: &mut Vec<OsString>, path: &Path) {
    for component in path.components().rev() {
        match component {
            Component::Normal(part) => pending.push(part.to_os_string()),
            Component::ParentDir => pending.push(OsString::from("..")),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
}
