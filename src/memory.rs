//! Giving memory back after a burst. A record commit or a reload of a large company
//! allocates megabytes that live for milliseconds; the allocator keeps what they freed for
//! reuse, spread over pages that long-lived data also holds, and the resident set creeps up
//! with every burst. The binary registers how its allocator gives freed memory back (see
//! `allocator.rs`); the engine asks for it after each burst, on the thread that made it.

use std::sync::OnceLock;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Sets how freed memory is given back (once, at start; later calls are ignored).
pub fn on_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Gives back what the calling thread's bursts freed, if the binary said how.
pub fn release() {
    if let Some(release) = RELEASE.get() {
        release();
    }
}
