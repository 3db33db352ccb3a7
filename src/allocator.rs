//! The memory allocator the `flotilla` binary and the store bench run on: mimalloc,
//! configured for a store (feature `mimalloc`, on by default; an embedder keeps its own
//! global allocator and may ignore this module).
//!
//! Why: a store allocates and frees small buffers on one thread and hands them to another
//! (entries from a poller to the WAL writer, messages between stores, answers to clients).
//! On glibc's malloc that costs a fifth of a busy store's CPU (its arena locks and chunk
//! consolidation); mimalloc's per-thread pages and delayed cross-thread frees take most of
//! it back (README, Benchmarks, has the before/after).
//!
//! How: mimalloc on Linux commits each arena it reserves in full by default, which keeps
//! memory its threads freed resident and, measured, made in-memory writes a third slower and
//! idle regions a third to a half bigger. [`use_mimalloc!`] makes mimalloc the global
//! allocator and, on Linux, registers [`configure`] in the ELF initialiser array, ahead of
//! the constructors without a priority (mimalloc's own among them), so that the setting is
//! in place before mimalloc reserves its first arena (at the first allocation) and arenas
//! commit as they are used. Elsewhere mimalloc keeps its default. An environment variable
//! still wins (`MIMALLOC_ARENA_EAGER_COMMIT=1` and mimalloc's other `MIMALLOC_*` options),
//! so an operator can change a setting without a rebuild. [`spawn_purger`] gives freed
//! memory back while the store's own threads sleep.

pub use mimalloc::MiMalloc;

/// mimalloc's option number for committing arenas eagerly (`mi_option_arena_eager_commit`
/// in the mimalloc 3 sources libmimalloc-sys 0.1.49 builds; the crate does not name it, so
/// Cargo.toml pins that version).
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Sets the options flotilla runs mimalloc with, as defaults an environment variable
/// overrides. [`use_mimalloc!`] runs it before `main`; later it changes nothing for arenas
/// already reserved.
///
/// # Safety
///
/// mimalloc's option table is not synchronised: no other thread may be running (as before
/// `main`, where `use_mimalloc!` calls it).
#[doc(hidden)]
pub unsafe extern "C" fn configure() {
    // SAFETY: the caller guarantees no other thread reads or writes the options.
    unsafe { libmimalloc_sys::mi_option_set_default(ARENA_EAGER_COMMIT, 0) }
}

/// Starts a thread that, every `interval`, gives the system back the memory mimalloc
/// holds freed past its purge delay (one second by default). mimalloc purges only when an
/// allocating thread passes by, and most of a store's threads go quiet once its regions
/// sleep: without it, what a burst freed stays resident. A server runs one (as TiKV runs
/// jemalloc's background threads); the thread lives as long as the process.
pub fn spawn_purger(interval: std::time::Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("mimalloc-purge".into())
        .spawn(move || {
            loop {
                std::thread::sleep(interval);
                // SAFETY: collects the calling thread's own heap (next to nothing) and purges
                // the freed arena memory whose delay has passed, which mimalloc does
                // program-wide and thread-safely.
                unsafe { libmimalloc_sys::mi_collect(false) }
            }
        })
        .map(drop)
}

/// Whether mimalloc commits its arenas eagerly (as read now: the environment, else what
/// [`configure`] set, else mimalloc's default).
pub fn arenas_commit_eagerly() -> bool {
    // SAFETY: reads mimalloc's option table (each option initialised at mimalloc's start;
    // only `configure`, before `main`, writes one).
    unsafe { libmimalloc_sys::mi_option_get(ARENA_EAGER_COMMIT) != 0 }
}

/// Makes mimalloc, configured by [`configure`], the global allocator of the program that
/// invokes it (once, at the crate root of a binary).
#[macro_export]
macro_rules! use_mimalloc {
    () => {
        #[global_allocator]
        static GLOBAL_ALLOCATOR: $crate::allocator::MiMalloc = $crate::allocator::MiMalloc;

        // The ELF initialiser array runs before `main`, on the one thread there is, and its
        // entries with a priority (after the 0–100 the C runtime keeps) before those
        // without: before any constructor could allocate.
        #[cfg(target_os = "linux")]
        #[used]
        #[unsafe(link_section = ".init_array.00101")]
        static CONFIGURE_ALLOCATOR: unsafe extern "C" fn() = $crate::allocator::configure;
    };
}
