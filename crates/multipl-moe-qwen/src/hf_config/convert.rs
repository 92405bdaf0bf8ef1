//! [`HfConfig`] → [`MultiplMoeConfig`]: defaults as transformers applies them, and a refusal
//! naming the field and its value for everything that would change the forward pass but is
//! not implemented. Nothing that changes the forward pass is ignored.

use multipl_moe_core::{ModelType, MultiplMoeConfig, QwenConfig, RopeScaling};
use serde_json::{Map, Value};

use super::file::HfConfig;

/// A field of `config.json` at fault, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `rope_parameters.rope_type`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn refuse<T>(field: impl Into<String>, reason: impl Into<String>) -> Result<T, FieldError> {
    Err(FieldError {
        field: field.into(),
        reason: reason.into(),
    })
}

fn required(value: Option<usize>, field: &str) -> Result<usize, FieldError> {
    value.map_or_else(|| refuse(field, "missing"), Ok)
}

/// transformers' `default_theta` of `PreTrainedConfig`.
const DEFAULT_ROPE_THETA: f64 = 10000.0;
/// `Qwen2Config.max_position_embeddings`'s default.
const DEFAULT_MAX_POSITIONS: usize = 32768;
/// `Qwen2Config.max_window_layers`'s default.
const DEFAULT_MAX_WINDOW_LAYERS: usize = 28;
/// `Qwen2Config.sliding_window`'s and `MistralConfig.sliding_window`'s default.
const DEFAULT_SLIDING_WINDOW: usize = 4096;

impl TryFrom<HfConfig> for MultiplMoeConfig {
    type Error = FieldError;

    fn try_from(hf: HfConfig) -> Result<Self, FieldError> {
        let model_type = model_type(&hf)?;
        refuse_unsupported(&hf)?;
        let vocab = required(hf.vocab_size, "vocab_size")?;
        let hidden = required(hf.hidden_size, "hidden_size")?;
        let ffn = required(hf.intermediate_size, "intermediate_size")?;
        let layers = required(hf.num_hidden_layers, "num_hidden_layers")?;
        let heads = required(hf.num_attention_heads, "num_attention_heads")?;
        match model_type {
            ModelType::Qwen2 => refuse_sliding_window(&hf, layers)?,
            ModelType::Mistral => refuse_mistral_window(&hf)?,
            // LlamaConfig has no sliding window; transformers ignores such keys.
            ModelType::Llama => {}
        }
        let max_positions = hf.max_position_embeddings.unwrap_or(DEFAULT_MAX_POSITIONS);
        let (rope_theta, rope_scaling) = rope(&hf, max_positions)?;
        let model = QwenConfig::new(
            vocab,
            hidden,
            ffn,
            layers,
            heads,
            hf.num_key_value_heads.unwrap_or(heads),
        )
        .with_rope_theta(rope_theta)
        .with_rope_scaling(rope_scaling)
        .with_rms_norm_eps(hf.rms_norm_eps.unwrap_or(1e-6))
        .with_tie_word_embeddings(hf.tie_word_embeddings.unwrap_or(false))
        .with_max_position_embeddings(max_positions)
        // transformers: `getattr(config, "head_dim", None) or hidden_size // num_heads`; kept
        // only where it differs from that, so a config reads back equal after export.
        .with_head_dim(hf.head_dim.filter(|&h| h != 0 && h * heads != hidden))
        // Qwen2 always has q/k/v biases and Mistral none: a value that agrees is dropped, one
        // that contradicts it is kept so that `validate` refuses it by name.
        .with_attention_bias(match (model_type, hf.attention_bias) {
            (ModelType::Llama, bias) => Some(bias.unwrap_or(false)),
            (ModelType::Qwen2, Some(false)) | (ModelType::Mistral, Some(true)) => hf.attention_bias,
            _ => None,
        })
        .with_model_type((model_type != ModelType::Qwen2).then_some(model_type));
        Ok(MultiplMoeConfig::new(model).with_moe(hf.multipl_moe))
    }
}

/// `model_type`: absent is `qwen2` (configs this project wrote before it read other types);
/// a type not implemented is refused with the list of those that are.
fn model_type(hf: &HfConfig) -> Result<ModelType, FieldError> {
    let Some(name) = &hf.model_type else {
        return Ok(ModelType::Qwen2);
    };
    ModelType::from_name(name).map_or_else(
        || {
            let known: Vec<&str> = ModelType::ALL.iter().map(|t| t.as_str()).collect();
            refuse(
                "model_type",
                format!(
                    "`{name}` is not implemented (implemented: {})",
                    known.join(", ")
                ),
            )
        },
        Ok,
    )
}

/// Mistral's sliding window (absent: 4096, as `MistralConfig`) is not implemented; only
/// `sliding_window: null` (Mistral 7B v0.2 and later) imports.
fn refuse_mistral_window(hf: &HfConfig) -> Result<(), FieldError> {
    match hf.sliding_window {
        Some(None) => Ok(()),
        window => refuse(
            "sliding_window",
            format!(
                "{}: sliding-window attention is not implemented (only `null`)",
                window.flatten().unwrap_or(DEFAULT_SLIDING_WINDOW)
            ),
        ),
    }
}

/// Fields whose non-default values change the forward pass in ways not implemented.
fn refuse_unsupported(hf: &HfConfig) -> Result<(), FieldError> {
    if let Some(act) = &hf.hidden_act
        && act != "silu"
        && act != "swish"
    {
        return refuse(
            "hidden_act",
            format!("`{act}` is not implemented, only `silu`"),
        );
    }
    if hf.mlp_bias == Some(true) {
        return refuse("mlp_bias", "true: FFN biases are not implemented");
    }
    if let Some(p) = hf.attention_dropout
        && p != 0.0
    {
        return refuse(
            "attention_dropout",
            format!("{p}: attention dropout is not implemented (only 0)"),
        );
    }
    if let Some(f) = hf.partial_rotary_factor
        && f != 1.0
    {
        return refuse(
            "partial_rotary_factor",
            format!("{f}: only 1.0 (rotary on the whole head) is implemented"),
        );
    }
    if hf.quantization_config.is_some() {
        return refuse(
            "quantization_config",
            "quantised checkpoints are not supported; use an f32, f16 or bf16 checkpoint",
        );
    }
    Ok(())
}

/// Sliding-window attention is refused: `layer_types` naming `sliding_attention` (5.x), or
/// `use_sliding_window: true` with some layer at or after `max_window_layers` (4.x, and how
/// transformers 5 fills `layer_types` when it is absent).
fn refuse_sliding_window(hf: &HfConfig, layers: usize) -> Result<(), FieldError> {
    if let Some(types) = &hf.layer_types {
        if types.len() != layers {
            return refuse(
                "layer_types",
                format!("{} entries for num_hidden_layers = {layers}", types.len()),
            );
        }
        for (i, t) in types.iter().enumerate() {
            match t.as_str() {
                "full_attention" => {}
                "sliding_attention" => {
                    return refuse(
                        format!("layer_types[{i}]"),
                        "`sliding_attention`: sliding-window attention is not implemented",
                    );
                }
                other => return refuse(format!("layer_types[{i}]"), format!("unknown `{other}`")),
            }
        }
    }
    if hf.use_sliding_window == Some(true) && hf.layer_types.is_none() {
        let first = hf.max_window_layers.unwrap_or(DEFAULT_MAX_WINDOW_LAYERS);
        let window = hf.sliding_window.unwrap_or(Some(DEFAULT_SLIDING_WINDOW));
        if first < layers && window.is_some() {
            return refuse(
                "use_sliding_window",
                format!(
                    "true with max_window_layers = {first} < num_hidden_layers = {layers}: \
                     sliding-window attention is not implemented"
                ),
            );
        }
    }
    Ok(())
}

/// Keys a `rope_parameters` object may hold for each `rope_type`.
const COMMON_ROPE_KEYS: [&str; 4] = ["rope_type", "type", "rope_theta", "partial_rotary_factor"];
const LLAMA3_KEYS: [&str; 4] = [
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
];
const YARN_KEYS: [&str; 8] = [
    "factor",
    "original_max_position_embeddings",
    "attention_factor",
    "beta_fast",
    "beta_slow",
    "mscale",
    "mscale_all_dim",
    "truncate",
];

/// The rotary base and scaling, resolved as transformers 5's `convert_rope_params_to_dict` +
/// `standardize_rope_params`: the 4.x `rope_scaling` or the 5.x `rope_parameters` object
/// (they must agree where both give a key), `rope_type` from `rope_type` or `type`
/// (default `default`), `rope_theta` from the object, else the top level, else 10000.
fn rope(hf: &HfConfig, max_positions: usize) -> Result<(f64, Option<RopeScaling>), FieldError> {
    let p = RopeParams {
        params: merged_rope_params(hf)?,
        name: if hf.rope_parameters.is_some() {
            "rope_parameters"
        } else {
            "rope_scaling"
        },
    };
    let theta = p
        .number("rope_theta")?
        .or(hf.rope_theta)
        .unwrap_or(DEFAULT_ROPE_THETA);
    if let Some(f) = p.number("partial_rotary_factor")?
        && f != 1.0
    {
        return refuse(
            p.field("partial_rotary_factor"),
            format!("{f}: only 1.0 is implemented"),
        );
    }
    let kind = match p.params.get("rope_type").or(p.params.get("type")) {
        None | Some(Value::Null) => "default".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return refuse(
                p.field("rope_type"),
                format!("expected a string, found {v}"),
            );
        }
    };
    let allowed: &[&str] = match kind.as_str() {
        "default" => &[],
        "linear" => &["factor"],
        "yarn" => &YARN_KEYS,
        "llama3" => &LLAMA3_KEYS,
        other => {
            return refuse(
                p.field("rope_type"),
                format!(
                    "`{other}` is not implemented (implemented: default, linear, yarn, llama3)"
                ),
            );
        }
    };
    if let Some(key) = p
        .params
        .keys()
        .find(|k| !COMMON_ROPE_KEYS.contains(&k.as_str()) && !allowed.contains(&k.as_str()))
    {
        return refuse(
            p.field(key),
            format!("not understood for rope_type `{kind}`"),
        );
    }
    let scaling = match kind.as_str() {
        "linear" => Some(RopeScaling::Linear {
            factor: p
                .number("factor")?
                .map_or_else(|| refuse(p.field("factor"), "missing"), Ok)?,
        }),
        "yarn" => Some(yarn(&p, max_positions)?),
        "llama3" => Some(llama3(&p)?),
        _ => None,
    };
    Ok((theta, scaling))
}

/// Llama 3.1's scaling: all four parameters are required, as transformers'
/// `_validate_llama3_parameters` requires them.
fn llama3(p: &RopeParams) -> Result<RopeScaling, FieldError> {
    let need = |key: &str| {
        p.number(key)?.map_or_else(
            || refuse(p.field(key), "missing (required by rope_type `llama3`)"),
            Ok,
        )
    };
    let original = need("original_max_position_embeddings")?;
    if !(original >= 1.0 && original.fract() == 0.0) {
        return refuse(
            p.field("original_max_position_embeddings"),
            format!("expected a positive integer, found {original}"),
        );
    }
    Ok(RopeScaling::Llama3 {
        factor: need("factor")?,
        low_freq_factor: need("low_freq_factor")?,
        high_freq_factor: need("high_freq_factor")?,
        original_max_position_embeddings: original as usize,
    })
}

/// The RoPE parameters of a config (`rope_parameters`, or `rope_scaling` merged in), with the
/// name of the field they came from for errors.
struct RopeParams {
    params: Map<String, Value>,
    name: &'static str,
}

impl RopeParams {
    /// `rope_parameters.key` (or `rope_scaling.key`).
    fn field(&self, key: &str) -> String {
        format!("{}.{key}", self.name)
    }

    /// A numeric parameter; absent and `null` are `None`, anything else not a number is an
    /// error naming the field.
    fn number(&self, key: &str) -> Result<Option<f64>, FieldError> {
        match self.params.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| FieldError {
                field: self.field(key),
                reason: format!("expected a number, found {v}"),
            }),
        }
    }
}

/// YaRN with transformers' defaults (`_compute_yarn_parameters`): `factor` from the two
/// context lengths, `attention_factor` from `mscale`/`mscale_all_dim`, `beta_fast` 32 and
/// `beta_slow` 1 (0 also meaning the default), `truncate` true.
fn yarn(p: &RopeParams, max_positions: usize) -> Result<RopeScaling, FieldError> {
    let original = match p.params.get("original_max_position_embeddings") {
        None | Some(Value::Null) => max_positions,
        Some(v) => v.as_u64().map_or_else(
            || {
                refuse(
                    p.field("original_max_position_embeddings"),
                    format!("expected a positive integer, found {v}"),
                )
            },
            |n| Ok(n as usize),
        )?,
    };
    let factor = p
        .number("factor")?
        .unwrap_or(max_positions as f64 / original.max(1) as f64);
    let truncate = match p.params.get("truncate") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => return refuse(p.field("truncate"), format!("expected a bool, found {v}")),
    };
    // transformers: `get("beta_fast") or 32`, so 0 also means the default.
    let or_default = |v: Option<f64>, d: f64| v.filter(|x| *x != 0.0).unwrap_or(d);
    let (mscale, mscale_all_dim) = (p.number("mscale")?, p.number("mscale_all_dim")?);
    Ok(RopeScaling::Yarn {
        factor,
        original_max_position_embeddings: original,
        attention_factor: p
            .number("attention_factor")?
            .unwrap_or_else(|| RopeScaling::yarn_attention_factor(factor, mscale, mscale_all_dim)),
        beta_fast: or_default(p.number("beta_fast")?, 32.0),
        beta_slow: or_default(p.number("beta_slow")?, 1.0),
        truncate,
    })
}

/// `rope_parameters` and `rope_scaling` together; a key both give with different values is
/// refused rather than resolved silently.
fn merged_rope_params(hf: &HfConfig) -> Result<Map<String, Value>, FieldError> {
    let mut merged = hf.rope_parameters.clone().unwrap_or_default();
    for (key, value) in hf.rope_scaling.iter().flatten() {
        match merged.get(key) {
            Some(v) if v != value && !value.is_null() => {
                return refuse(
                    format!("rope_scaling.{key}"),
                    format!("{value} contradicts rope_parameters.{key} = {v}"),
                );
            }
            Some(_) => {}
            None => {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(merged)
}
