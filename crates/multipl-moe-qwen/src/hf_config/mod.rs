//! `config.json` of a Hugging Face Qwen2, Llama or Mistral model, and of our hybrid export
//! (docs/FORMAT.md): [`file`] mirrors the file through serde, [`convert`] turns it into the model config.

use std::path::Path;

pub mod convert;
pub mod file;

use multipl_moe_core::{ModelType, MultiplMoeConfig, RopeScaling};
use serde_json::{Map, Value, json};

use crate::error::{QwenError, Result, io_err};
use convert::FieldError;

/// The key under which an exported hybrid model stores its [`MoeConfig`].
pub const MOE_KEY: &str = "multipl_moe";

/// Reads `dir/config.json` into a model config; the MoE part is present for hybrid exports.
pub fn read_config(dir: &Path) -> Result<MultiplMoeConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    parse_config(&text, &path)
}

/// Parses the text of a `config.json` (transformers 4.x or 5.x layout, or our hybrid export);
/// `path` only names the file in errors. Every field that changes the forward pass is either
/// implemented or refused by name ([`convert`]).
pub fn parse_config(text: &str, path: &Path) -> Result<MultiplMoeConfig> {
    let bad = |field: String, reason: String| QwenError::BadConfig {
        path: path.to_path_buf(),
        field,
        reason,
    };
    let hf = file::parse(text).map_err(|(field, reason)| bad(field, reason))?;
    let config = MultiplMoeConfig::try_from(hf).map_err(|e: FieldError| bad(e.field, e.reason))?;
    // The file is named too: a value out of range is the file's. The base is checked alone
    // first, so whatever the whole config refuses after it is in the `multipl_moe` section.
    let in_file = |prefix: &str, e: multipl_moe_core::ConfigError| match e {
        multipl_moe_core::ConfigError::InvalidField {
            field,
            value,
            reason,
        } => bad(format!("{prefix}{field}"), format!("{value}: {reason}")),
    };
    config.model.validate().map_err(|e| in_file("", e))?;
    config
        .validate()
        .map_err(|e| in_file(&format!("{MOE_KEY}."), e))?;
    Ok(config)
}

/// The `config.json` text of `config`: the fields of its base architecture (`model_type`
/// `qwen2`, `llama` or `mistral`, as it was read), plus [`MOE_KEY`] for hybrid models.
pub fn config_json(config: &MultiplMoeConfig, torch_dtype: &str) -> String {
    let m = &config.model;
    let mut obj: Map<String, Value> = json!({
        "architectures": [m.model_type().architecture()],
        "model_type": m.model_type().as_str(),
        "hidden_act": "silu",
        "vocab_size": m.vocab_size,
        "hidden_size": m.hidden_size,
        "intermediate_size": m.intermediate_size,
        "num_hidden_layers": m.num_hidden_layers,
        "num_attention_heads": m.num_attention_heads,
        "num_key_value_heads": m.num_key_value_heads,
        "rope_theta": m.rope_theta,
        "rope_scaling": rope_scaling_json(m.rope_scaling.as_ref()),
        "rope_parameters": rope_parameters_json(m.rope_theta, m.rope_scaling.as_ref()),
        "rms_norm_eps": m.rms_norm_eps,
        "tie_word_embeddings": m.tie_word_embeddings,
        "max_position_embeddings": m.max_position_embeddings,
        "head_dim": m.head_dim(),
        "torch_dtype": torch_dtype,
        "dtype": torch_dtype,
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    let type_fields = match m.model_type() {
        ModelType::Qwen2 => json!({"use_sliding_window": false}),
        ModelType::Llama => json!({"attention_bias": m.qkv_bias(), "mlp_bias": false}),
        ModelType::Mistral => json!({"sliding_window": null}),
    };
    obj.extend(type_fields.as_object().cloned().unwrap_or_default());
    if let Some(moe) = &config.moe {
        obj.insert(
            MOE_KEY.into(),
            serde_json::to_value(moe).unwrap_or(Value::Null),
        );
    }
    serde_json::to_string_pretty(&Value::Object(obj)).unwrap_or_default()
}

/// transformers 4.x's `rope_scaling`: `null` for the default RoPE, else the scaling with both
/// `type` (4.x) and `rope_type` (5.x) set.
fn rope_scaling_json(scaling: Option<&RopeScaling>) -> Value {
    let Some(mut obj) = scaling.map(scaling_object) else {
        return Value::Null;
    };
    if let Some(kind) = obj.get("rope_type").cloned() {
        obj.insert("type".into(), kind);
    }
    Value::Object(obj)
}

/// transformers 5.x's `rope_parameters`: type, base and scaling in one object.
fn rope_parameters_json(theta: f64, scaling: Option<&RopeScaling>) -> Value {
    let mut obj = scaling
        .map(scaling_object)
        .unwrap_or_else(|| Map::from_iter([("rope_type".to_string(), json!("default"))]));
    obj.insert("rope_theta".into(), json!(theta));
    Value::Object(obj)
}

/// The JSON object of a scaling (its serde form: `rope_type` and the type's fields).
fn scaling_object(scaling: &RopeScaling) -> Map<String, Value> {
    serde_json::to_value(scaling)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value out of range names the file and the field as it is spelt in the file: the
    /// `multipl_moe` section's fields with the section's key.
    #[test]
    fn range_errors_name_the_file_and_the_field_in_it() {
        let path = Path::new("model/config.json");
        let field_of =
            |config: &MultiplMoeConfig| match parse_config(&config_json(config, "float32"), path) {
                Err(QwenError::BadConfig { path: p, field, .. }) => {
                    assert_eq!(p, path);
                    field
                }
                other => panic!("not a BadConfig: {other:?}"),
            };
        let mut wide = MultiplMoeConfig::tiny();
        wide.model.hidden_size = 1 << 18;
        assert_eq!(field_of(&wide), "hidden_size");
        let mut window = MultiplMoeConfig::tiny();
        if let Some(moe) = window.moe.as_mut() {
            moe.segment.window = 1 << 20;
        }
        assert_eq!(field_of(&window), "multipl_moe.segment.window");
        let mut balance = MultiplMoeConfig::tiny();
        if let Some(moe) = balance.moe.as_mut() {
            moe.balance_coef = -1.0;
        }
        assert_eq!(field_of(&balance), "multipl_moe.balance_coef");
    }
}
