//! Crash safety of a record commit to a checked-out branch.
//!
//! A record commit to the branch a person has checked out moves the branch, then brings the
//! working tree's files and the index up to the new commit. A controller killed between the
//! two leaves the checkout behind its own branch, which looks to git exactly like a person's
//! uncommitted edit: every later record commit is refused as dirty and `git merge` (an
//! approval) refuses to run. So before the branch moves, the move is noted in the
//! repository's git directory ([`note`]), and [`catch_up`] — run after every move and
//! before every commit or merge into the checkout — finishes the files of the noted move.
//! Only files that still hold the version before or after the move are touched: anything
//! else is a person's edit, left for [`super::Writeback`] to refuse and for them to resolve.

use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository};

use super::GitopsError;

/// The note's file in the repository's git directory: `<old> <new>\n`, `-` for no old commit.
const NOTE: &str = "proto-writeback-move";

fn note_path(repo: &Repository) -> PathBuf {
    repo.path().join(NOTE)
}

/// Notes that the checked-out branch is about to move from `old` to `new`. Written whole
/// (a temporary file renamed over the note), so a reader never sees half of it.
pub(crate) fn note(repo: &Repository, old: Option<Oid>, new: Oid) -> std::io::Result<()> {
    let path = note_path(repo);
    let partial = path.with_extension("partial");
    let old = old.map_or_else(|| "-".to_string(), |id| id.to_string());
    std::fs::write(&partial, format!("{old} {new}\n"))?;
    std::fs::rename(&partial, &path)
}

/// The noted move, if one is pending and readable. An unreadable note (not written by this
/// version, or damaged) is dropped: it can only ever make files catch up, never hold them.
fn noted(repo: &Repository) -> Option<(Option<Oid>, Oid)> {
    let text = std::fs::read_to_string(note_path(repo)).ok()?;
    let mut words = text.split_whitespace();
    let old = match words.next()? {
        "-" => None,
        id => Some(Oid::from_str(id).ok()?),
    };
    let new = Oid::from_str(words.next()?).ok()?;
    Some((old, new))
}

/// Brings the working tree and index of `repo`'s checkout up to the last noted branch move
/// for every file that move changed and that still holds its version from before or after
/// it, then drops the note. Answers the files it wrote. A bare repository, or one with no
/// note, is left as it is.
pub fn catch_up(repo: &Repository) -> Result<Vec<String>, GitopsError> {
    let path = note_path(repo);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let Some(workdir) = repo.workdir().map(Path::to_path_buf) else {
        drop_note(&path)?;
        return Ok(Vec::new());
    };
    let written = match noted(repo) {
        Some((old, new)) => bring_up(repo, &workdir, old, new)?,
        None => Vec::new(),
    };
    super::stage(&workdir, &written)?;
    drop_note(&path)?;
    if !written.is_empty() {
        tracing::info!(
            repository = %workdir.display(),
            files = written.len(),
            "brought the checkout up to the controller's last record commit"
        );
    }
    Ok(written)
}

fn drop_note(path: &Path) -> Result<(), GitopsError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(GitopsError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes, for each file the move `old` → `new` changed, the version `new` holds, where
/// HEAD still holds it too and the file and its index entry each hold the old or the new
/// version. Answers the paths written (to be staged).
fn bring_up(
    repo: &Repository,
    workdir: &Path,
    old: Option<Oid>,
    new: Oid,
) -> Result<Vec<String>, GitopsError> {
    let Ok(head) = repo.head().and_then(|h| h.peel_to_tree()) else {
        return Ok(Vec::new());
    };
    let new_tree = match repo.find_commit(new) {
        Ok(commit) => commit.tree()?,
        // The move's commit is gone (the note outlived a gc): nothing to finish.
        Err(_) => return Ok(Vec::new()),
    };
    let old_tree = match old.map(|id| repo.find_commit(id)) {
        Some(Ok(commit)) => Some(commit.tree()?),
        Some(Err(_)) => return Ok(Vec::new()),
        None => None,
    };
    let mut index = repo.index()?;
    index.read(false)?;
    let diff = repo.diff_tree_to_tree(old_tree.as_ref(), Some(&new_tree), None)?;
    let mut written = Vec::new();
    for delta in diff.deltas() {
        let Some(file) = delta.new_file().path().or(delta.old_file().path()) else {
            continue;
        };
        let Some(name) = file.to_str() else { continue };
        let (before, after) = (delta.old_file().id(), delta.new_file().id());
        let at_head = head.get_path(file).map_or(Oid::ZERO_SHA1, |e| e.id());
        if at_head != after {
            // The branch moved on past this file's version: not the noted move's to finish.
            continue;
        }
        let staged = index.get_path(file, 0).map_or(Oid::ZERO_SHA1, |e| e.id);
        let on_disk = on_disk(&workdir.join(file))?;
        let known = |id: Oid| id == before || id == after;
        if !known(staged) || !known(on_disk) || (staged == after && on_disk == after) {
            continue;
        }
        put(repo, workdir, file, after, delta.new_file().mode())?;
        written.push(name.to_owned());
    }
    Ok(written)
}

/// The blob id of the file at `path`, or zero when there is none.
fn on_disk(path: &Path) -> Result<Oid, GitopsError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => Ok(Oid::hash_file(ObjectType::Blob, path)?),
        // A directory or link where a record file belongs is no version the move knows.
        Ok(_) => Ok(Oid::from_bytes(&[0xff; 20])?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Oid::ZERO_SHA1),
        Err(source) => Err(GitopsError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes blob `id` to `file` of the checkout (removes the file for the zero id).
fn put(
    repo: &Repository,
    workdir: &Path,
    file: &Path,
    id: Oid,
    mode: git2::FileMode,
) -> Result<(), GitopsError> {
    let target = workdir.join(file);
    let io = |source| GitopsError::Io {
        path: target.clone(),
        source,
    };
    if id.is_zero() {
        return match std::fs::remove_file(&target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        };
    }
    let blob = repo.find_blob(id)?;
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    std::fs::write(&target, blob.content()).map_err(io)?;
    #[cfg(unix)]
    if mode == git2::FileMode::BlobExecutable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::test_git::{git, write};
    use crate::gitops::{FileChange, GitopsError, Identity, Writeback};
    use crate::source::GitSource;

    /// A checkout on `main` whose branch the controller moved (a new status and a new audit
    /// file) and which was killed before touching the files: answers the checkout.
    fn killed_after_the_move(dir: &Path, noted: bool) -> PathBuf {
        let repo_dir = dir.join("company");
        std::fs::create_dir_all(&repo_dir).unwrap();
        git(&repo_dir, &["init", "-q", "-b", "main"]);
        write(&repo_dir, "company.yaml", "kind: Company\n");
        write(&repo_dir, ".proto/status.yaml", "status: old\n");
        git(&repo_dir, &["add", "-A"]);
        git(&repo_dir, &["commit", "-q", "-m", "seed"]);
        let repo = Repository::open(&repo_dir).unwrap();
        let old = repo.head().unwrap().peel_to_commit().unwrap();
        let mut index = git2::Index::new().unwrap();
        index.read_tree(&old.tree().unwrap()).unwrap();
        for (path, text) in [
            (".proto/status.yaml", "status: new\n"),
            (".proto/audit/today.jsonl", "{}\n"),
        ] {
            let id = repo.blob(text.as_bytes()).unwrap();
            let mut entry = index.get_path(Path::new(".proto/status.yaml"), 0).unwrap();
            entry.id = id;
            entry.path = path.as_bytes().to_vec();
            entry.file_size = text.len() as u32;
            index.add(&entry).unwrap();
        }
        let tree = repo.find_tree(index.write_tree_to(&repo).unwrap()).unwrap();
        let who = git2::Signature::now("Proto", "proto@example.com").unwrap();
        let new = repo
            .commit(None, &who, &who, "proto: record", &tree, &[&old])
            .unwrap();
        if noted {
            note(&repo, Some(old.id()), new).unwrap();
        }
        repo.reference("refs/heads/main", new, true, "moved")
            .unwrap();
        repo_dir
    }

    #[test]
    fn a_checkout_left_behind_by_a_killed_record_commit_is_brought_up_to_its_branch() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = killed_after_the_move(tmp.path(), true);
        assert_ne!(
            git(&dir, &["status", "--porcelain"]),
            "",
            "behind its branch"
        );
        let repo = Repository::open(&dir).unwrap();
        let mut written = catch_up(&repo).unwrap();
        written.sort();
        assert_eq!(
            written,
            [".proto/audit/today.jsonl", ".proto/status.yaml"],
            "the move's files"
        );
        assert_eq!(git(&dir, &["status", "--porcelain"]), "");
        assert_eq!(
            std::fs::read_to_string(dir.join(".proto/status.yaml")).unwrap(),
            "status: new\n"
        );
        assert!(!repo.path().join(NOTE).exists(), "the note is dropped");
        // Nothing is pending any more: a second call writes nothing.
        assert!(catch_up(&repo).unwrap().is_empty());
    }

    #[test]
    fn a_file_written_but_not_staged_is_finished_and_a_persons_edit_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = killed_after_the_move(tmp.path(), true);
        // Killed after writing the audit file, before staging it; someone edited the status.
        write(&dir, ".proto/audit/today.jsonl", "{}\n");
        write(&dir, ".proto/status.yaml", "status: a person's\n");
        let repo = Repository::open(&dir).unwrap();
        assert_eq!(catch_up(&repo).unwrap(), [".proto/audit/today.jsonl"]);
        assert_eq!(
            std::fs::read_to_string(dir.join(".proto/status.yaml")).unwrap(),
            "status: a person's\n"
        );
        // Their file, and the index entry beside it, are theirs to resolve.
        assert_eq!(
            git(&dir, &["status", "--porcelain"]),
            "MM .proto/status.yaml"
        );
    }

    #[test]
    fn a_note_whose_move_never_happened_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = killed_after_the_move(tmp.path(), true);
        // The branch is put back where it was: the process died before moving it.
        git(&dir, &["update-ref", "refs/heads/main", "HEAD~1"]);
        assert_eq!(git(&dir, &["status", "--porcelain"]), "");
        let repo = Repository::open(&dir).unwrap();
        assert!(catch_up(&repo).unwrap().is_empty());
        assert_eq!(git(&dir, &["status", "--porcelain"]), "");
        assert!(!repo.path().join(NOTE).exists());
    }

    /// Appends `line` to the audit file of the checkout `dir` through a record commit.
    fn record(dir: &Path, cache: &Path, line: &str) -> Result<Option<String>, GitopsError> {
        let source = GitSource::open(dir.to_str().unwrap(), None, None, cache).unwrap();
        let who = Identity {
            name: "Proto".into(),
            email: "proto@example.com".into(),
        };
        let writeback = Writeback::new(&source, None, who, false).unwrap();
        let change = FileChange::Append {
            path: ".proto/audit/today.jsonl".into(),
            content: line.as_bytes().to_vec(),
        };
        writeback.commit(&[change], "proto: more")
    }

    #[test]
    fn the_next_record_commit_after_a_kill_lands_instead_of_finding_the_checkout_dirty() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = killed_after_the_move(tmp.path(), true);
        record(&dir, &tmp.path().join("c"), "{\"more\": 1}\n")
            .unwrap()
            .unwrap();
        assert_eq!(git(&dir, &["status", "--porcelain"]), "");
        assert_eq!(
            std::fs::read_to_string(dir.join(".proto/audit/today.jsonl")).unwrap(),
            "{}\n{\"more\": 1}\n"
        );
        // Without a note the same state is a person's edit, and is refused as before.
        let tmp = tempfile::tempdir().unwrap();
        let dir = killed_after_the_move(tmp.path(), false);
        assert!(matches!(
            record(&dir, &tmp.path().join("c"), "{\"other\": 2}\n"),
            Err(GitopsError::DirtyControllerFiles { .. })
        ));
    }
}
