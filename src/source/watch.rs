//! Noticing changes: `notify` on a local repository's refs, a polling interval for remotes.
//! Either way the engine receives a unit on its trigger channel and re-reads the head.

use std::time::Duration;

use tokio::sync::mpsc;

use super::{GitSource, SourceError};

/// Keeps the file watcher alive; dropping it stops watching.
pub struct Watch {
    _inner: Option<notify::RecommendedWatcher>,
}

/// Starts watching `source`: for a local repository, file events under its git directory
/// (refs, packed-refs, HEAD) send to `trigger`; for a remote, a task sends every `poll`.
pub fn watch(
    source: &GitSource,
    poll: Duration,
    trigger: mpsc::Sender<()>,
) -> Result<Watch, SourceError> {
    let _ = (source, poll, trigger);
    todo!()
}
