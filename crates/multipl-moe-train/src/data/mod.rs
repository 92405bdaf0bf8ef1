//! Data: where documents come from and how they become batches.
//!
//! | module | holds |
//! |---|---|
//! | [`collect`] | a seeded, de-duplicated real-code corpus from the installed toolchains' sources |
//! | [`corpus`] | the six languages, documents from a source tree, JSONL or the embedded corpus |
//! | [`generator`] | the deterministic generator of the embedded corpus |
//! | [`tokenizer`] | Qwen's `tokenizer.json` or a byte-level BPE trained on the corpus |
//! | [`dataset`] | tokenize, split by whole documents, pack with EOS, mix languages, batch |

pub mod collect;
pub mod corpus;
pub mod dataset;
pub mod generator;
pub mod tokenizer;
