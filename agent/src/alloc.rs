//! The robot agent's allocator setting.
//!
//! glibc's malloc raises its mmap threshold each time a large block is
//! freed (up to 32 MiB), and with it the free memory it keeps at the top of
//! every thread's arena (twice the threshold). An upload frees chunk
//! buffers and compression contexts of a megabyte or so many times over, so
//! afterwards the agent sat on several megabytes it no longer used, more on
//! a robot with more cores. Fixing the threshold at glibc's initial 128 KiB
//! turns that adjustment off: large buffers go back to the system when
//! freed, and small ones are trimmed from the arenas as before.

/// glibc's initial mmap threshold: blocks this large or larger are mapped
/// on their own and returned to the system when freed.
pub const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Fixes glibc's mmap threshold (see the module docs). Call before any
/// thread is started.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn keep_memory_small() {
    // SAFETY: mallopt only sets a tunable of the allocator, which glibc
    // reads under its own lock; the call has no memory-safety preconditions.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    if ok != 1 {
        tracing::debug!("mallopt(M_MMAP_THRESHOLD) refused");
    }
}

/// Other allocators return large blocks without being told.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_memory_small() {}
