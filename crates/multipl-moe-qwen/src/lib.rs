//! # multipl-moe-qwen
//!
//! Makes MultiPL-MoE speak the Hugging Face format in both directions: import of Qwen1.5 /
//! Qwen2 checkpoints and of the Llama family (Llama 2/3, SmolLM2, Mistral without a sliding
//! window; single file or shards; f32, f16, bf16; tied or untied head), upcycling
//! of the dense model into the hybrid MoE (SPEC §5), and export of dense or hybrid models
//! (`docs/FORMAT.md`).

#![warn(missing_docs)]

pub mod error;
pub mod export;
pub mod files;
pub mod freeze;
pub mod hf_config;
pub mod load;
pub mod params;
pub mod tensors;
pub mod upcycle;
pub mod widen;

pub use error::{QwenError, Result};
pub use export::{SIDE_FILES, save_model, save_model_from};
pub use freeze::{FreezePolicy, apply_freeze, trainable_params};
pub use load::{LoadedModel, load_model, load_model_with_notes};
pub use tensors::SaveDtype;
pub use upcycle::{UpcycleOptions, upcycle};
pub use widen::widen_dense_ffn;
