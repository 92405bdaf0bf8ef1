//! Memory read bandwidth, measured: the ceiling of every product that streams its weights once
//! (decoding one token reads every weight of the model). `threads` threads each sum their own
//! part of a 512 MiB buffer, far larger than any cache; the result is bytes read per second,
//! the best of three passes after one that faults the pages in.

use std::hint::black_box;
use std::time::Instant;

/// The buffer: 128 Mi f32.
const ELEMENTS: usize = 128 << 20;

/// Sums `values` with 16 independent accumulators (so the compiler vectorises the loop and
/// the adds do not wait on each other).
fn sum(values: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = values.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// Read bandwidth of `threads` threads in GB/s (10^9 bytes).
pub fn read_gb_per_s(threads: usize) -> f64 {
    let threads = threads.max(1);
    let buffer: Vec<f32> = (0..ELEMENTS).map(|i| (i % 7) as f32).collect();
    let part = ELEMENTS.div_ceil(threads);
    let pass = || {
        let start = Instant::now();
        std::thread::scope(|s| {
            for chunk in buffer.chunks(part) {
                s.spawn(move || black_box(sum(black_box(chunk))));
            }
        });
        (ELEMENTS * 4) as f64 / start.elapsed().as_secs_f64() / 1e9
    };
    pass();
    (0..3).map(|_| pass()).fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::sum;

    /// The unrolled sum equals a plain loop on a length that leaves a remainder.
    #[test]
    fn the_sum_is_a_sum() {
        let values: Vec<f32> = (0..1000).map(|i| (i % 5) as f32).collect();
        let plain: f32 = values.iter().sum();
        assert_eq!(sum(&values), plain);
    }
}
