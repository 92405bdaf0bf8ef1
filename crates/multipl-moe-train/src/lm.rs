//! The training wrapper: `L = CE + α·L_bal` (SPEC §4) as burn-train `TrainStep` /
//! `InferenceStep`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use multipl_moe_core::CausalLm;

use crate::data::LmBatch;
use crate::metrics::{LmOutput, RoutingStats};

/// Set when a step produced a non-finite loss; the trainer then stops and reports it.
#[derive(Debug, Clone, Default)]
pub struct NonFiniteFlag(pub Arc<AtomicBool>);

impl NonFiniteFlag {
    /// Whether a non-finite loss was seen.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A [`CausalLm`] with its training objective.
#[derive(Module, Debug)]
pub struct LanguageModel<B: Backend> {
    /// The model.
    pub lm: CausalLm<B>,
    /// `α` of `L = CE + α·L_bal`.
    pub balance_coef: f64,
    /// Token id excluded from the loss (padding), if any.
    pub pad_id: Option<u32>,
    /// Raised on a non-finite loss.
    #[module(skip)]
    pub non_finite: NonFiniteFlag,
}

impl<B: Backend> LanguageModel<B> {
    /// Wraps `lm` with `α = balance_coef`.
    pub fn new(lm: CausalLm<B>, balance_coef: f64) -> Self {
        Self { lm, balance_coef, pad_id: None, non_finite: NonFiniteFlag::default() }
    }

    /// Loss and metrics of a batch. Position `t` predicts token `t+1`; targets equal to
    /// `pad_id` count in neither the CE nor the balance loss.
    pub fn forward_loss(&self, batch: LmBatch<B>) -> LmOutput<B> {
        let [b, t] = batch.tokens.dims();
        let inputs = batch.tokens.clone().narrow(1, 0, t - 1);
        let targets: Tensor<B, 2, Int> = batch.tokens.narrow(1, 1, t - 1);
        let padding = self.pad_id.map(|p| inputs.clone().equal_elem(p as i64));
        let out = self.lm.forward(inputs, padding);
        let balance_loss = out.balance_loss();
        let logp = log_softmax(out.logits, 2);
        let nll = logp.gather(2, targets.clone().unsqueeze_dim(2)).reshape([b, t - 1]).neg();
        let mask = match self.pad_id {
            Some(p) => targets.not_equal_elem(p as i64).float(),
            None => nll.ones_like(),
        };
        let per_seq = nll.mul(mask.clone()).sum_dim(1).div(mask.clone().sum_dim(1).clamp_min(1.0)).reshape([b]);
        let ce = per_seq.clone().mean();
        let (loss, balance) = match balance_loss {
            Some(bal) => (ce.clone().add(bal.clone().mul_scalar(self.balance_coef)), Some(bal)),
            None => (ce.clone(), None),
        };
        let stats = RoutingStats::from_routing(&out.routing);
        let tokens = mask.sum().into_scalar();
        LmOutput::new(loss, ce, balance, per_seq, batch.languages, stats, num_f64(tokens))
    }
}

fn num_f64<E: burn::tensor::Element>(e: E) -> f64 {
    e.to_f64()
}

impl<B: AutodiffBackend> TrainStep for LanguageModel<B> {
    type Input = LmBatch<B>;
    type Output = LmOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> TrainOutput<LmOutput<B>> {
        let out = self.forward_loss(batch);
        if !out.loss_value().is_finite() {
            self.non_finite.0.store(true, Ordering::SeqCst);
        }
        let grads = out.loss.backward();
        TrainOutput::new(self, grads, out)
    }
}

impl<B: Backend> InferenceStep for LanguageModel<B> {
    type Input = LmBatch<B>;
    type Output = LmOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> LmOutput<B> {
        self.forward_loss(batch)
    }
}
