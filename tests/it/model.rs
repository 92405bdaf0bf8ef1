//! Whole-model behaviour: shapes, causality of the segment modes, gradients, configs.

use crate::common::{TestAutodiff, TestBackend, values};
use burn::module::{AutodiffModule, Param};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use multipl_moe::core::decoder::FeedForward;
use multipl_moe::core::{
    CausalLm, ConfigError, MoeConfig, MultiplMoeConfig, QwenConfig, SegmentMoeConfig,
    SegmentRouting, TokenMoeConfig,
};

type B = TestBackend;

fn tokens<Bk: Backend>(rows: &[Vec<i64>], device: &Bk::Device) -> Tensor<Bk, 2, Int> {
    let t = rows[0].len();
    Tensor::from_data(TensorData::new(rows.concat(), [rows.len(), t]), device)
}

fn model<Bk: Backend>(routing: SegmentRouting, device: &Bk::Device) -> CausalLm<Bk> {
    let mut moe = MoeConfig::tiny().with_router_init_std(0.5);
    moe.segment.routing = routing;
    moe.segment.window = 4;
    multipl_moe::core::rng::seeded::<Bk, _>(device, 3, || {
        MultiplMoeConfig::new(QwenConfig {
            vocab_size: 97,
            ..QwenConfig::tiny()
        })
        .with_moe(Some(moe))
        .init(device)
        .expect("valid config")
    })
}

fn sequences(perturb_after: Option<usize>) -> Vec<Vec<i64>> {
    (0..3)
        .map(|b| {
            (0..18)
                .map(|t| match perturb_after {
                    Some(p) if t > p => ((t * 31 + b * 7 + 5) % 97) as i64,
                    _ => ((t * 13 + b * 5 + 1) % 97) as i64,
                })
                .collect()
        })
        .collect()
}

/// Max |Δlogit| at positions `<= t` between the original and the perturbed batch.
fn change_up_to(model: &CausalLm<B>, t: usize) -> f32 {
    let device = Default::default();
    let a = values(
        model
            .forward(tokens(&sequences(None), &device), None)
            .logits,
    );
    let b = values(
        model
            .forward(tokens(&sequences(Some(t)), &device), None)
            .logits,
    );
    let (seq, vocab) = (18, 97);
    let mut worst = 0.0f32;
    for bi in 0..3 {
        for pos in 0..=t {
            for v in 0..vocab {
                let i = (bi * seq + pos) * vocab + v;
                worst = worst.max((a[i] - b[i]).abs());
            }
        }
    }
    worst
}

#[test]
fn causal_mode_outputs_do_not_depend_on_later_tokens() {
    let model = model::<B>(SegmentRouting::Causal, &Default::default());
    // Cut inside a window (5), at a window end (7) and in the last partial window (16).
    for t in [0, 5, 7, 16] {
        let change = change_up_to(&model, t);
        assert_eq!(
            change, 0.0,
            "perturbing tokens after {t} changed outputs at <= {t} by {change}"
        );
    }
}

#[test]
fn paper_mode_leaks_the_future_as_documented() {
    let model = model::<B>(SegmentRouting::Paper, &Default::default());
    // Position 5 shares window 4..8 with positions 6, 7: its segment routing sees them.
    let change = change_up_to(&model, 5);
    assert!(
        change > 1e-6,
        "paper mode showed no dependence on later tokens ({change})"
    );
}

#[test]
fn forward_returns_logits_and_routing_of_each_hybrid_layer() {
    let device = Default::default();
    let cfg = MultiplMoeConfig::new(QwenConfig::tiny().with_tie_word_embeddings(true))
        .with_moe(Some(MoeConfig::tiny().with_hybrid_layers(Some(vec![1]))));
    let model = cfg.init::<B>(&device).unwrap();
    assert!(model.lm_head.is_none(), "tied head");
    assert!(matches!(model.layers[0].mlp, FeedForward::Dense(_)));
    assert!(matches!(model.layers[1].mlp, FeedForward::Hybrid(_)));
    let out = model.forward(tokens(&sequences(None)[..2], &device), None);
    assert_eq!(out.logits.dims(), [2, 18, 512]);
    assert!(out.routing[0].is_none());
    let routing = out.routing[1].as_ref().expect("hybrid layer routing");
    assert_eq!(routing.token.probs.dims(), [36, 4]);
    assert_eq!(routing.token.experts.dims(), [36, 1]);
    // 2 sequences × ceil(18/8) = 6 segments; r = floor(6·1/4) = 1.
    assert_eq!(routing.segment.probs.dims(), [6, 4]);
    assert_eq!(routing.segment.capacity, 1);
    let bal = values(out.balance_loss().expect("one hybrid layer"))[0];
    assert!((bal - values(routing.balance_loss.clone())[0]).abs() < 1e-6);
}

/// Sum of |gradient| of `param`; 0 when it got none.
fn grad_norm(
    param: &Param<Tensor<TestAutodiff, 2>>,
    grads: &<TestAutodiff as burn::tensor::backend::AutodiffBackend>::Gradients,
) -> f32 {
    param
        .grad(grads)
        .map_or(0.0, |g| values(g).iter().map(|x| x.abs()).sum())
}

#[test]
fn gradients_reach_both_routers_and_every_trained_expert() {
    for routing in [SegmentRouting::Paper, SegmentRouting::Causal] {
        let device = Default::default();
        let mut model = model::<TestAutodiff>(routing, &device);
        if routing == SegmentRouting::Causal {
            // Causal mode has no load guarantee (see segment_moe docs): let every segment take
            // all experts so that each one is certain to see tokens.
            for layer in model.layers.iter_mut() {
                if let FeedForward::Hybrid(moe) = &mut layer.mlp {
                    moe.segment_moe.capacity_factor = moe.segment_moe.experts.num_experts() as f64;
                }
            }
        }
        let batch: Vec<Vec<i64>> = (0..4)
            .map(|b| (0..32).map(|t| ((t * 17 + b * 29) % 97) as i64).collect())
            .collect();
        let out = model.forward(tokens(&batch, &device), None);
        let balance = out.balance_loss().unwrap();
        let loss = out.logits.powi_scalar(2).mean().add(balance);
        let grads = loss.backward();
        for (l, layer) in model.layers.iter().enumerate() {
            let FeedForward::Hybrid(moe) = &layer.mlp else {
                panic!("all layers hybrid")
            };
            for (name, router) in [
                ("token", &moe.token_moe.router),
                ("segment", &moe.segment_moe.router),
            ] {
                let g: f32 = values(router.weight.grad(&grads).expect("router grad"))
                    .iter()
                    .map(|x| x.abs())
                    .sum();
                assert!(
                    g > 0.0,
                    "{routing:?} layer {l}: no gradient on the {name} router"
                );
            }
            for (name, bank) in [
                ("token", &moe.token_moe.experts),
                ("segment", &moe.segment_moe.experts),
            ] {
                for (e, expert) in bank.experts.iter().enumerate() {
                    for (which, param) in [("gate_up", &expert.gate_up), ("down", &expert.down)] {
                        assert!(
                            grad_norm(param, &grads) > 0.0,
                            "{routing:?} layer {l}: {name} expert {e} {which} got no gradient"
                        );
                    }
                }
            }
        }
        let _ = model.valid();
    }
}

#[test]
fn validate_names_the_field_at_fault() {
    let field = |r: Result<(), ConfigError>| match r {
        Err(ConfigError::InvalidField { field, .. }) => field,
        Ok(()) => "ok",
    };
    let moe = |f: fn(MoeConfig) -> MoeConfig| {
        field(
            MultiplMoeConfig::new(QwenConfig::tiny())
                .with_moe(Some(f(MoeConfig::paper())))
                .validate(),
        )
    };
    assert_eq!(moe(|m| m), "ok");
    assert_eq!(
        moe(|m| MoeConfig {
            token: TokenMoeConfig::new().with_top_k(7),
            ..m
        }),
        "token.top_k"
    );
    assert_eq!(
        moe(|m| MoeConfig {
            token: TokenMoeConfig::new().with_shared_expert(6),
            ..m
        }),
        "token.shared_expert"
    );
    assert_eq!(
        moe(|m| MoeConfig {
            segment: SegmentMoeConfig::new().with_window(0),
            ..m
        }),
        "segment.window"
    );
    assert_eq!(
        moe(|m| MoeConfig {
            segment: SegmentMoeConfig::new().with_capacity_factor(0.0),
            ..m
        }),
        "segment.capacity_factor"
    );
    assert_eq!(
        moe(|m| MoeConfig {
            segment: SegmentMoeConfig::new().with_capacity_factor(-1.0),
            ..m
        }),
        "segment.capacity_factor"
    );
    assert_eq!(
        moe(|m| m.with_hybrid_layers(Some(vec![5]))),
        "hybrid_layers"
    );
    assert_eq!(
        field(
            QwenConfig {
                num_attention_heads: 3,
                ..QwenConfig::tiny()
            }
            .validate()
        ),
        "num_attention_heads"
    );
    assert_eq!(
        field(
            QwenConfig {
                num_key_value_heads: 3,
                ..QwenConfig::tiny()
            }
            .validate()
        ),
        "num_key_value_heads"
    );
    let err = MultiplMoeConfig::new(QwenConfig {
        hidden_size: 0,
        ..QwenConfig::tiny()
    })
    .init::<B>(&Default::default())
    .unwrap_err();
    assert!(err.to_string().contains("hidden_size"), "{err}");
}

#[test]
fn presets_follow_the_spec() {
    let paper = MoeConfig::paper();
    assert_eq!((paper.token.num_experts, paper.token.top_k), (6, 2));
    assert_eq!((paper.segment.num_experts, paper.segment.window), (6, 64));
    assert_eq!(paper.segment.pooling, multipl_moe::core::Pooling::Mean);
    assert_eq!(paper.segment.gate_scale, multipl_moe::core::GateScale::One);
    let released = MoeConfig::released_code();
    assert_eq!(released.segment.pooling, multipl_moe::core::Pooling::Max);
    assert_eq!(
        released.segment.gate_scale,
        multipl_moe::core::GateScale::InverseWindow
    );
    assert_eq!(released.segment.max_experts_per_segment, Some(4));
    assert_eq!(
        (
            released.lambda_token,
            released.lambda_segment,
            released.balance_coef
        ),
        (0.7, 0.3, 0.01)
    );
    // Configs round-trip through JSON (serde).
    let json = serde_json::to_string(&MultiplMoeConfig::tiny()).unwrap();
    let back: MultiplMoeConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, MultiplMoeConfig::tiny());
}

/// A one-layer hybrid model (so a segment's output depends only on its own routing).
fn one_layer(routing: SegmentRouting, device: &burn::tensor::Device<B>) -> CausalLm<B> {
    let mut moe = MoeConfig::tiny().with_router_init_std(0.5);
    moe.segment.routing = routing;
    moe.segment.window = 4;
    MultiplMoeConfig::new(QwenConfig {
        vocab_size: 97,
        num_hidden_layers: 1,
        ..QwenConfig::tiny()
    })
    .with_moe(Some(moe))
    .init(device)
    .expect("valid config")
}

/// Batch logits vs one sequence at a time (what `multipl-moe logits --tokens-file` computes vs
/// `--tokens`): in paper mode expert choice competes over the `V = B·P` segments of the
/// batch, so a window's logits differ exactly where its segment's gates differ; in causal
/// mode nothing competes and the logits are equal everywhere.
#[test]
fn batch_logits_differ_from_single_ones_exactly_where_paper_routing_competes() {
    let device = Default::default();
    let rows = sequences(None);
    let (t, a) = (rows[0].len(), 4);
    let p = t.div_ceil(a);
    for routing in [SegmentRouting::Paper, SegmentRouting::Causal] {
        let model = one_layer(routing, &device);
        let vocab = model.vocab_size();
        let batch = model.forward(tokens(&rows, &device), None);
        let seg = |out: &multipl_moe::core::CausalLmOutput<B>| {
            let r = out.routing[0].as_ref().expect("hybrid layer");
            values(r.segment.gates.clone())
        };
        let batch_gates = seg(&batch);
        let batch_logits = values(batch.logits);
        let n_s = batch_gates.len() / (rows.len() * p);
        let mut differing = 0;
        for (b, row) in rows.iter().enumerate() {
            let single = model.forward(tokens(std::slice::from_ref(row), &device), None);
            let single_gates = seg(&single);
            let single_logits = values(single.logits);
            for w in 0..p {
                let gates_equal = (0..n_s).all(|i| {
                    (batch_gates[(b * p + w) * n_s + i] - single_gates[w * n_s + i]).abs() < 1e-6
                });
                let positions = w * a..((w + 1) * a).min(t);
                let max_diff = positions
                    .flat_map(|pos| (0..vocab).map(move |v| (pos, v)))
                    .map(|(pos, v)| {
                        (batch_logits[(b * t + pos) * vocab + v] - single_logits[pos * vocab + v])
                            .abs()
                    })
                    .fold(0.0f32, f32::max);
                if gates_equal {
                    assert!(
                        max_diff < 1e-4,
                        "{routing:?} b{b} w{w}: same gates, Δ {max_diff}"
                    );
                } else {
                    assert!(
                        max_diff > 1e-5,
                        "{routing:?} b{b} w{w}: gates differ, Δ {max_diff}"
                    );
                    differing += 1;
                }
            }
        }
        match routing {
            SegmentRouting::Paper => assert!(differing > 0, "no segment competed"),
            SegmentRouting::Causal => assert_eq!(differing, 0, "causal routing competed"),
        }
    }
}

/// The cap rule (docs/FORMAT.md): no segment is served by more than `max_experts_per_segment`
/// experts, in training and inference, in both modes.
#[test]
fn max_experts_per_segment_caps_every_mode() {
    let device = Default::default();
    let rows = sequences(None);
    for routing in [SegmentRouting::Paper, SegmentRouting::Causal] {
        let mut moe = MoeConfig::tiny().with_router_init_std(0.5);
        moe.segment.routing = routing;
        moe.segment.window = 4;
        moe.segment.capacity_factor = 3.0; // uncapped: ~3 experts per segment
        moe.segment.max_experts_per_segment = Some(1);
        let model = MultiplMoeConfig::new(QwenConfig {
            vocab_size: 97,
            ..QwenConfig::tiny()
        })
        .with_moe(Some(moe))
        .init::<B>(&device)
        .expect("valid config");
        let out = model.forward(tokens(&rows, &device), None);
        for layer in out.routing.iter().flatten() {
            let gates = values(layer.segment.gates.clone());
            let n_s = layer.segment.probs.dims()[1];
            for (v, row) in gates.chunks(n_s).enumerate() {
                let served = row.iter().filter(|g| **g > 0.0).count();
                assert!(
                    served <= 1,
                    "{routing:?} training: segment {v} served by {served}"
                );
            }
        }
        for layer in &model.layers {
            if let FeedForward::Hybrid(h) = &layer.mlp {
                assert_eq!(
                    h.segment_moe.experts_per_segment(),
                    1,
                    "{routing:?} inference"
                );
            }
        }
    }
}
