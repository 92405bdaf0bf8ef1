//! Training with burn-train's `SupervisedTraining` (SPEC §5 recipe as a preset).

use std::io::IsTerminal;
use std::path::Path;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::InMemDataset;
use burn::grad_clipping::GradientClippingConfig;
use burn::optim::AdamWConfig;
use burn::record::CompactRecorder;
use burn::tensor::backend::AutodiffBackend;
use burn::train::metric::{LearningRateMetric, LossMetric};
use burn::train::{Interrupter, Learner, SupervisedTraining};
use multipl_moe_core::CausalLm;
use multipl_moe_qwen::{FreezePolicy, apply_freeze};
use serde::{Deserialize, Serialize};

use crate::data::{LmBatcher, Sequence};
use crate::error::{Result, TrainError};
use crate::lm::{LanguageModel, NonFiniteGuard};
use crate::metrics::{PlainRenderer, Stat, StatMetric, TokensPerSecond};
use crate::schedule::WarmupCosine;

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine decay.
    pub min_lr: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Gradient-norm clipping threshold.
    pub grad_clip: f64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches accumulated per optimizer step.
    pub grad_accumulation: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Passes over the training sequences; a checkpoint is written after each.
    pub epochs: usize,
    /// Data-order seed.
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
            weight_decay: 0.1,
            grad_clip: 1.0,
            batch_size: 8,
            grad_accumulation: 1,
            seq_len: 64,
            epochs: 1,
            seed: 42,
            freeze: FreezePolicy::all(),
        }
    }

    /// Rejects settings that cannot train; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| {
            Err(TrainError::Config {
                field,
                reason: reason.into(),
            })
        };
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", "must be > 0");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be > 0");
        }
        if self.grad_accumulation == 0 {
            return bad("grad_accumulation", "must be > 0");
        }
        if self.seq_len < 2 {
            return bad("seq_len", "must be >= 2");
        }
        if self.epochs == 0 {
            return bad("epochs", "must be > 0");
        }
        Ok(())
    }
}

/// Trains `model` on `train`, validating on `valid`, with checkpoints in `dir`. With
/// `resume = Some(epoch)`, continues from that epoch's checkpoint. Returns the trained model
/// (inner backend). A non-finite loss stops training with [`TrainError::NonFiniteLoss`].
pub fn train<B: AutodiffBackend>(
    model: CausalLm<B>,
    balance_coef: f64,
    train: Vec<Sequence>,
    valid: Vec<Sequence>,
    cfg: &TrainConfig,
    dir: &Path,
    resume: Option<usize>,
) -> Result<CausalLm<B::InnerBackend>> {
    cfg.validate()?;
    if train.len() < cfg.batch_size || valid.is_empty() {
        return Err(TrainError::NotEnoughData(format!(
            "{} training sequences for batch size {}, {} validation sequences",
            train.len(),
            cfg.batch_size,
            valid.len()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let steps = cfg.epochs * train.len() / (cfg.batch_size * cfg.grad_accumulation);
    let interrupter = Interrupter::new();
    let mut model = LanguageModel::new(apply_freeze(model, &cfg.freeze), balance_coef);
    model.non_finite = NonFiniteGuard::new(interrupter.clone());
    let guard = model.non_finite.clone();

    let dl_train = DataLoaderBuilder::new(LmBatcher)
        .batch_size(cfg.batch_size)
        .shuffle(cfg.seed)
        .build(InMemDataset::new(train));
    let dl_valid = DataLoaderBuilder::new(LmBatcher)
        .batch_size(cfg.batch_size)
        .build(InMemDataset::new(valid));
    let optim = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay as f32)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(cfg.grad_clip as f32)))
        .init();
    let schedule = WarmupCosine::new(cfg.lr, cfg.min_lr, cfg.warmup_steps, steps);
    let learner = Learner::new(model, optim, schedule);

    let mut training = SupervisedTraining::new(dir, dl_train, dl_valid)
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .metric_train_numeric(StatMetric::new(Stat::CrossEntropy))
        .metric_valid_numeric(StatMetric::new(Stat::CrossEntropy))
        .metric_train_numeric(StatMetric::new(Stat::Balance))
        .metric_valid_numeric(StatMetric::new(Stat::Balance))
        .metric_train_numeric(StatMetric::new(Stat::Perplexity))
        .metric_valid_numeric(StatMetric::new(Stat::Perplexity))
        .metric_train_numeric(LearningRateMetric::new())
        .metric_train_numeric(TokensPerSecond::default())
        .metric_train_numeric(StatMetric::new(Stat::TokenMaxLoad))
        .metric_train_numeric(StatMetric::new(Stat::TokenEntropy))
        .metric_train_numeric(StatMetric::new(Stat::SegmentMaxLoad))
        .metric_train_numeric(StatMetric::new(Stat::SegmentEntropy))
        .with_file_checkpointer(CompactRecorder::new())
        .grads_accumulation(cfg.grad_accumulation)
        .num_epochs(cfg.epochs)
        .with_interrupter(interrupter);
    if let Some(epoch) = resume {
        training = training.checkpoint(epoch);
    }
    if !std::io::stdout().is_terminal() {
        training = training.renderer(PlainRenderer::new(10));
    }
    let result = training.launch(learner);
    if let Some((loss, step)) = guard.seen() {
        return Err(TrainError::NonFiniteLoss {
            loss,
            step,
            dir: dir.join("checkpoint"),
        });
    }
    Ok(result.model.lm)
}
