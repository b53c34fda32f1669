//! Guards around the controller's state and the workspaces, with the real binary, real
//! SQLite files and real workspaces: one `proto run` per state directory (a second is
//! refused at once, readers keep working, SIGKILL leaves no lock behind); a damaged store is
//! refused with the way out; and write paths are normalized before the `.git` and escape
//! checks, through the tools and through playbook steps.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/company.rs"]
mod company;

use company::small_company;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cli::{git, proto, text, wait_for};
use proto::computer::{ComputerError, Local, Workspace};
use proto::gitops::Identity;
use proto::policy::{ActError, Actor, ToolCall, act};
use proto::spec::Priority;
use proto::store::{NewTask, Store, StoreError};
use proto::tools::{Registry, ToolContext, ToolError, builtin};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A goal whose playbook marks its workspace (`started`) and then waits until `release`
/// exists: a run is held in the middle of its work for as long as a test needs.
fn held_goal(release: &Path) -> String {
    format!(
        "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: held}}\nspec:\n  product: app\n  owner: ceo\n  description: Held until released.\n  check: {{file: {{path: done.txt}}}}\n  playbook:\n    - run: \"touch started && while [ ! -e '{}' ]; do sleep 0.1; done\"\n    - write: {{path: done.txt, content: \"done\\n\"}}\n    - commit: {{message: \"Finish the held work\"}}\n",
        release.display()
    )
}

/// `proto run COMPANY --once --state-dir STATE` started, its output going to files beside
/// the state (a pipe nobody reads could fill and stall it).
fn spawn_run(home: &Path, company: &Path, state: &Path, name: &str) -> Child {
    let out = File::create(home.join(format!("{name}.out"))).unwrap();
    let err = File::create(home.join(format!("{name}.err"))).unwrap();
    cli::run_command(home, company, state)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap()
}

/// What `spawn_run` wrote for `name`: stdout then stderr.
fn run_output(home: &Path, name: &str) -> String {
    let read = |ext: &str| std::fs::read_to_string(home.join(format!("{name}.{ext}"))).unwrap();
    format!("{}{}", read("out"), read("err"))
}

/// Waits for `child` to exit, killing it (and failing) if it has not after two minutes: a
/// second controller wrongly let in would otherwise hang the test.
fn exit_of(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the playbook of a run has reached its waiting step in some workspace.
fn wait_started(state: &Path) {
    wait_for("the playbook to start", Duration::from_secs(60), || {
        std::fs::read_dir(state.join("work"))
            .ok()
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .any(|e| e.path().join("started").exists())
    });
}

/// The pid written in the state directory's lock file, if any.
fn lock_pid(state: &Path) -> Option<u32> {
    std::fs::read_to_string(state.join("lock"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn goal_reason(state: &Path, goal: &str) -> Option<String> {
    let store = proto::store::Store::open(state).ok()?;
    let status: serde_json::Value = serde_json::from_str(&store.status().ok()??).ok()?;
    status["goals"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == goal)
        .and_then(|g| g["reason"].as_str())
        .map(String::from)
}

fn state_arg(state: &Path) -> &str {
    state.to_str().unwrap()
}

#[test]
fn a_second_run_on_the_same_state_is_refused_at_once_and_readers_keep_working() {
    let tmp = tempfile::tempdir().unwrap();
    let release = tmp.path().join("release");
    let company = small_company(tmp.path(), &held_goal(&release));
    let state = tmp.path().join("state");
    let mut first = spawn_run(tmp.path(), &company, &state, "first");
    wait_started(&state);
    assert_eq!(lock_pid(&state), Some(first.id()));

    let mut second = spawn_run(tmp.path(), &company, &state, "second");
    let status = exit_of(&mut second, "the second run");
    let said = run_output(tmp.path(), "second");
    assert_eq!(status.code(), Some(1), "{said}");
    let expected = format!(
        "error: another proto run (pid {}) holds the state directory {}; stop it first or use --state-dir",
        first.id(),
        state.display()
    );
    assert!(said.contains(&expected), "{said}");
    assert!(!said.contains("panicked"), "{said}");
    assert_eq!(
        lock_pid(&state),
        Some(first.id()),
        "the refused run wrote nothing"
    );

    // Readers do not take the lock.
    wait_for(
        "the held goal in the status",
        Duration::from_secs(60),
        || goal_reason(&state, "held").is_some(),
    );
    for what in ["goals", "tasks", "computers"] {
        let out = proto(tmp.path(), &["get", what, "--state-dir", state_arg(&state)]);
        assert!(out.status.success(), "get {what}: {}", text(&out));
    }
    let out = proto(
        tmp.path(),
        &["get", "goals", "--state-dir", state_arg(&state)],
    );
    assert!(text(&out).contains("held"), "{}", text(&out));
    let out = proto(
        tmp.path(),
        &["describe", "goal", "held", "--state-dir", state_arg(&state)],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = proto(tmp.path(), &["logs", "--state-dir", state_arg(&state)]);
    assert!(out.status.success(), "{}", text(&out));

    // The first finishes its work undisturbed, and lets the next run in.
    File::create(&release).unwrap();
    let status = exit_of(&mut first, "the first run");
    let said = run_output(tmp.path(), "first");
    assert_eq!(status.code(), Some(0), "{said}");
    assert_eq!(goal_reason(&state, "held").as_deref(), Some("CheckPassed"));
    let mut third = spawn_run(tmp.path(), &company, &state, "third");
    let status = exit_of(&mut third, "the run after");
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        run_output(tmp.path(), "third")
    );
}

#[test]
fn a_run_killed_with_sigkill_leaves_no_lock_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let release = tmp.path().join("release");
    let company = small_company(tmp.path(), &held_goal(&release));
    let state = tmp.path().join("state");
    let mut killed = spawn_run(tmp.path(), &company, &state, "killed");
    wait_started(&state);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    killed.wait().unwrap();
    assert_eq!(
        lock_pid(&state),
        Some(killed.id()),
        "the dead holder's pid stays in the file; only the lock is gone"
    );

    // The killed run's playbook command is still waiting in its own process group: it must
    // not have inherited the lock. The restart takes it while that orphan still runs.
    let mut restarted = spawn_run(tmp.path(), &company, &state, "restarted");
    wait_for(
        "the restarted run to take the lock",
        Duration::from_secs(60),
        || lock_pid(&state) == Some(restarted.id()),
    );
    File::create(&release).unwrap();
    let status = exit_of(&mut restarted, "the restarted run");
    let said = run_output(tmp.path(), "restarted");
    assert_eq!(status.code(), Some(0), "{said}");
    assert_eq!(goal_reason(&state, "held").as_deref(), Some("CheckPassed"));
}

/// A real store, made by a run, checkpointed so that every page is in `proto.db` itself.
fn real_store(tmp: &Path) -> (PathBuf, PathBuf) {
    let goal = "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: first}\nspec:\n  product: app\n  owner: ceo\n  description: First holds.\n  check: {file: {path: first.txt}}\n  playbook:\n    - write: {path: first.txt, content: \"first\\n\"}\n    - commit: {message: \"Make first hold\"}\n";
    let company = small_company(tmp, goal);
    let state = tmp.join("state");
    let mut run = spawn_run(tmp, &company, &state, "real");
    let status = exit_of(&mut run, "the run making the store");
    assert_eq!(status.code(), Some(0), "{}", run_output(tmp, "real"));
    let conn = rusqlite::Connection::open(state.join("proto.db")).unwrap();
    conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .unwrap();
    drop(conn);
    (company, state)
}

/// A state directory holding a copy of `state`'s store and status, damaged by `damage`.
fn damaged_copy(state: &Path, name: &str, damage: impl FnOnce(&Path)) -> PathBuf {
    let copy = state.with_file_name(name);
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(state.join("proto.db"), copy.join("proto.db")).unwrap();
    damage(&copy.join("proto.db"));
    copy
}

#[test]
fn a_damaged_store_is_refused_with_the_way_out_and_left_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let (company, state) = real_store(tmp.path());
    let conn = rusqlite::Connection::open(state.join("proto.db")).unwrap();
    let page_size: i64 = conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap();
    let pages: i64 = conn
        .pragma_query_value(None, "page_count", |r| r.get(0))
        .unwrap();
    // The table or index page nearest the middle of the file.
    let middle: i64 = conn
        .query_row(
            "SELECT rootpage FROM sqlite_master WHERE rootpage > 1 \
             ORDER BY abs(rootpage - ?1) LIMIT 1",
            [pages / 2],
            |r| r.get(0),
        )
        .unwrap();
    drop(conn);
    assert!(
        pages > 4 && middle > 1 && middle < pages,
        "{middle} of {pages}"
    );
    let (page_size, pages, middle) = (page_size as u64, pages as u64, middle as u64);

    let overwritten = damaged_copy(&state, "overwritten", |db| {
        use std::os::unix::fs::FileExt;
        let garbage: Vec<u8> = (0..page_size).map(|i| (i * 7 + 13) as u8).collect();
        let file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
        file.write_all_at(&garbage, (middle - 1) * page_size)
            .unwrap();
    });
    let truncated = damaged_copy(&state, "truncated", |db| {
        let file = std::fs::OpenOptions::new().write(true).open(db).unwrap();
        file.set_len(pages / 2 * page_size).unwrap();
    });
    let not_a_database = damaged_copy(&state, "not-a-database", |db| {
        std::fs::write(db, "This is not a SQLite database, only text.\n".repeat(40)).unwrap();
    });

    for dir in [&overwritten, &truncated, &not_a_database] {
        let db = dir.join("proto.db");
        let before = std::fs::read(&db).unwrap();
        let way_out = format!("{}: the state database is damaged (", db.display());
        let advice = format!(
            "move the state directory {} aside and start `proto run` with a fresh one",
            dir.display()
        );
        let commands: [&[&str]; 3] = [
            &[
                "run",
                company.to_str().unwrap(),
                "--once",
                "--state-dir",
                state_arg(dir),
            ],
            &["get", "goals", "--state-dir", state_arg(dir)],
            &["get", "tasks", "--state-dir", state_arg(dir)],
        ];
        for args in commands {
            let out = proto(tmp.path(), args);
            let said = text(&out);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {said}");
            assert!(said.contains(&way_out), "{args:?}: {said}");
            assert!(said.contains(&advice), "{args:?}: {said}");
            assert!(
                said.contains("rebuilt from git and the product branches"),
                "{said}"
            );
            assert!(!said.contains("panicked"), "{args:?}: {said}");
        }
        assert!(
            std::fs::read(&db).unwrap() == before,
            "{}: the refused file was changed",
            db.display()
        );

        // The library says it with a typed error naming the file.
        match Store::open(dir) {
            Err(StoreError::Corrupt { path, detail }) => {
                assert_eq!(path, db);
                assert!(!detail.is_empty());
            }
            Err(other) => panic!("{}: {other}", dir.display()),
            Ok(_) => panic!("{}: a damaged store was opened", dir.display()),
        }
    }

    // The way out works: a fresh state directory, and the goal is found met again from what
    // the product branch holds.
    let fresh = tmp.path().join("fresh");
    let out = proto(
        tmp.path(),
        &[
            "run",
            company.to_str().unwrap(),
            "--once",
            "--state-dir",
            state_arg(&fresh),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(goal_reason(&fresh, "first").as_deref(), Some("CheckPassed"));
}

/// A workspace that is a real git repository (with a nested one under `sub/`), next to
/// which `outside` exists, so that each refused write has a real target to miss.
struct Workspaces {
    dir: tempfile::TempDir,
    local: Local,
    workspace: Workspace,
    author: Identity,
    cancel: CancellationToken,
}

/// Every path a write must be refused: into `.git` (however spelt) or out of the workspace.
const REFUSED: [&str; 7] = [
    ".git/hooks/pre-commit",
    "./.git/hooks/pre-commit",
    "x/../.git/config",
    "a/./../.git/x",
    "sub/.git/config",
    "../outside",
    "a/../../outside",
];

/// Paths a write may take, and where the file lands, relative to the workspace.
const ALLOWED: [(&str, &str); 4] = [
    ("a/../b.txt", "b.txt"),
    ("./c.txt", "c.txt"),
    (".gitignore", ".gitignore"),
    (".github/workflows/ci.yml", ".github/workflows/ci.yml"),
];

impl Workspaces {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        std::fs::create_dir(&root).unwrap();
        git(&root, &["init", "-q", "-b", "main"]);
        std::fs::create_dir(root.join("sub")).unwrap();
        git(&root.join("sub"), &["init", "-q", "-b", "main"]);
        let ws = Workspaces {
            local: Local::new("local", dir.path().join("work")),
            workspace: Workspace::new(&root),
            dir,
            author: Identity {
                name: "Ada Agent".to_string(),
                email: "ada@example.com".to_string(),
            },
            cancel: CancellationToken::new(),
        };
        // Each refused target exists with text an edit would find.
        for path in [
            ".git/hooks/pre-commit",
            ".git/config",
            ".git/x",
            "sub/.git/config",
        ] {
            cli::write(&ws.root(), path, "before\n");
        }
        cli::write(ws.dir.path(), "outside", "before\n");
        ws
    }

    fn root(&self) -> PathBuf {
        self.workspace.root().to_path_buf()
    }

    /// Where a refused `path` would have landed.
    fn target(&self, path: &str) -> PathBuf {
        let landing = match path {
            "../outside" | "a/../../outside" => return self.dir.path().join("outside"),
            "sub/.git/config" => "sub/.git/config",
            "x/../.git/config" => ".git/config",
            "a/./../.git/x" => ".git/x",
            _ => ".git/hooks/pre-commit",
        };
        self.root().join(landing)
    }

    fn unchanged(&self, path: &str, how: &str) {
        let target = self.target(path);
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "before\n",
            "{how} {path} changed {}",
            target.display()
        );
    }

    fn context(&self) -> ToolContext<'_> {
        ToolContext {
            computer: &self.local,
            workspace: &self.workspace,
            cancel: &self.cancel,
            agent: "ada",
            author: &self.author,
            planning_file: None,
            step: None,
        }
    }
}

fn escapes(path: &str) -> bool {
    path.ends_with("outside")
}

#[tokio::test]
async fn write_and_edit_tools_normalize_paths_before_the_git_and_escape_guards() {
    let ws = Workspaces::new();
    let (write, edit) = (builtin("Write").unwrap(), builtin("Edit").unwrap());
    for path in REFUSED {
        let written = write
            .run(
                &json!({"file_path": path, "content": "planted\n"}),
                &ws.context(),
            )
            .await;
        let edited = edit
            .run(
                &json!({"file_path": path, "old_string": "before", "new_string": "planted"}),
                &ws.context(),
            )
            .await;
        for (how, result) in [("Write", written), ("Edit", edited)] {
            if escapes(path) {
                assert!(
                    matches!(result, Err(ToolError::OutsideWorkspace { .. })),
                    "{how} {path}: {result:?}"
                );
            } else {
                assert!(
                    matches!(&result, Err(ToolError::Refused(reason)) if reason.contains(".git")),
                    "{how} {path}: {result:?}"
                );
            }
            ws.unchanged(path, how);
        }
    }
    for (path, landing) in ALLOWED {
        let out = write
            .run(
                &json!({"file_path": path, "content": "before\n"}),
                &ws.context(),
            )
            .await
            .unwrap();
        assert!(!out.is_error, "Write {path}: {}", out.content);
        // The audit names the file that was written, not the spelling that reached it.
        assert_eq!(out.changed_files[0].path, landing);
        let out = edit
            .run(
                &json!({"file_path": path, "old_string": "before", "new_string": "after"}),
                &ws.context(),
            )
            .await
            .unwrap();
        assert!(!out.is_error, "Edit {path}: {}", out.content);
        assert_eq!(
            std::fs::read_to_string(ws.root().join(landing)).unwrap(),
            "after\n",
            "{path}"
        );
    }
    // Reading `.git` stays allowed: only writes are guarded.
    let read = builtin("Read").unwrap();
    let out = read
        .run(&json!({"file_path": "./.git/config"}), &ws.context())
        .await
        .unwrap();
    assert!(out.content.contains("before"), "{}", out.content);
}

#[tokio::test]
async fn a_link_into_git_does_not_carry_a_write_there() {
    let ws = Workspaces::new();
    std::os::unix::fs::symlink(".git/hooks", ws.root().join("hooks")).unwrap();
    let write = builtin("Write").unwrap();
    let result = write
        .run(
            &json!({"file_path": "hooks/pre-commit", "content": "planted\n"}),
            &ws.context(),
        )
        .await;
    assert!(
        matches!(
            result,
            Err(ToolError::Computer(ComputerError::GitDir { .. }))
        ),
        "{result:?}"
    );
    ws.unchanged(".git/hooks/pre-commit", "Write");
}

#[tokio::test]
async fn playbook_write_and_edit_steps_normalize_paths_before_the_guards() {
    let ws = Workspaces::new();
    let store = Store::open(&ws.dir.path().join("state")).unwrap();
    let task = NewTask {
        key: "guarded-1".into(),
        goal: "guarded".into(),
        product: "app".into(),
        owner: "ceo".into(),
        priority: Priority::Medium,
        max_attempts: 1,
        revision: "r1".into(),
        parent: None,
    };
    let now = chrono::Utc::now();
    let id = store.enqueue(&task, now).unwrap().unwrap();
    store.start(id, "local", now).unwrap();
    let tools = ["Write".to_string(), "Edit".to_string()];
    let actor = Actor {
        store: &store,
        task: id,
        goal: "guarded",
        agent: "ceo",
        tools: Arc::new(Registry::with_builtins(tools.to_vec())),
        computer: &ws.local,
        workspace: &ws.workspace,
        author: &ws.author,
        cancel: &ws.cancel,
        settings: None,
        limits: None,
        delegated: false,
        gates: None,
    };
    let mut step = 0;
    let mut next = || {
        step += 1;
        step
    };
    for path in REFUSED {
        let written = act(
            &actor,
            next(),
            &ToolCall::Write {
                path: path.to_string(),
                content: "planted\n".into(),
            },
        )
        .await;
        let edited = act(
            &actor,
            next(),
            &ToolCall::Edit {
                path: path.to_string(),
                old: "before".into(),
                new: "planted".into(),
            },
        )
        .await;
        for (how, result) in [("write", written), ("edit", edited)] {
            let result = result.map(|acted| acted.outcome);
            if escapes(path) {
                assert!(
                    matches!(
                        result,
                        Err(ActError::Computer(ComputerError::OutsideWorkspace { .. }))
                    ),
                    "{how} {path}: {result:?}"
                );
            } else {
                assert!(
                    matches!(
                        result,
                        Err(ActError::Computer(ComputerError::GitDir { .. }))
                    ),
                    "{how} {path}: {result:?}"
                );
            }
            ws.unchanged(path, how);
        }
    }
    for (path, landing) in ALLOWED {
        let written = act(
            &actor,
            next(),
            &ToolCall::Write {
                path: path.to_string(),
                content: "before\n".into(),
            },
        )
        .await;
        assert!(written.is_ok(), "write {path}: {written:?}");
        let edited = act(
            &actor,
            next(),
            &ToolCall::Edit {
                path: path.to_string(),
                old: "before".into(),
                new: "after".into(),
            },
        )
        .await;
        assert!(edited.is_ok(), "edit {path}: {edited:?}");
        assert_eq!(
            std::fs::read_to_string(ws.root().join(landing)).unwrap(),
            "after\n",
            "{path}"
        );
    }
}

#[test]
fn a_declared_playbook_cannot_plant_a_git_hook_through_a_dotted_path() {
    let tmp = tempfile::tempdir().unwrap();
    let goal = "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: hook}\nspec:\n  product: app\n  owner: ceo\n  description: A hook is planted.\n  check: {file: {path: hooked.txt}}\n  budget: {attempts: 1}\n  playbook:\n    - write:\n        path: ./.git/hooks/pre-commit\n        content: \"#!/bin/sh\\ntouch hooked.txt\\n\"\n    - commit: {message: \"Plant a hook\"}\n";
    let company = small_company(tmp.path(), goal);
    let state = tmp.path().join("state");
    let mut run = spawn_run(tmp.path(), &company, &state, "hook");
    let status = exit_of(&mut run, "the run");
    let said = run_output(tmp.path(), "hook");
    assert_eq!(status.code(), Some(2), "the goal stalls: {said}");
    assert!(
        said.contains("./.git/hooks/pre-commit: inside .git"),
        "{said}"
    );
    // The failed attempt keeps its workspace: the hook is not in it.
    let workspaces: Vec<PathBuf> = std::fs::read_dir(state.join("work"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with(proto::gitops::workspace::MIRRORS))
        .collect();
    assert_eq!(workspaces.len(), 1, "{workspaces:?}");
    assert!(!workspaces[0].join(".git/hooks/pre-commit").exists());
    // Nor in the product's mirror the workspace was made from.
    for mirror in
        std::fs::read_dir(state.join("work").join(proto::gitops::workspace::MIRRORS)).unwrap()
    {
        let mirror = mirror.unwrap().path();
        assert!(
            !mirror.join("hooks/pre-commit").exists(),
            "{}",
            mirror.display()
        );
    }
    assert!(!workspaces[0].join("hooked.txt").exists());
}
