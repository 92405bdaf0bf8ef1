//! Expert weights and the dropless dispatch that runs each expert once on all of its rows
//! (SPEC §2–§3).
//!
//! An [`ExpertBank`] holds `E` [`Expert`]s, each its own pair of parameters: the fused
//! gate/up projection `[d, 2f]` and the down projection `[f, d]` (burn's `[in, out]`
//! orientation; the Hugging Face `[out, in]` matrices are transposed on import and export).
//! Separate parameters matter for the backward pass: an expert's slice of one stacked
//! `[E, d, 2f]` tensor gets its gradient as a zero-filled full-bank tensor (burn's `slice` and
//! `select` backward), which cost more than the expert's matmuls at the paper's shape
//! (BENCHMARKS.md).
//!
//! [`ExpertBank::forward_grouped`] is the token-choice dispatch (SPEC §2, and causal segment
//! routing): rows are sorted by expert (a stable sort, so each expert sees its rows in input
//! order), the sorted buffer is split into one contiguous block per expert, each expert runs
//! one `[n_e, d] × [d, 2f]` and one `[n_e, f] × [f, d]` matmul on exactly its `n_e` rows —
//! nothing is dropped and nothing is padded — and the outputs are put back in input order.
//! The plan reads the expert ids to the host once per dispatch (free on CPU backends, one
//! synchronisation on GPU backends); the experts' work is the same as the dense FFN's on the
//! same number of rows.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Int, Tensor, TensorData, activation::silu, backend::Backend};

use crate::ffn::SwiGlu;

/// Configuration of [`ExpertBank`].
#[derive(Config, Debug)]
pub struct ExpertBankConfig {
    /// Number of experts `E`.
    pub num_experts: usize,
    /// Model width `d`.
    pub d_model: usize,
    /// Hidden width `f` of each SwiGLU expert.
    pub d_ff: usize,
    /// Weight initialisation (upcycling overwrites it with copies of the dense FFN).
    #[config(default = "Initializer::Normal { mean: 0.0, std: 0.02 }")]
    pub initializer: Initializer,
}

/// One SwiGLU expert with its gate and up projections fused into one matrix.
#[derive(Module, Debug)]
pub struct Expert<B: Backend> {
    /// `[W_gate | W_up]`, `[d, 2f]`.
    pub gate_up: Param<Tensor<B, 2>>,
    /// `W_down`, `[f, d]`.
    pub down: Param<Tensor<B, 2>>,
}

/// `E` SwiGLU experts.
#[derive(Module, Debug)]
pub struct ExpertBank<B: Backend> {
    /// The experts, in bank order.
    pub experts: Vec<Expert<B>>,
}

impl ExpertBankConfig {
    /// Builds a bank of randomly initialised experts.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ExpertBank<B> {
        let (d, f) = (self.d_model, self.d_ff);
        let experts = (0..self.num_experts)
            .map(|_| Expert {
                gate_up: self
                    .initializer
                    .init_with([d, 2 * f], Some(d), Some(f), device),
                down: self.initializer.init_with([f, d], Some(f), Some(d), device),
            })
            .collect();
        ExpertBank { experts }
    }
}

impl<B: Backend> Expert<B> {
    /// A copy of a dense FFN (upcycling, SPEC §5), detached: a new leaf, not a function of
    /// the dense weights.
    pub fn from_dense(dense: &SwiGlu<B>) -> Self {
        let gate_up = Tensor::cat(
            vec![dense.gate_proj.weight.val(), dense.up_proj.weight.val()],
            1,
        );
        Self {
            gate_up: Param::from_tensor(gate_up.detach()),
            down: Param::from_tensor(dense.down_proj.weight.val().detach()),
        }
    }

    /// Hidden width `f`.
    pub fn d_ff(&self) -> usize {
        self.down.dims()[0]
    }

    /// `silu(x·W_gate) ⊙ (x·W_up)` then `·W_down`, for rows `x: [n, d]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let f = self.d_ff();
        let h = x.matmul(self.gate_up.val());
        let gate = h.clone().narrow(1, 0, f);
        let up = h.narrow(1, f, f);
        silu(gate).mul(up).matmul(self.down.val())
    }
}

impl<B: Backend> ExpertBank<B> {
    /// A bank of `num_experts` copies of a dense FFN (upcycling, SPEC §5).
    pub fn from_dense(dense: &SwiGlu<B>, num_experts: usize) -> Self {
        Self {
            experts: (0..num_experts)
                .map(|_| Expert::from_dense(dense))
                .collect(),
        }
    }

    /// Number of experts `E`.
    pub fn num_experts(&self) -> usize {
        self.experts.len()
    }

    /// The gate/up weights of all experts stacked, `[E, d, 2f]` (a copy, for inspection).
    pub fn gate_up_stacked(&self) -> Tensor<B, 3> {
        Tensor::stack(self.experts.iter().map(|e| e.gate_up.val()).collect(), 0)
    }

    /// The down weights of all experts stacked, `[E, f, d]` (a copy, for inspection).
    pub fn down_stacked(&self) -> Tensor<B, 3> {
        Tensor::stack(self.experts.iter().map(|e| e.down.val()).collect(), 0)
    }

    /// Row `i` of `x: [A, d]` through expert `expert[i]` (values in `0..E`); returns `[A, d]`.
    /// Dropless and unpadded (see the module docs).
    pub fn forward_grouped(&self, x: Tensor<B, 2>, expert: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        let ids: Vec<i64> = expert.into_data().iter::<i64>().collect();
        let plan = SortPlan::new(&ids, self.num_experts());
        let device = x.device();
        let index = |v: &[i64]| {
            Tensor::<B, 1, Int>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device)
        };
        let groups: Vec<(usize, usize)> = plan
            .counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(e, n)| (e, *n))
            .collect();
        if let [(e, _)] = groups[..] {
            // One expert takes every row (decoding one token, or a collapsed router).
            return self.experts[e].forward(x);
        }
        let sorted = x.select(0, index(&plan.order));
        self.forward_blocks(sorted, &groups)
            .select(0, index(&plan.position))
    }

    /// `Σ_j w[n, j] · FFN_{e[n, j]}(x_n)` for rows `x: [N, d]`, experts `e: [N, k]` (values in
    /// `0..E`) and weights `w: [N, k]`; returns `[N, d]`. Each row goes to its `k` experts
    /// through [`Self::forward_grouped`].
    pub fn forward_mixture(
        &self,
        x: Tensor<B, 2>,
        experts: Tensor<B, 2, Int>,
        weights: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let [n, d] = x.dims();
        let k = experts.dims()[1];
        if k == 1 {
            // No copy of the rows and no sum over a single pick.
            return self.forward_grouped(x, experts.reshape([n])).mul(weights);
        }
        let rows = x.reshape([n, 1, d]).expand([n, k, d]).reshape([n * k, d]);
        self.forward_grouped(rows, experts.reshape([n * k]))
            .reshape([n, k, d])
            .mul(weights.reshape([n, k, 1]))
            .sum_dim(1)
            .reshape([n, d])
    }

    /// Rows already in blocks: `groups` lists `(expert, rows)` in the order of the blocks of
    /// `x: [Σ rows, d]`; each expert runs once on its block. Returns `[Σ rows, d]`, in `x`'s
    /// order.
    pub fn forward_blocks(&self, x: Tensor<B, 2>, groups: &[(usize, usize)]) -> Tensor<B, 2> {
        let sizes = groups.iter().map(|(_, n)| *n).collect();
        let outputs = x
            .split_with_sizes(sizes, 0)
            .into_iter()
            .zip(groups)
            .map(|(rows, (e, _))| self.experts[*e].forward(rows))
            .collect();
        Tensor::cat(outputs, 0)
    }
}

/// How [`ExpertBank::forward_grouped`] sorts rows by expert, computed on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortPlan {
    /// Rows per expert, `[E]`.
    pub counts: Vec<usize>,
    /// The input row at each sorted position (a stable sort by expert), `[A]`.
    pub order: Vec<i64>,
    /// The sorted position of each input row (the inverse of `order`), `[A]`.
    pub position: Vec<i64>,
}

impl SortPlan {
    /// Plans the sort of rows whose experts are `expert` (values in `0..num_experts`).
    pub fn new(expert: &[i64], num_experts: usize) -> Self {
        let mut counts = vec![0usize; num_experts];
        for &e in expert {
            counts[e as usize] += 1;
        }
        let mut next: Vec<usize> = counts
            .iter()
            .scan(0, |start, n| {
                let s = *start;
                *start += n;
                Some(s)
            })
            .collect();
        let mut order = vec![0i64; expert.len()];
        let mut position = vec![0i64; expert.len()];
        for (row, &e) in expert.iter().enumerate() {
            let slot = next[e as usize];
            next[e as usize] += 1;
            order[slot] = row as i64;
            position[row] = slot as i64;
        }
        Self {
            counts,
            order,
            position,
        }
    }
}
