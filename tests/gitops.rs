//! Writeback and product workspaces against real repositories: set up and checked with the
//! git CLI, served by `git daemon` for the remote cases.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/git_daemon.rs"]
mod git_daemon;

use std::path::{Path, PathBuf};

use cli::{commit_all, git, write};
use git_daemon::Daemon;
use proto::gitops::workspace::{self, WorkspaceState};
use proto::gitops::{FileChange, GitopsError, Identity, Writeback};
use proto::source::GitSource;

fn controller() -> Identity {
    Identity {
        name: "Proto Controller".into(),
        email: "proto@example.com".into(),
    }
}

fn agent() -> Identity {
    Identity {
        name: "Dev Agent".into(),
        email: "dev@example.com".into(),
    }
}

fn write_change(path: &str, content: &str) -> FileChange {
    FileChange::Write {
        path: path.into(),
        content: content.as_bytes().to_vec(),
    }
}

fn append(path: &str, content: &str) -> FileChange {
    FileChange::Append {
        path: path.into(),
        content: content.as_bytes().to_vec(),
    }
}

/// A working repository declaring a company at its root.
fn company_repo(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q"]);
    write(dir, "company.yaml", "kind: Company\n");
    write(dir, ".proto/status.yaml", "status: {}\n");
    commit_all(dir, "declare the company");
    dir.to_path_buf()
}

/// A bare repository at `path` holding one commit with `files`.
fn bare_with(path: &Path, files: &[(&str, &str)]) {
    let parent = path.parent().unwrap();
    let seed = parent.join(format!(
        "{}.seed",
        path.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::create_dir_all(&seed).unwrap();
    git(&seed, &["init", "-q"]);
    for (name, content) in files {
        write(&seed, name, content);
    }
    commit_all(&seed, "initial");
    git(
        parent,
        &["init", "-q", "--bare", "-b", "main", path.to_str().unwrap()],
    );
    git(&seed, &["push", "-q", path.to_str().unwrap(), "main"]);
}

#[test]
fn writeback_to_a_bare_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let work = company_repo(&tmp.path().join("work"));
    let bare = tmp.path().join("company.git");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let source = GitSource::open(
        bare.to_str().unwrap(),
        None,
        None,
        &tmp.path().join("cache"),
    )
    .unwrap();
    let writeback = Writeback::new(&source, None, controller(), true).unwrap();
    let before = git(&bare, &["rev-parse", "main"]);

    let id = writeback
        .commit(
            &[
                write_change(".proto/status.yaml", "status: {ready: true}\n"),
                append(".proto/audit/2025-01-01.jsonl", "{\"n\":1}\n"),
                append(".proto/audit/2025-01-01.jsonl", "{\"n\":2}\n"),
            ],
            "proto: record task 1\n\nWith a body.",
        )
        .unwrap()
        .expect("a commit");
    assert_eq!(git(&bare, &["rev-parse", "main"]), id);
    assert_eq!(
        git(&bare, &["rev-parse", "main^"]),
        before,
        "the head is the parent"
    );
    assert_eq!(
        git(
            &bare,
            &["log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", "main"]
        ),
        "Proto Controller <proto@example.com>|Proto Controller <proto@example.com>|proto: record task 1"
    );
    assert_eq!(
        git(&bare, &["show", "main:.proto/status.yaml"]),
        "status: {ready: true}"
    );
    assert_eq!(
        git(&bare, &["show", "main:.proto/audit/2025-01-01.jsonl"]),
        "{\"n\":1}\n{\"n\":2}"
    );
    assert_eq!(
        git(&bare, &["show", "main:company.yaml"]),
        "kind: Company",
        "other files are kept"
    );
    assert_eq!(
        git(&bare, &["diff", "--name-only", &before, "main"]),
        ".proto/audit/2025-01-01.jsonl\n.proto/status.yaml"
    );

    // The same content again: no commit.
    let unchanged = writeback
        .commit(
            &[write_change(
                ".proto/status.yaml",
                "status: {ready: true}\n",
            )],
            "proto: nothing",
        )
        .unwrap();
    assert_eq!(unchanged, None);
    assert_eq!(
        writeback.commit(&[], "proto: nothing at all").unwrap(),
        None
    );
    assert_eq!(git(&bare, &["rev-parse", "main"]), id);

    // Appends build on the head.
    writeback
        .commit(
            &[append(".proto/audit/2025-01-01.jsonl", "{\"n\":3}\n")],
            "proto: record task 2",
        )
        .unwrap()
        .expect("a commit");
    assert_eq!(
        writeback
            .read(".proto/audit/2025-01-01.jsonl")
            .unwrap()
            .unwrap(),
        b"{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n"
    );
    assert_eq!(writeback.read(".proto/missing.yaml").unwrap(), None);
    git(&bare, &["fsck", "--no-progress"]);

    // Paths stay inside the declaration folder.
    for bad in ["../escape", "/abs", ".git/config", "a//b", ""] {
        assert!(
            matches!(
                writeback.commit(&[write_change(bad, "x")], "bad"),
                Err(GitopsError::InvalidPath(_))
            ),
            "{bad:?}"
        );
    }

    // Another branch starts from the source's branch.
    let records = Writeback::new(&source, Some("proto-records"), controller(), true).unwrap();
    let on_branch = records
        .commit(
            &[write_change(
                ".proto/status.yaml",
                "status: {branch: true}\n",
            )],
            "proto: on a branch",
        )
        .unwrap()
        .unwrap();
    assert_eq!(git(&bare, &["rev-parse", "proto-records"]), on_branch);
    assert_eq!(
        git(&bare, &["rev-parse", "proto-records^"]),
        git(&bare, &["rev-parse", "main"])
    );
}

#[test]
fn writeback_to_a_checkout_keeps_it_clean_and_respects_local_edits() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("company");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    write(&repo, "decl/company.yaml", "kind: Company\n");
    write(&repo, "decl/.proto/status.yaml", "status: {}\n");
    write(&repo, "notes.txt", "a user's notes\n");
    commit_all(&repo, "declare the company");
    let source = GitSource::open(
        repo.to_str().unwrap(),
        None,
        Some("decl"),
        &tmp.path().join("cache"),
    )
    .unwrap();
    let writeback = Writeback::new(&source, None, controller(), false).unwrap();

    // The user's unrelated edits are left alone.
    write(&repo, "notes.txt", "edited, not committed\n");
    let id = writeback
        .commit(
            &[
                write_change(".proto/status.yaml", "status: {ready: true}\n"),
                write_change(".proto/planning/hello/roadmap.md", "# Roadmap\n"),
            ],
            "proto: plan",
        )
        .unwrap()
        .unwrap();
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), id);
    assert_eq!(
        std::fs::read_to_string(repo.join("decl/.proto/status.yaml")).unwrap(),
        "status: {ready: true}\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("decl/.proto/planning/hello/roadmap.md")).unwrap(),
        "# Roadmap\n"
    );
    assert_eq!(
        git(
            &repo,
            &["show", "HEAD:decl/.proto/planning/hello/roadmap.md"]
        ),
        "# Roadmap"
    );
    assert_eq!(
        git(&repo, &["status", "--porcelain"]),
        "M notes.txt",
        "only the user's edit shows"
    );
    git(&repo, &["checkout", "-q", "--", "notes.txt"]);
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");

    // A user's uncommitted edit of a controller file: nothing is written.
    write(&repo, "decl/.proto/status.yaml", "status: {hand: edited}\n");
    let refused = writeback.commit(&[append(".proto/audit/a.jsonl", "{}\n")], "proto: audit");
    match refused {
        Err(GitopsError::DirtyControllerFiles { files, .. }) => {
            assert!(files.contains("decl/.proto/status.yaml"), "{files}")
        }
        other => panic!("expected DirtyControllerFiles, got {other:?}"),
    }
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), id);
    assert!(!repo.join("decl/.proto/audit").exists());
    assert_eq!(
        std::fs::read_to_string(repo.join("decl/.proto/status.yaml")).unwrap(),
        "status: {hand: edited}\n"
    );

    // So does an untracked file there.
    git(&repo, &["checkout", "-q", "--", "decl/.proto/status.yaml"]);
    write(&repo, "decl/.proto/knowledge/mine.md", "a user's note\n");
    match writeback.commit(&[append(".proto/audit/a.jsonl", "{}\n")], "proto: audit") {
        Err(GitopsError::DirtyControllerFiles { files, .. }) => {
            assert_eq!(files, "decl/.proto/knowledge/mine.md")
        }
        other => panic!("expected DirtyControllerFiles, got {other:?}"),
    }
    std::fs::remove_dir_all(repo.join("decl/.proto/knowledge")).unwrap();
    write(&repo, "decl/.proto/status.yaml", "status: {hand: edited}\n");

    // Staged counts too; committed is fine again.
    git(&repo, &["add", "decl/.proto/status.yaml"]);
    assert!(matches!(
        writeback.commit(&[append(".proto/audit/a.jsonl", "{}\n")], "proto: audit"),
        Err(GitopsError::DirtyControllerFiles { .. })
    ));
    git(&repo, &["commit", "-q", "-m", "hand edit"]);
    writeback
        .commit(&[append(".proto/audit/a.jsonl", "{}\n")], "proto: audit")
        .unwrap()
        .unwrap();
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    assert_eq!(git(&repo, &["log", "-1", "--format=%s"]), "proto: audit");

    // A checkout of another branch is not touched: the commit goes to the branch only.
    git(&repo, &["checkout", "-q", "-b", "elsewhere"]);
    let elsewhere = git(&repo, &["rev-parse", "HEAD"]);
    let on_main = writeback
        .commit(
            &[write_change(
                ".proto/status.yaml",
                "status: {later: true}\n",
            )],
            "proto: later",
        )
        .unwrap()
        .unwrap();
    assert_eq!(git(&repo, &["rev-parse", "main"]), on_main);
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), elsewhere);
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
}

#[test]
fn writeback_to_a_remote_rebuilds_on_a_concurrent_push() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("srv");
    std::fs::create_dir_all(&served).unwrap();
    let server = served.join("company.git");
    bare_with(
        &server,
        &[
            ("company.yaml", "kind: Company\n"),
            (".proto/audit/log.jsonl", "{\"by\":\"seed\"}\n"),
        ],
    );
    let daemon = Daemon::start(&served);
    let url = daemon.url("company.git");

    let source = GitSource::open(&url, None, None, &tmp.path().join("cache")).unwrap();
    let writeback = Writeback::new(&source, None, controller(), true).unwrap();
    let first = writeback
        .commit(
            &[append(
                ".proto/audit/log.jsonl",
                "{\"by\":\"proto\",\"n\":1}\n",
            )],
            "proto: task 1",
        )
        .unwrap()
        .unwrap();
    assert_eq!(git(&server, &["rev-parse", "main"]), first, "pushed");

    // Another clone appends and pushes first; our cache does not know.
    let other = tmp.path().join("other");
    git(tmp.path(), &["clone", "-q", &url, other.to_str().unwrap()]);
    let mut log = std::fs::read_to_string(other.join(".proto/audit/log.jsonl")).unwrap();
    log.push_str("{\"by\":\"other\"}\n");
    write(&other, ".proto/audit/log.jsonl", &log);
    let theirs = commit_all(&other, "someone else's record");
    git(&other, &["push", "-q", "origin", "main"]);

    let ours = writeback
        .commit(
            &[
                append(".proto/audit/log.jsonl", "{\"by\":\"proto\",\"n\":2}\n"),
                write_change(".proto/status.yaml", "status: {ready: true}\n"),
            ],
            "proto: task 2",
        )
        .unwrap()
        .unwrap();
    assert_eq!(git(&server, &["rev-parse", "main"]), ours);
    assert_eq!(
        git(&server, &["rev-parse", "main^"]),
        theirs,
        "rebuilt on top, never forced"
    );
    assert_eq!(
        git(&server, &["show", "main:.proto/audit/log.jsonl"]),
        "{\"by\":\"seed\"}\n{\"by\":\"proto\",\"n\":1}\n{\"by\":\"other\"}\n{\"by\":\"proto\",\"n\":2}"
    );
    assert_eq!(
        git(&server, &["log", "-1", "--format=%an|%s", "main"]),
        "Proto Controller|proto: task 2"
    );
    assert_eq!(git(&server, &["rev-list", "--count", "main"]), "4");
    // The source sees what writeback pushed.
    source.fetch().unwrap();
    assert_eq!(source.head().unwrap(), ours);

    // Not pushing: the commit stays in the cache.
    let local_only = Writeback::new(&source, None, controller(), false).unwrap();
    let kept = local_only
        .commit(
            &[write_change(
                ".proto/status.yaml",
                "status: {local: true}\n",
            )],
            "proto: unpushed",
        )
        .unwrap()
        .unwrap();
    assert_eq!(git(&server, &["rev-parse", "main"]), ours);
    assert_eq!(git(source.repository_path(), &["rev-parse", "main"]), kept);
}

#[test]
fn workspace_round_trip_to_a_bare_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let product = tmp.path().join("hello-api.git");
    bare_with(
        &product,
        &[
            ("README.md", "# hello\n"),
            ("src/main.rs", "fn main() {}\n"),
        ],
    );
    let ws = tmp.path().join("ws");

    workspace::clone_or_open(product.to_str().unwrap(), "main", &ws).unwrap();
    assert_eq!(
        std::fs::read_to_string(ws.join("README.md")).unwrap(),
        "# hello\n"
    );
    let start = workspace::state(&ws).unwrap();
    assert_eq!(
        start,
        WorkspaceState {
            head: Some(git(&product, &["rev-parse", "main"])),
            head_message: Some("initial".into()),
            clean: true,
        }
    );
    assert_eq!(
        git(&ws, &["status", "--porcelain", "--branch"]),
        "## main...origin/main"
    );
    assert_eq!(
        workspace::commit_all(&ws, "nothing", &agent()).unwrap(),
        None
    );

    write(&ws, "src/lib.rs", "pub fn hello() {}\n");
    write(&ws, "README.md", "# hello, world\n");
    std::fs::remove_file(ws.join("src/main.rs")).unwrap();
    assert!(!workspace::state(&ws).unwrap().clean);
    let id = workspace::commit_all(&ws, "Add the library\n\nDetails.", &agent())
        .unwrap()
        .unwrap();
    let now = workspace::state(&ws).unwrap();
    assert_eq!(now.head.as_deref(), Some(id.as_str()));
    assert_eq!(now.head_message.as_deref(), Some("Add the library"));
    assert!(now.clean);
    assert_eq!(
        git(
            &ws,
            &["show", "--name-status", "--format=%an <%ae>", "HEAD"]
        ),
        "Dev Agent <dev@example.com>\n\nM\tREADME.md\nA\tsrc/lib.rs\nD\tsrc/main.rs"
    );

    assert!(!workspace::pushed(&ws, "main", &id).unwrap());
    workspace::push(&ws, "main").unwrap();
    assert_eq!(git(&product, &["rev-parse", "main"]), id);
    assert!(workspace::pushed(&ws, "main", &id).unwrap());
    assert!(
        workspace::pushed(&ws, "main", start.head.as_deref().unwrap()).unwrap(),
        "an ancestor is contained"
    );
    assert!(
        !workspace::pushed(&ws, "other", &id).unwrap(),
        "no such branch"
    );

    // Opening again changes nothing.
    write(&ws, "scratch.txt", "work in progress\n");
    workspace::clone_or_open(product.to_str().unwrap(), "main", &ws).unwrap();
    assert_eq!(
        std::fs::read_to_string(ws.join("scratch.txt")).unwrap(),
        "work in progress\n"
    );
    std::fs::remove_file(ws.join("scratch.txt")).unwrap();

    // Someone pushes meanwhile: our push rebases onto it.
    let other = tmp.path().join("other");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            product.to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    );
    write(&other, "CHANGELOG.md", "- their change\n");
    let theirs = commit_all(&other, "Their change");
    git(&other, &["push", "-q", "origin", "main"]);
    write(
        &ws,
        "src/lib.rs",
        "pub fn hello() -> &'static str { \"hi\" }\n",
    );
    let ours = workspace::commit_all(&ws, "Say hi", &agent())
        .unwrap()
        .unwrap();
    workspace::push(&ws, "main").unwrap();
    let head = git(&product, &["rev-parse", "main"]);
    assert_ne!(head, ours, "rebased, so a new id");
    assert_eq!(git(&product, &["rev-parse", "main^"]), theirs);
    assert_eq!(
        git(&product, &["log", "-1", "--format=%an|%s", "main"]),
        "Dev Agent|Say hi"
    );
    assert_eq!(
        git(&product, &["show", "main:CHANGELOG.md"]),
        "- their change"
    );
    let state = workspace::state(&ws).unwrap();
    assert_eq!(state.head.as_deref(), Some(head.as_str()));
    assert!(state.clean);
    assert!(workspace::pushed(&ws, "main", &head).unwrap());
    assert_eq!(
        std::fs::read_to_string(ws.join("CHANGELOG.md")).unwrap(),
        "- their change\n"
    );

    // A conflicting remote change is reported, not forced over.
    git(&other, &["pull", "-q", "--rebase"]);
    write(&other, "README.md", "# theirs\n");
    let conflicting = commit_all(&other, "Their README");
    git(&other, &["push", "-q", "origin", "main"]);
    write(&ws, "README.md", "# ours\n");
    let mine = workspace::commit_all(&ws, "Our README", &agent())
        .unwrap()
        .unwrap();
    assert!(matches!(
        workspace::push(&ws, "main"),
        Err(GitopsError::RebaseConflict { .. })
    ));
    assert_eq!(git(&product, &["rev-parse", "main"]), conflicting);
    assert_eq!(
        workspace::state(&ws).unwrap().head.as_deref(),
        Some(mine.as_str()),
        "left as it was"
    );
    assert!(workspace::state(&ws).unwrap().clean);
    assert!(
        !ws.join(".git/rebase-merge").exists(),
        "no rebase left in progress"
    );
}

#[test]
fn pushing_to_a_non_bare_repository_is_an_error_not_a_silent_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let product = company_repo(&tmp.path().join("product"));
    let ws = tmp.path().join("ws");
    workspace::clone_or_open(product.to_str().unwrap(), "main", &ws).unwrap();
    write(&ws, "a.txt", "a\n");
    workspace::commit_all(&ws, "A", &agent()).unwrap().unwrap();
    assert!(workspace::push(&ws, "main").is_err());
    assert_eq!(
        git(&product, &["log", "-1", "--format=%s"]),
        "declare the company"
    );
}

#[test]
fn workspace_on_an_empty_repository_and_a_new_branch() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.git");
    git(
        tmp.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            empty.to_str().unwrap(),
        ],
    );
    let ws = tmp.path().join("ws");
    workspace::clone_or_open(empty.to_str().unwrap(), "main", &ws).unwrap();
    assert_eq!(
        workspace::state(&ws).unwrap(),
        WorkspaceState {
            head: None,
            head_message: None,
            clean: true
        }
    );
    workspace::push(&ws, "main").unwrap();
    assert_eq!(
        workspace::commit_all(&ws, "nothing", &agent()).unwrap(),
        None
    );
    write(&ws, "README.md", "# new product\n");
    let first = workspace::commit_all(&ws, "First commit", &agent())
        .unwrap()
        .unwrap();
    workspace::push(&ws, "main").unwrap();
    assert_eq!(git(&empty, &["rev-parse", "main"]), first);
    assert_eq!(git(&empty, &["rev-list", "--count", "main"]), "1");

    // A branch the repository lacks starts from its default branch.
    let feature = tmp.path().join("feature");
    workspace::clone_or_open(empty.to_str().unwrap(), "task-7", &feature).unwrap();
    assert_eq!(
        workspace::state(&feature).unwrap().head.as_deref(),
        Some(first.as_str())
    );
    write(&feature, "feature.txt", "new\n");
    let work = workspace::commit_all(&feature, "Task 7", &agent())
        .unwrap()
        .unwrap();
    workspace::push(&feature, "task-7").unwrap();
    assert_eq!(git(&empty, &["rev-parse", "task-7"]), work);
    assert_eq!(
        git(&empty, &["rev-parse", "main"]),
        first,
        "main is untouched"
    );
}

#[test]
fn workspace_over_git_protocol() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("srv");
    std::fs::create_dir_all(&served).unwrap();
    bare_with(&served.join("product.git"), &[("README.md", "# p\n")]);
    let daemon = Daemon::start(&served);
    let url = daemon.url("product.git");
    let ws = tmp.path().join("ws");
    workspace::clone_or_open(&url, "main", &ws).unwrap();
    write(&ws, "a.txt", "a\n");
    let id = workspace::commit_all(&ws, "A", &agent()).unwrap().unwrap();

    let other = tmp.path().join("other");
    git(tmp.path(), &["clone", "-q", &url, other.to_str().unwrap()]);
    write(&other, "b.txt", "b\n");
    commit_all(&other, "B");
    git(&other, &["push", "-q", "origin", "main"]);

    workspace::push(&ws, "main").unwrap();
    let head = workspace::state(&ws).unwrap().head.unwrap();
    assert_ne!(head, id);
    assert!(workspace::pushed(&ws, "main", &head).unwrap());
    assert_eq!(
        git(&served.join("product.git"), &["log", "--format=%s", "main"]),
        "A\nB\ninitial"
    );
}
