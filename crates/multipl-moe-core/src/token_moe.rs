//! Token-level MoE: token choice with a shared expert and the SPEC §2 gate normalisation.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

use crate::config::TokenMoeConfig;
use crate::experts::{ExpertBank, ExpertBankConfig};
use crate::ffn::{SwiGlu, SwiGluConfig};
use crate::routing::{TokenRouting, routed_bank_index, token_gates};

/// Configuration of [`TokenMoe`]: the SPEC §2 fields plus the layer sizes.
#[derive(Config, Debug)]
pub struct TokenMoeLayerConfig {
    /// Routing hyper-parameters.
    pub moe: TokenMoeConfig,
    /// Model width `d`.
    pub d_model: usize,
    /// Expert hidden width `f`.
    pub d_ff: usize,
    /// Standard deviation of the router initialisation.
    #[config(default = 0.02)]
    pub router_init_std: f64,
}

/// `h_tok,t = Σ_i g_i,t · FFN_i(u_t)` over the shared expert and the token's top-(K−1)
/// routed experts (SPEC §2).
#[derive(Module, Debug)]
pub struct TokenMoe<B: Backend> {
    /// `W_tok: d -> N_t`, no bias; output column `shared_index` scores the shared expert.
    pub router: Linear<B>,
    /// The shared expert (an untouched copy of the dense FFN after upcycling).
    pub shared_expert: SwiGlu<B>,
    /// The `N_t − 1` routed experts, in router order with the shared column skipped.
    pub experts: ExpertBank<B>,
    /// Router column of the shared expert.
    pub shared_index: usize,
    /// `K`, the shared expert included.
    pub top_k: usize,
}

impl TokenMoeLayerConfig {
    /// Builds the layer with random experts.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TokenMoe<B> {
        TokenMoe {
            router: router_init(
                self.d_model,
                self.moe.num_experts,
                self.router_init_std,
                device,
            ),
            shared_expert: SwiGluConfig::new(self.d_model, self.d_ff).init(device),
            experts: ExpertBankConfig::new(self.moe.num_experts - 1, self.d_model, self.d_ff)
                .init(device),
            shared_index: self.moe.shared_expert,
            top_k: self.moe.top_k,
        }
    }
}

/// A bias-free router `d -> n` with normal(0, std) weights (SPEC §5).
pub fn router_init<B: Backend>(d: usize, n: usize, std: f64, device: &B::Device) -> Linear<B> {
    LinearConfig::new(d, n)
        .with_bias(false)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device)
}

impl<B: Backend> TokenMoe<B> {
    /// Routes and mixes `u: [N, d]`; returns `h_tok: [N, d]` and the routing decisions.
    pub fn forward(&self, u: Tensor<B, 2>) -> (Tensor<B, 2>, TokenRouting<B>) {
        let n = u.dims()[0];
        let routing = token_gates(
            self.router.forward(u.clone()),
            self.shared_index,
            self.top_k,
        );
        let bank = routed_bank_index(routing.experts.clone(), self.shared_index)
            .reshape([n, self.top_k - 1]);
        let routed = self
            .experts
            .forward_mixture(u.clone(), bank, routing.gates.clone());
        let shared = self
            .shared_expert
            .forward(u)
            .mul(routing.shared_gate.clone());
        (shared.add(routed), routing)
    }
}
