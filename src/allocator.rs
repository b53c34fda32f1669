//! The process's allocator: mimalloc, tuned for a long-running controller. Shared by the
//! `proto` binary and the declaration benchmark (`#[path]`), so the benchmark's figure is
//! the binary's.
//!
//! Loading a company allocates many small strings and nodes, which mimalloc does faster than
//! glibc's allocator. Its defaults keep freed memory for reuse a while and commit arenas up
//! front, which suits a short, allocation-heavy program; a controller's peak is instead the
//! transient of one load next to what it keeps. So freed pages go back to the system at
//! once and arenas are committed as they are used: at 10,000 resources the watching
//! controller's peak RSS went from 173 to 106 MiB, with the same throughput. Segments are
//! committed as used too, a thread's freed pages go back when it ends (tokio's blocking
//! threads come and go), and glibc's allocator (libgit2's, SQLite's) keeps two arenas, not
//! one per thread: 110 → 99 MiB in the same benchmark.

use std::ffi::{c_char, c_int, c_long};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// `mi_option_e` of the mimalloc that `libmimalloc-sys` builds (its `mimalloc.h`).
const EAGER_COMMIT: c_int = 3;
const ARENA_EAGER_COMMIT: c_int = 4;
const ABANDONED_PAGE_PURGE: c_int = 12;
const PURGE_DELAY: c_int = 15;

/// glibc's `M_ARENA_MAX` (`malloc.h`): libgit2 and SQLite allocate with glibc's allocator.
const M_ARENA_MAX: c_int = -8;

unsafe extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    fn mi_collect(force: bool);
    fn mallopt(param: c_int, value: c_int) -> c_int;
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
        (EAGER_COMMIT, c"MIMALLOC_EAGER_COMMIT", 0),
        (ARENA_EAGER_COMMIT, c"MIMALLOC_ARENA_EAGER_COMMIT", 0),
        (ABANDONED_PAGE_PURGE, c"MIMALLOC_ABANDONED_PAGE_PURGE", 1),
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
    // libgit2 and SQLite run on the blocking threads of record commits, fetches and the
    // store, and glibc gives each thread an arena of its own that keeps what it freed.
    // SAFETY: as above; `mallopt` only sets a parameter of glibc's allocator.
    unsafe {
        if getenv(c"MALLOC_ARENA_MAX".as_ptr()).is_null() {
            mallopt(M_ARENA_MAX, 2);
        }
    }
}

/// Gives back to the system what the calling thread's heap freed (see `proto::memory`).
pub fn release() {
    // SAFETY: `mi_collect` takes no pointers; it only walks the calling thread's own heap.
    unsafe { mi_collect(true) }
}
