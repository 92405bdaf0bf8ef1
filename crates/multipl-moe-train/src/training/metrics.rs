//! What a training step reports, the dashboard's metrics, and the plain-line renderer used
//! when stdout is not a terminal.

use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, cast::ToElement};
use burn::train::metric::state::{FormatOptions, NumericMetricState};
use burn::train::metric::{
    Adaptor, ItemLazy, LossInput, Metric, MetricAttributes, MetricMetadata, MetricName, Numeric,
    NumericAttributes, NumericEntry, SerializedEntry,
};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use multipl_moe_core::LayerRouting;

use crate::data::corpus::Language;

/// Expert-load statistics of one batch, averaged over hybrid layers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RoutingStats {
    /// Largest fraction of token-level routed assignments taken by one expert.
    pub token_max_load: f64,
    /// Entropy of the token-level assignment distribution, divided by `ln E_r` (1 = uniform).
    pub token_entropy: f64,
    /// Largest fraction of segment-level assignments taken by one expert.
    pub segment_max_load: f64,
    /// Normalised entropy of the segment-level assignments.
    pub segment_entropy: f64,
}

fn load_stats(counts: &[f64]) -> (f64, f64) {
    let total: f64 = counts.iter().sum();
    if total <= 0.0 || counts.len() < 2 {
        return (1.0, 0.0);
    }
    let max = counts.iter().cloned().fold(0.0, f64::max) / total;
    let h: f64 = counts
        .iter()
        .filter(|&&c| c > 0.0)
        .map(|&c| -(c / total) * (c / total).ln())
        .sum();
    (max, h / (counts.len() as f64).ln())
}

impl RoutingStats {
    /// Reads the routing decisions back to the host (training loop only, not the forward).
    pub fn from_routing<B: Backend>(routing: &[Option<LayerRouting<B>>]) -> Self {
        let layers: Vec<&LayerRouting<B>> = routing.iter().flatten().collect();
        if layers.is_empty() {
            return Self::default();
        }
        let mut acc = Self::default();
        for r in &layers {
            let n_t = r.token.probs.dims()[1];
            let mut tok = vec![0.0; n_t];
            for e in r.token.experts.clone().into_data().iter::<i64>() {
                tok[e as usize] += 1.0;
            }
            let shared = r.token.shared_expert;
            let routed: Vec<f64> = tok
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != shared)
                .map(|(_, c)| *c)
                .collect();
            let (m, h) = load_stats(&routed);
            let [_, n_s] = r.segment.gates.dims();
            let mut seg = vec![0.0; n_s];
            for (i, g) in r
                .segment
                .gates
                .clone()
                .into_data()
                .iter::<f32>()
                .enumerate()
            {
                if g > 0.0 {
                    seg[i % n_s] += 1.0;
                }
            }
            let (sm, sh) = load_stats(&seg);
            acc.token_max_load += m;
            acc.token_entropy += h;
            acc.segment_max_load += sm;
            acc.segment_entropy += sh;
        }
        let n = layers.len() as f64;
        Self {
            token_max_load: acc.token_max_load / n,
            token_entropy: acc.token_entropy / n,
            segment_max_load: acc.segment_max_load / n,
            segment_entropy: acc.segment_entropy / n,
        }
    }
}

/// Output of a training or validation step.
#[derive(Debug, Clone)]
pub struct LmOutput<B: Backend> {
    /// `CE + α·L_bal`, differentiable.
    pub loss: Tensor<B, 1>,
    /// Mean next-token cross-entropy.
    pub ce: f64,
    /// `L_bal` averaged over hybrid layers (`None` for dense models).
    pub balance: Option<f64>,
    /// Cross-entropy of each sequence, `[B]`.
    pub per_sequence_ce: Tensor<B, 1>,
    /// Language of each sequence.
    pub languages: Vec<Language>,
    /// Expert-load statistics.
    pub stats: RoutingStats,
    /// Target tokens in the batch.
    pub tokens: f64,
    /// Summed next-token NLL of those tokens.
    pub nll_sum: f64,
}

impl<B: Backend> LmOutput<B> {
    /// Bundles a step's results.
    pub fn new(
        loss: Tensor<B, 1>,
        ce: f64,
        balance: Option<f64>,
        per_sequence_ce: Tensor<B, 1>,
        languages: Vec<Language>,
        stats: RoutingStats,
        tokens: f64,
    ) -> Self {
        Self {
            loss,
            ce,
            balance,
            per_sequence_ce,
            languages,
            stats,
            tokens,
            nll_sum: ce * tokens,
        }
    }

    /// Sets the summed NLL of the batch's target tokens (default: `ce × tokens`, exact when
    /// every sequence has the same number of targets).
    pub fn with_nll_sum(mut self, nll_sum: f64) -> Self {
        self.nll_sum = nll_sum;
        self
    }

    /// The loss as a number.
    pub fn loss_value(&self) -> f64 {
        self.loss.clone().into_scalar().to_f64()
    }
}

impl<B: Backend> ItemLazy for LmOutput<B> {
    type ItemSync = LmOutput<B>;

    fn sync(self) -> Self {
        self
    }
}

impl<B: Backend> Adaptor<LossInput<B>> for LmOutput<B> {
    fn adapt(&self) -> LossInput<B> {
        LossInput::new(self.loss.clone())
    }
}

/// The scalar values the dashboard shows besides the loss.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatInput {
    values: [f64; 7],
    tokens: f64,
    nll_sum: f64,
}

/// Which scalar a [`StatMetric`] shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Next-token cross-entropy.
    CrossEntropy = 0,
    /// Load-balance loss.
    Balance = 1,
    /// `exp(CE)` of the batch; the dashboard shows [`PerplexityMetric`] instead.
    Perplexity = 2,
    /// Token-level max-load fraction.
    TokenMaxLoad = 3,
    /// Token-level normalised entropy.
    TokenEntropy = 4,
    /// Segment-level max-load fraction.
    SegmentMaxLoad = 5,
    /// Segment-level normalised entropy.
    SegmentEntropy = 6,
}

impl Stat {
    fn name(self) -> &'static str {
        match self {
            Stat::CrossEntropy => "CE",
            Stat::Balance => "Balance loss",
            Stat::Perplexity => "Perplexity",
            Stat::TokenMaxLoad => "Token max load",
            Stat::TokenEntropy => "Token load entropy",
            Stat::SegmentMaxLoad => "Segment max load",
            Stat::SegmentEntropy => "Segment load entropy",
        }
    }
}

impl<B: Backend> Adaptor<StatInput> for LmOutput<B> {
    fn adapt(&self) -> StatInput {
        let (ce, bal) = (self.ce, self.balance.unwrap_or(0.0));
        let s = self.stats;
        StatInput {
            values: [
                ce,
                bal,
                ce.exp(),
                s.token_max_load,
                s.token_entropy,
                s.segment_max_load,
                s.segment_entropy,
            ],
            tokens: self.tokens,
            nll_sum: self.nll_sum,
        }
    }
}

/// A numeric dashboard metric showing one [`Stat`].
#[derive(Clone)]
pub struct StatMetric {
    stat: Stat,
    name: MetricName,
    state: NumericMetricState,
}

impl StatMetric {
    /// A metric for `stat`.
    pub fn new(stat: Stat) -> Self {
        Self {
            stat,
            name: Arc::new(stat.name().to_string()),
            state: NumericMetricState::default(),
        }
    }
}

impl Metric for StatMetric {
    type Input = StatInput;

    fn update(&mut self, input: &StatInput, _: &MetricMetadata) -> SerializedEntry {
        let v = input.values[self.stat as usize];
        self.state
            .update(v, 1, FormatOptions::new(self.name.clone()).precision(4))
    }

    fn clear(&mut self) {
        self.state.reset()
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: matches!(self.stat, Stat::TokenEntropy | Stat::SegmentEntropy),
        }
        .into()
    }
}

impl Numeric for StatMetric {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

/// `exp(Σ NLL / Σ tokens)`: the perplexity of all target tokens seen, the exponential of the
/// token-weighted mean cross-entropy (not the mean of per-batch perplexities, which
/// overweights bad batches).
pub fn perplexity(nll_sum: f64, tokens: f64) -> f64 {
    (nll_sum / tokens.max(1.0)).exp()
}

/// The dashboard's perplexity: [`perplexity`] over the whole epoch (a validation pass) so
/// far, with the batch's own beside it.
#[derive(Clone)]
pub struct PerplexityMetric {
    name: MetricName,
    nll_sum: f64,
    tokens: f64,
}

impl Default for PerplexityMetric {
    fn default() -> Self {
        Self {
            name: Arc::new(Stat::Perplexity.name().into()),
            nll_sum: 0.0,
            tokens: 0.0,
        }
    }
}

impl PerplexityMetric {
    /// Adds a batch; returns the perplexity of the epoch so far and of the batch.
    fn add(&mut self, input: &StatInput) -> (f64, f64) {
        self.nll_sum += input.nll_sum;
        self.tokens += input.tokens;
        (
            perplexity(self.nll_sum, self.tokens),
            perplexity(input.nll_sum, input.tokens),
        )
    }
}

impl Metric for PerplexityMetric {
    type Input = StatInput;

    fn update(&mut self, input: &StatInput, _: &MetricMetadata) -> SerializedEntry {
        let (epoch, batch) = self.add(input);
        SerializedEntry::new(
            format!("epoch {epoch:.4} - batch {batch:.4}"),
            NumericEntry::Value(batch).serialize(),
        )
    }

    fn clear(&mut self) {
        self.nll_sum = 0.0;
        self.tokens = 0.0;
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: None,
            higher_is_better: false,
        }
        .into()
    }
}

impl Numeric for PerplexityMetric {
    fn value(&self) -> NumericEntry {
        NumericEntry::Value(perplexity(self.nll_sum, self.tokens))
    }

    fn running_value(&self) -> NumericEntry {
        NumericEntry::Value(perplexity(self.nll_sum, self.tokens))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perplexity_is_exp_of_the_token_weighted_mean_ce() {
        // Two batches: CE 1.0 over 30 tokens and 3.0 over 10 tokens.
        let (a, b) = ((1.0, 30.0), (3.0, 10.0));
        let mut m = PerplexityMetric::default();
        for (ce, tokens) in [a, b] {
            let input = StatInput {
                nll_sum: ce * tokens,
                tokens,
                ..StatInput::default()
            };
            m.add(&input);
        }
        let want = ((30.0 + 30.0) / 40.0f64).exp();
        assert!((m.running_value().current() - want).abs() < 1e-12);
        let mean_of_exp = (1.0f64.exp() + 3.0f64.exp()) / 2.0;
        assert!(
            (want - mean_of_exp).abs() > 1.0,
            "the two definitions differ here"
        );
        m.clear();
        assert!(
            (m.running_value().current() - 1.0).abs() < 1e-12,
            "empty: exp(0)"
        );
    }
}

/// Tokens per second between consecutive training steps.
#[derive(Clone)]
pub struct TokensPerSecond {
    name: MetricName,
    last: Option<Instant>,
    state: NumericMetricState,
}

impl Default for TokensPerSecond {
    fn default() -> Self {
        Self {
            name: Arc::new("Tokens per second".into()),
            last: None,
            state: NumericMetricState::default(),
        }
    }
}

impl Metric for TokensPerSecond {
    type Input = StatInput;

    fn update(&mut self, input: &StatInput, _: &MetricMetadata) -> SerializedEntry {
        let now = Instant::now();
        let rate = self.last.map_or(0.0, |t| {
            input.tokens / now.duration_since(t).as_secs_f64().max(1e-9)
        });
        self.last = Some(now);
        self.state
            .update(rate, 1, FormatOptions::new(self.name.clone()).precision(0))
    }

    fn clear(&mut self) {
        self.state.reset();
        self.last = None;
    }

    fn name(&self) -> MetricName {
        self.name.clone()
    }

    fn attributes(&self) -> MetricAttributes {
        NumericAttributes {
            unit: Some("tok/s".into()),
            higher_is_better: true,
        }
        .into()
    }
}

impl Numeric for TokensPerSecond {
    fn value(&self) -> NumericEntry {
        self.state.current_value()
    }

    fn running_value(&self) -> NumericEntry {
        self.state.running_value()
    }
}

/// Prints one plain line per `every` training iterations (and each validation epoch) with
/// every metric's value; used when stdout is not a terminal.
pub struct PlainRenderer {
    every: usize,
    names: Vec<(String, String)>,
    latest: Vec<(String, String)>,
}

impl PlainRenderer {
    /// A renderer printing every `every` iterations.
    pub fn new(every: usize) -> Self {
        Self {
            every: every.max(1),
            names: Vec::new(),
            latest: Vec::new(),
        }
    }

    fn record(&mut self, state: MetricState) {
        let entry = match state {
            MetricState::Generic(e) | MetricState::Numeric(e, _) => e,
        };
        let key = format!("{:?}", entry.metric_id);
        let name = self
            .names
            .iter()
            .find(|(k, _)| *k == key)
            .map_or("?", |(_, n)| n.as_str());
        // Keep the running (epoch) value: "epoch X - batch Y" -> "X".
        let formatted = entry.serialized_entry.formatted;
        let value = formatted
            .trim()
            .strip_prefix("epoch ")
            .and_then(|r| r.split(" - ").next())
            .unwrap_or(formatted.trim());
        let text = format!("{name} {value}");
        match self.latest.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = text,
            None => self.latest.push((key, text)),
        }
    }

    fn line(&self, split: &str, item: &TrainingProgress) {
        let values: Vec<&str> = self.latest.iter().map(|(_, v)| v.trim()).collect();
        println!(
            "[{split}] epoch {}/{} iter {}: {}",
            item.global_progress.items_processed,
            item.global_progress.items_total,
            item.iteration.unwrap_or(0),
            values.join(" | ")
        );
    }
}

impl MetricsRendererTraining for PlainRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state);
    }

    fn render_train(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        if item.iteration.unwrap_or(0).is_multiple_of(self.every) {
            self.line("train", &item);
        }
    }

    fn render_valid(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        let done = item
            .progress
            .as_ref()
            .is_some_and(|p| p.items_processed >= p.items_total);
        if done {
            self.line("valid", &item);
        }
    }
}

impl MetricsRendererEvaluation for PlainRenderer {
    fn render_test(&mut self, _: EvaluationProgress, _: Vec<ProgressType>) {}

    fn update_test(&mut self, _: EvaluationName, _: MetricState) {}
}

impl MetricsRenderer for PlainRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: burn::train::metric::MetricDefinition) {
        self.names
            .push((format!("{:?}", definition.metric_id), definition.name));
    }
}
