//! Forward + backward of one hybrid MoE layer vs the dense work it does and a naive
//! per-expert loop (issue 6). Run: `cargo bench --bench moe_layer` (ndarray by default;
//! `--features wgpu` for wgpu). Environment: `MOE_BENCH_TOKENS` (default 2048 = 4×512),
//! `MOE_BENCH_ITERS` (default 3), `MOE_BENCH_D`, `MOE_BENCH_FF`, `MOE_BENCH_DUMP=FILE` to
//! write the layer's weights, input and output for `bench/torch_moe_layer.py`, and
//! `MOE_BENCH_PROFILE=1` to run only the hybrid layer's forward + backward (for `perf`).
//!
//! When `python3` can import torch (and `MOE_BENCH_TORCH` is not `0`), the run ends with the
//! PyTorch comparison side by side: the layer's weights, input and output go to
//! `target/moe_bench/layer.safetensors` (or `MOE_BENCH_DUMP`), `bench/torch_moe_layer.py`
//! checks that it computes the same output and times the same layer with as many threads as
//! ours, and `MOE_BENCH_TORCH_ROUNDS` (default 3) rounds alternate our timing and torch's, so
//! that both see the same machine load; the ratio is reported per round and overall.
//!
//! On ndarray the run also measures the CPU's f32 FMA peak on as many threads (`fma_peak`) and
//! prints the expert products' GFLOP/s against it: the time the layer's matmuls alone would
//! take at that peak is the floor no CPU implementation of this layer goes below.

mod common;
use multipl_moe::host::fma_peak;

use std::collections::BTreeMap;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::{Distribution, Int, Tensor, TensorData, backend::Backend};
use multipl_moe::backend::{NAME, TrainBackend};
use multipl_moe::core::experts::ExpertBank;
use multipl_moe::core::ffn::SwiGluConfig;
use multipl_moe::core::hybrid::{HybridMoe, HybridMoeConfig};
use multipl_moe::core::routing::segment_capacity;
use multipl_moe::core::{MoeConfig, Pooling};
use multipl_moe::qwen::SaveDtype;
use multipl_moe::qwen::export::host;
use multipl_moe::qwen::tensors::write_file;

type A = TrainBackend;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median seconds of `iters` runs of `f` (after one warm-up run).
fn time(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..iters)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[t.len() / 2]
}

fn sync<B: Backend, const D: usize>(t: Tensor<B, D>) {
    let _ = t.sum().into_data();
}

/// The naive reference: per-expert loop with host-side index lists (what HF-style code does).
fn naive_token_level<B: Backend>(layer: &HybridMoe<B>, u: Tensor<B, 2>) -> Tensor<B, 2> {
    let tok = &layer.token_moe;
    let n = u.dims()[0];
    let routing = multipl_moe::core::routing::token_gates(
        tok.router.forward(u.clone()),
        tok.shared_index,
        tok.top_k,
    );
    let experts: Vec<i64> = routing.experts.clone().into_data().iter::<i64>().collect();
    let picks = tok.top_k - 1;
    let mut out = tok
        .shared_expert
        .forward(u.clone())
        .mul(routing.shared_gate.clone());
    let bank: &ExpertBank<B> = &tok.experts;
    for e in 0..bank.num_experts() {
        let router_id = (e + usize::from(e >= tok.shared_index)) as i64;
        let (rows, slots): (Vec<i64>, Vec<i64>) = experts
            .iter()
            .enumerate()
            .filter(|(_, x)| **x == router_id)
            .map(|(i, _)| ((i / picks) as i64, i as i64))
            .unzip();
        if rows.is_empty() {
            continue;
        }
        let device = u.device();
        let idx =
            Tensor::<B, 1, Int>::from_data(TensorData::new(rows.clone(), [rows.len()]), &device);
        let slot = Tensor::<B, 1, Int>::from_data(TensorData::new(slots, [rows.len()]), &device);
        let y = bank.experts[e].forward(u.clone().select(0, idx.clone()));
        let g = routing
            .gates
            .clone()
            .reshape([n * picks, 1])
            .select(0, slot);
        out = out.select_assign(0, idx, y.mul(g), burn::tensor::IndexingUpdateOp::Add);
    }
    out
}

/// Writes the layer's weights, an input and our output for bench/torch_moe_layer.py.
fn dump(layer: &HybridMoe<A>, u: &Tensor<A, 3>, path: &std::path::Path) {
    let (out, _) = layer.valid().forward(u.clone().inner(), None);
    let tok = &layer.token_moe;
    let seg = &layer.segment_moe;
    let mut m = BTreeMap::new();
    m.insert("u".to_string(), host(u.clone().inner()));
    m.insert("out".to_string(), host(out));
    m.insert(
        "token_router".to_string(),
        host(tok.router.weight.val().inner()),
    );
    m.insert(
        "shared_gate".to_string(),
        host(tok.shared_expert.gate_proj.weight.val().inner()),
    );
    m.insert(
        "shared_up".to_string(),
        host(tok.shared_expert.up_proj.weight.val().inner()),
    );
    m.insert(
        "shared_down".to_string(),
        host(tok.shared_expert.down_proj.weight.val().inner()),
    );
    m.insert(
        "token_gate_up".to_string(),
        host(tok.experts.gate_up_stacked().inner()),
    );
    m.insert(
        "token_down".to_string(),
        host(tok.experts.down_stacked().inner()),
    );
    m.insert(
        "segment_router".to_string(),
        host(seg.router.weight.val().inner()),
    );
    m.insert(
        "segment_gate_up".to_string(),
        host(seg.experts.gate_up_stacked().inner()),
    );
    m.insert(
        "segment_down".to_string(),
        host(seg.experts.down_stacked().inner()),
    );
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match write_file(path, &m, SaveDtype::F32) {
        Ok(()) => println!("wrote weights, input and output to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

/// FLOP of forward + backward of SwiGLU experts on `rows` rows in all: per row, the
/// forward's `[d] · [d, 2f]` and `[f] · [f, d]` products (2 FLOP per multiply-add), and the
/// backward's two products of the same size for each (input and weight gradients).
fn expert_flop(rows: usize, d: usize, ff: usize) -> f64 {
    3.0 * 2.0 * (rows * 3 * d * ff) as f64
}

/// Rows the hybrid layer's experts run on: the shared expert on every token, `K − 1` routed
/// picks per token, and `N_s · r` segments of `a` tokens at the segment level (SPEC §3).
fn hybrid_rows(moe: &MoeConfig, (b, t): (usize, usize)) -> usize {
    let n = b * t;
    let a = moe.segment.window;
    let n_s = moe.segment.num_experts;
    let r = segment_capacity(b * t.div_ceil(a), moe.segment.capacity_factor, n_s);
    n * moe.token.top_k + n_s * r * a
}

/// The products' throughput against the CPU's FMA peak: `(label, rows, seconds)` each.
/// Returns the hybrid's floor: its expert products' seconds at the peak.
fn print_against_peak(rows: &[(&str, usize, f64)], d: usize, ff: usize) -> Option<f64> {
    let threads = common::threads();
    let Some((peak, how)) = fma_peak::f32_fma_peak(threads) else {
        println!("\n(no FMA peak measured on this CPU)");
        return None;
    };
    println!(
        "\nCPU f32 FMA peak on {threads} threads: {peak:.1} GFLOP/s ({how}); expert products only (routers, gathers and element-wise ops not counted)"
    );
    println!("| what | active rows | GFLOP | GFLOP/s | of peak | seconds at peak |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut floor = None;
    for &(what, n, seconds) in rows {
        let gflop = expert_flop(n, d, ff) / 1e9;
        let at_peak = gflop / peak;
        floor = Some(at_peak);
        println!(
            "| {what} | {n} | {gflop:.1} | {:.1} | {:.0} % | {at_peak:.3} |",
            gflop / seconds,
            100.0 * gflop / seconds / peak
        );
    }
    floor
}

/// Median seconds of each measured step.
struct Timings {
    dense_s: f64,
    hybrid_s: f64,
    hybrid_fwd: f64,
    grouped_tok: f64,
    naive_tok: f64,
}

impl Timings {
    /// The markdown table BENCHMARKS.md quotes, for `b × t` tokens of width `d`.
    fn print(&self, d: usize, ff: usize, (b, t): (usize, usize), dense_rows: usize, iters: usize) {
        let n = b * t;
        let tps = |s: f64| n as f64 / s;
        let Self {
            dense_s,
            hybrid_s,
            hybrid_fwd,
            grouped_tok,
            naive_tok,
        } = *self;
        println!(
            "backend: {NAME}; d = {d}, ffn = {ff}, tokens = {b}x{t}, N_t = 6, K = 2, N_s = 6, a = 64, c = 1; median of {iters}"
        );
        println!("| what (forward + backward unless noted) | seconds | tokens/s | ratio |");
        println!("|---|---:|---:|---:|");
        println!(
            "| dense SwiGLU on (K + c) x tokens = {dense_rows} rows | {dense_s:.3} | {:.0} | 1.00 |",
            tps(dense_s)
        );
        println!(
            "| hybrid MoE layer (ours) | {hybrid_s:.3} | {:.0} | {:.2} |",
            tps(hybrid_s),
            hybrid_s / dense_s
        );
        println!(
            "| hybrid MoE layer, forward only | {hybrid_fwd:.3} | {:.0} | - |",
            tps(hybrid_fwd)
        );
        println!(
            "| token level, grouped dispatch (ours) | {grouped_tok:.3} | {:.0} | - |",
            tps(grouped_tok)
        );
        println!(
            "| token level, naive per-expert loop (host sync) | {naive_tok:.3} | {:.0} | {:.2} vs grouped |",
            tps(naive_tok),
            naive_tok / grouped_tok
        );
    }
}

fn main() {
    multipl_moe::allocator::reuse_freed_memory();
    println!("{}", multipl_moe::host::Host::measure(common::threads()));
    let device = Default::default();
    let (d, ff, n) = (
        env("MOE_BENCH_D", 1024),
        env("MOE_BENCH_FF", 2816),
        env("MOE_BENCH_TOKENS", 2048),
    );
    let iters = env("MOE_BENCH_ITERS", 3);
    let (b, t) = (4, n / 4);
    let mut moe = MoeConfig::paper();
    moe.segment.pooling = Pooling::Mean;
    let layer = HybridMoeConfig::new(moe.clone(), d, ff).init::<A>(&device);
    let k = moe.token.top_k as f64 + moe.segment.capacity_factor;
    let dense = SwiGluConfig::new(d, ff).init::<A>(&device);
    let u =
        Tensor::<A, 3>::random([b, t, d], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let dense_rows = (k as usize) * n;
    let x_dense = Tensor::<A, 2>::random([dense_rows, d], Distribution::Normal(0.0, 1.0), &device)
        .require_grad();

    let with_torch =
        std::env::var("MOE_BENCH_TORCH").map_or(true, |v| v != "0") && common::torch_available();
    let dump_path = std::env::var("MOE_BENCH_DUMP")
        .ok()
        .or_else(|| with_torch.then(|| "target/moe_bench/layer.safetensors".to_string()));
    if let Some(path) = &dump_path {
        dump(&layer, &u, std::path::Path::new(path));
    }
    let hybrid_step = || {
        let (out, routing) = layer.forward(u.clone(), None);
        let loss = out.sum().add(routing.balance_loss);
        let g = loss.backward();
        drop(g);
    };
    if std::env::var_os("MOE_BENCH_PROFILE").is_some() {
        (0..iters).for_each(|_| hybrid_step());
        return;
    }
    let hybrid_s = time(iters, &hybrid_step);
    let dense_s = time(iters, || {
        let out = dense.forward(x_dense.clone());
        let g = out.sum().backward();
        drop(g);
    });
    let hybrid_fwd = time(iters, || {
        sync(layer.valid().forward(u.clone().inner(), None).0)
    });
    let naive_tok = time(iters, || {
        let out = naive_token_level(&layer, u.clone().reshape([n, d]));
        let g = out.sum().backward();
        drop(g);
    });
    let grouped_tok = time(iters, || {
        let (out, _) = layer.token_moe.forward(u.clone().reshape([n, d]));
        let g = out.sum().backward();
        drop(g);
    });
    let timings = Timings {
        dense_s,
        hybrid_s,
        hybrid_fwd,
        grouped_tok,
        naive_tok,
    };
    timings.print(d, ff, (b, t), dense_rows, iters);
    // The CPU's FMA peak bounds only a backend that computes on this CPU: ndarray does; cuda
    // does not, and wgpu may run on a GPU or on the CPU (lavapipe), which the bench cannot tell.
    let on_cpu_matmuls = NAME == "ndarray";
    let floor = on_cpu_matmuls.then(|| {
        print_against_peak(
            &[
                ("dense reference", dense_rows, dense_s),
                ("hybrid MoE layer", hybrid_rows(&moe, (b, t)), hybrid_s),
            ],
            d,
            ff,
        )
    });
    match (with_torch, &dump_path) {
        (true, Some(path)) => compare_with_torch(path, iters, &hybrid_step, floor.flatten()),
        _ => println!(
            "\n(PyTorch comparison skipped: python3 cannot import torch, or MOE_BENCH_TORCH=0)"
        ),
    }
}

/// Rounds of (our hybrid layer, torch's) fwd + bwd timings, alternating.
/// `floor`: the hybrid's expert products' seconds at the CPU's FMA peak, printed as a
/// ratio to torch's time as well.
fn compare_with_torch(path: &str, iters: usize, hybrid_step: &dyn Fn(), floor: Option<f64>) {
    let threads = common::threads();
    let rounds = env("MOE_BENCH_TORCH_ROUNDS", 3);
    let args = [
        path.to_string(),
        "--threads".into(),
        threads.to_string(),
        "--iters".into(),
        iters.to_string(),
    ];
    let mut table = common::Rounds::default();
    let mut torch_total = 0.0;
    let mut matched = String::new();
    for _ in 0..rounds {
        let ours = time(iters, hybrid_step);
        let text = match common::run_script("torch_moe_layer.py", &args) {
            Ok(text) => text,
            Err(why) => return println!("{why}"),
        };
        if let Some(line) = text.lines().find(|l| l.starts_with("max |torch - ours|")) {
            matched = line.to_string();
        }
        let Some(torch) = common::number_after(&text, "fwd+bwd: ") else {
            return println!("could not read the torch timing from: {text}");
        };
        table.push(ours, torch);
        torch_total += torch;
    }
    println!(
        "\nPyTorch eager, same weights, input and thread count ({threads}); {rounds} alternating rounds"
    );
    println!("{matched}");
    table.print();
    if let Some(floor) = floor {
        println!(
            "the hybrid's expert products at the FMA peak: {floor:.3} s a step = {:.2} of torch's time",
            floor * rounds as f64 / torch_total
        );
    }
}
