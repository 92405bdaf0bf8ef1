//! Upcycling, freezing and export of Hugging Face models (SPEC §5, §6).

use crate::common::fixtures::fixture;
use crate::common::{TestAutodiff, TestBackend, assert_close, values};
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use multipl_moe::core::{CausalLm, MoeConfig, SegmentRouting};
use multipl_moe::qwen::export::model_tensors;
use multipl_moe::qwen::{
    FreezePolicy, SaveDtype, UpcycleOptions, apply_freeze, load_model, save_model, upcycle,
};

type B = TestBackend;

fn batch<Bk: Backend>(device: &Bk::Device) -> Tensor<Bk, 2, Int> {
    let ids: Vec<i64> = (0..2 * 24).map(|i| (i * 29 % 127 + 1) as i64).collect();
    Tensor::from_data(TensorData::new(ids, [2, 24]), device)
}

/// Mean next-token cross-entropy of `model` on `tokens`.
fn next_token_loss<Bk: Backend>(model: &CausalLm<Bk>, tokens: Tensor<Bk, 2, Int>) -> Tensor<Bk, 1> {
    let [b, t] = tokens.dims();
    let logits = model
        .forward(tokens.clone().narrow(1, 0, t - 1), None)
        .logits;
    let v = logits.dims()[2];
    CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(
            logits.reshape([b * (t - 1), v]),
            tokens.narrow(1, 1, t - 1).reshape([b * (t - 1)]),
        )
}

fn small_windows(mut moe: MoeConfig) -> MoeConfig {
    moe.segment.window = 8; // several windows in a 24-token fixture sequence
    moe
}

#[test]
fn function_preserving_upcycling_reproduces_the_dense_logits() {
    let device = Default::default();
    let (cfg, dense) = load_model::<B>(&fixture("qwen2-gqa-bf16"), &device).unwrap();
    let expected = values(dense.forward(batch(&device), None).logits);
    for moe in [MoeConfig::paper(), MoeConfig::released_code()] {
        for routing in [SegmentRouting::Paper, SegmentRouting::Causal] {
            let mut moe = small_windows(moe.clone());
            moe.segment.routing = routing;
            let opts = UpcycleOptions {
                function_preserving: true,
                expert_noise: 0.0,
                seed: 1,
            };
            let (hybrid, _) = upcycle(dense.clone(), &cfg, &moe, &opts).unwrap();
            let got = values(hybrid.forward(batch(&device), None).logits);
            assert_close(&got, &expected, 1e-5, "function-preserving upcycle");
        }
    }
}

#[test]
fn plain_upcycling_changes_the_model_at_step_zero() {
    // SPEC §6: 0.7·FFN + 0.3·D·FFN != FFN. This measures the gap the docs report.
    let device = Default::default();
    let (cfg, dense) = load_model::<B>(&fixture("qwen2-gqa-bf16"), &device).unwrap();
    let (hybrid, _) = upcycle(
        dense.clone(),
        &cfg,
        &small_windows(MoeConfig::paper()),
        &UpcycleOptions::default(),
    )
    .unwrap();
    let a = values(dense.forward(batch(&device), None).logits);
    let b = values(hybrid.forward(batch(&device), None).logits);
    let gap = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    let la = values(next_token_loss(&dense, batch(&device)))[0];
    let lb = values(next_token_loss(&hybrid, batch(&device)))[0];
    println!(
        "step-0 gap (paper preset, fixture qwen2-gqa-bf16): max |Δlogit| = {gap:.4e}, loss dense {la:.5} vs hybrid {lb:.5}"
    );
    assert!(
        gap > 1e-4,
        "the paper's upcycling should not be function-preserving"
    );
}

#[test]
fn upcycled_experts_are_copies_of_the_dense_ffn() {
    let device = Default::default();
    let (cfg, dense) = load_model::<B>(&fixture("qwen2-tied-f32"), &device).unwrap();
    let (hybrid, hcfg) = upcycle(
        dense.clone(),
        &cfg,
        &MoeConfig::paper(),
        &UpcycleOptions::default(),
    )
    .unwrap();
    let dense_t = model_tensors(&dense).unwrap();
    let hybrid_t = model_tensors(&hybrid).unwrap();
    let ffn = |k: &str| &dense_t[&format!("model.layers.0.mlp.{k}")].data;
    for e in 0..5 {
        for k in ["gate_proj", "up_proj", "down_proj"] {
            assert_eq!(
                &hybrid_t[&format!("model.layers.0.mlp.token_experts.{e}.{k}.weight")].data,
                ffn(&format!("{k}.weight"))
            );
            assert_eq!(
                &hybrid_t[&format!("model.layers.0.mlp.shared_expert.{k}.weight")].data,
                ffn(&format!("{k}.weight"))
            );
        }
    }
    assert_eq!(hcfg.moe.unwrap().token.num_experts, 6);
    // Router init: normal(0, 0.02).
    let router = &hybrid_t["model.layers.0.mlp.token_router.weight"].data;
    let std = (router.iter().map(|x| x * x).sum::<f32>() / router.len() as f32).sqrt();
    assert!((0.01..0.04).contains(&std), "router std {std}");
}

/// On both fixtures: the bf16 one is converted at import, the f32 one's matrices are borrowed
/// from the mapped file on ndarray (vendor/README.md fix 8), so frozen weights stay borrowed
/// and trained ones are replaced by the optimizer.
#[test]
fn freeze_keeps_frozen_tensors_bit_identical_and_moves_trained_ones() {
    for name in ["qwen2-gqa-bf16", "qwen2-tied-f32"] {
        train_frozen_three_steps(name);
    }
}

fn train_frozen_three_steps(name: &str) {
    let device = Default::default();
    let (cfg, dense) = load_model::<TestAutodiff>(&fixture(name), &device).unwrap();
    let moe = MoeConfig::paper().with_router_init_std(0.5);
    let (hybrid, _) = upcycle(
        dense,
        &cfg,
        &small_windows(moe),
        &UpcycleOptions {
            expert_noise: 0.01,
            ..Default::default()
        },
    )
    .unwrap();
    let mut model = apply_freeze(hybrid, &FreezePolicy::paper());
    let before = model_tensors(&model.valid()).unwrap();
    let mut optim = AdamWConfig::new().with_weight_decay(0.1).init();
    for _ in 0..3 {
        let out = model.forward(batch(&device), None);
        let balance = out.balance_loss().unwrap().mul_scalar(0.01);
        let loss = out.logits.powi_scalar(2).mean().add(balance);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
    }
    let after = model_tensors(&model.valid()).unwrap();
    for (key, t) in &before {
        let trained = key.contains("token_experts")
            || key.contains("segment_experts")
            || key.contains("router");
        let same = t.data == after[key].data;
        if trained {
            assert!(!same, "{name}: {key} should have trained");
        } else {
            assert!(same, "{name}: {key} should be frozen");
        }
    }
}

#[test]
fn export_round_trip_is_bit_exact_and_bf16_rounds() {
    let device = Default::default();
    let (cfg, dense) = load_model::<B>(&fixture("qwen2-gqa-bf16"), &device).unwrap();
    let (hybrid, hcfg) = upcycle(
        dense,
        &cfg,
        &MoeConfig::released_code(),
        &UpcycleOptions {
            expert_noise: 0.05,
            seed: 3,
            function_preserving: false,
        },
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("multipl-moe-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    save_model(&hybrid, &hcfg, &dir, SaveDtype::F32).unwrap();
    let (cfg2, loaded) = load_model::<B>(&dir, &device).unwrap();
    assert_eq!(cfg2, hcfg);
    let (a, b) = (
        model_tensors(&hybrid).unwrap(),
        model_tensors(&loaded).unwrap(),
    );
    assert_eq!(a, b, "f32 save -> load must be bit-exact");
    let parent = dir.parent().unwrap();
    let strays: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains("multipl-moe-export")
        })
        .collect();
    assert!(strays.is_empty(), "temporary directories left: {strays:?}");

    // Nothing is overwritten: a second save into the same directory is refused.
    assert!(matches!(
        save_model(&hybrid, &hcfg, &dir, SaveDtype::Bf16),
        Err(multipl_moe::qwen::QwenError::OutputExists(_))
    ));
    let dir = dir.with_extension("bf16");
    let _ = std::fs::remove_dir_all(&dir);
    save_model(&hybrid, &hcfg, &dir, SaveDtype::Bf16).unwrap();
    let (_, loaded) = load_model::<B>(&dir, &device).unwrap();
    let c = model_tensors(&loaded).unwrap();
    for (k, t) in &a {
        let rounded: Vec<f32> = t
            .data
            .iter()
            .map(|v| half::bf16::from_f32(*v).to_f32())
            .collect();
        assert_eq!(rounded, c[k].data, "{k}: bf16 round trip");
    }
}
