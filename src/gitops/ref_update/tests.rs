//! Compare-and-swap through `git update-ref --stdin`, judged by git on real repositories.

use std::path::PathBuf;

use super::*;
use crate::gitops::test_git::{git, write};

/// A bare repository whose `main` has two commits: the first and the second, in that order.
fn repository(dir: &Path) -> (PathBuf, Oid, Oid) {
    let (bare, work) = (dir.join("app.git"), dir.join("work"));
    git(dir, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    git(dir, &["clone", "-q", "app.git", "work"]);
    write(&work, "a.txt", "a\n");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "one"]);
    let one = git(&work, &["rev-parse", "HEAD"]);
    write(&work, "a.txt", "b\n");
    git(&work, &["commit", "-q", "-am", "two"]);
    let two = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    git(&bare, &["update-ref", "refs/heads/main", &one]);
    let oid = |s: &str| Oid::from_str(s).unwrap();
    (bare, oid(&one), oid(&two))
}

fn tip(bare: &Path) -> String {
    git(bare, &["rev-parse", "refs/heads/main"])
}

#[test]
fn moves_only_from_the_expected_commit_and_creates_only_what_is_absent() {
    let dir = tempfile::tempdir().unwrap();
    let (bare, one, two) = repository(dir.path());
    let main = "refs/heads/main";
    let moved = compare_and_swap(&bare, main, two, Some(two)).unwrap();
    assert!(
        matches!(moved, Swap::Raced(ref why) if why.contains("expected")),
        "{moved:?}"
    );
    assert_eq!(tip(&bare), one.to_string());
    assert_eq!(
        compare_and_swap(&bare, main, two, Some(one)).unwrap(),
        Swap::Moved
    );
    assert_eq!(tip(&bare), two.to_string());
    // The process refused above was replaced; the one that moved it is kept and moves again.
    assert_eq!(
        compare_and_swap(&bare, main, one, Some(two)).unwrap(),
        Swap::Moved
    );
    assert_eq!(tip(&bare), one.to_string());
    let created = compare_and_swap(&bare, main, two, None).unwrap();
    assert!(matches!(created, Swap::Raced(_)), "{created:?}");
    assert_eq!(
        compare_and_swap(&bare, "refs/heads/new", two, None).unwrap(),
        Swap::Moved
    );
    assert_eq!(
        git(&bare, &["rev-parse", "refs/heads/new"]),
        two.to_string()
    );
    git(&bare, &["fsck", "--no-dangling"]);
}

#[test]
fn a_held_lock_is_named_and_nothing_moves_until_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let (bare, one, two) = repository(dir.path());
    let lock = bare.join("refs/heads/main.lock");
    std::fs::write(&lock, "").unwrap();
    let moved = compare_and_swap(&bare, "refs/heads/main", two, Some(one)).unwrap();
    assert!(
        matches!(moved, Swap::Locked(ref why) if why.contains("main.lock")),
        "{moved:?}"
    );
    assert_eq!(tip(&bare), one.to_string());
    std::fs::remove_file(&lock).unwrap();
    assert_eq!(
        compare_and_swap(&bare, "refs/heads/main", two, Some(one)).unwrap(),
        Swap::Moved
    );
}

#[test]
fn a_repository_made_again_at_the_same_path_is_moved_not_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let (bare, one, two) = repository(dir.path());
    assert_eq!(
        compare_and_swap(&bare, "refs/heads/main", two, Some(one)).unwrap(),
        Swap::Moved
    );
    std::fs::remove_dir_all(dir.path()).unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    let (bare, one, two) = repository(dir.path());
    assert_eq!(
        compare_and_swap(&bare, "refs/heads/main", two, Some(one)).unwrap(),
        Swap::Moved
    );
    assert_eq!(tip(&bare), two.to_string());
}

#[test]
fn a_process_that_ended_meanwhile_is_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let (bare, one, two) = repository(dir.path());
    assert_eq!(
        compare_and_swap(&bare, "refs/heads/main", two, Some(one)).unwrap(),
        Swap::Moved
    );
    let kept = slot(&bare).unwrap();
    let pid = kept.lock().unwrap().as_ref().unwrap().child.id();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Reaped by the next move's check, whenever the signal lands.
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(
        compare_and_swap(&bare, "refs/heads/main", one, Some(two)).unwrap(),
        Swap::Moved
    );
    assert_eq!(tip(&bare), one.to_string());
}

/// What the module rests on: a controller killed between sending a transaction's lock and
/// its commit closes git's stdin, and git aborts and removes the lock.
#[test]
fn git_removes_its_lock_when_its_caller_dies_mid_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (bare, one, two) = repository(dir.path());
    let folder = identity(&bare).unwrap();
    let mut process = Updater::start(&bare, folder).unwrap();
    let stdin = process.stdin.as_mut().unwrap();
    write!(
        stdin,
        "start\nupdate refs/heads/main {two} {one}\nprepare\n"
    )
    .unwrap();
    stdin.flush().unwrap();
    for command in ["start", "prepare"] {
        let mut line = String::new();
        process.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), format!("{command}: ok"));
    }
    let lock = bare.join("refs/heads/main.lock");
    assert!(lock.exists(), "prepared: git holds the lock");
    drop(process);
    assert!(!lock.exists(), "aborted: the lock is gone");
    assert_eq!(tip(&bare), one.to_string());
}
