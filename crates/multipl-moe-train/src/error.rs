//! Typed errors of the training crate.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why training could not start or continue.
#[derive(Debug, Error)]
pub enum TrainError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A data file is malformed.
    #[error("{}: {reason}", path.display())]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The tokenizer could not be loaded, trained or applied.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The training config is invalid.
    #[error("invalid training config field `{field}`: {reason}")]
    Config {
        /// The field at fault.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A config file has keys its type does not know.
    #[error("{}: unknown key {}", path.display(), keys.join(", unknown key "))]
    UnknownKeys {
        /// The file.
        path: PathBuf,
        /// Each unknown key, dotted, with a hint when a known key is close.
        keys: Vec<String>,
    },
    /// A run directory would be overwritten.
    #[error("{} is not empty; pass --resume to continue the run there, or --overwrite to replace it", path.display())]
    OutputExists {
        /// The run directory.
        path: PathBuf,
    },
    /// `--resume` with a config or corpus other than the run's own.
    #[error("{}: --resume needs the run's own config and data, but `{key}` was {was} and is now {now}", path.display())]
    ResumeMismatch {
        /// The run's record (`run.json` or `data.json`).
        path: PathBuf,
        /// The first differing key, dotted.
        key: String,
        /// Its value in the run's record.
        was: String,
        /// Its value now.
        now: String,
    },
    /// burn-train stopped a segment: its checkpoint could not be written (a full disk, a
    /// removed directory).
    #[error("training stopped at checkpoint {number}: {reason}; the newest complete checkpoint in {} is kept for --resume", dir.display())]
    Stopped {
        /// The checkpoint directory.
        dir: PathBuf,
        /// The checkpoint the segment was to write.
        number: usize,
        /// burn-train's reason.
        reason: String,
    },
    /// Not enough data for the requested split or sequence length.
    #[error("not enough data: {0}")]
    NotEnoughData(String),
    /// The loss became NaN or infinite.
    #[error("non-finite loss {loss} at step {step}; the last good checkpoint is kept in {}", dir.display())]
    NonFiniteLoss {
        /// The loss value.
        loss: f64,
        /// The optimizer step.
        step: usize,
        /// The checkpoint directory.
        dir: PathBuf,
    },
    /// A chart could not be drawn or written.
    #[error("chart {}: {reason}", path.display())]
    Chart {
        /// The chart file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Generation failed.
    #[error(transparent)]
    Generate(#[from] multipl_moe_core::GenerateError),
    /// Model import/export failed.
    #[error(transparent)]
    Qwen(#[from] multipl_moe_qwen::QwenError),
    /// The model config is invalid.
    #[error(transparent)]
    ModelConfig(#[from] multipl_moe_core::ConfigError),
    /// Running completions failed (the sandbox, a toolchain, a temporary directory).
    #[error(transparent)]
    Eval(#[from] crate::multiple::error::EvalError),
}

impl TrainError {
    /// Wraps an I/O error with its path.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, TrainError>;
