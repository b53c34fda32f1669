//! The tool suite against real files, processes and git in temporary workspaces on the
//! local computer: each tool's happy path and the errors a model will run into.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::time::{Duration, Instant};

use proto::computer::{Local, Workspace};
use proto::gitops::Identity;
use proto::tools::{ToolContext, ToolError, ToolOutput, builtin};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Fixture {
    _dir: tempfile::TempDir,
    local: Local,
    workspace: Workspace,
    cancel: CancellationToken,
    author: Identity,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        std::fs::create_dir(&root).unwrap();
        Fixture {
            local: Local::new("local", dir.path().join("work")),
            workspace: Workspace::new(root),
            _dir: dir,
            cancel: CancellationToken::new(),
            author: Identity {
                name: "Ada Agent".to_string(),
                email: "ada@example.com".to_string(),
            },
        }
    }

    fn root(&self) -> &Path {
        self.workspace.root()
    }

    fn file(&self, path: &str, content: &str) {
        let full = self.root().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.root().join(path)).unwrap()
    }

    fn git_init(&self) {
        let status = std::process::Command::new("git")
            .args(["init", "-q", "-b", "main"])
            .current_dir(self.root())
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn call(&self, name: &str, input: Value) -> Result<ToolOutput, ToolError> {
        self.call_with(name, input, None).await
    }

    async fn call_with(
        &self,
        name: &str,
        input: Value,
        planning_file: Option<&str>,
    ) -> Result<ToolOutput, ToolError> {
        let ctx = ToolContext {
            computer: &self.local,
            workspace: &self.workspace,
            cancel: &self.cancel,
            agent: "ada",
            author: &self.author,
            planning_file: planning_file.map(str::to_string),
            step: None,
        };
        builtin(name).unwrap().run(&input, &ctx).await
    }

    /// A call that must succeed without an error output.
    async fn ok(&self, name: &str, input: Value) -> ToolOutput {
        let out = self.call(name, input).await.unwrap();
        assert!(!out.is_error, "{name}: {}", out.content);
        out
    }
}

#[test]
fn every_built_in_tool_is_described_for_the_model() {
    for tool in proto::tools::builtins() {
        let definition = proto::tools::definition(tool.as_ref());
        assert_eq!(definition.name, tool.name());
        assert!(!definition.description.is_empty(), "{}", tool.name());
        assert_eq!(definition.input_schema["type"], "object", "{}", tool.name());
    }
}

#[tokio::test]
async fn read_numbers_lines_and_windows_with_offset_and_limit() {
    let f = Fixture::new();
    let content: String = (1..=10).map(|i| format!("line {i}\n")).collect();
    f.file("src/a.txt", &content);

    let all = f.ok("Read", json!({"file_path": "src/a.txt"})).await;
    assert!(
        all.content.starts_with("     1\tline 1\n"),
        "{}",
        all.content
    );
    assert!(all.content.contains("    10\tline 10\n"));

    let window = f
        .ok(
            "Read",
            json!({"file_path": "src/a.txt", "offset": 3, "limit": 2}),
        )
        .await;
    assert!(
        window
            .content
            .starts_with("     3\tline 3\n     4\tline 4\n"),
        "{}",
        window.content
    );
    assert!(!window.content.contains("line 5"));
    assert!(window.content.contains("offset 5"), "{}", window.content);

    // Absolute paths under the workspace are accepted, as Claude Code sends them.
    let absolute = f.root().join("src/a.txt");
    let abs = f
        .ok(
            "Read",
            json!({"file_path": absolute.to_str().unwrap(), "limit": 1}),
        )
        .await;
    assert!(abs.content.starts_with("     1\tline 1\n"));

    let long = format!("{}\n", "x".repeat(5000));
    f.file("long.txt", &long);
    let cut = f.ok("Read", json!({"file_path": "long.txt"})).await;
    assert!(cut.content.len() < 2100, "{}", cut.content.len());
}

#[tokio::test]
async fn read_errors() {
    let f = Fixture::new();
    let missing = f
        .call("Read", json!({"file_path": "nope.txt"}))
        .await
        .unwrap();
    assert!(missing.is_error);
    assert!(missing.content.contains("does not exist"));

    let escape = f
        .call("Read", json!({"file_path": "../../etc/passwd"}))
        .await;
    assert!(
        matches!(escape, Err(ToolError::OutsideWorkspace { .. })),
        "{escape:?}"
    );
    let absolute = f.call("Read", json!({"file_path": "/etc/passwd"})).await;
    assert!(matches!(absolute, Err(ToolError::OutsideWorkspace { .. })));

    std::fs::create_dir(f.root().join("dir")).unwrap();
    let dir = f.call("Read", json!({"file_path": "dir"})).await.unwrap();
    assert!(dir.is_error);
    assert!(dir.content.contains("directory"), "{}", dir.content);

    let missing_field = f.call("Read", json!({"path": "x"})).await.unwrap_err();
    assert!(
        missing_field.to_string().contains("`path`"),
        "{missing_field}"
    );
    let wrong_type = f
        .call("Read", json!({"file_path": "x", "limit": "ten"}))
        .await
        .unwrap_err();
    assert!(wrong_type.to_string().contains("`limit`"), "{wrong_type}");
}

#[tokio::test]
async fn write_creates_folders_and_records_the_change() {
    let f = Fixture::new();
    let out = f
        .ok(
            "Write",
            json!({"file_path": "docs/new/readme.md", "content": "hello\n"}),
        )
        .await;
    assert_eq!(f.read("docs/new/readme.md"), "hello\n");
    assert_eq!(out.changed_files.len(), 1);
    assert_eq!(out.changed_files[0].path, "docs/new/readme.md");
    assert_eq!(out.changed_files[0].before, None);
    assert_eq!(out.changed_files[0].after.as_deref(), Some("hello\n"));

    let again = f
        .ok(
            "Write",
            json!({"file_path": "docs/new/readme.md", "content": "bye\n"}),
        )
        .await;
    assert_eq!(again.changed_files[0].before.as_deref(), Some("hello\n"));
    assert_eq!(f.read("docs/new/readme.md"), "bye\n");

    let escape = f
        .call(
            "Write",
            json!({"file_path": "../outside.txt", "content": "x"}),
        )
        .await;
    assert!(matches!(escape, Err(ToolError::OutsideWorkspace { .. })));
    assert!(!f.root().parent().unwrap().join("outside.txt").exists());

    let hook = f
        .call(
            "Write",
            json!({"file_path": ".git/hooks/pre-commit", "content": "x"}),
        )
        .await;
    assert!(matches!(hook, Err(ToolError::Refused(_))), "{hook:?}");
}

#[tokio::test]
async fn write_refuses_symlinks_out_of_the_workspace() {
    let f = Fixture::new();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), f.root().join("link")).unwrap();
    let out = f
        .call("Write", json!({"file_path": "link/x.txt", "content": "x"}))
        .await;
    assert!(
        matches!(out, Err(ToolError::OutsideWorkspace { .. })),
        "{out:?}"
    );
    assert!(!outside.path().join("x.txt").exists());
}

#[tokio::test]
async fn edit_replaces_exactly_one_match() {
    let f = Fixture::new();
    f.file("a.rs", "fn a() {}\nfn b() {}\n");
    let out = f
        .ok(
            "Edit",
            json!({"file_path": "a.rs", "old_string": "fn b() {}", "new_string": "fn c() {}"}),
        )
        .await;
    assert_eq!(f.read("a.rs"), "fn a() {}\nfn c() {}\n");
    let change = &out.changed_files[0];
    assert_eq!(change.before.as_deref(), Some("fn a() {}\nfn b() {}\n"));
    assert_eq!(change.after.as_deref(), Some("fn a() {}\nfn c() {}\n"));
}

#[tokio::test]
async fn edit_says_how_many_matched_when_not_exactly_one() {
    let f = Fixture::new();
    f.file("a.txt", "x = 1\nx = 1\n");

    let none = f
        .call(
            "Edit",
            json!({"file_path": "a.txt", "old_string": "y = 1", "new_string": "y = 2"}),
        )
        .await
        .unwrap();
    assert!(none.is_error);
    assert!(none.content.contains("0 matches"), "{}", none.content);
    assert!(none.changed_files.is_empty());

    let two = f
        .call(
            "Edit",
            json!({"file_path": "a.txt", "old_string": "x = 1", "new_string": "x = 2"}),
        )
        .await
        .unwrap();
    assert!(two.is_error);
    assert!(two.content.contains("Found 2 matches"), "{}", two.content);
    assert_eq!(f.read("a.txt"), "x = 1\nx = 1\n", "nothing changed");

    let all = f
        .ok(
            "Edit",
            json!({"file_path": "a.txt", "old_string": "x = 1", "new_string": "x = 2", "replace_all": true}),
        )
        .await;
    assert_eq!(f.read("a.txt"), "x = 2\nx = 2\n");
    assert!(all.content.contains("2 occurrences"), "{}", all.content);

    let same = f
        .call(
            "Edit",
            json!({"file_path": "a.txt", "old_string": "x", "new_string": "x"}),
        )
        .await
        .unwrap_err();
    assert!(same.to_string().contains("`new_string`"), "{same}");

    let missing = f
        .call(
            "Edit",
            json!({"file_path": "nope.txt", "old_string": "a", "new_string": "b"}),
        )
        .await
        .unwrap();
    assert!(missing.is_error);

    let escape = f
        .call(
            "Edit",
            json!({"file_path": "../a.txt", "old_string": "a", "new_string": "b"}),
        )
        .await;
    assert!(matches!(escape, Err(ToolError::OutsideWorkspace { .. })));
}

#[tokio::test]
async fn glob_respects_gitignore_and_sorts_newest_first() {
    let f = Fixture::new();
    f.git_init();
    f.file(".gitignore", "target/\n*.log\n");
    f.file("src/old.rs", "");
    f.file("src/deep/new.rs", "");
    f.file("target/built.rs", "");
    f.file("debug.log", "");
    f.file("README.md", "");
    let old = std::fs::File::options()
        .write(true)
        .open(f.root().join("src/old.rs"))
        .unwrap();
    old.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();

    let out = f.ok("Glob", json!({"pattern": "**/*.rs"})).await;
    let lines: Vec<&str> = out.content.lines().collect();
    assert_eq!(lines, ["src/deep/new.rs", "src/old.rs"], "{}", out.content);

    let scoped = f
        .ok("Glob", json!({"pattern": "*.rs", "path": "src/deep"}))
        .await;
    assert_eq!(scoped.content, "src/deep/new.rs");

    let anchored = f.ok("Glob", json!({"pattern": "src/deep/*.rs"})).await;
    assert_eq!(anchored.content, "src/deep/new.rs");
    let braces = f.ok("Glob", json!({"pattern": "*.{md,log}"})).await;
    assert_eq!(braces.content, "README.md", "ignored files stay out");

    let none = f.ok("Glob", json!({"pattern": "*.py"})).await;
    assert_eq!(none.content, "No files found");

    let escape = f.call("Glob", json!({"pattern": "*", "path": ".."})).await;
    assert!(matches!(escape, Err(ToolError::OutsideWorkspace { .. })));
}

#[tokio::test]
async fn grep_content_with_context_line_numbers_and_case() {
    let f = Fixture::new();
    f.file("a.txt", "one\ntwo\nNeedle here\nfour\nfive\n");
    f.file("b.md", "nothing\n");
    let out = f
        .ok(
            "Grep",
            json!({"pattern": "needle", "-i": true, "output_mode": "content", "-C": 1}),
        )
        .await;
    assert_eq!(
        out.content, "a.txt-2-two\na.txt:3:Needle here\na.txt-4-four",
        "{}",
        out.content
    );

    let case_sensitive = f
        .ok(
            "Grep",
            json!({"pattern": "needle", "output_mode": "content"}),
        )
        .await;
    assert_eq!(case_sensitive.content, "No matches found");

    let after = f
        .ok(
            "Grep",
            json!({"pattern": "Needle", "output_mode": "content", "-A": 2, "-n": false}),
        )
        .await;
    assert_eq!(after.content, "a.txt:Needle here\na.txt-four\na.txt-five");
}

#[tokio::test]
async fn grep_files_with_matches_count_filters_and_limits() {
    let f = Fixture::new();
    f.git_init();
    f.file(".gitignore", "ignored/\n");
    f.file("src/lib.rs", "// TODO one\n// TODO two\nfn x() {}\n");
    f.file("src/main.py", "# TODO three\n");
    f.file("notes.md", "no match\n");
    f.file("ignored/x.rs", "// TODO hidden\n");

    let files = f.ok("Grep", json!({"pattern": "TODO"})).await;
    assert!(
        files.content.starts_with("Found 2 files\n"),
        "{}",
        files.content
    );
    assert!(files.content.contains("src/lib.rs"));
    assert!(files.content.contains("src/main.py"));
    assert!(!files.content.contains("ignored"));

    let count = f
        .ok(
            "Grep",
            json!({"pattern": "TODO", "output_mode": "count", "glob": "*.rs"}),
        )
        .await;
    assert!(
        count.content.starts_with("src/lib.rs:2\n"),
        "{}",
        count.content
    );
    assert!(!count.content.contains("main.py"));

    let typed = f.ok("Grep", json!({"pattern": "TODO", "type": "py"})).await;
    assert_eq!(typed.content, "Found 1 file\nsrc/main.py");

    let limited = f
        .ok(
            "Grep",
            json!({"pattern": "TODO", "output_mode": "content", "path": "src/lib.rs", "head_limit": 1}),
        )
        .await;
    assert!(
        limited.content.starts_with("src/lib.rs:1:// TODO one\n"),
        "{}",
        limited.content
    );
    assert!(!limited.content.contains("TODO two"));

    let multiline = f
        .ok(
            "Grep",
            json!({"pattern": "two\\n.*fn", "multiline": true, "output_mode": "content"}),
        )
        .await;
    assert_eq!(
        multiline.content,
        "src/lib.rs:2:// TODO two\nsrc/lib.rs:3:fn x() {}"
    );

    let bad = f
        .call("Grep", json!({"pattern": "(unclosed"}))
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("`pattern`"), "{bad}");
    let bad_mode = f
        .call("Grep", json!({"pattern": "x", "output_mode": "lines"}))
        .await
        .unwrap_err();
    assert!(bad_mode.to_string().contains("`output_mode`"));
    let bad_type = f
        .call("Grep", json!({"pattern": "x", "type": "klingon"}))
        .await
        .unwrap_err();
    assert!(bad_type.to_string().contains("`type`"), "{bad_type}");
}

#[tokio::test]
async fn bash_reports_output_and_exit_code() {
    let f = Fixture::new();
    let ok = f
        .ok(
            "Bash",
            json!({"command": "echo out; echo err >&2", "description": "Say things"}),
        )
        .await;
    assert!(ok.content.contains("out\n"), "{}", ok.content);
    assert!(ok.content.contains("err\n"));

    let failed = f
        .call("Bash", json!({"command": "echo oops; exit 3"}))
        .await
        .unwrap();
    assert!(failed.is_error);
    assert!(failed.content.contains("oops"));
    assert!(
        failed.content.contains("Exit code: 3"),
        "{}",
        failed.content
    );

    let pwd = f.ok("Bash", json!({"command": "pwd"})).await;
    let root = std::fs::canonicalize(f.root()).unwrap();
    assert_eq!(pwd.content.trim(), root.to_str().unwrap());

    let big = f.ok("Bash", json!({"command": "seq 1 20000"})).await;
    assert!(
        big.content.chars().count() < 30_200,
        "{}",
        big.content.len()
    );
    assert!(big.content.contains("lines truncated"));

    let too_long = f
        .call("Bash", json!({"command": "true", "timeout": 600_001}))
        .await
        .unwrap_err();
    assert!(too_long.to_string().contains("`timeout`"));
}

#[tokio::test]
async fn bash_timeout_kills_the_command() {
    let f = Fixture::new();
    let started = Instant::now();
    let out = f
        .call("Bash", json!({"command": "sleep 30", "timeout": 300}))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(out.is_error);
    assert!(
        out.content.contains("timed out after 300 ms"),
        "{}",
        out.content
    );
}

#[tokio::test]
async fn git_commits_as_the_author_and_refuses_force_push() {
    let f = Fixture::new();
    f.git_init();
    f.ok(
        "Write",
        json!({"file_path": "hello.txt", "content": "hi\n"}),
    )
    .await;
    f.ok("Git", json!({"args": ["add", "hello.txt"]})).await;
    f.ok(
        "Git",
        json!({"args": ["commit", "-q", "-m", "Say hello; it's 'quoted'"]}),
    )
    .await;
    let log = f
        .ok("Git", json!({"args": ["log", "--format=%an <%ae> %s"]}))
        .await;
    assert_eq!(
        log.content.trim(),
        "Ada Agent <ada@example.com> Say hello; it's 'quoted'"
    );
    let status = f.ok("Git", json!({"args": ["status", "--short"]})).await;
    assert_eq!(status.content, "(no output)");

    let push = f
        .call(
            "Git",
            json!({"args": ["push", "--force", "origin", "main"]}),
        )
        .await;
    assert!(matches!(push, Err(ToolError::Refused(_))), "{push:?}");
    let reset = f
        .call("Git", json!({"args": ["reset", "--hard", "HEAD~1"]}))
        .await;
    assert!(matches!(reset, Err(ToolError::Refused(_))));
    let config = f
        .call(
            "Git",
            json!({"args": ["-c", "core.hooksPath=/tmp", "commit"]}),
        )
        .await;
    assert!(matches!(config, Err(ToolError::Refused(_))));

    // A failing git command is an error output the model can read.
    let bad = f
        .call("Git", json!({"args": ["show", "no-such-rev"]}))
        .await
        .unwrap();
    assert!(bad.is_error);
    assert!(bad.content.contains("Exit code: 128"), "{}", bad.content);

    let branch = f
        .ok("Git", json!({"args": ["checkout", "-b", "feature"]}))
        .await;
    assert!(!branch.is_error);
    let head = f
        .ok(
            "Git",
            json!({"args": ["rev-parse", "--abbrev-ref", "HEAD"]}),
        )
        .await;
    assert_eq!(head.content.trim(), "feature");
}

#[tokio::test]
async fn python_runs_code_and_leaves_nothing_to_commit() {
    let f = Fixture::new();
    let out = f
        .ok(
            "Python",
            json!({"code": "import sys\nprint(6 * 7)\nprint('warn', file=sys.stderr)"}),
        )
        .await;
    assert!(out.content.contains("42\n"), "{}", out.content);
    assert!(out.content.contains("warn"));

    let failed = f
        .call("Python", json!({"code": "raise SystemExit(4)"}))
        .await
        .unwrap();
    assert!(failed.is_error);
    assert!(failed.content.contains("Exit code: 4"));

    let error = f.call("Python", json!({"code": "1/0"})).await.unwrap();
    assert!(error.is_error);
    assert!(error.content.contains("ZeroDivisionError"));

    let slow = f
        .call(
            "Python",
            json!({"code": "import time\ntime.sleep(30)", "timeout": 300}),
        )
        .await
        .unwrap();
    assert!(slow.is_error);
    assert!(slow.content.contains("timed out"), "{}", slow.content);

    // Scripts are removed, even after a timeout; the scratch folder ignores itself.
    let left: Vec<_> = std::fs::read_dir(f.root().join(".proto-tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, [".gitignore"]);
}

#[tokio::test]
async fn planning_round_trip() {
    let f = Fixture::new();
    let empty = f.ok("Planning", json!({"action": "list"})).await;
    assert!(empty.content.contains("no tasks"), "{}", empty.content);

    let first = f
        .ok(
            "Planning",
            json!({"action": "add", "title": "Build the site", "assignee": "ada"}),
        )
        .await;
    assert!(first.content.contains("Added task 1"), "{}", first.content);
    assert_eq!(first.changed_files[0].path, ".proto/planning/tasks.json");
    assert_eq!(first.changed_files[0].before, None);
    f.ok(
        "Planning",
        json!({"action": "add", "title": "Write copy", "parent": "1"}),
    )
    .await;
    f.ok(
        "Planning",
        json!({"action": "add", "title": "Launch", "id": "launch", "dependencies": ["1"], "notes": "after review"}),
    )
    .await;
    let updated = f
        .ok(
            "Planning",
            json!({"action": "update", "id": "1.1", "status": "in_progress"}),
        )
        .await;
    assert!(updated.changed_files[0].before.is_some());

    let stored: Value = serde_json::from_str(&f.read(".proto/planning/tasks.json")).unwrap();
    assert_eq!(stored["tasks"][0]["subtasks"][0]["id"], "1.1");
    assert_eq!(stored["tasks"][0]["subtasks"][0]["status"], "in_progress");
    assert_eq!(stored["tasks"][1]["dependencies"], json!(["1"]));

    let list = f.ok("Planning", json!({"action": "list"})).await;
    assert!(
        list.content.contains("[ ] 1 Build the site (@ada)"),
        "{}",
        list.content
    );
    assert!(list.content.contains("  [~] 1.1 Write copy"));
    assert!(list.content.contains("[ ] launch Launch [after 1]"));
    assert!(list.content.contains("after review"));
    let doing = f
        .ok(
            "Planning",
            json!({"action": "list", "status": "in_progress"}),
        )
        .await;
    assert!(!doing.content.contains("launch"), "{}", doing.content);

    let removed = f
        .call("Planning", json!({"action": "remove", "id": "1"}))
        .await
        .unwrap_err();
    assert!(removed.to_string().contains("launch"), "{removed}");
    f.ok("Planning", json!({"action": "remove", "id": "launch"}))
        .await;
    f.ok("Planning", json!({"action": "remove", "id": "1"}))
        .await;
    let stored: Value = serde_json::from_str(&f.read(".proto/planning/tasks.json")).unwrap();
    assert_eq!(stored["tasks"], json!([]));
}

#[tokio::test]
async fn planning_validates_statuses_ids_and_dependencies() {
    let f = Fixture::new();
    let custom = Some("plan/tasks.json");
    f.call_with("Planning", json!({"action": "add", "title": "A"}), custom)
        .await
        .unwrap();
    f.call_with(
        "Planning",
        json!({"action": "add", "title": "B", "dependencies": ["1"]}),
        custom,
    )
    .await
    .unwrap();
    assert!(f.root().join("plan/tasks.json").exists());

    let call = |input: Value| f.call_with("Planning", input, custom);
    let status = call(json!({"action": "update", "id": "1", "status": "finished"}))
        .await
        .unwrap_err();
    assert!(status.to_string().contains("`status`"), "{status}");
    assert!(status.to_string().contains("in_progress"));

    let cycle = call(json!({"action": "update", "id": "1", "dependencies": ["2"]}))
        .await
        .unwrap_err();
    assert!(cycle.to_string().contains("cycle"), "{cycle}");
    let unknown = call(json!({"action": "update", "id": "9", "status": "done"}))
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("`id`"));
    let duplicate = call(json!({"action": "add", "title": "C", "id": "1"}))
        .await
        .unwrap_err();
    assert!(duplicate.to_string().contains("already exists"));
    let bad_id = call(json!({"action": "add", "title": "C", "id": "../x"}))
        .await
        .unwrap_err();
    assert!(bad_id.to_string().contains("`id`"));
    let missing_dep = call(json!({"action": "add", "title": "C", "dependencies": ["7"]}))
        .await
        .unwrap_err();
    assert!(missing_dep.to_string().contains("`dependencies`"));
    let action = call(json!({"action": "delete"})).await.unwrap_err();
    assert!(action.to_string().contains("`action`"));

    // Nothing invalid was written.
    let stored: Value = serde_json::from_str(&f.read("plan/tasks.json")).unwrap();
    assert_eq!(stored["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(stored["tasks"][0]["status"], "todo");
}

#[tokio::test]
async fn cancellation_stops_a_command() {
    let f = Fixture::new();
    let cancel = f.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cancel.cancel();
    });
    let started = Instant::now();
    let out = f
        .call("Bash", json!({"command": "sleep 30"}))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(out.is_error);
    assert!(out.content.contains("cancelled"), "{}", out.content);
}
