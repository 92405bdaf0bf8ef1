//! A MultiPL-E harness: problems in MultiPL-E's or OpenAI HumanEval's format
//! ([`formats`]), completions generated ([`generate`]) or read and cut at the problem's stop
//! tokens, executed in a [`sandbox`] with each language's [`toolchain`] ([`exec`]) and scored
//! with the unbiased pass@k estimator ([`passk`], [`report`]).
//!
//! **pass@k** is Chen et al. (2021)'s estimator over `n` samples per problem; with one greedy
//! sample per problem pass@1 is the fraction of problems whose completion makes
//! `prompt + completion + tests` compile and exit with status 0 within the time limit.
//! MultiPL-E's published figures use 200 samples at temperature 0.2 or 0.8.

pub mod error;
pub mod exec;
pub mod formats;
pub mod generate;
pub mod log;
pub mod passk;
pub mod process;
pub mod report;
pub mod sandbox;
pub mod toolchain;

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::corpus::Language;
use crate::error::{Result, TrainError};
use crate::files::write_atomic;
use exec::Status;

pub use formats::read_problems;

/// One MultiPL-E problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Unique name, e.g. `HumanEval_0_has_close_elements`.
    pub name: String,
    /// MultiPL-E language code (`py`, `java`, `cpp`, `rs`, `go_test.go`, `rb`) or name.
    pub language: String,
    /// The prompt: signature, doc comment, the start of the body.
    pub prompt: String,
    /// The test harness appended after the completion.
    pub tests: String,
    /// Generation stops at the first of these.
    pub stop_tokens: Vec<String>,
}

impl Problem {
    /// The language, if it is one of the six.
    pub fn lang(&self) -> Option<Language> {
        Language::from_name(&self.language)
    }

    /// The language's name (`python`, `rust`, ...), or the file's code when unknown.
    pub fn language_name(&self) -> String {
        self.lang()
            .map_or(self.language.clone(), |l| l.name().to_string())
    }
}

/// One completion (one sample of a problem), a line of `completions.jsonl`. A problem has as
/// many lines as samples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The problem's name.
    pub name: String,
    /// The problem's language (any name or MultiPL-E code of it). MultiPL-E's files of
    /// different languages share problem names, so a run over several languages needs it
    /// for a name that more than one language has; generated records always carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The text generated after the prompt.
    pub completion: String,
    /// Set when no completion could be generated ([`Status::PromptTooLong`]); the sample then
    /// counts as a failure with this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

impl Completion {
    /// A generated completion.
    pub fn new(name: impl Into<String>, completion: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            language: None,
            completion: completion.into(),
            status: None,
        }
    }

    /// A completion of `problem`, recording its name and language.
    pub fn of(problem: &Problem, completion: impl Into<String>) -> Self {
        Self {
            language: Some(problem.language_name()),
            ..Self::new(&problem.name, completion)
        }
    }

    /// Whether this is a sample of `problem`: the same name and, when the record names a
    /// language, the same language.
    pub fn is_of(&self, problem: &Problem) -> bool {
        self.name == problem.name
            && self
                .language
                .as_deref()
                .is_none_or(|l| Language::from_name(l).is_some_and(|l| problem.lang() == Some(l)))
    }
}

/// Gives every record of `completions` the language of its problem among `problems`, and
/// checks that each names one: a record with no `language` whose name several languages
/// share, a language no one knows, or a name (in that language) no problem has is an error
/// naming the records (up to five).
pub fn assign_languages(
    problems: &[Problem],
    completions: &mut [Completion],
) -> std::result::Result<(), String> {
    let mut by_name: std::collections::BTreeMap<&str, Vec<&Problem>> = Default::default();
    for p in problems {
        by_name.entry(p.name.as_str()).or_default().push(p);
    }
    let (mut unknown, mut ambiguous) = (
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    );
    for c in completions.iter_mut() {
        if let Some(l) = c
            .language
            .as_deref()
            .filter(|l| Language::from_name(l).is_none())
        {
            return Err(format!(
                "completion `{}` names the unknown language `{l}` (python, java, cpp, rust, go, \
                 ruby or their MultiPL-E codes)",
                c.name
            ));
        }
        let candidates = by_name.get(c.name.as_str()).map_or(&[][..], Vec::as_slice);
        let matching: Vec<&&Problem> = candidates.iter().filter(|p| c.is_of(p)).collect();
        match matching.as_slice() {
            [one] => c.language = Some(one.language_name()),
            [] => {
                let shown = match &c.language {
                    Some(l) => format!("`{}` ({l})", c.name),
                    None => format!("`{}`", c.name),
                };
                unknown.insert(shown);
            }
            several => {
                ambiguous.insert(format!(
                    "`{}` ({})",
                    c.name,
                    several
                        .iter()
                        .map(|p| p.language.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    let list = |names: Vec<String>| {
        let more = if names.len() > 5 { ", ..." } else { "" };
        format!(
            "{}{more}",
            names.into_iter().take(5).collect::<Vec<_>>().join(", ")
        )
    };
    if !unknown.is_empty() {
        return Err(format!(
            "{} completion name(s) match no problem: {}",
            unknown.len(),
            list(unknown.into_iter().collect())
        ));
    }
    if !ambiguous.is_empty() {
        return Err(format!(
            "{} completion name(s) belong to problems of several languages; give each record \
             a \"language\": {}",
            ambiguous.len(),
            list(ambiguous.into_iter().collect())
        ));
    }
    Ok(())
}

/// Cuts `text` before the first occurrence of any stop token. Idempotent: a cut text contains
/// no stop token.
pub fn cut_at_stop(text: &str, stop_tokens: &[String]) -> String {
    let end = stop_tokens
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
        .unwrap_or(text.len());
    text[..end].to_string()
}

/// The first `limit` problems of each language, in their order (`eval --limit`, the main
/// job's problems per language).
pub fn first_per_language(problems: &[Problem], limit: usize) -> Vec<Problem> {
    let mut kept: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    problems
        .iter()
        .filter(|p| {
            let n = kept.entry(p.language_name()).or_default();
            *n += 1;
            *n <= limit
        })
        .cloned()
        .collect()
}

/// Reads JSONL records; the error names the file and the line.
pub fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let file = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| TrainError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|e| TrainError::Data {
            path: path.to_path_buf(),
            reason: format!("line {}: {e}", i + 1),
        })?;
        out.push(record);
    }
    Ok(out)
}

/// Writes records as JSONL through a temporary file renamed into place.
pub fn write_jsonl<T: Serialize>(path: &Path, records: &[T]) -> Result<()> {
    let mut text = String::new();
    for r in records {
        let line = serde_json::to_string(r).map_err(|e| TrainError::Data {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        text.push_str(&line);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}
