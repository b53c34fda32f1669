//! Whether any process this controller started on this host could be touching files: the
//! condition under which the controller may trust what it knows of a workspace's files
//! (its [`Journal`](super::workspace::Journal)) instead of walking them.
//!
//! Two counts, for the whole controller: the processes it ever started here, and the
//! attempts whose processes may still run (one started a process and its computer has not
//! yet stopped everything it started). A [`Quiet`] is a moment when no such attempt was
//! live; it holds while no process has started since. A computer that lost track of its
//! processes (a release that failed, a desktop an agent drove) never ends its count, so
//! from then on every workspace is walked: slower, never wrong.

use std::sync::atomic::{AtomicU64, Ordering};

/// Processes started on this host, ever.
static STARTED: AtomicU64 = AtomicU64::new(0);
/// Attempts whose processes may still run.
static LIVE: AtomicU64 = AtomicU64::new(0);

/// A moment when no process of this controller could touch a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quiet(u64);

/// Now, if no process of this controller could be touching files.
pub fn quiet() -> Option<Quiet> {
    // STARTED read first: a process starting in between shows in LIVE or in a later read.
    let started = STARTED.load(Ordering::SeqCst);
    (LIVE.load(Ordering::SeqCst) == 0).then_some(Quiet(started))
}

impl Quiet {
    /// Whether it is still quiet: no process started since, and none may run.
    pub fn holds(self) -> bool {
        LIVE.load(Ordering::SeqCst) == 0 && STARTED.load(Ordering::SeqCst) == self.0
    }
}

/// A process is about to start; `first` when it is the first of its attempt (which is live
/// from now until [`released`]).
pub fn starting(first: bool) {
    if first {
        LIVE.fetch_add(1, Ordering::SeqCst);
    }
    STARTED.fetch_add(1, Ordering::SeqCst);
}

/// Everything an attempt started has been stopped.
pub fn released() {
    let _ = LIVE.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counts are the whole process's: other tests start processes meanwhile, so only
    /// what must hold whatever they do is asserted.
    #[test]
    fn a_start_ends_the_quiet_and_a_live_attempt_prevents_one() {
        starting(true);
        let during = quiet();
        let still = during.is_some_and(Quiet::holds);
        assert!(!still, "an attempt is live: nothing is quiet");
        released();
        if let Some(q) = quiet() {
            starting(false);
            assert!(!q.holds(), "a process started since");
        }
    }
}
