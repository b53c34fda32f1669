//! The workspace journal against real git: what the controller wrote itself is committed
//! and cleaned without walking the files, with the result git's own `status` calls clean;
//! a process started (by any attempt) voids what is known, and the next step walks the
//! files and finds what the process wrote; a spare handed back clean is made the next
//! workspace without a walk, and one a process could have touched is walked.
//!
//! What is known holds only while no process of the controller starts, and the counts are
//! the whole test process's: the tests here run one at a time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cli::git;
use proto::computer::{Computer, Local, Origin, RunRequest, Workspace, WorkspaceSpec};
use proto::gitops::Identity;
use proto::gitops::delivery::Git;
use tokio_util::sync::CancellationToken;

static SERIAL: Mutex<()> = Mutex::new(());

/// A bare product whose `main` holds `c.txt`, `keep/k.txt` and a `.gitignore` of `*.log`.
fn product(dir: &Path) -> PathBuf {
    let seed = dir.join("seed");
    git(dir, &["init", "-q", "--bare", "-b", "main", "app.git"]);
    git(dir, &["init", "-q", "-b", "main", "seed"]);
    cli::write(&seed, "c.txt", "c\n");
    cli::write(&seed, "keep/k.txt", "k\n");
    cli::write(&seed, ".gitignore", "*.log\n");
    cli::commit_all(&seed, "Seed");
    git(&seed, &["push", "-q", "../app.git", "main"]);
    dir.join("app.git")
}

fn bot() -> Identity {
    Identity {
        name: "proto-bot".into(),
        email: "bot@example.com".into(),
    }
}

struct Attempt {
    computer: Local,
    workspace: Workspace,
    spec: WorkspaceSpec,
}

async fn attempt(dir: &Path, product: &Path, task: &str) -> Attempt {
    let computer = Local::new("here", dir.join("work"));
    let spec = WorkspaceSpec {
        repo: product.display().to_string(),
        branch: "main".into(),
        task: task.into(),
    };
    let workspace = computer.workspace(&spec).await.unwrap();
    Attempt {
        computer,
        workspace,
        spec,
    }
}

impl Attempt {
    async fn write(&self, path: &str, text: &str) {
        self.computer
            .write(&self.workspace, path, text.as_bytes())
            .await
            .unwrap();
    }

    async fn shell(&self, script: &str) {
        let request = RunRequest {
            command: script.into(),
            cwd: String::new(),
            env: Default::default(),
            timeout: std::time::Duration::from_secs(60),
            origin: Origin::Agent,
            stdin: None,
        };
        let outcome = self
            .computer
            .run(&self.workspace, &request, None, &CancellationToken::new())
            .await
            .unwrap();
        assert!(outcome.success(), "{script}: {}", outcome.summary());
    }

    /// Commits everything, makes the workspace a clean checkout of it and pushes it.
    async fn deliver(&self, message: &str) {
        let cancel = CancellationToken::new();
        let git = Git {
            computer: &self.computer,
            workspace: &self.workspace,
            cancel: &cancel,
        };
        let author = Identity::agent("ceo", &bot());
        git.commit_all(message, &author, &bot())
            .await
            .unwrap()
            .unwrap();
        let prepared = git.prepare("main", &bot(), true).await.unwrap();
        git.push("main", prepared.tip.as_deref()).await.unwrap();
    }

    fn root(&self) -> &Path {
        self.workspace.root()
    }

    /// `git status` of everything, ignored files too: empty for a clean checkout.
    fn status(&self) -> String {
        git(self.root(), &["status", "--porcelain", "--ignored"])
    }

    async fn hand_back(self) {
        assert_eq!(self.computer.release().await.unwrap(), 0);
        self.computer.recycle(&self.spec).await.unwrap();
    }
}

/// Runs `test` with a fresh folder and product in it, one test at a time (see the module).
fn serially<F, T>(test: F)
where
    F: FnOnce(PathBuf, PathBuf) -> T,
    T: std::future::Future<Output = ()>,
{
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let product = product(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(test(dir.path().to_path_buf(), product));
}

fn files_of(product: &Path) -> String {
    git(product, &["ls-tree", "-r", "--name-only", "main"])
}

#[test]
fn written_files_are_committed_and_ignored_ones_cleaned_without_a_walk() {
    serially(|dir, product| async move {
        let dir = dir.as_path();
        let product = product.as_path();
        let a = attempt(dir, product, "one").await;
        assert_eq!(a.workspace.journal().written(), Some(Default::default()));
        a.write("new.txt", "new\n").await;
        a.write("c.txt", "changed\n").await;
        a.write("deep/er/d.txt", "d\n").await;
        a.write("build.log", "ignored\n").await;
        a.write("logs/x.log", "ignored too\n").await;
        let known = a.workspace.journal().written().unwrap();
        assert_eq!(known.len(), 5, "{known:?}");
        a.deliver("Work").await;
        assert_eq!(
            files_of(product),
            ".gitignore\nc.txt\ndeep/er/d.txt\nkeep/k.txt\nnew.txt"
        );
        assert_eq!(git(product, &["show", "main:c.txt"]), "changed");
        // The clean took the ignored files and the folder one of them left empty.
        assert_eq!(a.status(), "");
        assert!(!a.root().join("logs").exists());
        assert_eq!(a.workspace.journal().written(), Some(Default::default()));
        git(product, &["fsck", "--no-dangling"]);
    });
}

#[test]
fn a_started_process_voids_what_is_known_and_its_files_are_found_by_a_walk() {
    serially(|dir, product| async move {
        let dir = dir.as_path();
        let product = product.as_path();
        let a = attempt(dir, product, "one").await;
        a.write("mine.txt", "mine\n").await;
        a.shell("echo theirs > theirs.txt && rm keep/k.txt && echo x > junk.log")
            .await;
        assert_eq!(a.workspace.journal().written(), None);
        a.deliver("Work").await;
        assert_eq!(files_of(product), ".gitignore\nc.txt\nmine.txt\ntheirs.txt");
        assert_eq!(a.status(), "");
        // Released, the files walked since: known again, for what follows.
        assert_eq!(a.computer.release().await.unwrap(), 0);
        let cancel = CancellationToken::new();
        let git = Git {
            computer: &a.computer,
            workspace: &a.workspace,
            cancel: &cancel,
        };
        git.prepare("main", &bot(), false).await.unwrap();
        assert_eq!(a.workspace.journal().written(), Some(Default::default()));
    });
}

#[test]
fn a_spare_handed_back_clean_is_reused_without_a_walk_until_a_process_starts() {
    serially(|dir, product| async move {
        let dir = dir.as_path();
        let product = product.as_path();
        // Made before any spare exists, to start a process later.
        let starter = attempt(dir, product, "starter").await;
        let first = attempt(dir, product, "one").await;
        first.write("one.txt", "1\n").await;
        first.deliver("One").await;
        first.hand_back().await;

        // Someone else moves the product on meanwhile: the spare is moved to the new tip.
        let other = dir.join("other");
        git(dir, &["clone", "-q", "app.git", "other"]);
        cli::write(&other, "keep/k.txt", "moved on\n");
        cli::write(&other, "two.txt", "2\n");
        git(&other, &["rm", "-q", "c.txt"]);
        cli::commit_all(&other, "Elsewhere");
        git(&other, &["push", "-q", "origin", "main"]);

        let second = attempt(dir, product, "two").await;
        assert_eq!(
            second.workspace.journal().written(),
            Some(Default::default())
        );
        assert_eq!(second.status(), "");
        assert_eq!(
            git(second.root(), &["rev-parse", "HEAD"]),
            git(product, &["rev-parse", "main"])
        );
        assert_eq!(
            std::fs::read_to_string(second.root().join("keep/k.txt")).unwrap(),
            "moved on\n"
        );
        assert!(!second.root().join("c.txt").exists());
        second.write("three.txt", "3\n").await;
        second.deliver("Three").await;
        let spare_root = second.root().to_path_buf();
        second.hand_back().await;

        // A stray file lands in the spare, and a process started: the spare is walked.
        let spares: Vec<PathBuf> = walk_spares(&dir.join("work"));
        assert_eq!(
            spares.len(),
            1,
            "{spares:?} (from {})",
            spare_root.display()
        );
        std::fs::write(spares[0].join("stray.txt"), "stray\n").unwrap();
        starter.shell("true").await;
        assert_eq!(starter.computer.release().await.unwrap(), 0);
        let third = attempt(dir, product, "three").await;
        assert!(!third.root().join("stray.txt").exists());
        assert_eq!(third.status(), "");
    });
}

/// The spare workspaces kept under `work`.
fn walk_spares(work: &Path) -> Vec<PathBuf> {
    let mirrors = work.join(".mirrors");
    std::fs::read_dir(&mirrors)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".spares"))
        .flat_map(|e| std::fs::read_dir(e.path()).unwrap().filter_map(Result::ok))
        .map(|e| e.path())
        .collect()
}
