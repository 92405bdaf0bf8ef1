//! The dense SwiGLU FFN of Qwen2 (SPEC §1): `FFN(x) = W_down (silu(W_gate x) ⊙ W_up x)`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Tensor, activation::silu, backend::Backend};

/// Configuration of [`SwiGlu`].
#[derive(Config, Debug)]
pub struct SwiGluConfig {
    /// Model width `d`.
    pub d_model: usize,
    /// Hidden width `f`.
    pub d_ff: usize,
    /// Weight initialisation.
    #[config(default = "Initializer::Normal { mean: 0.0, std: 0.02 }")]
    pub initializer: Initializer,
}

/// A bias-free SwiGLU FFN whose parameter names mirror the Hugging Face keys
/// (`gate_proj`, `up_proj`, `down_proj`). burn's `Linear` stores weights `[in, out]`.
#[derive(Module, Debug)]
pub struct SwiGlu<B: Backend> {
    /// `W_gate`, `[d, f]`.
    pub gate_proj: Linear<B>,
    /// `W_up`, `[d, f]`.
    pub up_proj: Linear<B>,
    /// `W_down`, `[f, d]`.
    pub down_proj: Linear<B>,
}

impl SwiGluConfig {
    /// Builds the FFN.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SwiGlu<B> {
        let linear = |i, o| {
            LinearConfig::new(i, o)
                .with_bias(false)
                .with_initializer(self.initializer.clone())
                .init(device)
        };
        SwiGlu {
            gate_proj: linear(self.d_model, self.d_ff),
            up_proj: linear(self.d_model, self.d_ff),
            down_proj: linear(self.d_ff, self.d_model),
        }
    }
}

impl<B: Backend> SwiGlu<B> {
    /// Applies the FFN to the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate.mul(self.up_proj.forward(x)))
    }
}
