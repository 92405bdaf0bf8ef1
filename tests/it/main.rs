//! The integration tests of the `multipl-moe` package, in one binary (one link of burn,
//! burn-train and tokenizers instead of one per file). Each module is one concern; `common`
//! holds the shared helpers. Run one module with a filter: `cargo test --test it model::`.

mod common;

mod backend_parity;
mod base_demo;
mod borrowed_weights;
mod cli;
mod elementwise;
mod generate;
mod llama_import;
mod matmul_dispatch;
mod model;
mod moe_reference;
mod multiple;
mod qwen_config;
mod qwen_import;
mod qwen_upcycle;
mod shared_data;
mod tokenizer;
mod train;
