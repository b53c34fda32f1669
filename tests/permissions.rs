//! Permission rules in Claude Code syntax, decided table by table: Bash globs and the legacy
//! prefix form, compound commands, gitignore-style path rules, domains, MCP tools, precedence
//! and the default for tools nothing allows.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};

use proto::policy::permissions::{
    Decision, Roots, command_matches, decide, decide_in, split_command,
};
use proto::spec::claude::Permissions;
use serde_json::{Value, json};

fn perms(allow: &[&str], ask: &[&str], deny: &[&str]) -> Permissions {
    let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
    Permissions {
        allow: own(allow),
        ask: own(ask),
        deny: own(deny),
        default_mode: None,
    }
}

fn roots() -> Roots {
    Roots {
        workspace: PathBuf::from("/work/ws"),
        home: Some(PathBuf::from("/home/agent")),
    }
}

/// Short names for the expected outcome.
#[derive(Debug, PartialEq)]
enum D {
    Allow,
    Ask,
    Deny,
}

fn kind(d: &Decision) -> D {
    match d {
        Decision::Allow { .. } => D::Allow,
        Decision::Ask { .. } => D::Ask,
        Decision::Deny { .. } => D::Deny,
    }
}

#[test]
fn bash_specifiers_match_like_claude_code() {
    let cases: &[(&str, &str, bool)] = &[
        // Exact commands.
        ("npm test", "npm test", true),
        ("npm test", "npm test --watch", false),
        ("npm test", "  npm test  ", true),
        // A trailing ` *` is optional and keeps the word boundary.
        ("git push *", "git push", true),
        ("git push *", "git push origin main", true),
        ("git push *", "git pushx", false),
        ("git push *", "git pull", false),
        ("ls *", "ls -la", true),
        ("ls *", "lsof", false),
        ("ls*", "lsof", true),
        ("ls*", "ls", true),
        // Wildcards anywhere, spaces included.
        ("git * main", "git push origin main", true),
        ("git * main", "git push origin dev", false),
        ("* install", "npm install", true),
        ("* install", "npm install lodash", false),
        ("npm * --save", "npm install lodash --save", true),
        // The legacy prefix form.
        ("npm run test:*", "npm run test", true),
        ("npm run test:*", "npm run test -- --ci", true),
        ("npm run test:*", "npm run testing", false),
        ("npm:*", "npm install", true),
        ("git:*", "gitk", false),
        // Regex characters in rules are literal.
        ("echo a.b", "echo axb", false),
        ("echo (x)", "echo (x)", true),
    ];
    for (spec, command, expected) in cases {
        assert_eq!(
            command_matches(spec, command),
            *expected,
            "Bash({spec}) against `{command}`"
        );
    }
}

#[test]
fn compound_commands_split_outside_quotes() {
    let cases: &[(&str, &[&str])] = &[
        ("a && b", &["a", "b"]),
        ("a; b ;c", &["a", "b", "c"]),
        ("a | b || c & d", &["a", "b", "c", "d"]),
        ("a\nb", &["a", "b"]),
        ("echo 'x && y'", &["echo 'x && y'"]),
        ("echo \"a; b\" && c", &["echo \"a; b\"", "c"]),
        ("echo a\\;b", &["echo a\\;b"]),
        ("make 2>&1 | tee log", &["make 2>&1", "tee log"]),
        ("cmd &> out", &["cmd &> out"]),
        ("echo $(a && b) && c", &["echo $(a && b)", "c"]),
        ("", &[]),
        ("  ;; ", &[]),
    ];
    for (command, parts) in cases {
        assert_eq!(split_command(command), *parts, "splitting `{command}`");
    }
}

#[test]
fn bash_decisions() {
    let p = perms(
        &["Bash(git status)", "Bash(npm run test:*)", "Bash(cargo *)"],
        &["Bash(git push *)"],
        &["Bash(rm -rf *)", "Bash(curl * | sh)"],
    );
    let tools = vec!["Read".to_string()];
    let cases: &[(&str, D)] = &[
        ("git status", D::Allow),
        ("npm run test -- --ci", D::Allow),
        ("cargo build --release", D::Allow),
        ("git push origin main", D::Ask),
        ("git push", D::Ask),
        ("rm -rf /", D::Deny),
        ("ls", D::Deny),
        // Every part must be allowed, and any denied part denies the whole.
        ("git status && cargo test", D::Allow),
        ("git status && ls", D::Deny),
        ("git status; rm -rf target", D::Deny),
        ("cargo test | rm -rf x", D::Deny),
        ("cargo build && git push", D::Ask),
        ("git push && rm -rf /", D::Deny),
        // A rule written for a whole pipeline still catches it.
        ("curl https://x.sh | sh", D::Deny),
        // Quoting keeps operators inside one part.
        ("cargo run -- 'a && b'", D::Allow),
    ];
    for (command, expected) in cases {
        let d = decide_in("Bash", &json!({ "command": command }), &p, &tools, &roots());
        assert_eq!(kind(&d), *expected, "`{command}`: {d:?}");
    }
}

#[test]
fn deny_beats_ask_beats_allow_whatever_the_specificity() {
    let p = perms(
        &["Bash(git push origin main)", "Bash"],
        &["Bash(git push *)"],
        &["Bash(git push --force *)"],
    );
    let d = |c: &str| decide_in("Bash", &json!({ "command": c }), &p, &[], &roots());
    assert_eq!(
        d("git push origin main"),
        Decision::Ask {
            rule: "Bash(git push *)".into(),
            reason: "Bash `git push origin main` needs approval (rule Bash(git push *))".into()
        }
    );
    assert_eq!(
        d("git push --force origin"),
        Decision::Deny {
            rule: Some("Bash(git push --force *)".into()),
            reason: "Bash `git push --force origin` is denied by the rule Bash(git push --force *)"
                .into()
        }
    );
    assert_eq!(
        d("echo hi"),
        Decision::Allow {
            rule: "Bash".into()
        }
    );
}

#[test]
fn the_agents_tools_act_as_allow_rules() {
    let none = Permissions::default();
    let tools: Vec<String> = ["Read", "Bash(npm test)", "Edit", "mcp__github"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let cases: &[(&str, Value, D)] = &[
        ("Read", json!({ "file_path": "src/main.rs" }), D::Allow),
        ("Bash", json!({ "command": "npm test" }), D::Allow),
        ("Bash", json!({ "command": "npm publish" }), D::Deny),
        ("Edit", json!({ "file_path": "a.txt" }), D::Allow),
        // The tools list names tools exactly: holding Edit is not holding Write.
        ("Write", json!({ "file_path": "a.txt" }), D::Deny),
        ("MultiEdit", json!({ "file_path": "a.txt" }), D::Allow),
        ("mcp__github__create_issue", json!({}), D::Allow),
        ("mcp__gitlab__create_issue", json!({}), D::Deny),
        ("Git", json!({ "message": "x" }), D::Deny),
        ("Delegate", json!({ "agent": "cto" }), D::Deny),
    ];
    for (tool, input, expected) in cases {
        let d = decide_in(tool, input, &none, &tools, &roots());
        assert_eq!(kind(&d), *expected, "{tool} {input}: {d:?}");
    }
}

#[test]
fn a_tool_nobody_allows_is_denied_with_a_reason() {
    let tools = vec!["Read".to_string(), "Bash(npm test)".to_string()];
    let d = decide_in(
        "Write",
        &json!({ "file_path": "x" }),
        &Permissions::default(),
        &tools,
        &roots(),
    );
    assert_eq!(
        d,
        Decision::Deny {
            rule: None,
            reason: "Write of /work/ws/x is not allowed: neither the agent's tools nor the allow \
                     rules include Write"
                .into()
        }
    );
    let d = decide_in(
        "Bash",
        &json!({ "command": "ls" }),
        &Permissions::default(),
        &tools,
        &roots(),
    );
    assert_eq!(
        d.to_string(),
        "Bash `ls` is not allowed: no allow rule matches (rules for Bash: Bash(npm test))"
    );
    let d = decide_in(
        "Bash",
        &json!({ "command": "npm test && ls" }),
        &Permissions::default(),
        &tools,
        &roots(),
    );
    assert!(d.to_string().ends_with("(part of `npm test && ls`)"), "{d}");
}

#[test]
fn path_rules_follow_gitignore_and_their_anchors() {
    // (rule, path in the tool input, matches?)
    let cases: &[(&str, &str, bool)] = &[
        ("./.env", ".env", true),
        ("./.env", "/work/ws/.env", true),
        // No slash inside: any depth, as in gitignore.
        (".env", "config/.env", true),
        ("*.pem", "certs/deep/server.pem", true),
        ("*.pem", "server.pem.txt", false),
        // A slash inside anchors at the workspace.
        ("src/**", "src/main.rs", true),
        ("src/**", "src/a/b/c.rs", true),
        ("src/**", "lib/src/main.rs", false),
        ("src/*.rs", "src/main.rs", true),
        ("src/*.rs", "src/a/main.rs", false),
        ("src/**/*.rs", "src/main.rs", true),
        ("src/**/*.rs", "src/a/b/main.rs", true),
        ("**/secrets/**", "a/b/secrets/key", true),
        ("**/secrets/**", "secrets/key", true),
        ("/docs/**", "docs/x.md", true),
        ("/docs", "docs/x.md", true),
        ("/docs", "other/docs/x.md", false),
        ("docs/", "docs/x.md", true),
        ("docs/", "docs", false),
        ("file?.txt", "file1.txt", true),
        ("file[0-9].txt", "file7.txt", true),
        ("file[!0-9].txt", "file7.txt", false),
        // A directory pattern covers what is inside.
        ("node_modules", "web/node_modules/x/index.js", true),
        // Absolute and home-relative.
        ("//etc/passwd", "/etc/passwd", true),
        ("//etc/**", "/etc/ssh/sshd_config", true),
        ("//etc/**", "/work/ws/etc/x", false),
        ("~/.ssh/**", "/home/agent/.ssh/id_rsa", true),
        ("~/.ssh/**", "/work/ws/.ssh/id_rsa", false),
        // Paths are normalized before matching.
        ("src/**", "src/../secret.txt", false),
        ("./.env", "src/../.env", true),
        ("src/**", "/work/ws/./src/x", true),
        // Outside the workspace, workspace rules do not apply.
        ("**", "/tmp/x", false),
        ("**", "anything/at/all", true),
    ];
    for (rule, path, expected) in cases {
        let p = perms(&[], &[], &[&format!("Read({rule})")]);
        let d = decide_in(
            "Read",
            &json!({ "file_path": path }),
            &p,
            &["Read".to_string()],
            &roots(),
        );
        let denied = matches!(d, Decision::Deny { rule: Some(_), .. });
        assert_eq!(denied, *expected, "Read({rule}) against {path}: {d:?}");
    }
}

#[test]
fn edit_rules_cover_write_and_read_rules_cover_search() {
    let p = perms(
        &["Edit(src/**)"],
        &[],
        &["Edit(./.env)", "Read(./secrets/**)"],
    );
    let tools = vec!["Read".to_string(), "Grep".to_string(), "Glob".to_string()];
    let cases: &[(&str, Value, D)] = &[
        ("Edit", json!({ "file_path": "src/lib.rs" }), D::Allow),
        ("Write", json!({ "file_path": "src/new.rs" }), D::Allow),
        ("Write", json!({ "path": "src/new.rs" }), D::Allow),
        ("Write", json!({ "file_path": ".env" }), D::Deny),
        ("Write", json!({ "file_path": "README.md" }), D::Deny),
        ("Read", json!({ "file_path": "secrets/key" }), D::Deny),
        (
            "Grep",
            json!({ "pattern": "x", "path": "secrets" }),
            D::Deny,
        ),
        ("Glob", json!({ "pattern": "*" }), D::Allow),
        (
            "Grep",
            json!({ "pattern": "x", "path": "secrets/sub" }),
            D::Deny,
        ),
        ("Grep", json!({ "pattern": "x", "path": "src" }), D::Allow),
        ("Read", json!({ "file_path": "src/lib.rs" }), D::Allow),
    ];
    for (tool, input, expected) in cases {
        let d = decide_in(tool, input, &p, &tools, &roots());
        assert_eq!(kind(&d), *expected, "{tool} {input}: {d:?}");
    }
}

#[test]
fn write_rules_and_other_tools() {
    let p = perms(
        &[
            "Write(docs/**)",
            "WebFetch(domain:docs.rs)",
            "WebFetch(domain:*.github.com)",
            "Task(reviewer)",
            "Git(commit)",
        ],
        &["Git(push *)", "Computer(type)"],
        &["mcp__prod", "Git(push main)", "Computer(key)"],
    );
    let cases: &[(&str, Value, D)] = &[
        ("Write", json!({ "file_path": "docs/a.md" }), D::Allow),
        ("Edit", json!({ "file_path": "docs/a.md" }), D::Deny),
        (
            "WebFetch",
            json!({ "url": "https://docs.rs/regex" }),
            D::Allow,
        ),
        (
            "WebFetch",
            json!({ "url": "https://DOCS.RS:443/x?y" }),
            D::Allow,
        ),
        (
            "WebFetch",
            json!({ "url": "https://docs.rs.evil.com/" }),
            D::Deny,
        ),
        (
            "WebFetch",
            json!({ "url": "https://api.github.com/x" }),
            D::Allow,
        ),
        (
            "WebFetch",
            json!({ "url": "https://github.com/x" }),
            D::Deny,
        ),
        (
            "WebFetch",
            json!({ "url": "https://user@evil.com/docs.rs" }),
            D::Deny,
        ),
        ("Delegate", json!({ "agent": "reviewer" }), D::Allow),
        ("Task", json!({ "subagent_type": "reviewer" }), D::Allow),
        ("Delegate", json!({ "agent": "cfo" }), D::Deny),
        ("Git", json!({ "message": "fix" }), D::Allow),
        ("Git", json!({ "branch": "feature" }), D::Ask),
        ("Git", json!({ "branch": "main" }), D::Deny),
        // The screen by action: looking is allowed, typing asks, keys are refused.
        ("Computer", json!({ "action": "screenshot" }), D::Allow),
        ("Computer", json!({ "action": "type", "text": "x" }), D::Ask),
        (
            "Computer",
            json!({ "action": "key", "text": "ctrl+c" }),
            D::Deny,
        ),
        ("mcp__prod__drop_table", json!({}), D::Deny),
        // `mcp__prod` is one server, not a prefix of names.
        ("mcp__production__x", json!({}), D::Allow),
    ];
    for (tool, input, expected) in cases {
        let granted = ["mcp__production".to_string(), "Computer".to_string()];
        let d = decide_in(tool, input, &p, &granted, &roots());
        assert_eq!(kind(&d), *expected, "{tool} {input}: {d:?}");
    }
}

#[test]
fn mcp_rules() {
    let cases: &[(&str, &str, bool)] = &[
        ("mcp__github", "mcp__github__create_issue", true),
        ("mcp__github__*", "mcp__github__create_issue", true),
        (
            "mcp__github__create_issue",
            "mcp__github__create_issue",
            true,
        ),
        (
            "mcp__github__create_issue",
            "mcp__github__delete_repo",
            false,
        ),
        ("mcp__github", "mcp__githubber__x", false),
        ("mcp__git", "mcp__github__x", false),
    ];
    for (rule, tool, expected) in cases {
        let p = perms(&[rule], &[], &[]);
        let d = decide_in(tool, &json!({}), &p, &[], &roots());
        assert_eq!(d.is_allow(), *expected, "{rule} for {tool}: {d:?}");
    }
}

#[test]
fn restrictive_rules_fail_closed_when_the_input_lacks_a_subject() {
    // A deny rule with a specifier whose subject is missing from the input still denies; an
    // allow rule in the same position never allows.
    let p = perms(&["Read(src/**)"], &[], &[]);
    let d = decide_in("Read", &json!({}), &p, &[], &roots());
    assert_eq!(kind(&d), D::Deny, "{d:?}");
    let p = perms(&["Read"], &[], &["Read(./.env)"]);
    let d = decide_in("Read", &json!({}), &p, &[], &roots());
    assert_eq!(kind(&d), D::Deny, "{d:?}");
    let p = perms(&["WebFetch"], &[], &["WebFetch(example.com)"]);
    let d = decide_in(
        "WebFetch",
        &json!({ "url": "https://x.org" }),
        &p,
        &[],
        &roots(),
    );
    assert_eq!(
        kind(&d),
        D::Deny,
        "an unreadable specifier on a deny rule denies"
    );
}

#[test]
fn settings_rules_load_from_json_and_decide_with_home() {
    let p: Permissions = serde_json::from_str(
        r#"{ "allow": ["Bash(npm run *)", "Read"], "deny": ["Read(~/.aws/**)"] }"#,
    )
    .unwrap();
    let root = Path::new("/work/ws");
    let d = decide(
        "Bash",
        &json!({ "command": "npm run build" }),
        &p,
        &[],
        root,
    );
    assert!(d.is_allow(), "{d:?}");
    if let Some(home) = std::env::var_os("HOME") {
        let key = Path::new(&home).join(".aws/credentials");
        let d = decide(
            "Read",
            &json!({ "file_path": key.to_string_lossy() }),
            &p,
            &[],
            root,
        );
        assert_eq!(kind(&d), D::Deny, "{d:?}");
    }
}

#[test]
fn deny_rules_see_through_wrappers_substitutions_and_subshells() {
    let p = perms(
        &["Bash(echo *)", "Bash(cd *)"],
        &["Bash(git push *)"],
        &["Bash(rm -rf *)"],
    );
    let cases: &[(&str, D)] = &[
        ("rm -rf x", D::Deny),
        ("FOO=1 rm -rf x", D::Deny),
        ("sudo rm -rf x", D::Deny),
        ("timeout 5s rm -rf x", D::Deny),
        ("nice -n 10 rm -rf x", D::Deny),
        ("env A=1 B=2 rm -rf x", D::Deny),
        ("xargs -0 rm -rf", D::Deny),
        ("(cd x && rm -rf y)", D::Deny),
        ("{ rm -rf y; }", D::Deny),
        ("echo $(rm -rf x)", D::Deny),
        ("echo `rm -rf x`", D::Deny),
        ("echo $(echo $(rm -rf x))", D::Deny),
        ("sudo git push origin", D::Ask),
        // A narrow allow rule does not reach into a substitution or subshell.
        ("echo $(whoami)", D::Deny),
        ("(echo hi)", D::Deny),
        // Nor past an assignment, which may change what runs (`PATH=...`).
        ("PATH=/tmp echo hi", D::Deny),
        ("echo hi", D::Allow),
        ("cd src && echo ok", D::Allow),
    ];
    for (command, expected) in cases {
        let d = decide_in("Bash", &json!({ "command": command }), &p, &[], &roots());
        assert_eq!(kind(&d), *expected, "`{command}`: {d:?}");
    }
    // Only a plain Bash rule allows what patterns cannot see whole.
    let plain = perms(&["Bash"], &[], &["Bash(rm -rf *)"]);
    for (command, expected) in [("echo $(whoami)", D::Allow), ("echo $(rm -rf /)", D::Deny)] {
        let d = decide_in(
            "Bash",
            &json!({ "command": command }),
            &plain,
            &[],
            &roots(),
        );
        assert_eq!(kind(&d), expected, "`{command}`: {d:?}");
    }
    let d = decide_in(
        "Bash",
        &json!({ "command": "echo $(id)" }),
        &p,
        &[],
        &roots(),
    );
    assert!(d.to_string().contains("substitution or subshell"), "{d}");
}

#[test]
fn deny_rules_follow_symlinks() {
    let outside = tempfile::tempdir().unwrap();
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("id_rsa"), "key").unwrap();
    std::os::unix::fs::symlink(outside.path(), ws.path().join("innocent")).unwrap();
    let secret = outside.path().canonicalize().unwrap().join("**");
    let rule = format!("Read(/{})", secret.to_string_lossy());
    let p = perms(&["Read"], &[], &[&rule]);
    let roots = Roots {
        workspace: ws.path().to_path_buf(),
        home: None,
    };
    for path in ["innocent/id_rsa", "innocent/not-yet-there"] {
        let d = decide_in("Read", &json!({ "file_path": path }), &p, &[], &roots);
        assert_eq!(kind(&d), D::Deny, "{path}: {d:?}");
    }
    let d = decide_in("Read", &json!({ "file_path": "other" }), &p, &[], &roots);
    assert_eq!(kind(&d), D::Allow, "{d:?}");
}

#[test]
fn home_rules_without_a_home_match_nothing() {
    let p = perms(&["Read"], &[], &["Read(~/.ssh/**)"]);
    let roots = Roots {
        workspace: PathBuf::from("/work/ws"),
        home: None,
    };
    let d = decide_in("Read", &json!({ "file_path": "a.txt" }), &p, &[], &roots);
    assert!(d.is_allow(), "{d:?}");
}

#[test]
fn rules_may_name_hyphenated_mcp_servers() {
    let p = perms(
        &["mcp__computer-use__*", "mcp__my-server__tool"],
        &[],
        &["mcp__my-server__drop"],
    );
    let cases: &[(&str, D)] = &[
        ("mcp__computer-use__click", D::Allow),
        ("mcp__my-server__tool", D::Allow),
        ("mcp__my-server__other", D::Deny),
        ("mcp__my-server__drop", D::Deny),
        ("mcp__computer-user__click", D::Deny),
    ];
    for (tool, expected) in cases {
        let d = decide_in(tool, &json!({}), &p, &[], &roots());
        assert_eq!(kind(&d), *expected, "{tool}: {d:?}");
    }
}
