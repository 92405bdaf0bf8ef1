//! Tokenization with the `tokenizers` crate: a Hugging Face `tokenizer.json` (Qwen's, Llama's,
//! SmolLM2's) with its `tokenizer_config.json`, or a byte-level BPE trained on the corpus for
//! the tiny demo.

use std::path::Path;
use std::str::FromStr;

use serde_json::Value;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

use crate::error::{Result, TrainError};

/// The end-of-document token of Qwen and SmolLM2 (also used by the demo tokenizer); a
/// tokenizer without it takes `tokenizer_config.json`'s `eos_token` (Llama 2: `</s>`).
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
    /// Loads a `tokenizer.json` and, when it is there, the `tokenizer_config.json` beside it,
    /// as transformers 5's `AutoTokenizer` reads them:
    ///
    /// - the special tokens added to a prompt ([`Self::encode_prompt`]) are those of the file's
    ///   post-processor (Llama 2 and 3, TinyLlama: a BOS first; Qwen and SmolLM2: none).
    ///   transformers 5 does not apply `tokenizer_config.json`'s `add_bos_token` /
    ///   `add_eos_token` (only the same arguments given to `from_pretrained`), so neither
    ///   does this (fixtures/tokenizer/bos-cases.json holds transformers' ids);
    /// - the end-of-document id ([`Self::eos`]) is `<|endoftext|>` when the vocabulary has it,
    ///   else `tokenizer_config.json`'s `eos_token` (Llama 2: `</s>`).
    ///
    /// Errors name the file and the key at fault.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| TrainError::Tokenizer(format!("{}: {e}", path.display())))?;
        let config_path = path.with_file_name("tokenizer_config.json");
        let config = if config_path.is_file() {
            TokenizerConfig::read(&config_path)?
        } else {
            TokenizerConfig::default()
        };
        let eos = match inner.token_to_id(EOS) {
            Some(id) => id,
            None => {
                let token = config.eos_token.as_deref().ok_or_else(|| {
                    TrainError::Tokenizer(format!(
                        "{}: no `{EOS}` token, and no `eos_token` in {}",
                        path.display(),
                        config_path.display()
                    ))
                })?;
                inner.token_to_id(token).ok_or_else(|| {
                    TrainError::Tokenizer(format!(
                        "{}: `eos_token` `{token}` is not in the vocabulary of {}",
                        config_path.display(),
                        path.display()
                    ))
                })?
            }
        };
        Ok(Self { inner, eos })
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

    /// Token ids of a prompt as transformers' `tokenizer(prompt)` gives them: the special
    /// tokens of the post-processor added (a BOS for Llama 2 and 3; none for Qwen and
    /// SmolLM2), see [`Self::from_file`].
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, true)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// Token ids of `text` (no special tokens added): training documents, which are joined
    /// with [`Self::eos`].
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

/// The field of `tokenizer_config.json` the tokenizer needs: the EOS token, for a vocabulary
/// without `<|endoftext|>`.
#[derive(Debug, Default)]
struct TokenizerConfig {
    eos_token: Option<String>,
}

impl TokenizerConfig {
    fn read(path: &Path) -> Result<Self> {
        let bad = |reason: String| TrainError::Data {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let root: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        // A special token is a string or an AddedToken object `{"content": ...}`.
        let eos_token = match root.get("eos_token") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => match v.get("content") {
                Some(Value::String(s)) => Some(s.clone()),
                _ => {
                    return Err(bad(format!(
                        "`eos_token` must be a token string or {{\"content\": ...}}, found {v}"
                    )));
                }
            },
        };
        Ok(Self { eos_token })
    }
}
