//! Reading and writing safetensors files: single files and `model-0000k-of-0000n` shards.
//!
//! Files are memory-mapped (`memmap2`). A matrix stored as f32 is handed to the backend as the
//! mapped bytes themselves ([`TensorStore::take_matrix`]): nothing is copied, and the mapping
//! lives as long as a tensor made from it (burn-ndarray keeps such weights borrowed until they
//! are modified, vendor/README.md fix 8; the GPU backends upload them). Other tensors are
//! converted to f32 when the loader takes them, in the file's layout (a Linear weight stays
//! `[out, in]`; the loader makes the parameter its transposed view), and their mapped pages
//! are then released. So an import never holds a host copy of every shard. The loader
//! ([`crate::load`]) maps keys to parameters and checks that the files together cover every
//! parameter and hold nothing unused. A sharded checkpoint's index must agree with its shards
//! key by key.

mod convert;
mod index;
mod store;
mod write;

pub use store::TensorStore;
pub use write::{SaveDtype, TensorSink, write_atomic, write_file, write_streamed};

/// One tensor read from a file, converted to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}
