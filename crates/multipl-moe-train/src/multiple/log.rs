//! `completions.jsonl` written as completions are produced, one flushed line each, so an
//! interrupted run loses at most the completion being generated and `--resume` continues it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Completion;
use crate::error::{Result, TrainError};
use crate::files::{same_as_recorded, write_atomic};

/// Files `eval` writes in its output directory; `--overwrite` deletes these and nothing else.
pub const EVAL_ENTRIES: [&str; 3] = ["completions.jsonl", "results.json", "eval.json"];

/// Makes `out` ready for an evaluation, before anything slow starts. A file is refused. An
/// earlier evaluation's files ([`EVAL_ENTRIES`]) are kept with `resume` (generating runs
/// only), deleted with `overwrite`, and otherwise refused: [`TrainError::OutputExists`] when
/// the run could be resumed (`resumable`, a run that generates), else a
/// [`TrainError::Data`] that names `--overwrite`.
pub fn prepare_eval_out(out: &Path, resume: bool, overwrite: bool, resumable: bool) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(TrainError::Data {
            path: out.to_path_buf(),
            reason: "--out must be a directory".into(),
        });
    }
    let earlier: Vec<PathBuf> = EVAL_ENTRIES
        .iter()
        .map(|name| out.join(name))
        .filter(|p| p.exists())
        .collect();
    if resume || earlier.is_empty() {
        return Ok(());
    }
    if !overwrite {
        return Err(if resumable {
            TrainError::OutputExists {
                path: out.to_path_buf(),
            }
        } else {
            TrainError::Data {
                path: out.to_path_buf(),
                reason: "holds an earlier evaluation; pass --overwrite to replace it".into(),
            }
        });
    }
    for path in earlier {
        std::fs::remove_file(&path).map_err(|e| TrainError::io(&path, e))?;
    }
    Ok(())
}

/// The settings a generating evaluation records in `OUT/eval.json`: `--resume` continues only
/// with the same model, tokenizer and problems — compared by the SHA-256 of their contents,
/// not by path, so new weights saved into the same directory are another model and a moved
/// directory is the same one — and the same sampling, so that every completion of a run comes
/// from one configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerationRecord {
    /// SHA-256 of the model's `config.json` and weight files ([`model_sha256`]).
    pub model_sha256: String,
    /// SHA-256 of the tokenizer file.
    pub tokenizer_sha256: String,
    /// SHA-256 of the problems file.
    pub problems_sha256: String,
    /// `--language`, if given.
    pub language: Option<String>,
    /// Completions per problem.
    pub samples: usize,
    /// Most tokens per completion.
    pub max_new_tokens: usize,
    /// Sampling temperature (0: greedy).
    pub temperature: f64,
    /// Nucleus threshold.
    pub top_p: f64,
    /// Sampling seed.
    pub seed: u64,
}

/// SHA-256 (hex) of `files` in order, each as its name, its length and its bytes, read in
/// blocks (a model's weights are not held in memory).
pub fn sha256_files(files: &[PathBuf]) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for path in files {
        let mut file = File::open(path).map_err(|e| TrainError::io(path, e))?;
        let len = file.metadata().map_err(|e| TrainError::io(path, e))?.len();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        hash.update(name.unwrap_or_default().as_bytes());
        hash.update(len.to_le_bytes());
        loop {
            let n = file.read(&mut buf).map_err(|e| TrainError::io(path, e))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
        }
    }
    Ok(format!("{:x}", hash.finalize()))
}

/// SHA-256 of a model directory: `config.json`, `model.safetensors.index.json` if present,
/// and every `*.safetensors` file, by name.
pub fn model_sha256(dir: &Path) -> Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| TrainError::io(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n == "config.json"
                    || n == "model.safetensors.index.json"
                    || n.ends_with(".safetensors")
            })
        })
        .collect();
    files.sort();
    sha256_files(&files)
}

impl GenerationRecord {
    /// Writes `OUT/eval.json`; with `resume`, first checks that it equals the run's record
    /// ([`TrainError::ResumeMismatch`] names the first differing setting).
    pub fn record(&self, out: &Path, resume: bool) -> Result<()> {
        std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
        let path = out.join("eval.json");
        let text = serde_json::to_string_pretty(self).map_err(|e| TrainError::Data {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if resume {
            same_as_recorded(&path, &text)?;
        }
        write_atomic(&path, text.as_bytes())
    }
}

/// An append-only completions file.
#[derive(Debug)]
pub struct CompletionLog {
    path: PathBuf,
    file: File,
}

impl CompletionLog {
    /// Opens `path`. With `resume`, the records already there are kept and returned (a torn
    /// last line, left by an interrupted write, is dropped from the file); without it the file
    /// starts empty.
    pub fn open(path: &Path, resume: bool) -> Result<(Self, Vec<Completion>)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        }
        let mut done = Vec::new();
        if resume && path.is_file() {
            let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
            let complete = text.rfind('\n').map_or(0, |i| i + 1);
            for (i, line) in text[..complete].lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                done.push(serde_json::from_str(line).map_err(|e| TrainError::Data {
                    path: path.to_path_buf(),
                    reason: format!("line {}: {e}", i + 1),
                })?);
            }
            if complete < text.len() {
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| TrainError::io(path, e))?;
                file.set_len(complete as u64)
                    .map_err(|e| TrainError::io(path, e))?;
            }
        } else {
            File::create(path).map_err(|e| TrainError::io(path, e))?;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| TrainError::io(path, e))?;
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
            },
            done,
        ))
    }

    /// Appends one record as a line and flushes it to the OS.
    pub fn append(&mut self, completion: &Completion) -> Result<()> {
        let mut line = serde_json::to_string(completion).map_err(|e| TrainError::Data {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| TrainError::io(&self.path, e))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::CompletionLog;
    use crate::multiple::Completion;
    use crate::multiple::exec::Status;

    #[test]
    fn resume_keeps_complete_lines_and_drops_a_torn_one() {
        let dir = std::env::temp_dir().join(format!("multipl-moe-log-{}", std::process::id()));
        let path = dir.join("completions.jsonl");
        let (mut log, done) = CompletionLog::open(&path, true).expect("open");
        assert!(done.is_empty());
        log.append(&Completion::new("a", "  return 1\n"))
            .expect("append");
        let mut long = Completion::new("b", "");
        long.status = Some(Status::PromptTooLong);
        log.append(&long).expect("append");
        drop(log);
        // An interrupted write leaves half a line.
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("{\"name\": \"c\", \"compl");
        std::fs::write(&path, &text).expect("write");
        let (mut log, done) = CompletionLog::open(&path, true).expect("resume");
        assert_eq!(
            done,
            vec![Completion::new("a", "  return 1\n"), long.clone()]
        );
        log.append(&Completion::new("c", "x")).expect("append");
        let (_, done) = CompletionLog::open(&path, true).expect("resume again");
        assert_eq!(done.len(), 3);
        assert_eq!(done[2], Completion::new("c", "x"));
        // Without --resume the file starts over.
        let (_, done) = CompletionLog::open(&path, false).expect("fresh");
        assert!(done.is_empty());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_earlier_evaluation_is_kept_only_when_asked() {
        use super::{GenerationRecord, prepare_eval_out};
        use crate::error::TrainError;
        let dir = std::env::temp_dir().join(format!("multipl-moe-evalout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        prepare_eval_out(&dir, false, false, true).expect("a missing directory is fine");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        prepare_eval_out(&dir, false, false, true).expect("no earlier evaluation there");
        std::fs::write(dir.join("completions.jsonl"), "{}\n").unwrap();
        let refused = prepare_eval_out(&dir, false, false, true).unwrap_err();
        assert!(
            matches!(refused, TrainError::OutputExists { .. }),
            "{refused}"
        );
        let refused = prepare_eval_out(&dir, false, false, false)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("--overwrite") && !refused.contains("--resume"),
            "{refused}"
        );
        prepare_eval_out(&dir, true, false, true).expect("resume keeps it");
        assert!(dir.join("completions.jsonl").exists());
        prepare_eval_out(&dir, false, true, true).expect("overwrite");
        assert!(!dir.join("completions.jsonl").exists());
        assert_eq!(
            std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
            "mine",
            "--overwrite deletes only the evaluation's own files"
        );
        let file = dir.join("notes.txt");
        assert!(prepare_eval_out(&file, false, true, true).is_err());

        let greedy = GenerationRecord {
            model_sha256: "aa".into(),
            tokenizer_sha256: "bb".into(),
            problems_sha256: "cc".into(),
            language: None,
            samples: 1,
            max_new_tokens: 64,
            temperature: 0.0,
            top_p: 0.95,
            seed: 0,
        };
        greedy.record(&dir, false).expect("first record");
        greedy.record(&dir, true).expect("same settings resume");
        let sampled = GenerationRecord {
            samples: 5,
            temperature: 0.9,
            ..greedy.clone()
        };
        let err = sampled.record(&dir, true).unwrap_err().to_string();
        assert!(err.contains("`samples` was 1 and is now 5"), "{err}");
        let other_model = GenerationRecord {
            model_sha256: "dd".into(),
            ..greedy.clone()
        };
        let err = other_model.record(&dir, true).unwrap_err().to_string();
        assert!(err.contains("`model_sha256`"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod digest_tests {
    use super::{model_sha256, sha256_files};

    /// The digest follows the contents (and names) of the files, not their paths; only the
    /// weight and config files of a model directory count.
    #[test]
    fn digests_follow_contents() {
        let root = std::env::temp_dir().join(format!("multipl-moe-digest-{}", std::process::id()));
        let (a, b) = (root.join("a"), root.join("b"));
        for dir in [&a, &b] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("config.json"), "{}").unwrap();
            std::fs::write(dir.join("model.safetensors"), [1u8, 2, 3]).unwrap();
        }
        std::fs::write(a.join("README.md"), "not part of the model").unwrap();
        assert_eq!(model_sha256(&a).unwrap(), model_sha256(&b).unwrap());
        std::fs::write(b.join("model.safetensors"), [1u8, 2, 4]).unwrap();
        assert_ne!(model_sha256(&a).unwrap(), model_sha256(&b).unwrap());
        // Known value: SHA-256 over name, length (u64 LE) and bytes.
        let file = root.join("x");
        std::fs::write(&file, "abc").unwrap();
        let expected = {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update(b"x");
            h.update(3u64.to_le_bytes());
            h.update(b"abc");
            format!("{:x}", h.finalize())
        };
        assert_eq!(sha256_files(&[file]).unwrap(), expected);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
