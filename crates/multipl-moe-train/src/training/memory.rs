//! Returning freed memory to the kernel at the two points of a run where a whole model's worth
//! of buffers has just been freed.

/// Hands the allocator's free pages back to the kernel (glibc's `malloc_trim`; a no-op
/// elsewhere).
///
/// Called between checkpoint segments (the last segment's model and AdamW state are freed,
/// the next segment reads its checkpoint into new buffers) and after a segment's first
/// optimizer step (which has replaced every parameter and moment read from the checkpoint).
/// burn-train reads a checkpoint on its checkpointer's thread, so those buffers belong to that
/// thread's malloc arena, and when freed memory is kept for reuse (as the `multipl-moe`
/// binary asks glibc to, `allocator::reuse_freed_memory`) the training thread never reuses
/// them: on SmolLM2 with the paper preset the second segment trained at 22.3 GiB where the first
/// had trained at 17.5 (`scripts/train_memory.py`; BENCHMARKS.md, "How it got there").
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}
