//! The process's allocator: mimalloc, tuned for a long-running controller. Shared by the
//! `proto` binary and the declaration benchmark (`#[path]`), so the benchmark's figure is
//! the binary's.
//!
//! Loading a company allocates many small strings and nodes, which mimalloc does faster than
//! glibc's allocator. Its defaults keep freed memory for reuse a while and commit arenas up
//! front, which suits a short, allocation-heavy program; a controller's peak is instead the
//! transient of one load next to what it keeps. So freed pages go back to the system at
//! once and arenas are committed as they are used: at 10,000 resources the watching
//! controller's peak RSS went from 173 to 106 MiB, with the same throughput.

use std::ffi::{c_char, c_int, c_long};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// `mi_option_e` of the mimalloc v3 that `libmimalloc-sys` builds (its `mimalloc.h`).
const ARENA_EAGER_COMMIT: c_int = 4;
const PURGE_DELAY: c_int = 15;

unsafe extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    fn getenv(name: *const c_char) -> *const c_char;
}

/// The tuning runs as a constructor, before `main` and before the Rust runtime's first
/// allocation: the first arena is made on the first allocation, with the options as they
/// are then.
#[used]
#[unsafe(link_section = ".init_array")]
static TUNE: extern "C" fn() = tune;

/// Applies the tuning; a `MIMALLOC_*` variable set by the user for an option wins. Nothing
/// here may allocate (it runs before the allocator is set up for Rust).
extern "C" fn tune() {
    for (option, variable, value) in [
        (ARENA_EAGER_COMMIT, c"MIMALLOC_ARENA_EAGER_COMMIT", 0),
        (PURGE_DELAY, c"MIMALLOC_PURGE_DELAY", 0),
    ] {
        // SAFETY: `getenv` reads the environment the C runtime set up before constructors
        // run; nothing writes it concurrently this early. mimalloc's options are plain
        // atomics, settable at any time; a value applies to what is allocated afterwards.
        unsafe {
            if getenv(variable.as_ptr()).is_null() {
                mi_option_set(option, value);
            }
        }
    }
}
