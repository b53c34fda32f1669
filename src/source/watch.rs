//! Noticing changes: `notify` on a local repository's refs, a polling interval for remotes.
//! Either way the engine receives a unit on its trigger channel and re-reads the head.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{GitSource, SourceError};

/// Keeps the file watcher (or the polling task) alive; dropping it stops watching.
pub struct Watch {
    _inner: Option<notify::RecommendedWatcher>,
    poll: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(task) = &self.poll {
            task.abort();
        }
    }
}

/// Starts watching `source`: for a local repository, file events under its git directory
/// (refs, packed-refs, HEAD) send to `trigger`; for a remote, a task sends every `poll`.
///
/// A remote's polling task runs on the current tokio runtime, so this must be called from
/// within one. Triggers are dropped when the channel is full: one pending trigger is as
/// good as many, since the engine re-reads the head.
pub fn watch(
    source: &GitSource,
    poll: Duration,
    trigger: mpsc::Sender<()>,
) -> Result<Watch, SourceError> {
    if source.is_remote() {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            SourceError::Watch(format!(
                "polling {} needs a tokio runtime: {e}",
                source.label()
            ))
        })?;
        let task = runtime.spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = trigger.closed() => break,
                    _ = ticks.tick() => {
                        if let Err(mpsc::error::TrySendError::Closed(())) = trigger.try_send(()) {
                            break;
                        }
                    }
                }
            }
        });
        return Ok(Watch {
            _inner: None,
            poll: Some(task),
        });
    }

    let repo = git2::Repository::open(source.repository_path())?;
    let git_dir = repo.path().to_path_buf();
    // Refs and packed-refs live in the common directory (the main repository's, for a
    // linked worktree); HEAD lives in the worktree's own git directory.
    let common_dir = repo.commondir().to_path_buf();
    let refs = common_dir.join("refs");
    let relevant = Relevant {
        refs: refs.clone(),
        top: vec![git_dir.join("HEAD"), common_dir.join("packed-refs")],
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            // Our own reads of HEAD and refs open them: reacting would loop.
            return;
        }
        if event.paths.iter().any(|p| relevant.matches(p)) {
            let _ = trigger.try_send(());
        }
    })
    .map_err(watch_error)?;
    watcher
        .watch(&git_dir, RecursiveMode::NonRecursive)
        .map_err(watch_error)?;
    if common_dir != git_dir {
        watcher
            .watch(&common_dir, RecursiveMode::NonRecursive)
            .map_err(watch_error)?;
    }
    watcher
        .watch(&refs, RecursiveMode::Recursive)
        .map_err(watch_error)?;
    Ok(Watch {
        _inner: Some(watcher),
        poll: None,
    })
}

/// The paths whose changes can move a branch.
struct Relevant {
    refs: PathBuf,
    top: Vec<PathBuf>,
}

impl Relevant {
    fn matches(&self, path: &Path) -> bool {
        // Lock files come and go around every update; the rename that ends one is reported
        // under the real name.
        if path.extension().is_some_and(|e| e == "lock") {
            return false;
        }
        path.starts_with(&self.refs) || self.top.iter().any(|t| t == path)
    }
}

fn watch_error(e: notify::Error) -> SourceError {
    SourceError::Watch(e.to_string())
}
