//! Function-preserving widening of the dense FFNs (Net2WiderNet, Chen et al. 2016): the
//! dense fine-tuning baseline that trains as many parameters as MultiPL-MoE does.
//!
//! Each FFN hidden unit is repeated `factor` times and `W_down` divided by `factor`, so
//! `W_down' (silu(W_gate' x) ⊙ W_up' x) = W_down (silu(W_gate x) ⊙ W_up x)` exactly. Copies
//! that stayed exact would receive identical gradients forever; the copies after the first
//! get the same relative noise as upcycled experts (`w · (1 + ε)`), which breaks the symmetry.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Tensor, backend::Backend};
use multipl_moe_core::decoder::FeedForward;
use multipl_moe_core::ffn::SwiGlu;
use multipl_moe_core::{CausalLm, ConfigError, MultiplMoeConfig, QwenConfig};

use crate::upcycle::perturb;

/// Widens every dense FFN of `model` from `f` to `factor · f` hidden units; hybrid layers are
/// left as they are. `noise` is the relative noise of the copies after the first (0 keeps
/// the function exact), drawn after seeding the backend with `seed`.
///
/// # Errors
/// [`ConfigError`] naming `factor` (must be ≥ 1) or `noise` (finite, ≥ 0).
pub fn widen_dense_ffn<B: Backend>(
    model: CausalLm<B>,
    config: &MultiplMoeConfig,
    factor: usize,
    noise: f64,
    seed: u64,
) -> Result<(CausalLm<B>, MultiplMoeConfig), ConfigError> {
    if factor == 0 {
        return Err(ConfigError::field("factor", factor, "must be >= 1"));
    }
    if !(noise.is_finite() && noise >= 0.0) {
        return Err(ConfigError::field(
            "noise",
            noise,
            "must be finite and >= 0",
        ));
    }
    let new_config = MultiplMoeConfig {
        model: QwenConfig {
            intermediate_size: config.model.intermediate_size * factor,
            ..config.model.clone()
        },
        ..config.clone()
    };
    new_config.validate()?;
    multipl_moe_core::model::materialize(&model);
    let device = model.embed_tokens.weight.device();
    let mut model = model;
    multipl_moe_core::rng::seeded::<B, _>(&device, seed, || {
        for layer in &mut model.layers {
            if let FeedForward::Dense(ffn) = &layer.mlp {
                layer.mlp = FeedForward::Dense(widen(ffn, factor, noise));
            }
        }
    });
    Ok((model, new_config))
}

/// One FFN, widened. burn stores `Linear` weights `[in, out]`: `W_gate`, `W_up` are `[d, f]`
/// (hidden units along dim 1), `W_down` is `[f, d]` (along dim 0).
fn widen<B: Backend>(ffn: &SwiGlu<B>, factor: usize, noise: f64) -> SwiGlu<B> {
    let repeat = |w: Tensor<B, 2>, dim: usize, scale: f64| {
        let copies = (0..factor)
            .map(|i| {
                let copy = w.clone().mul_scalar(scale);
                if i == 0 { copy } else { perturb(copy, noise) }
            })
            .collect();
        Tensor::cat(copies, dim)
    };
    let linear = |old: &Linear<B>, weight: Tensor<B, 2>| Linear {
        weight: Param::from_tensor(weight.detach()),
        bias: old.bias.clone(),
    };
    let inv = 1.0 / factor as f64;
    SwiGlu {
        gate_proj: linear(&ffn.gate_proj, repeat(ffn.gate_proj.weight.val(), 1, 1.0)),
        up_proj: linear(&ffn.up_proj, repeat(ffn.up_proj.weight.val(), 1, 1.0)),
        down_proj: linear(&ffn.down_proj, repeat(ffn.down_proj.weight.val(), 0, inv)),
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{Int, Tensor};
    use multipl_moe_core::{MultiplMoeConfig, QwenConfig};

    use super::widen_dense_ffn;
    use crate::freeze::{FreezePolicy, trainable_params};

    type TestBackend = NdArray<f32>;

    fn model() -> (multipl_moe_core::CausalLm<TestBackend>, MultiplMoeConfig) {
        let config = MultiplMoeConfig::new(QwenConfig::new(64, 16, 24, 2, 2, 1));
        let device = Default::default();
        let model = multipl_moe_core::rng::seeded::<TestBackend, _>(&device, 3, || {
            config.init::<TestBackend>(&device).expect("model")
        });
        (model, config)
    }

    #[test]
    fn widening_without_noise_keeps_the_logits_and_multiplies_the_ffn_parameters() {
        let (model, config) = model();
        let ids =
            Tensor::<TestBackend, 2, Int>::from_ints([[1, 5, 9, 2, 33, 7]], &Default::default());
        let before = model.forward(ids.clone(), None).logits;
        let ffn_only = FreezePolicy {
            shared_and_dense_ffn: true,
            ..FreezePolicy::none()
        };
        let ffn_before = trainable_params(&model, &ffn_only);
        let (wide, wide_config) = widen_dense_ffn(model, &config, 3, 0.0, 1).expect("widens");
        assert_eq!(wide_config.model.intermediate_size, 72);
        assert_eq!(trainable_params(&wide, &ffn_only), 3 * ffn_before);
        // 2 layers × 3 matrices of 16 × 24.
        assert_eq!(ffn_before, 2 * 3 * 16 * 24);
        let after = wide.forward(ids, None).logits;
        let diff = before.sub(after).abs().max().into_scalar();
        assert!(diff < 1e-5, "max |Δlogit| {diff}");
    }

    #[test]
    fn noise_breaks_the_copies_apart_and_bad_settings_are_refused() {
        let (model, config) = model();
        let (wide, _) = widen_dense_ffn(model.clone(), &config, 2, 0.01, 1).expect("widens");
        let multipl_moe_core::decoder::FeedForward::Dense(ffn) = &wide.layers[0].mlp else {
            panic!("dense layer expected");
        };
        let w = ffn.gate_proj.weight.val();
        let (a, b) = (w.clone().narrow(1, 0, 24), w.narrow(1, 24, 24));
        let diff = a.clone().sub(b).abs().max().into_scalar();
        let scale = a.abs().max().into_scalar();
        assert!(
            diff > 0.0 && diff < 0.1 * scale,
            "diff {diff}, scale {scale}"
        );
        assert!(widen_dense_ffn(model.clone(), &config, 0, 0.0, 1).is_err());
        assert!(widen_dense_ffn(model, &config, 2, f64::NAN, 1).is_err());
    }
}
