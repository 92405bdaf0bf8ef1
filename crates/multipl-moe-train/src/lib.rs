//! # multipl-moe-train
//!
//! Trains MultiPL-MoE with burn-train: `L = CE + α·L_bal` (SPEC §4) in a `TrainStep`, AdamW
//! with weight decay and gradient clipping, linear warm-up + cosine decay, gradient
//! accumulation, the SPEC §5 freeze and the TUI dashboard (plain lines off a terminal); runs
//! the main job, generates text and evaluates completions with MultiPL-E.
//!
//! | folder | concern |
//! |---|---|
//! | [`data`] | documents (source trees, JSONL, the embedded corpus), tokenizers, packed batches |
//! | [`training`] | the one training entry point [`train`], the loss, checkpoints, run files |
//! | [`demo`] | the main job: dense vs dense-FT vs MultiPL-MoE, and routing agreement |
//! | [`infer`] | text generation from a prompt |
//! | [`multiple`] | the MultiPL-E harness: problems, completions, the sandbox, pass@k (no burn) |
//!
//! [`files`] (atomic writes), [`progress`] (bars or plain lines) and [`error`] serve them all.

#![warn(missing_docs)]

pub mod data;
pub mod demo;
pub mod error;
pub mod files;
pub mod infer;
pub mod multiple;
pub mod progress;
pub mod training;

pub use error::{Result, TrainError};
pub use training::trainer::{TrainConfig, train};
