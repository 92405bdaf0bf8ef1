//! Mean, standard deviation and standard error over seeds, and the two-standard-error test
//! of a paired difference that the main job's verdict lines use.

use serde::{Deserialize, Serialize};

/// Mean, sample standard deviation (`n − 1` in the denominator) and standard error of the
/// mean (`sd / √n`) of a set of values; `sd` and `se` are `None` for fewer than two values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Their mean (NaN when there are none).
    pub mean: f64,
    /// Sample standard deviation.
    pub sd: Option<f64>,
    /// Standard error of the mean.
    pub se: Option<f64>,
}

impl Summary {
    /// Summarises `values`.
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = (n >= 2).then(|| {
            let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
            (ss / (n - 1) as f64).sqrt()
        });
        Self {
            n,
            mean,
            sd,
            se: sd.map(|sd| sd / (n as f64).sqrt()),
        }
    }

    /// `mean ± sd` with `digits` decimals, or the mean alone for one value.
    pub fn show(&self, digits: usize) -> String {
        match self.sd {
            Some(sd) => format!("{:.digits$} ± {sd:.digits$}", self.mean),
            None => format!("{:.digits$}", self.mean),
        }
    }
}

/// A paired difference `a − b` over seeds (seed `i` of `a` with seed `i` of `b`: both models
/// saw the same initialisation and data order), and whether its mean is more than two
/// standard errors from 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    /// Mean, sd and se of the per-seed differences.
    pub summary: Summary,
    /// `|mean| > 2·se`; `None` with fewer than two seeds (no error estimate).
    pub exceeds_two_se: Option<bool>,
}

impl PairedDifference {
    /// The difference of `a` and `b`, paired by position (the shorter length is used).
    pub fn of(a: &[f64], b: &[f64]) -> Self {
        let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        let summary = Summary::of(&diffs);
        Self {
            summary,
            exceeds_two_se: summary.se.map(|se| summary.mean.abs() > 2.0 * se),
        }
    }

    /// `+0.0123 ± 0.0040 (SE), beyond 2 SE: yes` or, for one seed, `+0.0123 (one seed: no
    /// error estimate)`.
    pub fn show(&self) -> String {
        match (self.summary.se, self.exceeds_two_se) {
            (Some(se), Some(beyond)) => format!(
                "{:+.4} ± {se:.4} (SE), beyond 2 SE: {}",
                self.summary.mean,
                if beyond { "yes" } else { "no" }
            ),
            _ => format!("{:+.4} (one seed: no error estimate)", self.summary.mean),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{PairedDifference, Summary};

    #[test]
    fn summary_matches_hand_computed_values() {
        // mean 4; squared deviations 4, 0, 4 → sample variance 8 / 2 = 4, sd 2, se 2/√3.
        let s = Summary::of(&[2.0, 4.0, 6.0]);
        assert_eq!(s.n, 3);
        assert!((s.mean - 4.0).abs() < 1e-12);
        assert!((s.sd.unwrap() - 2.0).abs() < 1e-12);
        assert!((s.se.unwrap() - 2.0 / 3f64.sqrt()).abs() < 1e-12);
        assert_eq!(s.show(2), "4.00 ± 2.00");
        // One value: no spread.
        let one = Summary::of(&[0.5]);
        assert_eq!((one.mean, one.sd, one.se), (0.5, None, None));
        assert_eq!(one.show(3), "0.500");
    }

    #[test]
    fn paired_differences_are_tested_against_two_standard_errors() {
        // Differences 0.3, 0.1, 0.2: mean 0.2, sd 0.1, se 0.1/√3 ≈ 0.0577 → 0.2 > 0.115.
        let d = PairedDifference::of(&[1.3, 1.1, 1.2], &[1.0, 1.0, 1.0]);
        assert!((d.summary.mean - 0.2).abs() < 1e-12);
        assert!((d.summary.sd.unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(d.exceeds_two_se, Some(true));
        assert_eq!(d.show(), "+0.2000 ± 0.0577 (SE), beyond 2 SE: yes");
        // Differences 0.3, −0.2, 0.05: mean 0.05, sd ≈ 0.25, se ≈ 0.144 → within 2 SE.
        let d = PairedDifference::of(&[1.3, 0.8, 1.05], &[1.0, 1.0, 1.0]);
        assert_eq!(d.exceeds_two_se, Some(false));
        let d = PairedDifference::of(&[1.0], &[0.5]);
        assert_eq!(d.exceeds_two_se, None);
        assert_eq!(d.show(), "+0.5000 (one seed: no error estimate)");
    }
}
