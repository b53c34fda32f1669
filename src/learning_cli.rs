//! The commands of a company that learns: `get knowledge` lists the entries of a company
//! directory's `.proto/knowledge` (what the controller and its agents wrote down), `get
//! proposals` the improvement goals the miner proposed in a run, and `mine` runs the miner
//! over a run's store once, now, as the controller does every `learning.minerInterval`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use proto::knowledge::{FOLDER, Knowledge, KnowledgeKind};
use proto::output::Format;

use crate::commands::{open_store, state_dir};
use crate::emit_list;

/// One entry, as `get knowledge` shows it.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct EntryView {
    path: String,
    kind: KnowledgeKind,
    title: String,
    tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    product: Option<String>,
    /// Evidence lines: how often it was seen.
    evidence: usize,
}

/// Every file under `dir/.proto/knowledge`, as (path from `dir`, bytes).
fn knowledge_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let root = dir.join(FOLDER);
    let mut files = Vec::new();
    let kinds = match std::fs::read_dir(&root) {
        Ok(kinds) => kinds,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(format!("{}: {e}", root.display())),
    };
    for kind in kinds.flatten() {
        let Ok(entries) = std::fs::read_dir(kind.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let relative = format!(
                "{FOLDER}/{}/{}",
                kind.file_name().to_string_lossy(),
                entry.file_name().to_string_lossy()
            );
            files.push((relative, bytes));
        }
    }
    Ok(files)
}

/// `proto get knowledge [PATH] [--kind K] [--product P]`.
pub fn get_knowledge(
    dir: &Path,
    kind: Option<&str>,
    product: Option<&str>,
    format: Format,
) -> Result<ExitCode, String> {
    let kind = kind
        .map(|k| {
            KnowledgeKind::from_folder(k).ok_or_else(|| {
                let kinds: Vec<&str> = KnowledgeKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown kind \"{k}\"; expected one of {}", kinds.join(", "))
            })
        })
        .transpose()?;
    let (knowledge, warnings) = Knowledge::parse(knowledge_files(dir)?);
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let views: Vec<EntryView> = knowledge
        .entries()
        .iter()
        .filter(|e| kind.is_none_or(|k| e.kind == k))
        .filter(|e| product.is_none_or(|p| e.product.as_deref() == Some(p)))
        .map(|e| EntryView {
            path: e.path.clone(),
            kind: e.kind,
            title: e.title.clone(),
            tags: e.tags.clone(),
            product: e.product.clone(),
            evidence: e
                .body
                .split(proto::knowledge::capture::EVIDENCE_HEADING)
                .nth(1)
                .map_or(0, |ev| ev.lines().filter(|l| l.starts_with("- ")).count()),
        })
        .collect();
    let headers = ["KIND", "TITLE", "PRODUCT", "SEEN", "PATH"];
    emit_list(&views, format, "No knowledge entries.", &headers, |v| {
        vec![
            v.kind.as_str().to_string(),
            v.title.chars().take(60).collect(),
            v.product.clone().unwrap_or_default(),
            v.evidence.to_string(),
            v.path.clone(),
        ]
    })
}

/// `proto get proposals`: the improvement goals the miner proposed in a run.
pub fn get_proposals(state: Option<PathBuf>, format: Format) -> Result<ExitCode, String> {
    let store = open_store(&state_dir(state))?;
    let proposals = store.proposals().map_err(|e| e.to_string())?;
    let headers = ["GOAL", "REASON", "SEEN", "BRANCH", "COMMIT", "PROPOSED"];
    emit_list(&proposals, format, "No proposals.", &headers, |p| {
        vec![
            p.goal.clone(),
            p.reason.clone(),
            p.evidence.len().to_string(),
            p.branch.clone(),
            p.commit
                .as_deref()
                .map(|c| c.chars().take(12).collect())
                .unwrap_or_else(|| "unpublished".into()),
            p.proposed.format("%Y-%m-%d %H:%M").to_string(),
        ]
    })
}

/// `proto mine [SOURCE]`: the miner, once, now, over the store of a run: a goal proposed on
/// `proto/proposals/<slug>` of the company repository for each failure that keeps coming
/// back and was not proposed before.
pub fn mine(location: crate::commands::Location) -> Result<ExitCode, String> {
    let state = state_dir(location.state_dir.clone());
    let store = open_store(&state)?;
    let source = location.open()?;
    let head = source.head().map_err(|e| e.to_string())?;
    let tree = source.tree(&head).map_err(|e| e.to_string())?;
    let (spec, _) = proto::spec::load_and_validate(&tree).map_err(|diagnostics| {
        format!(
            "{}: the company does not validate ({} problems; see `proto validate`)",
            source.label(),
            diagnostics.len()
        )
    })?;
    let push = spec
        .company()
        .and_then(|c| c.spec.writeback.as_ref())
        .and_then(|w| w.push)
        .unwrap_or(true);
    let author = proto::engine::writeback_author(&spec);
    let made = proto::learning::mine(&store, &spec, &source, &author, push, chrono::Utc::now())
        .map_err(|e| format!("{}: {e}", source.label()))?;
    if made.is_empty() {
        println!("nothing new to propose");
    }
    for p in &made {
        println!(
            "proposed {} on {} ({} failures seen); merge the branch to adopt it",
            p.goal,
            p.branch,
            p.evidence.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
