//! The unbiased pass@k estimator of Chen et al. (2021), as MultiPL-E and Codex report it.

/// The `k` reported for `n` samples per problem: 1, 10 and 100, those not above `n`.
pub fn reported_ks(n: usize) -> Vec<usize> {
    [1, 10, 100].into_iter().filter(|&k| k <= n).collect()
}

/// pass@k of one problem with `n` samples of which `c` pass:
/// `1 − C(n−c, k) / C(n, k)`, computed as `1 − ∏_{i=n−c+1}^{n} (1 − k/i)` (Chen et al.,
/// numerically stable: no large binomials). `None` when `k` is 0 or above `n`, or `c > n`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Option<f64> {
    if k == 0 || k > n || c > n {
        return None;
    }
    if n - c < k {
        return Some(1.0);
    }
    let product: f64 = (n - c + 1..=n).map(|i| 1.0 - k as f64 / i as f64).product();
    Some(1.0 - product)
}

/// Mean pass@k over problems given as `(n, c)`; `None` when some problem has fewer than `k`
/// samples or there is none.
pub fn mean_pass_at_k(problems: &[(usize, usize)], k: usize) -> Option<f64> {
    if problems.is_empty() {
        return None;
    }
    let sum = problems
        .iter()
        .map(|&(n, c)| pass_at_k(n, c, k))
        .sum::<Option<f64>>()?;
    Some(sum / problems.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::{mean_pass_at_k, pass_at_k, reported_ks};

    /// `C(n, k)` exactly, for small arguments.
    fn binomial(n: u128, k: u128) -> u128 {
        if k > n {
            return 0;
        }
        (0..k).fold(1, |acc, i| acc * (n - i) / (i + 1))
    }

    #[test]
    fn pass_at_k_matches_hand_computed_values() {
        // n = 5, c = 2, k = 1: c / n.
        assert!((pass_at_k(5, 2, 1).unwrap() - 0.4).abs() < 1e-12);
        // n = 10, c = 3, k = 2: 1 − C(7,2)/C(10,2) = 1 − 21/45.
        assert!((pass_at_k(10, 3, 2).unwrap() - (1.0 - 21.0 / 45.0)).abs() < 1e-12);
        // n = 4, c = 1, k = 4: the one correct sample is always drawn.
        assert_eq!(pass_at_k(4, 1, 4), Some(1.0));
        assert_eq!(pass_at_k(4, 0, 2), Some(0.0));
        assert_eq!(pass_at_k(3, 3, 1), Some(1.0));
        assert_eq!(pass_at_k(3, 1, 4), None);
        assert_eq!(pass_at_k(3, 4, 1), None);
        assert_eq!(pass_at_k(3, 1, 0), None);
    }

    #[test]
    fn product_form_matches_binomials() {
        for n in 1..=30u128 {
            for c in 0..=n {
                for k in 1..=n {
                    let exact = 1.0 - binomial(n - c, k) as f64 / binomial(n, k) as f64;
                    let got = pass_at_k(n as usize, c as usize, k as usize).unwrap();
                    assert!(
                        (got - exact).abs() < 1e-9,
                        "n {n} c {c} k {k}: {got} vs {exact}"
                    );
                }
            }
        }
        // n = 200 (MultiPL-E's sample count) stays within [0, 1] and is monotone in c.
        let values: Vec<f64> = (0..=200).map(|c| pass_at_k(200, c, 100).unwrap()).collect();
        assert!(
            values
                .windows(2)
                .all(|w| w[0] <= w[1] && (0.0..=1.0).contains(&w[1]))
        );
    }

    #[test]
    fn reported_ks_and_means() {
        assert_eq!(reported_ks(1), vec![1]);
        assert_eq!(reported_ks(20), vec![1, 10]);
        assert_eq!(reported_ks(200), vec![1, 10, 100]);
        assert_eq!(mean_pass_at_k(&[(2, 1), (2, 2)], 1), Some(0.75));
        assert_eq!(mean_pass_at_k(&[(2, 1), (1, 1)], 2), None);
        assert_eq!(mean_pass_at_k(&[], 1), None);
    }
}
