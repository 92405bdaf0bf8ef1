//! Typed errors of the MultiPL-E harness.

use std::path::PathBuf;

use thiserror::Error;

/// Why an evaluation cannot start.
#[derive(Debug, Error)]
pub enum EvalError {
    /// No sandbox works here and `--unsafe-no-sandbox` was not given.
    #[error(
        "no sandbox: {reason}; install bubblewrap (`bwrap`), or pass --unsafe-no-sandbox to run \
         untrusted completions with your own permissions"
    )]
    NoSandbox {
        /// What failed: bwrap missing or its self-test.
        reason: String,
    },
    /// A setting is out of range.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidSetting {
        /// The setting (command-line flag or field).
        name: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        reason: String,
    },
    /// Reading or writing a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl EvalError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
