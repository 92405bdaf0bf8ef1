//! `config.json` as it is on disk: a serde mirror of transformers' `Qwen2Config` in both its
//! 4.x layout (top-level `rope_theta`, `rope_scaling`, `torch_dtype`) and its 5.x layout
//! (`rope_parameters`, `dtype`, `layer_types`), plus our [`MOE_KEY`](super::MOE_KEY).
//!
//! Every field is optional here; [`super::convert`] decides what is required, what defaults,
//! and what is refused. Fields not named here do not change the forward pass
//! (`initializer_range`, `use_cache`, `bos_token_id`, `architectures`, ...) and are ignored.

use multipl_moe_core::MoeConfig;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The fields of a Qwen2 `config.json` that describe the model.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HfConfig {
    /// Must be `qwen2` when present.
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
    /// Head size; only `hidden_size / num_attention_heads` is supported.
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
    /// Window of sliding attention.
    pub sliding_window: Option<usize>,
    /// First layer of sliding attention (4.x).
    pub max_window_layers: Option<usize>,
    /// 5.x: `full_attention` or `sliding_attention` per layer; only the former is supported.
    pub layer_types: Option<Vec<String>>,
    /// Biases on q/k/v; Qwen2 has them, so only `true` is accepted.
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
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "<root>".into() } else { path };
        (field, e.into_inner().to_string())
    })
}
