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
//! one per thread: 110 → 99 MiB in the same benchmark. glibc's mapping and trim thresholds
//! held at 128 KiB (rather than rising with the largest block freed) took its heap at the
//! peak from 10 to 6 MiB: 101 → 92 MiB.

use std::ffi::{c_char, c_int, c_long};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// `mi_option_e` of the mimalloc that `libmimalloc-sys` builds (its `mimalloc.h`).
const EAGER_COMMIT: c_int = 3;
const ARENA_EAGER_COMMIT: c_int = 4;
const ABANDONED_PAGE_PURGE: c_int = 12;
const PURGE_DELAY: c_int = 15;

/// glibc's `mallopt` parameters (`malloc.h`): libgit2 and SQLite allocate with glibc's
/// allocator.
const M_TRIM_THRESHOLD: c_int = -1;
const M_MMAP_THRESHOLD: c_int = -3;
const M_ARENA_MAX: c_int = -8;

/// Blocks of glibc's allocator this large are mapped on their own, and a heap's free top
/// this large is given back.
const GLIBC_RETURN_AT: c_int = 128 * 1024;

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
    // glibc also raises its mapping threshold to the largest mapped block freed (up to
    // 32 MiB), after which a libgit2 pack or a SQLite sort buffer of megabytes lands in the
    // heap and stays there: set, the thresholds stay where they are.
    for (param, variable, value) in [
        (M_ARENA_MAX, c"MALLOC_ARENA_MAX", 2),
        (M_MMAP_THRESHOLD, c"MALLOC_MMAP_THRESHOLD_", GLIBC_RETURN_AT),
        (M_TRIM_THRESHOLD, c"MALLOC_TRIM_THRESHOLD_", GLIBC_RETURN_AT),
    ] {
        // SAFETY: as above; `mallopt` only sets a parameter of glibc's allocator.
        unsafe {
            if getenv(variable.as_ptr()).is_null() {
                mallopt(param, value);
            }
        }
    }
}

/// Gives back to the system what the calling thread's heap freed (see `proto::memory`).
pub fn release() {
    // SAFETY: `mi_collect` takes no pointers; it only walks the calling thread's own heap.
    unsafe { mi_collect(true) }
}
