//! Settings of the process itself, made once at start: the open-file limit and how freed memory goes back to
//! the system. The benchmark uses the same open-file functions for its clients.

/// The `(soft, hard)` limit on open files.
pub fn open_file_limit() -> (u64, u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `struct rlimit` into `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return (0, 0);
    }
    (limit.rlim_cur, limit.rlim_max)
}

/// Every WebSocket is a file descriptor, and the usual soft limit (1,024) would refuse clients long before
/// memory runs out. Raises the soft limit to the hard limit, as far as the system lets an unprivileged
/// process; returns the soft limit in force.
pub fn raise_open_file_limit() -> u64 {
    let (soft, hard) = open_file_limit();
    if soft < hard {
        let wanted = libc::rlimit { rlim_cur: hard, rlim_max: hard };
        // SAFETY: passes a valid `struct rlimit`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
            tracing::info!("open-file limit raised from {soft} to {hard}");
        }
    }
    open_file_limit().0
}

/// Large frames (a 100 KB description, thousands of them in one bulk update) are allocated and freed in
/// bursts. glibc's malloc keeps freed memory in its per-thread arenas, so after such a burst the server would
/// hold hundreds of megabytes it no longer uses until it exits. Allocations of 64 KiB and more are served by
/// mmap instead and go back to the system when freed; the small, frequent ones (per-connection buffers, most
/// frames) stay in the arenas, where they are cheap.
pub fn return_large_allocations_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a malloc tunable.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}
