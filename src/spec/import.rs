//! Reading what an `@import` of a memory file (`CLAUDE.md`) names, safely.
//!
//! An import is followed only to a regular file inside the repository, read with its size
//! bounded (the tree refuses links out of it, FIFOs and devices: see [`super::safe_fs`]).
//! Anything else is not an error of the memory file: Claude Code reads `@agents` (a
//! folder) or `@someone` (no such file) as plain text, so we do too, and say so with a
//! located warning when the text looked like a path, so a typo in an import is found.
//!
//! ```
//! use proto::spec::{MemTree, claude};
//! let mut tree = MemTree::new("t");
//! tree.insert("CLAUDE.md", "See @docs/missing.md and @agents.\n");
//! tree.insert("agents/a.md", "x");
//! let mut diags = Vec::new();
//! let memory = claude::load_memory("CLAUDE.md", "See @docs/missing.md and @agents.\n", &tree, &mut diags);
//! assert!(memory.imports.is_empty());
//! assert_eq!(diags.len(), 2); // both located warnings, neither an error
//! assert!(diags.iter().all(|d| !d.is_error() && d.pos.line == 1));
//! ```

use super::diag::{Diagnostic, Pos};
use super::tree::{FileTree, Refusal, TreeError};
use super::yaml::MAX_FILE_BYTES;

/// Distinct `@targets` looked up in one memory file; past them the text is just text.
pub const MAX_TARGETS_PER_FILE: usize = 10_000;

/// All the imports of one memory file together are read up to this many bytes.
pub const MAX_IMPORTED_BYTES: usize = 4 * MAX_FILE_BYTES;

/// Whether `target` reads as a file path rather than a mention: it has a folder or an
/// extension (`docs/style.md`, `README.md`), not `@ceo`.
fn looks_like_path(target: &str) -> bool {
    target.contains('/')
        || target.rsplit_once('.').is_some_and(|(stem, ext)| {
            !stem.is_empty()
                && (1..=5).contains(&ext.len())
                && ext.chars().all(char::is_alphanumeric)
        })
}

fn warning(file: &str, pos: Pos, target: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic::warning(file, pos, message).field(format!("@{target}"))
}

/// The warning for an import that resolves outside the repository (`@/etc/hosts`,
/// `@~/notes.md`, `@../../x.md`), if it looked like a path.
pub(super) fn outside(file: &str, pos: Pos, target: &str) -> Option<Diagnostic> {
    looks_like_path(target).then(|| {
        warning(
            file,
            pos,
            target,
            "names a file outside the repository; not followed (read as text)",
        )
    })
}

/// The text of the file `resolved` that `@target` (at `pos` in `file`) imports; or `None`,
/// with a warning in `diags` saying why it is read as text instead (none for a mention that
/// named no file). `already` is how many bytes the memory's imports hold so far.
pub(super) fn read(
    tree: &dyn FileTree,
    (file, pos, target): (&str, Pos, &str),
    resolved: &str,
    already: usize,
    diags: &mut Vec<Diagnostic>,
) -> Option<String> {
    let mut warn = |message: String| {
        diags.push(warning(file, pos, target, message));
        None
    };
    let size = match tree.size(resolved) {
        Ok(size) => size,
        Err(TreeError::NotFound(_)) if !looks_like_path(target) => return None,
        Err(TreeError::NotFound(_)) => {
            return warn("no such file in the repository; read as text".into());
        }
        Err(TreeError::Refused {
            why: Refusal::Folder,
            ..
        }) => return warn("names a folder, not a file; read as text".into()),
        // The refusal says what it is and that the file is not read.
        Err(e) => return warn(e.to_string()),
    };
    if size > MAX_FILE_BYTES as u64 {
        return warn(format!(
            "the file is {size} bytes, more than {MAX_FILE_BYTES}; not followed"
        ));
    }
    if already.saturating_add(usize::try_from(size).unwrap_or(usize::MAX)) > MAX_IMPORTED_BYTES {
        return warn(format!(
            "imports hold more than {MAX_IMPORTED_BYTES} bytes in all; not followed"
        ));
    }
    let bytes = match tree.read(resolved) {
        Ok(bytes) => bytes,
        Err(e) => return warn(format!("not followed: {e}")),
    };
    // The bound again, on what was actually read: a file may grow after its size was taken.
    if bytes.len() > MAX_FILE_BYTES {
        return warn(format!(
            "the file is larger than {MAX_FILE_BYTES} bytes; not followed"
        ));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Some(
            text.strip_prefix('\u{feff}')
                .map(str::to_owned)
                .unwrap_or(text),
        ),
        Err(_) => warn("the file is not UTF-8 text; not followed".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_mentions() {
        for path in ["docs/a.md", "README.md", "package.json", "a/b"] {
            assert!(looks_like_path(path), "{path}");
        }
        for mention in [
            "ceo",
            "agents",
            "team-lead",
            ".hidden",
            "v1.",
            "x.toolongext",
        ] {
            assert!(!looks_like_path(mention), "{mention}");
        }
    }
}
