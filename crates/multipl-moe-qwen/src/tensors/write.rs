//! Writing safetensors files: f32 or bf16, never half-written.

use std::collections::BTreeMap;
use std::path::Path;

use half::bf16;
use safetensors::{Dtype, tensor::TensorView};

use super::HostTensor;
use crate::error::{QwenError, Result, io_err};

/// The dtype in which [`write_file`] stores tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SaveDtype {
    /// 32-bit floats (bit-exact round trip).
    F32,
    /// bfloat16 (round to nearest even).
    Bf16,
}

/// Writes `tensors` to `path` as safetensors, through a temporary file renamed at the end,
/// so a failure leaves no half-written file. A NaN or infinite value is refused
/// ([`QwenError::NonFinite`], naming the tensor) before anything is written.
pub fn write_file(
    path: &Path,
    tensors: &BTreeMap<String, HostTensor>,
    dtype: SaveDtype,
) -> Result<()> {
    for (key, t) in tensors {
        if let Some((index, &value)) = t.data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(QwenError::NonFinite {
                path: path.to_path_buf(),
                key: key.clone(),
                index,
                value,
            });
        }
    }
    let encoded: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| {
            let bytes = match dtype {
                SaveDtype::F32 => t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                SaveDtype::Bf16 => t
                    .data
                    .iter()
                    .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                    .collect(),
            };
            (k.clone(), bytes, t.shape.clone())
        })
        .collect();
    let st_dtype = match dtype {
        SaveDtype::F32 => Dtype::F32,
        SaveDtype::Bf16 => Dtype::BF16,
    };
    let views = encoded
        .iter()
        .map(|(k, bytes, shape)| {
            TensorView::new(st_dtype, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| QwenError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!("tensor `{k}`: {e}"),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| QwenError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` with [`crate::files::replace_with`] (hidden temporary name,
/// synced, renamed into place).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::files::replace_with(path, |w| std::io::Write::write_all(w, bytes)).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_are_refused_and_nothing_is_written() {
        let dir = std::env::temp_dir().join(format!("qwen-nonfinite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.safetensors");
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "a".to_string(),
            HostTensor {
                shape: vec![2],
                data: vec![1.0, 2.0],
            },
        );
        write_file(&path, &tensors, SaveDtype::F32).expect("finite values are written");
        std::fs::remove_file(&path).unwrap();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            tensors.insert(
                "b".to_string(),
                HostTensor {
                    shape: vec![3],
                    data: vec![0.0, bad, 1.0],
                },
            );
            let err = write_file(&path, &tensors, SaveDtype::Bf16).unwrap_err();
            assert!(
                matches!(&err, QwenError::NonFinite { key, index: 1, .. } if key == "b"),
                "{err}"
            );
            assert!(!path.exists(), "nothing written for {bad}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
