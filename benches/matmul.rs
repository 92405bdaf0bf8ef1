//! Matmul kernels on the CPU (vendor/README.md, fix 4), on product shapes the model runs:
//! upstream burn-ndarray's f32 kernel, matrixmultiply with its `threading` feature (as
//! upstream's `multi-threads` feature enables it), the `gemm` crate with rayon threads, and this
//! project's vendored burn-ndarray matmul, which picks one of the two by shape.
//!
//! Run: `cargo bench --bench matmul`. matrixmultiply's thread count comes from
//! `MATMUL_NUM_THREADS` (default: physical cores, at most 4); gemm uses rayon's pool
//! (`RAYON_NUM_THREADS`, default: all cores). With `--features openblas` the burn column is
//! OpenBLAS. All three outputs are compared before anything is timed. The run starts with the
//! CPU's f32 FMA peak on rayon's thread count (`multipl_moe::host`, printed first with the rest
//! of the host), the ceiling for the GFLOP/s column, whose share of it is the `of FMA peak` column.

use multipl_moe::host::Host;

use std::time::Instant;

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};

/// One product `[m, k] · [k, n]`, named for where the model runs it.
struct Shape {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "tiny decode, FFN gate/up",
        m: 1,
        k: 128,
        n: 512,
    },
    Shape {
        name: "tiny training, FFN gate/up",
        m: 512,
        k: 128,
        n: 512,
    },
    Shape {
        name: "qwen decode, expert gate/up",
        m: 1,
        k: 1024,
        n: 5632,
    },
    Shape {
        name: "qwen decode, tied LM head",
        m: 151_936,
        k: 1024,
        n: 1,
    },
    Shape {
        name: "qwen prefill, expert gate/up",
        m: 128,
        k: 1024,
        n: 5632,
    },
    Shape {
        name: "layer bench, segment expert gate/up",
        m: 320,
        k: 1024,
        n: 5632,
    },
    Shape {
        name: "layer bench, token expert gate/up",
        m: 410,
        k: 1024,
        n: 5632,
    },
    Shape {
        name: "layer bench, token expert down",
        m: 410,
        k: 2816,
        n: 1024,
    },
    Shape {
        name: "layer bench, expert weight gradient",
        m: 1024,
        k: 410,
        n: 5632,
    },
    Shape {
        name: "layer bench, dense gate/up",
        m: 2048,
        k: 1024,
        n: 5632,
    },
];

/// Deterministic values in [-0.5, 0.5): a multiplicative hash of the index.
fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) % 1024) as f32 / 1024.0 - 0.5)
        .collect()
}

/// Upstream's f32 path: matrixmultiply's sgemm on row-major operands, output allocated per call
/// as burn does.
fn matrixmultiply(a: &[f32], b: &[f32], s: &Shape) -> Vec<f32> {
    let mut c = vec![0.0f32; s.m * s.n];
    let (k, n) = (s.k as isize, s.n as isize);
    // SAFETY: `a` is m×k, `b` is k×n and `c` is m×n, all row-major and contiguous, so every
    // index the strides describe lies inside its slice.
    unsafe {
        matrixmultiply::sgemm(
            s.m,
            s.k,
            s.n,
            1.0,
            a.as_ptr(),
            k,
            1,
            b.as_ptr(),
            n,
            1,
            0.0,
            c.as_mut_ptr(),
            n,
            1,
        );
    }
    c
}

/// The `gemm` crate on row-major operands, rayon-parallel, output allocated per call.
fn gemm(a: &[f32], b: &[f32], s: &Shape) -> Vec<f32> {
    let mut c = vec![0.0f32; s.m * s.n];
    let (k, n) = (s.k as isize, s.n as isize);
    // SAFETY: as in `matrixmultiply`; gemm takes column strides first.
    unsafe {
        gemm::gemm(
            s.m,
            s.n,
            s.k,
            c.as_mut_ptr(),
            1,
            n,
            false,
            a.as_ptr(),
            1,
            k,
            b.as_ptr(),
            1,
            n,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
    c
}

/// Seconds per call of `f`: median of five timed batches, each at least 50 ms long.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    f();
    let once = start.elapsed().as_secs_f64().max(1e-7);
    let reps = ((0.05 / once).ceil() as usize).max(1);
    let mut batches: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..reps {
                f();
            }
            start.elapsed().as_secs_f64() / reps as f64
        })
        .collect();
    batches.sort_by(f64::total_cmp);
    batches[2]
}

fn main() {
    let device = Default::default();
    let ours = if cfg!(feature = "openblas") {
        "burn-ndarray (OpenBLAS)"
    } else {
        "burn-ndarray, vendored"
    };
    let threads = |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "threads: matrixmultiply MATMUL_NUM_THREADS={}, rayon RAYON_NUM_THREADS={}",
        threads("MATMUL_NUM_THREADS", "unset (physical cores, at most 4)"),
        threads("RAYON_NUM_THREADS", &format!("unset ({cores} cores)")),
    );
    let rayon_threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cores);
    let host = Host::measure(rayon_threads);
    println!("{host}");
    println!(
        "| product | m × k × n | matrixmultiply µs | gemm µs | {ours} µs | GFLOP/s | of FMA peak | vs the faster |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for s in SHAPES {
        let a = values(s.m * s.k, 1);
        let b = values(s.k * s.n, 2);
        let lhs = Tensor::<NdArray, 2>::from_data(TensorData::new(a.clone(), [s.m, s.k]), &device);
        let rhs = Tensor::<NdArray, 2>::from_data(TensorData::new(b.clone(), [s.k, s.n]), &device);

        let reference = matrixmultiply(&a, &b, s);
        let burn_out = lhs.clone().matmul(rhs.clone()).into_data();
        let outputs = [
            ("gemm", gemm(&a, &b, s)),
            (ours, burn_out.as_slice::<f32>().unwrap_or(&[]).to_vec()),
        ];
        for (what, got) in &outputs {
            assert_eq!(
                got.len(),
                reference.len(),
                "{}, {what}: output length",
                s.name
            );
            let worst = reference
                .iter()
                .zip(got)
                .map(|(r, g)| (r - g).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst < 1e-3,
                "{}, {what}: outputs differ by {worst}",
                s.name
            );
        }

        let mm = time(|| drop(matrixmultiply(&a, &b, s)));
        let gm = time(|| drop(gemm(&a, &b, s)));
        let burn = time(|| drop(lhs.clone().matmul(rhs.clone())));
        let gflops = 2.0 * (s.m * s.k * s.n) as f64 / burn / 1e9;
        let share = host.fma_peak.map_or_else(
            || "-".into(),
            |(peak, _)| format!("{:.0} %", 100.0 * gflops / peak),
        );
        println!(
            "| {} | {} × {} × {} | {:.1} | {:.1} | {:.1} | {:.1} | {share} | {:.2}× |",
            s.name,
            s.m,
            s.k,
            s.n,
            mm * 1e6,
            gm * 1e6,
            burn * 1e6,
            gflops,
            burn / mm.min(gm),
        );
    }
}
