//! Whole-model throughput and memory (issue 6): training-step tokens/s, generation prefill and
//! decode tokens/s with the KV cache, and the peak resident memory of each phase.
//!
//! Run: `cargo bench --bench model` (ndarray by default; `--features wgpu`/`cuda` for GPUs).
//! Environment: `MODEL_BENCH_CONFIGS` (comma list of `tiny`, `qwen05b-2l`, `smollm2`; default
//! `tiny,qwen05b-2l`),
//! `MODEL_BENCH_STEPS` (timed training steps, default 3; 0 skips training),
//! `MODEL_BENCH_DECODE` (decoded tokens, default 32), `MODEL_BENCH_PROMPT` (prompt tokens,
//! default 64 for tiny and 128 for qwen05b-2l; long prompts show what the KV cache costs at
//! long contexts), `MODEL_BENCH_BATCH` (training sequences per step instead of the config's),
//! `MODEL_BENCH_BASE` (a Hugging Face checkpoint directory: the `smollm2` config is then that
//! real model, imported and upcycled with the paper preset as `multipl-moe upcycle` does,
//! instead of random weights of its shape).
//!
//! Configs: `tiny` is the demo's model (d = 128, 3 layers, vocab 512) upcycled with window 16,
//! batch 8 × 64 tokens; `qwen05b-2l` is Qwen1.5-0.5B's shape (d = 1024, FFN 2816, 16 heads,
//! vocab 151 936, tied embeddings) cut to 2 layers with the paper preset, batch 1 × 512;
//! `smollm2` is SmolLM2-135M's shape (Llama: 30 layers, d = 576, FFN 1536, GQA 9/3,
//! head_dim 64, tied, vocab 49 152; random weights) with the paper preset, batch 1 × 256 and a
//! 128-token prompt: the narrow, deep model where per-op overhead rather than the matmuls
//! dominates.
//! Training uses AdamW and the SPEC §5 freeze; prefill is 64 (tiny) or 128 tokens.
//!
//! When `python3` can import torch (and `MODEL_BENCH_TORCH` is not `0`), each config's initial
//! model is exported to `target/model_bench/NAME/model` with the batch, our losses and some
//! logits (`check.safetensors`); `bench/torch_model.py` rebuilds the same hybrid model in
//! PyTorch from that export, checks that its logits and losses equal ours, and times the same
//! training step; `MODEL_BENCH_TORCH_ROUNDS` (default 3) rounds alternate our steps and torch's.
//! When two copies of the training state (f32 weights, gradients and AdamW moments of the
//! trainable set) would not fit in the available memory, as for the paper preset on SmolLM2
//! on a 24 GiB machine, our model and optimizer are dropped before each torch round and
//! rebuilt (then one untimed warm-up step) after it, so the two never hold memory at once.

mod common;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use multipl_moe::backend::{Backend, NAME, TrainBackend};
use multipl_moe::core::rng::seeded;
use multipl_moe::core::{
    CausalLm, GenerateOptions, MoeConfig, MultiplMoeConfig, QwenConfig, Sampler, SamplingConfig,
};
use multipl_moe::qwen::export::host;
use multipl_moe::qwen::tensors::{HostTensor, write_file};
use multipl_moe::qwen::{
    FreezePolicy, SaveDtype, UpcycleOptions, apply_freeze, load_model, save_model,
    trainable_params, upcycle,
};
use multipl_moe::train::data::corpus::Language;
use multipl_moe::train::data::dataset::LmBatch;
use multipl_moe::train::training::lm::LanguageModel;

struct Bench {
    name: &'static str,
    config: MultiplMoeConfig,
    batch: usize,
    seq: usize,
    prompt: usize,
}

fn configs() -> Vec<Bench> {
    let mut tiny_moe = MoeConfig::paper();
    tiny_moe.segment.window = 16;
    let tiny = QwenConfig::new(512, 128, 256, 3, 4, 2).with_max_position_embeddings(512);
    let qwen = QwenConfig::new(151_936, 1024, 2816, 2, 16, 16)
        .with_rope_theta(1e6)
        .with_tie_word_embeddings(true)
        .with_max_position_embeddings(4096);
    vec![
        Bench {
            name: "tiny",
            config: MultiplMoeConfig::new(tiny).with_moe(Some(tiny_moe)),
            batch: 8,
            seq: 64,
            prompt: 64,
        },
        Bench {
            name: "qwen05b-2l",
            config: MultiplMoeConfig::new(qwen).with_moe(Some(MoeConfig::paper())),
            batch: 1,
            seq: 512,
            prompt: 128,
        },
        Bench {
            name: "smollm2",
            config: MultiplMoeConfig::new(QwenConfig::smollm2_135m())
                .with_moe(Some(MoeConfig::paper())),
            batch: 1,
            seq: 256,
            prompt: 128,
        },
    ]
}

/// Peak resident set (VmHWM) in MiB, from /proc (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Starts a new peak-RSS phase: hands memory freed by the previous phase back to the OS (glibc
/// keeps freed heap pages otherwise, and they would count in this phase's peak), then resets
/// VmHWM to the current RSS (Linux ≥ 4.0); false where that is not permitted.
fn reset_peak() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; no pointer is touched.
    unsafe {
        libc::malloc_trim(0);
    }
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `MemAvailable` of /proc/meminfo in bytes (Linux).
fn available_bytes() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// The model a training row starts from: `bench`'s config with seeded random weights, or, for
/// `smollm2` with `MODEL_BENCH_BASE=DIR`, the checkpoint in DIR upcycled with the paper preset;
/// SPEC §5's freeze either way. Returns the model and its config.
fn initial_model(
    bench: &Bench,
    device: &burn::tensor::Device<Backend>,
) -> (CausalLm<TrainBackend>, MultiplMoeConfig) {
    let base = std::env::var("MODEL_BENCH_BASE").ok();
    let (model, config) = match base {
        Some(dir) if bench.name == "smollm2" => {
            let (config, dense) = load_model::<TrainBackend>(Path::new(&dir), device)
                .expect("MODEL_BENCH_BASE loads");
            let moe = bench.config.moe.clone().expect("a hybrid config");
            upcycle(dense, &config, &moe, &UpcycleOptions::default()).expect("upcycles")
        }
        _ => {
            let model =
                seeded::<TrainBackend, _>(device, 1, || bench.config.init::<TrainBackend>(device))
                    .expect("valid config");
            (model, bench.config.clone())
        }
    };
    (apply_freeze(model, &FreezePolicy::paper()), config)
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn tokens<B: burn::tensor::backend::Backend>(
    b: usize,
    t: usize,
    vocab: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let ids: Vec<i64> = (0..b * t)
        .map(|i| ((i * 7919 + 13) % vocab) as i64)
        .collect();
    Tensor::from_data(TensorData::new(ids, [b, t]), device)
}

/// Writes `dir/model` (our export of `lm`'s model) and `dir/check.safetensors` (the batch
/// `tokens`, our next-token and balance losses on it, our logits at a few positions of the first
/// sequence) for bench/torch_model.py.
fn dump_for_torch(
    lm: &LanguageModel<TrainBackend>,
    config: &MultiplMoeConfig,
    tokens: Tensor<Backend, 2, Int>,
    dir: &Path,
) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    let model = lm.lm.valid();
    save_model(&model, config, &dir.join("model"), SaveDtype::F32).map_err(|e| e.to_string())?;
    let [b, t] = tokens.dims();
    let positions = [0, 1, 2, t / 2, t - 2];
    let index = Tensor::from_data(
        TensorData::new(positions.map(|p| p as i64).to_vec(), [positions.len()]),
        &tokens.device(),
    );
    let logits = model
        .forward(tokens.clone().narrow(1, 0, t - 1), None)
        .logits
        .narrow(0, 0, 1)
        .select(1, index)
        .reshape([positions.len() as i32, -1]);
    let out = lm.forward_loss(LmBatch {
        tokens: Tensor::from_data(tokens.to_data(), &tokens.device()),
        languages: vec![Language::Rust; b],
    });
    let scalar = |v: f64| HostTensor {
        shape: vec![1],
        data: vec![v as f32],
    };
    let tensors = BTreeMap::from([
        ("tokens".to_string(), host(tokens.float())),
        (
            "positions".to_string(),
            HostTensor {
                shape: vec![positions.len()],
                data: positions.map(|p| p as f32).to_vec(),
            },
        ),
        ("logits".to_string(), host(logits)),
        ("ce".to_string(), scalar(out.ce)),
        ("balance".to_string(), scalar(out.balance.unwrap_or(0.0))),
    ]);
    write_file(&dir.join("check.safetensors"), &tensors, SaveDtype::F32).map_err(|e| e.to_string())
}

/// One run of bench/torch_model.py on `dir`: its model check line and its median step time.
fn torch_round(dir: &Path, steps: usize) -> Result<(String, f64), String> {
    let args = [
        dir.display().to_string(),
        "--threads".into(),
        common::threads().to_string(),
        "--steps".into(),
        steps.to_string(),
    ];
    let text = common::run_script("torch_model.py", &args)?;
    let theirs = common::number_after(&text, "train step: ")
        .ok_or_else(|| format!("no timing in: {text}"))?;
    Ok((text.lines().next().unwrap_or_default().to_string(), theirs))
}

/// The PyTorch comparison of one config's training step, for the end of the run.
struct TorchComparison {
    name: &'static str,
    matched: String,
    rounds: common::Rounds,
}

/// Times a training step (forward + backward + AdamW, SPEC §5 freeze) of `bench`'s model and
/// prints its row (the median round); with `torch`, alternates rounds with
/// bench/torch_model.py on the same model and batch. Returns the trained model for the
/// generation rows (the initial one when ours was dropped for PyTorch's rounds: generation
/// speed does not depend on the weights' values).
fn train_row(
    bench: &Bench,
    device: &burn::tensor::Device<Backend>,
    steps: usize,
    torch: bool,
) -> (CausalLm<Backend>, Option<TorchComparison>) {
    let batch_size = env("MODEL_BENCH_BATCH", bench.batch);
    reset_peak();
    let (model, config) = initial_model(bench, device);
    let vocab = config.model.vocab_size;
    let (params, trainable) = (
        model.num_params() as f64,
        trainable_params(&model, &FreezePolicy::paper()) as f64,
    );
    let lm = LanguageModel::new(model, 0.01);
    let batch = || LmBatch::<TrainBackend> {
        tokens: tokens(batch_size, bench.seq, vocab, device),
        languages: vec![Language::Rust; batch_size],
    };
    let dir = PathBuf::from(format!("target/model_bench/{}", bench.name));
    let mut torch = torch
        && dump_for_torch(
            &lm,
            &config,
            tokens(batch_size, bench.seq, vocab, device),
            &dir,
        )
        .map_err(|e| println!("(PyTorch comparison skipped: {e})"))
        .is_ok();
    // f32 weights, gradients and AdamW's two moments: can PyTorch's copy run beside ours?
    let state_bytes = 4.0 * params + 12.0 * trainable;
    let alone = torch && available_bytes().is_some_and(|free| 2.0 * state_bytes > free);
    if alone {
        println!(
            "({}: two training states of {:.1} GiB do not fit in the available memory: our \
             model is dropped for each PyTorch round and rebuilt after it)",
            bench.name,
            state_bytes / f64::from(1u32 << 30)
        );
    }
    reset_peak(); // the export's host copies are not part of training
    let mut comparison = TorchComparison {
        name: bench.name,
        matched: String::new(),
        rounds: common::Rounds::default(),
    };
    // Seconds spent in AdamW's update (after the backward pass), summed over timed steps.
    let optim_seconds = std::cell::Cell::new(0.0f64);
    let step = |lm: LanguageModel<TrainBackend>, optim: &mut Optim| {
        let out = lm.forward_loss(batch());
        let grads = GradientsParams::from_grads(out.loss.backward(), &lm);
        let _ = <TrainBackend as burn::tensor::backend::Backend>::sync(device);
        let start = Instant::now();
        let lm = optim.step(1e-5, lm, grads);
        let _ = <TrainBackend as burn::tensor::backend::Backend>::sync(device);
        optim_seconds.set(optim_seconds.get() + start.elapsed().as_secs_f64());
        lm
    };
    let warmed_up = |lm: LanguageModel<TrainBackend>| {
        let mut optim: Optim = AdamWConfig::new().with_weight_decay(0.1).init();
        let lm = step(lm, &mut optim);
        (lm, optim)
    };
    let rebuilt = || {
        let lm = LanguageModel::new(initial_model(bench, device).0, 0.01);
        reset_peak(); // the import and upcycle are not part of training
        warmed_up(lm)
    };
    let mut state = Some(warmed_up(lm));
    let rounds = if torch {
        env("MODEL_BENCH_TORCH_ROUNDS", 3)
    } else {
        1
    };
    let mut ours = Vec::new();
    let mut optim_shares = Vec::new();
    let mut peak = 0.0f64;
    for _ in 0..rounds {
        let (mut lm, mut optim) = state.take().unwrap_or_else(rebuilt);
        optim_seconds.set(0.0);
        let start = Instant::now();
        for _ in 0..steps {
            lm = step(lm, &mut optim);
        }
        let secs = start.elapsed().as_secs_f64() / steps as f64;
        ours.push(secs);
        optim_shares.push(optim_seconds.get() / steps as f64 / secs);
        peak = peak.max(peak_rss_mib().unwrap_or(f64::NAN));
        if alone {
            drop((lm, optim));
            reset_peak();
        } else {
            state = Some((lm, optim));
        }
        if torch {
            match torch_round(&dir, steps) {
                Ok((matched, theirs)) => {
                    comparison.matched = matched;
                    comparison.rounds.push(secs, theirs);
                }
                Err(why) => {
                    println!("(PyTorch comparison stopped: {why})");
                    torch = false;
                }
            }
        }
    }
    ours.sort_by(f64::total_cmp);
    let secs = ours[ours.len() / 2];
    let n = batch_size * (bench.seq - 1);
    optim_shares.sort_by(f64::total_cmp);
    println!(
        "| {} | train step (fwd + bwd + AdamW {:.0} %), {batch_size} × {} | {n} | {secs:.3} | {:.0} | {peak:.0} |",
        bench.name,
        100.0 * optim_shares[optim_shares.len() / 2],
        bench.seq,
        n as f64 / secs,
    );
    let model = match state {
        Some((lm, _)) => lm.lm.valid(),
        None => initial_model(bench, device).0.valid(),
    };
    (model, torch.then_some(comparison))
}

/// burn's AdamW over the training wrapper.
type Optim = burn::optim::adaptor::OptimizerAdaptor<
    burn::optim::AdamW,
    LanguageModel<TrainBackend>,
    TrainBackend,
>;

/// Times prefill and greedy decoding with the KV cache and prints their rows.
fn generation_rows(bench: &Bench, model: &CausalLm<Backend>, decode: usize) {
    let vocab = model.embed_tokens.weight.dims()[0];
    reset_peak();
    let length = env("MODEL_BENCH_PROMPT", bench.prompt);
    let prompt: Vec<usize> = (0..length).map(|i| (i * 31 + 7) % vocab).collect();
    let options = GenerateOptions {
        max_new_tokens: decode,
        ..GenerateOptions::default()
    };
    let run = || {
        let mut sampler = Sampler::new(SamplingConfig::new()).expect("greedy");
        model
            .generate(&prompt, &options, &mut sampler, |_| {
                ControlFlow::Continue(())
            })
            .expect("generates")
    };
    let _ = run(); // warm-up
    let g = run();
    println!(
        "| {} | prefill | {} | {:.3} | {:.0} | {:.0} |",
        bench.name,
        g.prompt_tokens,
        g.prefill_secs,
        g.prefill_tokens_per_sec(),
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    println!(
        "| {} | decode (KV cache, greedy) | {} | {:.3} | {:.1} | {:.0} |",
        bench.name,
        g.decode_steps,
        g.decode_secs,
        g.decode_tokens_per_sec(),
        peak_rss_mib().unwrap_or(f64::NAN)
    );
}

fn main() {
    multipl_moe::allocator::reuse_freed_memory();
    let wanted = std::env::var("MODEL_BENCH_CONFIGS").unwrap_or_else(|_| "tiny,qwen05b-2l".into());
    let steps = env("MODEL_BENCH_STEPS", 3);
    let decode = env("MODEL_BENCH_DECODE", 32);
    let resettable = reset_peak();
    println!("{}", multipl_moe::host::Host::measure(common::threads()));
    println!(
        "backend {NAME}; peak RSS per phase {}",
        if resettable {
            "(VmHWM reset before each phase)"
        } else {
            "(cumulative: VmHWM cannot be reset here)"
        }
    );
    println!(
        "| config | phase | tokens | seconds | tokens/s | peak RSS MiB |\n|---|---|---:|---:|---:|---:|"
    );
    let device = multipl_moe::backend::device();
    let torch =
        std::env::var("MODEL_BENCH_TORCH").map_or(true, |v| v != "0") && common::torch_available();
    let mut comparisons = Vec::new();
    for bench in configs()
        .into_iter()
        .filter(|b| wanted.split(',').any(|w| w.trim() == b.name))
    {
        let model = if steps == 0 {
            initial_model(&bench, &device).0.valid()
        } else {
            let (model, comparison) = train_row(&bench, &device, steps, torch);
            comparisons.extend(comparison);
            model
        };
        generation_rows(&bench, &model, decode);
    }
    if !torch {
        println!(
            "\n(PyTorch comparison skipped: python3 cannot import torch, or MODEL_BENCH_TORCH=0)"
        );
    }
    for c in comparisons {
        println!(
            "\n{}: training step vs PyTorch eager (bench/torch_model.py, same export, batch and {} threads), alternating rounds",
            c.name,
            common::threads()
        );
        println!("{}", c.matched);
        c.rounds.print();
    }
}
