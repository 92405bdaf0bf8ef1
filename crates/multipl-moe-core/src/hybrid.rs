//! The hybrid MoE of one layer: token-level and segment-level MoE on the same input, fused
//! (SPEC §4).

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Bool, Tensor, backend::Backend};

use crate::balance::balance_loss;
use crate::config::MoeConfig;
use crate::routing::TokenRouting;
use crate::segment_moe::{SegmentMoe, SegmentMoeLayerConfig, SegmentRoutingOutput};
use crate::token_moe::{TokenMoe, TokenMoeLayerConfig};

/// Configuration of [`HybridMoe`].
#[derive(Config, Debug)]
pub struct HybridMoeConfig {
    /// Both levels, the fusion weights and the balance coefficient.
    pub moe: MoeConfig,
    /// Model width `d`.
    pub d_model: usize,
    /// Expert hidden width `f` (the dense FFN's).
    pub d_ff: usize,
}

/// `MoE(u) = λ_tok · h_tok + λ_seg · y_seg` (SPEC §4).
#[derive(Module, Debug)]
pub struct HybridMoe<B: Backend> {
    /// Token-level MoE (SPEC §2).
    pub token_moe: TokenMoe<B>,
    /// Segment-level MoE (SPEC §3).
    pub segment_moe: SegmentMoe<B>,
    /// `λ_tok`.
    pub lambda_token: f64,
    /// `λ_seg`.
    pub lambda_segment: f64,
}

/// Everything one hybrid layer decided, for losses, metrics and tests.
#[derive(Debug, Clone)]
pub struct LayerRouting<B: Backend> {
    /// Token-level router outputs.
    pub token: TokenRouting<B>,
    /// Segment-level router outputs.
    pub segment: SegmentRoutingOutput<B>,
    /// This layer's `L_bal` ([`balance_loss`]), `[1]`.
    pub balance_loss: Tensor<B, 1>,
}

impl HybridMoeConfig {
    /// Builds the layer with random experts and routers.
    pub fn init<B: Backend>(&self, device: &B::Device) -> HybridMoe<B> {
        let std = self.moe.router_init_std;
        HybridMoe {
            token_moe: TokenMoeLayerConfig::new(self.moe.token.clone(), self.d_model, self.d_ff)
                .with_router_init_std(std)
                .init(device),
            segment_moe: SegmentMoeLayerConfig::new(
                self.moe.segment.clone(),
                self.d_model,
                self.d_ff,
            )
            .with_router_init_std(std)
            .init(device),
            lambda_token: self.moe.lambda_token,
            lambda_segment: self.moe.lambda_segment,
        }
    }
}

impl<B: Backend> HybridMoe<B> {
    /// Applies both levels to `u: [B, T, d]` and fuses them. `padding` (`[B, T]`, `true` =
    /// padding) only keeps padded tokens out of the balance loss.
    pub fn forward(
        &self,
        u: Tensor<B, 3>,
        padding: Option<Tensor<B, 2, Bool>>,
    ) -> (Tensor<B, 3>, LayerRouting<B>) {
        let [b, t, d] = u.dims();
        let (h_tok, token) = self.token_moe.forward(u.clone().reshape([b * t, d]));
        let (y_seg, segment) = self.segment_moe.forward(u);
        let mask = padding.map(|pad| pad.reshape([b * t]).bool_not().float());
        let balance = balance_loss(
            token.probs.clone(),
            token.experts.clone(),
            self.token_moe.shared_index,
            mask,
        );
        let out = self.fuse(h_tok.reshape([b, t, d]), y_seg);
        let routing = LayerRouting {
            token,
            segment,
            balance_loss: balance,
        };
        (out, routing)
    }

    /// The fused output at inference for the new tokens `u: [B, t, d]` that follow
    /// `history: [B, S, d]` (this layer's earlier FFN inputs): the token level as in
    /// training, the segment level with [`SegmentMoe::forward_inference`].
    pub fn forward_inference(
        &self,
        history: Option<Tensor<B, 3>>,
        u: Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        let [b, t, d] = u.dims();
        let (h_tok, _) = self.token_moe.forward(u.clone().reshape([b * t, d]));
        let y_seg = self.segment_moe.forward_inference(history, u);
        self.fuse(h_tok.reshape([b, t, d]), y_seg)
    }

    /// `λ_tok · h_tok + λ_seg · y_seg`.
    fn fuse(&self, h_tok: Tensor<B, 3>, y_seg: Tensor<B, 3>) -> Tensor<B, 3> {
        h_tok
            .mul_scalar(self.lambda_token)
            .add(y_seg.mul_scalar(self.lambda_segment))
    }
}
