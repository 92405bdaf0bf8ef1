//! Training with burn-train's `SupervisedTraining`: checkpoint segments, resume, `loss.csv`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::InMemDataset;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::lr_scheduler::LrScheduler;
use burn::optim::{AdamW, AdamWConfig, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::train::metric::{LearningRateMetric, LossMetric};
use burn::train::{
    ExecutionStrategy, Interrupter, Learner, LearningComponentsMarker, MultiDeviceOptim,
    SupervisedTraining, TrainingStrategy,
};
use multipl_moe_core::CausalLm;
use multipl_moe_qwen::apply_freeze;

use crate::data::dataset::{LmBatcher, Sequence, interleave_languages};
use crate::error::{Result, TrainError};
use crate::training::checkpoint::{self, AtomicRecorder, SaveOnly, check_record, newest_complete};
use crate::training::lm::{LanguageModel, NonFiniteGuard};
use crate::training::loss_log::{LossLog, complete_rows};
use crate::training::memory;
use crate::training::metrics::{
    PerplexityMetric, PlainRenderer, Stat, StatMetric, TokensPerSecond,
};
use crate::training::schedule::WarmupCosine;
use multipl_moe_core::rng::Rng;

pub use crate::training::config::TrainConfig;

/// Where a run keeps its checkpoints and metric logs, whether it resumes, and which devices
/// it uses.
#[derive(Debug, Clone)]
pub struct TrainTarget<B: AutodiffBackend> {
    /// Run directory: `checkpoint/`, `loss.csv`, `train/`, `valid/`, `experiment.log`.
    pub dir: PathBuf,
    /// Continue after the newest usable checkpoint in `dir` (see [`train`]); `false`: a fresh
    /// run, which deletes the checkpoints of an earlier run in `dir`.
    pub resume: bool,
    /// Data-parallel devices for burn-train's multi-device strategy (each device takes its own
    /// micro-batch, so the global batch is `N × batch_size × grad_accumulation`; gradients are
    /// summed on the first, as the README says); empty or one: the model's device.
    pub devices: Vec<B::Device>,
}

impl<B: AutodiffBackend> TrainTarget<B> {
    /// A fresh run in `dir` on the model's device.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            resume: false,
            devices: Vec::new(),
        }
    }

    /// Continues after the newest usable checkpoint, if `resume`.
    pub fn with_resume(mut self, resume: bool) -> Self {
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

/// How a run is cut into checkpoint segments, and what each writes.
struct Plan<'a> {
    segments: Vec<&'a [usize]>,
    batch_size: usize,
    /// `loss.csv` rows per optimizer step: `grad_accumulation × devices`.
    micro_batches_per_step: usize,
    valid_every: usize,
}

impl Plan<'_> {
    /// `loss.csv` rows (micro-batches) of segments `1..=c`.
    fn rows_until(&self, c: usize) -> usize {
        self.segments[..c]
            .iter()
            .map(|s| s.len().div_ceil(self.batch_size))
            .sum()
    }

    /// Whether segment `number` (1-based) ends with a validation pass.
    fn validates(&self, number: usize) -> bool {
        let step = |c| self.rows_until(c) / self.micro_batches_per_step;
        number == self.segments.len()
            || self.valid_every == 0
            || step(number) / self.valid_every > step(number - 1) / self.valid_every
    }
}

/// Why checkpoint `number` under `dir` cannot be resumed from: a file that does not load as
/// the record burn-train will restore (model, `optimizer`'s state, scheduler), a number past
/// this run's last, or a `loss.csv` without its rows.
fn unusable<B, O>(
    _optimizer: &O,
    dir: &Path,
    number: usize,
    plan: &Plan,
    loss_rows: usize,
    device: &B::Device,
) -> std::result::Result<(), String>
where
    B: AutodiffBackend,
    O: Optimizer<LanguageModel<B>, B>,
{
    if number > plan.segments.len() {
        return Err(format!(
            "past this run's last checkpoint ({}); was the config changed?",
            plan.segments.len()
        ));
    }
    check_record::<B, <LanguageModel<B> as Module<B>>::Record>(dir, "model", number, device)?;
    check_record::<B, O::Record>(dir, "optim", number, device)?;
    check_record::<B, <WarmupCosine as LrScheduler>::Record<B>>(dir, "scheduler", number, device)?;
    let needed = plan.rows_until(number);
    if loss_rows < needed {
        return Err(format!(
            "loss.csv has {loss_rows} rows, the checkpoint needs {needed}"
        ));
    }
    Ok(())
}

/// Sequences per optimizer step: each of the `devices` takes its own micro-batch of
/// `batch_size`, and burn-train steps the optimizer after `grad_accumulation` rounds of them.
pub fn sequences_per_step(cfg: &TrainConfig, devices: usize) -> usize {
    cfg.batch_size * cfg.grad_accumulation * devices.max(1)
}

/// A segment's items in the order burn-train's multi-device strategy needs for each round to
/// train consecutive micro-batches: it gives device `d` the `d`-th contiguous `1/N` of the
/// items (`split_dataloader`), so device `d`'s share is made of micro-batches `d, d + N,
/// d + 2N, ...`, and round `r` trains micro-batches `rN .. rN + N` of the segment, as one
/// device accumulating `N×` as many would. One device, or a segment whose micro-batches do not
/// divide evenly among the devices (a run's last), keeps its order.
pub fn device_order(segment: &[usize], batch_size: usize, devices: usize) -> Vec<usize> {
    if devices <= 1 || !segment.len().is_multiple_of(batch_size * devices) {
        return segment.to_vec();
    }
    let batches: Vec<&[usize]> = segment.chunks(batch_size).collect();
    (0..devices)
        .flat_map(|d| {
            batches
                .iter()
                .skip(d)
                .step_by(devices)
                .flat_map(|b| b.iter())
        })
        .copied()
        .collect()
}

/// [`train`]'s data requirement: training sequences for at least one optimizer step
/// (`batch_size × grad_accumulation × devices` over all epochs) and at least one validation
/// sequence ([`TrainError::NotEnoughData`] otherwise).
pub fn enough_data(train: usize, valid: usize, cfg: &TrainConfig, devices: usize) -> Result<()> {
    let per_step = sequences_per_step(cfg, devices);
    if train * cfg.epochs < per_step || valid == 0 {
        return Err(TrainError::NotEnoughData(format!(
            "{train} training sequences × {} epochs for one optimizer step of {per_step} \
             (batch_size {} × grad_accumulation {} × {} devices), {valid} validation sequences",
            cfg.epochs,
            cfg.batch_size,
            cfg.grad_accumulation,
            devices.max(1)
        )));
    }
    Ok(())
}

/// The learning-rate schedule of a run over `train_sequences` sequences on `devices` devices:
/// warm-up and cosine decay span its optimizer steps, `epochs × train_sequences / (batch_size
/// × grad_accumulation × devices)`, and advance once per optimizer step, i.e. once every
/// `grad_accumulation` of burn-train's scheduler calls (module [`crate::training::schedule`]).
pub fn schedule(cfg: &TrainConfig, train_sequences: usize, devices: usize) -> WarmupCosine {
    let per_step = sequences_per_step(cfg, devices);
    WarmupCosine::new(
        cfg.lr,
        cfg.min_lr,
        cfg.warmup_steps,
        cfg.epochs * train_sequences / per_step,
    )
    .with_calls_per_step(cfg.grad_accumulation)
}

/// Trains `model` on `train`, validating on `valid`, and returns the trained model (inner
/// backend).
///
/// The run is cut into *checkpoint segments* of `cfg.checkpoint_every` optimizer steps (one
/// epoch when 0). Each segment is one burn-train epoch (`SupervisedTraining` with
/// `num_epochs = i` resuming from checkpoint `i − 1`), so burn-train's own checkpointer saves
/// model, optimizer and scheduler after every segment — each file atomically
/// ([`AtomicRecorder`]) — and the dashboard shows segment `i` as epoch `i`. Every
/// micro-batch's loss is appended to `loss.csv` as it is computed, so a checkpoint's rows are
/// on disk before it is. After each segment all but the newest `cfg.keep_checkpoints`
/// checkpoints are deleted.
///
/// With `target.resume`, the run continues after the newest checkpoint whose model,
/// optimizer and scheduler files all load and whose rows `loss.csv` holds; newer ones are
/// skipped with their reason printed. `loss.csv` is cut back to that checkpoint's rows, and
/// the data order ([`data_order`]) makes the rest of the run the uninterrupted one. A
/// non-finite loss stops training with [`TrainError::NonFiniteLoss`]; the last good
/// checkpoint stays on disk.
pub fn train<B: AutodiffBackend>(
    model: CausalLm<B>,
    balance_coef: f64,
    train: Vec<Sequence>,
    valid: Vec<Sequence>,
    cfg: &TrainConfig,
    target: &TrainTarget<B>,
) -> Result<CausalLm<B::InnerBackend>> {
    cfg.validate()?;
    enough_data(train.len(), valid.len(), cfg, target.devices.len())?;
    let dir = target.dir.as_path();
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let devices = target.devices.len().max(1);
    let per_step = sequences_per_step(cfg, devices);
    let order = data_order(train.len(), cfg.epochs, cfg.seed);
    let segment_len = match cfg.checkpoint_every {
        0 => train.len(),
        n => n * per_step,
    };
    let model = apply_freeze(model, &cfg.freeze);
    let device = model
        .devices()
        .into_iter()
        .next()
        .ok_or_else(|| TrainError::NotEnoughData("the model has no parameter".into()))?;
    let run = Segments {
        plan: Plan {
            segments: order.chunks(segment_len).collect(),
            batch_size: cfg.batch_size,
            micro_batches_per_step: cfg.grad_accumulation * devices,
            valid_every: cfg.valid_every,
        },
        ckpt_dir: dir.join("checkpoint"),
        schedule: schedule(cfg, train.len(), devices),
        optim: AdamWConfig::new()
            .with_weight_decay(cfg.weight_decay as f32)
            .with_grad_clipping(Some(GradientClippingConfig::Norm(cfg.grad_clip as f32))),
        valid: capped(valid, cfg),
        train,
        model,
        balance_coef,
        cfg,
        target,
    };
    let resumed = run.starting_checkpoint(&device)?;
    let ckpt_dir = &run.ckpt_dir;
    checkpoint::remove_temporaries(ckpt_dir).map_err(|e| TrainError::io(ckpt_dir, e))?;
    let loss_log = Arc::new(Mutex::new(LossLog::open(
        &dir.join("loss.csv"),
        run.plan.rows_until(resumed),
    )?));
    let mut trained = None;
    for number in resumed + 1..=run.plan.segments.len() {
        // The next segment starts from the checkpoint: the previous segment's model would be
        // a second copy of the weights while it trains.
        drop(trained.take());
        memory::return_freed_memory();
        trained = Some(run.segment(number, &loss_log)?);
    }
    trained.ok_or_else(|| TrainError::NotEnoughData("no training step to run".into()))
}

/// The validation sequences a pass uses: all, or the first `max_valid_batches` batches with
/// the languages taken in turn.
fn capped(valid: Vec<Sequence>, cfg: &TrainConfig) -> Vec<Sequence> {
    match cfg.max_valid_batches {
        0 => valid,
        n => {
            let mut v = interleave_languages(valid);
            v.truncate(n * cfg.batch_size);
            v
        }
    }
}

/// burn-train's training of a [`LanguageModel`] with AdamW and [`WarmupCosine`].
type Training<B> = SupervisedTraining<
    LearningComponentsMarker<
        B,
        WarmupCosine,
        LanguageModel<B>,
        OptimizerAdaptor<AdamW, LanguageModel<B>, B>,
    >,
>;

/// Everything a run's checkpoint segments share.
struct Segments<'a, B: AutodiffBackend> {
    plan: Plan<'a>,
    ckpt_dir: PathBuf,
    schedule: WarmupCosine,
    optim: AdamWConfig,
    train: Vec<Sequence>,
    valid: Vec<Sequence>,
    model: CausalLm<B>,
    balance_coef: f64,
    cfg: &'a TrainConfig,
    target: &'a TrainTarget<B>,
}

impl<B: AutodiffBackend> Segments<'_, B> {
    /// The checkpoint the run continues after (0: from the start). A resumed run takes the
    /// newest usable one and prints why it skipped newer ones; a fresh run deletes the
    /// checkpoints of an earlier run.
    fn starting_checkpoint(&self, device: &B::Device) -> Result<usize> {
        let (ckpt_dir, plan) = (&self.ckpt_dir, &self.plan);
        if !self.target.resume {
            for n in checkpoint::numbers(ckpt_dir) {
                checkpoint::remove(ckpt_dir, n).map_err(|e| TrainError::io(ckpt_dir, e))?;
            }
            return Ok(0);
        }
        let rows = complete_rows(&self.target.dir.join("loss.csv"))?.len();
        let probe = self.optim.init::<B, LanguageModel<B>>();
        let (found, skipped) = newest_complete(ckpt_dir, |n| {
            unusable(&probe, ckpt_dir, n, plan, rows, device)
        });
        for s in &skipped {
            println!("skipping checkpoint {}: {}", s.number, s.reason);
        }
        match found {
            Some(c) if c == plan.segments.len() => Err(TrainError::Config {
                field: "resume",
                reason: format!(
                    "the run already finished at checkpoint {c}; nothing is left to train"
                ),
            }),
            Some(c) => {
                println!("resuming after checkpoint {c} of {}", plan.segments.len());
                Ok(c)
            }
            None => {
                println!(
                    "no usable checkpoint under {}; starting from scratch",
                    ckpt_dir.display()
                );
                Ok(0)
            }
        }
    }

    /// Trains segment `number` (1-based) as burn-train epoch `number`, starting from
    /// checkpoint `number − 1`, and prunes old checkpoints after it.
    fn segment(
        &self,
        number: usize,
        loss_log: &Arc<Mutex<LossLog>>,
    ) -> Result<CausalLm<B::InnerBackend>> {
        let (cfg, ckpt_dir) = (self.cfg, &self.ckpt_dir);
        let interrupter = Interrupter::new();
        let mut lm = LanguageModel::new(self.model.clone(), self.balance_coef);
        lm.non_finite = NonFiniteGuard::new(interrupter.clone()).with_log(loss_log.clone());
        lm.micro_batches_per_step = self.plan.micro_batches_per_step;
        let guard = lm.non_finite.clone();
        let segment = self.plan.segments[number - 1];
        let items: Vec<Sequence> = device_order(segment, cfg.batch_size, self.target.devices.len())
            .into_iter()
            .map(|j| self.train[j].clone())
            .collect();
        let valid_items = match self.plan.validates(number) {
            true => self.valid.clone(),
            false => Vec::new(),
        };
        let dl_train = DataLoaderBuilder::new(LmBatcher)
            .batch_size(cfg.batch_size)
            .build(InMemDataset::new(items));
        let dl_valid = DataLoaderBuilder::new(LmBatcher)
            .batch_size(cfg.batch_size)
            .build(InMemDataset::new(valid_items));
        let learner = Learner::new(lm, self.optim.init(), self.schedule.clone());
        let mut training = with_dashboard(SupervisedTraining::new(
            &self.target.dir,
            dl_train,
            dl_valid,
        ))
        .with_file_checkpointer(AtomicRecorder::default())
        .with_checkpointing_strategy(SaveOnly)
        .grads_accumulation(cfg.grad_accumulation)
        .num_epochs(number)
        .with_interrupter(interrupter.clone());
        if number > 1 {
            training = training.checkpoint(number - 1);
        }
        let devices = &self.target.devices;
        if devices.len() > 1 {
            training = training.with_training_strategy(TrainingStrategy::Default(
                ExecutionStrategy::MultiDevice(devices.clone(), MultiDeviceOptim::OptimMainDevice),
            ));
        }
        if !std::io::stdout().is_terminal() {
            training = training.renderer(PlainRenderer::new(10));
        }
        let result = training.launch(learner);
        if let Ok(mut log) = loss_log.lock() {
            log.check()?;
        }
        if let Some((loss, micro_batch)) = guard.seen() {
            // The guard counts this segment's micro-batches from 0.
            let row = self.plan.rows_until(number - 1) + micro_batch;
            return Err(TrainError::NonFiniteLoss {
                loss,
                step: row / self.plan.micro_batches_per_step,
                dir: ckpt_dir.clone(),
            });
        }
        // Anything else that stops a segment is burn-train's checkpointer failing to save:
        // the next segment could not start from this checkpoint.
        if interrupter.should_stop() {
            return Err(TrainError::Stopped {
                dir: ckpt_dir.clone(),
                number,
                reason: interrupter
                    .get_message()
                    .unwrap_or_else(|| "interrupted".into()),
            });
        }
        checkpoint::prune(ckpt_dir, number, cfg.keep_checkpoints)
            .map_err(|e| TrainError::io(ckpt_dir, e))?;
        Ok(result.model.lm)
    }
}

/// The dashboard: loss, CE, balance loss and perplexity (train and valid), learning rate,
/// tokens/s, and each level's expert load.
fn with_dashboard<B: AutodiffBackend>(training: Training<B>) -> Training<B> {
    training
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .metric_train_numeric(StatMetric::new(Stat::CrossEntropy))
        .metric_valid_numeric(StatMetric::new(Stat::CrossEntropy))
        .metric_train_numeric(StatMetric::new(Stat::Balance))
        .metric_valid_numeric(StatMetric::new(Stat::Balance))
        .metric_train_numeric(PerplexityMetric::default())
        .metric_valid_numeric(PerplexityMetric::default())
        .metric_train_numeric(LearningRateMetric::new())
        .metric_train_numeric(TokensPerSecond::default())
        .metric_train_numeric(StatMetric::new(Stat::TokenMaxLoad))
        .metric_train_numeric(StatMetric::new(Stat::TokenEntropy))
        .metric_train_numeric(StatMetric::new(Stat::SegmentMaxLoad))
        .metric_train_numeric(StatMetric::new(Stat::SegmentEntropy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::lr_scheduler::LrScheduler;

    /// Two devices, micro-batches of 2: device 0 gets micro-batches 0 and 2, device 1 gets 1
    /// and 3, so the contiguous halves burn-train hands out make rounds (0, 1) and (2, 3).
    #[test]
    fn devices_get_alternate_micro_batches() {
        let segment: Vec<usize> = (10..18).collect();
        assert_eq!(
            device_order(&segment, 2, 2),
            [10, 11, 14, 15, 12, 13, 16, 17]
        );
        assert_eq!(device_order(&segment, 2, 1), segment);
        assert_eq!(
            device_order(&segment[..6], 2, 2),
            segment[..6],
            "uneven: as is"
        );
    }

    /// SPEC §5's 100 warm-up steps are optimizer steps: with the paper's accumulation of 8
    /// the rate climbs for 800 micro-batches (on one device) or rounds (on two) and peaks at
    /// optimizer step 99 (the cosine then starts from the peak at step 100); 64 000 sequences
    /// make 1000 steps on one device, 500 on two.
    #[test]
    fn the_paper_recipe_warms_up_for_100_optimizer_steps() {
        let cfg = TrainConfig::paper_recipe();
        assert_eq!(cfg.grad_accumulation, 8);
        for (devices, total) in [(1, 1000), (2, 500)] {
            let mut s = schedule(&cfg, 64_000, devices);
            assert_eq!(s.total, total);
            let lrs: Vec<f64> = (0..8 * 102).map(|_| s.step()).collect();
            let first_peak = lrs.iter().position(|&lr| lr >= cfg.lr);
            assert_eq!(first_peak, Some(8 * 99), "{devices} devices");
            assert!(lrs[..8 * 99].windows(2).all(|w| w[0] <= w[1]));
            assert_eq!(lrs[8 * 100 + 7], cfg.lr, "the cosine starts at the peak");
            assert!(lrs[8 * 101] < cfg.lr, "and decays from step 101");
        }
    }
}
