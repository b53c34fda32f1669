//! Writeback, and product workspaces with their delivery, against real repositories: set up
//! and checked with the git CLI, served by `git daemon` for the remote cases.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/git_daemon.rs"]
mod git_daemon;

use std::path::{Path, PathBuf};

use cli::{commit_all, git, write};
use git_daemon::Daemon;
use proto::computer::{Computer, Local, Workspace, WorkspaceSpec};
use proto::gitops::delivery::{DeliveryError, Git, Prepared};
use proto::gitops::{FileChange, GitopsError, Identity, Writeback};
use proto::source::GitSource;
use tokio_util::sync::CancellationToken;

fn controller() -> Identity {
    Identity {
        name: "Proto Controller".into(),
        email: "proto@example.com".into(),
    }
}

/// The agent `dev` working for [`controller`]: the author of a product's work.
fn agent() -> Identity {
    Identity::agent("dev", &controller())
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

/// A task's workspace on a real [`Local`] computer, delivered through
/// [`proto::gitops::delivery`] as the controller does: commits authored by [`agent`] and
/// committed by [`controller`].
struct Task {
    rt: tokio::runtime::Runtime,
    computer: Local,
    spec: WorkspaceSpec,
    workspace: Workspace,
    cancel: CancellationToken,
}

impl Task {
    /// The workspace of task `task` on `branch` of `repo` (a path or URL), under `workdir`.
    fn open(workdir: &Path, repo: &str, branch: &str, task: &str) -> Task {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let computer = Local::new("here", workdir);
        let spec = WorkspaceSpec {
            repo: repo.into(),
            branch: branch.into(),
            task: task.into(),
        };
        let workspace = rt.block_on(computer.workspace(&spec)).unwrap();
        Task {
            rt,
            computer,
            spec,
            workspace,
            cancel: CancellationToken::new(),
        }
    }

    /// Asks the computer for the same workspace again (as a restarted task does).
    fn reopen(&self) {
        let again = self
            .rt
            .block_on(self.computer.workspace(&self.spec))
            .unwrap();
        assert_eq!(again.root(), self.dir());
    }

    fn dir(&self) -> &Path {
        self.workspace.root()
    }

    fn git(&self) -> Git<'_> {
        Git {
            computer: &self.computer,
            workspace: &self.workspace,
            cancel: &self.cancel,
        }
    }

    fn head(&self) -> Option<String> {
        self.rt.block_on(self.git().head()).unwrap()
    }

    /// The tests here change the files directly, as a command would, not through the
    /// computer: what the workspace's journal knew is void.
    fn changed_outside(&self) {
        self.workspace.journal().forget();
    }

    fn commit(&self, message: &str) -> Option<String> {
        self.changed_outside();
        self.rt
            .block_on(self.git().commit_all(message, &agent(), &controller()))
            .unwrap()
    }

    fn fetch_tip(&self, branch: &str) -> Option<String> {
        self.rt.block_on(self.git().fetch_tip(branch)).unwrap()
    }

    fn prepare(&self, branch: &str) -> Result<Prepared, DeliveryError> {
        self.changed_outside();
        self.rt
            .block_on(self.git().prepare(branch, &controller(), true))
    }

    fn push(&self, branch: &str, prepared: &Prepared) -> Result<String, DeliveryError> {
        self.rt
            .block_on(self.git().push(branch, prepared.tip.as_deref()))
    }
}

/// A clone of `repo` at `dir` that commits `file` and pushes it to main, as someone else
/// working on the product would; the commit's id.
fn someone_pushes(repo: &str, dir: &Path, file: &str, content: &str, message: &str) -> String {
    if !dir.exists() {
        git(
            dir.parent().unwrap(),
            &["clone", "-q", repo, dir.to_str().unwrap()],
        );
    }
    git(dir, &["pull", "-q", "--rebase", "origin", "main"]);
    write(dir, file, content);
    let id = commit_all(dir, message);
    git(dir, &["push", "-q", "origin", "main"]);
    id
}

fn clean(dir: &Path) -> bool {
    git(dir, &["status", "--porcelain", "--ignored"]).is_empty()
}

#[test]
fn delivery_round_trip_to_a_bare_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let product = tmp.path().join("hello-api.git");
    bare_with(
        &product,
        &[
            ("README.md", "# hello\n"),
            ("src/main.rs", "fn main() {}\n"),
        ],
    );
    let start = git(&product, &["rev-parse", "main"]);
    let task = Task::open(
        &tmp.path().join("work"),
        product.to_str().unwrap(),
        "main",
        "task-1",
    );
    let ws = task.dir();

    // The clone: the branch checked out, tracking origin's.
    assert_eq!(
        std::fs::read_to_string(ws.join("README.md")).unwrap(),
        "# hello\n"
    );
    assert_eq!(task.head(), Some(start.clone()));
    assert!(clean(ws));
    assert_eq!(
        git(ws, &["status", "--porcelain", "--branch"]),
        "## main...origin/main"
    );
    assert_eq!(task.commit("nothing"), None, "nothing to commit");

    // Additions, changes and deletions are committed, authored as the agent and committed
    // as the controller, with the whole message.
    write(ws, "src/lib.rs", "pub fn hello() {}\n");
    write(ws, "README.md", "# hello, world\n");
    std::fs::remove_file(ws.join("src/main.rs")).unwrap();
    assert!(!clean(ws));
    let id = task.commit("Add the library\n\nDetails.").unwrap();
    assert_eq!(task.head(), Some(id.clone()));
    assert!(clean(ws));
    assert_eq!(
        git(ws, &["log", "-1", "--format=%an <%ae>|%cn <%ce>|%P"]),
        format!("dev <dev@agents.example.com>|Proto Controller <proto@example.com>|{start}")
    );
    assert_eq!(
        git(ws, &["log", "-1", "--format=%B"]),
        "Add the library\n\nDetails."
    );
    assert_eq!(
        git(ws, &["show", "--name-status", "--format=", "HEAD"]),
        "M\tREADME.md\nA\tsrc/lib.rs\nD\tsrc/main.rs"
    );
    assert_eq!(task.commit("nothing more"), None);

    // Prepared on the branch it was built on: nothing to rebase, nothing published yet.
    let prepared = task.prepare("main").unwrap();
    assert_eq!(
        prepared,
        Prepared {
            tip: Some(start.clone()),
            head: Some(id.clone()),
            rebased: false,
            commits: vec![id.clone()],
        }
    );
    assert!(!prepared.up_to_date());
    assert_eq!(git(&product, &["rev-parse", "main"]), start);

    assert_eq!(task.push("main", &prepared).unwrap(), id);
    assert_eq!(git(&product, &["rev-parse", "main"]), id);
    assert_eq!(git(&product, &["rev-parse", "main^"]), start);
    assert_eq!(task.fetch_tip("main"), Some(id.clone()));
    assert!(task.prepare("main").unwrap().up_to_date(), "delivered");
    assert_eq!(task.fetch_tip("other"), None, "no such branch");

    // Opening again changes nothing; preparing leaves exactly the commit.
    write(ws, "scratch.txt", "work in progress\n");
    task.reopen();
    assert_eq!(
        std::fs::read_to_string(ws.join("scratch.txt")).unwrap(),
        "work in progress\n"
    );
    assert_eq!(task.head(), Some(id.clone()));
    let again = task.prepare("main").unwrap();
    assert!(again.up_to_date());
    assert!(!ws.join("scratch.txt").exists());
    assert!(clean(ws));
    git(&product, &["fsck", "--no-progress"]);
}

#[test]
fn delivery_rebases_onto_a_concurrent_push_keeping_the_authors() {
    let tmp = tempfile::tempdir().unwrap();
    let product = tmp.path().join("hello-api.git");
    bare_with(
        &product,
        &[
            ("README.md", "# hello\n"),
            ("src/lib.rs", "pub fn hello() {}\n"),
        ],
    );
    let url = product.to_str().unwrap();
    let task = Task::open(&tmp.path().join("work"), url, "main", "task-1");
    let ws = task.dir();

    // Someone pushes meanwhile.
    let theirs = someone_pushes(
        url,
        &tmp.path().join("other"),
        "CHANGELOG.md",
        "- their change\n",
        "Their change",
    );
    write(
        ws,
        "src/lib.rs",
        "pub fn hello() -> &'static str { \"hi\" }\n",
    );
    let ours = task.commit("Say hi").unwrap();

    let prepared = task.prepare("main").unwrap();
    assert_eq!(prepared.tip.as_deref(), Some(theirs.as_str()));
    assert!(prepared.rebased);
    let head = prepared.head.clone().unwrap();
    assert_ne!(head, ours, "rebased, so a new id");
    assert_eq!(task.head(), Some(head.clone()));
    assert_eq!(git(ws, &["rev-parse", "HEAD^"]), theirs);
    assert_eq!(
        std::fs::read_to_string(ws.join("CHANGELOG.md")).unwrap(),
        "- their change\n",
        "the workspace holds what will be published"
    );
    assert!(clean(ws));
    assert_eq!(
        git(&product, &["rev-parse", "main"]),
        theirs,
        "nothing pushed yet"
    );

    assert_eq!(task.push("main", &prepared).unwrap(), head);
    assert_eq!(git(&product, &["rev-parse", "main"]), head);
    assert_eq!(
        git(&product, &["log", "-2", "--format=%an|%cn|%s", "main"]),
        "dev|Proto Controller|Say hi\nFounder|Founder|Their change",
        "both commits, authors kept"
    );
    assert_eq!(
        git(&product, &["show", "main:CHANGELOG.md"]),
        "- their change"
    );
    assert_eq!(
        git(&product, &["show", "main:src/lib.rs"]),
        "pub fn hello() -> &'static str { \"hi\" }"
    );
    assert_eq!(git(&product, &["rev-list", "--count", "main"]), "3");
}

#[test]
fn delivery_reports_a_rebase_conflict_and_leaves_the_workspace_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let product = tmp.path().join("hello-api.git");
    bare_with(&product, &[("README.md", "# hello\n"), ("a.txt", "a\n")]);
    let url = product.to_str().unwrap();
    let task = Task::open(&tmp.path().join("work"), url, "main", "task-1");
    let ws = task.dir();

    let conflicting = someone_pushes(
        url,
        &tmp.path().join("other"),
        "README.md",
        "# theirs\n",
        "Their README",
    );
    write(ws, "README.md", "# ours\n");
    write(ws, "b.txt", "b\n");
    let mine = task.commit("Our README").unwrap();

    match task.prepare("main") {
        Err(DeliveryError::Conflict { branch, files, tip }) => {
            assert_eq!(branch, "main");
            assert_eq!(files, "README.md");
            assert_eq!(tip, conflicting);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(git(&product, &["rev-parse", "main"]), conflicting);
    assert_eq!(task.head(), Some(mine.clone()), "left as it was");
    assert!(clean(ws));
    assert_eq!(
        git(ws, &["status", "--porcelain", "--branch"]),
        "## main...origin/main [ahead 1, behind 1]",
        "on the branch, not mid-rebase"
    );
    for state in ["rebase-merge", "rebase-apply"] {
        assert!(
            !ws.join(".git").join(state).exists(),
            "no rebase left in progress ({state})"
        );
    }
    assert_eq!(
        std::fs::read_to_string(ws.join("README.md")).unwrap(),
        "# ours\n"
    );

    // A hook the work planted in the workspace does not run as the controller: the rebase
    // is tried (and conflicts again) instead of being stopped by it.
    let hook = ws.join(".git/hooks/pre-rebase");
    write(
        ws,
        ".git/hooks/pre-rebase",
        "#!/bin/sh\necho not now >&2\nexit 1\n",
    );
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    match task.prepare("main") {
        Err(DeliveryError::Conflict { files, .. }) => assert_eq!(files, "README.md"),
        other => panic!("expected the conflict again, got {other:?}"),
    }
    assert_eq!(task.head(), Some(mine));
    assert!(clean(ws));
}

#[test]
fn pushing_to_a_non_bare_repository_is_an_error_not_a_silent_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let product = company_repo(&tmp.path().join("product"));
    let before = git(&product, &["rev-parse", "main"]);
    let task = Task::open(
        &tmp.path().join("work"),
        product.to_str().unwrap(),
        "main",
        "task-1",
    );
    write(task.dir(), "a.txt", "a\n");
    let id = task.commit("A").unwrap();
    let prepared = task.prepare("main").unwrap();
    assert_eq!(prepared.tip.as_deref(), Some(before.as_str()));
    match task.push("main", &prepared) {
        Err(DeliveryError::Refused {
            branch, message, ..
        }) => {
            assert_eq!(branch, "main");
            assert!(message.contains("checked out"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(git(&product, &["rev-parse", "main"]), before);
    assert_eq!(
        git(&product, &["log", "-1", "--format=%s"]),
        "declare the company"
    );
    assert!(clean(&product));
    assert_eq!(task.head(), Some(id), "the work is kept to try again");
}

#[test]
fn delivery_creates_branches_on_an_empty_repository_with_a_lease_on_their_absence() {
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
    let url = empty.to_str().unwrap();
    let work = tmp.path().join("work");
    let task = Task::open(&work, url, "main", "task-1");
    let ws = task.dir();

    // Nothing at all: nothing to commit, nothing to push.
    assert_eq!(task.head(), None);
    assert!(clean(ws));
    assert_eq!(task.commit("nothing"), None);
    assert_eq!(task.fetch_tip("main"), None);
    let nothing = task.prepare("main").unwrap();
    assert_eq!(
        nothing,
        Prepared {
            tip: None,
            head: None,
            rebased: false,
            commits: vec![],
        }
    );
    assert!(nothing.up_to_date());
    assert!(matches!(
        task.push("main", &nothing),
        Err(DeliveryError::Git { .. })
    ));
    assert_eq!(git(&empty, &["for-each-ref"]), "", "still empty");

    // The first commit creates the branch.
    write(ws, "README.md", "# new product\n");
    let first = task.commit("First commit").unwrap();
    let prepared = task.prepare("main").unwrap();
    assert_eq!(
        prepared,
        Prepared {
            tip: None,
            head: Some(first.clone()),
            rebased: false,
            commits: vec![first.clone()],
        }
    );
    assert_eq!(task.push("main", &prepared).unwrap(), first);
    assert_eq!(git(&empty, &["rev-parse", "main"]), first);
    assert_eq!(git(&empty, &["rev-list", "--count", "main"]), "1");

    // A branch the repository lacks starts from its default branch; two tasks create it.
    let feature = Task::open(&work, url, "task-7", "task-7");
    let rival = Task::open(&work, url, "task-7", "task-7-rival");
    assert_eq!(feature.head(), Some(first.clone()));
    assert_eq!(
        std::fs::read_to_string(feature.dir().join("README.md")).unwrap(),
        "# new product\n"
    );
    assert_eq!(feature.fetch_tip("task-7"), None);
    write(feature.dir(), "feature.txt", "new\n");
    let ours = feature.commit("Task 7").unwrap();
    write(rival.dir(), "rival.txt", "mine\n");
    rival.commit("Task 7, again").unwrap();
    let prepared = feature.prepare("task-7").unwrap();
    let rival_prepared = rival.prepare("task-7").unwrap();
    assert_eq!(prepared.tip, None);
    assert_eq!(rival_prepared.tip, None);

    assert_eq!(feature.push("task-7", &prepared).unwrap(), ours);
    assert_eq!(git(&empty, &["rev-parse", "task-7"]), ours);
    assert_eq!(git(&empty, &["rev-parse", "task-7^"]), first);
    assert_eq!(git(&empty, &["rev-parse", "main"]), first, "main untouched");

    // The lease said "must not exist": the rival loses the race instead of overwriting.
    assert!(matches!(
        rival.push("task-7", &rival_prepared),
        Err(DeliveryError::Stale { .. })
    ));
    assert_eq!(git(&empty, &["rev-parse", "task-7"]), ours);
    let rebuilt = rival.prepare("task-7").unwrap();
    assert_eq!(rebuilt.tip.as_deref(), Some(ours.as_str()));
    assert!(rebuilt.rebased);
    let theirs = rival.push("task-7", &rebuilt).unwrap();
    assert_eq!(git(&empty, &["rev-parse", "task-7"]), theirs);
    assert_eq!(
        git(&empty, &["log", "--format=%s", "task-7"]),
        "Task 7, again\nTask 7\nFirst commit"
    );
}

#[test]
fn a_push_on_a_stale_lease_leaves_the_branch_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let product = tmp.path().join("hello-api.git");
    bare_with(&product, &[("README.md", "# hello\n")]);
    let start = git(&product, &["rev-parse", "main"]);
    let url = product.to_str().unwrap();
    let task = Task::open(&tmp.path().join("work"), url, "main", "task-1");
    write(task.dir(), "a.txt", "a\n");
    let ours = task.commit("A").unwrap();
    let prepared = task.prepare("main").unwrap();
    assert_eq!(prepared.tip.as_deref(), Some(start.as_str()));

    // The branch moves between prepare and push.
    let theirs = someone_pushes(url, &tmp.path().join("other"), "b.txt", "b\n", "B");
    match task.push("main", &prepared) {
        Err(DeliveryError::Stale { branch, .. }) => assert_eq!(branch, "main"),
        other => panic!("expected a stale lease, got {other:?}"),
    }
    assert_eq!(git(&product, &["rev-parse", "main"]), theirs);

    // A lease on the new tip for work that does not descend from it would be a force: refused
    // before anything is sent.
    assert_eq!(task.fetch_tip("main"), Some(theirs.clone()));
    let forced = Prepared {
        tip: Some(theirs.clone()),
        head: Some(ours.clone()),
        rebased: false,
        commits: vec![ours.clone()],
    };
    match task.push("main", &forced) {
        Err(DeliveryError::Git { detail, .. }) => {
            assert!(detail.contains("does not descend"), "{detail}")
        }
        other => panic!("expected a refusal to force, got {other:?}"),
    }
    assert_eq!(git(&product, &["rev-parse", "main"]), theirs);

    // Prepared again, it lands on top.
    let again = task.prepare("main").unwrap();
    assert!(again.rebased);
    let head = task.push("main", &again).unwrap();
    assert_eq!(git(&product, &["rev-parse", "main"]), head);
    assert_eq!(
        git(&product, &["log", "--format=%s", "main"]),
        "A\nB\ninitial"
    );
}

#[test]
fn delivery_over_git_protocol() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("srv");
    std::fs::create_dir_all(&served).unwrap();
    let product = served.join("product.git");
    bare_with(&product, &[("README.md", "# p\n")]);
    let daemon = Daemon::start(&served);
    let url = daemon.url("product.git");
    let task = Task::open(&tmp.path().join("work"), &url, "main", "task-1");
    assert_eq!(
        git(task.dir(), &["remote", "get-url", "origin"]),
        url,
        "the workspace's origin is the URL"
    );
    write(task.dir(), "a.txt", "a\n");
    let id = task.commit("A").unwrap();

    let theirs = someone_pushes(&url, &tmp.path().join("other"), "b.txt", "b\n", "B");
    assert_eq!(task.fetch_tip("main"), Some(theirs.clone()));
    let prepared = task.prepare("main").unwrap();
    assert!(prepared.rebased);
    let head = task.push("main", &prepared).unwrap();
    assert_ne!(head, id);
    assert_eq!(task.fetch_tip("main"), Some(head.clone()));
    assert_eq!(git(&product, &["rev-parse", "main"]), head);
    assert_eq!(
        git(&product, &["log", "--format=%s", "main"]),
        "A\nB\ninitial"
    );
    assert_eq!(task.fetch_tip("task-2"), None, "no such branch over git://");
}

#[test]
fn prepare_leaves_exactly_the_commit_after_a_check_changed_the_workspace() {
    let tmp = tempfile::tempdir().unwrap();
    let product = tmp.path().join("hello-api.git");
    bare_with(
        &product,
        &[("Cargo.lock", "# locked\n"), ("README.md", "# hello\n")],
    );
    let url = product.to_str().unwrap();
    let task = Task::open(&tmp.path().join("work"), url, "main", "task-1");
    let ws = task.dir();
    write(ws, "a.txt", "a\n");
    let ours = task.commit("A").unwrap();
    let prepared = task.prepare("main").unwrap();

    // The check rewrites a tracked file and leaves a file behind; then the push loses the race.
    write(ws, "Cargo.lock", "# rewritten by the check\n");
    write(ws, "check.log", "passed\n");
    let theirs = someone_pushes(url, &tmp.path().join("other"), "b.txt", "b\n", "B");
    assert!(matches!(
        task.push("main", &prepared),
        Err(DeliveryError::Stale { .. })
    ));

    // Prepared again: rebased, and the workspace is the commit to publish, nothing else.
    let again = task.prepare("main").unwrap();
    assert_eq!(again.tip.as_deref(), Some(theirs.as_str()));
    assert!(again.rebased);
    assert_ne!(again.head.as_deref(), Some(ours.as_str()));
    assert!(clean(ws), "{}", git(ws, &["status", "--porcelain"]));
    assert_eq!(
        std::fs::read_to_string(ws.join("Cargo.lock")).unwrap(),
        "# locked\n"
    );

    // The same when the branch has not moved.
    write(ws, "Cargo.lock", "# rewritten again\n");
    let same = task.prepare("main").unwrap();
    assert_eq!(same.head, again.head);
    assert!(!same.rebased);
    assert!(clean(ws), "{}", git(ws, &["status", "--porcelain"]));
    let head = task.push("main", &same).unwrap();
    assert_eq!(
        git(&product, &["show", &format!("{head}:Cargo.lock")]),
        "# locked"
    );
}

/// The bytes of objects a repository holds itself (not through alternates).
fn own_objects(dir: &Path) -> u64 {
    fn walk(path: &Path) -> u64 {
        std::fs::read_dir(path).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => walk(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
    }
    walk(&dir.join(".git/objects"))
}

#[test]
fn workspaces_share_the_mirror_history_and_see_every_push() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("app.git");
    // A product with some history: 40 commits of a 64 KiB file.
    bare_with(&repo, &[("README.md", "app\n")]);
    let url = repo.to_str().unwrap();
    let pusher = tmp.path().join("pusher");
    for n in 0..40 {
        let big: String = (0..4096).map(|i| format!("{n:04}{i:012}\n")).collect();
        someone_pushes(url, &pusher, "big.txt", &big, &format!("change {n}"));
    }
    let work = tmp.path().join("work");
    let mirrors = work.join(proto::gitops::workspace::MIRRORS);
    let first = work.join("first");
    proto::gitops::workspace::make(url, "main", &first, &mirrors).unwrap();
    assert_eq!(
        std::fs::read_to_string(first.join("README.md")).unwrap(),
        "app\n"
    );
    // The history stays in the mirror: the workspace holds (next to) nothing of its own.
    assert!(
        std::fs::read_to_string(first.join(".git/objects/info/alternates"))
            .unwrap()
            .contains(".mirrors"),
    );
    assert!(
        own_objects(&first) < 64 * 1024,
        "{} bytes",
        own_objects(&first)
    );
    // Its origin is the product itself, and it tracks the branch.
    assert_eq!(git(&first, &["remote", "get-url", "origin"]).trim(), url);
    assert_eq!(
        git(&first, &["rev-parse", "HEAD"]),
        git(&repo, &["rev-parse", "main"])
    );

    // A push after the first workspace: the next one is made at the new tip.
    let tip = someone_pushes(url, &pusher, "new.txt", "new\n", "later");
    let second = work.join("second");
    proto::gitops::workspace::make(url, "main", &second, &mirrors).unwrap();
    assert_eq!(git(&second, &["rev-parse", "HEAD"]).trim(), tip);
    assert_eq!(git(&second, &["rev-parse", "origin/main"]).trim(), tip);
    assert!(second.join("new.txt").exists());
    // A branch the product lacks starts at its default branch.
    let third = work.join("third");
    proto::gitops::workspace::make(url, "feature", &third, &mirrors).unwrap();
    assert_eq!(git(&third, &["rev-parse", "HEAD"]).trim(), tip);
    assert_eq!(
        git(&third, &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/feature"
    );
    // One mirror for the product, however many workspaces.
    let mirror_count = std::fs::read_dir(&mirrors)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .count();
    assert_eq!(mirror_count, 1);

    proto::gitops::workspace::remove(&second).unwrap();
    assert!(!second.exists());
    // The others still read their history through the mirror.
    assert!(git(&first, &["log", "--oneline"]).lines().count() > 40);
    assert!(clean(&first) && clean(&third));
}

#[test]
fn what_a_killed_run_leaves_in_a_mirror_or_workspace_is_never_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("app.git");
    bare_with(&repo, &[("README.md", "app\n")]);
    let url = repo.to_str().unwrap();
    let work = tmp.path().join("work");
    let mirrors = work.join(proto::gitops::workspace::MIRRORS);
    let ws = work.join("task");
    proto::gitops::workspace::make(url, "main", &ws, &mirrors).unwrap();
    proto::gitops::workspace::remove(&ws).unwrap();

    // What SIGKILL leaves: the lock files of a fetch cut short, a mirror half initialised
    // beside the real one, and a workspace half cloned.
    let mirror = std::fs::read_dir(&mirrors)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .unwrap();
    std::fs::write(mirror.join("refs/heads/main.lock"), "").unwrap();
    std::fs::write(mirror.join("packed-refs.lock"), "").unwrap();
    std::fs::write(mirror.join("shallow.lock"), "").unwrap();
    let pusher = tmp.path().join("pusher");
    let tip = someone_pushes(url, &pusher, "new.txt", "new\n", "later");
    let half = tmp.path().join("work/task.partial");
    std::fs::create_dir_all(half.join(".git")).unwrap();
    std::fs::write(half.join("junk.txt"), "left over\n").unwrap();

    proto::gitops::workspace::make(url, "main", &ws, &mirrors).unwrap();
    assert_eq!(git(&ws, &["rev-parse", "HEAD"]).trim(), tip);
    assert!(!ws.join("junk.txt").exists() && !half.exists());
    assert!(clean(&ws));
    // A mirror whose creation was cut short is made again, not used.
    let other = tmp.path().join("other.git");
    bare_with(&other, &[("OTHER.md", "other\n")]);
    let before: Vec<_> = std::fs::read_dir(&mirrors)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    proto::gitops::workspace::make(other.to_str().unwrap(), "main", &work.join("o"), &mirrors)
        .unwrap();
    let other_mirror = std::fs::read_dir(&mirrors)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir() && !before.contains(p))
        .unwrap();
    proto::gitops::workspace::remove(&work.join("o")).unwrap();
    std::fs::remove_dir_all(&other_mirror).unwrap();
    let mut half_mirror = other_mirror.as_os_str().to_owned();
    half_mirror.push(".partial");
    std::fs::create_dir_all(std::path::PathBuf::from(&half_mirror).join("refs")).unwrap();
    std::fs::write(
        std::path::PathBuf::from(&half_mirror).join("HEAD"),
        "garbage",
    )
    .unwrap();
    proto::gitops::workspace::make(other.to_str().unwrap(), "main", &work.join("o"), &mirrors)
        .unwrap();
    assert!(work.join("o/OTHER.md").exists());
    assert!(!std::path::Path::new(&half_mirror).exists());

    // `remove` also takes a half-made workspace with it.
    std::fs::create_dir_all(&half).unwrap();
    proto::gitops::workspace::remove(&ws).unwrap();
    assert!(!ws.exists() && !half.exists());
}

fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn a_delivered_workspace_is_reused_exactly_as_a_fresh_one_would_be() {
    use proto::gitops::workspace::{MIRRORS, make, recycle};
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("app.git");
    bare_with(
        &repo,
        &[
            ("keep.txt", "keep\n"),
            ("gone.txt", "gone\n"),
            ("changed.txt", "one\n"),
        ],
    );
    let url = repo.to_str().unwrap();
    let work = tmp.path().join("work");
    let mirrors = work.join(MIRRORS);
    let first = work.join("first");
    make(url, "main", &first, &mirrors).unwrap();
    let kept = inode(&first.join("keep.txt"));

    // What a finished task may leave behind: files beside the commit, an edit, and things
    // planted in `.git` that would run or mislead git in the next task.
    write(&first, "untracked.txt", "x\n");
    write(&first, "build/out.o", "x\n");
    write(&first, ".git/info/exclude", "build/\nuntracked.txt\n");
    write(&first, "changed.txt", "edited, never committed\n");
    let marker = tmp.path().join("hook-ran");
    write(
        &first,
        ".git/hooks/post-checkout",
        &format!("#!/bin/sh\ntouch {}\n", marker.display()),
    );
    git(&first, &["config", "url./nowhere/.insteadOf", url]);
    git(&first, &["config", "alias.status", "log"]);
    recycle(url, &first, &mirrors, None).unwrap();
    assert!(!first.exists(), "the spare moved beside the mirror");

    // Someone changes, removes and adds files meanwhile.
    let pusher = tmp.path().join("pusher");
    git(tmp.path(), &["clone", "-q", url, pusher.to_str().unwrap()]);
    write(&pusher, "changed.txt", "two\n");
    write(&pusher, "new.txt", "new\n");
    git(&pusher, &["rm", "-q", "gone.txt"]);
    let tip = commit_all(&pusher, "later");
    git(&pusher, &["push", "-q", "origin", "main"]);

    let second = work.join("second");
    make(url, "main", &second, &mirrors).unwrap();
    // Reused: the unchanged file was not written again...
    assert_eq!(inode(&second.join("keep.txt")), kept);
    // ...and the workspace is the new commit exactly, as a fresh clone would be.
    assert_eq!(git(&second, &["rev-parse", "HEAD"]).trim(), tip);
    assert_eq!(git(&second, &["rev-parse", "origin/main"]).trim(), tip);
    assert!(clean(&second), "{}", git(&second, &["status", "--ignored"]));
    let mut files = git(&second, &["ls-files"])
        .lines()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    files.sort();
    assert_eq!(files, ["changed.txt", "keep.txt", "new.txt"]);
    assert!(!second.join("untracked.txt").exists() && !second.join("build").exists());
    assert_eq!(
        std::fs::read_to_string(second.join("changed.txt")).unwrap(),
        "two\n"
    );
    // Nothing planted in `.git` survived.
    assert!(!marker.exists(), "a planted hook ran");
    assert!(!second.join(".git/hooks/post-checkout").exists());
    let config = std::fs::read_to_string(second.join(".git/config")).unwrap();
    assert!(
        !config.contains("insteadOf") && !config.contains("alias"),
        "{config}"
    );
    assert_eq!(git(&second, &["remote", "get-url", "origin"]).trim(), url);
    assert_eq!(
        git(&second, &["rev-parse", "--abbrev-ref", "main@{upstream}"]).trim(),
        "origin/main"
    );
    assert!(
        std::fs::read_to_string(second.join(".git/objects/info/alternates"))
            .unwrap()
            .contains(MIRRORS)
    );

    // An index that tells git to look past a file is not trusted: that spare is dropped and
    // the workspace cloned afresh, so the tampered file never reaches the next task.
    git(&second, &["update-index", "--assume-unchanged", "keep.txt"]);
    write(&second, "keep.txt", "tampered\n");
    assert!(clean(&second), "git looks past the tampered file");
    recycle(url, &second, &mirrors, None).unwrap();
    let third = work.join("third");
    make(url, "main", &third, &mirrors).unwrap();
    assert_eq!(
        std::fs::read_to_string(third.join("keep.txt")).unwrap(),
        "keep\n"
    );
    assert!(clean(&third));

    // A new branch made from a spare starts at the default branch, like a fresh one.
    recycle(url, &third, &mirrors, None).unwrap();
    let fourth = work.join("fourth");
    make(url, "feature", &fourth, &mirrors).unwrap();
    assert_eq!(git(&fourth, &["rev-parse", "HEAD"]).trim(), tip);
    assert_eq!(
        git(&fourth, &["symbolic-ref", "HEAD"]).trim(),
        "refs/heads/feature"
    );
    assert!(clean(&fourth));

    // A spare half made into a workspace when the controller was killed is not trusted:
    // it is the `.partial` that `remove` (called before every attempt) takes away.
    recycle(url, &fourth, &mirrors, None).unwrap();
    let fifth = work.join("fifth");
    let half = work.join("fifth.partial");
    let spares = std::fs::read_dir(&mirrors)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".spares"))
        .unwrap();
    let spare = std::fs::read_dir(&spares)
        .unwrap()
        .flatten()
        .next()
        .unwrap();
    std::fs::rename(spare.path(), &half).unwrap();
    std::fs::rename(half.join(".git"), half.join(".proto-old-git")).unwrap();
    proto::gitops::workspace::remove(&fifth).unwrap();
    assert!(!half.exists());
    make(url, "main", &fifth, &mirrors).unwrap();
    assert!(clean(&fifth));
    assert_eq!(git(&fifth, &["rev-parse", "HEAD"]).trim(), tip);
}

#[test]
fn writeback_to_a_checkout_waits_for_the_users_git_and_keeps_what_they_staged() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("company");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    write(&repo, "company.yaml", "kind: Company\n");
    write(&repo, ".proto/status.yaml", "status: {}\n");
    commit_all(&repo, "declare the company");
    let source = GitSource::open(
        repo.to_str().unwrap(),
        None,
        None,
        &tmp.path().join("cache"),
    )
    .unwrap();
    let writeback = Writeback::new(&source, None, controller(), false).unwrap();

    // The user stages a new goal, and their git is still holding the index when the
    // controller records.
    write(&repo, "second.yaml", "kind: Goal\n");
    git(&repo, &["add", "second.yaml"]);
    let lock = repo.join(".git/index.lock");
    std::fs::write(&lock, "").unwrap();
    let recording = std::thread::spawn(move || {
        writeback
            .commit(
                &[write_change(
                    ".proto/status.yaml",
                    "status: {ready: true}\n",
                )],
                "proto: record",
            )
            .unwrap()
            .unwrap()
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::remove_file(&lock).unwrap();
    let id = recording.join().unwrap();

    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), id);
    // What the user staged is still staged, and the records are in the index as committed.
    assert_eq!(
        git(&repo, &["diff", "--cached", "--name-only"]).trim(),
        "second.yaml"
    );
    assert_eq!(
        git(&repo, &["status", "--porcelain"]).trim(),
        "A  second.yaml"
    );
    git(&repo, &["commit", "-q", "-m", "Add a second goal"]);
    assert!(git(&repo, &["show", "HEAD:.proto/status.yaml"]).contains("ready: true"));
}

#[test]
fn a_spare_a_left_over_process_still_works_in_is_not_reused() {
    use proto::gitops::workspace::{MIRRORS, make, recycle};
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("app.git");
    bare_with(&repo, &[("keep.txt", "keep\n")]);
    let url = repo.to_str().unwrap();
    let mirrors = tmp.path().join("work").join(MIRRORS);
    let first = tmp.path().join("work/first");
    make(url, "main", &first, &mirrors).unwrap();
    // A command the last task left running, in its workspace, that nothing stopped.
    let mut left = std::process::Command::new("sleep")
        .arg("30")
        .current_dir(&first)
        .spawn()
        .unwrap();
    recycle(url, &first, &mirrors, None).unwrap();
    let second = tmp.path().join("work/second");
    make(url, "main", &second, &mirrors).unwrap();
    // Cloned afresh: the folder the process works in was removed, not handed on.
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", left.id())).unwrap();
    left.kill().unwrap();
    left.wait().unwrap();
    assert!(
        cwd.to_string_lossy().ends_with(" (deleted)"),
        "the process still works in {}",
        cwd.display()
    );
    assert!(clean(&second));
}

/// The engine fetches the company into the cache clone while the record writer commits and
/// pushes there: neither may fail for the other holding the cache's refs (a failed fetch
/// waits for a retry, and a pushed goal with it).
#[test]
fn fetches_and_record_commits_in_one_cache_do_not_fail_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let server = tmp.path().join("company.git");
    bare_with(&server, &[("company.yaml", "kind: Company\n")]);
    let url = format!("file://{}", server.display());
    let source =
        std::sync::Arc::new(GitSource::open(&url, None, None, &tmp.path().join("cache")).unwrap());
    let writeback = Writeback::new(&source, None, controller(), true).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fetcher = {
        let (source, done) = (source.clone(), done.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut fetches = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                fetches += 1;
                if let Err(e) = source.fetch() {
                    failures.push(e.to_string());
                }
            }
            (fetches, failures)
        })
    };
    for n in 0..60 {
        writeback
            .commit(
                &[append(
                    ".proto/audit/log.jsonl",
                    &format!("{{\"n\":{n}}}\n"),
                )],
                "proto: record",
            )
            .unwrap()
            .unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (fetches, failures) = fetcher.join().unwrap();
    assert!(fetches > 1, "the fetches ran beside the commits");
    assert!(
        failures.is_empty(),
        "{} of {fetches} fetches failed: {:?}",
        failures.len(),
        failures.first()
    );
    let log = git(&server, &["show", "main:.proto/audit/log.jsonl"]);
    let history = git(&server, &["log", "--format=%h %p %s", "main"]);
    assert_eq!(
        log.lines().count(),
        60,
        "every record reached the remote:\n{log}\n{history}"
    );
}

/// A record commit that does not reach the remote (refused, or the remote gone) is not
/// kept in the cache: once the remote takes pushes again, the same changes are written once,
/// neither reported as already there nor appended twice.
#[test]
fn a_writeback_that_did_not_reach_the_remote_is_written_once_when_it_can() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("srv");
    std::fs::create_dir_all(&served).unwrap();
    let server = served.join("company.git");
    bare_with(&server, &[("company.yaml", "kind: Company\n")]);
    let daemon = Daemon::start(&served);
    let url = daemon.url("company.git");
    let source = GitSource::open(&url, None, None, &tmp.path().join("cache")).unwrap();
    let writeback = Writeback::new(&source, None, controller(), true).unwrap();
    let changes = [
        write_change(".proto/proposal.yaml", "kind: Goal\n"),
        append(".proto/audit/log.jsonl", "{\"n\":1}\n"),
    ];
    // Refused by the server's hook.
    let hook = server.join("hooks/pre-receive");
    std::fs::write(&hook, "#!/bin/sh\nexit 1\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let refused = writeback.commit(&changes, "proto: refused");
    assert!(
        matches!(&refused, Err(GitopsError::PushRejected { message, .. }) if message.contains("declined")),
        "{refused:?}"
    );
    std::fs::remove_file(&hook).unwrap();
    // The remote gone while pushing.
    let away = served.join("away.git");
    std::fs::rename(&server, &away).unwrap();
    assert!(writeback.commit(&changes, "proto: unreachable").is_err());
    std::fs::rename(&away, &server).unwrap();
    let id = writeback
        .commit(&changes, "proto: taken")
        .unwrap()
        .expect("the changes are not on the remote: they are written");
    assert_eq!(git(&server, &["rev-parse", "main"]), id);
    assert_eq!(
        git(&server, &["show", "main:.proto/audit/log.jsonl"]),
        "{\"n\":1}",
        "appended once"
    );
    assert_eq!(
        git(&server, &["show", "main:.proto/proposal.yaml"]),
        "kind: Goal"
    );
}

/// A controller killed after its record commit reached the remote, before its cache (and
/// its store) knew, sends the same audit lines again from its stale cache: they are
/// appended once.
#[test]
fn audit_lines_sent_again_after_a_kill_are_appended_once() {
    let tmp = tempfile::tempdir().unwrap();
    let server = tmp.path().join("company.git");
    bare_with(&server, &[("company.yaml", "kind: Company\n")]);
    let url = format!("file://{}", server.display());
    let source = GitSource::open(&url, None, None, &tmp.path().join("cache")).unwrap();
    let cache = source.repository_path().to_path_buf();
    let writeback = Writeback::new(&source, None, controller(), true).unwrap();
    let before = git(&cache, &["rev-parse", "main"]);
    let lines = append(".proto/audit/log.jsonl", "{\"id\":1}\n{\"id\":2}\n");
    writeback
        .commit(std::slice::from_ref(&lines), "proto: first")
        .unwrap()
        .unwrap();
    // The cache as a kill right after the push left it.
    git(&cache, &["update-ref", "refs/heads/main", &before]);
    let again = writeback
        .commit(
            &[lines, write_change(".proto/status.yaml", "status: later\n")],
            "proto: again",
        )
        .unwrap();
    assert!(again.is_some(), "the status is new");
    assert_eq!(
        git(&server, &["show", "main:.proto/audit/log.jsonl"]),
        "{\"id\":1}\n{\"id\":2}"
    );
}

/// A process killed while it moved a ref leaves git's lock file behind, which refuses every
/// later move. The controller's cache clone is its own: a lock older than a moment is taken
/// for such a leftover when the cache is opened, while a fresh one (a live process's) stays.
#[test]
fn a_lock_a_killed_process_left_in_the_cache_does_not_stop_the_records() {
    let tmp = tempfile::tempdir().unwrap();
    let server = tmp.path().join("company.git");
    bare_with(&server, &[("company.yaml", "kind: Company\n")]);
    let url = format!("file://{}", server.display());
    let cache_dir = tmp.path().join("cache");
    let cache = GitSource::open(&url, None, None, &cache_dir)
        .unwrap()
        .repository_path()
        .to_path_buf();
    let left = cache.join("refs/heads/main.lock");
    std::fs::write(&left, "").unwrap();
    let fresh = cache.join("refs/heads/other.lock");
    std::fs::write(&fresh, "").unwrap();
    let status = std::process::Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(&left)
        .status()
        .unwrap();
    assert!(status.success());
    let source = GitSource::open(&url, None, None, &cache_dir).unwrap();
    assert!(!left.exists(), "the old lock is taken for a leftover");
    assert!(fresh.exists(), "a fresh lock belongs to someone alive");
    let writeback = Writeback::new(&source, None, controller(), true).unwrap();
    let id = writeback
        .commit(&[append(".proto/audit/log.jsonl", "{}\n")], "proto: record")
        .unwrap()
        .unwrap();
    assert_eq!(git(&server, &["rev-parse", "main"]), id);
    source.fetch().unwrap();
}
