//! Rotary position embedding in the *rotate-half* layout of Hugging Face Qwen2 (SPEC §1).
//!
//! Channel `i < h/2` of a head is paired with channel `i + h/2` (not with `i + 1` as in
//! burn-nn's interleaved `RotaryEncoding`), and `inv_freq_i = θ^(-2i/h)`.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, TensorData, backend::Backend};

/// Configuration of [`Rope`].
#[derive(Config, Debug)]
pub struct RopeConfig {
    /// Head size `h` (even).
    pub head_dim: usize,
    /// Longest position the tables cover.
    pub max_positions: usize,
    /// Rotary base θ.
    #[config(default = 10000.0)]
    pub theta: f64,
}

/// Precomputed `cos`/`sin` tables `[max_positions, head_dim]`, shared by every layer.
#[derive(Module, Debug)]
pub struct Rope<B: Backend> {
    /// `cos(p · inv_freq)` repeated over both halves.
    pub cos: Tensor<B, 2>,
    /// `sin(p · inv_freq)` repeated over both halves.
    pub sin: Tensor<B, 2>,
}

impl RopeConfig {
    /// Computes the tables in f64 on the host, once.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Rope<B> {
        let half = self.head_dim / 2;
        let mut cos = Vec::with_capacity(self.max_positions * self.head_dim);
        let mut sin = Vec::with_capacity(self.max_positions * self.head_dim);
        for p in 0..self.max_positions {
            for i in 0..self.head_dim {
                let inv_freq = self
                    .theta
                    .powf(-2.0 * (i % half) as f64 / self.head_dim as f64);
                let angle = p as f64 * inv_freq;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let shape = [self.max_positions, self.head_dim];
        Rope {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
        }
    }
}

impl<B: Backend> Rope<B> {
    /// Rotates `x: [B, heads, T, h]` whose first position is `start`.
    pub fn apply(&self, x: Tensor<B, 4>, start: usize) -> Tensor<B, 4> {
        let [_, _, t, h] = x.dims();
        let cos = self.cos.clone().narrow(0, start, t).reshape([1, 1, t, h]);
        let sin = self.sin.clone().narrow(0, start, t).reshape([1, 1, t, h]);
        let rotated = rotate_half(x.clone());
        x.mul(cos).add(rotated.mul(sin))
    }

    /// Number of positions covered.
    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }
}

/// `rotate_half([x1, x2]) = [-x2, x1]` over the last dimension.
pub fn rotate_half<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let h = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, h / 2);
    let x2 = x.narrow(3, h / 2, h - h / 2);
    Tensor::cat(vec![x2.neg(), x1], 3)
}
