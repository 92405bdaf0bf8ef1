//! One pre-norm decoder layer of Qwen2 whose FFN slot is dense or hybrid (SPEC §1, §4).

use burn::module::Module;
use burn::tensor::{Bool, Tensor, backend::Backend};

use crate::attention::{Attention, KvCache};
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
    /// The grown key/value cache.
    pub cache: KvCache<B>,
}

impl<B: Backend> DecoderLayer<B> {
    /// Runs the layer on `h: [B, T, d]` after `cache`'s positions.
    pub fn forward(
        &self,
        h: Tensor<B, 3>,
        rope: &Rope<B>,
        padding: Option<Tensor<B, 2, Bool>>,
        cache: Option<KvCache<B>>,
    ) -> DecoderOutput<B> {
        let t = h.dims()[1];
        let (attn, cache) = self.self_attn.forward_cached(
            self.input_layernorm.forward(h.clone()),
            rope,
            padding.clone(),
            cache,
        );
        let h = h.add(attn);
        let u = self.post_attention_layernorm.forward(h.clone());
        let (ffn, routing) = match &self.mlp {
            FeedForward::Dense(ffn) => (ffn.forward(u), None),
            FeedForward::Hybrid(moe) => {
                // The padding mask covers cached positions too; the MoE sees only the new ones.
                let s = padding.as_ref().map_or(t, |p| p.dims()[1]);
                let pad = padding.map(|p| p.narrow(1, s - t, t));
                let (out, routing) = moe.forward(u, pad);
                (out, Some(routing))
            }
        };
        DecoderOutput {
            hidden: h.add(ffn),
            routing,
            cache,
        }
    }
}
