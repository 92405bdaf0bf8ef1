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
        let score = |i: usize| {
            let x = logits[i] as f64;
            if x.is_nan() { f64::NEG_INFINITY } else { x }
        };
        // Tokens by decreasing score, lowest index first on ties. Only the prefix that the
        // filters and the draw reach is sorted (at a low temperature a few dozen tokens hold
        // nearly all the mass), not the whole vocabulary at every step of every row.
        let mut order = SortedPrefix::new(logits.len(), score);
        let n = match self.config.top_k {
            0 => logits.len(),
            k => k.min(logits.len()),
        };
        let max = (0..logits.len())
            .map(score)
            .fold(f64::NEG_INFINITY, f64::max);
        let weight = |i: usize| ((score(i) - max) * inv_t).exp();
        // Sums over the whole vocabulary skip the tokens whose weight is below e^-60 of the
        // top one's: even 10^5 of them add under 10^-21 to a sum of at least 1, below f64's
        // resolution, and at a low temperature that is nearly every token (no `exp` for them).
        let cut = max - 60.0 * self.config.temperature;
        let weight_sum = |scale: f64| -> f64 {
            (0..logits.len())
                .filter(|&i| score(i) >= cut)
                .map(|i| weight(i) * scale)
                .sum()
        };
        let z: f64 = if n < logits.len() {
            order.first(n).iter().map(|&i| weight(i)).sum()
        } else {
            weight_sum(1.0)
        };
        let prob = |i: usize| weight(i) / z;
        // Top-p: the shortest prefix whose probability reaches `top_p`.
        let keep = if self.config.top_p < 1.0 {
            let mut cumulative = 0.0;
            let mut keep = n;
            let mut k = 0;
            'grow: while k < n {
                let from = k;
                k = (k.max(16) * 4).min(n);
                for (j, &i) in order.first(k)[from..].iter().enumerate() {
                    cumulative += prob(i);
                    if cumulative >= self.config.top_p {
                        keep = from + j + 1;
                        break 'grow;
                    }
                }
            }
            keep
        } else {
            n
        };
        let total: f64 = if keep < n {
            order.first(keep).iter().map(|&i| prob(i)).sum()
        } else if n < logits.len() {
            1.0
        } else {
            weight_sum(1.0 / z)
        };
        let mut target = self.rng.unit() * total;
        let mut k = 0;
        while k < keep {
            let from = k;
            k = (k.max(16) * 4).min(keep);
            for &id in &order.first(k)[from..] {
                let p = prob(id);
                if target < p {
                    return id;
                }
                target -= p;
            }
        }
        order.first(keep).last().copied().unwrap_or(0)
    }
}

/// Token ids ordered by decreasing score (lowest id first on ties), sorted only as far as
/// asked: [`Self::first`] partitions around the `k`-th (`select_nth_unstable`, O(V)) and sorts
/// the `k` before it.
struct SortedPrefix<F: Fn(usize) -> f64> {
    order: Vec<usize>,
    sorted: usize,
    score: F,
}

impl<F: Fn(usize) -> f64> SortedPrefix<F> {
    fn new(len: usize, score: F) -> Self {
        Self {
            order: (0..len).collect(),
            sorted: 0,
            score,
        }
    }

    /// The first `k` ids in order.
    fn first(&mut self, k: usize) -> &[usize] {
        let k = k.min(self.order.len());
        if k > self.sorted {
            let score = &self.score;
            let cmp = |a: &usize, b: &usize| score(*b).total_cmp(&score(*a)).then(a.cmp(b));
            if k < self.order.len() {
                self.order.select_nth_unstable_by(k - 1, cmp);
            }
            self.order[..k].sort_by(cmp);
            self.sorted = k;
        }
        &self.order[..k]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The filters and the draw written plainly: the whole vocabulary sorted, every
    /// probability computed (the sampler sorts only the prefix it reaches).
    fn reference(config: &SamplingConfig, rng: &mut Rng, logits: &[f32]) -> usize {
        let score = |i: usize| logits[i] as f64;
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
        if config.top_k > 0 {
            order.truncate(config.top_k);
        }
        let max = score(order[0]);
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| ((score(i) - max) / config.temperature).exp())
            .collect();
        let z: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= z);
        let mut cumulative = 0.0;
        let keep = probs
            .iter()
            .position(|&p| {
                cumulative += p;
                cumulative >= config.top_p
            })
            .map_or(probs.len(), |i| i + 1);
        let mut target = rng.unit() * probs[..keep].iter().sum::<f64>();
        for (&id, &p) in order.iter().zip(&probs).take(keep) {
            if target < p {
                return id;
            }
            target -= p;
        }
        order[keep - 1]
    }

    /// On a 2000-token vocabulary, at temperatures and thresholds whose nucleus holds from a
    /// few to over a thousand tokens (the sorted prefix grows 64 → 256 → 1024 → all), the
    /// sampler draws the ids of the plain reference from the same seed.
    #[test]
    fn sorting_only_the_reached_prefix_draws_what_a_full_sort_draws() {
        let mut rng = Rng(7);
        let logits: Vec<f32> = (0..2000).map(|_| (rng.unit() * 8.0) as f32).collect();
        for (temperature, top_k, top_p) in [
            (0.2, 0, 0.95),
            (1.0, 0, 0.9),
            (3.0, 0, 0.99),
            (5.0, 0, 1.0),
            (1.0, 100, 0.9),
            (2.0, 1500, 1.0),
        ] {
            let config = SamplingConfig::new()
                .with_temperature(temperature)
                .with_top_k(top_k)
                .with_top_p(top_p)
                .with_seed(3);
            let mut sampler = Sampler::new(config.clone()).expect("valid");
            let mut plain = Rng(3);
            let drawn: Vec<usize> = (0..300).map(|_| sampler.sample(&logits)).collect();
            let want: Vec<usize> = (0..300)
                .map(|_| reference(&config, &mut plain, &logits))
                .collect();
            assert_eq!(drawn, want, "T {temperature}, top-k {top_k}, top-p {top_p}");
            let distinct: std::collections::BTreeSet<_> = drawn.iter().collect();
            assert!(distinct.len() > 1, "T {temperature}: one id only");
        }
    }
}
