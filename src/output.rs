//! How the CLI prints data: aligned tables for people, JSON or YAML for programs (`-o`).

use serde::Serialize;
use thiserror::Error;

/// The `-o` formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Error)]
pub enum OutputError {
    #[error("cannot encode as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot encode as YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
}

/// JSON (pretty, with a final newline) or YAML of any serializable value.
pub fn encode<T: Serialize>(value: &T, format: Format) -> Result<String, OutputError> {
    Ok(match format {
        Format::Yaml => serde_saphyr::to_string(value)?,
        Format::Json | Format::Table => serde_json::to_string_pretty(value)? + "\n",
    })
}

/// A table with a header row, columns padded to their widest cell, as `kubectl get` prints.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            text.push_str(cell);
            if i < last {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 3;
                text.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["xxx".into(), "y".into()],
                vec!["z".into(), String::new()],
            ],
        );
        assert_eq!(t, "A     BB\nxxx   y\nz\n");
    }
}
