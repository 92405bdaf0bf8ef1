//! The Switch-style load-balance loss of the token-level router (SPEC §4).

use burn::tensor::{Int, Tensor, backend::Backend};

/// Load-balance loss of one layer's token router:
///
/// ```text
/// L_bal = E_r · Σ_{i routed} f_i · P_i
/// f_i   = #{(t, j) : token t's j-th routed pick is i} / (N_real · (K−1))
/// P_i   = (1/N_real) Σ_t  s_i,t / Σ_{j routed} s_j,t
/// ```
///
/// - Only the `E_r = N_t − 1` routed experts count: the shared expert is always selected, so
///   balancing it means nothing. `P_i` renormalises the softmax over the routed experts so
///   that `Σ_i P_i = 1`, like `Σ_i f_i = 1`.
/// - Normalised so that perfectly balanced routing gives exactly 1.0; routing that sends every
///   token to one expert with probability → 1 gives its maximum, `E_r`.
/// - Padding tokens (`mask` = 0) count in neither `f` nor `P`.
/// - `f` is a count and carries no gradient; the gradient reaches the router through `P`.
/// - `probs` is the single softmax of SPEC §2 — no second softmax is applied.
/// - Layers are combined by the caller as the mean over hybrid layers
///   ([`crate::model::CausalLmOutput::balance_loss`]), so the total is also 1.0 at balance.
///
/// Shapes: `probs [N, N_t]`, `experts [N, K−1]` (router indices), `mask [N]` (1 = real).
pub fn balance_loss<B: Backend>(
    probs: Tensor<B, 2>,
    experts: Tensor<B, 2, Int>,
    shared_expert: usize,
    mask: Option<Tensor<B, 1>>,
) -> Tensor<B, 1> {
    let [n, n_t] = probs.dims();
    let picks = experts.dims()[1];
    let routed = n_t - 1;
    let routed_probs = crate::routing::drop_column(probs, shared_expert);
    let routed_probs = routed_probs.clone().div(routed_probs.sum_dim(1));
    let bank = crate::routing::routed_bank_index(experts, shared_expert);
    let counts: Tensor<B, 2> = bank
        .one_hot::<3>(routed)
        .sum_dim(1)
        .reshape([n, routed])
        .float();
    let device = counts.device();
    let mask = mask
        .unwrap_or_else(|| Tensor::ones([n], &device))
        .reshape([n, 1]);
    let n_real = mask.clone().sum().clamp_min(1.0);
    let f = counts
        .mul(mask.clone())
        .sum_dim(0)
        .div(n_real.clone().mul_scalar(picks as f64).unsqueeze());
    let p = routed_probs.mul(mask).sum_dim(0).div(n_real.unsqueeze());
    f.mul(p).sum().mul_scalar(routed as f64)
}
