//! # multipl-moe-train
//!
//! Trains MultiPL-MoE with burn-train: `L = CE + α·L_bal` (SPEC §4) in a `TrainStep`, AdamW
//! with weight decay and gradient clipping, linear warm-up + cosine decay, gradient
//! accumulation, the SPEC §5 freeze, the TUI dashboard (plain lines off a terminal), and the
//! data pipeline: source trees, JSONL or the embedded corpus, tokenized, split by whole
//! documents, packed with EOS separators and mixed by language.

#![warn(missing_docs)]

pub mod agreement;
pub mod checkpoint;
pub mod corpus;
pub mod data;
pub mod error;
pub mod eval;
pub mod files;
pub mod generator;
pub mod lm;
pub mod loss_log;
pub mod metrics;
pub mod multiple;
pub mod pipeline;
pub mod progress;
pub mod run;
pub mod schedule;
pub mod strict;
pub mod textgen;
pub mod tokenizer;
pub mod train_config;
pub mod trainer;

pub use error::{Result, TrainError};
pub use trainer::{TrainConfig, train};
