//! Executes completions in parallel and scores them: one status per sample, pass@k per
//! language, as JSON and as a table.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::error::EvalError;
use super::exec::{ExecLimits, LimitFlags, Status, TempDir, execute};
use super::passk::{mean_pass_at_k, reported_ks};
use super::sandbox::{Sandbox, SandboxKind};
use super::toolchain::Toolchain;
use super::{Completion, Problem};
use crate::data::corpus::Language;

/// The result of one sample of one problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemResult {
    /// Problem name.
    pub name: String,
    /// Language name (`python`, `rust`, ...).
    pub language: String,
    /// Index of the sample among the problem's completions.
    #[serde(default)]
    pub sample: usize,
    /// How it ended.
    pub status: Status,
    /// Exit code of the failing or last step.
    pub exit_code: Option<i32>,
    /// The start of the failing step's output.
    pub output: String,
}

/// The scores of one language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanguageScore {
    /// Language name.
    pub language: String,
    /// Problems evaluated (skipped ones excluded).
    pub problems: usize,
    /// Samples that passed.
    pub passed: usize,
    /// Samples evaluated.
    pub total: usize,
    /// Mean over problems of pass@1 (`passed / samples` of each problem).
    pub pass_at_1: f64,
    /// pass@k for k = 1, 10, 100 where every problem has at least k samples (`"pass@10"`).
    pub pass_at_k: BTreeMap<String, f64>,
}

/// How long warming a toolchain's shared cache took, before the first problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmUp {
    /// Wall-clock seconds.
    pub seconds: f64,
    /// How the warm-up program ended (anything but `ok` means the cache may be cold).
    pub status: Status,
}

/// Everything `multipl-moe eval` writes to `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// One entry per sample, problems in input order.
    pub results: Vec<ProblemResult>,
    /// Scores per evaluated language, in the paper's order.
    pub scores: Vec<LanguageScore>,
    /// Languages skipped, with the reason.
    pub skipped: BTreeMap<String, String>,
    /// Which sandbox ran the programs.
    pub sandbox: SandboxKind,
    /// Toolchain cache warm-ups by language name.
    #[serde(default)]
    pub warm_up: BTreeMap<String, WarmUp>,
    /// `MultiPL-E` when every limit is the benchmark's, else the flags that changed them.
    #[serde(default)]
    pub rules: String,
    /// The time limits each evaluated language ran under, by language name.
    #[serde(default)]
    pub limits: BTreeMap<String, ExecLimits>,
}

/// Statuses in the table's column order.
const COLUMNS: [Status; 6] = [
    Status::Ok,
    Status::SyntaxError,
    Status::Exception,
    Status::Timeout,
    Status::PromptTooLong,
    Status::NoCompletion,
];

impl EvalReport {
    /// pass@1 of `language`, if it was evaluated.
    pub fn pass_at_1(&self, language: Language) -> Option<f64> {
        self.scores
            .iter()
            .find(|s| s.language == language.name())
            .map(|s| s.pass_at_1)
    }

    /// The status table: one row per language, one column per status, then pass@k.
    pub fn table(&self) -> String {
        let mut out = format!("{:<8}", "language");
        for s in COLUMNS {
            out.push_str(&format!(" {:>15}", s.name()));
        }
        out.push_str(&format!(" {:>8}\n", "pass@1"));
        for score in &self.scores {
            out.push_str(&format!("{:<8}", score.language));
            for s in COLUMNS {
                let n = self
                    .results
                    .iter()
                    .filter(|r| r.language == score.language && r.status == s)
                    .count();
                out.push_str(&format!(" {n:>15}"));
            }
            out.push_str(&format!(
                " {:>8.3}   ({}/{})",
                score.pass_at_1, score.passed, score.total
            ));
            for (k, v) in score.pass_at_k.iter().filter(|(k, _)| *k != "pass@1") {
                out.push_str(&format!("  {k} {v:.3}"));
            }
            out.push('\n');
        }
        for (language, reason) in &self.skipped {
            out.push_str(&format!("{language:<8} skipped: {reason}\n"));
        }
        for score in &self.scores {
            let faults: Vec<&ProblemResult> = self
                .results
                .iter()
                .filter(|r| r.language == score.language && r.status == Status::HarnessError)
                .collect();
            if let Some(first) = faults.first() {
                out.push_str(&format!(
                    "{:<8} harness errors: {} sample(s) not run, excluded from pass@k; first ({}): {}\n",
                    score.language,
                    faults.len(),
                    first.name,
                    first.output.lines().next().unwrap_or_default()
                ));
            }
        }
        for (language, w) in &self.warm_up {
            out.push_str(&format!(
                "{language:<8} cache warm-up: {:.1} s ({})\n",
                w.seconds,
                w.status.name()
            ));
        }
        out.push_str(&format!(
            "sandbox: {}\n",
            match self.sandbox {
                SandboxKind::Bubblewrap => "bubblewrap",
                SandboxKind::None => "none (--unsafe-no-sandbox)",
            }
        ));
        out
    }
}

/// How programs are run.
#[derive(Debug, Clone, Copy)]
pub struct EvalSettings<'a> {
    /// The sandbox every program runs in.
    pub sandbox: &'a Sandbox,
    /// Time limits set by flag over MultiPL-E's per-language limits.
    pub limits: LimitFlags,
    /// Programs run in parallel.
    pub jobs: usize,
    /// Java's classpath (`--java-classpath`); `None` is Debian's javatuples jar.
    pub java_classpath: Option<&'a str>,
}

/// The toolchain of every language the problems use, and the reason for each one missing.
fn find_toolchains(
    problems: &[Problem],
    java_classpath: Option<&str>,
) -> (BTreeMap<Language, Toolchain>, BTreeMap<String, String>) {
    let mut skipped = BTreeMap::new();
    let mut toolchains = BTreeMap::new();
    for lang in problems.iter().filter_map(Problem::lang) {
        if toolchains.contains_key(&lang) || skipped.contains_key(lang.name()) {
            continue;
        }
        match Toolchain::find_with(lang, java_classpath) {
            Ok(t) => {
                toolchains.insert(lang, t);
            }
            Err(reason) => {
                skipped.insert(lang.name().to_string(), reason);
            }
        }
    }
    (toolchains, skipped)
}

/// The samples of `problem` among the completions grouped by name, in file order.
fn samples_of<'c>(
    by_name: &BTreeMap<&str, Vec<&'c Completion>>,
    problem: &Problem,
) -> Vec<&'c Completion> {
    by_name
        .get(problem.name.as_str())
        .into_iter()
        .flatten()
        .filter(|c| c.is_of(problem))
        .copied()
        .collect()
}

/// Runs each used toolchain's warm-up program once (filling a shared cache such as Go's) under
/// the compile limit, and times it.
fn warm_up(
    problems: &[Problem],
    by_name: &BTreeMap<&str, Vec<&Completion>>,
    toolchains: &BTreeMap<Language, Toolchain>,
    settings: &EvalSettings,
    cache: &Path,
) -> BTreeMap<String, WarmUp> {
    let mut warm_up = BTreeMap::new();
    for (lang, toolchain) in toolchains {
        let used = problems
            .iter()
            .any(|p| p.lang() == Some(*lang) && !samples_of(by_name, p).is_empty());
        if let Some(program) = toolchain.warm_up_program().filter(|_| used) {
            let start = Instant::now();
            let compile = settings.limits.limits(*lang).compile;
            let limits = ExecLimits {
                run: compile,
                compile,
                total: None,
            };
            let outcome = execute(toolchain, settings.sandbox, cache, program, limits);
            warm_up.insert(
                lang.name().to_string(),
                WarmUp {
                    seconds: start.elapsed().as_secs_f64(),
                    status: outcome.status,
                },
            );
        }
    }
    warm_up
}

/// Runs every sample's `prompt + completion + "\n" + tests` (a problem's samples are its
/// completions in file order) on up to `settings.jobs` threads and scores them. Toolchains
/// with a shared cache (Go) are warmed once first. `progress` is called after each sample with
/// `(done, total, result)`. Temporary directories that killed evaluations left behind are
/// removed first ([`super::exec::remove_stale_temp_dirs`]).
pub fn evaluate(
    problems: &[Problem],
    completions: &[Completion],
    settings: &EvalSettings,
    progress: impl Fn(usize, usize, &ProblemResult) + Sync,
) -> Result<EvalReport, EvalError> {
    super::exec::remove_stale_temp_dirs();
    let (toolchains, skipped) = find_toolchains(problems, settings.java_classpath);
    let mut by_name: BTreeMap<&str, Vec<&Completion>> = BTreeMap::new();
    for c in completions {
        by_name.entry(c.name.as_str()).or_default().push(c);
    }
    let cache = TempDir::new().map_err(|e| EvalError::io(std::env::temp_dir(), e))?;
    let warm_up = warm_up(problems, &by_name, &toolchains, settings, cache.path());
    let jobs: Vec<(&Problem, usize, Option<&Completion>)> = problems
        .iter()
        .flat_map(|p| match samples_of(&by_name, p).as_slice() {
            [] => vec![(p, 0, None)],
            samples => samples
                .iter()
                .enumerate()
                .map(|(i, c)| (p, i, Some(*c)))
                .collect(),
        })
        .collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<ProblemResult>>> = Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..settings.jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(problem, sample, completion)) = jobs.get(i) else {
                        break;
                    };
                    let result = run_sample(
                        problem,
                        sample,
                        completion,
                        &toolchains,
                        settings,
                        cache.path(),
                    );
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    progress(n, jobs.len(), &result);
                    if let Ok(mut all) = results.lock() {
                        all[i] = Some(result);
                    }
                }
            });
        }
    });
    let results: Vec<ProblemResult> = results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();
    let flags = settings.limits;
    let rules = if flags.is_multipl_e() {
        "MultiPL-E".to_string()
    } else {
        let set = |name: &str, d: Option<std::time::Duration>| {
            d.map(|d| format!("{name} {}", d.as_secs_f64()))
        };
        let changed: Vec<String> = [
            set("--timeout", flags.run),
            set("--compile-timeout", flags.compile),
        ]
        .into_iter()
        .flatten()
        .collect();
        format!("MultiPL-E with {}", changed.join(", "))
    };
    Ok(EvalReport {
        scores: scores(&results),
        results,
        skipped,
        sandbox: settings.sandbox.kind(),
        warm_up,
        rules,
        limits: toolchains
            .keys()
            .map(|lang| (lang.name().to_string(), flags.limits(*lang)))
            .collect(),
    })
}

/// pass@k per language from the samples' statuses.
fn scores(results: &[ProblemResult]) -> Vec<LanguageScore> {
    Language::ALL
        .iter()
        .filter_map(|lang| {
            let mut per_problem: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
            for r in results.iter().filter(|r| {
                r.language == lang.name()
                    && !matches!(r.status, Status::Skipped | Status::HarnessError)
            }) {
                let e = per_problem.entry(r.name.as_str()).or_default();
                e.0 += 1;
                e.1 += usize::from(r.status == Status::Ok);
            }
            let counts: Vec<(usize, usize)> = per_problem.into_values().collect();
            let pass_at_1 = mean_pass_at_k(&counts, 1)?;
            let min_n = counts.iter().map(|&(n, _)| n).min().unwrap_or(0);
            let pass_at_k = reported_ks(min_n)
                .into_iter()
                .filter_map(|k| Some((format!("pass@{k}"), mean_pass_at_k(&counts, k)?)))
                .collect();
            Some(LanguageScore {
                language: lang.name().to_string(),
                problems: counts.len(),
                passed: counts.iter().map(|&(_, c)| c).sum(),
                total: counts.iter().map(|&(n, _)| n).sum(),
                pass_at_1,
                pass_at_k,
            })
        })
        .collect()
}

fn run_sample(
    problem: &Problem,
    sample: usize,
    completion: Option<&Completion>,
    toolchains: &BTreeMap<Language, Toolchain>,
    settings: &EvalSettings,
    cache: &std::path::Path,
) -> ProblemResult {
    let lang = problem.lang();
    let result = |status, exit_code, output: String| ProblemResult {
        name: problem.name.clone(),
        language: problem.language_name(),
        sample,
        status,
        exit_code,
        output,
    };
    let Some(toolchain) = lang.and_then(|l| toolchains.get(&l)) else {
        return result(Status::Skipped, None, "toolchain missing".into());
    };
    let Some(completion) = completion else {
        return result(Status::NoCompletion, None, String::new());
    };
    if let Some(status) = completion.status {
        return result(status, None, String::new());
    }
    let program = format!(
        "{}{}\n{}",
        problem.prompt, completion.completion, problem.tests
    );
    let outcome = execute(
        toolchain,
        settings.sandbox,
        cache,
        &program,
        settings.limits.limits(toolchain.language),
    );
    result(outcome.status, outcome.exit_code, outcome.output)
}

#[cfg(test)]
mod tests {
    use super::{ProblemResult, Status, scores};

    /// A harness error is no sample of the model's: pass@1 counts only the others, like a
    /// skipped one; a timeout or an exception counts as a failure.
    #[test]
    fn harness_errors_are_excluded_from_pass_at_k() {
        let result = |name: &str, status| ProblemResult {
            name: name.into(),
            language: "python".into(),
            sample: 0,
            status,
            exit_code: None,
            output: String::new(),
        };
        let results = [
            result("a", Status::Ok),
            result("b", Status::HarnessError),
            result("c", Status::Exception),
            result("d", Status::Skipped),
        ];
        let score = &scores(&results)[0];
        assert_eq!((score.problems, score.passed, score.total), (2, 1, 2));
        assert_eq!(score.pass_at_1, 0.5);
    }
}
