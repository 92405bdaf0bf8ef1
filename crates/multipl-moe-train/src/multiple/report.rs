//! Executes completions in parallel and scores them: one status per problem, pass@1 per
//! language, as JSON and as a table.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use super::Problem;
use super::exec::{ExecLimits, Status, execute, network_isolation, toolchain};
use crate::corpus::Language;

/// The result of one problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemResult {
    /// Problem name.
    pub name: String,
    /// Language name (`python`, `rust`, ...).
    pub language: String,
    /// How it ended.
    pub status: Status,
    /// Exit code of the failing or last step.
    pub exit_code: Option<i32>,
    /// The start of the failing step's output.
    pub output: String,
}

/// pass@1 of one language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanguageScore {
    /// Language name.
    pub language: String,
    /// Problems whose completion passed.
    pub passed: usize,
    /// Problems evaluated (skipped ones excluded).
    pub total: usize,
    /// `passed / total`.
    pub pass_at_1: f64,
}

/// Everything `multipl-moe eval` writes to `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// One entry per problem, in input order.
    pub results: Vec<ProblemResult>,
    /// pass@1 per evaluated language, in the paper's order.
    pub scores: Vec<LanguageScore>,
    /// Languages skipped, with the reason.
    pub skipped: BTreeMap<String, String>,
    /// Whether programs ran without network (`unshare -rn`).
    pub network_isolated: bool,
}

impl EvalReport {
    /// pass@1 of `language`, if it was evaluated.
    pub fn pass_at_1(&self, language: Language) -> Option<f64> {
        self.scores
            .iter()
            .find(|s| s.language == language.name())
            .map(|s| s.pass_at_1)
    }

    /// The status table: one row per language, one column per status, then pass@1.
    pub fn table(&self) -> String {
        let statuses = [
            Status::Ok,
            Status::CompileError,
            Status::RuntimeError,
            Status::Timeout,
            Status::NoCompletion,
        ];
        let mut out = format!("{:<8}", "language");
        for s in statuses {
            out.push_str(&format!(" {:>14}", s.name()));
        }
        out.push_str(&format!(" {:>8}\n", "pass@1"));
        for score in &self.scores {
            out.push_str(&format!("{:<8}", score.language));
            for s in statuses {
                let n = self
                    .results
                    .iter()
                    .filter(|r| r.language == score.language && r.status == s)
                    .count();
                out.push_str(&format!(" {n:>14}"));
            }
            out.push_str(&format!(
                " {:>8.3}   ({}/{})\n",
                score.pass_at_1, score.passed, score.total
            ));
        }
        for (language, reason) in &self.skipped {
            out.push_str(&format!("{language:<8} skipped: {reason}\n"));
        }
        out
    }
}

/// Runs every problem's `prompt + completion + tests` (completions by problem name) on up to
/// `jobs` threads and scores them. `progress` is called after each problem with
/// `(done, total, result)`.
pub fn evaluate(
    problems: &[Problem],
    completions: &BTreeMap<String, String>,
    limits: ExecLimits,
    jobs: usize,
    progress: impl Fn(usize, usize, &ProblemResult) + Sync,
) -> EvalReport {
    let mut skipped = BTreeMap::new();
    let mut available = BTreeMap::new();
    for p in problems {
        if let Some(lang) = p.lang() {
            available
                .entry(lang)
                .or_insert_with(|| match toolchain(lang) {
                    Ok(()) => true,
                    Err(reason) => {
                        skipped.insert(lang.name().to_string(), reason);
                        false
                    }
                });
        }
    }
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<ProblemResult>>> = Mutex::new(vec![None; problems.len()]);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(problem) = problems.get(i) else {
                        break;
                    };
                    let result = run_problem(problem, completions, &available, limits);
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    progress(n, problems.len(), &result);
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
    let scores = Language::ALL
        .iter()
        .filter_map(|lang| {
            let mine: Vec<_> = results
                .iter()
                .filter(|r| r.language == lang.name() && r.status != Status::Skipped)
                .collect();
            if mine.is_empty() {
                return None;
            }
            let passed = mine.iter().filter(|r| r.status == Status::Ok).count();
            Some(LanguageScore {
                language: lang.name().to_string(),
                passed,
                total: mine.len(),
                pass_at_1: passed as f64 / mine.len() as f64,
            })
        })
        .collect();
    EvalReport {
        results,
        scores,
        skipped,
        network_isolated: network_isolation(),
    }
}

fn run_problem(
    problem: &Problem,
    completions: &BTreeMap<String, String>,
    available: &BTreeMap<Language, bool>,
    limits: ExecLimits,
) -> ProblemResult {
    let lang = problem.lang();
    let result = |status, exit_code, output: String| ProblemResult {
        name: problem.name.clone(),
        language: lang.map_or(problem.language.clone(), |l| l.name().to_string()),
        status,
        exit_code,
        output,
    };
    let Some(lang) = lang.filter(|l| available.get(l).copied().unwrap_or(false)) else {
        return result(Status::Skipped, None, "toolchain missing".into());
    };
    let Some(completion) = completions.get(&problem.name) else {
        return result(Status::NoCompletion, None, String::new());
    };
    let program = format!("{}{}\n{}", problem.prompt, completion, problem.tests);
    let outcome = execute(lang, &program, limits);
    result(outcome.status, outcome.exit_code, outcome.output)
}
