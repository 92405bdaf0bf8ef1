//! Shared helpers of the integration tests: the backend under test and tensor ↔ Vec moves.
#![allow(dead_code)]

pub mod fixtures;
pub mod reference;

use burn::tensor::{Tensor, TensorData, backend::Backend};

/// The backend the suite runs on: CUDA with `--features cuda` (scripts/gpu-check.sh).
#[cfg(feature = "cuda")]
pub type TestBackend = burn::backend::Cuda;
/// The backend the suite runs on: wgpu with `--features wgpu`, otherwise ndarray.
#[cfg(all(feature = "wgpu", not(feature = "cuda")))]
pub type TestBackend = burn::backend::Wgpu;
/// The backend the suite runs on: wgpu with `--features wgpu`, otherwise ndarray.
#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
pub type TestBackend = burn::backend::NdArray;

/// `multipl-moe-NAME-PID` in the temporary directory, emptied: a test's own directory.
pub fn run_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("multipl-moe-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The address of `t`'s first element on ndarray: equal addresses mean a shared buffer (the
/// vendored burn-ndarray's copy-free reshapes, slices and reads, vendor/README.md).
#[cfg(feature = "ndarray")]
pub fn first_element<const D: usize>(t: &Tensor<burn::backend::NdArray, D>) -> *const f32 {
    match t.clone().into_primitive().tensor() {
        burn_ndarray::NdArrayTensor::F32(storage) => storage.view().as_ptr(),
        other => panic!("not f32: {other:?}"),
    }
}

/// Autodiff over the backend under test.
pub type TestAutodiff = burn::backend::Autodiff<TestBackend>;

/// Tolerance against the plain-loop references: 1e-5 on ndarray, 1e-4 on GPU backends.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub const TOL: f32 = 1e-4;
/// Tolerance against the plain-loop references: 1e-5 on ndarray, 1e-4 on GPU backends.
#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
pub const TOL: f32 = 1e-5;

/// `module` with every lazily initialised parameter drawn now, under the generator lock
/// (`core::rng::with_generator`): a module drawn on first use, outside the lock, would move
/// the numbers a test running in parallel seeded for itself.
pub fn drawn<B: Backend, M: burn::module::Module<B>>(module: M) -> M {
    multipl_moe::core::model::materialize(&module);
    module
}

/// The tensor's values, row-major.
pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

/// The int tensor's values, row-major.
pub fn ints<B: Backend, const D: usize>(t: Tensor<B, D, burn::tensor::Int>) -> Vec<i64> {
    t.into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .expect("i64 data")
}

/// A tensor from values.
pub fn tensor<B: Backend, const D: usize>(
    v: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// Deterministic pseudo-random values in `[-scale, scale)` (xorshift), independent of burn's RNG.
pub fn randn(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Asserts element-wise closeness with a message naming the first mismatch.
pub fn assert_close(actual: &[f32], expected: &[f32], tol: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let err = (a - e).abs() / e.abs().max(1.0);
        assert!(
            err <= tol,
            "{what}[{i}]: got {a}, expected {e} (rel err {err:e} > {tol:e})"
        );
    }
}
