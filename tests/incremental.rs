//! Incremental reloads give exactly what a full load gives: random edit sequences (files
//! added, changed, renamed and removed; goals, agents, products, Claude Code files and the
//! memory files `CLAUDE.md` imports; duplicate names, dangling references, dependency and
//! reporting cycles, invalid YAML introduced and fixed) are committed to a real git
//! repository, and after every commit the [`Loader`] that saw all earlier commits must agree
//! with a fresh load of the same commit, spec and diagnostics alike.
//!
//! The edits come from a small seeded generator: the seeds are fixed, so a failure names the
//! seed and step that reproduce it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::path::Path;

use git2::{IndexAddOption, Repository, Signature};
use proto::source::GitSource;
use proto::spec::{self, BlobId, FileTree, Loader};

/// xorshift64*: deterministic, and enough to pick edits.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Names drawn from small pools, so that duplicates, dangling references and cycles happen;
/// each mistake is rare enough that valid revisions happen too.
const AGENTS: [&str; 6] = ["ceo", "a1", "a2", "a3", "a4", "a5"];
const PRODUCTS: [&str; 3] = ["p0", "p1", "p2"];
const SKILLS: [&str; 3] = ["s0", "s1", "s2"];

/// The names declared in `files` under `prefix` (read back from what the generator wrote).
fn declared(files: &BTreeMap<String, String>, prefix: &str) -> Vec<String> {
    files
        .iter()
        .filter(|(path, _)| path.starts_with(prefix))
        .flat_map(|(_, text)| {
            text.lines()
                .filter_map(|l| l.strip_prefix("metadata: {name: "))
                .map(|n| n.trim_end_matches('}').to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn mostly<'a>(rng: &mut Rng, good: &'a str, bad: &'a str) -> &'a str {
    if rng.chance(95) { good } else { bad }
}

fn goal_doc(rng: &mut Rng, name: &str, files: &BTreeMap<String, String>) -> String {
    let product = if rng.chance(97) {
        rng.pick(&PRODUCTS)
    } else {
        "nowhere"
    };
    let agents = declared(files, "agents/");
    let owner = if rng.chance(97) && !agents.is_empty() {
        agents[rng.below(agents.len())].clone()
    } else {
        rng.pick(&AGENTS).to_string()
    };
    let priority = rng.pick(&["critical", "high", "medium", "low"]);
    // Dependencies on goals that exist (so cycles can form), now and then a missing or
    // self one.
    let goals: Vec<String> = declared(files, "goals/")
        .into_iter()
        .filter(|g| g != name)
        .collect();
    let mut deps: Vec<String> = Vec::new();
    for _ in 0..rng.below(3) {
        match rng.below(40) {
            0 => deps.push("missing-goal".into()),
            1 => deps.push(name.into()),
            _ if !goals.is_empty() => deps.push(goals[rng.below(goals.len())].clone()),
            _ => {}
        }
    }
    let deps = if deps.is_empty() {
        String::new()
    } else {
        format!("  dependsOn: [{}]\n", deps.join(", "))
    };
    let check = match rng.below(4) {
        0 => "    command: {run: test -f done.txt, timeout: 30s}\n".to_string(),
        1 => "    file: {path: README.md, matches: \"## Usage\"}\n".to_string(),
        2 => "    http: {url: \"http://127.0.0.1:8080/health\", status: 200}\n".to_string(),
        _ => format!(
            "    command: {{run: \"true\", timeout: {}}}\n",
            mostly(rng, "10s", "10 parsecs")
        ),
    };
    let schedule = if rng.chance(20) {
        format!(
            "  schedule: \"{}\"\n",
            mostly(rng, "0 */6 * * *", "0 25 * * *")
        )
    } else {
        String::new()
    };
    let typo = if rng.chance(3) { "  ownr: x\n" } else { "" };
    format!(
        "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: {name}}}\nspec:\n  product: {product}\n  owner: {owner}\n  priority: {priority}\n  description: Goal {name} holds ({}).\n  check:\n{check}{deps}{schedule}{typo}  playbook:\n    - write: {{path: done.txt, content: done}}\n",
        rng.next() % 1000
    )
}

/// The goals file `goals/f<i>.yaml`: one to three goals named after it (now and then one
/// named after another file's, a duplicate).
fn goal_file(rng: &mut Rng, i: usize, files: &BTreeMap<String, String>) -> String {
    (0..1 + rng.below(3))
        .map(|k| {
            let name = if rng.chance(3) {
                format!("g{}-{k}", rng.below(6))
            } else {
                format!("g{i}-{k}")
            };
            format!("---\n{}", goal_doc(rng, &name, files))
        })
        .collect()
}

fn agent_file(rng: &mut Rng, name: &str, files: &BTreeMap<String, String>) -> String {
    let agents: Vec<String> = declared(files, "agents/")
        .into_iter()
        .filter(|a| a != name)
        .collect();
    let reports = if name == "ceo" {
        if rng.chance(3) {
            "  reportsTo: a1\n".to_string()
        } else {
            String::new()
        }
    } else if rng.chance(90) || agents.is_empty() {
        "  reportsTo: ceo\n".to_string()
    } else if rng.chance(80) {
        format!("  reportsTo: {}\n", agents[rng.below(agents.len())])
    } else {
        format!("  reportsTo: {}\n", rng.pick(&AGENTS))
    };
    let skills = if rng.chance(20) {
        format!("  skills: [{}]\n", rng.pick(&SKILLS))
    } else {
        String::new()
    };
    let tools = match rng.below(30) {
        0 => "[Raed]",
        1..=4 => "[Read, mcp__tickets__create]",
        _ => "[Read, Bash]",
    };
    format!(
        "apiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {{name: {name}}}\nspec:\n  title: Agent {name}\n{reports}  description: Does the work of {name} ({}).\n  tools: {tools}\n{skills}  prompt: You are {name}.\n",
        rng.next() % 1000
    )
}

fn product_file(rng: &mut Rng, name: &str) -> String {
    let lead = mostly(rng, "ceo", "nobody");
    let selector = match rng.below(20) {
        0 => "{matchLabels: {role: gpu}}",
        1..=9 => "{names: [laptop]}",
        _ => "{matchLabels: {role: build}}",
    };
    format!(
        "apiVersion: proto.dev/v1alpha1\nkind: Product\nmetadata: {{name: {name}}}\nspec:\n  description: Product {name}.\n  lead: {lead}\n  repo: {{url: ../{name}, branch: main}}\n  computers: {selector}\n"
    )
}

fn markdown_agent(rng: &mut Rng, name: &str) -> String {
    let tools = rng.pick(&["Read, Grep", "Read, Task, TodoWrite", "Read, WebFetch"]);
    let model = rng.pick(&["haiku", "inherit", "sonnet"]);
    let extra = if rng.chance(20) { "color: green\n" } else { "" };
    let skills = if rng.chance(20) {
        format!("skills: {}\n", rng.pick(&SKILLS))
    } else {
        String::new()
    };
    format!(
        "---\nname: {name}\ndescription: Reviews work ({}).\ntools: {tools}\nmodel: {model}\n{extra}{skills}---\nYou are {name}.\n",
        rng.next() % 1000
    )
}

fn pick_existing(rng: &mut Rng, files: &BTreeMap<String, String>, prefix: &str) -> Option<String> {
    let matching: Vec<&String> = files.keys().filter(|k| k.starts_with(prefix)).collect();
    (!matching.is_empty()).then(|| matching[rng.below(matching.len())].clone())
}

/// Every kind of edit, applied to the files of the working tree.
fn edit(rng: &mut Rng, files: &mut BTreeMap<String, String>) {
    match rng.below(100) {
        // Goals: add, change, remove, rename.
        0..=22 => {
            let i = rng.below(6);
            let content = goal_file(rng, i, files);
            files.insert(format!("goals/f{i}.yaml"), content);
        }
        23..=26 => {
            if let Some(path) = pick_existing(rng, files, "goals/") {
                files.remove(&path);
            }
        }
        27..=29 => {
            if let Some(path) = pick_existing(rng, files, "goals/f")
                && let Some(content) = files.remove(&path)
            {
                files.insert(format!("goals/moved/r{}.yml", rng.below(4)), content);
            }
        }
        // Agents and products (rewritten, so cycles and dangling references come and go).
        30..=41 => {
            let name = rng.pick(&AGENTS);
            let content = agent_file(rng, name, files);
            files.insert(format!("agents/{name}.yaml"), content);
        }
        42..=43 => {
            if let Some(path) = pick_existing(rng, files, "agents/a") {
                files.remove(&path);
            }
        }
        44..=49 => {
            let name = rng.pick(&PRODUCTS);
            files.insert(format!("products/{name}.yaml"), product_file(rng, name));
        }
        50 => {
            if let Some(path) = pick_existing(rng, files, "products/") {
                files.remove(&path);
            }
        }
        // Broken files, which a later rewrite of the same path fixes.
        51..=53 => {
            let path = match rng.below(3) {
                0 => format!("agents/{}.yaml", rng.pick(&AGENTS)),
                _ => format!("goals/f{}.yaml", rng.below(6)),
            };
            let broken = rng.pick(&[
                "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: g0\nspec: [\n",
                "kind: Goal\nmetadata: {name: g1}\n",
                "apiVersion: proto.dev/v1alpha1\nkind: Gaol\nmetadata: {name: g2}\n",
                "a: 1\na: 2\n",
                "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: g3}\nspec:\n\tproduct: p0\n",
                "\u{0}\u{ff}",
            ]);
            files.insert(path, broken.to_string());
        }
        54..=56 => {
            // A second Company, or the only one with a missing CEO, and back.
            if rng.chance(30) {
                files.insert("other-company.yaml".into(), company("ceo", "other"));
            } else {
                files.remove("other-company.yaml");
                let ceo = mostly(rng, "ceo", "ceeo");
                files.insert("company.yaml".into(), company(ceo, "acme"));
            }
        }
        // Claude Code files.
        57..=63 => {
            let (dir, name) = match rng.below(20) {
                0 => ("team/", "reviewer"), // a duplicate of the one at the top
                1..=9 => ("team/", "tester"),
                _ => ("", "reviewer"),
            };
            files.insert(
                format!(".claude/agents/{dir}{name}.md"),
                markdown_agent(rng, name),
            );
        }
        64..=65 => {
            if let Some(path) = pick_existing(rng, files, ".claude/agents/") {
                files.remove(&path);
            }
        }
        66..=69 => {
            let name = rng.pick(&SKILLS);
            let content = if rng.chance(90) {
                format!(
                    "---\nname: {name}\ndescription: Skill {name} ({}).\nallowed-tools: Read, Bash(cargo test *)\n---\nDo {name}.\n",
                    rng.next() % 100
                )
            } else {
                "no frontmatter here\n".to_string()
            };
            files.insert(format!(".claude/skills/{name}/SKILL.md"), content);
        }
        70 => {
            if let Some(path) = pick_existing(rng, files, ".claude/skills/") {
                files.remove(&path);
            }
        }
        71..=73 => {
            let content = match rng.below(10) {
                0 => "---\npaths: [\n---\nbroken\n",
                1..=4 => "---\npaths: [\"src/**\"]\n---\nUse four spaces.\n",
                _ => "Always write tests.\n",
            };
            files.insert(
                format!(".claude/rules/r{}.md", rng.below(2)),
                content.to_string(),
            );
        }
        74..=76 => {
            let content = match rng.below(10) {
                0 => r#"{"permissions": {"allow": ["Bash(cargo test *"]}}"#,
                1 => "{not json",
                2..=5 => {
                    r#"{"hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "true"}]}]}}"#
                }
                _ => {
                    r#"{"permissions": {"allow": ["Bash(cargo test *)"], "deny": ["Bash(rm *)"]}}"#
                }
            };
            files.insert(".claude/settings.json".into(), content.to_string());
        }
        77..=79 => {
            let content = match rng.below(10) {
                0 => r#"{"mcpServers": {"other": {"type": "stdio", "command": "true"}}}"#,
                1 => "{}",
                _ => {
                    r#"{"mcpServers": {"tickets": {"type": "http", "url": "http://127.0.0.1:1/mcp"}}}"#
                }
            };
            files.insert(".mcp.json".into(), content.to_string());
        }
        // Memory and what it imports: the imported files are no declaration, yet changing
        // them changes the spec.
        80..=84 => {
            let import = rng.pick(&[
                "@docs/notes.md",
                "@docs/missing.md",
                "@CLAUDE.md",
                "no import",
            ]);
            let dir = rng.pick(&["", "team/"]);
            files.insert(
                format!("{dir}CLAUDE.md"),
                format!(
                    "# Memory\n\nSee {import} for notes ({}).\n",
                    rng.next() % 100
                ),
            );
        }
        85..=89 => {
            files.insert(
                "docs/notes.md".into(),
                format!("Notes, version {}. See @deeper.md\n", rng.next() % 100),
            );
        }
        90..=92 => {
            files.insert(
                "docs/deeper.md".into(),
                format!("Deeper notes {}.\n", rng.next() % 100),
            );
        }
        93 => {
            files.remove("docs/notes.md");
        }
        // The controller's own records and YAML that declares nothing change nothing.
        94..=96 => {
            files.insert(
                ".proto/status.yaml".into(),
                format!("goals: {}\n", rng.next() % 100),
            );
        }
        _ => {
            files.insert(
                "ci/config.yaml".into(),
                format!("steps: [{}]\n", rng.next() % 100),
            );
        }
    }
}

fn company(ceo: &str, name: &str) -> String {
    format!(
        "apiVersion: proto.dev/v1alpha1\nkind: Company\nmetadata: {{name: {name}}}\nspec:\n  mission: Test.\n  ceo: {ceo}\n"
    )
}

/// A valid starting company.
fn initial(rng: &mut Rng) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    files.insert("company.yaml".into(), company("ceo", "acme"));
    files.insert(
        "computers/laptop.yaml".into(),
        "apiVersion: proto.dev/v1alpha1\nkind: Computer\nmetadata: {name: laptop, labels: {role: build}}\nspec:\n  local: {}\n".into(),
    );
    files.insert(
        "agents/ceo.yaml".into(),
        "apiVersion: proto.dev/v1alpha1\nkind: Agent\nmetadata: {name: ceo}\nspec:\n  title: CEO\n  description: Runs it.\n  prompt: You run it.\n".into(),
    );
    files.insert(
        ".mcp.json".into(),
        r#"{"mcpServers": {"tickets": {"type": "http", "url": "http://127.0.0.1:1/mcp"}}}"#.into(),
    );
    for p in PRODUCTS {
        files.insert(
            format!("products/{p}.yaml"),
            format!(
                "apiVersion: proto.dev/v1alpha1\nkind: Product\nmetadata: {{name: {p}}}\nspec:\n  description: Product {p}.\n  lead: ceo\n"
            ),
        );
    }
    for _ in 0..3 {
        edit(rng, &mut files);
    }
    files
}

/// Writes `files` as the whole working tree (removing what is gone) and commits it.
fn commit(repo: &Repository, files: &BTreeMap<String, String>, message: &str) -> String {
    let root = repo.workdir().unwrap().to_path_buf();
    let mut on_disk = Vec::new();
    list(&root, &root, &mut on_disk);
    for path in on_disk {
        if !files.contains_key(&path) {
            std::fs::remove_file(root.join(&path)).unwrap();
        }
    }
    for (path, content) in files {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }
    let mut index = repo.index().unwrap();
    index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
    index.update_all(["*"], None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let who = Signature::now("test", "test@example.com").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &who, &who, message, &tree, &parents)
        .unwrap()
        .to_string()
}

fn list(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == ".git" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            list(root, &path, out);
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push(rel);
        }
    }
}

#[test]
fn incremental_loads_equal_full_loads_over_random_edits() {
    const SEEDS: [u64; 6] = [1, 2, 3, 0x5eed, 0xdead_beef, 2024];
    const STEPS: usize = 60;
    let (mut valid, mut invalid, mut reused) = (0, 0, 0);
    for seed in SEEDS {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(tmp.path().join("company")).unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut files = initial(&mut rng);
        commit(&repo, &files, "initial");
        let source = GitSource::open(
            repo.workdir().unwrap().to_str().unwrap(),
            None,
            None,
            &tmp.path().join("cache"),
        )
        .unwrap();
        let mut loader = Loader::new();
        for step in 0..STEPS {
            if step > 0 {
                for _ in 0..1 + rng.below(3) * usize::from(rng.chance(30)) {
                    edit(&mut rng, &mut files);
                }
                commit(&repo, &files, &format!("step {step}"));
            }
            let head = source.head().unwrap();
            let incremental = loader.load_and_validate(&source.tree(&head).unwrap());
            let full = spec::load_and_validate(&source.snapshot(&head).unwrap());
            assert_eq!(
                incremental, full,
                "seed {seed} step {step}: the incremental load differs from a full load"
            );
            // A fresh loader on the lazy tree agrees too: the tree itself is no different.
            if step % 10 == 0 {
                let fresh = Loader::new().load_and_validate(&source.tree(&head).unwrap());
                assert_eq!(
                    fresh, full,
                    "seed {seed} step {step}: a fresh loader differs"
                );
            }
            match &full {
                Ok(_) => valid += 1,
                Err(_) => invalid += 1,
            }
            reused += loader.stats().reused;
        }
    }
    // The sequences visit both valid and invalid revisions, and the loader did reuse files.
    assert!(
        valid > 10 && invalid > 10,
        "valid {valid}, invalid {invalid}"
    );
    eprintln!("{valid} valid and {invalid} invalid revisions; {reused} file loads reused");
    assert!(reused > 0);
}

/// A company repository of the generator's initial files plus `goals` goals named
/// `<prefix>-<n>` (and `extra` files), committed, and a git source reading it.
struct Company {
    tmp: tempfile::TempDir,
    repo: Repository,
    rng: Rng,
    files: BTreeMap<String, String>,
}

impl Company {
    fn new(seed: u64, prefix: &str, goals: usize, extra: &[(&str, &str)]) -> Company {
        let tmp = tempfile::tempdir().unwrap();
        let repo = Repository::init(tmp.path().join("company")).unwrap();
        let mut rng = Rng(seed);
        let mut files = initial(&mut rng);
        for g in 0..goals {
            let content = goal_doc(&mut rng, &format!("{prefix}-{g}"), &files);
            files.insert(format!("goals/{prefix}-{g}.yaml"), content);
        }
        for (path, text) in extra {
            files.insert(path.to_string(), text.to_string());
        }
        commit(&repo, &files, "initial");
        Company {
            tmp,
            repo,
            rng,
            files,
        }
    }

    fn source(&self) -> GitSource {
        GitSource::open(
            self.repo.workdir().unwrap().to_str().unwrap(),
            None,
            None,
            &self.tmp.path().join("cache"),
        )
        .unwrap()
    }
}

#[test]
fn a_one_file_change_parses_one_file() {
    let mut company = Company::new(
        7,
        "one",
        5,
        &[
            ("CLAUDE.md", "# Memory\n"),
            (".proto/status.yaml", "goals: {}\n"),
        ],
    );
    let source = company.source();
    // The lazy tree holds what the snapshot holds, and knows each file's blob id unread.
    let (lazy, snapshot) = (
        source.tree("HEAD").unwrap(),
        source.snapshot("HEAD").unwrap(),
    );
    assert_eq!(lazy.files().unwrap(), snapshot.files().unwrap());
    assert_eq!(lazy.label(), snapshot.label());
    for path in snapshot.files().unwrap() {
        let bytes = snapshot.read(&path).unwrap();
        assert_eq!(lazy.read(&path).unwrap(), bytes);
        assert_eq!(lazy.size(&path).unwrap(), bytes.len() as u64);
        assert_eq!(lazy.blob_id(&path), BlobId::of(&bytes), "{path}");
    }
    assert!(lazy.read(".proto/status.yaml").is_err());

    let mut loader = Loader::new();
    let _ = loader.load_and_validate(&lazy);
    let first = loader.stats();
    assert_eq!(first.reused, 0);
    assert_eq!(first.parsed, first.files);

    let content = goal_doc(&mut company.rng, "one-2", &company.files);
    company.files.insert("goals/one-2.yaml".into(), content);
    commit(&company.repo, &company.files, "change one goal");
    let incremental = loader.load_and_validate(&source.tree("HEAD").unwrap());
    // The goal file, and CLAUDE.md, which is read every time for its imports.
    assert_eq!(loader.stats().parsed, 2, "{:?}", loader.stats());
    assert_eq!(loader.stats().reused, first.files - 2);
    assert_eq!(
        incremental,
        spec::load_and_validate(&source.snapshot("HEAD").unwrap())
    );
}

#[test]
fn resources_of_unchanged_files_are_shared_with_the_last_revision_not_copied() {
    let mut company = Company::new(11, "kept", 3, &[]);
    let source = company.source();
    let mut loader = Loader::new();
    let (before, _) = loader.load(&source.tree("HEAD").unwrap());

    let content = goal_doc(&mut company.rng, "kept-1", &company.files);
    company.files.insert(
        "goals/kept-1.yaml".into(),
        content.replace("description: ", "description: changed "),
    );
    commit(&company.repo, &company.files, "change one goal");
    let (after, _) = loader.load(&source.tree("HEAD").unwrap());

    let goal = |spec: &spec::Spec, name: &str| {
        spec.goals
            .iter()
            .find(|g| g.name() == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not loaded"))
    };
    for name in ["kept-0", "kept-2"] {
        assert!(
            std::sync::Arc::ptr_eq(&goal(&before, name), &goal(&after, name)),
            "{name} was copied"
        );
    }
    assert!(!std::sync::Arc::ptr_eq(
        &goal(&before, "kept-1"),
        &goal(&after, "kept-1")
    ));
    assert_eq!(
        after.agents.len(),
        before.agents.len(),
        "the agents' files did not change"
    );
    // Claude Code's agents are settled again at every load (they are few); declared
    // agents are shared.
    for (a, b) in before.agents.iter().zip(&after.agents) {
        assert_eq!(a.name(), b.name());
        if !a.origin.flat {
            assert!(std::sync::Arc::ptr_eq(a, b), "{} was copied", a.name());
        }
    }
}
