//! Training: loss goes down, the freeze holds through burn-train's Learner, a NaN stops the
//! run, the schedule, and the data pipeline.

mod common;

use burn::module::{AutodiffModule, Param};
use burn::optim::{AdamWConfig, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use burn::train::TrainStep;
use common::{TestAutodiff, TestBackend};
use multipl_moe::core::{MoeConfig, MultiplMoeConfig, QwenConfig};
use multipl_moe::qwen::export::model_tensors;
use multipl_moe::qwen::{FreezePolicy, UpcycleOptions, upcycle};
use multipl_moe::train::corpus::{Document, Language, embedded, read_tree};
use multipl_moe::train::data::{LmBatch, Mix, TokenizedDocument, pack, split_documents};
use multipl_moe::train::lm::LanguageModel;
use multipl_moe::train::schedule::WarmupCosine;
use multipl_moe::train::trainer::{TrainTarget, data_order};
use multipl_moe::train::{TrainConfig, TrainError, train};

type A = TestAutodiff;

fn tiny_cfg() -> MultiplMoeConfig {
    MultiplMoeConfig::new(QwenConfig {
        vocab_size: 64,
        ..QwenConfig::tiny()
    })
}

fn sequences(n: usize, t: usize) -> Vec<multipl_moe::train::data::Sequence> {
    (0..n)
        .map(|i| multipl_moe::train::data::Sequence {
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
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
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

fn run_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("multipl-moe-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn fresh_model() -> multipl_moe::core::CausalLm<A> {
    let device = Default::default();
    <TestBackend as burn::tensor::backend::Backend>::seed(&device, 9);
    tiny_cfg().init::<A>(&device).unwrap()
}

/// 8 sequences × 2 epochs in batches of 2 = 8 steps, a checkpoint every 3 steps: segments of
/// 3, 3 and 2 steps, the second crossing the epoch boundary. Interrupting after checkpoint 2
/// and resuming gives the uninterrupted run's losses, step for step.
#[test]
fn resumed_run_repeats_the_uninterrupted_loss_sequence() {
    let cfg = resumable_cfg();
    let run = |model, target: &TrainTarget<A>| {
        train(model, 0.0, sequences(8, 12), sequences(2, 12), &cfg, target)
    };
    // One initial model, cloned: `Backend::seed` is global and tests run in parallel, so two
    // models built "the same way" could hold different weights.
    let initial = fresh_model();
    let whole = run_dir("resume-whole");
    run(initial.clone(), &TrainTarget::new(&whole)).unwrap();
    let expected = losses(&whole);
    assert_eq!(expected.len(), 8, "8 steps");
    for n in [2, 3] {
        assert!(whole.join(format!("checkpoint/model-{n}.mpk")).exists());
    }

    // The same run, killed after checkpoint 2: segment 3's checkpoint and logs never happened.
    let cut = run_dir("resume-cut");
    run(initial.clone(), &TrainTarget::new(&cut)).unwrap();
    for kind in ["model", "optim", "scheduler"] {
        std::fs::remove_file(cut.join(format!("checkpoint/{kind}-3.mpk"))).unwrap();
    }
    assert_eq!(multipl_moe::train::run::last_checkpoint(&cut), Some(2));
    // A different initial model proves that the weights come from the checkpoint.
    let device = Default::default();
    <TestBackend as burn::tensor::backend::Backend>::seed(&device, 1234);
    let other = tiny_cfg().init::<A>(&device).unwrap();
    run(other, &TrainTarget::new(&cut).with_resume(Some(2))).unwrap();
    // loss.csv keeps the 6 rows up to checkpoint 2 and appends the resumed segment's 2.
    let resumed = losses(&cut);
    assert_eq!(resumed.len(), 8);
    for (step, (g, w)) in resumed.iter().zip(&expected).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6 * w.abs().max(1.0),
            "step {step}: resumed {g} vs uninterrupted {w}"
        );
    }
    let err = run(initial, &TrainTarget::new(&cut).with_resume(Some(3))).unwrap_err();
    assert!(err.to_string().contains("resume"), "{err}");
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&cut);
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
    let device = Default::default();
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
        &TrainTarget::new(&dir).with_devices(vec![device, device]),
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
