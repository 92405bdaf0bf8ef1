//! Generation: the KV cache against full recomputation, inference routing, sampling.

use std::ops::ControlFlow;

use crate::common::{TestBackend, assert_close, values};
use burn::tensor::{Int, Tensor, TensorData};
use multipl_moe::core::sampling::argmax;
use multipl_moe::core::{
    CausalLm, GenerateOptions, Generated, Logits, ModelCache, MoeConfig, MultiplMoeConfig,
    QwenConfig, Sampler, SamplingConfig, SegmentRouting, StopReason,
};

type B = TestBackend;
const VOCAB: usize = 61;

/// `build` run right after seeding burn's RNG with 5, with no other seeding in between
/// (`rng::seeded`'s lock): the RNG is global and tests run in parallel, so without the lock a
/// model "built the same way" could hold other (occasionally degenerate) weights.
fn seeded<T>(build: impl FnOnce() -> T) -> T {
    multipl_moe::core::rng::seeded::<B, _>(&Default::default(), 5, build)
}

fn model(moe: Option<SegmentRouting>, max_positions: usize) -> CausalLm<B> {
    let device = Default::default();
    let moe = moe.map(|routing| {
        let mut m = MoeConfig::tiny().with_router_init_std(0.5);
        m.segment.routing = routing;
        m.segment.window = 4;
        m.segment.capacity_factor = 2.0;
        m
    });
    let config = MultiplMoeConfig::new(
        QwenConfig {
            vocab_size: VOCAB,
            ..QwenConfig::tiny()
        }
        .with_max_position_embeddings(max_positions),
    )
    .with_moe(moe);
    // `init` draws every parameter before it returns.
    seeded(|| config.init(&device)).expect("valid config")
}

fn ids(tokens: &[usize]) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    Tensor::from_data(
        TensorData::new(data, [1, tokens.len()]),
        &Default::default(),
    )
}

const PROMPT: [usize; 6] = [3, 17, 42, 8, 8, 29];

fn greedy(model: &CausalLm<B>, use_cache: bool) -> Vec<usize> {
    let options = GenerateOptions {
        max_new_tokens: 14,
        stop_ids: vec![],
        use_cache,
    };
    let mut sampler = Sampler::new(SamplingConfig::new()).expect("greedy");
    model
        .generate(&PROMPT, &options, &mut sampler, |_| {
            ControlFlow::Continue(())
        })
        .expect("generates")
        .tokens
}

/// Greedy tokens with the cache equal those of full recomputation at every step, and the
/// last-position logits agree when the sequence is fed in uneven chunks that open and close
/// windows (a = 4) mid-chunk.
fn cache_matches_recompute(moe: Option<SegmentRouting>) {
    let model = model(moe, 64);
    let cached = greedy(&model, true);
    let recomputed = greedy(&model, false);
    assert_eq!(cached.len(), 14);
    assert_eq!(cached, recomputed, "{moe:?}: cached vs recomputed tokens");
    let distinct: std::collections::BTreeSet<_> = cached.iter().collect();
    assert!(
        distinct.len() > 1,
        "{moe:?}: degenerate generation {cached:?}"
    );

    let sequence: Vec<usize> = PROMPT.iter().chain(&cached).copied().collect();
    let mut cache: Option<ModelCache<B>> = None;
    let mut end = 0;
    for chunk in [5, 1, 3, 2, 1, 1, 4, 1, 2] {
        let (logits, grown) =
            model.forward_inference(ids(&sequence[end..end + chunk]), cache.take(), Logits::Last);
        end += chunk;
        assert_eq!(grown.len(), end);
        cache = Some(grown);
        let (full, _) = model.forward_inference(ids(&sequence[..end]), None, Logits::Last);
        assert_close(
            &values(logits),
            &values(full),
            1e-4,
            &format!("{moe:?}: logits after {end} tokens"),
        );
    }
}

#[test]
fn dense_cache_matches_recompute() {
    cache_matches_recompute(None);
}

#[test]
fn causal_hybrid_cache_matches_recompute() {
    cache_matches_recompute(Some(SegmentRouting::Causal));
}

#[test]
fn paper_hybrid_cache_matches_recompute() {
    cache_matches_recompute(Some(SegmentRouting::Paper));
}

/// Causal mode needs no separate inference routing: the inference forward gives the
/// training forward's logits at every position.
#[test]
fn causal_inference_routing_is_training_routing() {
    let model = model(Some(SegmentRouting::Causal), 64);
    let seq: Vec<usize> = (0..13).map(|i| (i * 7 + 2) % VOCAB).collect();
    let train = model.forward(ids(&seq), None).logits;
    let (infer, _) = model.forward_inference(ids(&seq), None, Logits::All);
    assert_close(&values(infer), &values(train), 1e-4, "causal logits");
}

/// Paper mode at inference: closing a window rewinds the cache to the window's start, and
/// only then; a window that is complete in one call is routed by its full pool, so the
/// logits of a sequence of whole windows differ from what prefix routing would give.
#[test]
fn paper_mode_rewinds_when_a_window_closes() {
    let model = model(Some(SegmentRouting::Paper), 64);
    assert_eq!(model.rewind_point(5, 1), 5, "window 1 still open");
    assert_eq!(model.rewind_point(7, 1), 4, "token 8 closes window 1");
    assert_eq!(model.rewind_point(8, 3), 8, "cache ends on a boundary");
    assert_eq!(model.rewind_point(6, 7), 4, "a long chunk closes window 1");
    let causal = self::model(Some(SegmentRouting::Causal), 64);
    assert_eq!(causal.rewind_point(7, 1), 7, "causal mode never rewinds");

    // Without the rewind, window 1's first three tokens would keep their prefix routing.
    let seq: Vec<usize> = (0..8).map(|i| (i * 11 + 5) % VOCAB).collect();
    let (whole, _) = model.forward_inference(ids(&seq), None, Logits::Last);
    let mut cache = None;
    let mut last = None;
    for &tok in &seq {
        let (logits, grown) = model.forward_inference(ids(&[tok]), cache.take(), Logits::Last);
        cache = Some(grown);
        last = Some(logits);
    }
    let stepped = values(last.expect("eight steps"));
    assert_close(&stepped, &values(whole), 1e-4, "stepwise = whole");
}

#[test]
fn generation_stops_on_stop_id_callback_and_context() {
    // The stop id is this model's own first greedy token.
    let model = model(Some(SegmentRouting::Paper), 12);
    let first = greedy(&model, true)[0];
    let mut sampler = Sampler::new(SamplingConfig::new()).expect("greedy");
    let stop = GenerateOptions {
        max_new_tokens: 5,
        stop_ids: vec![first],
        use_cache: true,
    };
    let out = model
        .generate(&PROMPT, &stop, &mut sampler, |_| ControlFlow::Continue(()))
        .expect("runs");
    assert_eq!((out.tokens.len(), out.stop), (0, StopReason::StopToken));

    let mut seen = 0;
    let options = GenerateOptions {
        max_new_tokens: 20,
        ..GenerateOptions::default()
    };
    let out = model
        .generate(&PROMPT, &options, &mut sampler, |_| {
            seen += 1;
            if seen == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .expect("runs");
    assert_eq!((out.tokens.len(), out.stop), (2, StopReason::Callback));

    let out = model
        .generate(&PROMPT, &options, &mut sampler, |_| {
            ControlFlow::Continue(())
        })
        .expect("runs");
    assert_eq!(
        out.tokens.len(),
        12 - PROMPT.len(),
        "fills the 12 positions"
    );
    assert_eq!(out.stop, StopReason::ContextFull);
    assert!(out.prefill_tokens_per_sec() > 0.0 && out.decode_steps == 5);

    let long: Vec<usize> = (0..13).collect();
    let err = model
        .generate(&long, &options, &mut sampler, |_| ControlFlow::Continue(()))
        .expect_err("13 > 12 positions");
    assert!(err.to_string().contains("13 tokens"), "{err}");
    let err = model
        .generate(&[VOCAB], &options, &mut sampler, |_| {
            ControlFlow::Continue(())
        })
        .expect_err("out of vocabulary");
    assert!(err.to_string().contains("61"), "{err}");
}

fn softmax(logits: &[f32], temperature: f64) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f32::MIN, f32::max) as f64;
    let e: Vec<f64> = logits
        .iter()
        .map(|&x| ((x as f64 - max) / temperature).exp())
        .collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

fn frequencies(config: SamplingConfig, logits: &[f32], n: usize) -> Vec<f64> {
    let mut sampler = Sampler::new(config).expect("valid");
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..n {
        counts[sampler.sample(logits)] += 1;
    }
    counts.into_iter().map(|c| c as f64 / n as f64).collect()
}

#[test]
fn sampling_follows_temperature_top_k_and_top_p() {
    let logits = [1.0f32, 2.5, 0.3, 2.0, -1.0];
    let n = 40_000;
    // Temperature: frequencies follow softmax(logits / T) (4σ ≈ 0.01 at n = 40k).
    for t in [0.7, 1.0, 2.0] {
        let freq = frequencies(SamplingConfig::new().with_temperature(t), &logits, n);
        let want = softmax(&logits, t);
        for (i, (f, w)) in freq.iter().zip(&want).enumerate() {
            assert!((f - w).abs() < 0.01, "T={t} token {i}: {f} vs {w}");
        }
    }
    // Top-k = 2 renormalises over tokens 1 and 3.
    let freq = frequencies(
        SamplingConfig::new().with_temperature(1.0).with_top_k(2),
        &logits,
        n,
    );
    let pair = softmax(&[2.5, 2.0], 1.0);
    assert!((freq[1] - pair[0]).abs() < 0.01 && (freq[3] - pair[1]).abs() < 0.01);
    assert_eq!(freq[0] + freq[2] + freq[4], 0.0);
    // Top-p keeps the smallest prefix reaching p: with p just above P(token 1), tokens 1 and 3.
    let p1 = softmax(&logits, 1.0)[1];
    let freq = frequencies(
        SamplingConfig::new()
            .with_temperature(1.0)
            .with_top_p(p1 + 0.01),
        &logits,
        n,
    );
    assert!(freq[1] > 0.0 && freq[3] > 0.0);
    assert_eq!(freq[0] + freq[2] + freq[4], 0.0);
    // A tiny p, or k = 1, is greedy.
    for cfg in [
        SamplingConfig::new().with_temperature(1.0).with_top_p(1e-6),
        SamplingConfig::new().with_temperature(1.0).with_top_k(1),
    ] {
        assert_eq!(frequencies(cfg, &logits, 200)[argmax(&logits)], 1.0);
    }
}

#[test]
fn sampling_is_seeded_and_validated() {
    let model = model(None, 64);
    let run = |seed| {
        let cfg = SamplingConfig::new()
            .with_temperature(1.0)
            .with_top_p(0.95)
            .with_seed(seed);
        let mut sampler = Sampler::new(cfg).expect("valid");
        let options = GenerateOptions {
            max_new_tokens: 12,
            ..GenerateOptions::default()
        };
        model
            .generate(&PROMPT, &options, &mut sampler, |_| {
                ControlFlow::Continue(())
            })
            .expect("generates")
            .tokens
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    let err = Sampler::new(SamplingConfig::new().with_top_p(0.0)).expect_err("top_p = 0");
    assert!(err.to_string().contains("top_p"), "{err}");
    let err = Sampler::new(SamplingConfig::new().with_temperature(-1.0)).expect_err("T < 0");
    assert!(err.to_string().contains("temperature"), "{err}");
}

fn validation() -> Vec<multipl_moe::train::data::dataset::Sequence> {
    (0..4)
        .map(|s| multipl_moe::train::data::dataset::Sequence {
            tokens: (0..13)
                .map(|i| ((i * 5 + s * 11 + 1) % VOCAB) as u32)
                .collect(),
            language: multipl_moe::train::data::corpus::Language::Rust,
        })
        .collect()
}

/// Causal mode: nothing to disagree on, and generation's token-by-token loss equals the
/// batched training loss.
#[test]
fn agreement_is_trivial_in_causal_mode() {
    use multipl_moe::train::demo::agreement::routing_agreement;
    let model = model(Some(SegmentRouting::Causal), 64);
    let report = routing_agreement(&model, &validation(), 2, &Default::default());
    assert!(report.layers.is_empty());
    assert!(
        (report.ce_generation - report.ce_training_routing).abs() < 1e-4,
        "{report:?}"
    );
    assert!(report.ce_generation > 0.0);
}

/// Paper mode with `c = N_s`: every expert takes every segment in training and every
/// segment takes every expert at inference, so the two agree exactly.
#[test]
fn agreement_is_total_when_every_expert_takes_every_segment() {
    use multipl_moe::train::demo::agreement::routing_agreement;
    let device = Default::default();
    let mut moe = MoeConfig::tiny().with_router_init_std(0.5);
    moe.segment.window = 4;
    moe.segment.capacity_factor = moe.segment.num_experts as f64;
    let config = MultiplMoeConfig::new(QwenConfig {
        vocab_size: VOCAB,
        ..QwenConfig::tiny()
    })
    .with_moe(Some(moe));
    let model = seeded(|| config.init::<B>(&device)).expect("valid");
    let report = routing_agreement(&model, &validation(), 2, &device);
    assert_eq!(report.layers.len(), 2);
    for layer in &report.layers {
        assert_eq!(layer.windows, 4 * 3, "three full windows of 4 in 12 inputs");
        assert_eq!((layer.closed_exact, layer.closed_precision), (1.0, 1.0));
        assert_eq!(layer.unserved, 0.0);
        assert!(layer.prefix_exact.iter().all(|&x| x == 1.0));
    }
    // With c = 2 < N_s, expert choice and per-segment top-k differ on some windows.
    let model = self::model(Some(SegmentRouting::Paper), 64);
    let report = routing_agreement(&model, &validation(), 2, &device);
    let (exact, ..) = report.summary();
    assert!(exact < 1.0, "{}", report.table());
}

/// `generate_batch` of `prompts` with `samplings`, and the same rows one at a time; both
/// with `stop_ids` and a callback that ends row `i` after `5 + i` tokens.
fn batch_and_singles(
    model: &CausalLm<B>,
    prompts: &[&[usize]],
    samplings: &[SamplingConfig],
    options: &GenerateOptions,
) -> (Vec<Generated>, Vec<Generated>) {
    let sampler = |c: &SamplingConfig| Sampler::new(c.clone()).expect("valid sampling");
    let mut samplers: Vec<Sampler> = samplings.iter().map(sampler).collect();
    let mut counts = vec![0; prompts.len()];
    let batched = model
        .generate_batch(prompts, options, &mut samplers, |row, _| {
            counts[row] += 1;
            if counts[row] == 5 + row {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .expect("batch generates");
    let singles = prompts
        .iter()
        .zip(samplings)
        .enumerate()
        .map(|(row, (prompt, sampling))| {
            let mut seen = 0;
            model
                .generate(prompt, options, &mut sampler(sampling), |_| {
                    seen += 1;
                    if seen == 5 + row {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .expect("generates")
        })
        .collect();
    (batched, singles)
}

fn tokens_and_stops(runs: &[Generated]) -> Vec<(Vec<usize>, StopReason)> {
    runs.iter().map(|g| (g.tokens.clone(), g.stop)).collect()
}

/// Rows of different lengths (left-padded in a dense model, one batch per distinct prompt in
/// a hybrid one), repeated prompts (one shared prefill), stop ids and per-row callback stops:
/// greedy batched decoding gives every row what it gives alone, with and without the cache.
#[test]
fn batched_greedy_rows_match_one_at_a_time() {
    let short: &[usize] = &[9, 4];
    let long: &[usize] = &[1, 2, 3, 5, 8, 13, 21, 34, 55];
    let prompts = [&PROMPT[..], short, long, &PROMPT[..], short];
    let greedy = vec![SamplingConfig::new(); prompts.len()];
    for moe in [
        None,
        Some(SegmentRouting::Paper),
        Some(SegmentRouting::Causal),
    ] {
        let model = model(moe, 64);
        // Stop at the second token the long prompt generates alone, so that rows end at
        // different steps for different reasons.
        let alone = {
            let mut s = Sampler::new(SamplingConfig::new()).expect("greedy");
            let options = GenerateOptions {
                max_new_tokens: 2,
                ..GenerateOptions::default()
            };
            model
                .generate(long, &options, &mut s, |_| ControlFlow::Continue(()))
                .expect("generates")
                .tokens
        };
        for use_cache in [true, false] {
            let options = GenerateOptions {
                max_new_tokens: 8,
                stop_ids: vec![alone[1]],
                use_cache,
            };
            let (batched, singles) = batch_and_singles(&model, &prompts, &greedy, &options);
            assert_eq!(
                tokens_and_stops(&batched),
                tokens_and_stops(&singles),
                "{moe:?}, cache {use_cache}"
            );
            assert!(
                batched.iter().any(|g| g.stop != batched[0].stop),
                "{moe:?}: every row ends alike"
            );
            assert_eq!(batched[2].stop, StopReason::StopToken, "{moe:?}");
            assert!(
                batched
                    .iter()
                    .all(|g| g.prompt_tokens > 0 && g.prefill_secs > 0.0)
            );
        }
    }
}

/// The samples of one prompt, each with its own seed, decoded together (one prefill, the
/// cache repeated per row) draw what each draws alone.
#[test]
fn batched_samples_draw_their_own_streams() {
    let model = model(Some(SegmentRouting::Paper), 64);
    let prompts = [&PROMPT[..]; 6];
    let samplings: Vec<SamplingConfig> = (0..6)
        .map(|seed| {
            SamplingConfig::new()
                .with_temperature(1.0)
                .with_top_p(0.95)
                .with_seed(seed)
        })
        .collect();
    let options = GenerateOptions {
        max_new_tokens: 12,
        ..GenerateOptions::default()
    };
    let (batched, singles) = batch_and_singles(&model, &prompts, &samplings, &options);
    assert_eq!(tokens_and_stops(&batched), tokens_and_stops(&singles));
    let distinct: std::collections::BTreeSet<_> = batched.iter().map(|g| &g.tokens).collect();
    assert!(distinct.len() > 3, "seeds give different samples");

    let mut one = vec![Sampler::new(SamplingConfig::new()).expect("greedy")];
    let err = model
        .generate_batch(&prompts, &options, &mut one, |_, _| {
            ControlFlow::Continue(())
        })
        .expect_err("6 prompts, 1 sampler");
    assert!(err.to_string().contains("6 prompts"), "{err}");
}
