//! Problem files: MultiPL-E's JSONL (`name`, `language`, `prompt`, `tests`, `stop_tokens`)
//! and OpenAI's HumanEval JSONL (`task_id`, `prompt`, `test`, `entry_point`; Python), told
//! apart line by line.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Deserialize;

use super::Problem;
use crate::data::corpus::Language;
use crate::error::{Result, TrainError};

/// Stop sequences of the HumanEval paper (Chen et al., 2021) for Python completions.
pub const HUMANEVAL_STOP_TOKENS: [&str; 5] = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"];

/// One record of OpenAI's `HumanEval.jsonl`.
#[derive(Debug, Clone, Deserialize)]
pub struct HumanEvalProblem {
    /// E.g. `HumanEval/0`.
    pub task_id: String,
    /// Signature and docstring.
    pub prompt: String,
    /// Defines `check(candidate)`.
    pub test: String,
    /// The function `check` is called with.
    pub entry_point: String,
}

impl From<HumanEvalProblem> for Problem {
    /// The test is run as HumanEval's harness runs it: `check(entry_point)` after the tests.
    fn from(p: HumanEvalProblem) -> Self {
        Problem {
            name: p.task_id,
            language: "py".into(),
            prompt: p.prompt,
            tests: format!("{}\ncheck({})\n", p.test, p.entry_point),
            stop_tokens: HUMANEVAL_STOP_TOKENS.map(String::from).to_vec(),
        }
    }
}

/// Parses one line of a problem file in either format.
fn parse_line(line: &str) -> std::result::Result<Problem, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    if value.get("task_id").is_some() {
        HumanEvalProblem::deserialize(value)
            .map(Problem::from)
            .map_err(|e| format!("HumanEval record: {e}"))
    } else {
        Problem::deserialize(value).map_err(|e| format!("MultiPL-E record: {e}"))
    }
}

/// Reads problems (either format, see the module documentation), keeping those of
/// `language` (any alias) when given. Malformed lines, unknown languages and duplicate names
/// are errors naming the file, the line and the problem (a file may hold several languages;
/// a problem is its language and name).
pub fn read_problems(path: &Path, language: Option<&str>) -> Result<Vec<Problem>> {
    let data_error = |reason: String| TrainError::Data {
        path: path.to_path_buf(),
        reason,
    };
    let wanted = match language {
        Some(name) => Some(Language::from_name(name).ok_or_else(|| {
            data_error(format!(
                "unknown --language `{name}` (python, java, cpp, rust, go, ruby or their \
                 MultiPL-E codes)"
            ))
        })?),
        None => None,
    };
    let file = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut seen = BTreeSet::new();
    let mut kept = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| TrainError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let p = parse_line(&line).map_err(|e| data_error(format!("line {}: {e}", i + 1)))?;
        let Some(lang) = p.lang() else {
            return Err(data_error(format!(
                "problem `{}`: unknown language `{}`",
                p.name, p.language
            )));
        };
        if !seen.insert((lang, p.name.clone())) {
            return Err(data_error(format!(
                "problem `{}` ({}) appears twice",
                p.name,
                lang.name()
            )));
        }
        if wanted.is_none_or(|w| w == lang) {
            kept.push(p);
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::read_problems;

    /// One file may hold several languages sharing problem names; the same problem twice in
    /// one language is refused, naming it.
    #[test]
    fn a_problem_is_its_language_and_name() {
        let dir = std::env::temp_dir().join(format!("formats-langs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("mixed.jsonl");
        let row = |language: &str| {
            serde_json::json!({"name": "P_0", "language": language, "prompt": "x",
                               "tests": "y", "stop_tokens": []})
            .to_string()
        };
        std::fs::write(&path, [row("py"), row("rb")].join("\n")).expect("write");
        let both = read_problems(&path, None).expect("two languages, one name");
        assert_eq!(both.len(), 2);
        assert_eq!(read_problems(&path, Some("ruby")).expect("ruby").len(), 1);
        std::fs::write(&path, [row("py"), row("python")].join("\n")).expect("write");
        let err = read_problems(&path, None).expect_err("the same problem twice");
        assert!(
            err.to_string().contains("`P_0` (python) appears twice"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
