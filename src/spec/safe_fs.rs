//! Reading a company from a directory on disk without leaving it, hanging or exhausting
//! memory, whatever the directory holds.
//!
//! Symbolic links are followed while they resolve inside the directory, because teams link
//! `.claude/agents`, `skills`, `rules` or `CLAUDE.md` to a shared folder and Claude Code
//! follows them. Everything else a link or a name can do is refused with a reason
//! ([`Refusal`]) for the loader to report at the path: a link out of the directory (an
//! import of `/etc/passwd` or `/dev/zero`), a loop, a FIFO that would block a read forever,
//! a device, a name that is not UTF-8. Files are read through a bounded reader, so a file
//! that grows, or a device that never ends, costs at most the size limit plus one byte.
//!
//! ```no_run
//! use proto::spec::{DirTree, FileTree};
//! let tree = DirTree::new("company");
//! let listing = tree.listing()?;            // files, and what was refused and why
//! let bytes = tree.read(".claude/agents/qa.md")?; // through a link inside, bounded
//! # Ok::<(), proto::spec::TreeError>(())
//! ```

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use super::tree::{Listing, Refusal, Refused, TreeError, skipped_at_root};

/// How many linked folders one path may pass through: deeper chains are refused, which
/// also stops a few links to each other's parents from listing a tree exponentially.
pub const MAX_LINK_DEPTH: usize = 8;

/// How many entries may be listed beneath linked folders in all; the rest is refused.
pub const MAX_LINKED_ENTRIES: usize = 100_000;

fn io_error(path: &Path) -> impl Fn(io::Error) -> TreeError + '_ {
    move |source| TreeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_loop(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32)
}

/// What a special file is, for the message refusing it.
fn special_kind(kind: fs::FileType) -> &'static str {
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

/// Every regular file under `root`, following links that stay inside it, with what was
/// refused; `.git/` and the controller's folders at the root are left out.
pub fn walk(root: &Path) -> Result<Listing, TreeError> {
    let real_root = fs::canonicalize(root).map_err(io_error(root))?;
    let mut walker = Walker {
        root: real_root.clone(),
        listing: Listing::default(),
        linked_entries: 0,
    };
    let mut ancestors = vec![real_root.clone()];
    walker.dir(&real_root, "", &mut ancestors, 0)?;
    let mut listing = walker.listing;
    listing.files.sort();
    listing.refused.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(listing)
}

struct Walker {
    /// The directory's real path: every followed link must resolve beneath it.
    root: PathBuf,
    listing: Listing,
    linked_entries: usize,
}

impl Walker {
    fn refuse(&mut self, path: String, why: Refusal) {
        self.listing.refused.push(Refused { path, why });
    }

    /// Lists `real` (a real path, no links in it) as `rel`. `ancestors` are the real paths
    /// of the folders above, so a link back to one of them is a loop; `links` counts the
    /// linked folders passed through to get here.
    fn dir(
        &mut self,
        real: &Path,
        rel: &str,
        ancestors: &mut Vec<PathBuf>,
        links: usize,
    ) -> Result<(), TreeError> {
        let io = io_error(real);
        for entry in fs::read_dir(real).map_err(&io)? {
            let entry = entry.map_err(&io)?;
            let os_name = entry.file_name();
            let shown = super::echo::name_from_bytes(os_name.as_bytes());
            let child = match rel {
                "" => shown,
                _ => format!("{rel}/{shown}"),
            };
            let Some(name) = os_name.to_str() else {
                self.refuse(child, Refusal::NameNotUtf8);
                continue;
            };
            if name == ".git" || (rel.is_empty() && skipped_at_root(name)) {
                continue;
            }
            if links > 0 {
                self.linked_entries += 1;
                if self.linked_entries > MAX_LINKED_ENTRIES {
                    self.refuse(child, Refusal::TooMany(MAX_LINKED_ENTRIES));
                    return Ok(());
                }
            }
            let kind = entry.file_type().map_err(&io)?;
            let path = real.join(name);
            if kind.is_symlink() {
                self.link(&path, child, ancestors, links)?;
            } else if kind.is_dir() {
                ancestors.push(path.clone());
                self.dir(&path, &child, ancestors, links)?;
                ancestors.pop();
            } else if kind.is_file() {
                self.listing.files.push(child);
            } else {
                self.refuse(child, Refusal::NotRegular(special_kind(kind)));
            }
        }
        Ok(())
    }

    /// A symbolic link at `path`, listed as `rel`.
    fn link(
        &mut self,
        path: &Path,
        rel: String,
        ancestors: &mut Vec<PathBuf>,
        links: usize,
    ) -> Result<(), TreeError> {
        let written = fs::read_link(path)
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = match fs::canonicalize(path) {
            Ok(target) => target,
            Err(e) if is_loop(&e) => {
                self.refuse(rel, Refusal::Loop);
                return Ok(());
            }
            Err(_) => {
                self.refuse(rel, Refusal::Dangling { target: written });
                return Ok(());
            }
        };
        let meta = fs::metadata(&target).map_err(io_error(&target))?;
        if !target.starts_with(&self.root) {
            let folder = meta.is_dir();
            self.refuse(
                rel,
                Refusal::LeavesTree {
                    target: written,
                    folder,
                },
            );
        } else if meta.is_dir() {
            if ancestors.contains(&target) {
                self.refuse(rel, Refusal::Loop);
            } else if links >= MAX_LINK_DEPTH {
                self.refuse(rel, Refusal::TooDeep(MAX_LINK_DEPTH));
            } else {
                ancestors.push(target.clone());
                self.dir(&target, &rel, ancestors, links + 1)?;
                ancestors.pop();
            }
        } else if meta.is_file() {
            self.listing.files.push(rel);
        } else {
            self.refuse(rel, Refusal::NotRegular(special_kind(meta.file_type())));
        }
        Ok(())
    }
}

/// The real path of the regular file at `path` under `root` and its size, or why it may not
/// be read: it leaves `root` through a link, is a folder or a special file, loops.
fn resolve(root: &Path, path: &str) -> Result<(PathBuf, u64), TreeError> {
    let refused = |why| TreeError::Refused {
        path: path.to_owned(),
        why,
    };
    // Paths come from the listing or from an import resolved against it: plain relative ones.
    if Path::new(path)
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(TreeError::NotFound(path.to_owned()));
    }
    let real_root = fs::canonicalize(root).map_err(io_error(root))?;
    let full = root.join(path);
    let real = match fs::canonicalize(&full) {
        Ok(real) => real,
        Err(e) if is_loop(&e) => return Err(refused(Refusal::Loop)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(TreeError::NotFound(path.to_owned()));
        }
        Err(source) => return Err(TreeError::Io { path: full, source }),
    };
    let meta = fs::metadata(&real).map_err(io_error(&real))?;
    if !real.starts_with(&real_root) {
        let target = fs::read_link(&full).unwrap_or_else(|_| real.clone());
        return Err(refused(Refusal::LeavesTree {
            target: target.to_string_lossy().into_owned(),
            folder: meta.is_dir(),
        }));
    }
    if meta.is_dir() {
        return Err(refused(Refusal::Folder));
    }
    if !meta.is_file() {
        return Err(refused(Refusal::NotRegular(special_kind(meta.file_type()))));
    }
    Ok((real, meta.len()))
}

/// The size of the regular file at `path` under `root` (see [`read`] for what is refused).
pub fn size(root: &Path, path: &str) -> Result<u64, TreeError> {
    resolve(root, path).map(|(_, size)| size)
}

/// The bytes of the regular file at `path` under `root`, at most `limit` of them: a longer
/// file is refused after reading `limit + 1` bytes, never read whole.
pub fn read(root: &Path, path: &str, limit: usize) -> Result<Vec<u8>, TreeError> {
    let (real, size) = resolve(root, path)?;
    let io = io_error(&real);
    // Non-blocking, so that a FIFO swapped in after the check above cannot block the open.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(&real)
        .map_err(&io)?;
    let meta = file.metadata().map_err(&io)?;
    if !meta.is_file() {
        return Err(TreeError::Refused {
            path: path.to_owned(),
            why: Refusal::NotRegular(special_kind(meta.file_type())),
        });
    }
    let cap = usize::try_from(size).unwrap_or(limit).min(limit) + 1;
    let mut bytes = Vec::with_capacity(cap);
    let bound = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    file.take(bound).read_to_end(&mut bytes).map_err(&io)?;
    if bytes.len() > limit {
        return Err(TreeError::Refused {
            path: path.to_owned(),
            why: Refusal::TooLarge(limit),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dir.path();
        for (path, text) in [
            ("shared/agents/qa.md", "qa"),
            ("shared/CLAUDE.md", "memory"),
            ("company.yaml", "x"),
        ] {
            let full = root.join(path);
            fs::create_dir_all(full.parent().unwrap_or(root)).unwrap_or_else(|e| panic!("{e}"));
            fs::write(full, text).unwrap_or_else(|e| panic!("{e}"));
        }
        fs::create_dir_all(root.join(".claude")).unwrap_or_else(|e| panic!("{e}"));
        symlink("../shared/agents", root.join(".claude/agents")).unwrap_or_else(|e| panic!("{e}"));
        symlink("shared/CLAUDE.md", root.join("CLAUDE.md")).unwrap_or_else(|e| panic!("{e}"));
        dir
    }

    #[test]
    fn links_inside_are_followed() {
        let dir = tree();
        let listing = walk(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(listing.files.contains(&".claude/agents/qa.md".to_string()));
        assert!(listing.files.contains(&"CLAUDE.md".to_string()));
        assert!(listing.refused.is_empty(), "{:?}", listing.refused);
        let bytes = read(dir.path(), ".claude/agents/qa.md", 100);
        assert_eq!(bytes.ok(), Some(b"qa".to_vec()));
    }

    #[test]
    fn links_out_loops_and_special_files_are_refused() {
        let dir = tree();
        let root = dir.path();
        symlink("/etc", root.join(".claude/rules")).unwrap_or_else(|e| panic!("{e}"));
        symlink("/dev/zero", root.join("zero.md")).unwrap_or_else(|e| panic!("{e}"));
        symlink("..", root.join("shared/up")).unwrap_or_else(|e| panic!("{e}"));
        symlink("self", root.join("self")).unwrap_or_else(|e| panic!("{e}"));
        nix::unistd::mkfifo(&root.join("fifo.yaml"), nix::sys::stat::Mode::S_IRWXU).ok();
        let listing = walk(root).unwrap_or_else(|e| panic!("{e}"));
        let why = |path: &str| {
            listing
                .refused
                .iter()
                .find(|r| r.path == path)
                .map(|r| r.why.clone())
        };
        assert!(matches!(
            why(".claude/rules"),
            Some(Refusal::LeavesTree { folder: true, .. })
        ));
        assert!(matches!(
            why("zero.md"),
            Some(Refusal::LeavesTree { folder: false, .. })
        ));
        assert_eq!(why("shared/up"), Some(Refusal::Loop));
        assert_eq!(why("self"), Some(Refusal::Loop));
        assert_eq!(why("fifo.yaml"), Some(Refusal::NotRegular("a FIFO")));
        assert!(matches!(
            read(root, "zero.md", 100),
            Err(TreeError::Refused { .. })
        ));
        assert!(matches!(
            read(root, "fifo.yaml", 100),
            Err(TreeError::Refused { .. })
        ));
        assert!(matches!(
            read(root, "shared", 100),
            Err(TreeError::Refused {
                why: Refusal::Folder,
                ..
            })
        ));
        assert!(matches!(
            read(root, "company.yaml", 0),
            Err(TreeError::Refused {
                why: Refusal::TooLarge(0),
                ..
            })
        ));
    }
}
