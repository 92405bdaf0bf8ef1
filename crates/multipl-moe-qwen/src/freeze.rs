//! Which parameters train (SPEC §5): by default the routed token experts, all segment experts
//! and both routers; the shared expert, attention, embeddings, norms and LM head are frozen.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, backend::Backend};
use multipl_moe_core::CausalLm;
use multipl_moe_core::decoder::FeedForward;
use serde::{Deserialize, Serialize};

/// What trains; everything not named stays frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreezePolicy {
    /// Routed token-level experts.
    pub routed_experts: bool,
    /// Segment-level experts.
    pub segment_experts: bool,
    /// Both routers.
    pub routers: bool,
    /// The shared expert (and dense FFNs of non-hybrid layers).
    pub shared_and_dense_ffn: bool,
    /// Attention, norms, embeddings and the LM head.
    pub backbone: bool,
}

impl FreezePolicy {
    /// SPEC §5: experts and routers train, the rest is frozen.
    pub fn paper() -> Self {
        Self {
            routed_experts: true,
            segment_experts: true,
            routers: true,
            shared_and_dense_ffn: false,
            backbone: false,
        }
    }

    /// Nothing trains.
    pub fn none() -> Self {
        Self {
            routed_experts: false,
            segment_experts: false,
            routers: false,
            shared_and_dense_ffn: false,
            backbone: false,
        }
    }

    /// Everything trains (dense fine-tuning, pre-training).
    pub fn all() -> Self {
        Self {
            routed_experts: true,
            segment_experts: true,
            routers: true,
            shared_and_dense_ffn: true,
            backbone: true,
        }
    }
}

impl Default for FreezePolicy {
    fn default() -> Self {
        Self::paper()
    }
}

struct RequireGrad(bool);

impl<B: Backend> ModuleMapper<B> for RequireGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(self.0)
    }
}

fn set<B: Backend, M: Module<B>>(module: M, train: bool) -> M {
    module.map(&mut RequireGrad(train))
}

/// How many parameters of `model` `policy` trains (the parts [`apply_freeze`] marks
/// trainable), counted from the modules' shapes.
pub fn trainable_params<B: Backend>(model: &CausalLm<B>, policy: &FreezePolicy) -> usize {
    let count = |train: bool, n: usize| if train { n } else { 0 };
    let bb = policy.backbone;
    let mut total = count(bb, model.embed_tokens.num_params())
        + count(bb, model.norm.num_params())
        + model
            .lm_head
            .as_ref()
            .map_or(0, |h| count(bb, h.num_params()));
    for layer in &model.layers {
        total += count(
            bb,
            layer.self_attn.num_params()
                + layer.input_layernorm.num_params()
                + layer.post_attention_layernorm.num_params(),
        );
        total += match &layer.mlp {
            FeedForward::Dense(ffn) => count(policy.shared_and_dense_ffn, ffn.num_params()),
            FeedForward::Hybrid(moe) => {
                count(
                    policy.shared_and_dense_ffn,
                    moe.token_moe.shared_expert.num_params(),
                ) + count(policy.routed_experts, moe.token_moe.experts.num_params())
                    + count(policy.routers, moe.token_moe.router.num_params())
                    + count(policy.segment_experts, moe.segment_moe.experts.num_params())
                    + count(policy.routers, moe.segment_moe.router.num_params())
            }
        };
    }
    total
}

/// Marks each parameter of `model` trainable or frozen according to `policy`.
pub fn apply_freeze<B: Backend>(model: CausalLm<B>, policy: &FreezePolicy) -> CausalLm<B> {
    let CausalLm {
        embed_tokens,
        layers,
        norm,
        lm_head,
        rope,
    } = model;
    let bb = policy.backbone;
    let layers = layers
        .into_iter()
        .map(|mut layer| {
            layer.self_attn = set(layer.self_attn, bb);
            layer.input_layernorm = set(layer.input_layernorm, bb);
            layer.post_attention_layernorm = set(layer.post_attention_layernorm, bb);
            layer.mlp = match layer.mlp {
                FeedForward::Dense(ffn) => {
                    FeedForward::Dense(set(ffn, policy.shared_and_dense_ffn))
                }
                FeedForward::Hybrid(mut moe) => {
                    moe.token_moe.shared_expert =
                        set(moe.token_moe.shared_expert, policy.shared_and_dense_ffn);
                    moe.token_moe.experts = set(moe.token_moe.experts, policy.routed_experts);
                    moe.token_moe.router = set(moe.token_moe.router, policy.routers);
                    moe.segment_moe.experts = set(moe.segment_moe.experts, policy.segment_experts);
                    moe.segment_moe.router = set(moe.segment_moe.router, policy.routers);
                    FeedForward::Hybrid(moe)
                }
            };
            layer
        })
        .collect();
    CausalLm {
        embed_tokens: set(embed_tokens, bb),
        layers,
        norm: set(norm, bb),
        lm_head: lm_head.map(|h| set(h, bb)),
        rope,
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use multipl_moe_core::{MoeConfig, MultiplMoeConfig, QwenConfig};

    use super::{FreezePolicy, trainable_params};
    use crate::upcycle::{UpcycleOptions, upcycle};

    type TestBackend = NdArray<f32>;

    #[test]
    fn trainable_params_count_what_each_policy_trains() {
        let (v, d, f, layers) = (64, 16, 24, 2);
        let config = MultiplMoeConfig::new(QwenConfig::new(v, d, f, layers, 2, 1));
        let device = Default::default();
        let dense = config.init::<TestBackend>(&device).expect("model");
        let moe = MoeConfig::tiny();
        let (n_tok, n_seg) = (moe.token.num_experts, moe.segment.num_experts);
        let (hybrid, _) =
            upcycle(dense, &config, &moe, &UpcycleOptions::default()).expect("upcycles");
        let ffn = 3 * d * f;
        // SPEC §5: the routed experts (N_t − 1, the shared one frozen), the segment experts
        // and both routers (`d × N_t`, `d × N_s`) of each layer.
        let paper = layers * ((n_tok - 1 + n_seg) * ffn + d * n_tok + d * n_seg);
        assert_eq!(trainable_params(&hybrid, &FreezePolicy::paper()), paper);
        assert_eq!(trainable_params(&hybrid, &FreezePolicy::none()), 0);
        let everything = trainable_params(&hybrid, &FreezePolicy::all());
        assert_eq!(everything, burn::module::Module::num_params(&hybrid));
    }
}
