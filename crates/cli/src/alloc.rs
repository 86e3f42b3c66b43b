//! Process-wide allocator settings, set by both binaries first thing in `main`, before any
//! thread starts.

/// glibc gives each new thread that allocates its own arena (up to 8 per core), and memory
/// freed into an arena is seldom returned: with a prefetch thread per chunk stream and tasks
/// on several threads, a year of ERA5 held 280 MB where two arenas hold 148 MB at the same
/// speed (`bench/era5_year.sh`). Two arenas per process keep that bound.
///
/// Buffers up to `reuse_below` bytes come from the heap and are reused, instead of each being a
/// fresh mmap whose pages the kernel faults in and zeroes: the engine's tiles (a few hundred KB
/// each, up to 4 MB, allocated and freed for every tile) were a sixth of `tessera dem slope`'s
/// time that way. Up to `keep_free` bytes freed at the top of the heap are kept for reuse.
pub fn tune(reuse_below: usize, keep_free: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's tunables; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, reuse_below as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, keep_free as libc::c_int);
    }
}
