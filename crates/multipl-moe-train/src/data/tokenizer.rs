//! Tokenization with the `tokenizers` crate: Qwen's `tokenizer.json`, or a byte-level BPE
//! trained on the corpus for the tiny demo.

use std::path::Path;
use std::str::FromStr;

use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

use crate::error::{Result, TrainError};

/// The end-of-document token of Qwen (also used by the demo tokenizer).
pub const EOS: &str = "<|endoftext|>";

/// A tokenizer plus its EOS id.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    eos: u32,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TextTokenizer(vocab = {}, eos = {})",
            self.vocab_size(),
            self.eos
        )
    }
}

fn tok_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Tokenizer(e.to_string())
}

impl TextTokenizer {
    /// Loads a `tokenizer.json` (e.g. Qwen's byte-level BPE). It must know `<|endoftext|>`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| TrainError::Tokenizer(format!("{}: {e}", path.display())))?;
        Self::new(inner)
    }

    fn new(inner: Tokenizer) -> Result<Self> {
        let eos = inner
            .token_to_id(EOS)
            .ok_or_else(|| TrainError::Tokenizer(format!("no `{EOS}` token")))?;
        Ok(Self { inner, eos })
    }

    /// Trains a byte-level BPE of `vocab_size` tokens on `texts` (deterministic).
    pub fn train(texts: &[String], vocab_size: usize) -> Result<Self> {
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .special_tokens(vec![AddedToken::from(EOS, true)])
            .build();
        let mut tokenizer = TokenizerBuilder::<
            BPE,
            tokenizers::NormalizerWrapper,
            ByteLevel,
            tokenizers::PostProcessorWrapper,
            ByteLevel,
        >::new()
        .with_model(BPE::default())
        .with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)))
        .with_decoder(Some(ByteLevel::default()))
        .build()
        .map_err(tok_err)?;
        tokenizer
            .train(&mut trainer, texts.iter())
            .map_err(tok_err)?;
        let json = tokenizer.to_string(false).map_err(tok_err)?;
        Self::new(Tokenizer::from_str(&json).map_err(tok_err)?)
    }

    /// Token ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The EOS id.
    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// Saves the tokenizer as `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner.save(path, false).map_err(tok_err)
    }

    /// Id of a token string, if known.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}
