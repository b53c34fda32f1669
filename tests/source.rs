//! The git source against real repositories: made and changed with the git CLI, served by
//! `git daemon` for the remote cases.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/git_daemon.rs"]
mod git_daemon;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cli::{commit_all, git, write};
use git_daemon::Daemon;
use proto::source::{GitSource, SourceError, watch};
use proto::spec::FileTree;

/// A working repository with a company declared in `company/`, the controller's folders
/// inside it, and a file outside it.
fn company_repo(root: &Path) -> PathBuf {
    let repo = root.join("company");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    write(&repo, "README.md", "outside the declaration\n");
    write(&repo, "company/company.yaml", "kind: Company\n");
    write(&repo, "company/goals/uptime.yaml", "kind: Goal\n");
    write(&repo, "company/.proto/status.yaml", "status: {}\n");
    write(&repo, "company/approvals/req-1.yaml", "approval\n");
    commit_all(&repo, "declare the company");
    repo
}

#[test]
fn local_repository_with_a_working_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = company_repo(tmp.path());
    let cache = tmp.path().join("cache");
    let source = GitSource::open(repo.to_str().unwrap(), None, Some("company/"), &cache).unwrap();
    assert_eq!(source.branch(), "main");
    assert_eq!(source.subpath(), "company");
    assert!(!source.is_remote());
    assert_eq!(
        source.repository_path(),
        std::fs::canonicalize(&repo).unwrap()
    );
    assert!(source.label().contains("main"), "{}", source.label());
    source.fetch().unwrap();

    let head = source.head().unwrap();
    assert_eq!(head, git(&repo, &["rev-parse", "HEAD"]));

    // Uncommitted work is not the declaration.
    write(&repo, "company/goals/draft.yaml", "kind: Goal\n");
    let tree = source.snapshot(&head).unwrap();
    assert_eq!(tree.files().unwrap(), ["company.yaml", "goals/uptime.yaml"]);
    assert_eq!(tree.read("goals/uptime.yaml").unwrap(), b"kind: Goal\n");
    assert!(
        tree.read(".proto/status.yaml").is_err(),
        "the controller's files are no declaration"
    );
    assert!(tree.read("approvals/req-1.yaml").is_err());
    assert!(tree.read("../README.md").is_err());
    std::fs::remove_file(repo.join("company/goals/draft.yaml")).unwrap();
    // What the controller recorded is read from the same commit, folder by folder.
    let records = source.controller_files(&head, ".proto").unwrap();
    assert_eq!(
        records,
        [(".proto/status.yaml".to_string(), b"status: {}\n".to_vec())]
    );
    assert!(
        source
            .controller_files(&head, ".proto/knowledge")
            .unwrap()
            .is_empty()
    );

    // The controller's own commit, and a change outside the folder: nothing to reconcile.
    write(
        &repo,
        "company/.proto/status.yaml",
        "status: {ready: true}\n",
    );
    write(&repo, "company/approvals/req-2.yaml", "approval\n");
    let controller = commit_all(&repo, "controller records");
    assert!(source.only_controller_changes(&head, &controller).unwrap());
    write(&repo, "README.md", "still outside\n");
    let outside = commit_all(&repo, "docs");
    assert!(
        source
            .only_controller_changes(&controller, &outside)
            .unwrap()
    );
    assert!(source.only_controller_changes(&outside, &outside).unwrap());
    // A goal changed: reconcile.
    write(&repo, "company/goals/uptime.yaml", "kind: Goal\nspec: {}\n");
    let goal = commit_all(&repo, "tune a goal");
    assert!(!source.only_controller_changes(&outside, &goal).unwrap());
    assert!(!source.only_controller_changes(&head, &goal).unwrap());
    assert_eq!(source.head().unwrap(), goal);

    // Product repositories sit next to the company repository.
    let parent = std::fs::canonicalize(tmp.path()).unwrap();
    assert_eq!(
        source.resolve_repo("../hello-api.git"),
        parent.join("hello-api.git").to_str().unwrap()
    );
    assert_eq!(
        source.resolve_repo("https://example.com/x.git"),
        "https://example.com/x.git"
    );
    assert_eq!(
        source.resolve_repo("git@example.com:org/x.git"),
        "git@example.com:org/x.git"
    );
    assert_eq!(source.resolve_repo("/srv/x.git"), "/srv/x.git");

    // Nothing was cloned for a local repository.
    assert!(!cache.exists());
}

#[test]
fn local_bare_repository_and_branches() {
    let tmp = tempfile::tempdir().unwrap();
    let work = company_repo(tmp.path());
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
    git(&work, &["checkout", "-q", "-b", "staging"]);
    write(&work, "company/goals/staging.yaml", "kind: Goal\n");
    let staging = commit_all(&work, "staging goal");
    git(&work, &["push", "-q", bare.to_str().unwrap(), "staging"]);

    let cache = tmp.path().join("cache");
    let source = GitSource::open(bare.to_str().unwrap(), None, None, &cache).unwrap();
    assert_eq!(source.branch(), "main");
    assert_eq!(source.head().unwrap(), git(&bare, &["rev-parse", "main"]));
    let tree = source.snapshot(&source.head().unwrap()).unwrap();
    assert_eq!(
        tree.files().unwrap(),
        [
            "README.md",
            "company/.proto/status.yaml",
            "company/approvals/req-1.yaml",
            "company/company.yaml",
            "company/goals/uptime.yaml"
        ],
        "only the root's controller folders are skipped"
    );

    let staged = GitSource::open(
        bare.to_str().unwrap(),
        Some("staging"),
        Some("company"),
        &cache,
    )
    .unwrap();
    assert_eq!(staged.head().unwrap(), staging);
    let tree = staged.snapshot(&staging).unwrap();
    assert_eq!(
        tree.files().unwrap(),
        ["company.yaml", "goals/staging.yaml", "goals/uptime.yaml"]
    );
    let parent = std::fs::canonicalize(tmp.path()).unwrap();
    assert_eq!(
        staged.resolve_repo("../docs.git"),
        parent.join("docs.git").to_str().unwrap()
    );

    let missing = GitSource::open(bare.to_str().unwrap(), Some("nope"), None, &cache).unwrap();
    assert!(matches!(missing.head(), Err(SourceError::NoBranch { .. })));
    let elsewhere = GitSource::open(bare.to_str().unwrap(), None, Some("nowhere"), &cache).unwrap();
    assert!(matches!(
        elsewhere.snapshot("main"),
        Err(SourceError::NoPath { .. })
    ));

    let not_repo = tmp.path().join("plain");
    std::fs::create_dir_all(&not_repo).unwrap();
    assert!(matches!(
        GitSource::open(not_repo.to_str().unwrap(), None, None, &cache),
        Err(SourceError::NotARepository(_))
    ));
    assert!(matches!(
        GitSource::open(
            tmp.path().join("absent").to_str().unwrap(),
            None,
            None,
            &cache
        ),
        Err(SourceError::NotARepository(_))
    ));
}

#[test]
fn oversized_files_reach_the_loader_which_refuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = company_repo(tmp.path());
    write(
        &repo,
        "company/goals/huge.yaml",
        &"#".repeat(5 * 1024 * 1024),
    );
    let head = commit_all(&repo, "a huge file");
    let source = GitSource::open(
        repo.to_str().unwrap(),
        None,
        Some("company"),
        &tmp.path().join("cache"),
    )
    .unwrap();
    let tree = source.snapshot(&head).unwrap();
    assert!(
        tree.files()
            .unwrap()
            .contains(&"goals/huge.yaml".to_string())
    );
    let (_, diagnostics) = proto::spec::load(&tree);
    assert!(
        diagnostics
            .iter()
            .any(|d| format!("{d:?}").contains("limited to")),
        "{diagnostics:#?}"
    );
}

#[test]
fn remote_over_git_protocol() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("srv");
    std::fs::create_dir_all(&served).unwrap();
    let work = company_repo(tmp.path());
    git(
        &served,
        &["init", "-q", "--bare", "-b", "main", "company.git"],
    );
    git(
        &work,
        &[
            "push",
            "-q",
            served.join("company.git").to_str().unwrap(),
            "main",
        ],
    );
    let daemon = Daemon::start(&served);
    let url = daemon.url("company.git");

    let cache = tmp.path().join("cache");
    let source = GitSource::open(&url, None, Some("company"), &cache).unwrap();
    assert!(source.is_remote());
    assert_eq!(source.branch(), "main", "the remote's HEAD branch");
    assert!(source.repository_path().starts_with(&cache));
    assert!(
        source.repository_path().join("HEAD").exists(),
        "a bare clone in the cache"
    );
    let first = source.head().unwrap();
    assert_eq!(first, git(&work, &["rev-parse", "HEAD"]));
    assert_eq!(
        source.snapshot(&first).unwrap().files().unwrap(),
        ["company.yaml", "goals/uptime.yaml"]
    );

    // Someone else pushes; the source sees it after a fetch.
    let other = tmp.path().join("other");
    git(tmp.path(), &["clone", "-q", &url, other.to_str().unwrap()]);
    write(&other, "company/goals/new.yaml", "kind: Goal\n");
    let pushed = commit_all(&other, "a new goal");
    git(&other, &["push", "-q", "origin", "main"]);
    assert_eq!(
        source.head().unwrap(),
        first,
        "nothing moves before a fetch"
    );
    source.fetch().unwrap();
    assert_eq!(source.head().unwrap(), pushed);
    assert!(!source.only_controller_changes(&first, &pushed).unwrap());
    assert!(
        source
            .snapshot(&pushed)
            .unwrap()
            .files()
            .unwrap()
            .contains(&"goals/new.yaml".to_string())
    );

    // A history rewritten upstream replaces the cache's: the cache is ours, the remote is
    // the truth.
    git(&other, &["reset", "-q", "--hard", &first]);
    write(&other, "company/goals/other.yaml", "kind: Goal\n");
    let rewritten = commit_all(&other, "another goal");
    git(&other, &["push", "-q", "--force", "origin", "main"]);
    source.fetch().unwrap();
    assert_eq!(source.head().unwrap(), rewritten);

    // Opening again reuses the cache.
    let again = GitSource::open(&url, None, Some("company"), &cache).unwrap();
    assert_eq!(again.repository_path(), source.repository_path());
    assert_eq!(again.head().unwrap(), rewritten);
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);

    assert_eq!(
        source.resolve_repo("../hello-api.git"),
        daemon.url("hello-api.git")
    );
    assert_eq!(
        source.resolve_repo("https://example.com/x.git"),
        "https://example.com/x.git"
    );

    let empty_cache = tmp.path().join("cache2");
    git(
        &served,
        &["init", "-q", "--bare", "-b", "main", "empty.git"],
    );
    assert!(matches!(
        GitSource::open(&daemon.url("empty.git"), None, None, &empty_cache),
        Err(SourceError::NoBranch { .. })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_to_a_local_repository_triggers() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = company_repo(tmp.path());
    let source = GitSource::open(
        repo.to_str().unwrap(),
        None,
        None,
        &tmp.path().join("cache"),
    )
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let _watch = watch::watch(&source, Duration::from_secs(3600), tx).unwrap();
    // Reading the repository (as the engine does on every trigger) must not trigger.
    source.head().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    while rx.try_recv().is_ok() {}
    source.head().unwrap();
    source.snapshot("main").unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "reads trigger nothing"
    );

    write(&repo, "company/goals/new.yaml", "kind: Goal\n");
    let new = commit_all(&repo, "a new goal");
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a commit triggers within a few seconds")
        .expect("the watch is alive");
    assert_eq!(source.head().unwrap(), new);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_is_polled_until_the_receiver_goes() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("srv");
    std::fs::create_dir_all(&served).unwrap();
    let work = company_repo(tmp.path());
    git(
        &served,
        &["init", "-q", "--bare", "-b", "main", "company.git"],
    );
    git(
        &work,
        &[
            "push",
            "-q",
            served.join("company.git").to_str().unwrap(),
            "main",
        ],
    );
    let daemon = Daemon::start(&served);
    let source = GitSource::open(
        &daemon.url("company.git"),
        None,
        None,
        &tmp.path().join("cache"),
    )
    .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let watch = watch::watch(&source, Duration::from_millis(50), tx).unwrap();
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("polls arrive")
            .expect("the poller is alive");
    }
    drop(watch);
    // Dropping the watch stops the poller, which drops its sender.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while rx.recv().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "the poller stops when the watch is dropped");
}

/// The engine runs on any `Source`: a declaration with no repository behind it is loaded,
/// validated and worked like one from git, its goal delivered to the product, and with no
/// company repository the record stays in the store.
#[tokio::test]
async fn the_engine_runs_on_a_source_that_is_not_git() {
    let tmp = tempfile::tempdir().unwrap();
    git(
        tmp.path(),
        &["init", "-q", "--bare", "-b", "main", "app.git"],
    );
    let goal = "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: hello}\nspec:\n  product: app\n  owner: ceo\n  description: hello.txt exists.\n  check: {file: {path: hello.txt}}\n  playbook:\n    - write: {path: hello.txt, content: \"hi\\n\"}\n";
    let source = Flaky::new(
        "memory",
        vec![
            ("company.yaml".into(), COMPANY.into()),
            ("goals/hello.yaml".into(), goal.into()),
        ],
        tmp.path(),
    );
    let options = proto::engine::Options {
        state_dir: tmp.path().join("state"),
        once: true,
        ..Default::default()
    };
    let engine =
        proto::engine::Engine::with_source(std::sync::Arc::new(source), None, options).unwrap();
    let (_keep, trigger) = tokio::sync::mpsc::channel(1);
    let summary = engine
        .run(tokio_util::sync::CancellationToken::new(), trigger)
        .await
        .unwrap();
    let hello = summary.status.goal("hello").unwrap();
    assert_eq!(
        (hello.ready.as_str(), hello.reason.as_str()),
        ("True", "CheckPassed")
    );
    assert_eq!(summary.status.source, "memory");
    assert!(summary.commits.is_empty());
    assert_eq!(
        git(&tmp.path().join("app.git"), &["show", "main:hello.txt"]),
        "hi"
    );
}

/// A company of one agent, one computer on this host and one product, `app.git` beside
/// the test's folder.
const COMPANY: &str = "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {name: mem}\nspec: {mission: Test., ceo: ceo}\n---\napiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: ceo}\nspec: {title: CEO, description: Runs it., prompt: Run it., tools: [Read, Write]}\n---\napiVersion: proto.dev/v1alpha1\nkind: Computer\nmetadata: {name: here}\nspec: {local: {}, capacity: 1}\n---\napiVersion: proto.dev/v1alpha1\nkind: Product\nmetadata: {name: app}\nspec: {description: App., lead: ceo, repo: {url: app.git, branch: main}}\n";

/// A declaration held in memory: the engine's `Source` seam with nothing of git behind it
/// (the shape a Kubernetes source takes: resources presented as files of a tree). It is a
/// remote that may fail: revisions are published upstream, and a fetch brings the latest one
/// in unless it is told to fail.
struct Flaky {
    label: &'static str,
    upstream: std::sync::Mutex<Vec<(String, String)>>,
    fetched: std::sync::Mutex<(u32, Vec<(String, String)>)>,
    published: std::sync::atomic::AtomicU32,
    failures_left: std::sync::atomic::AtomicU32,
    fetches: std::sync::atomic::AtomicU32,
    base: PathBuf,
}

impl Flaky {
    fn new(label: &'static str, files: Vec<(String, String)>, base: &Path) -> Flaky {
        Flaky {
            label,
            upstream: std::sync::Mutex::new(files),
            fetched: std::sync::Mutex::new((0, Vec::new())),
            published: std::sync::atomic::AtomicU32::new(1),
            failures_left: std::sync::atomic::AtomicU32::new(0),
            fetches: std::sync::atomic::AtomicU32::new(0),
            base: base.to_path_buf(),
        }
    }
}

impl proto::source::Source for Flaky {
    fn label(&self) -> &str {
        self.label
    }
    fn fetch(&self) -> Result<(), SourceError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.fetches.fetch_add(1, SeqCst);
        if self
            .failures_left
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SourceError::Watch("the remote is busy".into()));
        }
        let files = self.upstream.lock().unwrap().clone();
        *self.fetched.lock().unwrap() = (self.published.load(SeqCst), files);
        Ok(())
    }
    fn head(&self) -> Result<String, SourceError> {
        Ok(format!("r{}", self.fetched.lock().unwrap().0))
    }
    fn tree(&self, _revision: &str) -> Result<Box<dyn FileTree>, SourceError> {
        let fetched = self.fetched.lock().unwrap();
        let mut tree = proto::spec::MemTree::new(format!("{}@r{}", self.label, fetched.0));
        for (path, content) in &fetched.1 {
            tree.insert(path.clone(), content.clone());
        }
        Ok(Box::new(tree))
    }
    fn only_controller_changes(&self, from: &str, to: &str) -> Result<bool, SourceError> {
        Ok(from == to)
    }
    fn controller_files(&self, _: &str, _: &str) -> Result<Vec<(String, Vec<u8>)>, SourceError> {
        Ok(Vec::new())
    }
    fn resolve_repo(&self, url: &str) -> String {
        self.base.join(url).display().to_string()
    }
    fn base_dir(&self) -> &Path {
        &self.base
    }
}

/// A trigger's fetch that fails (a lock, a busy remote) is tried again shortly, with
/// backoff, not at the next poll: with webhooks the poll is an hour away, and the pushed
/// goal would wait for it.
#[tokio::test]
async fn a_failed_fetch_is_tried_again_soon_not_at_the_next_poll() {
    use std::sync::atomic::Ordering::SeqCst;
    let tmp = tempfile::tempdir().unwrap();
    git(
        tmp.path(),
        &["init", "-q", "--bare", "-b", "main", "app.git"],
    );
    let goal = |name: &str| {
        format!(
            "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: {name}}}\nspec:\n  product: app\n  owner: ceo\n  description: {name}.txt exists.\n  check: {{file: {{path: {name}.txt}}}}\n  playbook:\n    - write: {{path: {name}.txt, content: \"hi\\n\"}}\n"
        )
    };
    let first = vec![
        ("company.yaml".to_string(), COMPANY.to_string()),
        ("goals/one.yaml".to_string(), goal("one")),
    ];
    let source = std::sync::Arc::new(Flaky::new("flaky", first, tmp.path()));
    let options = proto::engine::Options {
        state_dir: tmp.path().join("state"),
        poll: Duration::from_secs(3600),
        ..Default::default()
    };
    let engine = proto::engine::Engine::with_source(source.clone(), None, options).unwrap();
    let (trigger_tx, trigger) = tokio::sync::mpsc::channel(1);
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(engine.run(stop.clone(), trigger));
    let app = tmp.path().join("app.git");
    let delivered = |name: &str| {
        cli::git_output(&app, &["show", &format!("main:{name}.txt")])
            .status
            .success()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !delivered("one") {
        assert!(std::time::Instant::now() < deadline, "goal one never met");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A new revision is published and a webhook triggers a fetch, which fails twice.
    source
        .upstream
        .lock()
        .unwrap()
        .push(("goals/two.yaml".into(), goal("two")));
    source.published.store(2, SeqCst);
    source.failures_left.store(2, SeqCst);
    let before = source.fetches.load(SeqCst);
    trigger_tx.send(()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !delivered("two") {
        assert!(
            std::time::Instant::now() < deadline,
            "the new goal waited for the next poll (an hour away)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(source.failures_left.load(SeqCst), 0);
    assert!(
        source.fetches.load(SeqCst) - before >= 3,
        "two failed fetches and the one that worked"
    );
    stop.cancel();
    running.await.unwrap().unwrap();
}
