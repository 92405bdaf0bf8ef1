//! RMSNorm with f32 statistics, as Hugging Face `Qwen2RMSNorm` (SPEC §1).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{DType, Tensor, backend::Backend};

/// Configuration of [`RmsNorm`].
#[derive(Config, Debug)]
pub struct RmsNormConfig {
    /// Width of the normalised dimension.
    pub d_model: usize,
    /// Epsilon added to the mean square.
    #[config(default = 1e-6)]
    pub epsilon: f64,
}

/// `y = w ⊙ x / sqrt(mean(x²) + eps)`; mean and rsqrt computed in f32 whatever the
/// backend's float type, the scale applied after casting back (as transformers does).
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    /// Per-channel scale `w`, `[d_model]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Epsilon added to the mean square.
    pub epsilon: f64,
}

impl RmsNormConfig {
    /// Builds the norm with unit scale.
    pub fn init<B: Backend>(&self, device: &B::Device) -> RmsNorm<B> {
        RmsNorm {
            weight: Param::from_tensor(Tensor::ones([self.d_model], device)),
            epsilon: self.epsilon,
        }
    }
}

impl<B: Backend> RmsNorm<B> {
    /// Normalises the last dimension of `x`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let x32 = x.cast(DType::F32);
        let rms = x32
            .clone()
            .square()
            .mean_dim(D - 1)
            .add_scalar(self.epsilon)
            .sqrt();
        let normed = x32.div(rms).cast(dtype);
        normed.mul(self.weight.val().unsqueeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend as B;

    /// `y = w ⊙ x / sqrt(mean(x²) + eps)` by hand: x = (3, 4), mean(x²) = 12.5.
    #[test]
    fn rms_norm_divides_by_the_root_mean_square() {
        let device = Default::default();
        let mut norm = RmsNormConfig::new(2).with_epsilon(1e-6).init::<B>(&device);
        norm.weight = Param::from_tensor(Tensor::from_floats([1.0, 2.0], &device));
        let y: Vec<f32> = norm
            .forward(Tensor::<B, 2>::from_floats([[3.0, 4.0]], &device))
            .into_data()
            .into_vec()
            .unwrap();
        let rms = (12.5f32 + 1e-6).sqrt();
        assert!((y[0] - 3.0 / rms).abs() < 1e-6 && (y[1] - 8.0 / rms).abs() < 1e-6);
    }
}
