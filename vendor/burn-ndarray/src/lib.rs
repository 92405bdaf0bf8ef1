#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

//! Burn ndarray backend.

#[cfg(any(
    feature = "blas-netlib",
    feature = "blas-openblas",
    feature = "blas-openblas-system",
))]
extern crate blas_src;

mod backend;
mod element;
mod ops;
mod parallel;
mod rand;
mod sharing;
mod storage;
mod tensor;

pub use backend::*;
pub use element::*;
pub(crate) use sharing::*;
pub(crate) use storage::*;
pub use tensor::*;
/// The matmul kernel dispatch (multipl-moe patch, vendor/README.md fix 4), for its tests.
#[doc(hidden)]
pub use ops::matmul::{
    GEMM_BELOW, MATRIXMULTIPLY_MAX_THREADS, MatmulKernel, MatmulProduct, avx512_on_256_bit_units,
    matmul_kernel,
};

extern crate alloc;
