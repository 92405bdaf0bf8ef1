//! Segment-level MoE: expert choice over windows of `a` tokens (SPEC §3), and the causal
//! variant (SPEC §6).
//!
//! **Paper mode** follows SPEC §3 exactly: windows are pooled (mean or max over their real
//! tokens), `S = softmax(x̄ W_seg)` over experts, and each expert takes its `r` best segments
//! among all `V = B·P` segments of the batch; it then runs on every token of those segments.
//! Segments are numbered `v = b·P + p`, and the chosen tokens are scattered back with the same
//! numbering, so with `B > 1` every token is served by its own sequence's segment (the
//! released code flattens the two in different orders). `T` need not be a multiple of `a`.
//!
//! **Causal mode** (our design, SPEC §6). Two things leak the future in paper mode: the pooled
//! window contains tokens after `t`, and expert choice makes segments of one batch compete.
//! Causal mode removes both:
//! - window `p > 0` is routed by the pooled window `p − 1`, which lies entirely before any of
//!   its tokens (as in Lory); window 0 is routed by the sequence's first token;
//! - each segment picks its own top-`k` experts, `k = clamp(round(c), 1, N_s)` — no capacity,
//!   no competition — and mixes them with the raw scores `S` and γ, as paper mode does.
//!
//! The cost: routing lags by one window; expert load is no longer balanced by construction
//! (nothing forces the `N_s` experts to share the work, and no auxiliary loss is added at this
//! level); and work per expert varies, so dispatch uses the grouped path of
//! [`crate::experts`]. Its reward: the output at `t` depends on no token after `t`, and
//! generation can route a window as soon as it starts (see issue 5).

use burn::config::Config;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{
    IndexingUpdateOp, Int, Tensor, TensorData, activation::softmax, backend::Backend,
};

use crate::config::{GateScale, Pooling, SegmentMoeConfig, SegmentRouting};
use crate::experts::{ExpertBank, ExpertBankConfig};
use crate::routing::{expert_choice, segment_capacity, segment_choice};
use crate::token_moe::router_init;

/// Configuration of [`SegmentMoe`]: the SPEC §3 fields plus the layer sizes.
#[derive(Config, Debug)]
pub struct SegmentMoeLayerConfig {
    /// Routing hyper-parameters.
    pub moe: SegmentMoeConfig,
    /// Model width `d`.
    pub d_model: usize,
    /// Expert hidden width `f`.
    pub d_ff: usize,
    /// Standard deviation of the router initialisation.
    #[config(default = 0.02)]
    pub router_init_std: f64,
}

/// The segment-level MoE layer.
#[derive(Module, Debug)]
pub struct SegmentMoe<B: Backend> {
    /// `W_seg: d -> N_s`, no bias.
    pub router: Linear<B>,
    /// The `N_s` segment experts.
    pub experts: ExpertBank<B>,
    /// Window length `a`.
    pub window: usize,
    /// Capacity factor `c`.
    pub capacity_factor: f64,
    /// Pooling for routing.
    pub pooling: Pooling,
    /// Gate scale γ.
    pub gate_scale: GateScale,
    /// Optional cap on experts per segment (every mode; see [`Self::experts_per_segment`]).
    pub max_experts_per_segment: Option<usize>,
    /// Paper or causal routing.
    pub routing: SegmentRouting,
}

/// What the segment router decided for one batch.
#[derive(Debug, Clone)]
pub struct SegmentRoutingOutput<B: Backend> {
    /// `S`, `[V, N_s]`.
    pub probs: Tensor<B, 2>,
    /// Gate of expert `i` on segment `v` before γ (`D`, or 0 when not chosen), `[V, N_s]`.
    pub gates: Tensor<B, 2>,
    /// Paper mode: `I`, the segments each expert took, `[N_s, r]`; causal mode: the experts
    /// each segment took, `[V, k]`.
    pub chosen: Tensor<B, 2, Int>,
    /// Paper mode: the capacity `r`; causal mode: experts per segment `k`.
    pub capacity: usize,
}

impl SegmentMoeLayerConfig {
    /// Builds the layer with random experts.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SegmentMoe<B> {
        SegmentMoe {
            router: router_init(
                self.d_model,
                self.moe.num_experts,
                self.router_init_std,
                device,
            ),
            experts: ExpertBankConfig::new(self.moe.num_experts, self.d_model, self.d_ff)
                .init(device),
            window: self.moe.window,
            capacity_factor: self.moe.capacity_factor,
            pooling: self.moe.pooling,
            gate_scale: self.moe.gate_scale,
            max_experts_per_segment: self.moe.max_experts_per_segment,
            routing: self.moe.routing,
        }
    }
}

/// Pools `u: [B, T, d]` over windows of `a` tokens (the last one over its real tokens only);
/// returns `[B, ceil(T/a), d]` (SPEC §3).
pub fn pool_segments<B: Backend>(u: Tensor<B, 3>, window: usize, pooling: Pooling) -> Tensor<B, 3> {
    let [b, t, d] = u.dims();
    let p = t.div_ceil(window);
    let pad = p * window - t;
    let device = u.device();
    match pooling {
        Pooling::Mean => {
            let sums = pad_tokens(u, pad, 0.0)
                .reshape([b, p, window, d])
                .sum_dim(2);
            let counts: Vec<f32> = (0..p)
                .map(|i| (t - i * window).min(window) as f32)
                .collect();
            let counts = Tensor::<B, 1>::from_data(TensorData::new(counts, [p]), &device);
            sums.reshape([b, p, d]).div(counts.reshape([1, p, 1]))
        }
        Pooling::Max => pad_tokens(u, pad, f32::MIN)
            .reshape([b, p, window, d])
            .max_dim(2)
            .reshape([b, p, d]),
    }
}

/// Appends `pad` positions filled with `value` to `u: [B, T, d]`.
fn pad_tokens<B: Backend>(u: Tensor<B, 3>, pad: usize, value: f32) -> Tensor<B, 3> {
    if pad == 0 {
        return u;
    }
    let [b, _, d] = u.dims();
    let fill = Tensor::full([b, pad, d], value, &u.device());
    Tensor::cat(vec![u, fill], 1)
}

/// The first `t` tokens of `y: [B, T', d]`, undoing [`pad_tokens`]. Without padding this is
/// `y` itself (a full-length `narrow` would still cost a zero-filled copy in backward).
fn unpad_tokens<B: Backend>(y: Tensor<B, 3>, t: usize) -> Tensor<B, 3> {
    if y.dims()[1] == t {
        y
    } else {
        y.narrow(1, 0, t)
    }
}

impl<B: Backend> SegmentMoe<B> {
    /// `γ` for this layer.
    pub fn gamma(&self) -> f64 {
        match self.gate_scale {
            GateScale::One => 1.0,
            GateScale::InverseWindow => 1.0 / self.window as f64,
        }
    }

    /// `y_seg` for `u: [B, T, d]` (SPEC §3, or the causal mode).
    pub fn forward(&self, u: Tensor<B, 3>) -> (Tensor<B, 3>, SegmentRoutingOutput<B>) {
        match self.routing {
            SegmentRouting::Paper => self.forward_paper(u),
            SegmentRouting::Causal => self.forward_causal(u),
        }
    }

    /// The router vectors of causal mode: window `p` sees pooled window `p − 1`, window 0 its
    /// sequence's first token. `[B, P, d]`.
    pub fn causal_route_inputs(&self, u: Tensor<B, 3>) -> Tensor<B, 3> {
        let first = u.clone().narrow(1, 0, 1);
        let pooled = pool_segments(u, self.window, self.pooling);
        let p = pooled.dims()[1];
        if p == 1 {
            return first;
        }
        Tensor::cat(vec![first, pooled.narrow(1, 0, p - 1)], 1)
    }

    fn forward_paper(&self, u: Tensor<B, 3>) -> (Tensor<B, 3>, SegmentRoutingOutput<B>) {
        let [b, t, d] = u.dims();
        let a = self.window;
        let p = t.div_ceil(a);
        let v = b * p;
        let n_s = self.experts.num_experts();
        let pooled = pool_segments(u.clone(), a, self.pooling).reshape([v, d]);
        let probs = softmax(self.router.forward(pooled), 1);
        let r = segment_capacity(v, self.capacity_factor, n_s);
        let choice = expert_choice(probs.clone(), r, self.max_experts_per_segment);

        // Expert e runs once on all tokens of its r segments: one gather of the chosen
        // segments (rows of `[V, a·d]`), expert-major, one block of r·a tokens per expert, and
        // one scatter-add back (a segment taken by several experts sums their outputs).
        // Segments, not tokens, are the gathered rows: on GPU backends `select_assign` runs a
        // thread per element of a row and loops over the indices.
        let tokens = pad_tokens(u, p * a - t, 0.0).reshape([v, a * d]);
        let chosen = choice.segments.clone().reshape([n_s * r]);
        let blocks: Vec<(usize, usize)> = (0..n_s).map(|e| (e, r * a)).collect();
        let rows = tokens.select(0, chosen.clone()).reshape([n_s * r * a, d]);
        let scale = choice.weights.clone().mul_scalar(self.gamma());
        let out = self
            .experts
            .forward_blocks(rows, &blocks)
            .reshape([n_s, r, a * d])
            .mul(scale.reshape([n_s, r, 1]))
            .reshape([n_s * r, a * d]);
        let y = Tensor::<B, 2>::zeros([v, a * d], &out.device()).select_assign(
            0,
            chosen,
            out,
            IndexingUpdateOp::Add,
        );
        let gates = Tensor::<B, 2>::zeros([n_s, v], &probs.device())
            .scatter(
                1,
                choice.segments.clone(),
                choice.weights,
                IndexingUpdateOp::Add,
            )
            .transpose();
        let y = unpad_tokens(y.reshape([b, p * a, d]), t);
        let routing = SegmentRoutingOutput {
            probs,
            gates,
            chosen: choice.segments,
            capacity: r,
        };
        (y, routing)
    }

    fn forward_causal(&self, u: Tensor<B, 3>) -> (Tensor<B, 3>, SegmentRoutingOutput<B>) {
        let [b, t, d] = u.dims();
        let a = self.window;
        let p = t.div_ceil(a);
        let v = b * p;
        let n_s = self.experts.num_experts();
        let k = self.experts_per_segment();
        let route_in = self.causal_route_inputs(u.clone()).reshape([v, d]);
        let probs = softmax(self.router.forward(route_in), 1);
        let (experts, weights) = segment_choice(probs.clone(), k);

        // Every token of segment v goes to v's k experts.
        let rows = pad_tokens(u, p * a - t, 0.0).reshape([v * a, d]);
        let token_experts = experts
            .clone()
            .reshape([v, 1, k])
            .expand([v, a, k])
            .reshape([v * a, k]);
        let token_weights = weights
            .clone()
            .reshape([v, 1, k])
            .expand([v, a, k])
            .reshape([v * a, k]);
        let y = self
            .mix_experts(rows, token_experts, token_weights)
            .reshape([b, p * a, d]);
        let y = unpad_tokens(y, t);
        let gates = Tensor::<B, 2>::zeros([v, n_s], &probs.device()).scatter(
            1,
            experts.clone(),
            weights,
            IndexingUpdateOp::Add,
        );
        let routing = SegmentRoutingOutput {
            probs,
            gates,
            chosen: experts,
            capacity: k,
        };
        (y, routing)
    }

    /// Experts per segment when each segment chooses its own (causal mode, and paper mode at
    /// inference): `k = clamp(round(c), 1, N_s)` — under expert choice a segment receives
    /// `N_s·r/V ≈ c` experts on average — and never more than `max_experts_per_segment`.
    ///
    /// The cap rule, one for every mode (docs/FORMAT.md): no segment is served by more than
    /// `max_experts_per_segment` experts — in paper-mode training by the greedy pass of
    /// [`expert_choice`] in expert order, everywhere else by this `k`.
    pub fn experts_per_segment(&self) -> usize {
        let n_s = self.experts.num_experts();
        let k = (self.capacity_factor.round() as usize).clamp(1, n_s);
        match self.max_experts_per_segment {
            Some(cap) => k.min(cap.max(1)),
            None => k,
        }
    }

    /// `Σ_j γ·w[n,j]·FFN_{e[n,j]}(x_n)` for rows `x: [N, d]`, experts and weights `[N, k]`.
    fn mix_experts(
        &self,
        x: Tensor<B, 2>,
        experts: Tensor<B, 2, Int>,
        weights: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        self.experts
            .forward_mixture(x, experts, weights.mul_scalar(self.gamma()))
    }

    /// `y_seg` at inference for the new tokens `u: [B, t, d]` that follow `history: [B, S, d]`
    /// (this layer's FFN inputs at positions `0..S`), with the inference routing of
    /// [`Self::inference_route_inputs`]: each token mixes the top-[`Self::experts_per_segment`]
    /// experts of its own router vector, so no batch of segments is needed.
    pub fn forward_inference(
        &self,
        history: Option<Tensor<B, 3>>,
        u: Tensor<B, 3>,
    ) -> Tensor<B, 3> {
        let [b, t, d] = u.dims();
        let offset = history.as_ref().map_or(0, |h| h.dims()[1]);
        let full = match history {
            Some(h) => Tensor::cat(vec![h, u.clone()], 1),
            None => u.clone(),
        };
        let route_in = self
            .inference_route_inputs(full, offset)
            .reshape([b * t, d]);
        let (experts, weights) = self.inference_choice(route_in);
        self.mix_experts(u.reshape([b * t, d]), experts, weights)
            .reshape([b, t, d])
    }

    /// The experts `[N, k]` and their weights `[N, k]` that router vectors `route_in: [N, d]`
    /// get at inference: the top-[`Self::experts_per_segment`] of `softmax(W_seg·route_in)`
    /// ([`segment_choice`]).
    pub fn inference_choice(&self, route_in: Tensor<B, 2>) -> (Tensor<B, 2, Int>, Tensor<B, 2>) {
        let probs = softmax(self.router.forward(route_in), 1);
        segment_choice(probs, self.experts_per_segment())
    }

    /// The router vector of every position `offset..T` of `full: [B, T, d]` at inference,
    /// `[B, T − offset, d]`.
    ///
    /// - **Causal mode**: as in training (window `w` by pooled window `w − 1`, window 0 by the
    ///   first token), so inference routing *is* training routing.
    /// - **Paper mode**: a *closed* window (all `a` tokens present) is routed by its pooled
    ///   window, as in training; a token of the *open* (still growing) window is routed by the
    ///   pool of that window's tokens up to and including itself. [`crate::CausalLm`]'s
    ///   inference forward recomputes a window's tokens once it closes, so every past window
    ///   ends up routed as in training.
    pub fn inference_route_inputs(&self, full: Tensor<B, 3>, offset: usize) -> Tensor<B, 3> {
        let total = full.dims()[1];
        let t = total - offset;
        let a = self.window;
        let first_w = offset / a;
        match self.routing {
            SegmentRouting::Causal => {
                let last_w = (total - 1) / a;
                let mut per_window = Vec::with_capacity(2);
                if first_w == 0 {
                    per_window.push(full.clone().narrow(1, 0, 1));
                }
                let lo = first_w.max(1);
                if last_w >= lo {
                    let region = full.narrow(1, (lo - 1) * a, (last_w + 1 - lo) * a);
                    per_window.push(pool_segments(region, a, self.pooling));
                }
                expand_windows(Tensor::cat(per_window, 1), a).narrow(1, offset - first_w * a, t)
            }
            SegmentRouting::Paper => {
                let closed_end = total / a;
                let open_start = closed_end * a;
                let mut parts = Vec::new();
                let mut start = offset;
                if closed_end > first_w {
                    start = first_w * a;
                    let region = full.clone().narrow(1, start, open_start - start);
                    parts.push(expand_windows(pool_segments(region, a, self.pooling), a));
                }
                for i in offset.max(open_start)..total {
                    let prefix = full.clone().narrow(1, open_start, i + 1 - open_start);
                    parts.push(pool_segments(prefix, a, self.pooling));
                }
                Tensor::cat(parts, 1).narrow(1, offset - start, t)
            }
        }
    }
}

/// `[B, W, d] -> [B, W·a, d]`: each window's vector repeated for its `a` tokens.
fn expand_windows<B: Backend>(routes: Tensor<B, 3>, a: usize) -> Tensor<B, 3> {
    let [b, w, d] = routes.dims();
    routes
        .reshape([b, w, 1, d])
        .expand([b, w, a, d])
        .reshape([b, w * a, d])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend as B;

    fn pooled(pooling: Pooling) -> Vec<f32> {
        // One sequence of 5 tokens of width 1, windows of 2: (1, 3), (5, -7), (2).
        let u = Tensor::<B, 3>::from_floats(
            [[[1.0], [3.0], [5.0], [-7.0], [2.0]]],
            &Default::default(),
        );
        pool_segments(u, 2, pooling).into_data().into_vec().unwrap()
    }

    /// SPEC §3: the last, shorter window pools over its real tokens only.
    #[test]
    fn mean_pooling_averages_each_window_over_its_real_tokens() {
        assert_eq!(pooled(Pooling::Mean), vec![2.0, -1.0, 2.0]);
    }

    #[test]
    fn max_pooling_ignores_the_padding_of_the_last_window() {
        assert_eq!(pooled(Pooling::Max), vec![3.0, 5.0, 2.0]);
    }
}
