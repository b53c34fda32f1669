//! Hostile input: no file in a company can hang the loader, exhaust its memory or forge what
//! it prints. Each case runs under a bound enforced here: in a thread the test abandons when
//! it takes too long, or as the real `proto validate` under `prlimit --as` with a deadline.
//!
//! The bounds are generous (seconds, in a debug build, on a shared machine): they catch a
//! hang or a quadratic cost, not a slow machine. The figures the issue asks for (under one
//! second, under 200 MB, in a release build) are in the commit that added this file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proto::spec::{self, Diagnostic, DirTree, MemTree, Severity};

/// What a hang looks like from here.
const TIME_BOUND: Duration = Duration::from_secs(30);
/// Address space for one `proto validate` (a debug build, threads' stacks included): a
/// loader that read `/dev/zero` whole, or built a 1.7 GB suggestion table, dies under it.
const MEMORY_BOUND: u64 = 256 * 1024 * 1024;

/// Runs `f` in a thread and fails the test if it has not finished within [`TIME_BOUND`].
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(TIME_BOUND) {
        Ok(value) => {
            eprintln!("{what}: {:?}", started.elapsed());
            value
        }
        Err(_) => panic!("{what}: still running after {TIME_BOUND:?}"),
    }
}

/// Loads and validates `tree` under the time bound; every diagnostic, warnings included.
fn diagnostics(what: &str, tree: MemTree) -> Vec<Diagnostic> {
    bounded(what, move || match spec::load_and_validate(&tree) {
        Ok((_, warnings)) => warnings,
        Err(all) => all,
    })
}

/// The minimal valid company of `tests/malformed/_base`.
fn base() -> MemTree {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed/_base");
    let mut tree = MemTree::new("base");
    for (path, _) in [
        ("company.yaml", ()),
        ("product.yaml", ()),
        ("agents/ceo.yaml", ()),
        ("goals/builds.yaml", ()),
    ] {
        tree.insert(path, std::fs::read(root.join(path)).unwrap());
    }
    tree
}

/// The base company written to `dir`, for the cases that need a real directory.
fn base_on_disk(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed/_base");
    for path in [
        "company.yaml",
        "product.yaml",
        "agents/ceo.yaml",
        "goals/builds.yaml",
    ] {
        write(
            dir,
            path,
            &std::fs::read_to_string(root.join(path)).unwrap(),
        );
    }
}

fn write(dir: &Path, path: &str, text: &str) {
    let full = dir.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, text).unwrap();
}

fn goal_with_owner(owner: &str) -> String {
    format!(
        "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata:\n  name: builds\nspec:\n  product: app\n  \
         owner: \"{owner}\"\n  description: It builds.\n  check:\n    command: {{ run: \"true\" }}\n"
    )
}

/// `proto validate DIR` under [`MEMORY_BOUND`] (when `prlimit` is there) and [`TIME_BOUND`];
/// its exit status and what it printed.
fn validate_bounded(dir: &Path) -> (Option<i32>, String) {
    let mut command = if Path::new("/usr/bin/prlimit").exists() {
        let mut c = Command::new("/usr/bin/prlimit");
        c.arg(format!("--as={MEMORY_BOUND}")).arg(cli::bin());
        c
    } else {
        Command::new(cli::bin())
    };
    let mut child = command
        .arg("validate")
        .arg(dir)
        .env("HOME", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drained while it runs: thousands of diagnostics would fill a pipe and block it.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + TIME_BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "proto validate {}: still running after {TIME_BOUND:?}",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout.join().unwrap()),
        String::from_utf8_lossy(&stderr.join().unwrap())
    );
    (status.code(), text)
}

// ---------------------------------------------------------------------------------------------
// Imports
// ---------------------------------------------------------------------------------------------

#[test]
fn imports_stay_in_the_tree_and_read_only_regular_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    base_on_disk(dir);
    write(dir, "agents-folder/a.md", "not a memory file\n");
    write(dir, "docs/style.md", "STYLE-MARKER\n");
    symlink("/dev/zero", dir.join("zero.md")).unwrap();
    symlink("/etc/passwd", dir.join("passwd.md")).unwrap();
    nix::unistd::mkfifo(&dir.join("fifo.md"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    write(
        dir,
        "CLAUDE.md",
        "# Memory\n@docs/style.md\n@zero.md\n@fifo.md\n@passwd.md\n@/etc/passwd\n\
         Ask @agents-folder or @ceo.\n@docs/missing.md\n",
    );
    let root = dir.to_path_buf();
    let (spec, diags) = bounded("imports", move || spec::load(&DirTree::new(root)));
    let memory = &spec.claude.memory[0];
    assert_eq!(memory.imports, ["docs/style.md"]);
    assert!(memory.expanded.contains("STYLE-MARKER"));
    assert!(!memory.expanded.contains("root:"), "/etc/passwd was read");
    let on = |line: u32| {
        diags
            .iter()
            .find(|d| d.file == Path::new("CLAUDE.md") && d.pos.line == line)
            .unwrap_or_else(|| panic!("no diagnostic on line {line}: {diags:#?}"))
    };
    for line in [3, 4, 5, 6, 7, 8] {
        assert_eq!(on(line).severity, Severity::Warning, "{}", on(line));
    }
    assert!(on(3).message.contains("leaves the repository"), "{}", on(3));
    assert!(on(4).message.contains("FIFO"), "{}", on(4));
    assert!(on(7).message.contains("folder"), "{}", on(7));
    assert!(on(8).message.contains("no such file"), "{}", on(8));
    // `@ceo` names no file and does not look like a path: plain text, as in Claude Code.
    assert_eq!(diags.iter().filter(|d| d.pos.line == 7).count(), 1);
    // The links to /dev/zero and /etc/passwd and the FIFO are not declarations: listed as
    // refused, reported only where they could have been one.
    assert!(
        diags.iter().all(|d| !d.is_error()),
        "only warnings expected: {diags:#?}"
    );

    // The same company under a memory limit, through the real binary.
    let (code, out) = validate_bounded(dir);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn import_cycles_and_fan_out_are_bounded() {
    let mut tree = base();
    tree.insert("CLAUDE.md", "@a.md\n");
    tree.insert("a.md", "@b.md\n@a.md\n");
    tree.insert(
        "b.md",
        format!("{}\n", "@a.md @b.md @CLAUDE.md ".repeat(20_000)),
    );
    let diags = diagnostics("import cycles", tree);
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:#?}");
}

// ---------------------------------------------------------------------------------------------
// Symbolic links
// ---------------------------------------------------------------------------------------------

const AGENT: &str =
    "---\nname: reviewer\ndescription: Reviews code.\ntools: Read, Grep\n---\nYou review.\n";
const SKILL: &str = "---\nname: release\ndescription: Cuts a release.\n---\nSteps.\n";

/// A company whose `.claude/agents`, `.claude/skills` and `CLAUDE.md` are links to a shared
/// folder, as many teams lay them out.
fn linked_company(dir: &Path) {
    base_on_disk(dir);
    write(dir, "shared/agents/reviewer.md", AGENT);
    write(dir, "shared/skills/release/SKILL.md", SKILL);
    write(dir, "shared/CLAUDE.md", "SHARED-MEMORY\n");
    std::fs::create_dir_all(dir.join(".claude")).unwrap();
    symlink("../shared/agents", dir.join(".claude/agents")).unwrap();
    symlink("../shared/skills", dir.join(".claude/skills")).unwrap();
    symlink("shared/CLAUDE.md", dir.join("CLAUDE.md")).unwrap();
}

#[test]
fn links_inside_a_directory_are_followed() {
    let tmp = tempfile::tempdir().unwrap();
    linked_company(tmp.path());
    let root = tmp.path().to_path_buf();
    let result = bounded("linked dir", move || {
        spec::load_and_validate(&DirTree::new(root))
    });
    let (spec, _) = result.unwrap_or_else(|e| panic!("{e:#?}"));
    assert!(spec.agents.iter().any(|a| a.metadata.name == "reviewer"));
    assert!(spec.claude.skills.iter().any(|s| s.name == "release"));
    assert!(
        spec.claude
            .memory
            .iter()
            .any(|m| m.file == "CLAUDE.md" && m.text.contains("SHARED-MEMORY"))
    );
}

#[test]
fn links_out_of_a_directory_loops_and_special_files_are_refused_where_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "agents/spy.md", AGENT);
    linked_company(dir);
    symlink(outside.path().join("agents"), dir.join(".claude/rules")).unwrap();
    symlink(".", dir.join("shared/agents/again")).unwrap();
    nix::unistd::mkfifo(&dir.join("goals/fifo.yaml"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let root = dir.to_path_buf();
    let (spec, diags) = bounded("refused links", move || spec::load(&DirTree::new(root)));
    assert!(!spec.agents.iter().any(|a| a.metadata.name == "spy"));
    let about = |path: &str| {
        diags
            .iter()
            .find(|d| d.file == Path::new(path))
            .unwrap_or_else(|| panic!("nothing about {path}: {diags:#?}"))
    };
    assert!(about(".claude/rules").is_error());
    assert!(
        about(".claude/rules")
            .message
            .contains("leaves the repository")
    );
    assert!(about(".claude/agents/again").message.contains("loop"));
    assert!(about("goals/fifo.yaml").message.contains("FIFO"));
}

#[test]
fn links_in_a_git_tree_resolve_against_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    cli::git(&repo, &["init", "-q"]);
    linked_company(&repo);
    symlink("/etc/passwd", repo.join(".claude/settings.json")).unwrap();
    symlink("missing.md", repo.join("dangling.md")).unwrap();
    symlink("..", repo.join("shared/up")).unwrap();
    cli::commit_all(&repo, "a company with links");
    let cache = tmp.path().join("cache");
    let source =
        proto::source::GitSource::open(repo.to_str().unwrap(), None, None, &cache).unwrap();
    let head = source.head().unwrap();
    for (what, tree) in [
        (
            "git tree",
            Box::new(source.tree(&head).unwrap()) as Box<dyn spec::FileTree + Send>,
        ),
        ("snapshot", Box::new(source.snapshot(&head).unwrap())),
    ] {
        let (spec, diags) = bounded(what, move || spec::load(&*tree));
        assert!(
            spec.agents.iter().any(|a| a.metadata.name == "reviewer"),
            "{what}: {diags:#?}"
        );
        assert!(spec.claude.skills.iter().any(|s| s.name == "release"));
        assert!(
            spec.claude
                .memory
                .iter()
                .any(|m| m.file == "CLAUDE.md" && m.text.contains("SHARED-MEMORY"))
        );
        let settings = diags
            .iter()
            .find(|d| d.file == Path::new(".claude/settings.json"))
            .unwrap_or_else(|| panic!("{what}: {diags:#?}"));
        assert!(settings.is_error() && settings.message.contains("leaves the repository"));
        assert!(
            diags
                .iter()
                .any(|d| d.file == Path::new("shared/up") && d.message.contains("loop")),
            "{what}: {diags:#?}"
        );
    }
}

#[test]
fn links_from_a_company_folder_may_reach_the_rest_of_its_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let company = repo.join("company");
    std::fs::create_dir_all(&company).unwrap();
    cli::git(&repo, &["init", "-q"]);
    base_on_disk(&company);
    write(&repo, "shared/agents/reviewer.md", AGENT);
    std::fs::create_dir_all(company.join(".claude")).unwrap();
    symlink("../../shared/agents", company.join(".claude/agents")).unwrap();
    symlink("../../..", company.join(".claude/out")).unwrap();
    cli::commit_all(&repo, "a company in a folder, linking a shared one");
    let cache = tmp.path().join("cache");
    let source =
        proto::source::GitSource::open(repo.to_str().unwrap(), None, Some("company"), &cache)
            .unwrap();
    let tree = source.tree(&source.head().unwrap()).unwrap();
    let (spec, diags) = bounded("company folder", move || spec::load(&tree));
    assert!(
        spec.agents.iter().any(|a| a.metadata.name == "reviewer"),
        "{diags:#?}"
    );
    let out = diags
        .iter()
        .find(|d| d.file == Path::new(".claude/out"))
        .unwrap_or_else(|| panic!("{diags:#?}"));
    assert!(out.is_error() && out.message.contains("leaves the repository"));
}

// ---------------------------------------------------------------------------------------------
// Costs that grew faster than the input
// ---------------------------------------------------------------------------------------------

#[test]
fn a_huge_wrong_owner_costs_a_line() {
    for size in [400_000, 3_900_000] {
        let mut tree = base();
        let owner = "x".repeat(size);
        tree.insert("goals/builds.yaml", goal_with_owner(&owner));
        let diags = diagnostics(&format!("{size}-byte owner"), tree);
        assert!(diags.iter().any(|d| d.is_error()));
        for d in &diags {
            assert!(d.to_string().len() < 2_000, "{} bytes", d.to_string().len());
        }
    }
}

#[test]
fn huge_unknown_fields_and_kinds_cost_a_line() {
    let mut tree = base();
    let key = "k".repeat(1_000_000);
    tree.insert(
        "goals/more.yaml",
        format!(
            "apiVersion: proto.dev/v1alpha1\nkind: {key}\nmetadata:\n  name: x\n---\n\
             apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata:\n  name: y\n  {key}: 1\nspec: {{}}\n"
        ),
    );
    let diags = diagnostics("huge keys", tree);
    assert!(!diags.is_empty());
    assert!(diags.iter().all(|d| d.to_string().len() < 2_000));
}

#[test]
fn a_huge_cron_is_refused_quickly() {
    let mut tree = base();
    let cron = format!("{} * * * *", vec!["7"; 550_000].join(","));
    let goal = goal_with_owner("ceo").replace(
        "  description: It builds.\n",
        &format!("  description: It builds.\n  schedule: \"{cron}\"\n"),
    );
    tree.insert("goals/builds.yaml", goal);
    let diags = diagnostics("1.1 MB cron", tree);
    assert!(
        diags
            .iter()
            .any(|d| d.field.as_deref() == Some("spec.schedule"))
    );
}

#[test]
fn forty_thousand_mcp_servers_are_located_in_linear_time() {
    let mut tree = base();
    let servers: Vec<String> = (0..40_000)
        .map(|i| format!("    \"s{i}\": {{\"command\": \"run\", \"bogus{i}\": 1}}"))
        .collect();
    tree.insert(
        ".mcp.json",
        format!(
            "{{\n  \"mcpServers\": {{\n{}\n  }}\n}}\n",
            servers.join(",\n")
        ),
    );
    let diags = diagnostics("40,000 MCP servers", tree);
    let last = diags
        .iter()
        .find(|d| {
            d.field
                .as_deref()
                .is_some_and(|f| f.contains("s39999") && f.contains("bogus39999"))
        })
        .unwrap_or_else(|| panic!("{} diagnostics", diags.len()));
    assert_eq!(last.pos.line, 40_002);
}

#[test]
fn many_settings_rules_are_located_in_linear_time() {
    let mut tree = base();
    let rules: Vec<String> = (0..40_000).map(|i| format!("\"Nope{i}\"")).collect();
    tree.insert(
        ".claude/settings.json",
        format!(
            "{{\"permissions\": {{\"allow\": [{}]}}}}",
            rules.join(",\n")
        ),
    );
    let diags = diagnostics("40,000 permission rules", tree);
    assert!(diags.len() >= 40_000);
}

#[test]
fn a_long_tool_list_costs_what_it_holds() {
    let tools: Vec<String> = (0..100_000).map(|i| format!("T{i}")).collect();
    let mut tree = base();
    tree.insert(
        ".claude/agents/x.md",
        format!(
            "---\nname: x\ndescription: d\ntools: {}\n---\nbody\n",
            tools.join(", ")
        ),
    );
    let diags = diagnostics("100,000 tools (69 s before)", tree);
    assert!(diags.len() >= 100_000);
}

#[test]
fn a_line_of_a_million_mentions_costs_what_it_holds() {
    let mut tree = base();
    // Each import's column was counted from the start of its line, and each mention was
    // looked up in the tree, however often it repeated.
    tree.insert("CLAUDE.md", "@x ".repeat(1_000_000));
    let diags = diagnostics("1,000,000 mentions on a line (85 s before)", tree);
    assert!(diags.iter().all(|d| !d.is_error()));
    // Distinct ones: looked up up to a bound, then read as text, with a warning.
    let mut tree = base();
    let mentions: Vec<String> = (0..300_000).map(|i| format!("@m{i}")).collect();
    tree.insert("CLAUDE.md", mentions.join(" "));
    let diags = diagnostics("300,000 distinct mentions", tree);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert!(diags[0].message.contains("distinct @paths"), "{}", diags[0]);
}

#[test]
fn large_inputs_validate_under_a_memory_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let case = |name: &str, files: &[(&str, String)]| {
        let dir = tmp.path().join(name);
        base_on_disk(&dir);
        for (path, text) in files {
            write(&dir, path, text);
        }
        let started = Instant::now();
        let (code, out) = validate_bounded(&dir);
        eprintln!("proto validate, {name}: {:?}", started.elapsed());
        assert!(
            code.is_some_and(|c| c == 0 || c == 1),
            "{name}: killed or crashed ({code:?}): {}",
            out.chars().take(2000).collect::<String>()
        );
        assert!(
            out.lines().all(|l| l.len() < 2_000),
            "{name}: a line is too long"
        );
    };
    case(
        "owner-3.9MB",
        &[("goals/builds.yaml", goal_with_owner(&"x".repeat(3_900_000)))],
    );
    let cron = format!("{} * * * *", vec!["7"; 550_000].join(","));
    case(
        "cron-1.1MB",
        &[(
            "goals/builds.yaml",
            goal_with_owner("dev").replace(
                "  description: It builds.\n",
                &format!("  description: It builds.\n  schedule: \"{cron}\"\n"),
            ),
        )],
    );
    let servers: Vec<String> = (0..40_000)
        .map(|i| format!("\"s{i}\": {{\"command\": \"run\", \"bogus{i}\": 1}}"))
        .collect();
    case(
        "mcp-40000",
        &[(
            ".mcp.json",
            format!("{{\"mcpServers\": {{{}}}}}", servers.join(",\n")),
        )],
    );
    case("mentions-1M", &[("CLAUDE.md", "@x ".repeat(1_000_000))]);
    let mentions: Vec<String> = (0..300_000).map(|i| format!("@m{i}")).collect();
    case(
        "mentions-300000-distinct",
        &[("CLAUDE.md", mentions.join(" "))],
    );
}

// ---------------------------------------------------------------------------------------------
// What is printed
// ---------------------------------------------------------------------------------------------

#[test]
fn a_file_name_cannot_forge_a_diagnostic_line() {
    let mut tree = base();
    tree.insert(
        "goals/x\nfake.yaml:1:1: all good\u{1b}[2J\u{7}.yaml",
        "kind: [\n",
    );
    tree.insert(
        "goals/builds.yaml",
        // YAML escapes: ESC, BEL, NUL, CR, LF in the value the owner check echoes.
        goal_with_owner("dev\\e]0;pwned\\a\\0\\r\\nfake.yaml:1:1: all good"),
    );
    let diags = diagnostics("forged lines", tree);
    assert!(diags.len() >= 2, "{diags:#?}");
    for d in &diags {
        let line = d.to_string();
        assert!(
            !line.contains(['\n', '\r', '\u{1b}', '\u{7}', '\0']),
            "{line:?}"
        );
    }
    assert!(diags.iter().any(|d| {
        d.to_string()
            .contains("x\\nfake.yaml:1:1: all good\\u{1b}[2J")
    }));
}

#[test]
fn a_file_name_that_is_not_utf8_is_named_not_missing() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    base_on_disk(dir);
    let name = std::ffi::OsStr::from_bytes(b"bad\xff.yaml");
    std::fs::write(dir.join("goals").join(name), "kind: Goal\n").unwrap();
    let root: PathBuf = dir.to_path_buf();
    let (_, diags) = bounded("non-UTF-8 name", move || spec::load(&DirTree::new(root)));
    let d = diags
        .iter()
        .find(|d| d.file.to_string_lossy().starts_with("goals/bad"))
        .unwrap_or_else(|| panic!("{diags:#?}"));
    assert!(d.is_error());
    assert!(d.message.contains("not valid UTF-8"), "{d}");
    assert!(!d.message.contains("No such file"), "{d}");
    assert!(d.to_string().starts_with("goals/bad\\xFF.yaml: "), "{d}");
}

#[test]
fn json_files_may_start_with_a_byte_order_mark() {
    let mut tree = base();
    tree.insert(
        ".claude/settings.json",
        "\u{feff}{\"permissions\": {\"allow\": [\"Read\"]}}",
    );
    tree.insert(
        ".mcp.json",
        "\u{feff}{\"mcpServers\": {\"docs\": {\"command\": \"docs-server\"}}}",
    );
    let diags = diagnostics("BOM", tree.clone());
    assert!(diags.is_empty(), "{diags:#?}");
    let (spec, _) = spec::load(&tree);
    assert_eq!(spec.claude.mcp_servers.len(), 1);
    assert!(spec.claude.settings.is_some());
}

#[test]
fn integer_bounds_print_exactly() {
    let mut tree = base();
    let company = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed/_base/company.yaml"),
    )
    .unwrap();
    tree.insert(
        "company.yaml",
        format!("{company}  budgets:\n    tokensPerTask: 18446744073709551616\n"),
    );
    let diags = diagnostics("u64 bound", tree);
    let d = diags
        .iter()
        .find(|d| {
            d.field
                .as_deref()
                .is_some_and(|f| f.ends_with("tokensPerTask"))
        })
        .unwrap_or_else(|| panic!("{diags:#?}"));
    assert!(
        d.message.ends_with("out of range 0..=18446744073709551615"),
        "{d}"
    );
}
