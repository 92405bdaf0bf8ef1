//! The CPU's f32 multiply-add ceiling, measured: what no matmul kernel can beat on this
//! machine. Each thread runs independent fused multiply-adds on 12 vector accumulators (enough
//! to cover the FMA latency on current x86 cores) with no memory traffic, and the result is the
//! f32 FLOP/s summed over the threads. Both vector widths are tried where the CPU has them:
//! some CPUs (AMD Zen 4) run AVX-512 on 256-bit units, so the wider one is not always faster.

/// FMA steps per accumulator and thread: ~20 GFLOP per thread at 256 bits, a few tenths of
/// a second on a current core.
const STEPS: usize = 50_000_000;

/// Peak f32 GFLOP/s of `threads` threads and the vector width that reached it, or `None` on a
/// CPU without FMA (or not x86_64).
pub fn f32_fma_peak(threads: usize) -> Option<(f64, &'static str)> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut best: Option<(f64, &'static str)> = None;
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features `fma_256` needs were detected just above.
            let gflops = on_threads(threads, 8, || unsafe { x86::fma_256(STEPS) });
            best = Some((gflops, "AVX2 FMA, 256-bit"));
        }
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature `fma_512` needs was detected just above.
            let gflops = on_threads(threads, 16, || unsafe { x86::fma_512(STEPS) });
            if best.is_none_or(|(b, _)| gflops > b) {
                best = Some((gflops, "AVX-512F FMA, 512-bit"));
            }
        }
        best
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        None
    }
}

/// GFLOP/s of `threads` threads each running `run` (12 accumulators of `lanes` f32 lanes,
/// `STEPS` FMAs each; 2 FLOP per lane and FMA). The best of three tries.
#[cfg(target_arch = "x86_64")]
fn on_threads(threads: usize, lanes: usize, run: impl Fn() -> f32 + Sync) -> f64 {
    use std::hint::black_box;
    use std::time::Instant;

    let flop = (threads * 12 * lanes * 2 * STEPS) as f64;
    (0..3)
        .map(|_| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| black_box(run()));
                }
            });
            flop / start.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// `steps` rounds of 12 independent `a = a · b + c` on 8-lane vectors.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma_256(steps: usize) -> f32 {
        let b = _mm256_set1_ps(black_box(0.999_999));
        let c = _mm256_set1_ps(black_box(1e-7));
        let mut acc = [_mm256_set1_ps(black_box(1.0)); 12];
        for _ in 0..steps {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, b, c);
            }
        }
        let mut out = [0.0f32; 8];
        let sum = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, a| _mm256_add_ps(s, *a));
        // SAFETY: `out` holds the 8 lanes written.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
        out.iter().sum()
    }

    /// `steps` rounds of 12 independent `a = a · b + c` on 16-lane vectors.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma_512(steps: usize) -> f32 {
        let b = _mm512_set1_ps(black_box(0.999_999));
        let c = _mm512_set1_ps(black_box(1e-7));
        let mut acc = [_mm512_set1_ps(black_box(1.0)); 12];
        for _ in 0..steps {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, b, c);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm512_setzero_ps(), |s, a| _mm512_add_ps(s, *a));
        _mm512_reduce_add_ps(sum)
    }
}
