//! [`TensorStore`]: the mapped files of a model directory and the tensors taken from them.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::{AllocationProperty, Bytes, DType, TensorData};
use memmap2::{Advice, Mmap, UncheckedAdvice};
use safetensors::{Dtype, SafeTensors, tensor::Metadata};

use super::HostTensor;
use super::convert::convert;
use super::index::ShardIndex;
use crate::error::{QwenError, Result, io_err};

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
            let held = store
                .keys
                .iter()
                .map(|(key, &shard)| (key.as_str(), store.shards[shard].path.as_path()))
                .collect();
            index.check(&held)?;
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
