"""Timing shared by the bench/ scripts: one warm-up call, then the median of `iters` calls."""
import time


def median_seconds(step, iters):
    """Calls `step` once to warm up, then `iters` times; the median wall time in seconds."""
    step()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]
