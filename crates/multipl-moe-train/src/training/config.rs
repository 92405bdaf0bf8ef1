//! Optimisation settings of a run (SPEC §5 recipe as a preset) and their allowed ranges.

use multipl_moe_qwen::FreezePolicy;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

fn default_keep() -> usize {
    2
}

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Peak learning rate, in (0, ∞).
    pub lr: f64,
    /// Final learning rate of the cosine decay, in [0, lr].
    pub min_lr: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// AdamW weight decay, in [0, ∞).
    pub weight_decay: f64,
    /// Gradient-norm clipping threshold, in (0, ∞).
    pub grad_clip: f64,
    /// Sequences per micro-batch, ≥ 1.
    pub batch_size: usize,
    /// Micro-batches accumulated per optimizer step, ≥ 1.
    pub grad_accumulation: usize,
    /// Tokens per sequence, ≥ 2.
    pub seq_len: usize,
    /// Passes over the training sequences, ≥ 1.
    pub epochs: usize,
    /// Optimizer steps between checkpoints; `0`: once per epoch. A checkpoint is always
    /// written at the end.
    #[serde(default)]
    pub checkpoint_every: usize,
    /// Optimizer steps between validation passes, rounded up to the next checkpoint; `0`: at
    /// every checkpoint. The last checkpoint is always validated.
    #[serde(default)]
    pub valid_every: usize,
    /// Micro-batches of a validation pass, taken from every language in turn; `0`: the whole
    /// validation split.
    #[serde(default)]
    pub max_valid_batches: usize,
    /// Checkpoints kept on disk, the newest ones; `0`: all.
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// Seed of the data order and of a fresh model's initialisation.
    pub seed: u64,
    /// What trains.
    pub freeze: FreezePolicy,
}

impl TrainConfig {
    /// SPEC §5: AdamW, lr 7e-6 cosine to 0 after 100 warm-up steps, weight decay 0.1,
    /// clipping 1.0, sequence length 1024, global batch 64 (here 8 × 8 accumulation per
    /// device), the paper's freeze.
    pub fn paper_recipe() -> Self {
        Self {
            lr: 7e-6,
            min_lr: 0.0,
            warmup_steps: 100,
            weight_decay: 0.1,
            grad_clip: 1.0,
            batch_size: 8,
            grad_accumulation: 8,
            seq_len: 1024,
            epochs: 1,
            checkpoint_every: 0,
            valid_every: 0,
            max_valid_batches: 0,
            keep_checkpoints: default_keep(),
            seed: 42,
            freeze: FreezePolicy::paper(),
        }
    }

    /// The demo's settings for tiny models on a CPU.
    pub fn tiny() -> Self {
        Self {
            lr: 3e-3,
            min_lr: 3e-4,
            warmup_steps: 10,
            batch_size: 8,
            grad_accumulation: 1,
            seq_len: 64,
            freeze: FreezePolicy::all(),
            ..Self::paper_recipe()
        }
    }

    /// Rejects settings that cannot train; the error names the field, its allowed range and
    /// the value given.
    pub fn validate(&self) -> Result<()> {
        check_real("lr", self.lr, Range::Positive)?;
        check_real("min_lr", self.min_lr, Range::Closed(0.0, self.lr))?;
        check_real("weight_decay", self.weight_decay, Range::NonNegative)?;
        check_real("grad_clip", self.grad_clip, Range::Positive)?;
        check_count("batch_size", self.batch_size, 1)?;
        check_count("grad_accumulation", self.grad_accumulation, 1)?;
        check_count("seq_len", self.seq_len, 2)?;
        check_count("epochs", self.epochs, 1)
    }
}

/// The allowed range of a real-valued setting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    /// (0, ∞).
    Positive,
    /// [0, ∞).
    NonNegative,
    /// [lo, hi].
    Closed(f64, f64),
    /// (lo, hi).
    Open(f64, f64),
}

impl Range {
    fn contains(self, v: f64) -> bool {
        match self {
            Range::Positive => v > 0.0 && v.is_finite(),
            Range::NonNegative => v >= 0.0 && v.is_finite(),
            Range::Closed(lo, hi) => (lo..=hi).contains(&v),
            Range::Open(lo, hi) => v > lo && v < hi,
        }
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Range::Positive => write!(f, "(0, ∞)"),
            Range::NonNegative => write!(f, "[0, ∞)"),
            Range::Closed(lo, hi) => write!(f, "[{lo}, {hi}]"),
            Range::Open(lo, hi) => write!(f, "({lo}, {hi})"),
        }
    }
}

/// `Ok` when `value` is in `range` (NaN never is); the error names `field`, the range and
/// the value.
pub fn check_real(field: &'static str, value: f64, range: Range) -> Result<()> {
    if range.contains(value) {
        return Ok(());
    }
    Err(TrainError::Config {
        field,
        reason: format!("must be in {range}, got {value}"),
    })
}

/// `Ok` when `value >= min`; the error names `field`, the bound and the value.
pub fn check_count(field: &'static str, value: usize, min: usize) -> Result<()> {
    if value >= min {
        return Ok(());
    }
    Err(TrainError::Config {
        field,
        reason: format!("must be >= {min}, got {value}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_value_is_named_with_its_range() {
        let bad = |c: TrainConfig| c.validate().unwrap_err().to_string();
        let ok = TrainConfig::tiny();
        ok.validate().unwrap();
        let e = bad(TrainConfig {
            lr: f64::NAN,
            ..ok.clone()
        });
        assert!(
            e.contains("`lr`") && e.contains("(0, ∞)") && e.contains("NaN"),
            "{e}"
        );
        let e = bad(TrainConfig {
            min_lr: 1.0,
            ..ok.clone()
        });
        assert!(e.contains("`min_lr`") && e.contains("[0, 0.003]"), "{e}");
        let e = bad(TrainConfig {
            weight_decay: -0.1,
            ..ok.clone()
        });
        assert!(e.contains("`weight_decay`"), "{e}");
        let e = bad(TrainConfig {
            grad_clip: f64::INFINITY,
            ..ok.clone()
        });
        assert!(e.contains("`grad_clip`"), "{e}");
        let e = bad(TrainConfig {
            seq_len: 1,
            ..ok.clone()
        });
        assert!(e.contains("`seq_len`") && e.contains(">= 2, got 1"), "{e}");
        let e = bad(TrainConfig { epochs: 0, ..ok });
        assert!(e.contains("`epochs`"), "{e}");
    }
}
