//! Model and MoE configurations (SPEC §1–§5), with presets and validation.

use crate::error::ConfigError;
use crate::rope::RopeScaling;
use burn::config::Config;

/// Upper bounds of [`QwenConfig`]'s sizes, each well above the largest published model's
/// (vocabularies of ~256 k, widths of ~16 k, FFNs of ~53 k, ~126 layers, contexts of 10 M).
pub const MAX_SIZES: [(&str, usize); 7] = [
    ("vocab_size", 1 << 24),
    ("hidden_size", 1 << 17),
    ("intermediate_size", 1 << 20),
    ("num_hidden_layers", 1 << 12),
    ("num_attention_heads", 1 << 12),
    ("num_key_value_heads", 1 << 12),
    ("max_position_embeddings", 1 << 26),
];

/// Upper bound of a head's size `hidden_size / num_attention_heads` (published models: ≤ 256).
pub const MAX_HEAD_DIM: usize = 1024;

/// Upper bound of `token.num_experts` and `segment.num_experts` (published MoEs: ≤ 256).
pub const MAX_EXPERTS: usize = 4096;

/// The Hugging Face decoder family a model was read from (`config.json`'s `model_type`). The
/// forward pass depends only on the fields it implies ([`QwenConfig::qkv_bias`],
/// [`QwenConfig::o_proj_bias`], [`QwenConfig::head_dim`]); the export writes it back, so an
/// upcycled Llama stays a Llama for transformers (docs/FORMAT.md).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ModelType {
    /// `qwen2` (Qwen1.5, Qwen2, Qwen2.5): q/k/v projections with biases.
    Qwen2,
    /// `llama` (Llama 2/3, TinyLlama, SmolLM, SmolLM2, CodeLlama): biases per `attention_bias`.
    Llama,
    /// `mistral` without a sliding window: the Llama decoder without biases.
    Mistral,
}

impl ModelType {
    /// Every implemented `model_type`, as `config.json` spells it.
    pub const ALL: [ModelType; 3] = [Self::Qwen2, Self::Llama, Self::Mistral];

    /// `config.json`'s `model_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qwen2 => "qwen2",
            Self::Llama => "llama",
            Self::Mistral => "mistral",
        }
    }

    /// The transformers class (`config.json`'s `architectures`).
    pub fn architecture(self) -> &'static str {
        match self {
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Llama => "LlamaForCausalLM",
            Self::Mistral => "MistralForCausalLM",
        }
    }

    /// The type named `name` in `config.json`, if implemented.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// The dense decoder (SPEC §1): Qwen2, or the Llama family that differs from it only in
/// biases and head size ([`ModelType`]). Field names are those of Hugging Face's
/// `config.json` where it has them.
#[derive(Config, Debug, PartialEq)]
pub struct QwenConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width `d`.
    pub hidden_size: usize,
    /// Width of the SwiGLU FFN.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention).
    pub num_key_value_heads: usize,
    /// Rotary base.
    #[config(default = 10000.0)]
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    #[config(default = 1e-6)]
    pub rms_norm_eps: f64,
    /// Whether the LM head reuses the embedding matrix.
    #[config(default = false)]
    pub tie_word_embeddings: bool,
    /// Positions the precomputed rotary tables cover; also the longest prompt plus
    /// generation of [`crate::CausalLm::generate`]. A forward pass accepts any length, as
    /// transformers does.
    #[config(default = 32768)]
    pub max_position_embeddings: usize,
    /// Rotary frequency scaling (`linear` or `yarn`); `None` is transformers' `default`.
    #[config(default = "None")]
    pub rope_scaling: Option<RopeScaling>,
    /// Size `h` of one attention head; `None` is `hidden_size / num_attention_heads`. Llama and
    /// Mistral configs may set another (then `H·h` need not equal `hidden_size`).
    #[config(default = "None")]
    pub head_dim: Option<usize>,
    /// Llama's `attention_bias`: biases on all four attention projections (`None`: the type's
    /// default, which for Qwen2 is q/k/v biases and none on o_proj, and for Llama and Mistral
    /// no biases). Qwen2 with `false` and Mistral with `true` are refused by
    /// [`QwenConfig::validate`]: transformers builds neither.
    #[config(default = "None")]
    pub attention_bias: Option<bool>,
    /// The architecture read from `config.json` and written back on export; `None` is
    /// `qwen2` (so configs written before other types existed still read).
    #[config(default = "None")]
    pub model_type: Option<ModelType>,
}

impl QwenConfig {
    /// Qwen1.5-1.8B, the paper's base model (SPEC §1).
    pub fn qwen1_5_1_8b() -> Self {
        Self::new(151936, 2048, 5504, 24, 16, 16)
            .with_rope_theta(1e6)
            .with_max_position_embeddings(32768)
    }

    /// Qwen1.5-0.5B.
    pub fn qwen1_5_0_5b() -> Self {
        Self::new(151936, 1024, 2816, 24, 16, 16)
            .with_rope_theta(1e6)
            .with_tie_word_embeddings(true)
    }

    /// A tiny model for tests and the demo: 2 layers, width 64, GQA 4/2.
    pub fn tiny() -> Self {
        Self::new(512, 64, 128, 2, 4, 2)
            .with_rope_theta(1e4)
            .with_max_position_embeddings(2048)
    }

    /// SmolLM2-135M (Llama architecture): 30 narrow layers, GQA 9/3, tied embeddings.
    pub fn smollm2_135m() -> Self {
        Self::new(49152, 576, 1536, 30, 9, 3)
            .with_rope_theta(1e5)
            .with_rms_norm_eps(1e-5)
            .with_tie_word_embeddings(true)
            .with_max_position_embeddings(8192)
            .with_attention_bias(Some(false))
            .with_model_type(Some(ModelType::Llama))
    }

    /// The architecture: the `model_type` field, `None` being Qwen2.
    pub fn model_type(&self) -> ModelType {
        self.model_type.unwrap_or(ModelType::Qwen2)
    }

    /// Whether q/k/v have biases: always for Qwen2, per `attention_bias` for Llama.
    pub fn qkv_bias(&self) -> bool {
        match self.model_type() {
            ModelType::Qwen2 => true,
            ModelType::Llama => self.attention_bias.unwrap_or(false),
            ModelType::Mistral => false,
        }
    }

    /// Whether o_proj has a bias: Llama with `attention_bias: true`.
    pub fn o_proj_bias(&self) -> bool {
        self.model_type() == ModelType::Llama && self.attention_bias == Some(true)
    }

    /// Size `h` of one attention head: `head_dim`, else `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Rejects configs that cannot build a model; the error names the field. Sizes are
    /// bounded above by [`MAX_SIZES`] (beyond the largest published models), so that a
    /// corrupt or hostile `config.json` gets an error instead of an allocation that aborts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // The sizes in the order of `MAX_SIZES`: each positive and within its bound.
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        for ((field, value), (bounded, limit)) in sizes.into_iter().zip(MAX_SIZES) {
            debug_assert_eq!(field, bounded, "MAX_SIZES lists the sizes in this order");
            if value == 0 {
                return Err(ConfigError::field(field, value, "must be positive"));
            }
            if value > limit {
                return Err(ConfigError::field(
                    field,
                    value,
                    format!("must be at most {limit}"),
                ));
            }
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(ConfigError::field(
                "num_attention_heads",
                self.num_attention_heads,
                format!("must divide hidden_size = {}", self.hidden_size),
            ));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(ConfigError::field(
                "num_key_value_heads",
                self.num_key_value_heads,
                format!(
                    "must divide num_attention_heads = {}",
                    self.num_attention_heads
                ),
            ));
        }
        // An explicit head_dim is its own field; the derived one is num_attention_heads'.
        let (field, value, what) = match self.head_dim {
            Some(h) => ("head_dim", h, "head_dim"),
            None => (
                "num_attention_heads",
                self.num_attention_heads,
                "head_dim = hidden_size / num_attention_heads",
            ),
        };
        let h = self.head_dim();
        if h == 0 || h > MAX_HEAD_DIM {
            return Err(ConfigError::field(
                field,
                value,
                format!("{what} = {h} must be in 1..={MAX_HEAD_DIM}"),
            ));
        }
        if !h.is_multiple_of(2) {
            return Err(ConfigError::field(
                field,
                value,
                format!("{what} = {h} must be even for rotary embeddings"),
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(ConfigError::field(
                "rope_theta",
                self.rope_theta,
                "must be finite and > 0",
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(ConfigError::field(
                "rms_norm_eps",
                self.rms_norm_eps,
                "must be finite and > 0",
            ));
        }
        if let Some(scaling) = &self.rope_scaling {
            scaling.validate()?;
        }
        match (self.model_type(), self.attention_bias) {
            (ModelType::Qwen2, Some(false)) => Err(ConfigError::field(
                "attention_bias",
                false,
                "Qwen2 attention has q/k/v biases; a model without them is `llama`",
            )),
            (ModelType::Mistral, Some(true)) => Err(ConfigError::field(
                "attention_bias",
                true,
                "Mistral attention has no biases; a model with them is `llama`",
            )),
            _ => Ok(()),
        }
    }
}

/// How a segment's tokens are pooled into the vector its router sees (SPEC §3).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the window's real tokens (the paper).
    Mean,
    /// Element-wise max over the window's real tokens (the released code).
    Max,
}

/// The scale γ applied to each chosen segment expert's output (SPEC §3).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum GateScale {
    /// γ = 1 (the paper).
    One,
    /// γ = 1/a, `a` the window length (the released code).
    InverseWindow,
}

/// How segments are routed to segment experts (SPEC §3, §6).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum SegmentRouting {
    /// Expert choice over all `V = B·P` segments of the batch, routed by each window's own
    /// pooled tokens. Outputs at position `t` can depend on tokens after `t`.
    Paper,
    /// Causal: every segment picks its own top experts (no competition between segments),
    /// routed by the pooled previous window (window 0 by its first token). Outputs at `t`
    /// depend on no token after `t`. See [`crate::segment_moe`] for the costs.
    Causal,
}

/// Token-level MoE (SPEC §2).
#[derive(Config, Debug, PartialEq)]
pub struct TokenMoeConfig {
    /// `N_t`: number of token experts, the shared one included.
    #[config(default = 6)]
    pub num_experts: usize,
    /// `K`: experts per token, the shared one included.
    #[config(default = 2)]
    pub top_k: usize,
    /// Index (in `0..N_t`) of the shared expert among the router's outputs.
    #[config(default = 0)]
    pub shared_expert: usize,
}

/// Segment-level MoE (SPEC §3).
#[derive(Config, Debug, PartialEq)]
pub struct SegmentMoeConfig {
    /// `N_s`: number of segment experts.
    #[config(default = 6)]
    pub num_experts: usize,
    /// `a`: window length in tokens.
    #[config(default = 64)]
    pub window: usize,
    /// `c`: capacity factor; each expert takes `clamp(floor(V·c/N_s), 1, V)` segments.
    /// In causal mode every segment takes `clamp(round(c), 1, N_s)` experts.
    #[config(default = 1.0)]
    pub capacity_factor: f64,
    /// Pooling of a window for routing.
    #[config(default = "Pooling::Mean")]
    pub pooling: Pooling,
    /// Scale γ of the expert outputs.
    #[config(default = "GateScale::One")]
    pub gate_scale: GateScale,
    /// Optional cap on how many experts may take one segment (released code: 4, greedy in
    /// expert order), in every mode (docs/FORMAT.md, "the cap rule").
    #[config(default = "None")]
    pub max_experts_per_segment: Option<usize>,
    /// Paper (expert choice) or causal routing.
    #[config(default = "SegmentRouting::Paper")]
    pub routing: SegmentRouting,
}

/// The hybrid MoE: both levels, their fusion, where they go, and the balance loss (SPEC §2–§5).
#[derive(Config, Debug, PartialEq)]
pub struct MoeConfig {
    /// Token-level MoE.
    pub token: TokenMoeConfig,
    /// Segment-level MoE.
    pub segment: SegmentMoeConfig,
    /// `λ_tok` of the fusion `λ_tok·h_tok + λ_seg·y_seg`.
    #[config(default = 0.7)]
    pub lambda_token: f64,
    /// `λ_seg` of the fusion.
    #[config(default = 0.3)]
    pub lambda_segment: f64,
    /// Indices of the layers whose FFN becomes hybrid; `None` means every layer.
    #[config(default = "None")]
    pub hybrid_layers: Option<Vec<usize>>,
    /// `α`: weight of the load-balance loss in `L = L_NTP + α·L_bal`.
    #[config(default = 0.01)]
    pub balance_coef: f64,
    /// Standard deviation of the (normal, zero-mean) router initialisation (SPEC §5: small).
    #[config(default = 0.02)]
    pub router_init_std: f64,
}

impl MoeConfig {
    /// The paper's form: SPEC defaults with mean pooling and γ = 1, no per-segment cap.
    pub fn paper() -> Self {
        Self::new(TokenMoeConfig::new(), SegmentMoeConfig::new())
    }

    /// The released Megatron code: max pooling, γ = 1/a, at most 4 experts per segment.
    pub fn released_code() -> Self {
        Self::new(
            TokenMoeConfig::new(),
            SegmentMoeConfig::new()
                .with_pooling(Pooling::Max)
                .with_gate_scale(GateScale::InverseWindow)
                .with_max_experts_per_segment(Some(4)),
        )
    }

    /// A small config for tests and the demo: `N_t = 4, K = 2, N_s = 4, a = 8`.
    pub fn tiny() -> Self {
        Self::new(
            TokenMoeConfig::new().with_num_experts(4),
            SegmentMoeConfig::new().with_num_experts(4).with_window(8),
        )
    }

    /// Whether layer `layer` carries the hybrid MoE.
    pub fn is_hybrid(&self, layer: usize) -> bool {
        self.hybrid_layers
            .as_ref()
            .is_none_or(|layers| layers.contains(&layer))
    }

    /// Rejects impossible MoE configs; `num_layers` bounds `hybrid_layers`.
    pub fn validate(&self, num_layers: usize) -> Result<(), ConfigError> {
        let t = &self.token;
        if t.num_experts < 2 {
            return Err(ConfigError::field(
                "token.num_experts",
                t.num_experts,
                "needs the shared expert plus at least one routed expert",
            ));
        }
        if t.top_k < 2 || t.top_k > t.num_experts {
            return Err(ConfigError::field(
                "token.top_k",
                t.top_k,
                format!(
                    "K counts the shared expert and must lie in 2..={} (token.num_experts)",
                    t.num_experts
                ),
            ));
        }
        if t.shared_expert >= t.num_experts {
            return Err(ConfigError::field(
                "token.shared_expert",
                t.shared_expert,
                format!("must be < token.num_experts = {}", t.num_experts),
            ));
        }
        let s = &self.segment;
        for (field, value) in [
            ("token.num_experts", t.num_experts),
            ("segment.num_experts", s.num_experts),
        ] {
            if value > MAX_EXPERTS {
                return Err(ConfigError::field(
                    field,
                    value,
                    format!("must be at most {MAX_EXPERTS}"),
                ));
            }
        }
        if s.num_experts == 0 {
            return Err(ConfigError::field("segment.num_experts", 0, "must be > 0"));
        }
        if s.window == 0 {
            return Err(ConfigError::field("segment.window", 0, "must be > 0"));
        }
        if !(s.capacity_factor.is_finite() && s.capacity_factor > 0.0) {
            return Err(ConfigError::field(
                "segment.capacity_factor",
                s.capacity_factor,
                "must be finite and > 0",
            ));
        }
        if s.max_experts_per_segment == Some(0) {
            return Err(ConfigError::field(
                "segment.max_experts_per_segment",
                0,
                "must be > 0 when set",
            ));
        }
        for (field, value) in [
            ("lambda_token", self.lambda_token),
            ("lambda_segment", self.lambda_segment),
            ("balance_coef", self.balance_coef),
            ("router_init_std", self.router_init_std),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ConfigError::field(field, value, "must be finite and >= 0"));
            }
        }
        if let Some(layers) = &self.hybrid_layers
            && let Some(bad) = layers.iter().find(|&&l| l >= num_layers)
        {
            return Err(ConfigError::field(
                "hybrid_layers",
                bad,
                format!("the model has {num_layers} layers"),
            ));
        }
        Ok(())
    }
}

/// A whole MultiPL-MoE model: the dense base plus, optionally, the hybrid MoE.
#[derive(Config, Debug, PartialEq)]
pub struct MultiplMoeConfig {
    /// The dense Qwen2 base.
    pub model: QwenConfig,
    /// The hybrid MoE; `None` keeps every FFN dense.
    #[config(default = "None")]
    pub moe: Option<MoeConfig>,
}

impl MultiplMoeConfig {
    /// Tiny model with the tiny hybrid MoE on every layer.
    pub fn tiny() -> Self {
        Self::new(QwenConfig::tiny()).with_moe(Some(MoeConfig::tiny()))
    }

    /// Validates the base and the MoE config.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.model.validate()?;
        if let Some(moe) = &self.moe {
            moe.validate(self.model.num_hidden_layers)?;
            if moe.segment.window > self.model.max_position_embeddings {
                return Err(ConfigError::field(
                    "segment.window",
                    moe.segment.window,
                    format!(
                        "a window longer than the context (max_position_embeddings = {}) never fills",
                        self.model.max_position_embeddings
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_field(cfg: &MultiplMoeConfig) -> String {
        match cfg.validate() {
            Ok(()) => panic!("accepted: {cfg:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Sizes past the bounds are refused by name before anything is allocated; the bounds
    /// themselves are accepted.
    #[test]
    fn oversized_configs_are_refused_by_name() {
        let base = MultiplMoeConfig::tiny();
        base.validate().expect("the tiny preset");
        for (field, limit) in MAX_SIZES {
            let mut cfg = base.clone();
            let m = &mut cfg.model;
            let slot = match field {
                "vocab_size" => &mut m.vocab_size,
                "hidden_size" => &mut m.hidden_size,
                "intermediate_size" => &mut m.intermediate_size,
                "num_hidden_layers" => &mut m.num_hidden_layers,
                "num_attention_heads" => &mut m.num_attention_heads,
                "num_key_value_heads" => &mut m.num_key_value_heads,
                "max_position_embeddings" => &mut m.max_position_embeddings,
                other => panic!("unknown field {other}"),
            };
            *slot = limit + 1;
            let err = refused_field(&cfg);
            assert!(err.contains(field) && err.contains("at most"), "{err}");
        }
        let mut long = base.clone();
        long.model.max_position_embeddings = 1 << 26;
        long.validate()
            .expect("a 64 M context is within the bounds");

        let mut wide_heads = base.clone();
        wide_heads.model.hidden_size = 4096;
        wide_heads.model.num_attention_heads = 2;
        wide_heads.model.num_key_value_heads = 2;
        assert!(refused_field(&wide_heads).contains("head_dim"));

        let mut experts = base.clone();
        if let Some(moe) = experts.moe.as_mut() {
            moe.segment.num_experts = MAX_EXPERTS + 1;
        }
        assert!(refused_field(&experts).contains("segment.num_experts"));

        let mut window = base.clone();
        if let Some(moe) = window.moe.as_mut() {
            moe.segment.window = window.model.max_position_embeddings + 1;
        }
        assert!(refused_field(&window).contains("segment.window"));
    }
}
