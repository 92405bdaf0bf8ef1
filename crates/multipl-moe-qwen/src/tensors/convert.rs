//! f32, f16 and bf16 tensor bytes to f32 values, in parallel.

use std::path::Path;

use half::{bf16, f16};
use rayon::prelude::*;
use safetensors::Dtype;

use crate::error::{QwenError, Result};

/// Elements converted per parallel task.
const CHUNK: usize = 1 << 16;

/// `raw` (f32, f16 or bf16, little-endian) converted into `out` (as many elements) on
/// rayon's threads.
pub(super) fn convert(
    key: &str,
    path: &Path,
    dtype: Dtype,
    raw: &[u8],
    out: &mut [f32],
) -> Result<()> {
    // One monomorphised loop per dtype, so the decoder inlines and vectorises.
    fn run<const N: usize>(raw: &[u8], out: &mut [f32], decode: impl Fn([u8; N]) -> f32 + Sync) {
        let (elements, _) = raw.as_chunks::<N>();
        out.par_chunks_mut(CHUNK)
            .zip(elements.par_chunks(CHUNK))
            .for_each(|(out, elements)| {
                for (o, e) in out.iter_mut().zip(elements) {
                    *o = decode(*e);
                }
            });
    }
    match dtype {
        Dtype::F32 => run::<4>(raw, out, f32::from_le_bytes),
        Dtype::F16 => run::<2>(raw, out, |b| f16::from_le_bytes(b).to_f32()),
        Dtype::BF16 => run::<2>(raw, out, |b| bf16::from_le_bytes(b).to_f32()),
        other => {
            return Err(QwenError::UnsupportedDtype {
                key: key.to_string(),
                path: path.to_path_buf(),
                dtype: format!("{other:?}"),
            });
        }
    }
    Ok(())
}
