//! The malformed-declaration corpus: each folder under `tests/malformed/` (except `_base`)
//! is laid over the minimal valid company in `_base/` and must produce exactly the
//! diagnostics in its `expected.txt`, in order, with their positions.
//!
//! A case folder holds the files it adds or replaces (same relative paths as in `_base`), an
//! optional `DELETE` listing base files to drop (one path a line), and `expected.txt`.
//! Run with `UPDATE_EXPECTED=1` to rewrite `expected.txt` files from the current output
//! (then review the diff: that is the point).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/files.rs"]
mod files;
use files::files_under;

use std::path::{Path, PathBuf};

use proto::spec::{self, MemTree};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/malformed")
}

fn render(case: &Path) -> String {
    let mut tree = MemTree::new("case");
    let deleted: Vec<String> = std::fs::read_to_string(case.join("DELETE"))
        .map(|s| {
            s.lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    for (path, content) in files_under(&corpus().join("_base")) {
        if !deleted.contains(&path) {
            tree.insert(path, content);
        }
    }
    for (path, content) in files_under(case) {
        if path != "expected.txt" && path != "DELETE" {
            tree.insert(path, content);
        }
    }
    let diagnostics = match spec::load_and_validate(&tree) {
        Ok((_, warnings)) => warnings,
        Err(all) => all,
    };
    diagnostics.iter().map(|d| format!("{d}\n")).collect()
}

#[test]
fn the_base_company_is_valid() {
    let mut tree = MemTree::new("base");
    for (path, content) in files_under(&corpus().join("_base")) {
        tree.insert(path, content);
    }
    let result = spec::load_and_validate(&tree);
    assert!(result.is_ok(), "{result:#?}");
}

#[test]
fn every_malformed_case_reports_exactly_its_errors() {
    let update = std::env::var_os("UPDATE_EXPECTED").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.ends_with("_base"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 30,
        "the corpus must hold at least 30 cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let actual = render(case);
        let expected_path = case.join("expected.txt");
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual.trim().is_empty() {
            failures.push(format!("{}: no diagnostic at all", case.display()));
        } else if actual != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
