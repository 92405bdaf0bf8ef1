//! One pre-norm decoder layer of Qwen2 whose FFN slot is dense or hybrid (SPEC §1, §4).

use burn::module::Module;
use burn::tensor::{Bool, Tensor, backend::Backend};

use crate::attention::{Attention, KvCache};
use crate::cache::{Growing, LayerCache};
use crate::ffn::SwiGlu;
use crate::hybrid::{HybridMoe, LayerRouting};
use crate::norm::RmsNorm;
use crate::rope::Rope;

/// The FFN slot of a layer: the dense SwiGLU or the hybrid MoE.
// Layers live in a Vec and are never moved in a hot path; boxing would obscure the paths.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum FeedForward<B: Backend> {
    /// The base model's FFN.
    Dense(SwiGlu<B>),
    /// The MultiPL-MoE hybrid MoE.
    Hybrid(HybridMoe<B>),
}

/// `h = h + Attn(RMSNorm(h)); h = h + FFN_slot(RMSNorm(h))`.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Self-attention.
    pub self_attn: Attention<B>,
    /// FFN slot.
    pub mlp: FeedForward<B>,
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Norm before the FFN slot.
    pub post_attention_layernorm: RmsNorm<B>,
}

/// Output of [`DecoderLayer::forward`].
#[derive(Debug, Clone)]
pub struct DecoderOutput<B: Backend> {
    /// Hidden states `[B, T, d]`.
    pub hidden: Tensor<B, 3>,
    /// Routing of the hybrid slot, `None` for a dense layer.
    pub routing: Option<LayerRouting<B>>,
}

impl<B: Backend> DecoderLayer<B> {
    /// Runs the layer on `h: [B, T, d]` from position 0 with the training routing.
    /// `padding` (`[B, T]`, `true` = padding) hides padded keys and keeps padded tokens out of
    /// the balance loss.
    pub fn forward(
        &self,
        h: Tensor<B, 3>,
        rope: &Rope<B>,
        padding: Option<Tensor<B, 2, Bool>>,
    ) -> DecoderOutput<B> {
        let (h, u) = self.attend(h, rope, padding.clone());
        let (ffn, routing) = self.feed_forward(u, padding);
        DecoderOutput {
            hidden: h.add(ffn),
            routing,
        }
    }

    /// The FFN slot on its input `u: [B, T, d]` with the training routing: its output and, for
    /// a hybrid slot, the routing. `padding` as in [`Self::forward`].
    pub fn feed_forward(
        &self,
        u: Tensor<B, 3>,
        padding: Option<Tensor<B, 2, Bool>>,
    ) -> (Tensor<B, 3>, Option<LayerRouting<B>>) {
        match &self.mlp {
            FeedForward::Dense(ffn) => (ffn.forward(u), None),
            FeedForward::Hybrid(moe) => {
                let (out, routing) = moe.forward(u, padding);
                (out, Some(routing))
            }
        }
    }

    /// The attention half from position 0: returns `h + Attn(RMSNorm(h))` and the FFN slot's
    /// input `u = RMSNorm(h + Attn(...))`.
    pub fn attend(
        &self,
        h: Tensor<B, 3>,
        rope: &Rope<B>,
        padding: Option<Tensor<B, 2, Bool>>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let (h, u, _) = self.attend_cached(h, rope, padding, None);
        (h, u)
    }

    /// [`Self::attend`] after the positions held by `kv`; also returns the grown cache.
    fn attend_cached(
        &self,
        h: Tensor<B, 3>,
        rope: &Rope<B>,
        padding: Option<Tensor<B, 2, Bool>>,
        kv: Option<KvCache<B>>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>, KvCache<B>) {
        let (attn, kv) = self.self_attn.forward_cached(
            self.input_layernorm.forward(h.clone()),
            rope,
            padding,
            kv,
        );
        let h = h.add(attn);
        let u = self.post_attention_layernorm.forward(h.clone());
        (h, u, kv)
    }

    /// Runs the layer on `h: [B, T, d]` after `cache`'s positions with the inference routing
    /// ([`HybridMoe::forward_inference`]); returns the hidden states and the grown cache.
    /// `padding` (`[B, S+T]`, `true` = padding), when given, covers the cached positions and
    /// `h`'s and hides padded keys from attention.
    pub fn forward_inference(
        &self,
        h: Tensor<B, 3>,
        rope: &Rope<B>,
        padding: Option<Tensor<B, 2, Bool>>,
        cache: Option<LayerCache<B>>,
    ) -> (Tensor<B, 3>, LayerCache<B>) {
        let (kv, history) = match cache {
            Some(c) => (Some(c.kv), c.ffn_inputs),
            None => (None, None),
        };
        let (h, u, kv) = self.attend_cached(h, rope, padding, kv);
        let (ffn, ffn_inputs) = match &self.mlp {
            FeedForward::Dense(ffn) => (ffn.forward(u), None),
            FeedForward::Hybrid(moe) => {
                let out = moe.forward_inference(history.as_ref().map(Growing::value), u.clone());
                let inputs = match history {
                    Some(past) => past.append(u),
                    None => Growing::new(u, 1),
                };
                (out, Some(inputs))
            }
        };
        (h.add(ffn), LayerCache { kv, ffn_inputs })
    }
}
