//! The in-process steps against what git itself does on the same repositories: git builds
//! every repository here and judges every result (`status`, `diff-tree`, `fsck`).

use std::path::PathBuf;

use super::*;
use crate::gitops::test_git::{git, write};

/// A bare product whose `main` holds `a.txt`, `c.txt` and a `.gitignore` of `*.log`, and a
/// clone of it at `work`.
fn product_and_clone(dir: &Path) -> (PathBuf, PathBuf) {
    let (product, work) = (dir.join("app.git"), dir.join("work"));
    git(dir, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    git(dir, &["clone", "-q", "app.git", "work"]);
    write(&work, "a.txt", "a\n");
    write(&work, "c.txt", "c\n");
    write(&work, ".gitignore", "*.log\nbuild/\n");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "start"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    (product, work)
}

/// Writes `files` (path, text) in `work` and commits everything there as `message`.
fn commit_files(work: &Path, files: &[(&str, &str)], message: &str) {
    for (path, text) in files {
        write(work, path, text);
    }
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", message]);
}

fn open(work: &Path) -> Repository {
    Repository::open(work).unwrap()
}

/// What a stale push lost to; `None` for any other outcome.
fn stale(e: &DeliveryError) -> Option<Lost> {
    match e {
        DeliveryError::Stale { lost, .. } => Some(*lost),
        _ => None,
    }
}

fn someone() -> Identity {
    Identity {
        name: "someone".into(),
        email: "someone@example.com".into(),
    }
}

/// What the delivery script's secret scan reads for HEAD.
fn git_diff(work: &Path) -> String {
    git(
        work,
        &[
            "diff-tree",
            "-p",
            "-U0",
            "--root",
            "--no-commit-id",
            "--no-color",
            "--no-ext-diff",
            "--no-textconv",
            "--src-prefix=a/",
            "--dst-prefix=b/",
            "HEAD",
        ],
    )
}

#[test]
fn a_commit_stages_as_add_all_does_and_prints_what_git_prints() {
    let dir = tempfile::tempdir().unwrap();
    let (_, work) = product_and_clone(dir.path());
    write(&work, "a.txt", "a\nmore\n");
    std::fs::remove_file(work.join("c.txt")).unwrap();
    write(&work, "deep/er/b.txt", "b\n");
    write(&work, "with space é.txt", "spaced\n");
    write(&work, "noise.log", "ignored\n");
    write(&work, "build/out.bin", "ignored too\n");
    write(&work, "run.sh", "#!/bin/sh\n");
    std::fs::set_permissions(
        work.join("run.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("a.txt", work.join("link")).unwrap();
    std::fs::write(work.join("blob.bin"), [0u8, 1, 2, 0, 255]).unwrap();
    let repo = open(&work);
    let base = head(&repo).unwrap().unwrap();
    let committed = commit_all(
        &repo,
        &Journal::default(),
        "  Title  \n\n\n body \n",
        &someone(),
        &someone(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(committed.base, Some(base.to_string()));
    assert_eq!(committed.head, git(&work, &["rev-parse", "HEAD"]));
    assert!(!committed.over);
    assert_eq!(git(&work, &["status", "--porcelain"]), "");
    // git ends a `---`/`+++` line whose name has a space with a tab; the scan reads past it.
    let theirs: Vec<String> = git_diff(&work)
        .lines()
        .map(|l| l.trim_end_matches('\t').to_string())
        .collect();
    assert_eq!(committed.diff.trim_end(), theirs.join("\n"));
    assert!(committed.diff.contains("+more"), "{}", committed.diff);
    let files = git(&work, &["ls-tree", "-r", "HEAD"]);
    assert!(
        !files.contains("noise.log") && !files.contains("build/"),
        "{files}"
    );
    assert!(!files.contains("c.txt"), "{files}");
    assert!(
        files.contains("100755 blob") && files.contains("120000 blob"),
        "{files}"
    );
    assert_eq!(git(&work, &["log", "-1", "--format=%B"]), "Title\n\n body");
    assert_eq!(
        git(&work, &["log", "-1", "--format=%an <%ae>"]),
        "someone <someone@example.com>"
    );
    // Nothing changed since: nothing to commit.
    assert!(
        commit_all(&repo, &Journal::default(), "again", &someone(), &someone())
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_first_commit_is_diffed_against_the_empty_tree_and_can_be_undone() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main", "work"]);
    let work = dir.path().join("work");
    let repo = open(&work);
    assert!(
        commit_all(
            &repo,
            &Journal::default(),
            "nothing",
            &someone(),
            &someone()
        )
        .unwrap()
        .is_none()
    );
    write(&work, "first.txt", "one\ntwo\n");
    let committed = commit_all(&repo, &Journal::default(), "first", &someone(), &someone())
        .unwrap()
        .unwrap();
    assert_eq!(committed.base, None);
    assert_eq!(committed.diff.trim_end(), git_diff(&work));
    uncommit(&repo, None).unwrap();
    assert!(head(&repo).unwrap().is_none());
    // The change is left staged, as `git reset --soft` leaves it.
    assert_eq!(git(&work, &["status", "--porcelain"]), "A  first.txt");
    let committed = commit_all(&repo, &Journal::default(), "first", &someone(), &someone())
        .unwrap()
        .unwrap();
    write(&work, "second.txt", "2\n");
    commit_all(&repo, &Journal::default(), "second", &someone(), &someone())
        .unwrap()
        .unwrap();
    uncommit(&repo, Some(&committed.head)).unwrap();
    assert_eq!(git(&work, &["rev-parse", "HEAD"]), committed.head);
    assert_eq!(git(&work, &["status", "--porcelain"]), "A  second.txt");
}

#[test]
fn a_commit_of_too_much_text_is_flagged_not_cut_silently() {
    let dir = tempfile::tempdir().unwrap();
    let (_, work) = product_and_clone(dir.path());
    let line = "x".repeat(1023) + "\n";
    write(&work, "big.txt", &line.repeat(MAX_SCANNED_BYTES / 1024 + 8));
    let repo = open(&work);
    let committed = commit_all(&repo, &Journal::default(), "big", &someone(), &someone())
        .unwrap()
        .unwrap();
    assert!(committed.over);
    assert!(committed.diff.len() <= MAX_SCANNED_BYTES);
}

#[test]
fn prepare_leaves_exactly_head_and_rebases_what_applies_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (product, work) = product_and_clone(dir.path());
    let repo = open(&work);
    write(&work, "new.txt", "new\n");
    let committed = commit_all(&repo, &Journal::default(), "new", &someone(), &someone())
        .unwrap()
        .unwrap();
    // What a check or a command may leave beside the commit.
    write(&work, "a.txt", "changed after the commit\n");
    write(&work, "stray.txt", "untracked\n");
    write(&work, "noise.log", "ignored\n");
    write(&work, "build/deep/out.bin", "ignored folder\n");
    git(&work, &["init", "-q", "nested"]);
    write(&work, "nested/inside.txt", "a repository inside\n");
    std::fs::remove_file(work.join("c.txt")).unwrap();
    let prepared = prepare(&repo, &Journal::default(), "main", false, &someone())
        .unwrap()
        .unwrap();
    assert_eq!(prepared.head.as_deref(), Some(committed.head.as_str()));
    assert_eq!(prepared.commits, vec![committed.head.clone()]);
    assert!(!prepared.rebased);
    assert_eq!(git(&work, &["status", "--porcelain", "--ignored"]), "");
    assert_eq!(std::fs::read_to_string(work.join("a.txt")).unwrap(), "a\n");
    assert!(work.join("c.txt").exists() && !work.join("nested").exists());

    // The branch moved on elsewhere: fetched, and the work rebased onto it.
    git(dir.path(), &["clone", "-q", "app.git", "other"]);
    let other = dir.path().join("other");
    write(&other, "theirs.txt", "theirs\n");
    git(&other, &["add", "-A"]);
    git(&other, &["commit", "-q", "-m", "theirs"]);
    git(&other, &["push", "-q", "origin", "HEAD:main"]);
    let theirs = git(&other, &["rev-parse", "HEAD"]);
    let committer = Identity {
        name: "controller".into(),
        email: "bot@example.com".into(),
    };
    let prepared = prepare(&repo, &Journal::default(), "main", true, &committer)
        .unwrap()
        .unwrap();
    assert_eq!(prepared.tip.as_deref(), Some(theirs.as_str()));
    assert!(prepared.rebased);
    let head = prepared.head.unwrap();
    assert_eq!(prepared.commits, vec![head.clone()]);
    assert_eq!(git(&work, &["rev-parse", "HEAD^"]), theirs);
    assert_eq!(git(&work, &["rev-parse", "origin/main"]), theirs);
    assert_eq!(
        git(&work, &["log", "-1", "--format=%an|%cn|%s"]),
        "someone|controller|new"
    );
    assert_eq!(git(&work, &["status", "--porcelain", "--ignored"]), "");
    assert!(work.join("theirs.txt").exists() && work.join("new.txt").exists());
    git(&work, &["fsck", "--no-dangling"]);

    // Work that conflicts with the tip is git's to rebase and report.
    write(&other, "new.txt", "theirs too\n");
    git(&other, &["add", "-A"]);
    git(&other, &["commit", "-q", "-m", "conflicting"]);
    git(&other, &["push", "-q", "origin", "HEAD:main"]);
    assert!(
        prepare(&repo, &Journal::default(), "main", true, &committer)
            .unwrap()
            .is_none()
    );
    assert_eq!(git(&work, &["rev-parse", "HEAD"]), head, "nothing moved");
    // A branch the product does not have: the tracking ref goes, as git's fetch does.
    assert_eq!(fetch(&repo, "gone").unwrap(), Some(None));
    drop(product);
}

#[test]
fn a_push_moves_the_branch_only_from_the_tip_it_was_built_on() {
    let dir = tempfile::tempdir().unwrap();
    let (product, work) = product_and_clone(dir.path());
    let repo = open(&work);
    let tip = git(&work, &["rev-parse", "HEAD"]);
    write(&work, "new.txt", "new\n");
    let committed = commit_all(&repo, &Journal::default(), "new", &someone(), &someone())
        .unwrap()
        .unwrap();
    let pushed = push(&repo, "main", Some(&tip)).unwrap().unwrap();
    assert_eq!(pushed, committed.head);
    assert_eq!(git(&product, &["rev-parse", "main"]), committed.head);
    assert_eq!(git(&work, &["rev-parse", "origin/main"]), committed.head);
    git(&product, &["fsck", "--no-dangling"]);

    // Someone else pushed since: the lease is lost and the branch stays theirs.
    git(dir.path(), &["clone", "-q", "app.git", "other"]);
    let other = dir.path().join("other");
    write(&other, "theirs.txt", "theirs\n");
    git(&other, &["add", "-A"]);
    git(&other, &["commit", "-q", "-m", "theirs"]);
    git(&other, &["push", "-q", "origin", "HEAD:main"]);
    let theirs = git(&other, &["rev-parse", "HEAD"]);
    write(&work, "more.txt", "more\n");
    commit_all(&repo, &Journal::default(), "more", &someone(), &someone())
        .unwrap()
        .unwrap();
    let lost = push(&repo, "main", Some(&committed.head)).unwrap_err();
    assert_eq!(stale(&lost), Some(Lost::Lease), "{lost:?}");
    assert_eq!(git(&product, &["rev-parse", "main"]), theirs);
    // A branch expected not to exist that does is a lost lease too.
    let lost = push(&repo, "main", None).unwrap_err();
    assert_eq!(stale(&lost), Some(Lost::Lease), "{lost:?}");
    // A HEAD that does not descend from the tip is never pushed over it.
    let refused = push(&repo, "main", Some(&theirs)).unwrap_err();
    assert!(matches!(refused, DeliveryError::Git { .. }), "{refused:?}");
    assert_eq!(git(&product, &["rev-parse", "main"]), theirs);
    // A lock another git holds on the branch is the server's lock.
    std::fs::write(product.join("refs/heads/main.lock"), "").unwrap();
    git(&work, &["fetch", "-q", "origin"]);
    git(&work, &["rebase", "-q", "origin/main"]);
    let locked = push(&repo, "main", Some(&theirs)).unwrap_err();
    assert_eq!(stale(&locked), Some(Lost::ServerLock), "{locked:?}");
    std::fs::remove_file(product.join("refs/heads/main.lock")).unwrap();
    let head = push(&repo, "main", Some(&theirs)).unwrap().unwrap();
    assert_eq!(git(&product, &["rev-parse", "main"]), head);
    git(&product, &["fsck", "--no-dangling"]);
}

#[test]
fn a_product_whose_own_git_must_receive_the_push_is_left_to_git() {
    let dir = tempfile::tempdir().unwrap();
    let (product, work) = product_and_clone(dir.path());
    let repo = open(&work);
    assert!(Receiver::of(&repo).is_some());
    write(&product, "hooks/pre-receive", "#!/bin/sh\nexit 0\n");
    assert!(
        Receiver::of(&repo).is_none(),
        "a receive hook runs only under git"
    );
    std::fs::remove_file(product.join("hooks/pre-receive")).unwrap();
    git(&product, &["config", "receive.denyNonFastForwards", "true"]);
    assert!(
        Receiver::of(&repo).is_none(),
        "receive settings are git's to apply"
    );
    git(
        &product,
        &["config", "--unset", "receive.denyNonFastForwards"],
    );
    git(&product, &["config", "core.sharedRepository", "group"]);
    assert!(
        Receiver::of(&repo).is_none(),
        "shared permissions are git's to apply"
    );
    git(&product, &["config", "--unset", "core.sharedRepository"]);
    assert!(Receiver::of(&repo).is_some());
    // A product reached by URL, or a repository with a working tree, is pushed by git.
    git(
        &work,
        &["remote", "set-url", "origin", "git://127.0.0.1/app.git"],
    );
    assert!(Receiver::of(&repo).is_none());
    git(
        &work,
        &["remote", "set-url", "origin", work.to_str().unwrap()],
    );
    assert!(Receiver::of(&repo).is_none());
    git(
        &work,
        &[
            "remote",
            "set-url",
            "origin",
            &format!("file://{}", product.display()),
        ],
    );
    assert!(Receiver::of(&repo).is_some());
}

#[test]
fn loose_objects_that_pile_up_in_the_product_are_packed() {
    let dir = tempfile::tempdir().unwrap();
    let (product, work) = product_and_clone(dir.path());
    let repo = open(&work);
    let tip = git(&work, &["rev-parse", "HEAD"]);
    // Enough new files for git's sample of loose objects to call for a gc.
    for i in 0..12_000 {
        write(&work, &format!("many/{i}.txt"), &format!("{i}\n"));
    }
    commit_all(&repo, &Journal::default(), "many", &someone(), &someone())
        .unwrap()
        .unwrap();
    push(&repo, "main", Some(&tip)).unwrap().unwrap();
    crate::gitops::housekeeping::settle();
    let counts = git(&product, &["count-objects", "-v"]);
    assert!(counts.contains("packs: 1"), "{counts}");
    let loose = std::fs::read_dir(product.join("objects/17")).map_or(0, Iterator::count);
    assert!(loose <= 27, "{loose} loose objects left in objects/17");
    git(&product, &["fsck", "--no-dangling"]);
}

#[tokio::test]
async fn what_the_work_planted_in_git_is_restored_before_the_controller_opens_it() {
    let dir = tempfile::tempdir().unwrap();
    let (product, work) = product_and_clone(dir.path());
    let config = std::fs::read_to_string(work.join(".git/config")).unwrap();
    let workspace = Workspace::new(&work).with_pristine(Pristine {
        config,
        alternates: String::new(),
    });
    let native = Native::of(&workspace).unwrap();
    git(
        &work,
        &["remote", "set-url", "origin", "/somewhere/else.git"],
    );
    write(&work, ".git/info/attributes", "* filter=planted\n");
    let url = native
        .with("read origin", |repo| {
            Ok(repo
                .find_remote("origin")
                .unwrap()
                .url()
                .unwrap()
                .to_string())
        })
        .await
        .unwrap();
    assert_eq!(url, product.to_str().unwrap());
    assert!(!work.join(".git/info/attributes").exists());
    std::fs::remove_file(work.join(".git/config")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", work.join(".git/config")).unwrap();
    let refused = native.with("open", |_| Ok(())).await.unwrap_err();
    assert!(refused.to_string().contains("symbolic link"), "{refused}");
    // A workspace elsewhere is never opened here.
    assert!(Native::of(&Workspace::elsewhere(&work)).is_none());
}

#[test]
fn the_history_scan_reads_what_git_log_prints() {
    let dir = tempfile::tempdir().unwrap();
    let (_, work) = product_and_clone(dir.path());
    let base = git(&work, &["rev-parse", "HEAD"]);
    for (file, text) in [
        ("one.txt", "1\n"),
        ("two.txt", "2\n2\n"),
        ("one.txt", "1\nmore\n"),
    ] {
        write(&work, file, text);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", file]);
    }
    let repo = open(&work);
    for since in [Some(base.as_str()), None] {
        let (ours, over) = log_added(&repo, since, "proto-commit ").unwrap();
        assert!(!over);
        let range = since.map_or("HEAD".to_string(), |b| format!("{b}..HEAD"));
        let theirs = git(
            &work,
            &[
                "-c",
                "log.showRoot=true",
                "log",
                "-p",
                "-U0",
                "--format=proto-commit %H",
                "--diff-merges=first-parent",
                "--no-color",
                "--src-prefix=a/",
                "--dst-prefix=b/",
                &range,
            ],
        );
        assert_eq!(ours.trim_end(), theirs);
    }
}

#[test]
fn a_reset_path_by_path_handles_files_and_folders_trading_places() {
    let dir = tempfile::tempdir().unwrap();
    let (_, work) = product_and_clone(dir.path());
    commit_files(
        &work,
        &[
            ("swap", "a file first\n"),
            ("folder/inside.txt", "in a folder first\n"),
        ],
        "before",
    );
    let before = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["rm", "-q", "swap", "folder/inside.txt"]);
    commit_files(
        &work,
        &[
            ("swap/now.txt", "a folder now\n"),
            ("folder", "a file now\n"),
            ("a.txt", "changed\n"),
        ],
        "after",
    );
    let after = git(&work, &["rev-parse", "HEAD"]);
    // The files and index of `before`, HEAD at `after`: a spare as the next task finds it.
    git(&work, &["reset", "-q", "--hard", &before]);
    write(&work, "junk.log", "ignored\n");
    write(&work, "stray/file.txt", "untracked\n");
    git(&work, &["update-ref", "refs/heads/main", &after]);
    let repo = open(&work);
    let commit = repo.find_commit(Oid::from_str(&after).unwrap()).unwrap();
    update_paths(&repo, &commit.tree().unwrap(), None).unwrap();
    assert_eq!(git(&work, &["status", "--porcelain", "--ignored"]), "");
    assert_eq!(git(&work, &["diff", "--cached", "--name-only"]), "");
    assert_eq!(
        std::fs::read_to_string(work.join("swap/now.txt")).unwrap(),
        "a folder now\n"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("folder")).unwrap(),
        "a file now\n"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("a.txt")).unwrap(),
        "changed\n"
    );
}

#[test]
fn a_commits_new_trees_are_stored_uncompressed_and_are_the_trees_git_would_write() {
    let dir = tempfile::tempdir().unwrap();
    let (_, work) = product_and_clone(dir.path());
    commit_files(
        &work,
        &[("deep/a/x.txt", "x\n"), ("deep/b/y.txt", "y\n")],
        "nested",
    );
    let kept = git(&work, &["rev-parse", "HEAD:deep/b"]);
    write(&work, "deep/a/x.txt", "x changed\n");
    write(&work, "new/z.txt", "z\n");
    let repo = open(&work);
    commit_all(&repo, &Journal::default(), "more", &someone(), &someone())
        .unwrap()
        .unwrap();
    // The files, the index and HEAD agree, the trees are sound, and the index's tree
    // cache (which `git write-tree` answers from) names HEAD's tree.
    assert_eq!(git(&work, &["status", "--porcelain"]), "");
    git(&work, &["diff", "--cached", "--quiet", "HEAD"]);
    git(&work, &["fsck", "--strict", "--no-dangling"]);
    assert_eq!(
        git(&work, &["write-tree"]),
        git(&work, &["rev-parse", "HEAD^{tree}"])
    );
    assert_eq!(git(&work, &["rev-parse", "HEAD:deep/b"]), kept);
    for tree in ["HEAD^{tree}", "HEAD:deep", "HEAD:deep/a", "HEAD:new"] {
        let id = Oid::from_str(&git(&work, &["rev-parse", tree])).unwrap();
        let bytes =
            std::fs::read(crate::gitops::loose::path(&work.join(".git/objects"), id)).unwrap();
        // A zlib header, then one final stored block (`BFINAL` set, type 0).
        assert_eq!(bytes[2], 1, "{tree} is not one stored block");
    }
}

#[test]
fn a_staged_files_entry_is_never_racily_clean_and_a_change_of_the_same_size_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let (_, work) = product_and_clone(dir.path());
    write(&work, "a.txt", "b\n");
    let repo = open(&work);
    commit_all(&repo, &Journal::default(), "b", &someone(), &someone())
        .unwrap()
        .unwrap();
    let entry = repo
        .index()
        .unwrap()
        .get_path(Path::new("a.txt"), 0)
        .unwrap();
    assert_eq!((entry.mtime.seconds(), entry.mtime.nanoseconds()), (0, 0));
    assert_eq!(entry.file_size, 2);
    // Same size, same second: only the content tells, and both gits look at it.
    write(&work, "a.txt", "z\n");
    let (differing, _) = differing(&repo).unwrap();
    assert_eq!(differing, vec![PathBuf::from("a.txt")]);
    assert_eq!(git(&work, &["status", "--porcelain"]), "M a.txt");
}

#[test]
fn the_commits_after_a_base_are_what_git_rev_list_answers() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    git(dir.path(), &["init", "-q", "-b", "main", "work"]);
    let commit = |n: usize| {
        write(&work, "n.txt", &format!("{n}\n"));
        git(&work, &["commit", "-q", "-am", &n.to_string()]);
        git(&work, &["rev-parse", "HEAD"])
    };
    commit_files(&work, &[("n.txt", "0\n")], "0");
    let first = git(&work, &["rev-parse", "HEAD"]);
    let line: Vec<String> = (1..=80).map(commit).collect();
    // A side branch merged back: past a merge only libgit2's walk answers.
    git(&work, &["checkout", "-q", "-b", "side", &line[70]]);
    commit_files(&work, &[("side.txt", "side\n")], "side");
    git(&work, &["checkout", "-q", "main"]);
    git(&work, &["merge", "-q", "--no-edit", "side"]);
    let merged = git(&work, &["rev-parse", "HEAD"]);
    let after = commit(81);
    let repo = open(&work);
    let id = |hex: &str| Oid::from_str(hex).unwrap();
    let cases: [(&str, &str, Option<&str>); 7] = [
        ("a line of three", &line[79], Some(&line[76])),
        ("nothing after itself", &line[40], Some(&line[40])),
        (
            "further back than followed by hand",
            &line[79],
            Some(&line[5]),
        ),
        ("over a merge", &after, Some(&line[60])),
        ("just after a merge", &after, Some(&merged)),
        ("a base that is not below", &line[10], Some(&line[20])),
        ("the whole history", &line[3], None),
    ];
    for (what, head, base) in cases {
        let range = match base {
            Some(base) => format!("{base}..{head}"),
            None => head.to_string(),
        };
        let theirs: Vec<String> = git(&work, &["rev-list", &range])
            .lines()
            .map(str::to_string)
            .collect();
        let ours = |order| -> Vec<String> {
            commits_after(&repo, id(head), base.map(id), order)
                .unwrap()
                .iter()
                .map(Oid::to_string)
                .collect()
        };
        let (newest, oldest) = (ours(Order::NewestFirst), ours(Order::OldestFirst));
        let sorted = |mut list: Vec<String>| {
            list.sort();
            list
        };
        assert_eq!(sorted(newest.clone()), sorted(theirs.clone()), "{what}");
        assert_eq!(sorted(oldest.clone()), sorted(theirs.clone()), "{what}");
        // Every commit after its parents; git's own order where history is one line (two
        // lines of a merge may interleave differently).
        for (at, commit) in oldest.iter().enumerate() {
            for parent in repo.find_commit(id(commit)).unwrap().parent_ids() {
                let later = oldest.iter().position(|c| *c == parent.to_string());
                assert!(
                    later.is_none_or(|p| p < at),
                    "{what}: {commit} before its parent"
                );
            }
        }
        if what != "over a merge" {
            assert_eq!(newest, theirs, "{what}");
        }
    }
    assert_eq!(
        commits_after(&repo, id(&first), None, Order::NewestFirst)
            .unwrap()
            .len(),
        1
    );
}
