//! Text in, text out: tokenizes a prompt, generates with [`CausalLm::generate`], decodes as it
//! goes, streams the text and cuts it at stop sequences.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::Path;

use burn::tensor::backend::Backend;
use multipl_moe_core::{
    CausalLm, GenerateError, GenerateOptions, Generated, Sampler, SamplingConfig,
};
use serde::Deserialize;

use crate::data::tokenizer::TextTokenizer;
use crate::error::TrainError;
use crate::files::read_json;

/// Special tokens that end a completion when the tokenizer knows them (Qwen's chat and
/// document ends), besides the tokenizer's EOS.
pub const END_TOKENS: [&str; 2] = ["<|im_end|>", "<|endoftext|>"];

/// The special tokens of a model: the ids that end generation and the ids left out of the
/// decoded text (as Hugging Face's `skip_special_tokens=True`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Ids that end generation besides the tokenizer's EOS.
    pub stop_ids: Vec<usize>,
    /// Ids never written into the text.
    pub skip_ids: BTreeSet<u32>,
}

/// `generation_config.json`'s `eos_token_id`: one id or a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum EosIds {
    One(usize),
    Many(Vec<usize>),
}

impl SpecialTokens {
    /// Reads the special tokens of a model: [`END_TOKENS`] known to `tokenizer`, every
    /// `eos_token_id` of `generation_config` (when the file exists) and, to skip in decoding,
    /// every added token marked `special` in `tokenizer_json` (Hugging Face's format) plus the
    /// stop ids. Errors name the file and the key.
    pub fn load(
        tokenizer: &TextTokenizer,
        tokenizer_json: &Path,
        generation_config: &Path,
    ) -> crate::Result<Self> {
        let read = read_json::<serde_json::Value>;
        let mut stop_ids: Vec<usize> = END_TOKENS
            .iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .map(|id| id as usize)
            .collect();
        if generation_config.is_file() {
            let config = read(generation_config)?;
            if let Some(eos) = config.get("eos_token_id").filter(|v| !v.is_null()) {
                let ids = match EosIds::deserialize(eos) {
                    Ok(EosIds::One(id)) => vec![id],
                    Ok(EosIds::Many(ids)) => ids,
                    Err(_) => {
                        return Err(TrainError::Data {
                            path: generation_config.to_path_buf(),
                            reason: format!(
                                "`eos_token_id` must be an id or a list of ids, got {eos}"
                            ),
                        });
                    }
                };
                stop_ids.extend(ids);
            }
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let mut skip_ids: BTreeSet<u32> = stop_ids
            .iter()
            .filter_map(|&id| u32::try_from(id).ok())
            .collect();
        let added = read(tokenizer_json)?;
        for token in added
            .get("added_tokens")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let special = token.get("special").and_then(|v| v.as_bool()) == Some(true);
            if let Some(id) = token.get("id").and_then(|v| v.as_u64()).filter(|_| special) {
                skip_ids.extend(u32::try_from(id).ok());
            }
        }
        Ok(Self { stop_ids, skip_ids })
    }
}

/// Settings of [`generate_text`].
#[derive(Debug, Clone, PartialEq)]
pub struct TextGenerateOptions {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Stop sequences: the completion ends before the first occurrence of any of them.
    pub stop: Vec<String>,
    /// Decoding strategy and seed.
    pub sampling: SamplingConfig,
    /// Whether the tokenizer's EOS ends generation.
    pub stop_at_eos: bool,
}

impl Default for TextGenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            stop: Vec::new(),
            sampling: SamplingConfig::new(),
            stop_at_eos: true,
        }
    }
}

/// A completion and how it was produced.
#[derive(Debug, Clone)]
pub struct TextGeneration {
    /// The completion, cut before the first stop sequence.
    pub text: String,
    /// The stop sequence that ended it, if any.
    pub stop_sequence: Option<String>,
    /// Token-level result and timings.
    pub generated: Generated,
}

/// Generates after `prompt` and calls `on_text` with each new piece of the completion, as
/// soon as it can no longer turn into a stop sequence.
pub fn generate_text<B: Backend>(
    model: &CausalLm<B>,
    tokenizer: &TextTokenizer,
    prompt: &str,
    options: &TextGenerateOptions,
    on_text: impl FnMut(&str),
) -> crate::Result<TextGeneration> {
    let special = SpecialTokens::default();
    generate_text_with(model, tokenizer, prompt, options, &special, on_text)
}

/// [`generate_text`] that also stops at `special.stop_ids` (when `options.stop_at_eos`) and
/// leaves `special.skip_ids` out of the text.
pub fn generate_text_with<B: Backend>(
    model: &CausalLm<B>,
    tokenizer: &TextTokenizer,
    prompt: &str,
    options: &TextGenerateOptions,
    special: &SpecialTokens,
    mut on_text: impl FnMut(&str),
) -> crate::Result<TextGeneration> {
    let row = TextRow {
        prompt: prompt.to_string(),
        stop: options.stop.clone(),
        sampling: options.sampling.clone(),
    };
    let batch = TextBatchOptions {
        max_new_tokens: options.max_new_tokens,
        stop_at_eos: options.stop_at_eos,
    };
    let mut out = generate_text_batch(model, tokenizer, &[row], &batch, special, |_, piece| {
        on_text(piece)
    })?;
    out.pop()
        .ok_or(TrainError::Generate(GenerateError::BatchSize {
            prompts: 1,
            samplers: 0,
        }))
}

/// One row of [`generate_text_batch`]: a prompt with its stop sequences and sampling.
#[derive(Debug, Clone, PartialEq)]
pub struct TextRow {
    /// The prompt text.
    pub prompt: String,
    /// Stop sequences: the completion ends before the first occurrence of any of them.
    pub stop: Vec<String>,
    /// Decoding strategy and seed of this row.
    pub sampling: SamplingConfig,
}

/// What the rows of [`generate_text_batch`] share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextBatchOptions {
    /// Most tokens per row.
    pub max_new_tokens: usize,
    /// Whether the tokenizer's EOS and `special.stop_ids` end a row.
    pub stop_at_eos: bool,
}

/// The decoding state of one row of text.
struct RowText {
    stream: StopStream,
    ids: Vec<u32>,
    text: String,
    cut: Option<usize>,
}

/// Generates a completion for every row, decoding the rows together
/// ([`CausalLm::generate_batch`]: one forward per step for all rows still running, the
/// samples of one prompt sharing its prefill), and calls `on_text(row, piece)` with each new
/// piece of a row's completion as soon as it can no longer turn into a stop sequence. Rows
/// end at their own stop sequences, EOS (and `special.stop_ids`) when
/// `options.stop_at_eos`, or `max_new_tokens`; `special.skip_ids` are left out of the text.
pub fn generate_text_batch<B: Backend>(
    model: &CausalLm<B>,
    tokenizer: &TextTokenizer,
    rows: &[TextRow],
    options: &TextBatchOptions,
    special: &SpecialTokens,
    mut on_text: impl FnMut(usize, &str),
) -> crate::Result<Vec<TextGeneration>> {
    let mut prompts: Vec<Vec<usize>> = Vec::with_capacity(rows.len());
    let mut samplers = Vec::with_capacity(rows.len());
    for row in rows {
        let ids = tokenizer.encode_prompt(&row.prompt)?;
        prompts.push(ids.into_iter().map(|id| id as usize).collect());
        samplers.push(Sampler::new(row.sampling.clone())?);
    }
    let token_options = GenerateOptions {
        max_new_tokens: options.max_new_tokens,
        stop_ids: if options.stop_at_eos {
            let mut ids = vec![tokenizer.eos() as usize];
            ids.extend(&special.stop_ids);
            ids
        } else {
            Vec::new()
        },
        use_cache: true,
    };
    let mut states: Vec<RowText> = rows
        .iter()
        .map(|row| RowText {
            stream: StopStream::new(row.stop.clone()),
            ids: Vec::new(),
            text: String::new(),
            cut: None,
        })
        .collect();
    let mut failure = None;
    let prompt_refs: Vec<&[usize]> = prompts.iter().map(Vec::as_slice).collect();
    let generated =
        model.generate_batch(&prompt_refs, &token_options, &mut samplers, |row, id| {
            let id = id as u32;
            if special.skip_ids.contains(&id) {
                return ControlFlow::Continue(());
            }
            let state = &mut states[row];
            state.ids.push(id);
            match tokenizer.decode(&state.ids) {
                Ok(decoded) => state.text = decoded,
                Err(e) => {
                    failure = Some(e);
                    return ControlFlow::Break(());
                }
            }
            let (piece, stop) = state.stream.advance(&state.text);
            on_text(row, piece);
            match stop {
                Some(at) => {
                    state.cut = Some(at);
                    ControlFlow::Break(())
                }
                None => ControlFlow::Continue(()),
            }
        })?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(states
        .into_iter()
        .zip(generated)
        .enumerate()
        .map(|(row, (mut state, generated))| {
            let stop_sequence = state
                .cut
                .and_then(|at| state.stream.stop_at(&state.text, at));
            match state.cut {
                Some(at) => state.text.truncate(at),
                None => on_text(row, state.stream.finish(&state.text)),
            }
            TextGeneration {
                text: state.text,
                stop_sequence,
                generated,
            }
        })
        .collect())
}

/// Streams a growing text while holding back any tail that could still become a stop
/// sequence (and an incomplete UTF-8 character, which byte-level BPE decodes as U+FFFD).
#[derive(Debug, Clone)]
pub struct StopStream {
    stops: Vec<String>,
    emitted: usize,
}

impl StopStream {
    /// A stream that stops at any of `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            emitted: 0,
        }
    }

    /// Given the whole text so far, returns the new text that is safe to show, and the byte
    /// offset of the first stop sequence if one has appeared (the text ends there).
    pub fn advance<'t>(&mut self, text: &'t str) -> (&'t str, Option<usize>) {
        let from = self.emitted.min(text.len());
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            let at = at.max(from);
            self.emitted = at;
            return (&text[from..at], Some(at));
        }
        let mut safe = text.len() - self.held_back(text);
        if text.ends_with('\u{FFFD}') {
            safe = safe.min(text.len() - '\u{FFFD}'.len_utf8());
        }
        if safe <= from || !text.is_char_boundary(from) {
            return ("", None);
        }
        self.emitted = safe;
        (&text[from..safe], None)
    }

    /// The rest of the text once generation has ended without a stop sequence.
    pub fn finish<'t>(&mut self, text: &'t str) -> &'t str {
        let from = self.emitted.min(text.len());
        self.emitted = text.len();
        if text.is_char_boundary(from) {
            &text[from..]
        } else {
            ""
        }
    }

    /// The stop sequence found at byte `at` of `text`.
    fn stop_at(&self, text: &str, at: usize) -> Option<String> {
        self.stops
            .iter()
            .find(|s| text[at..].starts_with(s.as_str()))
            .cloned()
    }

    /// Bytes at the end of `text` that are a proper prefix of a stop sequence.
    fn held_back(&self, text: &str) -> usize {
        self.stops
            .iter()
            .flat_map(|stop| {
                stop.char_indices()
                    .skip(1)
                    .map(|(i, _)| &stop[..i])
                    .filter(|prefix| text.ends_with(prefix))
                    .map(str::len)
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::StopStream;

    /// Feeds `pieces` one after another and returns what was shown and where it stopped.
    fn stream(stops: &[&str], pieces: &[&str]) -> (String, Option<usize>) {
        let mut s = StopStream::new(stops.iter().map(|s| s.to_string()).collect());
        let mut text = String::new();
        let mut shown = String::new();
        for piece in pieces {
            text.push_str(piece);
            let (new, stop) = s.advance(&text);
            shown.push_str(new);
            if stop.is_some() {
                return (shown, stop);
            }
        }
        shown.push_str(s.finish(&text));
        (shown, None)
    }

    #[test]
    fn cuts_at_the_first_stop_sequence_across_pieces() {
        let (shown, stop) = stream(&["\n}", "\nfn"], &["  x + 1", "\n", "}", "\nfn main"]);
        assert_eq!((shown.as_str(), stop), ("  x + 1", Some(7)));
        let (shown, stop) = stream(&["\n}"], &["a\n", "b\n", "}"]);
        assert_eq!((shown.as_str(), stop), ("a\nb", Some(3)));
    }

    #[test]
    fn holds_back_only_possible_stop_prefixes() {
        let mut s = StopStream::new(vec!["\ndef".into()]);
        assert_eq!(s.advance("x\nd"), ("x", None));
        assert_eq!(s.advance("x\ndo"), ("\ndo", None));
        assert_eq!(s.finish("x\ndo"), "");
        let (shown, stop) = stream(&[], &["é", "\u{FFFD}", "a"]);
        assert_eq!((shown.as_str(), stop), ("é\u{FFFD}a", None));
        let mut s = StopStream::new(vec![]);
        assert_eq!(
            s.advance("ab\u{FFFD}"),
            ("ab", None),
            "incomplete UTF-8 held"
        );
    }
}
