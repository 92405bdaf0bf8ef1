//! Next-token choice from logits: greedy, temperature, top-k and top-p (nucleus), seeded.

use burn::config::Config;

use crate::error::ConfigError;
use crate::rng::Rng;

/// How [`Sampler`] picks the next token, with the Hugging Face meanings.
#[derive(Config, Debug, PartialEq)]
pub struct SamplingConfig {
    /// Softmax temperature; `0` means greedy (argmax, lowest id on ties).
    #[config(default = 0.0)]
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens; `0` keeps all.
    #[config(default = 0)]
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; `1`
    /// keeps all.
    #[config(default = 1.0)]
    pub top_p: f64,
    /// Seed of the sampling stream.
    #[config(default = 0)]
    pub seed: u64,
}

impl SamplingConfig {
    /// Checks the ranges: `temperature >= 0` and finite, `0 < top_p <= 1`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(ConfigError::field(
                "temperature",
                self.temperature,
                "must be finite and >= 0 (0 = greedy)",
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ConfigError::field("top_p", self.top_p, "must be in (0, 1]"));
        }
        Ok(())
    }

    /// Whether this is greedy decoding.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// Picks tokens from logits according to a [`SamplingConfig`].
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplingConfig,
    rng: Rng,
}

impl Sampler {
    /// A sampler seeded with `config.seed`.
    pub fn new(config: SamplingConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let rng = Rng(config.seed);
        Ok(Self { config, rng })
    }

    /// The token id to emit after `logits` (one position, `[vocab]`).
    ///
    /// Order of filters as in Hugging Face: temperature, then top-k, then top-p on the
    /// renormalised remainder. Probabilities are computed in f64. NaN logits count as −∞.
    pub fn sample(&mut self, logits: &[f32]) -> usize {
        if self.config.is_greedy() {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.config.temperature;
        let mut order: Vec<usize> = (0..logits.len()).collect();
        let score = |i: usize| {
            let x = logits[i] as f64;
            if x.is_nan() { f64::NEG_INFINITY } else { x }
        };
        order.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
        if self.config.top_k > 0 {
            order.truncate(self.config.top_k);
        }
        let max = order.first().map_or(0.0, |&i| score(i));
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| ((score(i) - max) * inv_t).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.config.top_p < 1.0 {
            let mut cumulative = 0.0;
            let keep = probs
                .iter()
                .position(|&p| {
                    cumulative += p;
                    cumulative >= self.config.top_p
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            order.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut target = self.rng.unit() * total;
        for (&id, &p) in order.iter().zip(&probs) {
            if target < p {
                return id;
            }
            target -= p;
        }
        order.last().copied().unwrap_or(0)
    }
}

/// Index of the largest value, lowest index on ties; NaN never wins.
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in values.iter().enumerate() {
        if x > values[best] || values[best].is_nan() && !x.is_nan() {
            best = i;
        }
    }
    best
}
