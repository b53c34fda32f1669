//! The declaration end to end: the embedded example and every example repository load
//! cleanly, generated CRDs and schemas are current, editor schema lines resolve, and the
//! CLI's `validate` and `plan` behave as documented (output snapshot-tested).
//!
//! `UPDATE_EXPECTED=1 cargo test --test declaration` rewrites snapshots; review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::Command;

use proto::spec::schema::{self, Kind};
use proto::spec::{self, DirTree};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn company_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![root().join("company")];
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    examples.sort();
    dirs.extend(examples);
    dirs
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn the_example_company_and_every_example_load_without_errors_or_warnings() {
    for dir in company_dirs() {
        match spec::load_and_validate(&DirTree::new(&dir)) {
            Ok((spec, warnings)) => {
                assert!(warnings.is_empty(), "{}: {warnings:#?}", dir.display());
                assert_eq!(spec.companies.len(), 1, "{}", dir.display());
                assert!(!spec.goals.is_empty(), "{}", dir.display());
            }
            Err(diagnostics) => {
                let text: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
                panic!("{}:\n{}", dir.display(), text.join("\n"));
            }
        }
    }
}

#[test]
fn the_example_company_meets_the_brief() {
    let (spec, _) = spec::load_and_validate(&DirTree::new(root().join("company"))).unwrap();
    assert_eq!(spec.products.len(), 2);
    assert_eq!(spec.computers.len(), 1);
    assert!(spec.computers[0].spec.local.is_some());
    assert!(spec.goals.len() >= 7);
    let offline = spec
        .goals
        .iter()
        .filter(|g| !proto::plan::needs_model(&g.spec))
        .count();
    let model = spec.goals.len() - offline;
    assert!(offline >= 5, "{offline} goals playbooks can meet offline");
    assert!(model >= 2, "{model} goals need a model");
}

#[test]
fn every_example_file_names_its_editor_schema() {
    for dir in company_dirs() {
        let mut files = Vec::new();
        yaml_files(&dir, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            if !text.contains("apiVersion: proto.dev/") {
                // Another API's manifest (examples/kubernetes' Namespace): no schema of ours.
                continue;
            }
            let first = text.lines().next().unwrap_or_default();
            let target = first
                .strip_prefix("# yaml-language-server: $schema=")
                .unwrap_or_else(|| {
                    panic!(
                        "{}: first line must be a yaml-language-server $schema comment",
                        file.display()
                    )
                });
            let resolved = file.parent().unwrap().join(target);
            assert!(
                resolved.is_file(),
                "{}: schema {} does not exist",
                file.display(),
                resolved.display()
            );
        }
    }
}

#[test]
fn generated_crds_and_schemas_are_current() {
    let stale = "is stale: run `cargo run -- crds --write crds`";
    for kind in Kind::ALL {
        let lower = kind.as_str().to_ascii_lowercase();
        let crd_path = root().join(format!("crds/{lower}.yaml"));
        let on_disk = std::fs::read_to_string(&crd_path).unwrap_or_default();
        assert_eq!(
            on_disk,
            schema::crd_yaml(kind).unwrap(),
            "{} {stale}",
            crd_path.display()
        );
        let schema_path = root().join("crds/schema").join(kind.schema_file());
        let on_disk = std::fs::read_to_string(&schema_path).unwrap_or_default();
        let fresh = serde_json::to_string_pretty(&schema::document_schema(kind)).unwrap() + "\n";
        assert_eq!(on_disk, fresh, "{} {stale}", schema_path.display());
    }
}

#[test]
fn crds_are_namespaced_with_status_and_printer_columns() {
    for kind in Kind::ALL {
        let crd = serde_json::to_value(schema::crd(kind)).unwrap();
        assert_eq!(crd["spec"]["group"], "proto.dev");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(
            version["subresources"]["status"].is_object(),
            "{kind:?} has no status subresource"
        );
        let columns = version["additionalPrinterColumns"].as_array().unwrap();
        assert!(columns.len() >= 2, "{kind:?}");
        let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
        for field in ["conditions", "observedGeneration", "observedRevision"] {
            assert!(status[field].is_object(), "{kind:?} status lacks {field}");
        }
    }
}

fn proto(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_proto"))
        .args(args)
        .current_dir(root())
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn snapshot(name: &str, actual: &str) {
    let path = root().join("tests/snapshots").join(name);
    if std::env::var_os("UPDATE_EXPECTED").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        actual,
        expected,
        "snapshot {} differs (UPDATE_EXPECTED=1 rewrites it)",
        path.display()
    );
}

#[test]
fn validate_prints_a_summary_and_exits_zero() {
    let out = proto(&["validate", "company"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "company: valid: 1 Company, 2 Products, 1 Computer, 159 Agents, 9 Goals, 12 skills, 4 rules, 0 MCP servers, 1 memory file\n"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn validate_prints_every_error_and_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {name: g}\nspec:\n  product: p\n  ownr: x\n  check: {file: {path: f}}\n",
    )
    .unwrap();
    let out = proto(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines[..3],
        [
            format!(
                "{}: no Company declared; exactly one is required (add a company.yaml with kind: Company)",
                dir.path().display()
            ),
            "bad.yaml:4:1: Goal/g: spec.description: missing required field".to_string(),
            "bad.yaml:6:3: Goal/g: spec.ownr: unknown field (did you mean \"owner\"?)".to_string(),
        ]
    );
    assert_eq!(lines[3], format!("{}: 3 errors", dir.path().display()));
}

#[test]
fn plan_output_is_stable() {
    let out = proto(&["plan", "company"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    snapshot("plan-company.txt", &String::from_utf8_lossy(&out.stdout));
    let out = proto(&["plan", "company", "-o", "json"]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions = json.as_array().unwrap();
    assert_eq!(actions[0]["action"], "enqueue");
    assert_eq!(actions[0]["goal"], "hello-api-serves-hello");
    assert_eq!(actions[0]["priority"], "critical");
    let yaml = proto(&["plan", "company", "-o", "yaml"]);
    assert!(String::from_utf8_lossy(&yaml.stdout).contains("action: enqueue"));
}

#[test]
fn schema_and_crds_commands_print_every_kind() {
    let out = proto(&["schema", "goal"]);
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(schema["properties"]["kind"]["const"], "Goal");
    let out = proto(&["schema", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let out = proto(&["crds"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for kind in Kind::ALL {
        assert!(
            text.contains(&format!("kind: {}\n", kind.as_str())),
            "{kind:?}"
        );
    }
}
