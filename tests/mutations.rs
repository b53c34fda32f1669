//! A property test over the parsers a repository's files reach: the YAML loader (the five
//! kinds), Markdown frontmatter (agents, skills, rules), `settings.json`, `.mcp.json` and
//! `CLAUDE.md` imports. Whatever the bytes, loading and validating never panics and finishes
//! in bounded time.
//!
//! Inputs are valid files from the fixtures, mutated the way a fuzzer would (bytes flipped,
//! inserted, deleted, duplicated; YAML and JSON tokens spliced in; truncation), plus plain
//! random bytes. The generator is a fixed-seed xorshift, so a failure names the case that
//! reproduces it. `PROTO_MUTATION_CASES` sets the number of cases (default: a few seconds'
//! worth, so the suite stays quick); `PROTO_MUTATION_SEED` another starting point.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proto::spec::{self, MemTree};

/// Per-case bound: generous, since a case is a few milliseconds; it catches hangs and
/// blow-ups, not a slow machine.
const CASE_BOUND: Duration = Duration::from_secs(20);

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Fragments that steer a mutation into the parsers' interesting corners.
const TOKENS: &[&str] = &[
    "---\n",
    "\n---\n",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "'",
    ",",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!binary ",
    "? ",
    "|\n",
    ">-\n",
    "\t",
    "\n",
    "\r\n",
    "\u{feff}",
    "\0",
    "\u{1b}[31m",
    "@CLAUDE.md ",
    "@../x.md ",
    "@/dev/zero ",
    "\\u0000",
    "\\",
    "99999999999999999999999",
    "-1",
    "0x",
    "1e999",
    "null",
    "~",
    "mcp__a b__c",
    "Bash(",
    "*/0 * * * *",
    "\u{202e}",
    "é",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..=rng.below(8) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(7) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            1 => bytes.insert(at, rng.next() as u8),
            2 => {
                let end = (at + rng.below(32)).min(bytes.len());
                bytes.drain(at..end);
            }
            3 => {
                let end = (at + rng.below(64)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                let to = rng.below(bytes.len() + 1);
                bytes.splice(to..to, copy);
            }
            4 => bytes.truncate(at),
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                bytes.splice(at..at, token.iter().copied());
            }
        }
    }
    bytes
}

/// The files mutated, by the path they are loaded at, and the base company they join.
fn seeds() -> (Vec<(String, Vec<u8>)>, MemTree) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let read = |p: &str| std::fs::read(root.join(p)).unwrap();
    let mut seeds = Vec::new();
    for (path, from) in [
        ("company.yaml", "malformed/_base/company.yaml"),
        ("product.yaml", "malformed/_base/product.yaml"),
        ("agents/ceo.yaml", "malformed/_base/agents/ceo.yaml"),
        ("goals/builds.yaml", "malformed/_base/goals/builds.yaml"),
        (
            ".claude/agents/test-runner.md",
            "fixtures/claude-code/.claude/agents/test-runner.md",
        ),
        (
            ".claude/skills/running-tests/SKILL.md",
            "fixtures/claude-code/.claude/skills/running-tests/SKILL.md",
        ),
        (
            ".claude/settings.json",
            "fixtures/claude-code/.claude/settings.json",
        ),
        (".mcp.json", "fixtures/claude-code/.mcp.json"),
        ("CLAUDE.md", "fixtures/claude-code/CLAUDE.md"),
    ] {
        seeds.push((path.to_string(), read(from)));
    }
    let mut base = MemTree::new("base");
    for (path, bytes) in &seeds[..4] {
        base.insert(path.clone(), bytes.clone());
    }
    (seeds, base)
}

#[test]
fn mutated_files_never_panic_or_hang() {
    let cases: usize = std::env::var("PROTO_MUTATION_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let start: u64 = std::env::var("PROTO_MUTATION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_CAFE_F00D_0001);
    let (seeds, base) = seeds();
    let (tx, rx) = mpsc::channel::<(usize, Result<(), String>)>();
    let (work_tx, work_rx) = mpsc::channel::<(usize, MemTree, String)>();
    // One worker loads the cases in order; this thread hands them out and watches the clock.
    std::thread::spawn(move || {
        for (case, tree, path) in work_rx {
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let _ = spec::load_and_validate(&tree);
            }))
            .map_err(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                format!("{path}: {message}")
            });
            if tx.send((case, outcome)).is_err() {
                return;
            }
        }
    });
    let mut rng = Rng(start);
    let started = Instant::now();
    let mut slowest = (Duration::ZERO, 0);
    for case in 0..cases {
        let (path, bytes) = &seeds[rng.below(seeds.len())];
        let content = if rng.below(20) == 0 {
            (0..rng.below(4096)).map(|_| rng.next() as u8).collect()
        } else {
            mutate(&mut rng, bytes)
        };
        let mut tree = base.clone();
        tree.insert(path.clone(), content.clone());
        let at = Instant::now();
        work_tx.send((case, tree, path.clone())).unwrap();
        match rx.recv_timeout(CASE_BOUND) {
            Ok((_, Ok(()))) => {}
            Ok((_, Err(panic))) => panic!(
                "case {case} (seed {start:#x}) panicked: {panic}\ninput: {:?}",
                String::from_utf8_lossy(&content)
            ),
            Err(_) => panic!(
                "case {case} (seed {start:#x}) still running after {CASE_BOUND:?}: {path}\ninput: {:?}",
                String::from_utf8_lossy(&content)
            ),
        }
        if at.elapsed() > slowest.0 {
            slowest = (at.elapsed(), case);
        }
    }
    eprintln!(
        "{cases} cases in {:?}; slowest: case {} in {:?}",
        started.elapsed(),
        slowest.1,
        slowest.0
    );
}
