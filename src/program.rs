//! Programs the controller starts (`git`, `sh`), found on its `PATH` once. A `Command` given
//! an absolute path is started with `posix_spawn`, where the child shares the controller's
//! memory until it execs; one that must search a `PATH` set on the command itself (every
//! command here clears its environment and sets `PATH` again) falls back to `fork`, which
//! copies the controller's page tables for each git command and shell step — measured at
//! about a tenth of the controller's CPU in a 2,000-goal run.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};

/// The absolute path of `name` on the controller's `PATH`, or `name` itself when it is not
/// found there (the spawn then fails with the usual "not found").
pub fn program(name: &str) -> PathBuf {
    static FOUND: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let found = FOUND.get_or_init(Default::default);
    let mut found = found.lock().unwrap_or_else(PoisonError::into_inner);
    found
        .entry(name.to_string())
        .or_insert_with(|| search(name, std::env::var_os("PATH").as_deref()))
        .clone()
}

fn search(name: &str, path: Option<&OsStr>) -> PathBuf {
    path.into_iter()
        .flat_map(std::env::split_paths)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| PathBuf::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_the_path_or_left_as_named() {
        let sh = search(
            "sh",
            Some(OsStr::new("relative/bin:/nonexistent:/bin:/usr/bin")),
        );
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        assert_eq!(
            search("no-such-program-here", Some(OsStr::new("/bin"))),
            PathBuf::from("no-such-program-here")
        );
        assert_eq!(search("sh", None), PathBuf::from("sh"));
        assert!(program("git").is_absolute());
    }
}
