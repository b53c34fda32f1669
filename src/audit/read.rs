//! Reading the committed audit trail from git: every `.proto/audit/*.jsonl` of the
//! declaration's folder at the tip of the tracked branch, through the same [`GitSource`]
//! `proto run` reconciles from (so a remote is fetched into the same cache first).

use crate::source::{GitSource, SourceError};
use crate::store::AuditRecord;

use super::parse::{Skipped, parse_file};

/// The audit folder, relative to the declaration's folder.
pub const FOLDER: &str = ".proto/audit";

/// What the tip of the branch holds.
#[derive(Debug, Default)]
pub struct Trail {
    /// The commit read.
    pub commit: String,
    /// Every record, in file order (files in name order, which is day order).
    pub records: Vec<AuditRecord>,
    /// Lines that were not records.
    pub skipped: Vec<Skipped>,
}

/// The audit trail at the tip of `source`'s branch. A remote source is fetched first.
pub fn read(source: &GitSource) -> Result<Trail, SourceError> {
    source.fetch()?;
    let commit = source.head()?;
    let short: String = commit.chars().take(12).collect();
    let mut files = source.controller_files(&commit, FOLDER)?;
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut trail = Trail {
        commit,
        ..Trail::default()
    };
    let prefix = format!("{FOLDER}/");
    for (path, content) in files {
        // The day files only: sub-folders and other files are not the controller's record.
        let Some(name) = path.strip_prefix(&prefix) else {
            continue;
        };
        if name.contains('/') || !name.ends_with(".jsonl") {
            continue;
        }
        let shown = match source.subpath() {
            "" => path.clone(),
            folder => format!("{folder}/{path}"),
        };
        let (records, skipped) = parse_file(&shown, &short, &content);
        trail.records.extend(records);
        trail.skipped.extend(skipped);
    }
    Ok(trail)
}
