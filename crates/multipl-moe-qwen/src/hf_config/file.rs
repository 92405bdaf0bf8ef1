//! `config.json` as it is on disk: a serde mirror of transformers' `Qwen2Config`,
//! `LlamaConfig` and `MistralConfig` in both their 4.x layout (top-level `rope_theta`,
//! `rope_scaling`, `torch_dtype`) and their 5.x layout (`rope_parameters`, `dtype`,
//! `layer_types`), plus our [`MOE_KEY`](super::MOE_KEY).
//!
//! Every field is optional here; [`super::convert`] decides what is required, what defaults,
//! and what is refused. Fields not named here do not change the forward pass
//! (`initializer_range`, `use_cache`, `bos_token_id`, `architectures`, ...) and are ignored.
//! Inside our own `multipl_moe` section every key changes the model, so an unknown one (a
//! typo such as `max_experts_per_segmnt`) is refused by name.

use multipl_moe_core::MoeConfig;
use serde::Deserialize;
use serde_json::{Map, Value};

/// A field that may be absent (`None`), `null` (`Some(None)`) or set: Mistral's
/// `sliding_window` defaults to 4096 when absent and means "none" when `null`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The fields of a Qwen2, Llama or Mistral `config.json` that describe the model.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HfConfig {
    /// `qwen2` (when absent), `llama` or `mistral`.
    pub model_type: Option<String>,
    /// Vocabulary size (required).
    pub vocab_size: Option<usize>,
    /// Model width (required).
    pub hidden_size: Option<usize>,
    /// FFN width (required).
    pub intermediate_size: Option<usize>,
    /// Decoder layers (required).
    pub num_hidden_layers: Option<usize>,
    /// Query heads (required).
    pub num_attention_heads: Option<usize>,
    /// Key/value heads; defaults to `num_attention_heads`.
    pub num_key_value_heads: Option<usize>,
    /// Head size; `null`, 0 or absent is `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    /// FFN activation; only `silu` is supported.
    pub hidden_act: Option<String>,
    /// Positions of the rotary tables (default 32768).
    pub max_position_embeddings: Option<usize>,
    /// RMSNorm epsilon (default 1e-6).
    pub rms_norm_eps: Option<f64>,
    /// 4.x: the rotary base (default 10000).
    pub rope_theta: Option<f64>,
    /// 4.x: the rotary scaling (`{"type"|"rope_type": ..., "factor": ...}`).
    pub rope_scaling: Option<Map<String, Value>>,
    /// 5.x: rotary type, base and scaling in one object.
    pub rope_parameters: Option<Map<String, Value>>,
    /// Rotary embedding on a fraction of each head; only 1.0 is supported.
    pub partial_rotary_factor: Option<f64>,
    /// Whether the LM head is the embedding (default false).
    pub tie_word_embeddings: Option<bool>,
    /// Sliding-window attention on layers `>= max_window_layers`; not supported.
    pub use_sliding_window: Option<bool>,
    /// Window of sliding attention: absent, `null` or a size.
    #[serde(default, deserialize_with = "present")]
    pub sliding_window: Option<Option<usize>>,
    /// First layer of sliding attention (4.x).
    pub max_window_layers: Option<usize>,
    /// 5.x: `full_attention` or `sliding_attention` per layer; only the former is supported.
    pub layer_types: Option<Vec<String>>,
    /// Llama: biases on q/k/v/o (default false). Qwen2 always has q/k/v biases and Mistral
    /// never any, so there only the matching value is accepted.
    pub attention_bias: Option<bool>,
    /// Biases on the FFN projections; only `false` is supported.
    pub mlp_bias: Option<bool>,
    /// Dropout on attention probabilities in training; only 0 is supported.
    pub attention_dropout: Option<f64>,
    /// A quantised checkpoint; not supported.
    pub quantization_config: Option<Value>,
    /// 4.x: the dtype of the stored weights.
    pub torch_dtype: Option<String>,
    /// 5.x: the dtype of the stored weights.
    pub dtype: Option<String>,
    /// Our hybrid MoE (docs/FORMAT.md), absent for a dense model.
    pub multipl_moe: Option<MoeConfig>,
}

/// Parses `text` into an [`HfConfig`]; on failure, the dotted path of the field at fault and
/// serde's reason.
pub fn parse(text: &str) -> Result<HfConfig, (String, String)> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let config: HfConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "<root>".into() } else { path };
        (field, e.into_inner().to_string())
    })?;
    if config.multipl_moe.is_some() {
        refuse_unknown_moe_keys(text)?;
    }
    Ok(config)
}

/// Keys that files of earlier versions carry and that change nothing (docs/FORMAT.md): the
/// token level's `dispatch_block`, from before the dispatch rewrite.
const LEGACY_MOE_KEYS: [&str; 1] = ["token.dispatch_block"];

/// The first key of the `multipl_moe` section that [`MoeConfig`] does not know (bar
/// [`LEGACY_MOE_KEYS`]), as `(multipl_moe.dotted.key, reason)`.
fn refuse_unknown_moe_keys(text: &str) -> Result<(), (String, String)> {
    let root: Value = serde_json::from_str(text).map_err(|e| ("<root>".into(), e.to_string()))?;
    let Some(section) = root.get(super::MOE_KEY) else {
        return Ok(());
    };
    let mut unknown = Vec::new();
    // serde_ignored writes `?` for an `Option` layer; keys do not have one.
    let parsed: Result<MoeConfig, _> = serde_ignored::deserialize(section, |p| {
        let key = p.to_string();
        let parts: Vec<&str> = key.split('.').filter(|s| *s != "?").collect();
        unknown.push(parts.join("."));
    });
    parsed.map_err(|e| (super::MOE_KEY.into(), e.to_string()))?;
    match unknown
        .iter()
        .find(|key| !LEGACY_MOE_KEYS.contains(&key.as_str()))
    {
        None => Ok(()),
        Some(key) => Err((
            format!("{}.{key}", super::MOE_KEY),
            "unknown key (every key of this section changes the model, so none is ignored)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A typo inside `multipl_moe` is refused by its dotted key; unknown top-level keys (a
    /// Hugging Face config has many that do not change the model) are not.
    #[test]
    fn unknown_keys_of_the_moe_section_are_refused() {
        let moe = serde_json::to_value(MoeConfig::tiny()).unwrap();
        let config = |moe: &Value| {
            serde_json::json!({"vocab_size": 8, "use_cache": true, "multipl_moe": moe}).to_string()
        };
        parse(&config(&moe)).expect("the tiny preset");
        let mut typo = moe.clone();
        typo["segment"]["max_experts_per_segmnt"] = 1.into();
        let (field, reason) = parse(&config(&typo)).unwrap_err();
        assert_eq!(field, "multipl_moe.segment.max_experts_per_segmnt");
        assert!(reason.contains("unknown key"), "{reason}");
        let mut legacy = moe.clone();
        legacy["token"]["dispatch_block"] = 256.into();
        parse(&config(&legacy)).expect("a key of earlier versions that changes nothing");
        let mut top = moe;
        top["hybrid_layer"] = serde_json::json!([0]);
        let (field, _) = parse(&config(&top)).unwrap_err();
        assert_eq!(field, "multipl_moe.hybrid_layer");
    }
}
