//! The training wrapper: `L = CE + α·L_bal` (SPEC §4) as burn-train `TrainStep` /
//! `InferenceStep`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::cast::ToElement;
use burn::tensor::{Int, Tensor};
use burn::train::{InferenceStep, TrainOutput, TrainStep};
use multipl_moe_core::{CausalLm, combined_loss};

use crate::data::dataset::LmBatch;
use crate::training::loss_log::LossLog;
use crate::training::memory;
use crate::training::metrics::{LmOutput, RoutingStats};

/// Watches the training loss: keeps every micro-batch's value (and appends it to the run's
/// `loss.csv` when given one, before the segment's checkpoint is written), and on a
/// non-finite one records `(loss, step)` and stops burn-train's loop through its interrupter,
/// before the epoch's checkpoint is written.
#[derive(Clone, Default)]
pub struct NonFiniteGuard {
    steps: Arc<AtomicUsize>,
    seen: Arc<Mutex<Option<(f64, usize)>>>,
    losses: Arc<Mutex<Vec<f64>>>,
    interrupter: Option<burn::train::Interrupter>,
    log: Option<Arc<Mutex<LossLog>>>,
}

impl std::fmt::Debug for NonFiniteGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NonFiniteGuard({:?})", self.seen())
    }
}

impl NonFiniteGuard {
    /// A guard that stops `interrupter` on a non-finite loss.
    pub fn new(interrupter: burn::train::Interrupter) -> Self {
        Self {
            interrupter: Some(interrupter),
            ..Self::default()
        }
    }

    /// Also appends every loss to `log`.
    pub fn with_log(mut self, log: Arc<Mutex<LossLog>>) -> Self {
        self.log = Some(log);
        self
    }

    /// `(loss, step)` of the first non-finite loss, if any.
    pub fn seen(&self) -> Option<(f64, usize)> {
        self.seen.lock().ok().and_then(|s| *s)
    }

    /// How many micro-batches it has seen.
    pub fn micro_batches(&self) -> usize {
        self.steps.load(Ordering::SeqCst)
    }

    /// The training loss of every micro-batch seen, in order.
    pub fn losses(&self) -> Vec<f64> {
        self.losses.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn observe(&self, loss: f64, balance_loss: Option<f64>) {
        let step = self.steps.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut losses) = self.losses.lock() {
            losses.push(loss);
        }
        if let Some(Ok(mut log)) = self.log.as_ref().map(|l| l.lock()) {
            log.append(loss, balance_loss);
        }
        if loss.is_finite() {
            return;
        }
        if let Ok(mut seen) = self.seen.lock() {
            seen.get_or_insert((loss, step));
        }
        if let Some(i) = &self.interrupter {
            i.stop(Some(&format!("non-finite loss {loss} at step {step}")));
        }
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
    /// Stops training on a non-finite loss.
    #[module(skip)]
    pub non_finite: NonFiniteGuard,
    /// Micro-batches whose gradients burn-train sums into one optimizer step
    /// (`grad_accumulation × devices`, ≥ 1): each micro-batch's gradient is that of its loss
    /// divided by this, so the sum is the gradient of the global batch's mean loss, as with
    /// one batch as large (and as `transformers`' Trainer divides by its accumulation steps).
    /// The reported losses are not divided.
    #[module(skip)]
    pub micro_batches_per_step: usize,
}

impl<B: Backend> LanguageModel<B> {
    /// Wraps `lm` with `α = balance_coef`.
    pub fn new(lm: CausalLm<B>, balance_coef: f64) -> Self {
        Self {
            lm,
            balance_coef,
            pad_id: None,
            non_finite: NonFiniteGuard::default(),
            micro_batches_per_step: 1,
        }
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
        let nll = logp
            .gather(2, targets.clone().unsqueeze_dim(2))
            .reshape([b, t - 1])
            .neg();
        let mask = match self.pad_id {
            Some(p) => targets.not_equal_elem(p as i64).float(),
            None => nll.ones_like(),
        };
        let masked = nll.mul(mask.clone());
        let per_seq = masked
            .clone()
            .sum_dim(1)
            .div(mask.clone().sum_dim(1).clamp_min(1.0))
            .reshape([b]);
        let ce = per_seq.clone().mean();
        let loss = combined_loss(ce.clone(), balance_loss.clone(), self.balance_coef);
        let balance = balance_loss;
        let stats = RoutingStats::from_routing(&out.routing);
        // Read the reported scalars back once per step, not once per dashboard metric:
        // summed target NLL and target tokens in one transfer.
        let sums = Tensor::cat(vec![masked.sum(), mask.sum()], 0).into_data();
        let sums: Vec<f64> = sums.iter::<f64>().collect();
        let (nll_sum, tokens) = (sums[0], sums[1]);
        let ce_value = ce.into_scalar().to_f64();
        let balance_value = balance.map(|b| b.into_scalar().to_f64());
        LmOutput::new(
            loss,
            ce_value,
            balance_value,
            per_seq,
            batch.languages,
            stats,
            tokens,
        )
        .with_nll_sum(nll_sum)
    }
}

impl<B: AutodiffBackend> TrainStep for LanguageModel<B> {
    type Input = LmBatch<B>;
    type Output = LmOutput<B>;

    fn step(&self, batch: LmBatch<B>) -> TrainOutput<LmOutput<B>> {
        if self.non_finite.micro_batches() == self.micro_batches_per_step.max(1) {
            // The first optimizer step has replaced every trained parameter and moment a
            // resumed segment read from its checkpoint (`training::memory`). In a segment that
            // read none, it only returns the step's freed temporaries, which the next step
            // maps in again: once per segment.
            memory::return_freed_memory();
        }
        let out = self.forward_loss(batch);
        self.non_finite.observe(out.loss_value(), out.balance);
        let grads = match self.micro_batches_per_step {
            0 | 1 => out.loss.backward(),
            n => out.loss.clone().div_scalar(n as f64).backward(),
        };
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
