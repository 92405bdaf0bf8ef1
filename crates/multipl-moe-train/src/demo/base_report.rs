//! The report of the main job on a pretrained base ([`super::base`]): validation
//! cross-entropy per language (mean ± sd over seeds) and MultiPL-E pass@1 per language (passed
//! problems over seeds pooled) of every model at step 0 and after fine-tuning, and the verdict
//! lines, each a paired difference tested against two standard errors: over seeds for the
//! loss, over problems (each averaged over the seeds) for pass@1.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::corpus::Language;
use crate::demo::base::BASE_MODELS;
use crate::demo::charts::{Bar, grouped_bars};
use crate::demo::report::{Verdict, group_mean, label};
use crate::demo::stats::{PairedDifference, Summary};
use crate::error::Result;
use crate::files::{write_atomic, write_json};

/// One problem's samples for one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemPass {
    /// Its language.
    pub language: Language,
    /// MultiPL-E's problem name.
    pub name: String,
    /// Samples that passed.
    pub passed: usize,
    /// Samples the harness ran (a harness fault is not the model's and is left out).
    pub scored: usize,
}

impl ProblemPass {
    /// The problem's pass@1: passed / scored; `None` when nothing was scored.
    pub fn rate(&self) -> Option<f64> {
        (self.scored > 0).then(|| self.passed as f64 / self.scored as f64)
    }
}

/// Which pass@1 a table or a verdict reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoding {
    /// One greedy completion per problem.
    Greedy,
    /// `n` completions per problem at a temperature.
    Sampled,
}

/// One model measured at one point of one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The model's name ([`BASE_MODELS`]).
    pub model: String,
    /// The seed of its fine-tuning (the dense base is the same for every seed).
    pub seed: u64,
    /// Measured before fine-tuning.
    pub step0: bool,
    /// Validation cross-entropy per language (nats/token).
    pub valid_loss: BTreeMap<Language, f64>,
    /// Every problem's greedy completion, in problem order.
    pub problems: Vec<ProblemPass>,
    /// Every problem's sampled completions (empty unless sampled pass@1 was asked for).
    #[serde(default)]
    pub sampled: Vec<ProblemPass>,
    /// Wall-clock seconds the measurement took.
    pub seconds: f64,
}

/// Everything the main job on a pretrained base measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaseReport {
    /// The base checkpoint.
    pub base: String,
    /// The seeds.
    pub seeds: Vec<u64>,
    /// Every measurement.
    pub measurements: Vec<Measurement>,
    /// Trainable parameters of each model's fine-tuning (0: not fine-tuned).
    pub trainable_params: BTreeMap<String, usize>,
    /// Wall-clock seconds of each stage.
    pub seconds: BTreeMap<String, f64>,
    /// How the run departs from the paper's setting.
    pub reductions: Vec<String>,
    /// Verdicts on validation loss (paired over seeds).
    pub loss_verdicts: Vec<Verdict>,
    /// Verdicts on greedy pass@1 (paired over problems, each averaged over seeds).
    pub pass_verdicts: Vec<Verdict>,
    /// Samples per problem and temperature of the sampled pass@1, if measured.
    #[serde(default)]
    pub sampling: Option<(usize, f64)>,
    /// Verdicts on sampled pass@1 (paired over problems, each averaged over seeds).
    #[serde(default)]
    pub sampled_verdicts: Vec<Verdict>,
}

impl Measurement {
    /// The problems' results under `decoding`.
    fn passes(&self, decoding: Decoding) -> &[ProblemPass] {
        match decoding {
            Decoding::Greedy => &self.problems,
            Decoding::Sampled => &self.sampled,
        }
    }
}

/// Which measurement of a model a table column or a verdict uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Point {
    Step0,
    FineTuned,
}

impl Point {
    fn is(self, m: &Measurement) -> bool {
        // The dense base is not fine-tuned: it is its own fine-tuned row.
        m.step0 == (self == Point::Step0) || m.model == BASE_MODELS[0].0
    }
}

impl BaseReport {
    /// Summarises the measurements.
    pub fn new(
        base: String,
        seeds: Vec<u64>,
        measurements: Vec<Measurement>,
        trainable_params: BTreeMap<String, usize>,
        seconds: BTreeMap<String, f64>,
        reductions: Vec<String>,
        sampling: Option<(usize, f64)>,
    ) -> Self {
        let mut report = Self {
            base,
            seeds,
            measurements,
            trainable_params,
            seconds,
            reductions,
            loss_verdicts: Vec::new(),
            pass_verdicts: Vec::new(),
            sampling,
            sampled_verdicts: Vec::new(),
        };
        report.loss_verdicts = report.verdicts(|r, a, b, low| {
            PairedDifference::of(&r.group_losses(a, low), &r.group_losses(b, low))
        });
        // Higher pass@1 is better: `b − a` so that a positive value means the same as for
        // the loss (a is worse than b).
        for decoding in [Decoding::Greedy, Decoding::Sampled] {
            let verdicts = report.verdicts(|r, a, b, low| {
                let (pa, pb) = r.paired_passes(a, b, low, decoding);
                PairedDifference::of(&pb, &pa)
            });
            match decoding {
                Decoding::Greedy => report.pass_verdicts = verdicts,
                Decoding::Sampled if report.sampling.is_some() => {
                    report.sampled_verdicts = verdicts;
                }
                Decoding::Sampled => {}
            }
        }
        report
    }

    fn fine_tuned(&self, model: &str, seed: u64) -> Option<&Measurement> {
        self.at(model, seed, Point::FineTuned)
    }

    fn at(&self, model: &str, seed: u64, point: Point) -> Option<&Measurement> {
        // dense-FT starts from the dense model itself.
        let model = match (model, point) {
            (m, Point::Step0) if m == BASE_MODELS[1].0 => BASE_MODELS[0].0,
            (m, _) => m,
        };
        self.measurements
            .iter()
            .find(|m| m.model == model && m.seed == seed && point.is(m))
    }

    /// Per seed: the mean fine-tuned loss of `model` over the low- or high-resource languages.
    fn group_losses(&self, model: &str, low: bool) -> Vec<f64> {
        self.seeds
            .iter()
            .map(|&s| {
                self.fine_tuned(model, s)
                    .map_or(f64::NAN, |m| group_mean(&m.valid_loss, low))
            })
            .collect()
    }

    /// The fine-tuned pass@1 of `a` and `b` on every problem of the group that the harness
    /// scored for both, each averaged over the seeds first: the problems, not the (seed,
    /// problem) pairs, are the independent units (the dense base is one measurement for
    /// every seed).
    fn paired_passes(
        &self,
        a: &str,
        b: &str,
        low: bool,
        decoding: Decoding,
    ) -> (Vec<f64>, Vec<f64>) {
        // (language, name) → sums of a's and b's rates and their count over seeds.
        let mut sums: Vec<((Language, String), f64, f64, usize)> = Vec::new();
        for &seed in &self.seeds {
            let (Some(ma), Some(mb)) = (self.fine_tuned(a, seed), self.fine_tuned(b, seed)) else {
                continue;
            };
            let group = ma.passes(decoding).iter();
            for pa in group.filter(|p| p.language.is_low_resource() == low) {
                let pb = mb
                    .passes(decoding)
                    .iter()
                    .find(|p| p.language == pa.language && p.name == pa.name);
                if let (Some(x), Some(Some(y))) = (pa.rate(), pb.map(ProblemPass::rate)) {
                    let key = (pa.language, pa.name.clone());
                    match sums.iter_mut().find(|s| s.0 == key) {
                        Some(s) => {
                            s.1 += x;
                            s.2 += y;
                            s.3 += 1;
                        }
                        None => sums.push((key, x, y, 1)),
                    }
                }
            }
        }
        sums.iter()
            .map(|(_, x, y, n)| (x / *n as f64, y / *n as f64))
            .unzip()
    }

    /// The verdict lines: dense-FT's forgetting, then for each MultiPL-MoE variant its
    /// learning against dense, dense-FT and the matched baseline, and its forgetting against
    /// both baselines. `difference(report, a, b, low)` is positive when `a` is worse than `b`.
    fn verdicts(
        &self,
        difference: impl Fn(&Self, &str, &str, bool) -> PairedDifference,
    ) -> Vec<Verdict> {
        let [dense, ft, matched, moe, fp] = BASE_MODELS.map(|(name, _)| name);
        let verdict = |a: &str, b: &str, low: bool, positive_means: String| Verdict {
            comparison: format!("{}-resource: {a} vs {b}", if low { "low" } else { "high" }),
            positive_means,
            difference: difference(self, a, b, low),
        };
        let mut out = vec![verdict(
            ft,
            dense,
            false,
            "dense fine-tuning forgets".into(),
        )];
        for v in [moe, fp] {
            out.push(verdict(dense, v, true, format!("{v} learns them")));
            out.push(verdict(
                ft,
                v,
                true,
                format!("{v} learns them better than dense-FT"),
            ));
            out.push(verdict(
                ft,
                v,
                false,
                format!("{v} forgets less than dense-FT"),
            ));
            out.push(verdict(
                matched,
                v,
                true,
                format!("{v} learns them better than dense-FT with as many trainable parameters"),
            ));
            out.push(verdict(
                matched,
                v,
                false,
                format!("{v} forgets less than dense-FT with as many trainable parameters"),
            ));
        }
        out
    }

    /// Mean ± sd over seeds of `model`'s loss on `lang` at `point`.
    fn loss_summary(&self, model: &str, lang: Language, point: Point) -> Option<Summary> {
        let values: Vec<f64> = self
            .seeds
            .iter()
            .filter_map(|&s| self.at(model, s, point)?.valid_loss.get(&lang).copied())
            .collect();
        (!values.is_empty()).then(|| Summary::of(&values))
    }

    /// Samples passed and scored of `model` on `lang` at `point`, over every seed and
    /// problem; `None` when no problem of `lang` was measured. (Every problem has the same
    /// number of samples, so their ratio is the mean of the problems' pass@1.)
    fn passes(
        &self,
        model: &str,
        lang: Language,
        point: Point,
        decoding: Decoding,
    ) -> Option<(usize, usize)> {
        let (mut found, mut passed, mut total) = (false, 0, 0);
        for &s in &self.seeds {
            let Some(m) = self.at(model, s, point) else {
                continue;
            };
            for p in m.passes(decoding).iter().filter(|p| p.language == lang) {
                found = true;
                passed += p.passed;
                total += p.scored;
            }
        }
        found.then_some((passed, total))
    }

    /// The tables (loss and pass@1, at step 0 and fine-tuned), the trainable parameters,
    /// the reductions, the stage times and the verdict lines.
    pub fn table(&self) -> String {
        let seeds: Vec<String> = self.seeds.iter().map(u64::to_string).collect();
        let mut s = format!("base: {}; seeds [{}]\n", self.base, seeds.join(", "));
        for line in &self.reductions {
            s += &format!("reduced from the paper: {line}\n");
        }
        let width = 22;
        let header = |title: &str| {
            let mut h = format!("{title}\n{:<13}", "language");
            for (model, _) in BASE_MODELS {
                h += &format!("{:>width$}", short(model));
            }
            h + "\n"
        };
        for point in [Point::Step0, Point::FineTuned] {
            let when = match point {
                Point::Step0 => "at step 0 (before fine-tuning)",
                Point::FineTuned => "fine-tuned",
            };
            s += &header(&format!(
                "\nvalidation loss (cross-entropy, nats/token, mean ± sd over seeds), {when}"
            ));
            for lang in Language::ALL {
                s += &format!("{:<13}", label(lang));
                for (model, _) in BASE_MODELS {
                    let cell = self
                        .loss_summary(model, lang, point)
                        .map_or_else(|| "-".into(), |x| x.show(4));
                    s += &format!("{cell:>width$}");
                }
                s.push('\n');
            }
            let mut blocks = vec![(
                Decoding::Greedy,
                "greedy, n = 1; passed/scored over seeds".to_string(),
            )];
            if let Some((n, t)) = self.sampling {
                blocks.push((
                    Decoding::Sampled,
                    format!("n = {n} samples at temperature {t}; passed/scored samples over seeds"),
                ));
            }
            for (decoding, how) in blocks {
                s += &header(&format!("\nMultiPL-E pass@1 ({how}), {when}"));
                for lang in Language::ALL {
                    s += &format!("{:<13}", label(lang));
                    for (model, _) in BASE_MODELS {
                        let cell = match self.passes(model, lang, point, decoding) {
                            Some((p, t)) if t > 0 => {
                                format!("{:.3} ({p}/{t})", p as f64 / t as f64)
                            }
                            Some(_) => "not run".into(),
                            None => "-".into(),
                        };
                        s += &format!("{cell:>width$}");
                    }
                    s.push('\n');
                }
            }
        }
        s += "\ntrainable parameters:";
        for (model, _) in BASE_MODELS {
            let n = self.trainable_params.get(model).copied().unwrap_or(0);
            s += &format!(" {model} {n};");
        }
        s += "\nwall-clock:";
        for (stage, secs) in &self.seconds {
            s += &format!(" {stage} {secs:.0} s;");
        }
        s += "\n\nverdicts on validation loss (paired over seeds; a − b):\n";
        for v in &self.loss_verdicts {
            s += &verdict_line(v);
        }
        s += "verdicts on greedy pass@1 (paired over problems, averaged over seeds; b − a):\n";
        for v in &self.pass_verdicts {
            s += &verdict_line(v);
        }
        if !self.sampled_verdicts.is_empty() {
            s += "verdicts on sampled pass@1 (paired over problems, averaged over seeds; b − a):\n";
            for v in &self.sampled_verdicts {
                s += &verdict_line(v);
            }
        }
        s
    }

    /// Writes `report.json`, `table.txt`, `validation-loss.svg` and `pass-at-1.svg` (the
    /// fine-tuned models) under `out`.
    ///
    /// # Errors
    /// A file cannot be written or a chart cannot be drawn.
    pub fn write(&self, out: &Path) -> Result<()> {
        write_json(&out.join("report.json"), self)?;
        write_atomic(&out.join("table.txt"), self.table().as_bytes())?;
        let groups: Vec<String> = Language::ALL.into_iter().map(label).collect();
        let series: Vec<String> = BASE_MODELS.iter().map(|(m, _)| m.to_string()).collect();
        let bars = |value: &dyn Fn(&str, Language) -> Bar| -> Vec<Vec<Bar>> {
            Language::ALL
                .iter()
                .map(|&lang| BASE_MODELS.iter().map(|(m, _)| value(m, lang)).collect())
                .collect()
        };
        let n = self.seeds.len();
        grouped_bars(
            &out.join("validation-loss.svg"),
            &format!("validation loss per language, fine-tuned (mean ± sd over {n} seed(s))"),
            "cross-entropy (nats/token)",
            &groups,
            &series,
            &bars(&|m, lang| {
                let s = self.loss_summary(m, lang, Point::FineTuned);
                Bar {
                    mean: s.map_or(f64::NAN, |s| s.mean),
                    sd: s.and_then(|s| s.sd),
                }
            }),
        )?;
        grouped_bars(
            &out.join("pass-at-1.svg"),
            &format!("MultiPL-E pass@1 per language, fine-tuned (greedy; {n} seed(s) pooled)"),
            "pass@1",
            &groups,
            &series,
            &bars(&|m, lang| Bar {
                mean: match self.passes(m, lang, Point::FineTuned, Decoding::Greedy) {
                    Some((p, t)) if t > 0 => p as f64 / t as f64,
                    _ => f64::NAN,
                },
                sd: None,
            }),
        )
    }
}

/// A model's name in a table header.
fn short(model: &str) -> &str {
    match model {
        "MultiPL-MoE (function-preserving)" => "MultiPL-MoE (f.-p.)",
        other => other,
    }
}

fn verdict_line(v: &Verdict) -> String {
    format!(
        "  {}: {} ({} if beyond 2 SE and > 0)\n",
        v.comparison,
        v.difference.show(),
        v.positive_means
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{BaseReport, Measurement, ProblemPass};
    use crate::data::corpus::Language;
    use crate::demo::base::BASE_MODELS;

    /// Model `m` passes problem `i` when `i < passes[m]`; its loss is `2 + low − 0.1 m`.
    fn measurements(seed: u64, passes: [usize; 5]) -> Vec<Measurement> {
        let mut out = Vec::new();
        for (m, (name, _)) in BASE_MODELS.iter().enumerate() {
            for step0 in [true, false] {
                if m == 0 && !step0 {
                    continue;
                }
                let valid_loss = Language::ALL
                    .iter()
                    .map(|&l| {
                        (
                            l,
                            2.0 + f64::from(u8::from(l.is_low_resource())) - 0.1 * m as f64,
                        )
                    })
                    .collect();
                let problems: Vec<ProblemPass> = Language::ALL
                    .iter()
                    .flat_map(|&language| {
                        (0..4).map(move |i| ProblemPass {
                            language,
                            name: format!("p{i}"),
                            passed: usize::from(!step0 && i < passes[m] || m == 0 && i < passes[0]),
                            scored: 1,
                        })
                    })
                    .collect();
                out.push(Measurement {
                    model: name.to_string(),
                    seed,
                    step0,
                    valid_loss,
                    // Two samples per problem, the greedy one's verdict in one of them.
                    sampled: problems
                        .iter()
                        .map(|p| ProblemPass {
                            scored: 2,
                            ..p.clone()
                        })
                        .collect(),
                    problems,
                    seconds: 1.0,
                });
            }
        }
        out
    }

    #[test]
    fn the_report_pairs_models_over_seeds_and_problems() {
        let mut all = measurements(0, [0, 1, 1, 3, 2]);
        all.extend(measurements(1, [0, 1, 1, 3, 2]));
        let report = BaseReport::new(
            "base".into(),
            vec![0, 1],
            all,
            BTreeMap::new(),
            BTreeMap::new(),
            vec!["a reduction".into()],
            Some((2, 0.2)),
        );
        // pass@1 of MultiPL-MoE fine-tuned: 3 of 4 problems per language and seed.
        let table = report.table();
        assert!(table.contains("0.750 (6/8)"), "{table}");
        assert!(table.contains("reduced from the paper: a reduction"));
        // dense-FT vs MultiPL-MoE on the low-resource languages: 3 languages × 4 problems
        // (each averaged over the 2 seeds), MultiPL-MoE passes 2 more problems of 4 in each.
        let v = &report.pass_verdicts[2];
        assert!(
            v.comparison
                .contains("low-resource: dense-FT vs MultiPL-MoE"),
            "{v:?}"
        );
        assert_eq!(v.difference.summary.n, 12);
        assert!((v.difference.summary.mean - 0.5).abs() < 1e-12);
        // Losses: dense-FT (m = 1) − MultiPL-MoE (m = 3) = 0.2 in every seed.
        let l = &report.loss_verdicts[2];
        assert!((l.difference.summary.mean - 0.2).abs() < 1e-9);
        assert_eq!(l.difference.exceeds_two_se, Some(true));
        // Step 0 rows are the step-0 measurements (no problem passes there but dense's).
        assert!(table.contains("at step 0"));
        // Sampled pass@1: half the greedy rate, in its own table and verdicts.
        assert!(
            table.contains("n = 2 samples at temperature 0.2"),
            "{table}"
        );
        assert!(table.contains("0.375 (6/16)"), "{table}");
        let sampled = &report.sampled_verdicts[2];
        assert_eq!(sampled.comparison, v.comparison);
        assert!((sampled.difference.summary.mean - 0.25).abs() < 1e-12);
    }
}
