//! Linear warm-up then cosine decay to a floor (SPEC §5: 100 warm-up steps, cosine to 0),
//! counted in optimizer steps.
//!
//! burn-train 0.21 calls the scheduler once per micro-batch on one device, and once per round
//! of one micro-batch per device on several (`learner.lr_step()` in its epoch loops), while it
//! steps the optimizer once every `grad_accumulation` such calls, with the learning rate of
//! the window's last call. [`WarmupCosine::with_calls_per_step`] makes the schedule advance
//! once per optimizer step, so warm-up and decay span the run's optimizer steps whatever the
//! accumulation.

use burn::optim::LearningRate;
use burn::optim::lr_scheduler::LrScheduler;
use burn::tensor::backend::Backend;

/// `lr(s) = peak·(s+1)/warmup` for optimizer step `s < warmup`, then
/// `floor + (peak−floor)·(1 + cos(π·(s−warmup)/(total−warmup)))/2`, and `floor` after `total`.
/// Call `c` of the scheduler (from 0) belongs to optimizer step `s = c / calls_per_step`.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmupCosine {
    /// Peak learning rate.
    pub peak: f64,
    /// Final learning rate.
    pub floor: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Total optimizer steps.
    pub total: usize,
    /// Scheduler calls per optimizer step: burn-train's `grad_accumulation`, ≥ 1.
    pub calls_per_step: usize,
    /// Scheduler calls made (the checkpointed record).
    pub step: usize,
}

impl WarmupCosine {
    /// A schedule at step 0.
    pub fn new(peak: f64, floor: f64, warmup: usize, total: usize) -> Self {
        Self {
            peak,
            floor,
            warmup,
            total: total.max(1),
            calls_per_step: 1,
            step: 0,
        }
    }

    /// The same schedule advancing one optimizer step every `calls` scheduler calls (burn-train
    /// calls it once per micro-batch, or per round of micro-batches on several devices, and
    /// steps the optimizer every `grad_accumulation` calls). `0` counts as 1.
    pub fn with_calls_per_step(mut self, calls: usize) -> Self {
        self.calls_per_step = calls.max(1);
        self
    }

    /// The learning rate of optimizer step `s` (from 0).
    pub fn at(&self, s: usize) -> f64 {
        if s < self.warmup {
            return self.peak * (s + 1) as f64 / self.warmup as f64;
        }
        if s >= self.total {
            return self.floor;
        }
        let span = (self.total - self.warmup).max(1) as f64;
        let progress = (s - self.warmup) as f64 / span;
        self.floor
            + (self.peak - self.floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

impl LrScheduler for WarmupCosine {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> LearningRate {
        let lr = self.at(self.step / self.calls_per_step.max(1));
        self.step += 1;
        lr
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.step
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.step = record;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// burn-train 0.21's single-device epoch loop: one scheduler call per micro-batch, an
    /// optimizer step after every `g`-th with the learning rate of that call.
    fn optimizer_step_lrs(mut s: WarmupCosine, micro_batches: usize, g: usize) -> Vec<f64> {
        let mut lrs = Vec::new();
        for m in 1..=micro_batches {
            let lr = LrScheduler::step(&mut s);
            if m % g == 0 {
                lrs.push(lr);
            }
        }
        lrs
    }

    #[test]
    fn every_optimizer_step_gets_its_closed_form_rate_under_accumulation() {
        let (peak, floor, warmup, total) = (1e-3, 1e-5, 3, 10);
        let closed = |s: usize| {
            if s < warmup {
                peak * (s + 1) as f64 / warmup as f64
            } else {
                let p = (s - warmup) as f64 / (total - warmup) as f64;
                floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            }
        };
        for g in [1, 2, 8] {
            let s = WarmupCosine::new(peak, floor, warmup, total).with_calls_per_step(g);
            let lrs = optimizer_step_lrs(s, total * g, g);
            assert_eq!(lrs.len(), total);
            for (step, lr) in lrs.iter().enumerate() {
                assert!(
                    (lr - closed(step)).abs() <= 1e-15,
                    "g = {g}, step {step}: {lr} vs {}",
                    closed(step)
                );
            }
        }
    }

    #[test]
    fn a_restored_record_continues_mid_window() {
        let s = WarmupCosine::new(1.0, 0.0, 4, 20).with_calls_per_step(8);
        let mut whole = s.clone();
        let all: Vec<f64> = (0..100).map(|_| LrScheduler::step(&mut whole)).collect();
        let mut first = s.clone();
        for _ in 0..37 {
            LrScheduler::step(&mut first);
        }
        let record = LrScheduler::to_record::<burn::backend::NdArray>(&first);
        let mut resumed = LrScheduler::load_record::<burn::backend::NdArray>(s, record);
        let rest: Vec<f64> = (37..100).map(|_| LrScheduler::step(&mut resumed)).collect();
        assert_eq!(rest, all[37..]);
    }
}
