//! Workspace files of an SSH computer, over SFTP, under the rules [`Workspace`] enforces on
//! this host: a path that resolves outside the workspace (`..`, an absolute path, a
//! symbolic link pointing out) is refused, and so is a write into any `.git`. The paths
//! are the remote's: they are normalized with [`workspace::normalize`] and their links are
//! followed on the remote, one part at a time, as the remote's kernel would follow them.

use std::io;
use std::path::{Path, PathBuf};

use russh_sftp::client::SftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{OpenFlags, StatusCode};
use tokio::io::AsyncWriteExt;

use crate::computer::ComputerError;
use crate::computer::workspace::{self, Workspace};

/// How many symbolic links a path may pass through before it is taken for a loop.
const MAX_SYMLINKS: u32 = 40;

/// A remote workspace path, lexically and physically (see `Located` in `workspace`).
pub struct Located {
    /// The workspace root, links resolved.
    pub root: PathBuf,
    /// The path as written, normalized, relative to the root.
    pub inside: PathBuf,
    /// Where it lands, absolute, under `root`.
    pub landing: PathBuf,
}

impl Located {
    pub fn path(&self) -> PathBuf {
        self.root.join(&self.inside)
    }
}

/// Where `relative` is in the remote `workspace`, refused when it is outside the root
/// lexically or physically; `writing` also refuses a path in or through a `.git`.
pub async fn locate(
    sftp: &SftpSession,
    workspace: &Workspace,
    relative: &str,
    writing: bool,
) -> Result<Located, ComputerError> {
    let outside = || ComputerError::OutsideWorkspace {
        path: relative.to_string(),
    };
    if relative.is_empty() || relative.starts_with('~') {
        return Err(outside());
    }
    let root_text = text(workspace.root());
    let root = PathBuf::from(
        sftp.canonicalize(root_text.clone())
            .await
            .map_err(|e| io_error(&root_text, e))?,
    );
    let inside = workspace::normalize(relative).ok_or_else(outside)?;
    let landing = physical(sftp, &root.join(&inside))
        .await
        .map_err(|e| io_error(relative, e))?;
    if !landing.starts_with(&root) {
        return Err(outside());
    }
    if writing {
        let landed = landing.strip_prefix(&root).ok();
        if workspace::in_git_dir(&inside) || landed.is_some_and(workspace::in_git_dir) {
            return Err(ComputerError::GitDir {
                path: relative.to_string(),
            });
        }
    }
    Ok(Located {
        root,
        inside,
        landing,
    })
}

/// Where the remote `path` (absolute) lands once the links on its way are followed, part by
/// part (dangling links too: writing through one creates its target); parts that do not
/// exist are taken as written.
async fn physical(sftp: &SftpSession, path: &Path) -> Result<PathBuf, SftpError> {
    let mut landing = PathBuf::from("/");
    let mut pending: Vec<String> = Vec::new();
    push_parts(&mut pending, path);
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            landing.pop();
            continue;
        }
        let candidate = landing.join(&part);
        match sftp.symlink_metadata(text(&candidate)).await {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(SftpError::UnexpectedBehavior(
                        "too many levels of symbolic links".into(),
                    ));
                }
                let target = PathBuf::from(sftp.read_link(text(&candidate)).await?);
                if target.is_absolute() {
                    landing = PathBuf::from("/");
                }
                push_parts(&mut pending, &target);
            }
            Ok(_) => landing = candidate,
            Err(e) if not_found(&e) => landing = candidate,
            Err(e) => return Err(e),
        }
    }
    Ok(landing)
}

/// Pushes the parts of `path` so that its first part is popped next.
fn push_parts(pending: &mut Vec<String>, path: &Path) {
    for component in path.components().rev() {
        match component {
            std::path::Component::Normal(part) => {
                pending.push(part.to_string_lossy().into_owned());
            }
            std::path::Component::ParentDir => pending.push("..".into()),
            _ => {}
        }
    }
}

/// The content of a remote file; `None` when it does not exist.
pub async fn read(sftp: &SftpSession, path: &Path) -> Result<Option<Vec<u8>>, SftpError> {
    match sftp.read(text(path)).await {
        Ok(content) => Ok(Some(content)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes a remote file (created or truncated), creating the folders between `root` and it.
pub async fn write(
    sftp: &SftpSession,
    root: &Path,
    path: &Path,
    content: &[u8],
) -> Result<(), SftpError> {
    if let Some(parent) = path.parent()
        && let Ok(between) = parent.strip_prefix(root)
    {
        let mut folder = root.to_path_buf();
        for part in between.components() {
            folder.push(part);
            match sftp.symlink_metadata(text(&folder)).await {
                Ok(_) => {}
                Err(e) if not_found(&e) => sftp.create_dir(text(&folder)).await?,
                Err(e) => return Err(e),
            }
        }
    }
    let mut file = sftp
        .open_with_flags(
            text(path),
            OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
        )
        .await?;
    file.write_all(content).await?;
    file.shutdown().await?;
    Ok(())
}

/// The files under `start` (recursively; links not followed), relative to `root`, in name
/// order; empty when `start` does not exist.
pub async fn list(sftp: &SftpSession, root: &Path, start: &Path) -> Result<Vec<String>, SftpError> {
    let mut files = Vec::new();
    let mut pending = vec![start.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = match sftp.read_dir(text(&folder)).await {
            Ok(entries) => entries,
            Err(e) if not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let name = entry.file_name();
            if name == "." || name == ".." {
                continue;
            }
            let kind = entry.file_type();
            let path = folder.join(&name);
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file()
                && let Ok(relative) = path.strip_prefix(root)
            {
                files.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    Ok(files)
}

pub fn not_found(e: &SftpError) -> bool {
    matches!(e, SftpError::Status(status) if status.status_code == StatusCode::NoSuchFile)
}

/// An SFTP failure as the I/O error of `path` that [`ComputerError::Io`] carries.
pub fn io_error(path: &str, e: SftpError) -> ComputerError {
    let kind = match &e {
        SftpError::Status(status) => match status.status_code {
            StatusCode::NoSuchFile => io::ErrorKind::NotFound,
            StatusCode::PermissionDenied => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::Other,
        },
        SftpError::Timeout => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::Other,
    };
    ComputerError::Io {
        path: path.to_string(),
        source: io::Error::new(kind, e.to_string()),
    }
}

/// A remote path as SFTP takes it.
pub fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
