//! Reading and rewriting the safetensors fixtures of the import tests.

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

/// `fixtures/NAME` of the repository.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A fresh scratch model directory (`tag` names it) holding `weights_dir`'s
/// `model.safetensors` and `config` as config.json.
pub fn model_with_config(weights_dir: &Path, tag: &str, config: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("multipl-moe-cfg-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        weights_dir.join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    dir
}

/// The little-endian i64 tensor `key` of `st`, flattened.
fn i64s(st: &SafeTensors, key: &str) -> Vec<i64> {
    st.tensor(key)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// One tensor of a safetensors file: key, dtype, shape, raw little-endian bytes.
pub type RawTensor = (String, Dtype, Vec<usize>, Vec<u8>);

/// `(tokens [2, T] row-major, T, transformers logits)` of a `reference*.safetensors` file
/// written by `scripts/make_fixtures.py`.
pub fn transformers_reference(path: &Path) -> (Vec<i64>, usize, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("tokens").unwrap().shape()[1];
    let ids = i64s(&st, "tokens");
    let logits = st
        .tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (ids, t, logits)
}

/// transformers' greedy `generate` ids (`generated`: prompt then new tokens) of a
/// `reference.safetensors` file written by `scripts/make_fixtures.py --only llama`.
pub fn transformers_generated(path: &Path) -> Vec<usize> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    i64s(&st, "generated")
        .into_iter()
        .map(|id| id as usize)
        .collect()
}

/// Rewrites the safetensors file at `path` with `edit` applied to its tensors.
pub fn rewrite_safetensors(path: &Path, edit: impl FnOnce(&mut Vec<RawTensor>)) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<RawTensor> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<_> = tensors
        .iter()
        .map(|(k, dt, s, d)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), d).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}
