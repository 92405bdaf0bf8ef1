//! The causal language model: Qwen2 with dense or hybrid FFN slots (SPEC §1, §4).

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Bool, Int, Tensor, backend::Backend};

use crate::attention::AttentionConfig;
use crate::cache::{LayerCache, ModelCache};
use crate::config::{MultiplMoeConfig, QwenConfig, SegmentRouting};
use crate::decoder::{DecoderLayer, FeedForward};
use crate::error::ConfigError;
use crate::ffn::SwiGluConfig;
use crate::hybrid::{HybridMoeConfig, LayerRouting};
use crate::norm::{RmsNorm, RmsNormConfig};
use crate::rope::{Rope, RopeConfig};

/// Qwen2 causal LM; parameter names mirror the Hugging Face keys under `model.`.
#[derive(Module, Debug)]
pub struct CausalLm<B: Backend> {
    /// Token embedding `[vocab, d]`.
    pub embed_tokens: Embedding<B>,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer<B>>,
    /// Final norm.
    pub norm: RmsNorm<B>,
    /// LM head `[d, vocab]`; `None` when tied to `embed_tokens`.
    pub lm_head: Option<Linear<B>>,
    /// Rotary tables shared by every layer.
    pub rope: Rope<B>,
}

/// Output of [`CausalLm::forward`].
#[derive(Debug, Clone)]
pub struct CausalLmOutput<B: Backend> {
    /// Next-token logits `[B, T, vocab]`.
    pub logits: Tensor<B, 3>,
    /// Routing of each layer (`None` for dense layers).
    pub routing: Vec<Option<LayerRouting<B>>>,
}

impl<B: Backend> CausalLmOutput<B> {
    /// `L_bal` of the whole model: the **mean** over hybrid layers of each layer's
    /// [`crate::balance::balance_loss`] (1.0 at perfect balance); `None` for a dense model.
    /// Each layer's `f·P` product is formed inside the layer before averaging.
    pub fn balance_loss(&self) -> Option<Tensor<B, 1>> {
        let losses: Vec<_> = self
            .routing
            .iter()
            .flatten()
            .map(|r| r.balance_loss.clone())
            .collect();
        let n = losses.len();
        (n > 0).then(|| Tensor::cat(losses, 0).sum().div_scalar(n as f64))
    }
}

impl MultiplMoeConfig {
    /// Builds a randomly initialised model after validating the config.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<CausalLm<B>, ConfigError> {
        let model = self.init_for_loading(device)?;
        materialize(&model);
        Ok(model)
    }

    /// Builds the model with burn's lazily initialised parameters and draws none of them: for
    /// a loader that sets every parameter (`Param::initialized`) before it is read, so that
    /// loading never spends time on random values it overwrites. A parameter left unset
    /// draws its random value on first use.
    pub fn init_for_loading<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<CausalLm<B>, ConfigError> {
        self.validate()?;
        let m = &self.model;
        let layers = (0..m.num_hidden_layers)
            .map(|layer| {
                let mlp = match &self.moe {
                    Some(moe) if moe.is_hybrid(layer) => FeedForward::Hybrid(
                        HybridMoeConfig::new(moe.clone(), m.hidden_size, m.intermediate_size)
                            .init(device),
                    ),
                    _ => FeedForward::Dense(
                        SwiGluConfig::new(m.hidden_size, m.intermediate_size).init(device),
                    ),
                };
                decoder_layer(m, mlp, device)
            })
            .collect();
        let model = CausalLm {
            embed_tokens: EmbeddingConfig::new(m.vocab_size, m.hidden_size)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.02,
                })
                .init(device),
            layers,
            norm: rms_norm(m, device),
            lm_head: (!m.tie_word_embeddings).then(|| {
                LinearConfig::new(m.hidden_size, m.vocab_size)
                    .with_bias(false)
                    .with_initializer(Initializer::Normal {
                        mean: 0.0,
                        std: 0.02,
                    })
                    .init(device)
            }),
            rope: RopeConfig::new(m.head_dim(), m.max_position_embeddings)
                .with_theta(m.rope_theta)
                .with_scaling(m.rope_scaling.clone())
                .init(device),
        };
        Ok(model)
    }
}

fn rms_norm<B: Backend>(m: &QwenConfig, device: &B::Device) -> RmsNorm<B> {
    RmsNormConfig::new(m.hidden_size)
        .with_epsilon(m.rms_norm_eps)
        .init(device)
}

/// A decoder layer of `m`'s shape around the given FFN slot.
pub fn decoder_layer<B: Backend>(
    m: &QwenConfig,
    mlp: FeedForward<B>,
    device: &B::Device,
) -> DecoderLayer<B> {
    DecoderLayer {
        self_attn: AttentionConfig::new(
            m.hidden_size,
            m.num_attention_heads,
            m.num_key_value_heads,
        )
        .with_head_dim(Some(m.head_dim()))
        .with_qkv_bias(m.qkv_bias())
        .with_o_proj_bias(m.o_proj_bias())
        .init(device),
        mlp,
        input_layernorm: rms_norm(m, device),
        post_attention_layernorm: rms_norm(m, device),
    }
}

/// Which positions [`CausalLm::forward_inference`] returns logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position (generation: saves the LM head on the prompt).
    Last,
    /// Every new position.
    All,
}

impl<B: Backend> CausalLm<B> {
    /// Logits and routing for `tokens: [B, T]` from position 0, with the **training** routing
    /// (expert choice over all segments of the batch in paper mode). `padding` (`[B, T]`,
    /// `true` = padding) hides padded keys from attention and padded tokens from the balance
    /// loss.
    pub fn forward(
        &self,
        tokens: Tensor<B, 2, Int>,
        padding: Option<Tensor<B, 2, Bool>>,
    ) -> CausalLmOutput<B> {
        self.forward_observed(tokens, padding, |_, _, _| {})
    }

    /// [`Self::forward`], calling `observe(layer, u, routing)` with each layer's FFN input
    /// `u: [B, T, d]` (`RMSNorm(h + Attn(...))`) and its routing once the layer has run: what
    /// a study of the routing rule needs (the train crate's `demo::agreement`) without a
    /// second copy of the decoder loop.
    pub fn forward_observed(
        &self,
        tokens: Tensor<B, 2, Int>,
        padding: Option<Tensor<B, 2, Bool>>,
        mut observe: impl FnMut(usize, Tensor<B, 3>, Option<&LayerRouting<B>>),
    ) -> CausalLmOutput<B> {
        let mut h = self.embed_tokens.forward(tokens);
        let mut routing = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let (mid, u) = layer.attend(h, &self.rope, padding.clone());
            let (ffn, layer_routing) = layer.feed_forward(u.clone(), padding.clone());
            observe(i, u, layer_routing.as_ref());
            h = mid.add(ffn);
            routing.push(layer_routing);
        }
        CausalLmOutput {
            logits: self.head(h),
            routing,
        }
    }

    /// Logits of the new `tokens: [B, t]` after the positions held by `cache`, with the
    /// **inference** routing, and the grown cache.
    ///
    /// Inference routing (issue 5, SPEC §6): the token level is unchanged; at the segment
    /// level every token mixes the top-`k` experts of its own router vector
    /// (`k = clamp(round(c), 1, N_s)`, see [`SegmentMoe::experts_per_segment`]), which needs
    /// no batch of segments and so works for a single sequence. Causal mode routes as in
    /// training. In paper mode a token of the still-growing window is routed by the pool of
    /// that window's tokens so far, and when new tokens *close* a window that was open in the
    /// cache, the cache is rewound to the window's start and its tokens are run again, so
    /// every closed window is routed by its full pool, as in training. Hence the result does
    /// not depend on how the sequence is split into calls: feeding tokens one by one gives
    /// the logits of one call on the whole sequence (`tests/it/generate.rs`).
    ///
    /// [`SegmentMoe::experts_per_segment`]: crate::segment_moe::SegmentMoe::experts_per_segment
    pub fn forward_inference(
        &self,
        tokens: Tensor<B, 2, Int>,
        cache: Option<ModelCache<B>>,
        logits: Logits,
    ) -> (Tensor<B, 3>, ModelCache<B>) {
        self.forward_inference_padded(tokens, None, cache, logits)
    }

    /// [`Self::forward_inference`] of a batch whose rows carry padding: `padding` (`[B, t]`,
    /// `true` = padding) marks which new tokens are padding, the cache holds the padding of
    /// the cached positions. Padded positions are hidden from attention, and a row left-padded
    /// with `P` positions gives the logits of its tokens alone (RoPE scores depend only on
    /// relative positions), up to rounding — but only in a model without hybrid layers: the
    /// segment level's windows count positions from 0, padding included, so
    /// [`Self::generate_batch`] never pads rows for such a model.
    pub(crate) fn forward_inference_padded(
        &self,
        tokens: Tensor<B, 2, Int>,
        padding: Option<Tensor<B, 2, Bool>>,
        cache: Option<ModelCache<B>>,
        logits: Logits,
    ) -> (Tensor<B, 3>, ModelCache<B>) {
        let [b, t] = tokens.dims();
        let device = tokens.device();
        let no_padding = |n: usize| Tensor::<B, 2, Bool>::full([b, n], false, &device);
        type Start<B> = (
            Tensor<B, 2, Int>,
            Tensor<B, 2, Int>,
            Option<Tensor<B, 2, Bool>>,
            Vec<Option<LayerCache<B>>>,
        );
        let (input, all_tokens, all_padding, mut layer_caches): Start<B> = match cache {
            Some(c) => {
                let len = c.len();
                let start = self.rewind_point(len, t);
                let all = Tensor::cat(vec![c.tokens.clone(), tokens], 1);
                let input = all.clone().narrow(1, start, len + t - start);
                let all_padding = match (c.padding.clone(), padding) {
                    (None, None) => None,
                    (past, new) => Some(Tensor::cat(
                        vec![
                            past.unwrap_or_else(|| no_padding(len)),
                            new.unwrap_or_else(|| no_padding(t)),
                        ],
                        1,
                    )),
                };
                // burn cannot hold a zero-length cache: rewinding to 0 starts afresh.
                let kept = match start {
                    0 => vec![None; self.layers.len()],
                    _ => c.truncate(start).layers.into_iter().map(Some).collect(),
                };
                (input, all, all_padding, kept)
            }
            None => (
                tokens.clone(),
                tokens,
                padding,
                vec![None; self.layers.len()],
            ),
        };
        let mut h = self.embed_tokens.forward(input);
        let mut grown = Vec::with_capacity(self.layers.len());
        for (layer, cache) in self.layers.iter().zip(layer_caches.iter_mut()) {
            let (out, cache) =
                layer.forward_inference(h, &self.rope, all_padding.clone(), cache.take());
            h = out;
            grown.push(cache);
        }
        let n = h.dims()[1];
        let h = match logits {
            Logits::Last => h.narrow(1, n - 1, 1),
            Logits::All => h.narrow(1, n - t, t),
        };
        let cache = ModelCache {
            layers: grown,
            tokens: all_tokens,
            padding: all_padding,
        };
        (self.head(h), cache)
    }

    /// Where [`Self::forward_inference`] must restart when `new` tokens follow `cached`
    /// positions: the start of a paper-mode window that was open and is closed by the new
    /// tokens, else `cached`.
    pub fn rewind_point(&self, cached: usize, new: usize) -> usize {
        self.layers
            .iter()
            .filter_map(|layer| match &layer.mlp {
                FeedForward::Hybrid(moe) if moe.segment_moe.routing == SegmentRouting::Paper => {
                    let a = moe.segment_moe.window;
                    let closes = !cached.is_multiple_of(a) && (cached + new) / a > cached / a;
                    closes.then_some(cached / a * a)
                }
                _ => None,
            })
            .min()
            .unwrap_or(cached)
    }

    /// Final norm and LM head: `[B, T, d] -> [B, T, vocab]`, as one 2-D matmul.
    ///
    /// The head is the largest matrix of a small model (`d × 151 936` for Qwen1.5). With tied
    /// embeddings a single row (decoding) is formed as `(E · hᵀ)ᵀ`, so the embedding
    /// `E [vocab, d]` is read in its stored row-major layout as the left operand: the
    /// `151936 × 1024 × 1` product of BENCHMARKS.md's matmul table ("qwen decode, tied LM
    /// head"). Several rows (training, prefill) are formed as `h · Eᵀ`, which gives row-major
    /// logits for the softmax over the vocabulary that follows. GPU backends handle both forms
    /// alike.
    pub fn head(&self, h: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, d] = h.dims();
        let h = self.norm.forward(h).reshape([b * t, d]);
        let logits = match &self.lm_head {
            Some(head) => {
                let out = h.matmul(head.weight.val());
                match &head.bias {
                    Some(bias) => out.add(bias.val().unsqueeze()),
                    None => out,
                }
            }
            None if b * t == 1 => self
                .embed_tokens
                .weight
                .val()
                .matmul(h.transpose())
                .transpose(),
            None => h.matmul(self.embed_tokens.weight.val().transpose()),
        };
        logits.reshape([b, t, self.vocab_size()])
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.weight.dims()[0]
    }

    /// Model width `d`.
    pub fn d_model(&self) -> usize {
        self.embed_tokens.weight.dims()[1]
    }
}

/// Forces burn's lazily initialised parameters to take their values now.
///
/// burn creates random parameters lazily: a clone of a module whose parameters were never read
/// draws *its own* random values on first use. Upcycling copies the dense FFN into every
/// expert and export clones the model, so both (and [`MultiplMoeConfig::init`]) materialise
/// first, which makes clones identical. Draws under [`crate::rng::with_generator`]'s lock.
pub fn materialize<B: Backend, M: Module<B>>(module: &M) {
    struct Touch;
    impl<B: Backend> burn::module::ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    crate::rng::with_generator(|| module.visit(&mut Touch));
}
