//! How the `multipl-moe` binary and the benches ask glibc's allocator to keep freed memory.

/// Asks glibc's malloc to serve large blocks from its heap instead of fresh `mmap`s and not to
/// return freed memory to the kernel (`M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD` at 2 GiB), so
/// that the large temporaries a training step frees (the `[T, vocab]` logits, their log-softmax
/// and gradient: 310 MB each at T = 511, vocab 151 936) are reused by the next step instead of
/// being page-faulted and zeroed again. The process's resident memory then stays near its peak
/// instead of falling between steps; the peak itself does not grow (BENCHMARKS.md).
///
/// All threads also share one arena (`M_ARENA_MAX` 1, unless the user set `MALLOC_ARENA_MAX`
/// or `GLIBC_TUNABLES`): a freed block goes back to the arena that allocated it, and
/// burn-train reads a checkpoint on its checkpointer's thread, so with per-thread arenas a
/// resumed segment's first optimizer step held the checkpoint's freed buffers, kept in that
/// thread's arena, next to the new ones the training thread allocated (SmolLM2 with the paper preset: peak 18.9 GiB against 18.1
/// with one arena, and no slower; `scripts/train_memory.py`, BENCHMARKS.md). Called once at
/// the start of `main`; a no-op off Linux/glibc. Library users choose their own allocator
/// settings.
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator settings; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        let user_set = ["MALLOC_ARENA_MAX", "GLIBC_TUNABLES"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if !user_set {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
