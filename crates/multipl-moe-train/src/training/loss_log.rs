//! `loss.csv`: the training loss of every micro-batch, appended as it is computed, so the
//! rows of a segment are on disk before its checkpoint is written; a resumed run cuts the file
//! back to the rows of the checkpoint it resumes from.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};
use crate::files::write_atomic;

/// The header line of `loss.csv`.
pub const HEADER: &str = "micro_batch,loss,balance_loss";

/// An open `loss.csv`, appended to one row per micro-batch.
#[derive(Debug)]
pub struct LossLog {
    path: PathBuf,
    file: std::fs::File,
    rows: usize,
    error: Option<std::io::Error>,
}

/// The complete rows of `path` (lines ended by a newline, after the header); a missing file
/// has none.
pub fn complete_rows(path: &Path) -> Result<Vec<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io(path, e)),
    };
    // A kill in the middle of a row leaves it without its newline: not a row.
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end + 1],
        None => "",
    };
    Ok(complete
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// One row of `loss.csv`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossRow {
    /// Micro-batch number, from 1.
    pub micro_batch: usize,
    /// `L = CE + α·L_bal`.
    pub loss: f64,
    /// `L_bal`, absent for a dense model.
    pub balance_loss: Option<f64>,
}

/// The complete rows of a `loss.csv`, parsed.
///
/// # Errors
/// The file cannot be read, or a row is not `micro_batch,loss[,balance_loss]` (the error
/// names the file and the row).
pub fn read_loss_csv(path: &Path) -> Result<Vec<LossRow>> {
    complete_rows(path)?
        .iter()
        .map(|row| {
            let bad = || TrainError::Data {
                path: path.to_path_buf(),
                reason: format!("row {row:?} is not micro_batch,loss[,balance_loss]"),
            };
            let mut fields = row.split(',');
            let micro_batch = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
            let loss = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
            let balance_loss = match fields.next() {
                None | Some("") => None,
                Some(f) => Some(f.parse().map_err(|_| bad())?),
            };
            Ok(LossRow {
                micro_batch,
                loss,
                balance_loss,
            })
        })
        .collect()
}

impl LossLog {
    /// Rewrites `path` with its first `keep` rows (atomically) and opens it for appending.
    /// Fewer than `keep` rows on disk is an error: the caller resumes from an earlier
    /// checkpoint instead.
    pub fn open(path: &Path, keep: usize) -> Result<Self> {
        let rows = complete_rows(path)?;
        if rows.len() < keep {
            return Err(TrainError::Data {
                path: path.to_path_buf(),
                reason: format!("{} rows, {keep} needed", rows.len()),
            });
        }
        let mut text = format!("{HEADER}\n");
        for row in &rows[..keep] {
            text.push_str(row);
            text.push('\n');
        }
        write_atomic(path, text.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| TrainError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            rows: keep,
            error: None,
        })
    }

    /// Appends one micro-batch's loss `L = CE + α·L_bal` and its `L_bal` (empty for a dense
    /// model) as row `rows + 1` in one write; the first failure is kept for
    /// [`LossLog::check`].
    pub fn append(&mut self, loss: f64, balance_loss: Option<f64>) {
        if self.error.is_some() {
            return;
        }
        let balance = balance_loss.map(|b| b.to_string()).unwrap_or_default();
        let line = format!("{},{loss},{balance}\n", self.rows + 1);
        match self.file.write_all(line.as_bytes()) {
            Ok(()) => self.rows += 1,
            Err(e) => self.error = Some(e),
        }
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Syncs the file and reports the first write error, if any.
    pub fn check(&mut self) -> Result<()> {
        if let Some(e) = self.error.take() {
            return Err(TrainError::io(&self.path, e));
        }
        self.file
            .sync_data()
            .map_err(|e| TrainError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_row_is_not_a_row_and_open_cuts_to_keep() {
        let dir = std::env::temp_dir().join(format!("multipl-moe-losslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("loss.csv");
        std::fs::write(
            &path,
            "micro_batch,loss,balance_loss\n1,2.5,\n2,2.25,\n3,2.",
        )
        .unwrap();
        assert_eq!(complete_rows(&path).unwrap(), vec!["1,2.5,", "2,2.25,"]);
        assert!(LossLog::open(&path, 3).is_err(), "only two complete rows");
        let mut log = LossLog::open(&path, 1).unwrap();
        log.append(0.5, Some(1.25));
        log.append(0.25, None);
        log.check().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "micro_batch,loss,balance_loss\n1,2.5,\n2,0.5,1.25\n3,0.25,\n"
        );
        let rows = read_loss_csv(&path).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[1].loss, rows[1].balance_loss), (0.5, Some(1.25)));
        assert_eq!(rows[2].balance_loss, None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
