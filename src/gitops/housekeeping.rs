//! Upkeep of repositories that need not hold up a task: packing a product's loose objects
//! after a push (`git gc --auto`, as `receive-pack` starts it, detached), rolling up a
//! mirror's packs. Each was done in the task's path, under the mirror's lock, and took
//! longer the longer the history (a tenth of a second and more, every few hundred tasks).
//!
//! A job runs on a thread of its own, at most one per repository at a time: asked again
//! while one runs, nothing more starts (what it packs, the next one will). git's own
//! upkeep is safe beside readers and writers that only add objects, which is all the
//! controller does to a mirror or a product; a controller that stops leaves a running
//! `git` to finish on its own.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, PoisonError};

struct Running {
    repositories: Mutex<HashSet<PathBuf>>,
    ended: Condvar,
}

fn running() -> &'static Running {
    static RUNNING: std::sync::OnceLock<Running> = std::sync::OnceLock::new();
    RUNNING.get_or_init(|| Running {
        repositories: Mutex::new(HashSet::new()),
        ended: Condvar::new(),
    })
}

/// Runs `job` for `repository` on a thread of its own, unless one runs for it already.
pub fn later(repository: &Path, job: impl FnOnce() + Send + 'static) {
    let running = running();
    let key = repository.to_path_buf();
    {
        let mut busy = running
            .repositories
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !busy.insert(key.clone()) {
            return;
        }
    }
    let spawned = std::thread::Builder::new()
        .name("proto-housekeeping".into())
        .spawn(move || {
            job();
            done(&key);
        });
    if let Err(e) = spawned {
        tracing::warn!(repository = %repository.display(), "no thread for git's upkeep: {e}");
        done(repository);
    }
}

fn done(repository: &Path) {
    let running = running();
    running
        .repositories
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(repository);
    running.ended.notify_all();
}

/// Waits until no job runs (tests read what the upkeep left).
pub fn settle() {
    let running = running();
    let mut busy = running
        .repositories
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    while !busy.is_empty() {
        busy = running
            .ended
            .wait(busy)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    #[test]
    fn one_job_per_repository_at_a_time_and_settle_waits_for_all() {
        let ran = Arc::new(AtomicUsize::new(0));
        let (release, held) = mpsc::channel::<()>();
        let (first, second) = (
            Path::new("/upkeep/test/a.git"),
            Path::new("/upkeep/test/b.git"),
        );
        let counter = ran.clone();
        later(first, move || {
            let _ = held.recv();
            counter.fetch_add(1, Ordering::SeqCst);
        });
        // Asked again while it runs: nothing more starts.
        let counter = ran.clone();
        later(first, move || {
            counter.fetch_add(100, Ordering::SeqCst);
        });
        // Another repository's job runs beside it.
        let (told, done) = mpsc::channel();
        later(second, move || told.send(()).unwrap());
        done.recv().unwrap();
        release.send(()).unwrap();
        settle();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        // Once it ended, the repository's upkeep can start again.
        let counter = ran.clone();
        later(first, move || {
            counter.fetch_add(10, Ordering::SeqCst);
        });
        settle();
        assert_eq!(ran.load(Ordering::SeqCst), 11);
    }
}
