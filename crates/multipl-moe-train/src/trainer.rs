//! Training with burn-train's `SupervisedTraining` (SPEC §5 recipe as a preset).

use std::io::IsTerminal;
use std::path::PathBuf;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::InMemDataset;
use burn::grad_clipping::GradientClippingConfig;
use burn::optim::AdamWConfig;
use burn::record::CompactRecorder;
use burn::tensor::backend::AutodiffBackend;
use burn::train::metric::{LearningRateMetric, LossMetric};
use burn::train::{
    ExecutionStrategy, Interrupter, Learner, MultiDeviceOptim, SupervisedTraining, TrainingStrategy,
};
use multipl_moe_core::CausalLm;
use multipl_moe_qwen::{FreezePolicy, apply_freeze};
use serde::{Deserialize, Serialize};

use crate::corpus::Rng;
use crate::data::{LmBatcher, Sequence};
use crate::error::{Result, TrainError};
use crate::files::write_atomic;
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
    /// Passes over the training sequences.
    pub epochs: usize,
    /// Optimizer steps between checkpoints (and validations); `0`: once per epoch. A
    /// checkpoint is always written at the end.
    #[serde(default)]
    pub checkpoint_every: usize,
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
            checkpoint_every: 0,
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
            checkpoint_every: 0,
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

/// Where a run keeps its checkpoints and metric logs, where it resumes, and which devices it
/// uses.
#[derive(Debug, Clone)]
pub struct TrainTarget<B: AutodiffBackend> {
    /// Run directory: `checkpoint/`, `train/`, `valid/`, `experiment.log`.
    pub dir: PathBuf,
    /// Continue after this checkpoint (see [`crate::run::last_checkpoint`]).
    pub resume: Option<usize>,
    /// Data-parallel devices for burn-train's multi-device strategy (each micro-batch is
    /// split across them, gradients are summed on the first); empty or one: the model's
    /// device.
    pub devices: Vec<B::Device>,
}

impl<B: AutodiffBackend> TrainTarget<B> {
    /// A fresh run in `dir` on the model's device.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            resume: None,
            devices: Vec::new(),
        }
    }

    /// Continues after checkpoint `resume`, if any.
    pub fn with_resume(mut self, resume: Option<usize>) -> Self {
        self.resume = resume;
        self
    }

    /// Trains data-parallel on `devices`.
    pub fn with_devices(mut self, devices: Vec<B::Device>) -> Self {
        self.devices = devices;
        self
    }
}

/// The data order of a whole run: for each epoch, the sequence indices shuffled with
/// `seed + epoch` (Fisher–Yates on splitmix64), concatenated. It depends on nothing else, so
/// a resumed run sees exactly the batches it would have seen.
pub fn data_order(len: usize, epochs: usize, seed: u64) -> Vec<usize> {
    let mut order = Vec::with_capacity(len * epochs);
    for epoch in 0..epochs {
        let mut rng = Rng(seed.wrapping_add(epoch as u64));
        let mut idx: Vec<usize> = (0..len).collect();
        for i in (1..len).rev() {
            idx.swap(i, rng.below(i + 1));
        }
        order.extend(idx);
    }
    order
}

/// Trains `model` on `train`, validating on `valid`, and returns the trained model (inner
/// backend).
///
/// The run is cut into *checkpoint segments* of `cfg.checkpoint_every` optimizer steps (one
/// epoch when 0). Each segment is one burn-train epoch (`SupervisedTraining` with
/// `num_epochs = i` resuming from checkpoint `i − 1`), so burn-train's own checkpointer saves
/// model, optimizer and scheduler after every segment, and the dashboard shows segment
/// `i` as epoch `i`. Resuming from checkpoint `c` runs segments `c + 1..`, with the same data
/// order ([`data_order`]). A non-finite loss stops training with
/// [`TrainError::NonFiniteLoss`]; the last good checkpoint stays on disk.
pub fn train<B: AutodiffBackend>(
    model: CausalLm<B>,
    balance_coef: f64,
    train: Vec<Sequence>,
    valid: Vec<Sequence>,
    cfg: &TrainConfig,
    target: &TrainTarget<B>,
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
    let dir = target.dir.as_path();
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let per_step = cfg.batch_size * cfg.grad_accumulation;
    let steps = cfg.epochs * train.len() / per_step;
    let order = data_order(train.len(), cfg.epochs, cfg.seed);
    let segment_len = match cfg.checkpoint_every {
        0 => train.len(),
        n => n * per_step,
    };
    let segments: Vec<&[usize]> = order.chunks(segment_len).collect();
    let first = target.resume.map_or(1, |c| c + 1);
    if first > segments.len() {
        return Err(TrainError::Config {
            field: "resume",
            reason: if first - 1 == segments.len() {
                format!(
                    "the run already finished at checkpoint {}; nothing is left to train",
                    first - 1
                )
            } else {
                format!(
                    "checkpoint {} is past the last of this run ({})",
                    first - 1,
                    segments.len()
                )
            },
        });
    }

    // `loss.csv`: one row per micro-batch, across resumes. Rows written after the checkpoint
    // we resume from (by a run that was killed later) are dropped.
    let loss_log = dir.join("loss.csv");
    let kept_rows: usize = segments[..first - 1]
        .iter()
        .map(|s| s.len().div_ceil(cfg.batch_size))
        .sum();
    let mut rows: Vec<String> = std::fs::read_to_string(&loss_log)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .take(kept_rows)
        .map(str::to_string)
        .collect();
    write_loss_log(&loss_log, &rows)?;

    let model = apply_freeze(model, &cfg.freeze);
    let schedule = WarmupCosine::new(cfg.lr, cfg.min_lr, cfg.warmup_steps, steps);
    let optim = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay as f32)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(cfg.grad_clip as f32)));
    let mut trained = None;
    for (i, segment) in segments.iter().enumerate().skip(first - 1) {
        let number = i + 1;
        let interrupter = Interrupter::new();
        let mut lm = LanguageModel::new(model.clone(), balance_coef);
        lm.non_finite = NonFiniteGuard::new(interrupter.clone());
        let guard = lm.non_finite.clone();
        let items: Vec<Sequence> = segment.iter().map(|&j| train[j].clone()).collect();
        let dl_train = DataLoaderBuilder::new(LmBatcher)
            .batch_size(cfg.batch_size)
            .build(InMemDataset::new(items));
        let dl_valid = DataLoaderBuilder::new(LmBatcher)
            .batch_size(cfg.batch_size)
            .build(InMemDataset::new(valid.clone()));
        let learner = Learner::new(lm, optim.init(), schedule.clone());
        // The dashboard: loss, CE, balance loss and perplexity (train and valid), learning
        // rate, tokens/s, and each level's expert load.
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
            .num_epochs(number)
            .with_interrupter(interrupter);
        if number > 1 {
            training = training.checkpoint(number - 1);
        }
        if target.devices.len() > 1 {
            training = training.with_training_strategy(TrainingStrategy::Default(
                ExecutionStrategy::MultiDevice(
                    target.devices.clone(),
                    MultiDeviceOptim::OptimMainDevice,
                ),
            ));
        }
        if !std::io::stdout().is_terminal() {
            training = training.renderer(PlainRenderer::new(10));
        }
        let result = training.launch(learner);
        for loss in guard.losses() {
            rows.push(format!("{},{loss}", rows.len() + 1));
        }
        write_loss_log(&loss_log, &rows)?;
        if let Some((loss, step)) = guard.seen() {
            return Err(TrainError::NonFiniteLoss {
                loss,
                step: i * segment_len / per_step + step,
                dir: dir.join("checkpoint"),
            });
        }
        trained = Some(result.model.lm);
    }
    trained.ok_or_else(|| TrainError::NotEnoughData("no training step to run".into()))
}

/// Writes `loss.csv` (header `micro_batch,loss`) with [`write_atomic`].
fn write_loss_log(path: &std::path::Path, rows: &[String]) -> Result<()> {
    let mut text = String::from("micro_batch,loss\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}
