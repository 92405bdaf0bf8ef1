//! A MultiPL-E pass@1 harness: problems in MultiPL-E's prompt format, one greedy completion
//! per problem cut at the first stop token, executed with each language's toolchain.
//!
//! **pass@1 here** is the fraction of a language's problems whose single completion makes
//! `prompt + completion + tests` compile and exit with status 0 within the time limit. With
//! one sample per problem, the unbiased pass@k estimator of Chen et al. (2021) reduces to
//! this fraction; MultiPL-E's published figures use 200 samples at temperature 0.2 or 0.8,
//! so greedy pass@1 is comparable in spirit, not digit for digit.

pub mod exec;
pub mod report;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::corpus::Language;
use crate::error::{Result, TrainError};
use crate::files::write_atomic;

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
}

/// One completion, as MultiPL-E's `completions.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The problem's name.
    pub name: String,
    /// The text generated after the prompt.
    pub completion: String,
}

/// Cuts `text` before the first occurrence of any stop token.
pub fn cut_at_stop(text: &str, stop_tokens: &[String]) -> String {
    let end = stop_tokens
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
        .unwrap_or(text.len());
    text[..end].to_string()
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

/// Reads problems, keeping those of `language` (any alias) when given. Unknown languages and
/// duplicate names are errors naming the problem.
pub fn read_problems(path: &Path, language: Option<&str>) -> Result<Vec<Problem>> {
    let wanted = match language {
        Some(name) => Some(Language::from_name(name).ok_or_else(|| TrainError::Data {
            path: path.to_path_buf(),
            reason: format!(
                "unknown --language `{name}` (python, java, cpp, rust, go, ruby or their \
                 MultiPL-E codes)"
            ),
        })?),
        None => None,
    };
    let problems: Vec<Problem> = read_jsonl(path)?;
    let mut seen = BTreeMap::new();
    let mut kept = Vec::new();
    for p in problems {
        let Some(lang) = p.lang() else {
            return Err(TrainError::Data {
                path: path.to_path_buf(),
                reason: format!("problem `{}`: unknown language `{}`", p.name, p.language),
            });
        };
        if seen.insert(p.name.clone(), ()).is_some() {
            return Err(TrainError::Data {
                path: path.to_path_buf(),
                reason: format!("problem `{}` appears twice", p.name),
            });
        }
        if wanted.is_none_or(|w| w == lang) {
            kept.push(p);
        }
    }
    Ok(kept)
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
