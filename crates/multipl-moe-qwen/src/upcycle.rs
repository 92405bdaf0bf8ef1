//! Upcycling (SPEC §5): every dense FFN of the chosen layers becomes the hybrid MoE, with all
//! experts of both levels starting as copies of the dense FFN.

use burn::module::Param;
use burn::tensor::{Distribution, Tensor, backend::Backend};
use multipl_moe_core::decoder::FeedForward;
use multipl_moe_core::experts::{Expert, ExpertBank};
use multipl_moe_core::{CausalLm, ConfigError, HybridMoeConfig, MoeConfig, MultiplMoeConfig};
use serde::{Deserialize, Serialize};

/// How to upcycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpcycleOptions {
    /// Seed of the router initialisation and the expert noise.
    pub seed: u64,
    /// Relative noise: each routed/segment expert weight `w` becomes `w · (1 + ε)`,
    /// `ε ~ N(0, noise²)`, with `noise` in [0, 1]; 0 gives exact copies.
    pub expert_noise: f64,
    /// SPEC §6: make the upcycled model compute exactly the dense model at step 0.
    ///
    /// With exact copies every token-level output is `FFN(u)` (gates sum to 1), but the
    /// segment level gives `Σ_i D_i·γ·FFN(u)` over the experts that chose the token's segment,
    /// so `0.7·FFN + 0.3·D·FFN ≠ FFN`. This option sets `λ_tok = 1` and zeroes the segment
    /// experts' down projections, so `y_seg = 0` at step 0 while gradients still reach every
    /// segment expert (through `W_down`) and, once it moves, the segment router; `λ_seg` keeps
    /// its configured value.
    pub function_preserving: bool,
}

impl Default for UpcycleOptions {
    fn default() -> Self {
        Self {
            seed: 0,
            expert_noise: 0.0,
            function_preserving: false,
        }
    }
}

/// Turns the dense layers of `model` named by `moe.hybrid_layers` into hybrid MoE layers.
/// Returns the hybrid model and its config.
pub fn upcycle<B: Backend>(
    model: CausalLm<B>,
    config: &MultiplMoeConfig,
    moe: &MoeConfig,
    options: &UpcycleOptions,
) -> Result<(CausalLm<B>, MultiplMoeConfig), ConfigError> {
    let mut moe = moe.clone();
    if options.function_preserving {
        moe.lambda_token = 1.0;
    }
    if !(options.expert_noise.is_finite() && (0.0..=1.0).contains(&options.expert_noise)) {
        return Err(ConfigError::field(
            "expert_noise",
            options.expert_noise,
            "is a relative standard deviation and must lie in [0, 1] (1: noise as large as the weight)",
        ));
    }
    let new_config = MultiplMoeConfig::new(config.model.clone()).with_moe(Some(moe.clone()));
    new_config.validate()?;
    multipl_moe_core::model::materialize(&model);
    let device = model.embed_tokens.weight.device();
    let mut model = model;
    multipl_moe_core::rng::seeded::<B, _>(&device, options.seed, || {
        let d = config.model.hidden_size;
        for (i, layer) in model.layers.iter_mut().enumerate() {
            if !moe.is_hybrid(i) {
                continue;
            }
            let FeedForward::Dense(dense) = &layer.mlp else {
                continue;
            };
            let token_experts = noisy(
                ExpertBank::from_dense(dense, moe.token.num_experts - 1),
                options.expert_noise,
            );
            let mut segment_experts = noisy(
                ExpertBank::from_dense(dense, moe.segment.num_experts),
                options.expert_noise,
            );
            if options.function_preserving {
                for expert in &mut segment_experts.experts {
                    expert.down = Param::from_tensor(expert.down.val().zeros_like().detach());
                }
            }
            // The config's own init maps every MoE field; its lazily initialised experts are
            // replaced before they are ever drawn, so only the routers are random.
            let mut hybrid = HybridMoeConfig::new(moe.clone(), d, config.model.intermediate_size)
                .init::<B>(&device);
            hybrid.token_moe.shared_expert = dense.clone();
            hybrid.token_moe.experts = token_experts;
            hybrid.segment_moe.experts = segment_experts;
            layer.mlp = FeedForward::Hybrid(hybrid);
        }
        // Draw the lazily initialised routers now, so that clones of the result are identical.
        multipl_moe_core::model::materialize(&model);
    });
    Ok((model, new_config))
}

fn noisy<B: Backend>(bank: ExpertBank<B>, noise: f64) -> ExpertBank<B> {
    if noise == 0.0 {
        return bank;
    }
    let perturb_param =
        |p: Param<Tensor<B, 2>>| Param::from_tensor(perturb(p.val(), noise).detach());
    ExpertBank {
        experts: bank
            .experts
            .into_iter()
            .map(|e| Expert {
                gate_up: perturb_param(e.gate_up),
                down: perturb_param(e.down),
            })
            .collect(),
    }
}

/// `w · (1 + ε)`, `ε ~ N(0, noise²)` elementwise: the relative noise of upcycled experts and
/// widened FFN units; `noise = 0` returns `w`.
pub(crate) fn perturb<B: Backend>(w: Tensor<B, 2>, noise: f64) -> Tensor<B, 2> {
    if noise == 0.0 {
        return w;
    }
    let eps = Tensor::random(w.shape(), Distribution::Normal(0.0, noise), &w.device());
    w.clone().add(w.mul(eps))
}
