//! What the benchmarks that run the controller read back: percentiles of samples, a
//! process's memory from `/proc`, and when the store says a goal's task started.

#![allow(dead_code)] // each benchmark uses its own subset

use std::path::Path;

use proto::store::EventKind;

/// The `p`th percentile of `values` (nearest rank); NaN when there are none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// One size of a running process's memory from `/proc/<pid>/status`, in MiB: `VmRSS` (its
/// resident set now) or `VmHWM` (the peak of it).
pub fn memory(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The peak resident set of a running process, in MiB (`VmHWM`).
pub fn peak_rss(pid: u32) -> Option<f64> {
    memory(pid, "VmHWM")
}

/// The controller's state database under `dir/state`.
pub fn store(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("state/proto.db")).unwrap()
}

pub fn time(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// When goal `name`'s first task started (the engine's dispatch), from the store's events.
pub fn started_at(
    conn: &rusqlite::Connection,
    name: &str,
) -> Option<chrono::DateTime<chrono::Utc>> {
    first_event(conn, name, EventKind::Dispatched)
}

/// When the store first recorded a `kind` event of goal `name`.
pub fn first_event(
    conn: &rusqlite::Connection,
    name: &str,
    kind: EventKind,
) -> Option<chrono::DateTime<chrono::Utc>> {
    conn.query_row(
        "SELECT time FROM events WHERE kind = ?1 AND goal = ?2 ORDER BY id LIMIT 1",
        [kind.as_str(), name],
        |r| r.get::<_, String>(0),
    )
    .ok()
    .map(|t| time(&t))
}
