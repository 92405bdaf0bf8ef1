//! Rotary position embedding in the *rotate-half* layout of Hugging Face Qwen2 (SPEC §1), with
//! transformers' `default`, `linear`, `yarn` and `llama3` frequency scalings.
//!
//! Channel `i < h/2` of a head is paired with channel `i + h/2` (not with `i + 1` as in
//! burn-nn's interleaved `RotaryEncoding`), and `inv_freq_i = θ^(-2i/h)` before scaling.
//! The tables cover the first `max_positions` positions, at most [`TABLE_POSITIONS`];
//! positions past them are computed on the fly, as transformers does for any position it is
//! given (so a long-context model does not hold gigabytes of tables).

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// How the rotary frequencies are scaled (transformers' `rope_parameters.rope_type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Position interpolation: `inv_freq_i / factor` (`_compute_linear_scaling_rope_parameters`).
    Linear {
        /// The interpolation factor (> 0).
        factor: f64,
    },
    /// YaRN (Peng et al., 2023), as `_compute_yarn_parameters` of transformers 5: frequencies
    /// blended between interpolation (`/ factor`) and extrapolation by a linear ramp over the
    /// dimensions between the correction range of `beta_fast`/`beta_slow` rotations at
    /// `original_max_position_embeddings`, and cos/sin multiplied by `attention_factor`.
    Yarn {
        /// Context extension factor (> 0).
        factor: f64,
        /// Context length of pre-training.
        original_max_position_embeddings: usize,
        /// Scale of cos/sin (transformers' `attention_factor`, already resolved from
        /// `mscale`/`mscale_all_dim` or `0.1·ln(factor) + 1`).
        attention_factor: f64,
        /// Rotations bounding the extrapolated dimensions (default 32).
        beta_fast: f64,
        /// Rotations bounding the interpolated dimensions (default 1).
        beta_slow: f64,
        /// Whether the correction range is rounded outwards to whole dimensions (default true).
        truncate: bool,
    },
    /// Llama 3.1's scaling (`_compute_llama3_parameters` of transformers): wavelengths longer
    /// than `original_max_position_embeddings / low_freq_factor` are interpolated (`/ factor`),
    /// those shorter than `original_max_position_embeddings / high_freq_factor` kept, and the
    /// ones between blended by `(original / wavelen − low) / (high − low)`.
    Llama3 {
        /// Interpolation factor of the low frequencies (> 0; Llama 3.1: 8).
        factor: f64,
        /// Llama 3.1: 1.
        low_freq_factor: f64,
        /// Llama 3.1: 4; must exceed `low_freq_factor`.
        high_freq_factor: f64,
        /// Context length of pre-training (Llama 3.1: 8192).
        original_max_position_embeddings: usize,
    },
}

impl RopeScaling {
    /// YaRN's default `attention_factor`: `get_mscale(factor, mscale) / get_mscale(factor,
    /// mscale_all_dim)` when both are given and non-zero, else `get_mscale(factor)`, with
    /// `get_mscale(s, m) = 0.1·m·ln(s) + 1` for `s > 1` and 1 otherwise.
    pub fn yarn_attention_factor(factor: f64, mscale: Option<f64>, all_dim: Option<f64>) -> f64 {
        let get = |s: f64, m: f64| {
            if s <= 1.0 {
                1.0
            } else {
                0.1 * m * s.ln() + 1.0
            }
        };
        match (mscale, all_dim) {
            (Some(m), Some(a)) if m != 0.0 && a != 0.0 => get(factor, m) / get(factor, a),
            _ => get(factor, 1.0),
        }
    }

    /// Rejects non-finite or non-positive factors; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |field: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(ConfigError::field(field, v, "must be finite and > 0"))
            }
        };
        match self {
            Self::Linear { factor } => positive("rope_parameters.factor", *factor),
            Self::Yarn {
                factor,
                original_max_position_embeddings,
                attention_factor,
                beta_fast,
                beta_slow,
                ..
            } => {
                positive("rope_parameters.factor", *factor)?;
                positive("rope_parameters.attention_factor", *attention_factor)?;
                positive("rope_parameters.beta_fast", *beta_fast)?;
                positive("rope_parameters.beta_slow", *beta_slow)?;
                positive_context(*original_max_position_embeddings)
            }
            Self::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                positive("rope_parameters.factor", *factor)?;
                positive("rope_parameters.low_freq_factor", *low_freq_factor)?;
                positive("rope_parameters.high_freq_factor", *high_freq_factor)?;
                if high_freq_factor <= low_freq_factor {
                    return Err(ConfigError::field(
                        "rope_parameters.high_freq_factor",
                        high_freq_factor,
                        format!("must exceed low_freq_factor = {low_freq_factor}"),
                    ));
                }
                positive_context(*original_max_position_embeddings)
            }
        }
    }
}

fn positive_context(original: usize) -> Result<(), ConfigError> {
    if original == 0 {
        return Err(ConfigError::field(
            "rope_parameters.original_max_position_embeddings",
            0,
            "must be positive",
        ));
    }
    Ok(())
}

/// Inverse frequencies `[h/2]` and the cos/sin scale of a rotary embedding, computed in f32
/// as transformers does (its `inv_freq` buffer is f32).
pub fn inv_freq(head_dim: usize, theta: f64, scaling: Option<&RopeScaling>) -> (Vec<f32>, f32) {
    let half = head_dim / 2;
    // transformers: base ** (arange(0, dim, 2).float() / dim), in f32.
    let pos_freqs: Vec<f32> = (0..half)
        .map(|i| (theta as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect();
    match scaling {
        None => (pos_freqs.iter().map(|p| 1.0 / p).collect(), 1.0),
        Some(RopeScaling::Linear { factor }) => (
            pos_freqs
                .iter()
                .map(|p| (1.0 / p) / *factor as f32)
                .collect(),
            1.0,
        ),
        Some(RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            attention_factor,
            beta_fast,
            beta_slow,
            truncate,
        }) => {
            let (low, high) = yarn_correction_range(
                *beta_fast,
                *beta_slow,
                head_dim,
                theta,
                *original_max_position_embeddings,
                *truncate,
            );
            let high = if low == high { high + 0.001 } else { high };
            let inv = pos_freqs
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let extrapolation = 1.0 / p;
                    let interpolation = 1.0 / (*factor as f32 * p);
                    let ramp =
                        ((i as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
                    let extrapolation_factor = 1.0 - ramp;
                    interpolation * (1.0 - extrapolation_factor)
                        + extrapolation * extrapolation_factor
                })
                .collect();
            (inv, *attention_factor as f32)
        }
        Some(RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        }) => {
            // As transformers, in f32 on the f32 default frequencies.
            let (factor, low, high) = (
                *factor as f32,
                *low_freq_factor as f32,
                *high_freq_factor as f32,
            );
            let original = *original_max_position_embeddings as f32;
            let (low_wavelen, high_wavelen) = (original / low, original / high);
            let inv = pos_freqs
                .iter()
                .map(|p| {
                    let inv = 1.0 / p;
                    let wavelen = 2.0 * std::f32::consts::PI / inv;
                    if wavelen > low_wavelen {
                        inv / factor
                    } else if wavelen < high_wavelen {
                        inv
                    } else {
                        let smooth = (original / wavelen - low) / (high - low);
                        (1.0 - smooth) * inv / factor + smooth * inv
                    }
                })
                .collect();
            (inv, 1.0)
        }
    }
}

/// YaRN's correction range `(low, high)` in dimensions: the dimension at which a frequency
/// makes `beta_fast` (resp. `beta_slow`) rotations over `original_max` positions, floored
/// (resp. ceiled) when `truncate`, clamped to `[0, h − 1]`.
fn yarn_correction_range(
    beta_fast: f64,
    beta_slow: f64,
    head_dim: usize,
    theta: f64,
    original_max: usize,
    truncate: bool,
) -> (f64, f64) {
    let dim = head_dim as f64;
    let correction_dim = |rotations: f64| {
        dim * (original_max as f64 / (rotations * 2.0 * std::f64::consts::PI)).ln()
            / (2.0 * theta.ln())
    };
    let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
    if truncate {
        low = low.floor();
        high = high.ceil();
    }
    (low.max(0.0), high.min(dim - 1.0))
}

/// Configuration of [`Rope`].
#[derive(Config, Debug)]
pub struct RopeConfig {
    /// Head size `h` (even).
    pub head_dim: usize,
    /// The model's context (`max_position_embeddings`); the precomputed tables cover up to
    /// [`TABLE_POSITIONS`] of these positions, later ones are computed when asked.
    pub max_positions: usize,
    /// Rotary base θ.
    #[config(default = 10000.0)]
    pub theta: f64,
    /// Frequency scaling; `None` is transformers' `default`.
    #[config(default = "None")]
    pub scaling: Option<RopeScaling>,
}

/// Most positions the precomputed tables hold (Qwen1.5's context).
pub const TABLE_POSITIONS: usize = 32_768;

/// Precomputed `cos`/`sin` tables `[min(max_positions, TABLE_POSITIONS), head_dim]`, shared
/// by every layer.
#[derive(Module, Debug)]
pub struct Rope<B: Backend> {
    /// `attention_factor · cos(p · inv_freq)` repeated over both halves.
    pub cos: Tensor<B, 2>,
    /// `attention_factor · sin(p · inv_freq)` repeated over both halves.
    pub sin: Tensor<B, 2>,
    /// `inv_freq` and the cos/sin scale, for positions past the tables (not a parameter).
    #[module(skip)]
    pub frequencies: (Vec<f32>, f32),
    /// The context: positions `0..max_positions` are valid (not a parameter).
    #[module(skip)]
    pub max_positions: usize,
}

impl RopeConfig {
    /// Computes the tables on the host, once.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Rope<B> {
        let frequencies = inv_freq(self.head_dim, self.theta, self.scaling.as_ref());
        let (cos, sin) = tables(
            &frequencies,
            0,
            self.max_positions.min(TABLE_POSITIONS),
            device,
        );
        Rope {
            cos,
            sin,
            frequencies,
            max_positions: self.max_positions,
        }
    }
}

/// cos/sin `[len, h]` for positions `start..start + len`: the angle `p · inv_freq_i` in f32
/// (transformers' `inv_freq @ position_ids` in f32), cos/sin then scaled.
fn tables<B: Backend>(
    (inv_freq, scale): &(Vec<f32>, f32),
    start: usize,
    len: usize,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let head_dim = inv_freq.len() * 2;
    let mut cos = Vec::with_capacity(len * head_dim);
    let mut sin = Vec::with_capacity(len * head_dim);
    for p in start..start + len {
        for i in 0..head_dim {
            let angle = p as f32 * inv_freq[i % inv_freq.len()];
            cos.push(angle.cos() * scale);
            sin.push(angle.sin() * scale);
        }
    }
    let shape = [len, head_dim];
    (
        Tensor::from_data(TensorData::new(cos, shape), device),
        Tensor::from_data(TensorData::new(sin, shape), device),
    )
}

impl<B: Backend> Rope<B> {
    /// Rotates `x: [B, heads, T, h]` whose first position is `start`. Positions past the
    /// tables are computed for this call.
    pub fn apply(&self, x: Tensor<B, 4>, start: usize) -> Tensor<B, 4> {
        let [_, _, t, h] = x.dims();
        let (cos, sin) = if start + t <= self.cos.dims()[0] {
            (
                self.cos.clone().narrow(0, start, t),
                self.sin.clone().narrow(0, start, t),
            )
        } else {
            tables(&self.frequencies, start, t, &x.device())
        };
        let cos = cos.reshape([1, 1, t, h]);
        let sin = sin.reshape([1, 1, t, h]);
        let rotated = rotate_half(x.clone());
        x.mul(cos).add(rotated.mul(sin))
    }

    /// The context: the number of valid positions (`max_position_embeddings`).
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }
}

/// `rotate_half([x1, x2]) = [-x2, x1]` over the last dimension.
pub fn rotate_half<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let h = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, h / 2);
    let x2 = x.narrow(3, h / 2, h - h / 2);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend;

    /// transformers' default RoPE: `inv_freq_i = θ^(-2i/h)`.
    #[test]
    fn default_frequencies_follow_the_formula() {
        let (inv, scale) = inv_freq(8, 10000.0, None);
        assert_eq!(scale, 1.0);
        for (i, f) in inv.iter().enumerate() {
            let expected = 10000f64.powf(-((2 * i) as f64) / 8.0);
            assert!((*f as f64 - expected).abs() < 1e-6 * expected.max(1e-3));
        }
    }

    #[test]
    fn linear_scaling_divides_every_frequency() {
        let (plain, _) = inv_freq(16, 1e6, None);
        let (linear, _) = inv_freq(16, 1e6, Some(&RopeScaling::Linear { factor: 4.0 }));
        for (p, l) in plain.iter().zip(&linear) {
            assert!((p / 4.0 - l).abs() <= 1e-7 * p);
        }
    }

    /// YaRN keeps the fastest frequencies (extrapolation), divides the slowest by `factor`
    /// (interpolation), and scales cos/sin by `0.1·ln(factor) + 1`.
    #[test]
    fn yarn_blends_extrapolation_and_interpolation() {
        let factor = 4.0;
        let scaling = RopeScaling::Yarn {
            factor,
            original_max_position_embeddings: 64,
            attention_factor: RopeScaling::yarn_attention_factor(factor, None, None),
            beta_fast: 32.0,
            beta_slow: 1.0,
            truncate: true,
        };
        let (plain, _) = inv_freq(64, 10000.0, None);
        let (yarn, scale) = inv_freq(64, 10000.0, Some(&scaling));
        assert!((scale as f64 - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-6);
        assert_eq!(yarn[0], plain[0]);
        let last = plain.len() - 1;
        assert!((yarn[last] - plain[last] / 4.0).abs() <= 1e-7 * plain[last]);
        for i in 0..plain.len() {
            assert!(yarn[i] <= plain[i] * (1.0 + 1e-6) && yarn[i] >= plain[i] / 4.0 * (1.0 - 1e-6));
        }
    }

    /// Positions past the tables give what longer tables would have given.
    #[test]
    fn positions_past_the_tables_match_longer_tables() {
        let device = Default::default();
        let short = RopeConfig::new(8, 4).init::<TestBackend>(&device);
        let long = RopeConfig::new(8, 16).init::<TestBackend>(&device);
        let x = Tensor::<TestBackend, 4>::ones([1, 2, 6, 8], &device);
        let a = short.apply(x.clone(), 3).into_data();
        let b = long.apply(x, 3).into_data();
        a.assert_approx_eq::<f32>(&b, burn::tensor::Tolerance::absolute(1e-6));
    }

    /// A long context keeps the tables at `TABLE_POSITIONS` rows, and positions past them
    /// still rotate as a table would (the context is not cut).
    #[test]
    fn a_long_context_caps_the_tables_not_the_context() {
        let device = Default::default();
        let huge = RopeConfig::new(8, 1 << 40).init::<TestBackend>(&device);
        assert_eq!(huge.cos.dims(), [TABLE_POSITIONS, 8]);
        assert_eq!(huge.max_positions(), 1 << 40);
        let near_end = RopeConfig::new(8, TABLE_POSITIONS + 8).init::<TestBackend>(&device);
        let x = Tensor::<TestBackend, 4>::ones([1, 2, 6, 8], &device);
        let start = TABLE_POSITIONS - 2;
        let expected = tables::<TestBackend>(&near_end.frequencies, start, 6, &device);
        let rotated = huge.apply(x.clone(), start);
        let by_hand = x
            .clone()
            .mul(expected.0.reshape([1, 1, 6, 8]))
            .add(rotate_half(x).mul(expected.1.reshape([1, 1, 6, 8])));
        rotated.into_data().assert_approx_eq::<f32>(
            &by_hand.into_data(),
            burn::tensor::Tolerance::absolute(1e-6),
        );
    }

    #[test]
    fn rotate_half_swaps_and_negates_halves() {
        let device = Default::default();
        let x = Tensor::<TestBackend, 4>::from_floats([[[[1.0, 2.0, 3.0, 4.0]]]], &device);
        let r: Vec<f32> = rotate_half(x).into_data().into_vec().unwrap();
        assert_eq!(r, vec![-3.0, -4.0, 1.0, 2.0]);
    }
}
