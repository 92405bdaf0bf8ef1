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

/// Keys and values of the positions seen so far, `[B·KV, S, h]` each (batch row `b`, kv head
/// `g` at row `b·KV + g`), growing along `S` in preallocated buffers ([`Growing`]) instead of
/// being concatenated at every step.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    /// Cached rotated keys.
    pub keys: Growing<B, 3>,
    /// Cached values.
    pub values: Growing<B, 3>,
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
        let (kv, h) = (self.num_kv_heads, self.head_dim);
        let rep = self.num_heads / kv;
        let past = cache.as_ref().map_or(0, KvCache::len);
        let heads = |proj: &Linear<B>, n: usize| {
            proj.forward(x.clone())
                .reshape([b, t, n, self.head_dim])
                .swap_dims(1, 2)
        };
        let q = rope.apply(heads(&self.q_proj, self.num_heads), past);
        let k = rope.apply(heads(&self.k_proj, self.num_kv_heads), past);
        let v = heads(&self.v_proj, self.num_kv_heads);
        // The cache holds `[B·KV, S, h]`: a view of its first S positions is a strided 3-D
        // operand the batched matmul reads in place, where `[B, KV, S, h]` would be copied
        // into a 3-D shape at every step.
        let flat = |x: Tensor<B, 4>| x.reshape([b * kv, t, h]);
        let cache = match cache {
            Some(c) => KvCache {
                keys: c.keys.append(flat(k)),
                values: c.values.append(flat(v)),
            },
            None => KvCache {
                keys: Growing::new(flat(k), 1),
                values: Growing::new(flat(v), 1),
            },
        };
        let (k, v) = (cache.keys.value(), cache.values.value());

        // Grouped-query attention without repeating K and V: query head `j` reads kv head
        // `j / rep`, so the `rep` query heads of one kv head are rows of one product with it.
        // Long inputs (a prompt's prefill) go in blocks of `QUERY_BLOCK` queries, each against
        // the keys it may see: the causal half of the scores is never computed, and a block's
        // scores stay small.
        let out = if t <= QUERY_BLOCK {
            let q = q.reshape([b * kv, rep * t, h]);
            attend(q, k, v, padding, [b, kv, rep, t], past)
        } else {
            let q = q.reshape([b * kv, rep, t, h]);
            let blocks = (0..t)
                .step_by(QUERY_BLOCK)
                .map(|start| {
                    let len = QUERY_BLOCK.min(t - start);
                    let seen = past + start + len;
                    let q = q
                        .clone()
                        .narrow(2, start, len)
                        .reshape([b * kv, rep * len, h]);
                    let padding = padding.clone().map(|p| p.narrow(1, 0, seen));
                    let (k, v) = (k.clone().narrow(1, 0, seen), v.clone().narrow(1, 0, seen));
                    attend(q, k, v, padding, [b, kv, rep, len], past + start).reshape([
                        b * kv,
                        rep,
                        len,
                        h,
                    ])
                })
                .collect();
            Tensor::cat(blocks, 2).reshape([b * kv, rep * t, h])
        };
        let out = out
            .reshape([b, kv * rep, t, h])
            .swap_dims(1, 2)
            .reshape([b, t, kv * rep * h]);
        (self.o_proj.forward(out), cache)
    }
}

/// Queries per block of [`Attention::forward_cached`]: a prefill of more positions is computed
/// block by block.
pub const QUERY_BLOCK: usize = 256;

/// Causal attention of one block of queries: `q [B·KV, rep·T, h]` (row `r·T + i` is query head
/// `g·rep + r` of kv group `g` at the block's position `i`, absolute position `first + i`),
/// `k`, `v [B·KV, S, h]` with `S = first + T`, `padding [B, S]` (true: masked). Returns
/// `[B·KV, rep·T, h]`.
fn attend<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    padding: Option<Tensor<B, 2, Bool>>,
    [b, kv, rep, t]: [usize; 4],
    first: usize,
) -> Tensor<B, 3> {
    let [_, s, h] = k.dims();
    let scale = (h as f64).powf(-0.5);
    let scores = q.matmul(k.swap_dims(1, 2)).mul_scalar(scale);
    let device = scores.device();
    // Query i (absolute position first+i) may see keys 0..=first+i; `tril_mask` is true
    // (masked) strictly above that diagonal.
    let causal = Tensor::<B, 2, Bool>::tril_mask([t, s], first as i64, &device);
    let mut mask = causal.reshape([1, 1, 1, t, s]).expand([b, 1, 1, t, s]);
    if let Some(pad) = padding {
        mask = mask.bool_or(pad.reshape([b, 1, 1, 1, s]).expand([b, 1, 1, t, s]));
    }
    let dtype = scores.dtype();
    let scores = scores
        .reshape([b, kv, rep, t, s])
        .cast(DType::F32)
        .mask_fill(mask.expand([b, kv, rep, t, s]), -1.0e9);
    softmax(scores, 4)
        .cast(dtype)
        .reshape([b * kv, rep * t, s])
        .matmul(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rope::RopeConfig;
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, TensorData};

    type B = NdArray;

    fn values(t: Tensor<B, 3>) -> Vec<f32> {
        t.into_data().to_vec().unwrap_or_default()
    }

    /// Attention of width `d` with 4 query heads on 2 kv heads, drawn from `seed`.
    fn grouped(d: usize, seed: u64) -> Attention<B> {
        let device = Default::default();
        crate::rng::seeded::<B, _>(&device, seed, || {
            let a = AttentionConfig::new(d, 4, 2).init::<B>(&device);
            crate::model::materialize(&a);
            a
        })
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    /// Grouped heads (4 query heads on 2 kv heads), a left-padded batch row and the cache:
    /// because RoPE scores depend only on relative positions, a row with `P` padding keys in
    /// front attends exactly as the same tokens alone, at prefill and at every cached step.
    #[test]
    fn padded_rows_and_cached_steps_attend_as_the_tokens_alone() {
        let device = Default::default();
        let (d, pad, t) = (16, 2, 3);
        let attention = grouped(d, 1);
        let rope = RopeConfig::new(4, 64).init::<B>(&device);
        let x: Tensor<B, 3> = crate::rng::seeded::<B, _>(&device, 2, || {
            Tensor::random([1, t + 2, d], Distribution::Normal(0.0, 1.0), &device)
        });
        let (prompt, steps) = (x.clone().narrow(1, 0, t), x.narrow(1, t, 2));
        // Alone: the prompt, then two cached steps.
        let (alone, mut cache) = attention.forward_cached(prompt.clone(), &rope, None, None);
        let mut alone_steps = Vec::new();
        for i in 0..2 {
            let (y, c) =
                attention.forward_cached(steps.clone().narrow(1, i, 1), &rope, None, Some(cache));
            alone_steps.push(values(y));
            cache = c;
        }
        // Batched: row 0 is `pad` filler tokens then the prompt, row 1 the filler only.
        let filler: Tensor<B, 3> = Tensor::ones([1, pad, d], &device);
        let row0 = Tensor::cat(vec![filler, prompt], 1);
        let row1 = Tensor::ones([1, pad + t, d], &device);
        let batch = Tensor::cat(vec![row0, row1], 0);
        let mask = |s: usize| {
            let rows: Vec<bool> = (0..s)
                .map(|i| i < pad)
                .chain((0..s).map(|_| false))
                .collect();
            Tensor::<B, 2, Bool>::from_data(TensorData::new(rows, [2, s]), &device)
        };
        let (out, mut cache) = attention.forward_cached(batch, &rope, Some(mask(pad + t)), None);
        assert_close(
            &values(out.narrow(0, 0, 1).narrow(1, pad, t)),
            &values(alone),
            "prefill",
        );
        for (i, want) in alone_steps.iter().enumerate() {
            let step = steps.clone().narrow(1, i, 1);
            let (y, c) = attention.forward_cached(
                Tensor::cat(vec![step.clone(), step], 0),
                &rope,
                Some(mask(pad + t + i + 1)),
                Some(cache),
            );
            assert_close(&values(y.narrow(0, 0, 1)), want, "cached step");
            cache = c;
        }
        assert_eq!(cache.len(), pad + t + 2);
    }

    /// A prompt longer than [`QUERY_BLOCK`] at once (blocks of 256, 256 and 88 queries)
    /// gives what the same prompt gives fed in three cached calls of 200 (one block each,
    /// each after a different number of cached positions).
    #[test]
    fn query_blocks_give_what_shorter_cached_calls_give() {
        let device = Default::default();
        let (d, t) = (16, 600);
        let attention = grouped(d, 3);
        let rope = RopeConfig::new(4, 1024).init::<B>(&device);
        let x: Tensor<B, 3> = crate::rng::seeded::<B, _>(&device, 4, || {
            Tensor::random([2, t, d], Distribution::Normal(0.0, 1.0), &device)
        });
        let (whole, _) = attention.forward_cached(x.clone(), &rope, None, None);
        let mut cache = None;
        let mut parts = Vec::new();
        for start in (0..t).step_by(200) {
            let (y, c) =
                attention.forward_cached(x.clone().narrow(1, start, 200), &rope, None, cache);
            parts.push(y);
            cache = Some(c);
        }
        assert_close(
            &values(whole),
            &values(Tensor::cat(parts, 1)),
            "blocked prefill",
        );
    }
}
