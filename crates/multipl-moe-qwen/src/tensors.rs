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

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::{AllocationProperty, Bytes, DType, TensorData};
use half::{bf16, f16};
use memmap2::{Advice, Mmap, UncheckedAdvice};
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors, tensor::Metadata, tensor::TensorView};

use crate::error::{QwenError, Result, io_err};

/// One tensor read from a file, converted to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// One mapped safetensors file and its parsed header.
struct Shard {
    path: PathBuf,
    map: Arc<Mmap>,
    /// The same mapping as shared bytes: a tensor borrowing a slice of it keeps it alive.
    shared: bytes::Bytes,
    /// Byte offset of the data section (8 + header length).
    data_start: usize,
    meta: Metadata,
}

impl Shard {
    /// Where the tensor `info` describes lies in the mapped file.
    fn range(&self, info: &safetensors::tensor::TensorInfo) -> Range<usize> {
        let (begin, end) = info.data_offsets;
        self.data_start + begin..self.data_start + end
    }
}

/// `shape` with its first axis `n` times as long: `n` tensors of `shape` stacked.
fn stacked_shape(shape: &[usize], n: usize) -> Vec<usize> {
    let mut stacked = shape.to_vec();
    if let Some(rows) = stacked.first_mut() {
        *rows *= n;
    }
    stacked
}

/// The tensors of a model directory, by key, read lazily from the mapped files, and which
/// keys were consumed.
pub struct TensorStore {
    dir: PathBuf,
    shards: Vec<Shard>,
    keys: BTreeMap<String, usize>,
    used: HashSet<String>,
    /// Byte ranges handed out borrowed ([`Self::take_matrix`]), by shard.
    borrowed: Vec<(usize, usize, usize)>,
}

impl std::fmt::Debug for TensorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorStore")
            .field("dir", &self.dir)
            .field("tensors", &self.keys.len())
            .finish()
    }
}

impl TensorStore {
    /// Maps `model.safetensors`, or the shards listed in `model.safetensors.index.json`,
    /// checking the index against the shards: every key a shard holds must be listed for that
    /// shard, every listed key must be in its shard, no key may be in two shards, and no shard
    /// may be listed under two names.
    ///
    /// The files must not be modified while the store is alive (they are memory-mapped).
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let (files, index) = if single.exists() {
            (vec![single], None)
        } else if index_path.exists() {
            let index = ShardIndex::read(&index_path)?;
            (index.files.clone(), Some(index))
        } else {
            return Err(QwenError::MissingFile(single));
        };
        let mut store = Self {
            dir: dir.to_path_buf(),
            shards: Vec::with_capacity(files.len()),
            keys: BTreeMap::new(),
            used: HashSet::new(),
            borrowed: Vec::new(),
        };
        for file in files {
            store.map_file(file)?;
        }
        if let Some(index) = index {
            index.check(&store)?;
        }
        Ok(store)
    }

    fn map_file(&mut self, path: PathBuf) -> Result<()> {
        let file = std::fs::File::open(&path).map_err(io_err(&path))?;
        // SAFETY: the file is only read, and the documented contract of `open` is that it is
        // not modified while mapped (as candle and safetensors' own examples map files).
        let map = unsafe { Mmap::map(&file) }.map_err(io_err(&path))?;
        let corrupt = |e: safetensors::SafeTensorError| QwenError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        };
        let (header, meta) = SafeTensors::read_metadata(&map).map_err(corrupt)?;
        let shard = self.shards.len();
        for key in meta.tensors().keys() {
            if let Some(&other) = self.keys.get(key) {
                return Err(QwenError::ShardConflict {
                    key: key.clone(),
                    reason: format!(
                        "held by both {} and {}",
                        self.shards[other].path.display(),
                        path.display()
                    ),
                });
            }
            self.keys.insert(key.clone(), shard);
        }
        let map = Arc::new(map);
        self.shards.push(Shard {
            path,
            shared: bytes::Bytes::from_owner(MappedFile(Arc::clone(&map))),
            map,
            data_start: 8 + header,
            meta,
        });
        Ok(())
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// Takes the tensor `key` as stored (a Linear weight as PyTorch's `[out, in]`), converted
    /// to f32, checking its shape.
    pub fn take(&mut self, key: &str, shape: &[usize]) -> Result<HostTensor> {
        self.take_stacked(&[key], shape)
    }

    /// Takes tensors of the same `shape` stacked along their first axis into one f32 buffer
    /// (e.g. an expert's `[f, d]` gate and up matrices as `[2f, d]`), each converted straight
    /// into its place: shape `[keys.len() · shape[0], shape[1..]]`.
    pub fn take_stacked(&mut self, keys: &[&str], shape: &[usize]) -> Result<HostTensor> {
        let each: usize = shape.iter().product();
        let mut data = vec![0.0f32; each * keys.len()];
        for (k, key) in keys.iter().enumerate() {
            self.convert_into(key, shape, &mut data[k * each..(k + 1) * each])?;
        }
        Ok(HostTensor {
            shape: stacked_shape(shape, keys.len()),
            data,
        })
    }

    /// Takes tensors of the same `shape` stacked along their first axis, as
    /// [`Self::take_stacked`] does, as burn tensor data: when they are stored as f32 one after
    /// another in one file (as safetensors orders `gate_proj` before `up_proj`), the data is
    /// the file's own bytes, borrowed, not copied (so the file must not be modified while a
    /// tensor made from it is alive); otherwise they are converted to f32.
    pub fn take_matrix(&mut self, keys: &[&str], shape: &[usize]) -> Result<TensorData> {
        if let Some(range) = self.mapped_f32(keys, shape)? {
            for key in keys {
                self.used.insert(key.to_string());
            }
            let bytes = self.shards[range.0].shared.slice(range.1..range.2);
            self.borrowed.push(range);
            return Ok(TensorData::from_bytes(
                Bytes::from_shared(bytes, AllocationProperty::File),
                stacked_shape(shape, keys.len()),
                DType::F32,
            ));
        }
        let host = self.take_stacked(keys, shape)?;
        Ok(TensorData::new(host.data, host.shape))
    }

    /// The shard and byte range holding `keys` as f32 tensors of `shape`, contiguous and in
    /// order, when there is one: aligned for f32 (safetensors does not require it: a header
    /// whose length is not a multiple of 4, or an f32 tensor after an odd number of 16-bit
    /// values, is converted instead) and on a machine that reads little-endian floats, as the
    /// files store them. Checks every key's presence and shape.
    fn mapped_f32(&self, keys: &[&str], shape: &[usize]) -> Result<Option<(usize, usize, usize)>> {
        let mut range: Option<(usize, usize, usize)> = None;
        let mut contiguous = cfg!(target_endian = "little");
        for key in keys {
            let (shard, info) = self.info(key, shape)?;
            let Range { start: begin, end } = self.shards[shard].range(info);
            // The mapping starts on a page boundary, so the offset decides alignment.
            contiguous &=
                info.dtype == Dtype::F32 && begin.is_multiple_of(std::mem::align_of::<f32>());
            range = match range {
                None => Some((shard, begin, end)),
                Some((s, b, e)) => {
                    contiguous &= s == shard && e == begin;
                    Some((s, b, end))
                }
            };
        }
        Ok(range.filter(|_| contiguous))
    }

    /// The shard holding `key` and its header entry, which must have `shape`.
    fn info(
        &self,
        key: &str,
        shape: &[usize],
    ) -> Result<(usize, &safetensors::tensor::TensorInfo)> {
        let missing = || QwenError::MissingKey {
            key: key.to_string(),
            dir: self.dir.clone(),
        };
        let shard = *self.keys.get(key).ok_or_else(missing)?;
        let info = self.shards[shard].meta.info(key).ok_or_else(missing)?;
        if info.shape != shape {
            return Err(QwenError::ShapeMismatch {
                key: key.to_string(),
                expected: shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        Ok((shard, info))
    }

    /// Converts the tensor `key`, which must have `shape`, into `out` and counts it as used.
    fn convert_into(&mut self, key: &str, shape: &[usize], out: &mut [f32]) -> Result<()> {
        let (shard, info) = self.info(key, shape)?;
        let shard = &self.shards[shard];
        let Range { start: begin, end } = shard.range(info);
        // One syscall maps the tensor's pages in (readahead included) instead of one page
        // fault per 4 KiB page; refused on kernels before 5.14, which is harmless.
        let _ = shard
            .map
            .advise_range(Advice::PopulateRead, begin, end - begin);
        convert(key, &shard.path, info.dtype, &shard.map[begin..end], out)?;
        // The bytes are converted: give their pages back (re-read from the file if asked
        // again). The range is widened to whole pages, so up to two pages of a neighbouring
        // borrowed tensor may go too; they are faulted back in (or mapped again by `finish`).
        // SAFETY: a read-only shared file mapping loses nothing by dropping pages.
        let _ = unsafe {
            shard
                .map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, begin, end - begin)
        };
        self.used.insert(key.to_string());
        Ok(())
    }

    /// Whether `a` and `b` are both present with the same dtype, shape and bytes.
    pub fn same_bytes(&self, a: &str, b: &str) -> bool {
        let view = |key: &str| {
            let shard = &self.shards[*self.keys.get(key)?];
            let info = shard.meta.info(key)?;
            Some((
                info.dtype,
                info.shape.clone(),
                &shard.map[shard.range(info)],
            ))
        };
        matches!((view(a), view(b)), (Some(x), Some(y)) if x == y)
    }

    /// Counts `key` as used without reading it.
    pub fn mark_used(&mut self, key: &str) {
        self.used.insert(key.to_string());
    }

    /// Keys present in the files and not taken yet.
    pub fn unused(&self) -> Vec<String> {
        self.keys
            .keys()
            .filter(|k| !self.used.contains(*k))
            .cloned()
            .collect()
    }

    /// Fails if some tensor was never taken (a model/checkpoint mismatch). Otherwise starts
    /// mapping the borrowed tensors' pages into memory on a background thread
    /// (`MADV_POPULATE_READ`, Linux 5.14+; elsewhere nothing happens), so that the first
    /// forward pass does not take a page fault for every few pages of every weight; whatever
    /// the caller does next (loading a tokenizer, say) overlaps with it.
    pub fn finish(self) -> Result<()> {
        let unused: Vec<String> = self.unused().into_iter().take(8).collect();
        if !unused.is_empty() {
            return Err(QwenError::UnusedKeys {
                dir: self.dir,
                keys: unused,
            });
        }
        // Weak: once no tensor holds a mapping (a GPU backend uploaded the weights, or the
        // model was dropped), there is nothing to map in.
        let ranges: Vec<(std::sync::Weak<Mmap>, usize, usize)> = self
            .borrowed
            .iter()
            .map(|&(shard, begin, end)| (Arc::downgrade(&self.shards[shard].map), begin, end))
            .collect();
        if !ranges.is_empty() {
            // A failed spawn only loses the head start.
            let _ = std::thread::Builder::new()
                .name("multipl-moe-populate".into())
                .spawn(move || {
                    for (map, begin, end) in ranges {
                        let Some(map) = map.upgrade() else { continue };
                        let _ = map.advise_range(Advice::PopulateRead, begin, end - begin);
                    }
                });
        }
        Ok(())
    }
}

/// A mapped file as the owner of [`bytes::Bytes`] that borrow it.
struct MappedFile(Arc<Mmap>);

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// `model.safetensors.index.json`: which shard holds which key.
struct ShardIndex {
    path: PathBuf,
    /// Distinct shard files, sorted.
    files: Vec<PathBuf>,
    /// Key → shard file.
    weight_map: BTreeMap<String, PathBuf>,
}

impl ShardIndex {
    fn read(index: &Path) -> Result<Self> {
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
        let mut names: BTreeMap<PathBuf, String> = BTreeMap::new();
        let mut weight_map = BTreeMap::new();
        for (key, file) in map {
            let name = file
                .as_str()
                .ok_or_else(|| bad(format!("`{key}` maps to a non-string")))?;
            let path = dir.join(name);
            if !path.exists() {
                return Err(QwenError::MissingShard {
                    shard: path,
                    index: index.to_path_buf(),
                });
            }
            let canonical = path.canonicalize().map_err(io_err(&path))?;
            match names.get(&canonical) {
                Some(first) if first != name => {
                    return Err(bad(format!(
                        "shard {} is listed under two names, `{first}` and `{name}`",
                        canonical.display()
                    )));
                }
                Some(_) => {}
                None => {
                    names.insert(canonical, name.to_string());
                    files.push(path.clone());
                }
            }
            weight_map.insert(key.clone(), path);
        }
        files.sort();
        Ok(Self {
            path: index.to_path_buf(),
            files,
            weight_map,
        })
    }

    /// Every key of every shard is listed for that shard, and every listed key is there.
    fn check(&self, store: &TensorStore) -> Result<()> {
        for (key, &shard) in &store.keys {
            let held_by = &store.shards[shard].path;
            match self.weight_map.get(key) {
                None => {
                    return Err(QwenError::ShardConflict {
                        key: key.clone(),
                        reason: format!(
                            "in {} but not listed in {}",
                            held_by.display(),
                            self.path.display()
                        ),
                    });
                }
                Some(listed) if listed != held_by => {
                    return Err(QwenError::ShardConflict {
                        key: key.clone(),
                        reason: format!(
                            "{} lists it in {}, but {} holds it",
                            self.path.display(),
                            listed.display(),
                            held_by.display()
                        ),
                    });
                }
                Some(_) => {}
            }
        }
        if let Some((key, listed)) = self
            .weight_map
            .iter()
            .find(|(key, _)| !store.keys.contains_key(*key))
        {
            return Err(QwenError::ShardConflict {
                key: key.clone(),
                reason: format!(
                    "{} lists it in {}, which does not hold it",
                    self.path.display(),
                    listed.display()
                ),
            });
        }
        Ok(())
    }
}

/// Elements converted per parallel task.
const CHUNK: usize = 1 << 16;

/// `raw` (f32, f16 or bf16, little-endian) converted into `out` (as many elements) on
/// rayon's threads.
fn convert(key: &str, path: &Path, dtype: Dtype, raw: &[u8], out: &mut [f32]) -> Result<()> {
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
