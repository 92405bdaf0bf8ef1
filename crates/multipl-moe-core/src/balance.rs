//! The Switch-style load-balance loss of the token-level router and the training loss
//! `L = L_NTP + α · L_bal` (SPEC §4).

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

/// The training loss of SPEC §4: `L = L_NTP + α · L_bal` (`α = 0.01` in the paper); without a
/// balance loss (a dense model) `L = L_NTP`. Shapes: `[1]` each.
pub fn combined_loss<B: Backend>(
    next_token: Tensor<B, 1>,
    balance: Option<Tensor<B, 1>>,
    alpha: f64,
) -> Tensor<B, 1> {
    match balance {
        Some(balance) => next_token.add(balance.mul_scalar(alpha)),
        None => next_token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend as B;
    use burn::tensor::TensorData;

    fn probs(rows: Vec<f32>, n_t: usize) -> Tensor<B, 2> {
        let n = rows.len() / n_t;
        Tensor::from_data(TensorData::new(rows, [n, n_t]), &Default::default())
    }

    fn picks(ids: Vec<i64>, k: usize) -> Tensor<B, 2, Int> {
        let n = ids.len() / k;
        Tensor::from_data(TensorData::new(ids, [n, k]), &Default::default())
    }

    fn scalar(t: Tensor<B, 1>) -> f32 {
        t.into_data().convert::<f32>().into_vec::<f32>().unwrap()[0]
    }

    /// Two routed experts, each picked by half the tokens with uniform routed probabilities:
    /// `E_r Σ f·P = 2 · (½·½ + ½·½) = 1`.
    #[test]
    fn perfect_balance_gives_one() {
        let p = probs(vec![0.5, 0.25, 0.25, 0.5, 0.25, 0.25], 3);
        let loss = balance_loss(p, picks(vec![1, 2], 1), 0, None);
        assert!((scalar(loss) - 1.0).abs() < 1e-6);
    }

    /// Everything on routed expert 1 with routed probability 0.9: f = (1, 0), P = (0.9, 0.1),
    /// so `L = 2 · 0.9 = 1.8`; the shared column (0) does not count.
    #[test]
    fn collapse_is_penalised_and_the_shared_expert_ignored() {
        let p = probs(vec![0.5, 0.45, 0.05, 0.9, 0.09, 0.01], 3);
        let loss = scalar(balance_loss(p, picks(vec![1, 1], 1), 0, None));
        assert!((loss - 1.8).abs() < 1e-5, "{loss}");
    }

    /// A padded token counts in neither f nor P: masking the second, collapsed token of a
    /// batch gives the loss of the first token alone.
    #[test]
    fn padding_counts_in_neither_f_nor_p() {
        let first = vec![0.2, 0.4, 0.4];
        let alone = balance_loss(probs(first.clone(), 3), picks(vec![2], 1), 0, None);
        let mut both = first;
        both.extend([0.0, 1.0, 0.0]);
        let mask =
            Tensor::<B, 1>::from_data(TensorData::new(vec![1.0f32, 0.0], [2]), &Default::default());
        let masked = balance_loss(probs(both, 3), picks(vec![2, 1], 1), 0, Some(mask));
        assert!((scalar(alone) - scalar(masked)).abs() < 1e-6);
    }

    #[test]
    fn combined_loss_adds_alpha_times_balance() {
        let d = Default::default();
        let ce = Tensor::<B, 1>::from_floats([2.5], &d);
        let bal = Tensor::<B, 1>::from_floats([1.2], &d);
        assert!((scalar(combined_loss(ce.clone(), Some(bal), 0.01)) - 2.512).abs() < 1e-6);
        assert_eq!(scalar(combined_loss(ce, None, 0.01)), 2.5);
    }
}
