//! `completions.jsonl` written as completions are produced, one flushed line each, so an
//! interrupted run loses at most the completion being generated and `--resume` continues it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::Completion;
use crate::error::{Result, TrainError};

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
}
