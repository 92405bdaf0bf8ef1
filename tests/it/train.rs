//! Training: loss goes down, the freeze holds through burn-train's Learner, a NaN stops the
//! run, the schedule, and the data pipeline.

use crate::common::{TestAutodiff, TestBackend, assert_close, run_dir};
use burn::module::{AutodiffModule, Param};
use burn::optim::{AdamWConfig, Optimizer, SgdConfig};
use burn::tensor::{Int, Tensor, TensorData};
use burn::train::TrainStep;
use multipl_moe::core::{MoeConfig, MultiplMoeConfig, QwenConfig};
use multipl_moe::qwen::export::model_tensors;
use multipl_moe::qwen::{FreezePolicy, UpcycleOptions, upcycle};
use multipl_moe::train::data::corpus::{Document, Language, read_tree};
use multipl_moe::train::data::dataset::{
    LmBatch, Mix, TokenizedDocument, interleave_languages, pack, split_documents,
};
use multipl_moe::train::data::generator::embedded;
use multipl_moe::train::training::lm::LanguageModel;
use multipl_moe::train::training::loss_log::read_loss_csv;
use multipl_moe::train::training::run::{RunConfig, prepare_out_dir};
use multipl_moe::train::training::schedule::WarmupCosine;
use multipl_moe::train::training::trainer::{TrainTarget, data_order};
use multipl_moe::train::{TrainConfig, TrainError, train};
use std::path::Path;

type A = TestAutodiff;

fn tiny_cfg() -> MultiplMoeConfig {
    MultiplMoeConfig::new(QwenConfig {
        vocab_size: 64,
        ..QwenConfig::tiny()
    })
}

fn sequences(n: usize, t: usize) -> Vec<multipl_moe::train::data::dataset::Sequence> {
    (0..n)
        .map(|i| multipl_moe::train::data::dataset::Sequence {
            tokens: (0..t).map(|j| ((i * 7 + j * 3) % 60 + 1) as u32).collect(),
            language: Language::ALL[i % 6],
        })
        .collect()
}

#[test]
fn a_few_steps_reduce_the_loss_on_a_fixed_batch() {
    let device = Default::default();
    let (model, _) = upcycle(
        tiny_cfg().init::<A>(&device).unwrap(),
        &tiny_cfg(),
        &MoeConfig::tiny(),
        &UpcycleOptions {
            expert_noise: 0.01,
            ..Default::default()
        },
    )
    .unwrap();
    let mut lm = LanguageModel::new(model, 0.01);
    let ids: Vec<i64> = (0..4 * 24).map(|i| (i * 5 % 17 + 1) as i64).collect();
    let batch = || LmBatch::<A> {
        tokens: Tensor::<A, 2, Int>::from_data(TensorData::new(ids.clone(), [4, 24]), &device),
        languages: vec![Language::Rust; 4],
    };
    let mut optim = AdamWConfig::new().init();
    let first = lm.forward_loss(batch()).loss_value();
    for _ in 0..15 {
        let out = TrainStep::step(&lm, batch());
        lm = optim.step(3e-3, lm, out.grads);
    }
    let last = lm.forward_loss(batch()).loss_value();
    assert!(last < first * 0.8, "loss {first} -> {last}");
}

#[test]
fn learner_keeps_frozen_parameters_unchanged() {
    let device = Default::default();
    let (model, _) = upcycle(
        tiny_cfg().init::<A>(&device).unwrap(),
        &tiny_cfg(),
        &MoeConfig::tiny().with_router_init_std(0.5),
        &UpcycleOptions {
            expert_noise: 0.01,
            ..Default::default()
        },
    )
    .unwrap();
    let before = model_tensors(&model.valid()).unwrap();
    let dir = std::env::temp_dir().join(format!("multipl-moe-learner-{}", std::process::id()));
    let cfg = TrainConfig {
        batch_size: 4,
        seq_len: 16,
        warmup_steps: 1,
        freeze: FreezePolicy::paper(),
        ..TrainConfig::tiny()
    };
    let trained = train(
        model,
        0.01,
        sequences(16, 16),
        sequences(4, 16),
        &cfg,
        &TrainTarget::new(&dir),
    )
    .unwrap();
    let after = model_tensors(&trained).unwrap();
    let mut moved = 0;
    for (key, t) in &before {
        let trainable = key.contains("token_experts")
            || key.contains("segment_experts")
            || key.contains("router");
        if trainable {
            moved += usize::from(t.data != after[key].data);
        } else {
            assert_eq!(t.data, after[key].data, "{key} is frozen but changed");
        }
    }
    assert!(moved > 0, "nothing trained");
    assert!(dir.join("checkpoint").exists(), "checkpoint written");
}

#[test]
fn non_finite_loss_stops_training_with_a_clear_error() {
    let device = Default::default();
    let mut model = tiny_cfg().init::<A>(&device).unwrap();
    let w = model.norm.weight.val().mul_scalar(f32::NAN).detach();
    model.norm.weight = Param::from_tensor(w);
    let dir = std::env::temp_dir().join(format!("multipl-moe-nan-{}", std::process::id()));
    let cfg = TrainConfig {
        batch_size: 4,
        seq_len: 16,
        ..TrainConfig::tiny()
    };
    let err = train(
        model,
        0.0,
        sequences(8, 16),
        sequences(4, 16),
        &cfg,
        &TrainTarget::new(&dir),
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::NonFiniteLoss { .. }), "{err}");
    assert!(err.to_string().contains("non-finite loss"));
    match err {
        TrainError::NonFiniteLoss { step, .. } => {
            assert_eq!(step, 0, "stopped at the first bad step")
        }
        _ => unreachable!(),
    }
    assert!(
        !dir.join("checkpoint").join("model-1.mpk").exists(),
        "no checkpoint of the bad epoch"
    );
}

#[test]
fn warmup_then_cosine() {
    let s = WarmupCosine::new(1.0, 0.1, 10, 110);
    assert!((s.at(0) - 0.1).abs() < 1e-12);
    assert!((s.at(9) - 1.0).abs() < 1e-12);
    assert!((s.at(10) - 1.0).abs() < 1e-12);
    assert!(
        (s.at(60) - 0.55).abs() < 1e-12,
        "half-way: mean of peak and floor"
    );
    assert!((s.at(110) - 0.1).abs() < 1e-12);
    assert!(s.at(30) > s.at(31));
}

/// SPEC §5's schedule in closed form, independent of `WarmupCosine`: the rate of optimizer
/// step `s` (from 0) of `total`.
fn closed_form_lr(cfg: &TrainConfig, s: usize, total: usize) -> f64 {
    let (peak, floor, warmup) = (cfg.lr, cfg.min_lr, cfg.warmup_steps);
    if s < warmup {
        return peak * (s + 1) as f64 / warmup as f64;
    }
    let progress = (s - warmup) as f64 / (total - warmup) as f64;
    floor + (peak - floor) * (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0
}

/// The learning rate burn-train logged for every micro-batch of a one-segment run
/// (`train/epoch-1/Learning_Rate.log`: value, count), in order.
fn logged_lrs(dir: &Path) -> Vec<f64> {
    let path = dir.join("train/epoch-1/Learning_Rate.log");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').next().unwrap().parse::<f64>().unwrap())
        .collect()
}

/// `n` data-parallel "devices": the backend's default device `n` times (on ndarray, the same
/// CPU with `n` workers).
fn default_devices(n: usize) -> Vec<burn::tensor::Device<TestBackend>> {
    (0..n).map(|_| Default::default()).collect()
}

fn as_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// `loss.csv`'s losses with each optimizer step's rows sorted: the devices of a round append
/// their rows, and their gradients are summed, in the order they finish (so multi-device
/// runs agree to rounding, not bit for bit).
fn step_losses(dir: &Path, rows_per_step: usize) -> Vec<f64> {
    let mut losses = losses(dir);
    for step in losses.chunks_mut(rows_per_step) {
        step.sort_by(f64::total_cmp);
    }
    losses
}

/// The schedule counts optimizer steps whatever the accumulation `g` and the device count
/// `n`: every micro-batch logs the closed-form rate of its optimizer step (row `r` belongs to
/// step `r / (g·n)`), so warm-up and cosine span the run's 4 steps (the last rate well above
/// 0), and `loss.csv` has one row per micro-batch. With `checkpoint_every = 2` optimizer steps
/// the same run writes 2 checkpoints on 1 or 2 devices, and its segments, each resumed from
/// the checkpoint before it, repeat the one-segment run's `loss.csv`. The same global batch
/// trains alike on 1 device accumulating 2 micro-batches and on 2 devices.
#[test]
fn the_learning_rate_follows_optimizer_steps_under_accumulation_and_devices() {
    let steps = 4;
    let mut by_global_batch = std::collections::BTreeMap::new();
    for (g, n) in [(1, 1), (2, 1), (8, 1), (1, 2), (2, 2)] {
        let run = |checkpoint_every: usize| {
            let cfg = TrainConfig {
                batch_size: 1,
                grad_accumulation: g,
                seq_len: 8,
                lr: 1e-3,
                min_lr: 0.0,
                warmup_steps: 2,
                checkpoint_every,
                keep_checkpoints: 0,
                ..TrainConfig::tiny()
            };
            let dir = run_dir(&format!("lr-g{g}-n{n}-every{checkpoint_every}"));
            train(
                fresh_model(),
                0.0,
                sequences(steps * g * n, 8),
                sequences(2, 8),
                &cfg,
                &TrainTarget::new(&dir).with_devices(default_devices(n)),
            )
            .unwrap();
            (cfg, dir)
        };
        let (cfg, whole) = run(0);
        let lrs = logged_lrs(&whole);
        assert_eq!(
            lrs.len(),
            steps * g * n,
            "g {g}, n {n}: one rate per micro-batch"
        );
        for (row, lr) in lrs.iter().enumerate() {
            let want = closed_form_lr(&cfg, row / (g * n), steps);
            assert!(
                (lr - want).abs() <= 1e-12,
                "g {g}, n {n}, row {row}: lr {lr}, expected {want}"
            );
        }
        assert!(lrs[lrs.len() - 1] > 1e-4, "g {g}, n {n}: {lrs:?}");
        assert_eq!(losses(&whole).len(), steps * g * n);
        let (_, segmented) = run(2);
        for c in [1, 2] {
            assert!(segmented.join(format!("checkpoint/model-{c}.mpk")).exists());
        }
        assert!(
            !segmented.join("checkpoint/model-3.mpk").exists(),
            "g {g}, n {n}: a checkpoint every 2 optimizer steps"
        );
        let rows = step_losses(&whole, g * n);
        let what = format!("g {g}, n {n}: segmented vs one segment");
        assert_close(
            &as_f32(&step_losses(&segmented, g * n)),
            &as_f32(&rows),
            1e-5,
            &what,
        );
        by_global_batch
            .entry(g * n)
            .or_insert_with(Vec::new)
            .push(rows);
        for dir in [whole, segmented] {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let [one_device, two_devices] = &by_global_batch[&2][..] else {
        panic!("two runs of global batch 2")
    };
    assert_close(
        &as_f32(two_devices),
        &as_f32(one_device),
        1e-5,
        "2 devices vs g 2",
    );
}

/// A micro-batch's gradient is that of its loss divided by the micro-batches of an optimizer
/// step, so their sum is the gradient of the global batch's mean loss: one SGD step (an
/// update proportional to the gradient) with `micro_batches_per_step = 4` equals one at a
/// quarter of the rate without.
#[test]
fn a_micro_batch_gradient_is_divided_by_the_micro_batches_of_a_step() {
    let device = Default::default();
    let ids: Vec<i64> = (0..2 * 12).map(|i| (i * 5 % 17 + 1) as i64).collect();
    let sgd_step = |micro_batches: usize, lr: f64| {
        let mut lm = LanguageModel::new(fresh_model(), 0.0);
        lm.micro_batches_per_step = micro_batches;
        let batch = LmBatch::<A> {
            tokens: Tensor::<A, 2, Int>::from_data(TensorData::new(ids.clone(), [2, 12]), &device),
            languages: vec![Language::Go; 2],
        };
        let out = TrainStep::step(&lm, batch);
        let lm = SgdConfig::new().init().step(lr, lm, out.grads);
        model_tensors(&lm.lm.valid()).unwrap()
    };
    let divided = sgd_step(4, 0.5);
    let quarter_rate = sgd_step(1, 0.5 / 4.0);
    let untouched = model_tensors(&fresh_model().valid()).unwrap();
    for (key, t) in &divided {
        assert_close(&t.data, &quarter_rate[key].data, 1e-5, key);
    }
    assert!(
        divided.iter().any(|(k, t)| t.data != untouched[k].data),
        "nothing trained"
    );
}

/// Accumulating 2 micro-batches of 2 sequences trains the dense model as batches of 4 do
/// (same data order, same rates per optimizer step, the mean gradient), to rounding.
#[test]
fn accumulation_trains_as_the_larger_batch() {
    let run = |batch_size: usize, grad_accumulation: usize| {
        let cfg = TrainConfig {
            batch_size,
            grad_accumulation,
            seq_len: 12,
            warmup_steps: 1,
            ..TrainConfig::tiny()
        };
        let dir = run_dir(&format!("accumulation-{batch_size}x{grad_accumulation}"));
        let trained = train(
            fresh_model(),
            0.0,
            sequences(12, 12),
            sequences(2, 12),
            &cfg,
            &TrainTarget::new(&dir),
        )
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        model_tensors(&trained).unwrap()
    };
    let large = run(4, 1);
    let accumulated = run(2, 2);
    for (key, t) in &large {
        assert_close(&accumulated[key].data, &t.data, 1e-4, key);
    }
}

#[test]
fn packing_separates_documents_with_eos_and_keeps_languages_apart() {
    let docs = vec![
        TokenizedDocument {
            language: Language::Rust,
            ids: vec![1, 2, 3],
        },
        TokenizedDocument {
            language: Language::Go,
            ids: vec![7, 8],
        },
        TokenizedDocument {
            language: Language::Rust,
            ids: vec![4, 5],
        },
    ];
    let packed = pack(&docs, 3, 0);
    assert_eq!(
        packed[&Language::Rust]
            .iter()
            .map(|s| s.tokens.clone())
            .collect::<Vec<_>>(),
        vec![vec![1, 2, 3], vec![0, 4, 5]]
    );
    assert_eq!(packed[&Language::Go][0].tokens, vec![7, 8, 0]);
    assert!(packed.values().flatten().all(|s| s.tokens.len() == 3));
}

#[test]
fn split_is_deterministic_and_holds_out_whole_documents() {
    let corpus = embedded(20);
    let (train_a, valid_a) = split_documents(&corpus.documents, 0.2, 5);
    let (train_b, valid_b) = split_documents(&corpus.documents, 0.2, 5);
    assert_eq!((&train_a, &valid_a), (&train_b, &valid_b));
    assert_eq!(train_a.len() + valid_a.len(), corpus.documents.len());
    assert!(
        valid_a.iter().all(|d| !train_a.contains(d)),
        "a validation document is also in training"
    );
    for lang in Language::ALL {
        assert_eq!(valid_a.iter().filter(|d| d.language == lang).count(), 4);
    }
    let (_, valid_c) = split_documents(&corpus.documents, 0.2, 6);
    assert_ne!(valid_a, valid_c, "another seed, another split");
}

#[test]
fn mix_follows_the_requested_shares() {
    let docs: Vec<TokenizedDocument> = Language::ALL
        .iter()
        .map(|&l| TokenizedDocument {
            language: l,
            ids: (0..100).collect(),
        })
        .collect();
    let packed = pack(&docs, 10, 0);
    let seqs = Mix::low_resource(0.75).sample(&packed, 120, 1).unwrap();
    let low = seqs.iter().filter(|s| s.language.is_low_resource()).count();
    assert_eq!(low, 90);
    let again = Mix::low_resource(0.75).sample(&packed, 120, 1).unwrap();
    assert_eq!(seqs, again);
}

#[test]
fn source_tree_detects_languages_and_skips_binary_files() {
    let dir = std::env::temp_dir().join(format!("multipl-moe-tree-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.rs"), "fn main() {}").unwrap();
    std::fs::write(dir.join("sub/b.py"), "print(1)").unwrap();
    std::fs::write(dir.join("sub/c.go"), [0u8, 159, 146, 150]).unwrap();
    std::fs::write(dir.join("notes.txt"), "hello").unwrap();
    let corpus = read_tree(&dir).unwrap();
    let langs: Vec<Language> = corpus.documents.iter().map(|d| d.language).collect();
    assert_eq!(langs, vec![Language::Rust, Language::Python]);
    assert_eq!(corpus.skipped, 2);
    assert_eq!(Language::from_extension("rb"), Some(Language::Ruby));
    assert_eq!(Language::from_extension("hpp"), Some(Language::Cpp));
    assert_eq!(Language::from_extension("md"), None);
}

#[test]
fn embedded_corpus_is_deterministic_small_and_real_code() {
    let a = embedded(50);
    assert_eq!(a.documents, embedded(50).documents);
    let bytes: usize = a.documents.iter().map(|d| d.text.len()).sum();
    assert!(bytes < 2 << 20, "{bytes} bytes");
    let of = |l: Language| {
        a.documents
            .iter()
            .find(|d| d.language == l)
            .map(|d| d.text.clone())
            .unwrap()
    };
    assert!(of(Language::Rust).contains("fn "));
    assert!(of(Language::Go).contains("func "));
    assert!(of(Language::Ruby).contains("end\n"));
    let _: Vec<Document> = a.documents;
    let _ = TestBackend::default;
}

/// The training loss of every micro-batch of a run (`loss.csv`).
fn losses(dir: &std::path::Path) -> Vec<f64> {
    let path = dir.join("loss.csv");
    read_loss_csv(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .iter()
        .map(|row| row.loss)
        .collect()
}

fn resumable_cfg() -> TrainConfig {
    TrainConfig {
        batch_size: 2,
        seq_len: 12,
        warmup_steps: 1,
        epochs: 2,
        checkpoint_every: 3,
        ..TrainConfig::tiny()
    }
}

fn fresh_model() -> multipl_moe::core::CausalLm<A> {
    let device = Default::default();
    multipl_moe::core::rng::seeded::<TestBackend, _>(&device, 9, || {
        tiny_cfg().init::<A>(&device).unwrap()
    })
}

/// Copies a run directory's checkpoints and `loss.csv` (what resuming reads).
fn copy_run(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("checkpoint")).unwrap();
    for entry in std::fs::read_dir(from.join("checkpoint")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join("checkpoint").join(path.file_name().unwrap())).unwrap();
    }
    std::fs::copy(from.join("loss.csv"), to.join("loss.csv")).unwrap();
}

/// 8 sequences × 2 epochs in batches of 2 = 8 steps, a checkpoint every 3 steps: segments of
/// 3, 3 and 2 steps, the second crossing the epoch boundary. Checkpoint 3 broken in each way a
/// kill or a disk can break it: resuming falls back to checkpoint 2, says why, and rewrites
/// `loss.csv` byte for byte as the uninterrupted run wrote it.
#[test]
fn resume_skips_broken_checkpoints_and_repeats_the_uninterrupted_loss_csv() {
    let cfg = TrainConfig {
        keep_checkpoints: 0,
        ..resumable_cfg()
    };
    let run = |model, target: &TrainTarget<A>| {
        train(model, 0.0, sequences(8, 12), sequences(2, 12), &cfg, target)
    };
    // One initial model, cloned: `Backend::seed` is global and tests run in parallel, so two
    // models built "the same way" could hold different weights.
    let initial = fresh_model();
    let whole = run_dir("resume-whole");
    run(initial.clone(), &TrainTarget::new(&whole)).unwrap();
    let expected = std::fs::read_to_string(whole.join("loss.csv")).unwrap();
    assert_eq!(losses(&whole).len(), 8, "8 steps");
    assert_eq!(
        multipl_moe::train::training::checkpoint::numbers(&whole.join("checkpoint")),
        vec![3, 2, 1]
    );
    let ckpt = |d: &Path, f: &str| d.join("checkpoint").join(f);
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 5] = [
        ("truncated-model", |d| {
            let p = d.join("checkpoint/model-3.mpk");
            let len = std::fs::metadata(&p).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        }),
        ("garbage-optim", |d| {
            std::fs::write(d.join("checkpoint/optim-3.mpk"), b"\x93garbage").unwrap()
        }),
        ("missing-optim", |d| {
            std::fs::remove_file(d.join("checkpoint/optim-3.mpk")).unwrap()
        }),
        ("empty-scheduler", |d| {
            std::fs::write(d.join("checkpoint/scheduler-3.mpk"), b"").unwrap()
        }),
        // Killed while saving checkpoint 3: a temporary file, no model-3, a torn last row.
        ("killed-during-save", |d| {
            std::fs::rename(
                d.join("checkpoint/model-3.mpk"),
                d.join("checkpoint/.model-3.mpk.tmp"),
            )
            .unwrap();
            let mut text = std::fs::read_to_string(d.join("loss.csv")).unwrap();
            text.truncate(text.len() - 3);
            std::fs::write(d.join("loss.csv"), text).unwrap();
        }),
    ];
    for (name, damage) in damages {
        let cut = run_dir(&format!("resume-{name}"));
        copy_run(&whole, &cut);
        damage(&cut);
        // A different initial model proves that the weights come from the checkpoint.
        let device = Default::default();
        let other = multipl_moe::core::rng::seeded::<TestBackend, _>(&device, 1234, || {
            tiny_cfg().init::<A>(&device).unwrap()
        });
        run(other, &TrainTarget::new(&cut).with_resume(true))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            std::fs::read_to_string(cut.join("loss.csv")).unwrap(),
            expected,
            "{name}: loss.csv differs from the uninterrupted run's"
        );
        assert!(
            ckpt(&cut, "model-3.mpk").exists(),
            "{name}: checkpoint 3 rewritten"
        );
        assert!(
            !ckpt(&cut, ".model-3.mpk.tmp").exists(),
            "{name}: temporary left"
        );
        let _ = std::fs::remove_dir_all(&cut);
    }
    let err = run(initial, &TrainTarget::new(&whole).with_resume(true)).unwrap_err();
    assert!(err.to_string().contains("already finished"), "{err}");
    let _ = std::fs::remove_dir_all(&whole);
}

/// `loss.csv` missing rows of the newest checkpoint (rows are written before their
/// checkpoint, so only an outside hand removes them): that checkpoint is not resumed from.
#[test]
fn resume_needs_the_loss_rows_of_its_checkpoint_and_old_checkpoints_are_pruned() {
    let cfg = resumable_cfg();
    assert_eq!(cfg.keep_checkpoints, 2, "default");
    let dir = run_dir("resume-rows");
    let run = |model, target: &TrainTarget<A>| {
        train(model, 0.0, sequences(8, 12), sequences(2, 12), &cfg, target)
    };
    let initial = fresh_model();
    run(initial.clone(), &TrainTarget::new(&dir)).unwrap();
    let ckpt = dir.join("checkpoint");
    assert_eq!(
        multipl_moe::train::training::checkpoint::numbers(&ckpt),
        vec![3, 2]
    );
    let full = std::fs::read_to_string(dir.join("loss.csv")).unwrap();
    // 6 rows belong to checkpoints 1-2; keep 5: checkpoint 2 is unusable, 1 is pruned.
    let five: String = full.lines().take(6).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("loss.csv"), five).unwrap();
    for kind in ["model", "optim", "scheduler"] {
        std::fs::remove_file(ckpt.join(format!("{kind}-3.mpk"))).unwrap();
    }
    // No usable checkpoint: a fresh start, which rewrites loss.csv whole.
    run(initial, &TrainTarget::new(&dir).with_resume(true)).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("loss.csv")).unwrap(), full);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A checkpoint that cannot be written (here a directory stands where `model-2.mpk` goes; a
/// full disk fails the same way) stops training with an error that names the file and the
/// cause, keeps checkpoint 1, and leaves no temporary file: no panic in the next segment.
#[test]
fn a_checkpoint_that_cannot_be_written_stops_training_with_its_cause() {
    let cfg = resumable_cfg();
    let dir = run_dir("unwritable");
    let blocker = dir.join("checkpoint/model-2.mpk");
    std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();
    // `--resume` keeps what is in the directory (a fresh run would delete checkpoint files).
    let err = train(
        fresh_model(),
        0.0,
        sequences(8, 12),
        sequences(2, 12),
        &cfg,
        &TrainTarget::new(&dir).with_resume(true),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, TrainError::Stopped { number: 2, .. }) && msg.contains("model-2.mpk"),
        "{msg}"
    );
    assert!(
        dir.join("checkpoint/model-1.mpk").exists(),
        "checkpoint 1 kept"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("checkpoint"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporaries left: {leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn data_order_is_a_per_epoch_permutation_fixed_by_the_seed() {
    let order = data_order(10, 3, 5);
    assert_eq!(order.len(), 30);
    for epoch in order.chunks(10) {
        let mut sorted = epoch.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }
    assert_ne!(order[..10], order[10..20], "epochs reshuffle");
    assert_eq!(order, data_order(10, 3, 5));
    assert_ne!(order, data_order(10, 3, 6));
}

/// burn-train's multi-device strategy on two ndarray "devices" (the same CPU twice): it runs,
/// writes its checkpoint and trains.
#[test]
fn multi_device_strategy_trains() {
    let dir = run_dir("multi-device");
    let model = fresh_model();
    let before = model_tensors(&model.valid()).unwrap();
    let cfg = TrainConfig {
        batch_size: 2,
        seq_len: 12,
        warmup_steps: 1,
        ..TrainConfig::tiny()
    };
    let trained = train(
        model,
        0.0,
        sequences(8, 12),
        sequences(2, 12),
        &cfg,
        &TrainTarget::new(&dir).with_devices(default_devices(2)),
    )
    .unwrap();
    let after = model_tensors(&trained).unwrap();
    assert!(
        before.iter().any(|(k, t)| t.data != after[k].data),
        "nothing trained"
    );
    assert!(dir.join("checkpoint/model-1.mpk").exists());
    let steps = losses(&dir).len();
    assert!(steps > 0, "logged {steps} steps");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A small real-looking corpus: links (to a parent directory, to a file, broken), a binary
/// file, libstdc++-style headers without extension and `.tcc`, `.h` files in C and C++, and
/// The Stack's JSONL layout.
#[test]
fn real_corpus_tree_reads_each_file_once_and_knows_headers() {
    let dir = run_dir("real-tree");
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("include/bits")).unwrap();
    std::fs::write(src.join("main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(
        src.join("include/vector"),
        "// <vector> -*- C++ -*-\n#pragma once\nnamespace std {}\n",
    )
    .unwrap();
    std::fs::write(
        src.join("include/bits/stl_vector.tcc"),
        "template<typename T> void f() {}\n",
    )
    .unwrap();
    std::fs::write(src.join("include/cpp.h"), "namespace a { class B {}; }\n").unwrap();
    std::fs::write(src.join("include/c.h"), "int add(int a, int b);\n").unwrap();
    std::fs::write(src.join("LICENSE"), "MIT\n").unwrap();
    std::fs::write(src.join("tool"), "#!/usr/bin/env ruby\nputs 1\n").unwrap();
    std::fs::write(src.join("blob.go"), [0u8, 1, 2, 3]).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::symlink;
        symlink("..", src.join("include/up")).unwrap();
        symlink(".", src.join("self")).unwrap();
        symlink("main.rs", src.join("again.rs")).unwrap();
        symlink("nowhere.py", src.join("broken.py")).unwrap();
    }
    let corpus = read_tree(&src).unwrap();
    let mut langs: Vec<Language> = corpus.documents.iter().map(|d| d.language).collect();
    langs.sort();
    assert_eq!(
        langs,
        vec![
            Language::Cpp,
            Language::Cpp,
            Language::Cpp,
            Language::Rust,
            Language::Ruby
        ],
        "vector, stl_vector.tcc, cpp.h; main.rs once; the ruby script"
    );
    if cfg!(unix) {
        assert_eq!(corpus.duplicates, 3, "up, self, again.rs");
        assert_eq!(corpus.skipped, 4, "c.h, LICENSE, blob.go, broken.py");
    }
    assert_eq!(
        corpus.missing(),
        vec![Language::Python, Language::Java, Language::Go]
    );
    assert_eq!(corpus.counts()[&Language::Cpp].0, 3);

    let jsonl = dir.join("stack.jsonl");
    std::fs::write(
        &jsonl,
        "{\"content\": \"print(1)\", \"lang\": \"Python\", \"size\": 8}\n\
         {\"content\": \"int x;\", \"lang\": \"C++\"}\n\
         {\"content\": \"x\", \"lang\": \"COBOL\"}\n",
    )
    .unwrap();
    let stack = multipl_moe::train::data::corpus::read_path(&jsonl).unwrap();
    let langs: Vec<Language> = stack.documents.iter().map(|d| d.language).collect();
    assert_eq!(langs, vec![Language::Python, Language::Cpp]);
    assert_eq!(stack.skipped, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mix_trains_on_the_languages_present_unless_a_group_is_empty() {
    let mix = Mix::low_resource_over(0.7, &[Language::Python, Language::Rust]).unwrap();
    assert_eq!(
        mix.weights,
        vec![
            (Language::Python, 0.30000000000000004),
            (Language::Rust, 0.7)
        ]
    );
    let err = Mix::low_resource_over(0.7, &[Language::Python]).unwrap_err();
    assert!(err.to_string().contains("rust, go, ruby"), "{err}");
    assert!(Mix::low_resource_over(0.0, &[Language::Python]).is_ok());
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = run_dir(&format!("cfg-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The example config with one line replaced or added.
fn example_with(name: &str, from: &str, to: &str) -> Result<RunConfig, TrainError> {
    let text = std::fs::read_to_string("examples/run.toml").unwrap();
    assert!(text.contains(from), "examples/run.toml has `{from}`");
    RunConfig::from_file(&write_config(name, &text.replacen(from, to, 1)))
}

#[test]
fn run_config_refuses_unknown_keys_and_out_of_range_values_by_name() {
    let example = RunConfig::from_file(Path::new("examples/run.toml")).unwrap();
    assert!(example.train.max_valid_batches > 0 && example.train.valid_every > 0);
    let msg = |r: Result<RunConfig, TrainError>| r.unwrap_err().to_string();
    let e = msg(example_with("typo", "checkpoint_every", "checkpoint_evry"));
    assert!(
        e.contains("`train.checkpoint_evry` (did you mean `train.checkpoint_every`?)"),
        "{e}"
    );
    let e = msg(example_with("typo2", "valid_fraction", "valid_fraktion"));
    assert!(
        e.contains("`valid_fraktion`") && e.contains("`valid_fraction`"),
        "{e}"
    );
    let e = msg(example_with("nested", "top_k = 2", "top_k = 2\ntopk = 2"));
    assert!(e.contains("`moe.token.topk`"), "{e}");
    for (from, to, key, range) in [
        (
            "low_resource_share = 0.7",
            "low_resource_share = 1.5",
            "low_resource_share",
            "[0, 1]",
        ),
        (
            "low_resource_share = 0.7",
            "low_resource_share = nan",
            "low_resource_share",
            "NaN",
        ),
        (
            "valid_fraction = 0.05",
            "valid_fraction = 2",
            "valid_fraction",
            "(0, 1)",
        ),
        ("lr = 0.002", "lr = -1", "lr", "(0, ∞)"),
        ("batch_size = 8", "batch_size = 0", "batch_size", ">= 1"),
    ] {
        let e = msg(example_with(key, from, to));
        assert!(
            e.contains(&format!("`{key}`")) && e.contains(range),
            "{to}: {e}"
        );
    }
}

#[test]
fn a_run_never_overwrites_an_earlier_one_silently() {
    let dir = run_dir("overwrite");
    prepare_out_dir(&dir, false, false).unwrap();
    std::fs::create_dir_all(dir.join("checkpoint")).unwrap();
    std::fs::write(dir.join("loss.csv"), "micro_batch,loss\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let err = prepare_out_dir(&dir, false, false).unwrap_err();
    assert!(matches!(err, TrainError::OutputExists { .. }), "{err}");
    assert!(err.to_string().contains("--resume"), "{err}");
    prepare_out_dir(&dir, true, false).unwrap();
    assert!(dir.join("loss.csv").exists(), "resume keeps the run");
    prepare_out_dir(&dir, false, true).unwrap();
    assert!(!dir.join("loss.csv").exists() && !dir.join("checkpoint").exists());
    assert!(
        dir.join("notes.txt").exists(),
        "only the run's own files are replaced"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn capped_validation_takes_every_language_in_turn() {
    let seqs: Vec<_> = sequences(12, 4);
    let mut by_lang = seqs.clone();
    by_lang.sort_by_key(|s| s.language);
    let mixed = interleave_languages(by_lang);
    assert_eq!(mixed.len(), 12);
    let first: Vec<Language> = mixed[..6].iter().map(|s| s.language).collect();
    assert_eq!(first, Language::ALL.to_vec());
}

/// The demo pipeline seeds every stage: two runs of a small demo write the same table and the
/// same `loss.csv` for every stage (issue 12; two processes running `train` are compared in
/// `tests/it/cli.rs`, and `cargo run --release` was compared the same way by hand).
#[test]
fn the_demo_repeats_itself_exactly() {
    use multipl_moe::train::demo::pipeline::{DemoConfig, DemoData, run_demo};
    let tiny = DemoConfig::tiny();
    let small = |cfg: TrainConfig| TrainConfig {
        batch_size: 4,
        seq_len: 32,
        warmup_steps: 2,
        ..cfg
    };
    let cfg = DemoConfig {
        documents_per_language: 12,
        vocab_size: 300,
        model: QwenConfig::new(300, 32, 64, 1, 4, 2).with_max_position_embeddings(64),
        pretrain: small(tiny.pretrain.clone()),
        pretrain_sequences: 48,
        finetune: small(tiny.finetune.clone()),
        finetune_sequences: 32,
        ..tiny
    };
    let device = Default::default();
    let runs: Vec<_> = ["demo-a", "demo-b"]
        .into_iter()
        .map(|name| {
            let out = run_dir(name);
            run_demo::<A>(&cfg, &DemoData::Embedded, &[0], &out, &device).unwrap();
            out
        })
        .collect();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
    assert_eq!(
        read(&runs[0].join("table.txt")),
        read(&runs[1].join("table.txt"))
    );
    let stages: Vec<_> = std::fs::read_dir(runs[0].join("seed-0"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .filter(|name| runs[0].join("seed-0").join(name).join("loss.csv").exists())
        .collect();
    assert_eq!(stages.len(), 4, "four trained stages: {stages:?}");
    for stage in &stages {
        let [a, b] = [0, 1].map(|i| read(&runs[i].join("seed-0").join(stage).join("loss.csv")));
        assert!(a.lines().count() > 2, "{stage:?} trained");
        assert_eq!(a, b, "{stage:?}: loss.csv differs between two runs");
    }
    for out in runs {
        let _ = std::fs::remove_dir_all(out);
    }
}

/// The SmolLM2 examples (README, "A real pretrained model"; BENCHMARKS.md's memory table) parse
/// with the strict run config and hold what their comments say.
#[test]
fn smollm2_examples_parse_as_documented() {
    let paper = RunConfig::from_file(Path::new("examples/smollm2-paper.toml")).unwrap();
    let moe = paper.moe.as_ref().expect("a [moe] section");
    assert_eq!(
        (
            moe.token.num_experts,
            moe.token.top_k,
            moe.segment.num_experts
        ),
        (6, 2, 6)
    );
    assert_eq!((moe.segment.window, moe.hybrid_layers.clone()), (64, None));
    let t = &paper.train;
    assert_eq!((t.batch_size, t.seq_len, t.checkpoint_every), (4, 256, 3));
    assert_eq!(t.freeze, FreezePolicy::paper());
    assert!(!paper.upcycle.function_preserving);
    let small = RunConfig::from_file(Path::new("examples/smollm2.toml")).unwrap();
    let moe = small.moe.as_ref().expect("a [moe] section");
    assert_eq!(moe.hybrid_layers, Some(vec![0, 6, 12, 18, 24]));
    assert_eq!(small.train.freeze, FreezePolicy::paper());
    assert!(small.upcycle.function_preserving);
}
