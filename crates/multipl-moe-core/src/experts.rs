//! Stacked expert weights and the on-device dispatch that runs every expert as one batched
//! matmul (SPEC §2–§3; the layout of mistral.rs' `moe/experts`).
//!
//! All `E` experts of a level are stored in one [`ExpertBank`]: the fused gate/up projection
//! `[E, d, 2f]` and the down projection `[E, f, d]` (burn's `[in, out]` orientation; the
//! Hugging Face `[out, in]` matrices are transposed on import and export).
//!
//! Two dispatches share this store:
//! - [`ExpertBank::forward_stacked`]: every expert gets the same number of rows (expert choice,
//!   SPEC §3) — one batched matmul `[E, n, d] × [E, d, 2f]`.
//! - [`ExpertBank::forward_grouped`]: each row names its expert (token choice, SPEC §2), counts
//!   vary per expert and nothing is dropped. Rows are permuted so that each expert's rows are
//!   contiguous, each expert's group is padded to a multiple of `block` rows, and the padded
//!   buffer is cut into `ceil(A/block) + E` blocks — a bound known without reading the counts,
//!   so no host round trip is needed. Each block belongs to one expert, whose weights are
//!   gathered per block for one batched matmul. Memory is linear in the rows; the padding
//!   costs at most `E·block` extra rows. With no more rows than experts (decoding), each row
//!   gathers its own expert's weights instead.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::IndexingUpdateOp;
use burn::tensor::{Int, Tensor, activation::silu, backend::Backend};

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

/// `E` SwiGLU experts with stacked weights.
#[derive(Module, Debug)]
pub struct ExpertBank<B: Backend> {
    /// `[W_gate | W_up]` of every expert, `[E, d, 2f]`.
    pub gate_up: Param<Tensor<B, 3>>,
    /// `W_down` of every expert, `[E, f, d]`.
    pub down: Param<Tensor<B, 3>>,
}

impl ExpertBankConfig {
    /// Builds a bank of randomly initialised experts.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ExpertBank<B> {
        let (e, d, f) = (self.num_experts, self.d_model, self.d_ff);
        ExpertBank {
            gate_up: self
                .initializer
                .init_with([e, d, 2 * f], Some(d), Some(f), device),
            down: self
                .initializer
                .init_with([e, f, d], Some(f), Some(d), device),
        }
    }
}

impl<B: Backend> ExpertBank<B> {
    /// A bank of `num_experts` copies of a dense FFN (upcycling, SPEC §5).
    pub fn from_dense(dense: &SwiGlu<B>, num_experts: usize) -> Self {
        let gate = dense.gate_proj.weight.val();
        let up = dense.up_proj.weight.val();
        let [d, f] = gate.dims();
        let gate_up = Tensor::cat(vec![gate, up], 1)
            .reshape([1, d, 2 * f])
            .repeat_dim(0, num_experts);
        let down = dense
            .down_proj
            .weight
            .val()
            .reshape([1, f, d])
            .repeat_dim(0, num_experts);
        // Detached: the copies are new leaves, not functions of the dense weights.
        Self {
            gate_up: Param::from_tensor(gate_up.detach()),
            down: Param::from_tensor(down.detach()),
        }
    }

    /// Number of experts `E`.
    pub fn num_experts(&self) -> usize {
        self.gate_up.dims()[0]
    }

    /// Hidden width `f`.
    pub fn d_ff(&self) -> usize {
        self.down.dims()[1]
    }

    /// Expert `e` applied to `x: [E, n, d]`'s slice `e`; returns `[E, n, d]`.
    pub fn forward_stacked(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        swiglu_batched(x, self.gate_up.val(), self.down.val())
    }

    /// Row `i` of `x: [A, d]` through expert `expert[i]`; returns `[A, d]`. Dropless and
    /// free of host round trips (see the module docs).
    pub fn forward_grouped(
        &self,
        x: Tensor<B, 2>,
        expert: Tensor<B, 1, Int>,
        block: usize,
    ) -> Tensor<B, 2> {
        let [rows, d] = x.dims();
        if rows <= self.num_experts() {
            // Decoding: fewer rows than experts; gathering each row's weights reads no more
            // than the block path would and computes no padding rows.
            let gate_up = self.gate_up.val().select(0, expert.clone());
            let down = self.down.val().select(0, expert);
            return swiglu_batched(x.reshape([rows, 1, d]), gate_up, down).reshape([rows, d]);
        }
        // Few rows (a short prompt) would be mostly padding in full blocks: shrink the block
        // to about one expert's share. It depends on the row count only, known on the host.
        let share = rows.div_ceil(self.num_experts()).next_power_of_two();
        let plan = GroupedPlan::new(expert, self.num_experts(), block.min(share));
        let sorted = x
            .select(0, plan.source.clone())
            .reshape([plan.num_blocks, plan.block, d]);
        let gate_up = self.gate_up.val().select(0, plan.block_expert.clone());
        let down = self.down.val().select(0, plan.block_expert.clone());
        let out = swiglu_batched(sorted, gate_up, down);
        out.reshape([plan.num_blocks * plan.block, d])
            .select(0, plan.destination)
    }
}

/// `silu(x·W_gate) ⊙ (x·W_up)` then `·W_down`, batched over the leading dimension.
fn swiglu_batched<B: Backend>(
    x: Tensor<B, 3>,
    gate_up: Tensor<B, 3>,
    down: Tensor<B, 3>,
) -> Tensor<B, 3> {
    let f = down.dims()[1];
    let h = x.matmul(gate_up);
    let gate = h.clone().narrow(2, 0, f);
    let up = h.narrow(2, f, f);
    silu(gate).mul(up).matmul(down)
}

/// Where every row goes in the padded, expert-sorted buffer of [`ExpertBank::forward_grouped`].
#[derive(Debug, Clone)]
pub struct GroupedPlan<B: Backend> {
    /// Rows per block.
    pub block: usize,
    /// Blocks in the buffer: `ceil(A/block) + E`.
    pub num_blocks: usize,
    /// For each input row, its row in the buffer, `[A]` (distinct).
    pub destination: Tensor<B, 1, Int>,
    /// For each buffer row, the input row it copies (0 for padding), `[num_blocks·block]`.
    pub source: Tensor<B, 1, Int>,
    /// Expert owning each block, `[num_blocks]`.
    pub block_expert: Tensor<B, 1, Int>,
}

impl<B: Backend> GroupedPlan<B> {
    /// Plans the dispatch of rows whose experts are `expert: [A]` (values in `0..E`).
    pub fn new(expert: Tensor<B, 1, Int>, num_experts: usize, block: usize) -> Self {
        let device = expert.device();
        let rows = expert.dims()[0];
        let block = block.max(1);
        let num_blocks = rows.div_ceil(block) + num_experts;
        let one_hot: Tensor<B, 2, Int> = expert.clone().one_hot(num_experts);
        // Rank of each row among the rows of its expert: (inclusive cumsum - 1) at its column.
        let rank = one_hot
            .clone()
            .cumsum(0)
            .sub_scalar(1)
            .mul(one_hot.clone())
            .sum_dim(1)
            .reshape([rows]);
        let counts = one_hot.sum_dim(0).reshape([num_experts]);
        let padded = counts
            .add_scalar(block as i64 - 1)
            .div_scalar(block as i64)
            .mul_scalar(block as i64);
        let ends = padded.clone().cumsum(0);
        let starts = ends.clone().sub(padded);
        let destination = starts.select(0, expert).add(rank);
        let source = Tensor::<B, 1, Int>::zeros([num_blocks * block], &device).scatter(
            0,
            destination.clone(),
            Tensor::arange(0..rows as i64, &device),
            IndexingUpdateOp::Add,
        );
        // Block b belongs to the first expert whose group ends after b·block.
        let block_starts = Tensor::<B, 1, Int>::arange(0..num_blocks as i64, &device)
            .mul_scalar(block as i64)
            .reshape([num_blocks, 1])
            .expand([num_blocks, num_experts]);
        let block_expert = ends
            .reshape([1, num_experts])
            .expand([num_blocks, num_experts])
            .lower_equal(block_starts)
            .int()
            .sum_dim(1)
            .reshape([num_blocks])
            .clamp_max(num_experts as i64 - 1);
        Self {
            block,
            num_blocks,
            destination,
            source,
            block_expert,
        }
    }
}
