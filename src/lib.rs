//! # multipl-moe
//!
//! MultiPL-MoE on Burn. This umbrella crate re-exports the three crates of the workspace and
//! chooses the concrete backend by cargo feature (`ndarray` default, `wgpu`, `metal`,
//! `vulkan`, `cuda`); the library crates stay generic over `B: Backend`.

pub use multipl_moe_core as core;
pub use multipl_moe_qwen as qwen;
pub use multipl_moe_train as train;

pub mod allocator;
pub mod backend;
pub mod host;
