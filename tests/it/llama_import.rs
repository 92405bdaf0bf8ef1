//! Import of the Llama family (`model_type` `llama` and `mistral`): logits and greedy
//! generation match transformers 5.25 on random Llama configs (fixtures/llama-*, made by
//! `scripts/make_fixtures.py --only llama`: GQA with head_dim != hidden/heads and an untied
//! head; MHA, tied, with q/k/v/o biases; Llama 3.1's `llama3` RoPE), export writes the
//! architecture it read, and what is not implemented is refused by name.

use std::ops::ControlFlow;
use std::path::PathBuf;

use crate::common::fixtures::{
    fixture, model_with_config, transformers_generated, transformers_reference,
};
use crate::common::{TestBackend, assert_close, values};
use burn::tensor::{Int, Tensor, TensorData};
use multipl_moe::core::{CausalLm, GenerateOptions, ModelType, Sampler, SamplingConfig};
use multipl_moe::qwen::{QwenError, SaveDtype, load_model, save_model};

type B = TestBackend;

const FIXTURES: [&str; 3] = ["llama-gqa-untied", "llama-tied-bias", "llama3-rope"];

/// A scratch directory holding `name`'s weights and `config` as config.json.
fn with_config(name: &str, tag: &str, config: &serde_json::Value) -> PathBuf {
    model_with_config(&fixture(name), &format!("llama-{tag}"), &config.to_string())
}

fn config_of(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name).join("config.json")).unwrap())
        .unwrap()
}

/// Logits of `model` on the fixture's reference tokens, and transformers'.
fn logits(model: &CausalLm<B>, name: &str) -> (Vec<f32>, Vec<f32>) {
    let (ids, t, expected) = transformers_reference(&fixture(name).join("reference.safetensors"));
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [2, t]), &Default::default());
    (values(model.forward(tokens, None).logits), expected)
}

#[test]
fn llama_logits_match_transformers() {
    for name in FIXTURES {
        let (config, model) = load_model::<B>(&fixture(name), &Default::default()).unwrap();
        assert_eq!(config.model.model_type(), ModelType::Llama, "{name}");
        let (ours, expected) = logits(&model, name);
        assert_close(&ours, &expected, 1e-4, &format!("{name} vs transformers"));
    }
    // The fixtures cover what they claim.
    let (gqa, _) = load_model::<B>(&fixture(FIXTURES[0]), &Default::default()).unwrap();
    let m = &gqa.model;
    assert!(m.head_dim() * m.num_attention_heads != m.hidden_size && !m.tie_word_embeddings);
    assert!(!m.qkv_bias() && !m.o_proj_bias());
    let (bias, _) = load_model::<B>(&fixture(FIXTURES[1]), &Default::default()).unwrap();
    assert!(bias.model.qkv_bias() && bias.model.o_proj_bias() && bias.model.tie_word_embeddings);
    let (rope, _) = load_model::<B>(&fixture(FIXTURES[2]), &Default::default()).unwrap();
    assert!(matches!(
        rope.model.rope_scaling,
        Some(multipl_moe::core::RopeScaling::Llama3 { .. })
    ));
}

#[test]
fn llama_greedy_generation_matches_transformers() {
    for name in FIXTURES {
        let (_, model) = load_model::<B>(&fixture(name), &Default::default()).unwrap();
        let expected = transformers_generated(&fixture(name).join("reference.safetensors"));
        let (prompt, new) = expected.split_at(8);
        let options = GenerateOptions {
            max_new_tokens: new.len(),
            stop_ids: vec![],
            use_cache: true,
        };
        let mut sampler = Sampler::new(SamplingConfig::new()).unwrap();
        let ours = model
            .generate(
                prompt,
                &options,
                &mut sampler,
                |_| ControlFlow::Continue(()),
            )
            .unwrap()
            .tokens;
        assert_eq!(ours, new, "{name}: greedy tokens vs transformers");
    }
}

/// `mistral` with `sliding_window: null` is the Llama decoder without biases: the same weights
/// give transformers' Llama logits. A window (absent means MistralConfig's 4096) is refused by
/// name, as are biases, which Mistral does not have.
#[test]
fn mistral_without_a_window_imports_and_a_window_is_refused() {
    let name = "llama-gqa-untied";
    let mut config = config_of(name);
    config["model_type"] = "mistral".into();
    config["architectures"] = serde_json::json!(["MistralForCausalLM"]);
    config["sliding_window"] = serde_json::Value::Null;
    let dir = with_config(name, "mistral", &config);
    let (cfg, model) = load_model::<B>(&dir, &Default::default()).unwrap();
    assert_eq!(cfg.model.model_type(), ModelType::Mistral);
    let (ours, expected) = logits(&model, name);
    assert_close(&ours, &expected, 1e-4, "mistral vs transformers' llama");

    for (tag, edit) in [
        ("window", serde_json::json!({"sliding_window": 4096})),
        ("absent", serde_json::json!({"sliding_window": "remove"})),
        ("bias", serde_json::json!({"attention_bias": true})),
    ] {
        let mut bad = config.clone();
        for (key, value) in edit.as_object().unwrap() {
            if value == "remove" {
                bad.as_object_mut().unwrap().remove(key);
            } else {
                bad[key] = value.clone();
            }
        }
        let dir = with_config(name, &format!("mistral-{tag}"), &bad);
        let err = load_model::<B>(&dir, &Default::default()).unwrap_err();
        let field = if tag == "bias" {
            "attention_bias"
        } else {
            "sliding_window"
        };
        assert!(
            matches!(&err, QwenError::BadConfig { field: f, .. } if f == field),
            "{tag}: {err}"
        );
    }
}

/// Unimplemented types and fields are refused in one line naming the field (and, for
/// `model_type`, the implemented list); biases in the file that the config does not have are
/// unused tensors named by key.
#[test]
fn unimplemented_llama_variants_are_refused_by_name() {
    let name = "llama-gqa-untied";
    let cases: [(&str, serde_json::Value, &str); 5] = [
        (
            "gemma",
            serde_json::json!({"model_type": "gemma"}),
            "model_type",
        ),
        (
            "qwen2moe",
            serde_json::json!({"model_type": "qwen2_moe"}),
            "model_type",
        ),
        (
            "mlp-bias",
            serde_json::json!({"mlp_bias": true}),
            "mlp_bias",
        ),
        (
            "dynamic",
            serde_json::json!({"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}}),
            "rope_parameters.rope_type",
        ),
        (
            "llama3-missing",
            serde_json::json!({"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "rope_theta": 1e4}}),
            "rope_parameters.",
        ),
    ];
    for (tag, edit, field) in cases {
        let mut config = config_of(name);
        for (key, value) in edit.as_object().unwrap() {
            config[key] = value.clone();
        }
        let dir = with_config(name, tag, &config);
        let err = load_model::<B>(&dir, &Default::default()).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, QwenError::BadConfig { field: f, .. } if f.starts_with(field)),
            "{tag}: {text}"
        );
        assert!(!text.contains('\n'), "{tag}: one line: {text}");
        if field == "model_type" {
            assert!(text.contains("qwen2, llama, mistral"), "{tag}: {text}");
        }
    }
    // The biased fixture's weights under a config without biases: the biases are unused.
    let mut config = config_of("llama-tied-bias");
    config["attention_bias"] = false.into();
    let dir = with_config("llama-tied-bias", "unused-bias", &config);
    let err = load_model::<B>(&dir, &Default::default()).unwrap_err();
    assert!(
        matches!(err, QwenError::UnusedKeys { .. }) && err.to_string().contains("_proj.bias"),
        "{err}"
    );
}

/// Export writes the architecture it read: a Llama model saved and loaded again is a Llama
/// with the same biases, head size and RoPE, and the same logits.
#[test]
fn export_keeps_the_llama_architecture() {
    for name in FIXTURES {
        let (config, model) = load_model::<B>(&fixture(name), &Default::default()).unwrap();
        let out = std::env::temp_dir().join(format!(
            "multipl-moe-llama-export-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&out);
        save_model(&model, &config, &out, SaveDtype::F32).unwrap();
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(written["model_type"], "llama", "{name}");
        assert_eq!(written["architectures"][0], "LlamaForCausalLM", "{name}");
        assert_eq!(written["attention_bias"], config.model.qkv_bias(), "{name}");
        assert_eq!(written["head_dim"], config.model.head_dim(), "{name}");
        let (again, reloaded) = load_model::<B>(&out, &Default::default()).unwrap();
        assert_eq!(again, config, "{name}: config round trip");
        let (ours, expected) = logits(&reloaded, name);
        assert_close(&ours, &expected, 1e-4, &format!("{name} exported"));
        std::fs::remove_dir_all(&out).unwrap();
    }
}
