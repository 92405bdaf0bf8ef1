//! Reading and writing safetensors files: single files and `model-0000k-of-0000n` shards.
//!
//! burn-store's `SafetensorsStore` reads one file into one module; a Hugging Face checkpoint
//! may be sharded, our expert weights are stacked while the file keeps one matrix per expert,
//! and every Linear is transposed. So this module reads every tensor (f32, f16 or bf16) into
//! f32 by key, and the loader ([`crate::load`]) maps keys to parameters and checks that the
//! files together cover every parameter and hold nothing unused.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{QwenError, Result, io_err};

/// One tensor read from a file, converted to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape as stored.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// All tensors of a model directory, by key, and which keys were consumed.
#[derive(Debug, Default)]
pub struct TensorStore {
    dir: PathBuf,
    tensors: BTreeMap<String, HostTensor>,
    used: HashSet<String>,
}

impl TensorStore {
    /// Reads `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files = if single.exists() {
            vec![single]
        } else if index.exists() {
            shard_files(&index)?
        } else {
            return Err(QwenError::MissingFile(single));
        };
        let mut tensors = BTreeMap::new();
        for file in files {
            read_file(&file, &mut tensors)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            tensors,
            used: HashSet::new(),
        })
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// Takes the tensor `key`, checking its shape.
    pub fn take(&mut self, key: &str, shape: &[usize]) -> Result<HostTensor> {
        let tensor = self.tensors.get(key).ok_or_else(|| QwenError::MissingKey {
            key: key.to_string(),
            dir: self.dir.clone(),
        })?;
        if tensor.shape != shape {
            return Err(QwenError::ShapeMismatch {
                key: key.to_string(),
                expected: shape.to_vec(),
                found: tensor.shape.clone(),
            });
        }
        self.used.insert(key.to_string());
        Ok(tensor.clone())
    }

    /// Fails if some tensor was never taken (a model/checkpoint mismatch).
    pub fn finish(self) -> Result<()> {
        let unused: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !self.used.contains(*k))
            .take(8)
            .cloned()
            .collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(QwenError::UnusedKeys {
                dir: self.dir,
                keys: unused,
            })
        }
    }
}

/// The distinct shard files of an index, in order, each checked to exist.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(io_err(index))?;
    let bad = |reason: String| QwenError::BadConfig {
        path: index.to_path_buf(),
        field: "weight_map".into(),
        reason,
    };
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("missing or not an object".into()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for (key, file) in map {
        let name = file
            .as_str()
            .ok_or_else(|| bad(format!("`{key}` maps to a non-string")))?;
        let path = dir.join(name);
        if !files.contains(&path) {
            if !path.exists() {
                return Err(QwenError::MissingShard {
                    shard: path,
                    index: index.to_path_buf(),
                });
            }
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_file(path: &Path, out: &mut BTreeMap<String, HostTensor>) -> Result<()> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| QwenError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    for (key, view) in st.tensors() {
        let data = to_f32(&key, path, &view)?;
        out.insert(
            key,
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(())
}

fn to_f32(key: &str, path: &Path, view: &TensorView<'_>) -> Result<Vec<f32>> {
    let raw = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => raw
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => raw
            .chunks_exact(2)
            .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(QwenError::UnsupportedDtype {
                key: key.to_string(),
                path: path.to_path_buf(),
                dtype: format!("{other:?}"),
            });
        }
    })
}

/// The dtype in which [`write_file`] stores tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SaveDtype {
    /// 32-bit floats (bit-exact round trip).
    F32,
    /// bfloat16 (round to nearest even).
    Bf16,
}

/// Writes `tensors` to `path` as safetensors, through a temporary file renamed at the end,
/// so a failure leaves no half-written file.
pub fn write_file(
    path: &Path,
    tensors: &BTreeMap<String, HostTensor>,
    dtype: SaveDtype,
) -> Result<()> {
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

/// Writes `bytes` to `path` via `path.tmp` + rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}
