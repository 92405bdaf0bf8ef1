//! Linear warm-up then cosine decay to a floor (SPEC §5: 100 warm-up steps, cosine to 0).

use burn::optim::LearningRate;
use burn::optim::lr_scheduler::LrScheduler;
use burn::tensor::backend::Backend;

/// `lr(s) = peak·(s+1)/warmup` for `s < warmup`, then
/// `floor + (peak−floor)·(1 + cos(π·(s−warmup)/(total−warmup)))/2`, and `floor` after `total`.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmupCosine {
    /// Peak learning rate.
    pub peak: f64,
    /// Final learning rate.
    pub floor: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Total steps.
    pub total: usize,
    /// Steps taken.
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
            step: 0,
        }
    }

    /// The learning rate at step `s`.
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
        let lr = self.at(self.step);
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
