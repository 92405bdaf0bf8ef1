//! `config.json` of a Hugging Face Qwen2 model, and of our hybrid export (docs/FORMAT.md).

use std::path::Path;

use multipl_moe_core::{MoeConfig, MultiplMoeConfig, QwenConfig};
use serde_json::{Map, Value, json};

use crate::error::{QwenError, Result, io_err};

/// The key under which an exported hybrid model stores its [`MoeConfig`].
pub const MOE_KEY: &str = "multipl_moe";

/// Reads `dir/config.json` into a model config; the MoE part is present for hybrid exports.
pub fn read_config(dir: &Path) -> Result<MultiplMoeConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    parse_config(&text, &path)
}

/// Parses the text of a `config.json`; `path` only names the file in errors.
pub fn parse_config(text: &str, path: &Path) -> Result<MultiplMoeConfig> {
    let bad = |field: &str, reason: String| QwenError::BadConfig {
        path: path.to_path_buf(),
        field: field.to_string(),
        reason,
    };
    let json: Value =
        serde_json::from_str(text).map_err(|e| bad("<root>", format!("invalid JSON: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| bad("<root>", "not a JSON object".into()))?;
    let usize_field = |name: &str| -> Result<Option<usize>> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| bad(name, format!("expected a non-negative integer, found {v}"))),
        }
    };
    let required = |name: &str| -> Result<usize> {
        usize_field(name)?.ok_or_else(|| bad(name, "missing".into()))
    };
    let f64_field = |name: &str, default: f64| -> Result<f64> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| bad(name, format!("expected a number, found {v}"))),
        }
    };
    if let Some(mt) = obj.get("model_type").and_then(Value::as_str)
        && mt != "qwen2"
    {
        return Err(bad("model_type", format!("`{mt}` is not `qwen2`")));
    }
    if let Some(act) = obj.get("hidden_act").and_then(Value::as_str)
        && act != "silu"
    {
        return Err(bad(
            "hidden_act",
            format!("`{act}` unsupported, only `silu`"),
        ));
    }
    if obj.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
        return Err(bad(
            "use_sliding_window",
            "sliding-window attention is not supported".into(),
        ));
    }
    let heads = required("num_attention_heads")?;
    let hidden = required("hidden_size")?;
    let model = QwenConfig::new(
        required("vocab_size")?,
        hidden,
        required("intermediate_size")?,
        required("num_hidden_layers")?,
        heads,
        usize_field("num_key_value_heads")?.unwrap_or(heads),
    )
    .with_rope_theta(f64_field("rope_theta", 10000.0)?)
    .with_rms_norm_eps(f64_field("rms_norm_eps", 1e-6)?)
    .with_tie_word_embeddings(
        obj.get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    )
    .with_max_position_embeddings(usize_field("max_position_embeddings")?.unwrap_or(32768));
    if let Some(head_dim) = usize_field("head_dim")?
        && heads > 0
        && head_dim * heads != hidden
    {
        return Err(bad(
            "head_dim",
            format!("{head_dim} × num_attention_heads {heads} != hidden_size {hidden}"),
        ));
    }
    let moe = match obj.get(MOE_KEY) {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value::<MoeConfig>(v.clone())
                .map_err(|e| bad(MOE_KEY, e.to_string()))?,
        ),
    };
    let config = MultiplMoeConfig::new(model).with_moe(moe);
    config.validate()?;
    Ok(config)
}

/// The `config.json` text of `config`: the Qwen2 fields, plus [`MOE_KEY`] for hybrid models.
pub fn config_json(config: &MultiplMoeConfig, torch_dtype: &str) -> String {
    let m = &config.model;
    let mut obj: Map<String, Value> = json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_act": "silu",
        "vocab_size": m.vocab_size,
        "hidden_size": m.hidden_size,
        "intermediate_size": m.intermediate_size,
        "num_hidden_layers": m.num_hidden_layers,
        "num_attention_heads": m.num_attention_heads,
        "num_key_value_heads": m.num_key_value_heads,
        "rope_theta": m.rope_theta,
        "rms_norm_eps": m.rms_norm_eps,
        "tie_word_embeddings": m.tie_word_embeddings,
        "max_position_embeddings": m.max_position_embeddings,
        "use_sliding_window": false,
        "torch_dtype": torch_dtype,
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    if let Some(moe) = &config.moe {
        obj.insert(
            MOE_KEY.into(),
            serde_json::to_value(moe).unwrap_or(Value::Null),
        );
    }
    serde_json::to_string_pretty(&Value::Object(obj)).unwrap_or_default()
}
