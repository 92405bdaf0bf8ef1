//! Writing safetensors files: f32 or bf16, never half-written.

use std::collections::BTreeMap;
use std::path::Path;

use half::bf16;
use std::io::Write;

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

/// Writes `tensors` to `path` as safetensors ([`write_streamed`] over the map), through a
/// temporary file renamed at the end, so a failure leaves no half-written file. A NaN or
/// infinite value is refused ([`QwenError::NonFinite`], naming the tensor) and nothing is
/// left at `path`.
pub fn write_file(
    path: &Path,
    tensors: &BTreeMap<String, HostTensor>,
    dtype: SaveDtype,
) -> Result<()> {
    let layout: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.shape.clone()))
        .collect();
    write_streamed(path, &layout, dtype, |sink| {
        tensors.iter().try_for_each(|(k, t)| sink.put(k, t))
    })
}

/// Writes a safetensors file tensor by tensor, so that no more than one tensor's bytes are
/// held at a time: `layout` lists every key and shape in file order (the header is written
/// from it first), then `fill` must hand every tensor to the [`TensorSink`] in that order.
/// Written through a temporary file renamed at the end: an error (a key or shape other than
/// the layout's, a missing tensor, a NaN or infinite value — [`QwenError::NonFinite`] — or an
/// I/O error) leaves nothing at `path`. The header carries `__metadata__: {"format": "pt"}`
/// and is padded with spaces to a multiple of 8 bytes, as the `safetensors` crate writes it.
pub fn write_streamed(
    path: &Path,
    layout: &[(String, Vec<usize>)],
    dtype: SaveDtype,
    fill: impl FnOnce(&mut TensorSink<'_>) -> Result<()>,
) -> Result<()> {
    let width = match dtype {
        SaveDtype::F32 => 4,
        SaveDtype::Bf16 => 2,
    };
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
    let mut offset = 0usize;
    for (key, shape) in layout {
        let len = shape.iter().product::<usize>() * width;
        header.insert(
            key.clone(),
            serde_json::json!({
                "dtype": match dtype { SaveDtype::F32 => "F32", SaveDtype::Bf16 => "BF16" },
                "shape": shape,
                "data_offsets": [offset, offset + len],
            }),
        );
        offset += len;
    }
    let mut json = serde_json::Value::Object(header).to_string().into_bytes();
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut failure = None;
    let written = crate::files::replace_with(path, |w| {
        w.write_all(&(json.len() as u64).to_le_bytes())?;
        w.write_all(&json)?;
        let mut sink = TensorSink {
            out: w,
            path,
            layout,
            next: 0,
            dtype,
        };
        let filled = fill(&mut sink).and_then(|()| match layout.get(sink.next) {
            Some((key, _)) => Err(QwenError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("tensor `{key}` was never written"),
            }),
            None => Ok(()),
        });
        filled.map_err(|e| {
            failure = Some(e);
            std::io::Error::other("tensor writing failed")
        })
    });
    match failure {
        Some(e) => Err(e),
        None => written.map_err(io_err(path)),
    }
}

/// Where [`write_streamed`]'s caller puts the tensors, in the layout's order.
pub struct TensorSink<'a> {
    out: &'a mut dyn Write,
    path: &'a Path,
    layout: &'a [(String, Vec<usize>)],
    next: usize,
    dtype: SaveDtype,
}

impl TensorSink<'_> {
    /// Writes the next tensor, which must be the layout's next key with its shape, and hold
    /// only finite values.
    pub fn put(&mut self, key: &str, tensor: &HostTensor) -> Result<()> {
        let corrupt = |reason: String| QwenError::Corrupt {
            path: self.path.to_path_buf(),
            reason,
        };
        let Some((want, shape)) = self.layout.get(self.next) else {
            return Err(corrupt(format!(
                "tensor `{key}` is not in the file's layout"
            )));
        };
        if want != key
            || *shape != tensor.shape
            || tensor.data.len() != shape.iter().product::<usize>()
        {
            return Err(corrupt(format!(
                "tensor `{key}` {:?} ({} values) written where the layout has `{want}` {shape:?}",
                tensor.shape,
                tensor.data.len()
            )));
        }
        if let Some((index, &value)) = tensor.data.iter().enumerate().find(|(_, v)| !v.is_finite())
        {
            return Err(QwenError::NonFinite {
                path: self.path.to_path_buf(),
                key: key.to_string(),
                index,
                value,
            });
        }
        let mut bytes = Vec::with_capacity(CHUNK * 4);
        for chunk in tensor.data.chunks(CHUNK) {
            bytes.clear();
            match self.dtype {
                SaveDtype::F32 => bytes.extend(chunk.iter().flat_map(|v| v.to_le_bytes())),
                SaveDtype::Bf16 => {
                    bytes.extend(chunk.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()))
                }
            }
            self.out.write_all(&bytes).map_err(io_err(self.path))?;
        }
        self.next += 1;
        Ok(())
    }
}

/// Values encoded per write.
const CHUNK: usize = 1 << 16;

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

    /// Tensors written one at a time read back through the `safetensors` crate with their
    /// keys, shapes and values (f32 exactly, bf16 rounded); a tensor out of the layout's
    /// order, of another shape, or never written is refused and leaves no file.
    #[test]
    fn streamed_tensors_read_back_and_layout_mismatches_leave_nothing() {
        let dir = std::env::temp_dir().join(format!("qwen-streamed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.safetensors");
        let tensor = |shape: Vec<usize>, scale: f32| HostTensor {
            data: (0..shape.iter().product::<usize>())
                .map(|i| i as f32 * scale - 1.0)
                .collect(),
            shape,
        };
        let mut tensors = BTreeMap::new();
        tensors.insert("b.weight".to_string(), tensor(vec![3, 70_000], 0.25));
        tensors.insert("a.bias".to_string(), tensor(vec![5], 1.5));
        tensors.insert("c".to_string(), tensor(vec![1, 1, 2], 0.5));
        for dtype in [SaveDtype::F32, SaveDtype::Bf16] {
            write_file(&path, &tensors, dtype).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let header = u64::from_le_bytes(bytes[..8].try_into().unwrap());
            assert_eq!(header % 8, 0, "header padded to 8 bytes");
            let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            assert_eq!(file.len(), 3);
            for (key, t) in &tensors {
                let view = file.tensor(key).unwrap();
                assert_eq!(view.shape(), t.shape.as_slice(), "{key}");
                let got: Vec<f32> = match dtype {
                    SaveDtype::F32 => view
                        .data()
                        .chunks(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect(),
                    SaveDtype::Bf16 => view
                        .data()
                        .chunks(2)
                        .map(|b| bf16::from_le_bytes(b.try_into().unwrap()).to_f32())
                        .collect(),
                };
                let want: Vec<f32> = match dtype {
                    SaveDtype::F32 => t.data.clone(),
                    SaveDtype::Bf16 => t.data.iter().map(|v| bf16::from_f32(*v).to_f32()).collect(),
                };
                assert_eq!(got, want, "{key} {dtype:?}");
            }
            std::fs::remove_file(&path).unwrap();
        }
        let layout: Vec<(String, Vec<usize>)> = tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.shape.clone()))
            .collect();
        let a = &tensors["a.bias"];
        let b = &tensors["b.weight"];
        type Fill<'f> = &'f dyn Fn(&mut TensorSink<'_>) -> Result<()>;
        let cases: [(&str, Fill<'_>); 3] = [
            ("order", &|sink| sink.put("b.weight", b)),
            ("shape", &|sink| sink.put("a.bias", b)),
            ("missing", &|sink| {
                sink.put("a.bias", a)?;
                sink.put("b.weight", b)
            }),
        ];
        for (what, fill) in cases {
            let err = write_streamed(&path, &layout, SaveDtype::F32, fill).unwrap_err();
            assert!(matches!(err, QwenError::Corrupt { .. }), "{what}: {err}");
            assert!(!path.exists(), "{what}: nothing written");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
