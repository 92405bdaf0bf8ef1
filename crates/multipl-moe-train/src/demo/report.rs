//! The main job's report: validation loss per language and model for each seed, their mean ±
//! standard deviation, the verdict lines (each a paired difference over seeds tested against
//! two standard errors), `report.json`, `table.txt` and the charts.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::corpus::Language;
use crate::demo::charts::{Bar, Curve, curve_panels, grouped_bars, smooth};
use crate::demo::stats::{PairedDifference, Summary};
use crate::error::Result;
use crate::files::{write_atomic, write_json};
use crate::training::loss_log::read_loss_csv;

/// The models compared, in table order.
pub const MODELS: [&str; 4] = ["dense", "dense-FT", "dense-FT (matched)", "MultiPL-MoE"];

/// Their export directories under the demo's output directory.
pub const MODEL_DIRS: [&str; 4] = ["dense", "dense-ft", "dense-ft-matched", "multipl-moe"];

/// Their stage directories under `seed-N/` (the dense model's is its pre-training).
pub const STAGE_DIRS: [&str; 4] = [
    "stage-a-pretrain",
    "stage-b-dense-ft",
    "stage-b2-dense-ft-matched",
    "stage-c-multipl-moe",
];

/// Validation loss per language of each model (keyed by [`MODELS`]) for one seed.
pub type SeedLosses = BTreeMap<String, BTreeMap<Language, f64>>;

/// One verdict line: a paired difference over seeds and what a positive value means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// What is compared, e.g. "low-resource loss: dense-FT − MultiPL-MoE".
    pub comparison: String,
    /// What a positive difference beyond two standard errors means.
    pub positive_means: String,
    /// The difference over seeds.
    pub difference: PairedDifference,
}

/// Everything the main job measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoReport {
    /// Per seed: `(seed, losses)`.
    pub per_seed: Vec<(u64, SeedLosses)>,
    /// Mean ± sd over seeds per model and language.
    pub summary: BTreeMap<String, BTreeMap<Language, Summary>>,
    /// Trainable parameters of each model's last stage (keyed by [`MODELS`]).
    pub trainable_params: BTreeMap<String, usize>,
    /// The verdict lines.
    pub verdicts: Vec<Verdict>,
}

/// A language's name in the table and the charts, marked when it is low-resource.
pub(crate) fn label(lang: Language) -> String {
    let tag = if lang.is_low_resource() { " (low)" } else { "" };
    format!("{}{tag}", lang.name())
}

/// The mean loss over the low-resource (`low`) or high-resource languages of one model.
pub(crate) fn group_mean(losses: &BTreeMap<Language, f64>, low: bool) -> f64 {
    let v: Vec<f64> = Language::ALL
        .iter()
        .filter(|l| l.is_low_resource() == low)
        .filter_map(|l| losses.get(l).copied())
        .collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

impl DemoReport {
    /// Summarises `per_seed`; `trainable` follows [`MODELS`].
    pub fn new(per_seed: Vec<(u64, SeedLosses)>, trainable: &[usize]) -> Self {
        let mut summary = BTreeMap::new();
        for model in MODELS {
            let mut by_lang = BTreeMap::new();
            for lang in Language::ALL {
                let values: Vec<f64> = per_seed
                    .iter()
                    .filter_map(|(_, s)| s.get(model)?.get(&lang).copied())
                    .collect();
                by_lang.insert(lang, Summary::of(&values));
            }
            summary.insert(model.to_string(), by_lang);
        }
        let group = |model: &str, low: bool| -> Vec<f64> {
            per_seed
                .iter()
                .map(|(_, s)| s.get(model).map_or(f64::NAN, |m| group_mean(m, low)))
                .collect()
        };
        let verdict = |comparison: &str, positive_means: &str, a: Vec<f64>, b: Vec<f64>| Verdict {
            comparison: comparison.into(),
            positive_means: positive_means.into(),
            difference: PairedDifference::of(&a, &b),
        };
        let (dense, ft, matched, moe) = (MODELS[0], MODELS[1], MODELS[2], MODELS[3]);
        let verdicts = vec![
            verdict(
                "high-resource loss: dense-FT − dense",
                "dense fine-tuning forgets",
                group(ft, false),
                group(dense, false),
            ),
            verdict(
                "low-resource loss: dense − MultiPL-MoE",
                "MultiPL-MoE learns the low-resource languages",
                group(dense, true),
                group(moe, true),
            ),
            verdict(
                "low-resource loss: dense-FT − MultiPL-MoE",
                "MultiPL-MoE learns them better than dense-FT",
                group(ft, true),
                group(moe, true),
            ),
            verdict(
                "high-resource loss: dense-FT − MultiPL-MoE",
                "MultiPL-MoE forgets less than dense-FT",
                group(ft, false),
                group(moe, false),
            ),
            verdict(
                "low-resource loss: dense-FT (matched) − MultiPL-MoE",
                "MultiPL-MoE learns them better than dense-FT with as many trainable parameters",
                group(matched, true),
                group(moe, true),
            ),
            verdict(
                "high-resource loss: dense-FT (matched) − MultiPL-MoE",
                "MultiPL-MoE forgets less than dense-FT with as many trainable parameters",
                group(matched, false),
                group(moe, false),
            ),
        ];
        let trainable_params = MODELS
            .iter()
            .zip(trainable)
            .map(|(m, &n)| (m.to_string(), n))
            .collect();
        Self {
            per_seed,
            summary,
            trainable_params,
            verdicts,
        }
    }

    /// The table (mean ± sd over seeds), the trainable parameters and the verdict lines.
    pub fn table(&self) -> String {
        let seeds: Vec<String> = self.per_seed.iter().map(|(s, _)| s.to_string()).collect();
        let mut s = format!(
            "validation loss (cross-entropy, nats/token), mean ± sd over seeds [{}]\n{:<11}",
            seeds.join(", "),
            "language"
        );
        for model in MODELS {
            s += &format!("{model:>21}");
        }
        s.push('\n');
        for lang in Language::ALL {
            s += &format!("{:<11}", label(lang));
            for model in MODELS {
                let cell = self
                    .summary
                    .get(model)
                    .and_then(|m| m.get(&lang))
                    .map_or_else(|| "-".into(), |x| x.show(4));
                s += &format!("{cell:>21}");
            }
            s.push('\n');
        }
        s += "trainable parameters:";
        for model in MODELS {
            let n = self.trainable_params.get(model).copied().unwrap_or(0);
            s += &format!(" {model} {n};");
        }
        s.push('\n');
        for v in &self.verdicts {
            s += &format!(
                "{}: {} ({} if beyond 2 SE and > 0)\n",
                v.comparison,
                v.difference.show(),
                v.positive_means
            );
        }
        s
    }
}

/// Writes `report.json`, `table.txt`, `validation-loss.svg` and `training-curves.svg` under
/// `out` (the curves from each seed's `seed-N/<stage>/loss.csv`).
///
/// # Errors
/// A file cannot be written, a `loss.csv` is malformed, or a chart cannot be drawn.
pub fn write_outputs(report: &DemoReport, out: &Path) -> Result<()> {
    write_json(&out.join("report.json"), report)?;
    write_atomic(&out.join("table.txt"), report.table().as_bytes())?;
    let groups: Vec<String> = Language::ALL.into_iter().map(label).collect();
    let series: Vec<String> = MODELS.iter().map(|m| m.to_string()).collect();
    let values: Vec<Vec<Bar>> = Language::ALL
        .iter()
        .map(|lang| {
            MODELS
                .iter()
                .map(|m| {
                    let s = report.summary.get(*m).and_then(|x| x.get(lang));
                    Bar {
                        mean: s.map_or(f64::NAN, |s| s.mean),
                        sd: s.and_then(|s| s.sd),
                    }
                })
                .collect()
        })
        .collect();
    let seeds = report.per_seed.len();
    grouped_bars(
        &out.join("validation-loss.svg"),
        &format!("validation loss per language (mean ± sd over {seeds} seed(s))"),
        "cross-entropy (nats/token)",
        &groups,
        &series,
        &values,
    )?;
    training_curves(report, out)
}

/// Mean over seeds of each micro-batch's `(loss, balance loss)` of `stage`.
fn mean_curve(report: &DemoReport, out: &Path, stage: &str) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut runs = Vec::new();
    for (seed, _) in &report.per_seed {
        runs.push(read_loss_csv(
            &out.join(format!("seed-{seed}"))
                .join(stage)
                .join("loss.csv"),
        )?);
    }
    let len = runs.iter().map(Vec::len).min().unwrap_or(0);
    let mean = |f: &dyn Fn(usize, usize) -> Option<f64>| -> Vec<f64> {
        (0..len)
            .filter_map(|i| {
                let v: Vec<f64> = (0..runs.len()).filter_map(|r| f(r, i)).collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            })
            .collect()
    };
    Ok((
        mean(&|r, i| Some(runs[r][i].loss)),
        mean(&|r, i| runs[r][i].balance_loss),
    ))
}

fn training_curves(report: &DemoReport, out: &Path) -> Result<()> {
    let as_curve = |model: usize, values: &[f64]| {
        let points: Vec<(f64, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| ((i + 1) as f64, v))
            .collect();
        Curve {
            label: MODELS[model].into(),
            color: model,
            points: smooth(&points, (points.len() / 40).max(1)),
        }
    };
    let (pre, _) = mean_curve(report, out, STAGE_DIRS[0])?;
    let mut fine = Vec::new();
    let mut balance = Vec::new();
    for (model, stage) in STAGE_DIRS.iter().enumerate().skip(1) {
        let (loss, bal) = mean_curve(report, out, stage)?;
        fine.push(as_curve(model, &loss));
        if !bal.is_empty() {
            balance.push(as_curve(model, &bal));
        }
    }
    let mut panels = vec![
        (
            "pre-training loss (dense)".to_string(),
            vec![as_curve(0, &pre)],
        ),
        ("fine-tuning loss L = CE + α·L_bal".to_string(), fine),
    ];
    if !balance.is_empty() {
        panels.push(("balance loss L_bal".to_string(), balance));
    }
    curve_panels(
        &out.join("training-curves.svg"),
        "micro-batch (mean over seeds, moving average)",
        &panels,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{DemoReport, MODELS, SeedLosses};
    use crate::data::corpus::Language;

    fn seed(offset: f64) -> SeedLosses {
        MODELS
            .iter()
            .enumerate()
            .map(|(m, name)| {
                let losses: BTreeMap<Language, f64> = Language::ALL
                    .iter()
                    .map(|&l| {
                        let low = if l.is_low_resource() { 1.0 } else { 0.0 };
                        // MultiPL-MoE (m = 3) has the lowest loss everywhere.
                        (l, 2.0 + low - 0.1 * m as f64 + offset)
                    })
                    .collect();
                (name.to_string(), losses)
            })
            .collect()
    }

    #[test]
    fn the_report_summarises_seeds_and_tests_paired_differences() {
        let report = DemoReport::new(
            vec![(0, seed(0.0)), (1, seed(0.02)), (2, seed(0.04))],
            &[1, 1, 2, 2],
        );
        let python = report.summary["dense"][&Language::Python];
        assert!((python.mean - 2.02).abs() < 1e-12);
        assert!((python.sd.unwrap() - 0.02).abs() < 1e-12);
        // Every paired difference is a constant 0.1 × (model gap): sd 0, beyond 2 SE.
        let v = &report.verdicts[2];
        assert!(v.comparison.contains("dense-FT − MultiPL-MoE"));
        assert!((v.difference.summary.mean - 0.2).abs() < 1e-9);
        assert_eq!(v.difference.exceeds_two_se, Some(true));
        let table = report.table();
        assert!(table.contains("2.0200 ± 0.0200"), "{table}");
        assert!(table.contains("seeds [0, 1, 2]"));
        // One seed: means only and no error estimate.
        let one = DemoReport::new(vec![(5, seed(0.0))], &[1, 1, 2, 2]);
        assert!(one.table().contains("one seed: no error estimate"));
        assert_eq!(one.verdicts[0].difference.exceeds_two_se, None);
    }
}
