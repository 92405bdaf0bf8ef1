//! The routing formulas of both MoE levels, one function each (SPEC §2, §3).

use burn::tensor::{Bool, IndexingUpdateOp, Int, Tensor, activation::softmax, backend::Backend};

/// Indices of the `k` largest entries of each row of `x: [R, n]`, best first (ties: lowest
/// index first), for any `k <= n`.
///
/// burn 0.21's `argtopk` is unimplemented on ndarray and asserts `k < n`, and its sorts read
/// the tensor back to the host; this runs `k` rounds of device-side `argmax` + masking on a
/// detached copy, so no host round trip and no autodiff node. `k` is small in both MoE levels
/// (`K−1` per token; the capacity `r` per segment expert).
pub fn top_k_indices<B: Backend>(x: Tensor<B, 2>, k: usize) -> Tensor<B, 2, Int> {
    let [rows, n] = x.dims();
    let device = x.device();
    let columns = Tensor::<B, 1, Int>::arange(0..n as i64, &device)
        .reshape([1, n])
        .expand([rows, n]);
    let mut scores = x.detach();
    let mut picks = Vec::with_capacity(k);
    for round in 0..k {
        let best = scores.clone().argmax(1); // [rows, 1]
        if round + 1 < k {
            let taken = columns.clone().equal(best.clone().expand([rows, n]));
            scores = scores.mask_fill(taken, f32::NEG_INFINITY);
        }
        picks.push(best);
    }
    Tensor::cat(picks, 1)
}

/// `x: [R, n]` without column `col`: `[R, n−1]`.
pub fn drop_column<B: Backend>(x: Tensor<B, 2>, col: usize) -> Tensor<B, 2> {
    let n = x.dims()[1];
    let mut parts = Vec::with_capacity(2);
    if col > 0 {
        parts.push(x.clone().narrow(1, 0, col));
    }
    if col + 1 < n {
        parts.push(x.narrow(1, col + 1, n - col - 1));
    }
    Tensor::cat(parts, 1)
}

/// Token-level routing decisions (SPEC §2) for `N` tokens.
#[derive(Debug, Clone)]
pub struct TokenRouting<B: Backend> {
    /// `s = softmax(W_tok u)` over all `N_t` experts, shared included, `[N, N_t]`.
    pub probs: Tensor<B, 2>,
    /// The `K-1` routed experts of each token, as router indices in `0..N_t`, `[N, K-1]`.
    pub experts: Tensor<B, 2, Int>,
    /// Their gates `g_i = s_i / Norm`, `[N, K-1]`.
    pub gates: Tensor<B, 2>,
    /// The shared expert's gate `s_shared / Norm`, `[N, 1]`.
    pub shared_gate: Tensor<B, 2>,
    /// Router column of the shared expert.
    pub shared_expert: usize,
}

/// SPEC §2: softmax over all experts, top-(K−1) among the routed ones, then divide the K kept
/// scores (shared included) by their sum, so that every token's gates sum to 1.
pub fn token_gates<B: Backend>(
    logits: Tensor<B, 2>,
    shared_expert: usize,
    top_k: usize,
) -> TokenRouting<B> {
    let [n, n_t] = logits.dims();
    let probs = softmax(logits, 1);
    // Probabilities are >= 0, so -1 keeps the shared column out of the top-(K-1).
    let device = probs.device();
    let shared_col = Tensor::<B, 1, Int>::arange(0..n_t as i64, &device)
        .equal_elem(shared_expert as i64)
        .reshape([1, n_t])
        .expand([n, n_t]);
    let routed_scores = probs.clone().mask_fill(shared_col, -1.0);
    let experts = top_k_indices(routed_scores, top_k - 1);
    let kept = probs.clone().gather(1, experts.clone());
    let shared = probs.clone().narrow(1, shared_expert, 1);
    let norm = kept.clone().sum_dim(1).add(shared.clone());
    TokenRouting {
        gates: kept.div(norm.clone()),
        shared_gate: shared.div(norm),
        shared_expert,
        experts,
        probs,
    }
}

/// Maps router indices (`0..N_t`, shared excluded) to rows of the routed-expert bank
/// (`0..N_t-1`).
pub fn routed_bank_index<B: Backend, const D: usize>(
    router_index: Tensor<B, D, Int>,
    shared_expert: usize,
) -> Tensor<B, D, Int> {
    let above = router_index
        .clone()
        .greater_elem(shared_expert as i64)
        .int();
    router_index.sub(above)
}

/// SPEC §3: expert capacity `r = clamp(floor(V·c/N_s), 1, V)`.
pub fn segment_capacity(num_segments: usize, capacity_factor: f64, num_experts: usize) -> usize {
    let r = (num_segments as f64 * capacity_factor / num_experts as f64).floor() as usize;
    r.clamp(1, num_segments.max(1))
}

/// Expert-choice decisions of the segment level (SPEC §3).
#[derive(Debug, Clone)]
pub struct SegmentChoice<B: Backend> {
    /// `S = softmax(x̄ W_seg)`, `[V, N_s]`.
    pub probs: Tensor<B, 2>,
    /// `I`: the segments each expert took, `[N_s, r]`.
    pub segments: Tensor<B, 2, Int>,
    /// `D`: the matching scores `S[I[i,j], i]` (0 where a per-segment cap refused the
    /// segment), `[N_s, r]`.
    pub weights: Tensor<B, 2>,
}

/// SPEC §3: each expert takes its top-`r` segments by `S[:, i]`. With `max_per_segment`,
/// experts choose greedily in index order and a segment already taken by that many experts
/// is unavailable to the later ones (the released code's cap).
pub fn expert_choice<B: Backend>(
    probs: Tensor<B, 2>,
    capacity: usize,
    max_per_segment: Option<usize>,
) -> SegmentChoice<B> {
    let [v, n_s] = probs.dims();
    let scores = probs.clone().transpose(); // [N_s, V]
    let Some(cap) = max_per_segment.filter(|&cap| cap < n_s) else {
        let segments = top_k_indices(scores.clone(), capacity);
        let weights = scores.gather(1, segments.clone());
        return SegmentChoice {
            probs,
            segments,
            weights,
        };
    };
    let device = probs.device();
    let mut taken = Tensor::<B, 1, Int>::zeros([v], &device);
    let mut segments = Vec::with_capacity(n_s);
    let mut weights = Vec::with_capacity(n_s);
    for expert in 0..n_s {
        let row = scores.clone().narrow(0, expert, 1).reshape([v]);
        let full: Tensor<B, 1, Bool> = taken.clone().greater_equal_elem(cap as i64);
        let chosen = top_k_indices(
            row.clone().mask_fill(full.clone(), -1.0).reshape([1, v]),
            capacity,
        )
        .reshape([capacity]);
        let accepted = full.select(0, chosen.clone()).bool_not();
        weights.push(row.gather(0, chosen.clone()).mul(accepted.clone().float()));
        taken = taken.select_assign(0, chosen.clone(), accepted.int(), IndexingUpdateOp::Add);
        segments.push(chosen);
    }
    SegmentChoice {
        probs,
        segments: Tensor::stack(segments, 0),
        weights: Tensor::stack(weights, 0),
    }
}

/// Causal mode (SPEC §6): each segment picks its own top-`k` experts by `S`, no competition
/// between segments. Returns the chosen experts `[V, k]` and their scores `[V, k]`.
pub fn segment_choice<B: Backend>(
    probs: Tensor<B, 2>,
    experts_per_segment: usize,
) -> (Tensor<B, 2, Int>, Tensor<B, 2>) {
    let experts = top_k_indices(probs.clone(), experts_per_segment);
    let weights = probs.gather(1, experts.clone());
    (experts, weights)
}
