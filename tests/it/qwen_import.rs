//! Import of Hugging Face Qwen2 checkpoints: logits match transformers' (fixtures made by
//! scripts/make_fixtures.py), and every kind of bad input is a typed error.

use std::path::{Path, PathBuf};

use crate::common::fixtures::{RawTensor, fixture, rewrite_safetensors, transformers_reference};
use crate::common::{TestBackend, assert_close, values};
use burn::tensor::{Int, Tensor, TensorData};
use multipl_moe::qwen::{QwenError, load_model, load_model_with_notes};

type B = TestBackend;

/// (tokens [2, T], transformers logits) of a fixture.
fn reference(dir: &Path) -> (Vec<i64>, usize, Vec<f32>) {
    transformers_reference(&dir.join("reference.safetensors"))
}

fn check_parity(name: &str) {
    let dir = fixture(name);
    let device = Default::default();
    let (_, model) = load_model::<B>(&dir, &device).unwrap();
    let (ids, t, expected) = reference(&dir);
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [2, t]), &device);
    let logits = values(model.forward(tokens, None).logits);
    assert_close(
        &logits,
        &expected,
        1e-4,
        &format!("{name} logits vs transformers"),
    );
}

#[test]
fn sharded_bf16_gqa_untied_model_matches_transformers() {
    check_parity("qwen2-gqa-bf16");
}

#[test]
fn single_file_f32_tied_model_matches_transformers() {
    check_parity("qwen2-tied-f32");
}

/// A scratch copy of a fixture, for corrupting.
fn scratch(name: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("multipl-moe-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    dir
}

fn load_err(dir: &Path) -> QwenError {
    match load_model::<B>(dir, &Default::default()) {
        Ok(_) => panic!("{} loaded although it is broken", dir.display()),
        Err(e) => e,
    }
}

/// Rewrites the single-file fixture with `edit` applied to its tensors.
fn rewrite(dir: &Path, edit: impl FnOnce(&mut Vec<RawTensor>)) {
    rewrite_safetensors(&dir.join("model.safetensors"), edit);
}

/// Checkpoints saved by older transformers carry `rotary_emb.inv_freq` buffers, which
/// transformers skips: the import ignores them too, with a note, and matches transformers'
/// logits; any other extra tensor is still refused.
#[test]
fn older_checkpoints_rotary_buffers_are_ignored() {
    let dir = scratch("qwen2-tied-f32", "inv-freq");
    let inv_freq = (0..8).flat_map(|i: i32| 1e4f32.powf(-(i as f32) / 8.0).to_le_bytes());
    let buffer = |key: &str| -> RawTensor {
        (
            key.into(),
            safetensors::Dtype::F32,
            vec![8],
            inv_freq.clone().collect(),
        )
    };
    rewrite(&dir, |t| {
        t.push(buffer("model.layers.0.self_attn.rotary_emb.inv_freq"));
        t.push(buffer("model.rotary_emb.inv_freq"));
    });
    let device = Default::default();
    let loaded = load_model_with_notes::<B>(&dir, &device).unwrap();
    assert!(
        loaded
            .notes
            .iter()
            .any(|n| n.contains("2 `rotary_emb.inv_freq` buffers")),
        "{:?}",
        loaded.notes
    );
    let (ids, t, expected) = reference(&dir);
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [2, t]), &device);
    let logits = values(loaded.model.forward(tokens, None).logits);
    assert_close(&logits, &expected, 1e-4, "logits vs transformers");
    rewrite(&dir, |t| t.push(buffer("model.layers.0.self_attn.extra")));
    assert!(
        matches!(load_err(&dir), QwenError::UnusedKeys { ref keys, .. } if keys == &["model.layers.0.self_attn.extra"]),
        "another extra tensor is refused"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_file_is_named() {
    let dir = scratch("qwen2-tied-f32", "nofile");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = load_err(&dir);
    assert!(
        matches!(err, QwenError::MissingFile(ref p) if p.ends_with("model.safetensors")),
        "{err}"
    );
    let dir = scratch("qwen2-tied-f32", "noconfig");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert!(matches!(load_err(&dir), QwenError::MissingFile(p) if p.ends_with("config.json")));
}

#[test]
fn missing_key_is_named() {
    let dir = scratch("qwen2-tied-f32", "nokey");
    rewrite(&dir, |t| t.retain(|(k, ..)| k != "model.norm.weight"));
    let err = load_err(&dir);
    assert!(
        matches!(err, QwenError::MissingKey { ref key, .. } if key == "model.norm.weight"),
        "{err}"
    );
    assert!(err.to_string().contains("model.norm.weight"));
}

#[test]
fn shape_mismatch_names_key_expected_and_found() {
    let dir = scratch("qwen2-tied-f32", "shape");
    rewrite(&dir, |t| {
        let e = t
            .iter_mut()
            .find(|(k, ..)| k == "model.norm.weight")
            .unwrap();
        e.2 = vec![16];
        e.3.truncate(16 * 4);
    });
    match load_err(&dir) {
        QwenError::ShapeMismatch {
            key,
            expected,
            found,
        } => {
            assert_eq!(
                (key.as_str(), expected, found),
                ("model.norm.weight", vec![32], vec![16])
            );
        }
        e => panic!("{e}"),
    }
}

#[test]
fn unsupported_dtype_is_rejected() {
    let dir = scratch("qwen2-tied-f32", "dtype");
    rewrite(&dir, |t| {
        let e = t
            .iter_mut()
            .find(|(k, ..)| k == "model.norm.weight")
            .unwrap();
        e.1 = safetensors::Dtype::I32;
    });
    assert!(
        matches!(load_err(&dir), QwenError::UnsupportedDtype { key, dtype, .. } if key == "model.norm.weight" && dtype == "I32")
    );
}

#[test]
fn truncated_and_corrupt_headers_are_rejected() {
    let dir = scratch("qwen2-tied-f32", "trunc");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(load_err(&dir), QwenError::Corrupt { .. }));
    let mut garbage = bytes.clone();
    garbage[8..40].fill(b'#');
    std::fs::write(&path, garbage).unwrap();
    assert!(matches!(load_err(&dir), QwenError::Corrupt { .. }));
    std::fs::write(&path, [1u8, 2, 3]).unwrap();
    assert!(matches!(load_err(&dir), QwenError::Corrupt { .. }));
}

#[test]
fn missing_shard_is_named() {
    let dir = scratch("qwen2-gqa-bf16", "shard");
    std::fs::remove_file(dir.join("model-00002-of-00003.safetensors")).unwrap();
    assert!(
        matches!(load_err(&dir), QwenError::MissingShard { shard, .. } if shard.ends_with("model-00002-of-00003.safetensors"))
    );
}

#[test]
fn bad_config_names_the_field() {
    let cases = [
        (
            r#"{"hidden_size": 32, "num_attention_heads": 4}"#,
            "vocab_size",
        ),
        ("not json", "<root>"),
        (
            r#"{"vocab_size": 128, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 3}"#,
            "num_attention_heads",
        ),
        (
            r#"{"vocab_size": -1, "hidden_size": 32, "num_attention_heads": 4}"#,
            "vocab_size",
        ),
        (r#"{"model_type": "gemma", "vocab_size": 1}"#, "model_type"),
        (
            r#"{"vocab_size": 128, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 4, "head_dim": 7}"#,
            "head_dim",
        ),
    ];
    for (i, (json, field)) in cases.into_iter().enumerate() {
        let dir = scratch("qwen2-tied-f32", &format!("cfg{i}"));
        std::fs::write(dir.join("config.json"), json).unwrap();
        let err = load_err(&dir);
        assert!(
            err.to_string().contains(field),
            "case {i}: `{err}` does not name `{field}`"
        );
    }
}

/// Applies `edit` to the `weight_map` of a scratch copy of the sharded fixture and returns the
/// load error.
fn index_err(
    tag: &str,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> QwenError {
    let dir = scratch("qwen2-gqa-bf16", tag);
    let path = dir.join("model.safetensors.index.json");
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(index["weight_map"].as_object_mut().unwrap());
    std::fs::write(&path, index.to_string()).unwrap();
    load_err(&dir)
}

#[test]
fn index_and_shards_must_agree_key_by_key() {
    const KEY: &str = "model.norm.weight";
    // A key a shard holds but the index does not list.
    let err = index_err("unlisted", |m| {
        m.remove(KEY);
    });
    assert!(
        matches!(err, QwenError::ShardConflict { ref key, .. } if key == KEY),
        "{err}"
    );
    assert!(err.to_string().contains("not listed"), "{err}");
    // A key listed in a shard that does not hold it.
    let err = index_err("wrong-shard", |m| {
        let held = m[KEY].as_str().unwrap().to_string();
        let other = m
            .values()
            .map(|v| v.as_str().unwrap().to_string())
            .find(|f| *f != held)
            .unwrap();
        m.insert(KEY.into(), other.into());
    });
    assert!(
        matches!(err, QwenError::ShardConflict { ref key, .. } if key == KEY),
        "{err}"
    );
    // One shard listed under two names.
    let err = index_err("two-names", |m| {
        let held = m[KEY].as_str().unwrap().to_string();
        m.insert(KEY.into(), format!("./{held}").into());
    });
    assert!(err.to_string().contains("two names"), "{err}");
    // A listed key no shard holds.
    let err = index_err("phantom", |m| {
        let any = m.values().next().unwrap().clone();
        m.insert("model.phantom.weight".into(), any);
    });
    assert!(
        matches!(err, QwenError::ShardConflict { ref key, .. } if key == "model.phantom.weight"),
        "{err}"
    );
}

/// An f32 checkpoint's matrices are the mapped file's bytes, borrowed by burn-ndarray
/// (vendor/README.md fix 8), not copied: the embedding, every Linear weight, and an expert's
/// `gate_proj` and `up_proj` stored one after the other as one `[d, 2f]` view; norm weights and
/// biases are copied. A bf16 checkpoint is converted.
#[cfg(feature = "ndarray")]
#[test]
fn f32_matrices_are_borrowed_from_the_mapped_file() {
    use burn::backend::NdArray;
    use multipl_moe::core::decoder::FeedForward;
    use multipl_moe::core::{CausalLm, MoeConfig};
    use multipl_moe::qwen::{SaveDtype, UpcycleOptions, save_model, upcycle};

    fn borrowed<const D: usize>(t: Tensor<NdArray, D>) -> bool {
        t.into_primitive().tensor().is_borrowed()
    }
    let device = Default::default();
    let (cfg, dense) = load_model::<NdArray>(&fixture("qwen2-tied-f32"), &device).unwrap();
    let layer = &dense.layers[0];
    assert!(borrowed(dense.embed_tokens.weight.val()), "embedding");
    assert!(borrowed(layer.self_attn.q_proj.weight.val()), "q_proj");
    assert!(!borrowed(dense.norm.weight.val()), "norm weight copied");
    if let Some(bias) = &layer.self_attn.q_proj.bias {
        assert!(!borrowed(bias.val()), "bias copied");
    }
    let FeedForward::Dense(ffn) = &layer.mlp else {
        panic!("a dense checkpoint")
    };
    assert!(borrowed(ffn.gate_proj.weight.val()), "gate_proj");

    let (hybrid, hcfg) = upcycle(
        dense,
        &cfg,
        &MoeConfig::released_code(),
        &UpcycleOptions {
            expert_noise: 0.0,
            seed: 3,
            function_preserving: false,
        },
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("multipl-moe-borrowed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    save_model(&hybrid, &hcfg, &dir, SaveDtype::F32).unwrap();
    let (_, loaded): (_, CausalLm<NdArray>) = load_model(&dir, &device).unwrap();
    let hybrid_layer = loaded
        .layers
        .iter()
        .find_map(|l| match &l.mlp {
            FeedForward::Hybrid(h) => Some(h),
            FeedForward::Dense(_) => None,
        })
        .expect("a hybrid layer");
    let expert = &hybrid_layer.token_moe.experts.experts[0];
    assert!(borrowed(expert.gate_up.val()), "stacked gate_up");
    assert!(borrowed(expert.down.val()), "down");
    let _ = std::fs::remove_dir_all(&dir);

    let (_, bf16) = load_model::<NdArray>(&fixture("qwen2-gqa-bf16"), &device).unwrap();
    assert!(
        !borrowed(bf16.embed_tokens.weight.val()),
        "bf16 is converted"
    );
}

/// safetensors does not require aligned data: a header whose length leaves the data section
/// at an offset of 2 (mod 4) puts every f32 tensor off its alignment. Such a file is converted
/// (not borrowed) and gives the same logits.
#[test]
fn misaligned_f32_data_is_converted_and_matches_transformers() {
    let dir = scratch("qwen2-tied-f32", "misaligned");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header = bytes[8..8 + n].to_vec();
    while header.len() % 4 != 2 {
        header.push(b' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header);
    file.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(&path, file).unwrap();

    let device = Default::default();
    let (_, model) = load_model::<B>(&dir, &device).unwrap();
    let (ids, t, expected) = reference(&fixture("qwen2-tied-f32"));
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [2, t]), &device);
    let logits = values(model.forward(tokens, None).logits);
    assert_close(&logits, &expected, 1e-4, "misaligned f32 logits");
    let _ = std::fs::remove_dir_all(&dir);
}
