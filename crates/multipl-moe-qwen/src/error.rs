//! Typed errors of the Hugging Face import/export; each names the file, key, shape or field
//! at fault.

use std::path::PathBuf;

use multipl_moe_core::ConfigError;
use thiserror::Error;

/// Why a model directory could not be read or written.
#[derive(Debug, Error)]
pub enum QwenError {
    /// A required file does not exist.
    #[error("missing file {}", .0.display())]
    MissingFile(PathBuf),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A safetensors file is truncated or its header is corrupt.
    #[error("{}: corrupt or truncated safetensors file: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser reported.
        reason: String,
    },
    /// A tensor to be written holds NaN or an infinity (a diverged model, or weights blown
    /// up by a setting): nothing is written.
    #[error("{}: tensor `{key}` holds a non-finite value ({value} at flat index {index}); nothing was written", path.display())]
    NonFinite {
        /// The file that was to be written.
        path: PathBuf,
        /// The tensor's key.
        key: String,
        /// Its first non-finite element's flat index.
        index: usize,
        /// That element.
        value: f32,
    },
    /// A tensor the model needs is in none of the files.
    #[error("missing tensor `{key}` in {}", dir.display())]
    MissingKey {
        /// The safetensors key.
        key: String,
        /// The model directory.
        dir: PathBuf,
    },
    /// A tensor has the wrong shape.
    #[error("tensor `{key}`: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// The safetensors key.
        key: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor's dtype is not f32, f16 or bf16.
    #[error("tensor `{key}` in {}: unsupported dtype {dtype} (expected F32, F16 or BF16)", path.display())]
    UnsupportedDtype {
        /// The safetensors key.
        key: String,
        /// The file.
        path: PathBuf,
        /// The dtype found.
        dtype: String,
    },
    /// A shard listed in `model.safetensors.index.json` is absent.
    #[error("missing shard {} listed in {}", shard.display(), index.display())]
    MissingShard {
        /// The shard file.
        shard: PathBuf,
        /// The index file.
        index: PathBuf,
    },
    /// The output model directory exists and is not empty.
    #[error("{} exists and is not empty; choose a new directory or remove it first", .0.display())]
    OutputExists(PathBuf),
    /// A sharded checkpoint's index and its shards disagree about a key.
    #[error("tensor `{key}`: {reason}")]
    ShardConflict {
        /// The safetensors key.
        key: String,
        /// Which files disagree, and how.
        reason: String,
    },
    /// `config.json` (or the index) is unreadable, lacks a field or contradicts itself.
    #[error("{}: field `{field}`: {reason}", path.display())]
    BadConfig {
        /// The JSON file.
        path: PathBuf,
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The config parsed but describes no valid model.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The files hold tensors that no parameter of the model uses.
    #[error("{}: unused tensors {keys:?}", dir.display())]
    UnusedKeys {
        /// The model directory.
        dir: PathBuf,
        /// Some of the unused keys.
        keys: Vec<String>,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, QwenError>;

/// Wraps an I/O error with its path.
pub fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> QwenError {
    let path = path.into();
    move |source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            QwenError::MissingFile(path)
        } else {
            QwenError::Io { path, source }
        }
    }
}
