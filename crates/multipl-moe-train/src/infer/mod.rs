//! Inference on text: prompt in, generated text out.

pub mod textgen;
