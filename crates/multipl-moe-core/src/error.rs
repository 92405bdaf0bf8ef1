//! Typed errors of the core crate.

use thiserror::Error;

/// A configuration that cannot describe a valid model.
///
/// Every variant names the field at fault so that a user editing a TOML/JSON config file can
/// find it without reading the source.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ConfigError {
    /// A field holds a value outside its valid range.
    #[error("invalid config field `{field}` = {value}: {reason}")]
    InvalidField {
        /// The dotted path of the field, e.g. `moe.segment.window`.
        field: &'static str,
        /// The offending value, formatted.
        value: String,
        /// Why the value is rejected.
        reason: String,
    },
}

impl ConfigError {
    /// Shorthand for [`ConfigError::InvalidField`].
    pub fn field(field: &'static str, value: impl ToString, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Why [`crate::CausalLm::generate`] could not run.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum GenerateError {
    /// The prompt holds no token.
    #[error("the prompt is empty: generation needs at least one token")]
    EmptyPrompt,
    /// A prompt token id is not in the vocabulary.
    #[error("prompt token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfVocab {
        /// The offending id.
        id: usize,
        /// The model's vocabulary size.
        vocab: usize,
    },
    /// The prompt does not fit the model's positions.
    #[error("the prompt has {len} tokens but the model covers {max} positions")]
    PromptTooLong {
        /// Prompt length.
        len: usize,
        /// `max_position_embeddings`.
        max: usize,
    },
    /// Reading logits back from the device failed.
    #[error("reading logits from the device: {0}")]
    Read(String),
    /// A batch needs one sampler per prompt.
    #[error("a batch of {prompts} prompts was given {samplers} samplers (one per prompt)")]
    BatchSize {
        /// Prompts given.
        prompts: usize,
        /// Samplers given.
        samplers: usize,
    },
}
