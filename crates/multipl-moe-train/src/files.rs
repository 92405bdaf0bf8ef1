//! Writing files so that a crash leaves no half-written one ([`multipl_moe_qwen::files`]),
//! with this crate's error type.

use std::path::Path;

pub use multipl_moe_qwen::files::{replace_with, temp_name};

use crate::error::{Result, TrainError};

/// Writes `bytes` to `path` with [`replace_with`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace_with(path, |w| w.write_all(bytes)).map_err(|e| TrainError::io(path, e))
}
