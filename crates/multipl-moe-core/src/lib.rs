//! # multipl-moe-core
//!
//! Backend-generic Burn modules of MultiPL-MoE (Wang et al., EMNLP 2025 Findings): the dense
//! Qwen2 blocks (SPEC §1), the token-level MoE with a shared expert and the new gate
//! normalisation (SPEC §2), the segment-level expert-choice MoE and its causal variant
//! (SPEC §3, §6), their fusion and the load-balance loss (SPEC §4).
//!
//! Every module is generic over `B: Backend`; this crate never picks a backend.

#![warn(missing_docs)]

pub mod attention;
pub mod balance;
pub mod cache;
pub mod config;
pub mod decoder;
pub mod error;
pub mod experts;
pub mod ffn;
pub mod generate;
pub mod hybrid;
pub mod model;
pub mod norm;
pub mod rng;
pub mod rope;
pub mod routing;
pub mod sampling;
pub mod segment_moe;
pub mod token_moe;

pub use balance::{balance_loss, combined_loss};
pub use cache::{LayerCache, ModelCache};
pub use config::{
    GateScale, ModelType, MoeConfig, MultiplMoeConfig, Pooling, QwenConfig, SegmentMoeConfig,
    SegmentRouting, TokenMoeConfig,
};
pub use error::{ConfigError, GenerateError};
pub use generate::{GenerateOptions, Generated, StopReason};
pub use hybrid::{HybridMoe, HybridMoeConfig, LayerRouting};
pub use model::{CausalLm, CausalLmOutput, Logits};
pub use rope::RopeScaling;
pub use sampling::{Sampler, SamplingConfig};

/// The backend of the unit tests: burn-ndarray on the CPU (as llama-burn's `TestBackend`).
#[cfg(test)]
pub type TestBackend = burn::backend::NdArray;
