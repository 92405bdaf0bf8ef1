//! Grouped-query self-attention of Qwen2 (SPEC §1) and Llama: q/k/v projections with biases
//! (Qwen2) or per `attention_bias` (Llama, where o_proj follows it too), rotate-half RoPE,
//! causal mask, optional key padding mask, scale `head_dim^-0.5`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Bool, DType, Tensor, activation::softmax, backend::Backend};

use crate::cache::Growing;
use crate::rope::Rope;

/// Configuration of [`Attention`].
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Model width `d`.
    pub d_model: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads; divides `num_heads`.
    pub num_kv_heads: usize,
    /// Head size `h`; `None` is `d_model / num_heads`.
    #[config(default = "None")]
    pub head_dim: Option<usize>,
    /// Biases on the q/k/v projections (Qwen2).
    #[config(default = true)]
    pub qkv_bias: bool,
    /// A bias on the output projection (Llama's `attention_bias`).
    #[config(default = false)]
    pub o_proj_bias: bool,
    /// Weight initialisation.
    #[config(default = "Initializer::Normal { mean: 0.0, std: 0.02 }")]
    pub initializer: Initializer,
}

/// Multi-head attention with grouped key/value heads. Parameter names mirror the Hugging Face
/// keys (`q_proj`, `k_proj`, `v_proj`, `o_proj`).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection `[d, H·h]`, bias per [`AttentionConfig::qkv_bias`].
    pub q_proj: Linear<B>,
    /// Key projection `[d, KV·h]`, bias per [`AttentionConfig::qkv_bias`].
    pub k_proj: Linear<B>,
    /// Value projection `[d, KV·h]`, bias per [`AttentionConfig::qkv_bias`].
    pub v_proj: Linear<B>,
    /// Output projection `[H·h, d]`, bias per [`AttentionConfig::o_proj_bias`].
    pub o_proj: Linear<B>,
    /// Query heads `H`.
    pub num_heads: usize,
    /// Key/value heads `KV`.
    pub num_kv_heads: usize,
    /// Head size `h`.
    pub head_dim: usize,
}

impl AttentionConfig {
    /// Builds the attention block.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        let head_dim = self.head_dim.unwrap_or(self.d_model / self.num_heads);
        let linear = |i, o, bias| {
            LinearConfig::new(i, o)
                .with_bias(bias)
                .with_initializer(self.initializer.clone())
                .init(device)
        };
        Attention {
            q_proj: linear(self.d_model, self.num_heads * head_dim, self.qkv_bias),
            k_proj: linear(self.d_model, self.num_kv_heads * head_dim, self.qkv_bias),
            v_proj: linear(self.d_model, self.num_kv_heads * head_dim, self.qkv_bias),
            o_proj: linear(self.num_heads * head_dim, self.d_model, self.o_proj_bias),
            num_heads: self.num_heads,
            num_kv_heads: self.num_kv_heads,
            head_dim,
        }
    }
}

/// Keys and values of the positions seen so far, `[B, KV, S, h]` each, growing along `S`
/// in preallocated buffers ([`Growing`]) instead of being concatenated at every step.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    /// Cached rotated keys.
    pub keys: Growing<B, 4>,
    /// Cached values.
    pub values: Growing<B, 4>,
}

impl<B: Backend> KvCache<B> {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the cache holds no position.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `len` positions.
    pub fn truncate(self, len: usize) -> Self {
        Self {
            keys: self.keys.truncate(len),
            values: self.values.truncate(len),
        }
    }
}

impl<B: Backend> Attention<B> {
    /// Attends `x: [B, T, d]` causally. `padding` (`[B, T]`, `true` = padding) hides padded
    /// keys. Positions start at 0.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        padding: Option<Tensor<B, 2, Bool>>,
    ) -> Tensor<B, 3> {
        self.forward_cached(x, rope, padding, None).0
    }

    /// Attends `x: [B, T, d]` (positions `S..S+T`) to the `S` cached positions and to itself,
    /// and returns the grown cache. `padding` covers all `S+T` key positions.
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        padding: Option<Tensor<B, 2, Bool>>,
        cache: Option<KvCache<B>>,
    ) -> (Tensor<B, 3>, KvCache<B>) {
        let [b, t, _] = x.dims();
        let past = cache.as_ref().map_or(0, KvCache::len);
        let heads = |proj: &Linear<B>, n: usize| {
            proj.forward(x.clone())
                .reshape([b, t, n, self.head_dim])
                .swap_dims(1, 2)
        };
        let q = rope.apply(heads(&self.q_proj, self.num_heads), past);
        let k = rope.apply(heads(&self.k_proj, self.num_kv_heads), past);
        let v = heads(&self.v_proj, self.num_kv_heads);
        let cache = match cache {
            Some(c) => KvCache {
                keys: c.keys.append(k),
                values: c.values.append(v),
            },
            None => KvCache {
                keys: Growing::new(k, 2),
                values: Growing::new(v, 2),
            },
        };
        let (k, v) = (cache.keys.value(), cache.values.value());
        let s = past + t;
        let k = self.repeat_kv(k);
        let v = self.repeat_kv(v);

        let scale = (self.head_dim as f64).powf(-0.5);
        let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
        let device = scores.device();
        // Query i (absolute position past+i) may see keys 0..=past+i; `tril_mask` is true
        // (masked) strictly above that diagonal.
        let causal = Tensor::<B, 2, Bool>::tril_mask([t, s], past as i64, &device);
        let mut mask = causal.reshape([1, 1, t, s]).expand([b, 1, t, s]);
        if let Some(pad) = padding {
            mask = mask.bool_or(pad.reshape([b, 1, 1, s]).expand([b, 1, t, s]));
        }
        let dtype = scores.dtype();
        let scores = scores
            .cast(DType::F32)
            .mask_fill(mask.expand([b, self.num_heads, t, s]), -1.0e9);
        let probs = softmax(scores, 3).cast(dtype);
        let out = probs
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([b, t, self.num_heads * self.head_dim]);
        (self.o_proj.forward(out), cache)
    }

    /// `[B, KV, S, h] -> [B, H, S, h]`; query head `j` reads kv head `j / (H/KV)`.
    fn repeat_kv(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let n_rep = self.num_heads / self.num_kv_heads;
        if n_rep == 1 {
            return x;
        }
        let [b, kv, s, h] = x.dims();
        x.reshape([b, kv, 1, s, h])
            .expand([b, kv, n_rep, s, h])
            .reshape([b, kv * n_rep, s, h])
    }
}
