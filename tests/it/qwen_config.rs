//! config.json as transformers writes it: both layouts (4.x and 5.x), RoPE types default,
//! linear and yarn with logit parity against transformers 5.24 at 1.5× the position limit
//! (fixtures/qwen2-rope, made by `scripts/make_fixtures.py --only rope`), refusals by name of
//! every forward-changing field not implemented, and a tied model shipping `lm_head.weight`.

use std::path::{Path, PathBuf};

use crate::common::fixtures::{
    fixture, model_with_config, rewrite_safetensors, transformers_reference,
};
use crate::common::{TestBackend, assert_close, values};
use burn::tensor::{Int, Tensor, TensorData};
use multipl_moe::qwen::{QwenError, load_model, load_model_with_notes};

type B = TestBackend;

fn rope_fixture() -> PathBuf {
    fixture("qwen2-rope")
}

/// A model dir holding the rope fixture's weights and `config` as config.json.
fn model_dir(tag: &str, config: &str) -> PathBuf {
    model_with_config(&rope_fixture(), tag, config)
}

fn variant(name: &str) -> String {
    std::fs::read_to_string(rope_fixture().join("configs").join(format!("{name}.json"))).unwrap()
}

/// (tokens, T, logits) of `reference-{name}.safetensors`.
fn reference(name: &str) -> (Vec<i64>, usize, Vec<f32>) {
    transformers_reference(&rope_fixture().join(format!("reference-{name}.safetensors")))
}

fn check_parity(name: &str) {
    let dir = model_dir(name, &variant(name));
    let device = Default::default();
    let (config, model) = load_model::<B>(&dir, &device).unwrap();
    let (ids, t, expected) = reference(name);
    assert!(
        t * 2 >= config.model.max_position_embeddings * 3,
        "{name}: the reference must reach 1.5× max_position_embeddings"
    );
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [2, t]), &device);
    let logits = values(model.forward(tokens, None).logits);
    assert_close(&logits, &expected, 1e-4, &format!("{name} vs transformers"));
}

#[test]
fn default_rope_in_both_layouts_matches_transformers_past_the_position_limit() {
    check_parity("v5-default");
    check_parity("v4-default");
}

#[test]
fn linear_rope_in_both_layouts_matches_transformers() {
    check_parity("v5-linear");
    check_parity("v4-linear");
}

#[test]
fn yarn_rope_in_both_layouts_matches_transformers() {
    check_parity("v5-yarn");
    check_parity("v4-yarn");
}

/// Edits the v5-default config with `edit` and returns the load error.
fn refused(tag: &str, edit: impl FnOnce(&mut serde_json::Value)) -> QwenError {
    let mut config: serde_json::Value = serde_json::from_str(&variant("v5-default")).unwrap();
    edit(&mut config);
    let dir = model_dir(tag, &config.to_string());
    match load_model::<B>(&dir, &Default::default()) {
        Ok(_) => panic!("{tag}: loaded although the config asks for something not implemented"),
        Err(e) => e,
    }
}

#[test]
fn forward_changing_fields_not_implemented_are_refused_by_name() {
    use serde_json::json;
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "dynamic",
            "rope_parameters.rope_type",
            Box::new(|c| c["rope_parameters"]["rope_type"] = json!("dynamic")),
        ),
        (
            "legacy-dynamic",
            "rope_type",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("rope_parameters");
                c["rope_scaling"] = json!({"type": "dynamic", "factor": 2.0});
            }),
        ),
        (
            "sliding-types",
            "layer_types[0]",
            Box::new(|c| c["layer_types"] = json!(["sliding_attention"])),
        ),
        (
            "sliding-v4",
            "use_sliding_window",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("layer_types");
                c["use_sliding_window"] = json!(true);
                c["sliding_window"] = json!(8);
                c["max_window_layers"] = json!(0);
            }),
        ),
        (
            "gelu",
            "hidden_act",
            Box::new(|c| c["hidden_act"] = json!("gelu")),
        ),
        (
            "no-bias",
            "attention_bias",
            Box::new(|c| c["attention_bias"] = json!(false)),
        ),
        (
            "head-dim",
            "head_dim",
            Box::new(|c| c["head_dim"] = json!(15)),
        ),
        (
            "rope-key",
            "rope_parameters.low_freq_factor",
            Box::new(|c| c["rope_parameters"]["low_freq_factor"] = json!(1.0)),
        ),
        (
            "conflict",
            "rope_scaling.rope_theta",
            Box::new(|c| c["rope_scaling"] = json!({"rope_theta": 10000.0})),
        ),
        (
            "partial",
            "partial_rotary_factor",
            Box::new(|c| c["partial_rotary_factor"] = json!(0.5)),
        ),
        (
            "layer-count",
            "layer_types",
            Box::new(|c| c["layer_types"] = json!(["full_attention", "full_attention"])),
        ),
    ];
    for (tag, field, edit) in cases {
        let err = refused(tag, edit);
        let msg = err.to_string();
        assert!(
            matches!(err, QwenError::BadConfig { .. }) && msg.contains(field),
            "{tag}: `{msg}` does not name `{field}`"
        );
        assert_eq!(msg.lines().count(), 1, "{tag}: one line, got `{msg}`");
    }
}

#[test]
fn sliding_window_flag_without_a_sliding_layer_is_accepted() {
    // Qwen1.5 configs ship use_sliding_window: false with max_window_layers < layers, and
    // transformers 4.x configs may say true with max_window_layers >= layers: no layer slides.
    let mut config: serde_json::Value = serde_json::from_str(&variant("v4-default")).unwrap();
    config["use_sliding_window"] = serde_json::json!(true);
    config["sliding_window"] = serde_json::json!(8);
    config["max_window_layers"] = serde_json::json!(1);
    let dir = model_dir("sliding-none", &config.to_string());
    load_model::<B>(&dir, &Default::default()).unwrap();
}

/// Adds `lm_head.weight` = `embedding · scale` to the fixture's (tied) weights.
fn with_redundant_head(dir: &Path, scale: f32) {
    rewrite_safetensors(&dir.join("model.safetensors"), |tensors| {
        let embed = tensors
            .iter()
            .find(|t| t.0 == "model.embed_tokens.weight")
            .unwrap()
            .clone();
        let head: Vec<u8> = embed
            .3
            .chunks_exact(4)
            .flat_map(|b| (f32::from_le_bytes(b.try_into().unwrap()) * scale).to_le_bytes())
            .collect();
        tensors.push(("lm_head.weight".into(), embed.1, embed.2, head));
    });
}

#[test]
fn redundant_tied_head_is_accepted_as_transformers_does() {
    let device = Default::default();
    // An identical copy: tied, no note, transformers' logits.
    let dir = model_dir("tied-copy", &variant("v5-default"));
    with_redundant_head(&dir, 1.0);
    let loaded = load_model_with_notes::<B>(&dir, &device).unwrap();
    assert!(loaded.config.model.tie_word_embeddings && loaded.notes.is_empty());
    let (ids, t, expected) = reference("v5-default");
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [2, t]), &device);
    let logits = values(loaded.model.forward(tokens.clone(), None).logits);
    assert_close(&logits, &expected, 1e-4, "tied copy");

    // A different head: transformers 5 unties and uses it; logits scale with the head.
    let dir = model_dir("tied-diff", &variant("v5-default"));
    with_redundant_head(&dir, 2.0);
    let loaded = load_model_with_notes::<B>(&dir, &device).unwrap();
    assert!(!loaded.config.model.tie_word_embeddings);
    assert_eq!(loaded.notes.len(), 1);
    assert!(
        loaded.notes[0].contains("lm_head.weight"),
        "{}",
        loaded.notes[0]
    );
    let doubled: Vec<f32> = expected.iter().map(|x| 2.0 * x).collect();
    let logits = values(loaded.model.forward(tokens, None).logits);
    assert_close(&logits, &doubled, 2e-4, "untied head used");
}
