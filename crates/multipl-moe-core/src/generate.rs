//! Autoregressive generation over token ids with the KV cache (or, for checking, full
//! recomputation at every step).

use std::ops::ControlFlow;
use std::time::Instant;

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::cache::ModelCache;
use crate::error::GenerateError;
use crate::model::{CausalLm, Logits};
use crate::sampling::Sampler;

/// Limits of one [`CausalLm::generate`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_new_tokens: usize,
    /// Token ids that end generation (e.g. EOS); they are not returned.
    pub stop_ids: Vec<usize>,
    /// Reuse the KV cache (`true`) or recompute the whole sequence at every step (`false`;
    /// slow, for checking the cache).
    pub use_cache: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            stop_ids: Vec::new(),
            use_cache: true,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_new_tokens` were generated.
    MaxNewTokens,
    /// A token of `stop_ids` was sampled.
    StopToken,
    /// The callback asked to stop (e.g. a stop sequence appeared in the text).
    Callback,
    /// The sequence reached the model's last position.
    ContextFull,
}

/// The result of [`CausalLm::generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// Generated ids, without the prompt and without a final stop id.
    pub tokens: Vec<usize>,
    /// Why it ended.
    pub stop: StopReason,
    /// Prompt length.
    pub prompt_tokens: usize,
    /// Seconds of the first forward (the prompt), logits read back included.
    pub prefill_secs: f64,
    /// Forward passes after the prefill.
    pub decode_steps: usize,
    /// Seconds of those passes.
    pub decode_secs: f64,
}

impl Generated {
    /// Prompt tokens per second of the prefill.
    pub fn prefill_tokens_per_sec(&self) -> f64 {
        rate(self.prompt_tokens, self.prefill_secs)
    }

    /// Generated tokens per second after the prefill.
    pub fn decode_tokens_per_sec(&self) -> f64 {
        rate(self.decode_steps, self.decode_secs)
    }
}

fn rate(n: usize, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

impl<B: Backend> CausalLm<B> {
    /// Generates after `prompt` (batch of one) with [`Self::forward_inference`], calling
    /// `on_token` with every new id as soon as it is chosen; `on_token` may stop generation.
    pub fn generate(
        &self,
        prompt: &[usize],
        options: &GenerateOptions,
        sampler: &mut Sampler,
        mut on_token: impl FnMut(usize) -> ControlFlow<()>,
    ) -> Result<Generated, GenerateError> {
        let vocab = self.vocab_size();
        let max = self.rope.max_positions();
        self.check_prompt(prompt)?;
        let device = self.embed_tokens.weight.device();
        let mut sequence = prompt.to_vec();
        let mut feed = prompt.to_vec();
        let mut cache: Option<ModelCache<B>> = None;
        let mut out = Generated {
            tokens: Vec::new(),
            stop: StopReason::MaxNewTokens,
            prompt_tokens: prompt.len(),
            prefill_secs: 0.0,
            decode_steps: 0,
            decode_secs: 0.0,
        };
        let mut clock = Instant::now();
        for step in 0..options.max_new_tokens {
            if sequence.len() >= max {
                out.stop = StopReason::ContextFull;
                break;
            }
            let input = if options.use_cache { &feed } else { &sequence };
            let ids: Vec<i64> = input.iter().map(|&id| id as i64).collect();
            let tokens =
                Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, input.len()]), &device);
            let past = if options.use_cache {
                cache.take()
            } else {
                None
            };
            let (logits, grown) = self.forward_inference(tokens, past, Logits::Last);
            cache = Some(grown);
            let row = logits
                .reshape([vocab])
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| GenerateError::Read(format!("{e:?}")))?;
            if step == 0 {
                out.prefill_secs = clock.elapsed().as_secs_f64();
                clock = Instant::now();
            } else {
                out.decode_steps += 1;
            }
            let id = sampler.sample(&row);
            if options.stop_ids.contains(&id) {
                out.stop = StopReason::StopToken;
                break;
            }
            out.tokens.push(id);
            sequence.push(id);
            feed = vec![id];
            if on_token(id).is_break() {
                out.stop = StopReason::Callback;
                break;
            }
        }
        out.decode_secs = clock.elapsed().as_secs_f64();
        if out.decode_steps == 0 {
            out.decode_secs = 0.0;
        }
        Ok(out)
    }

    /// A prompt [`Self::generate`] can continue: not empty, every id in the vocabulary, no
    /// longer than the positions RoPE covers.
    fn check_prompt(&self, prompt: &[usize]) -> Result<(), GenerateError> {
        let (vocab, max) = (self.vocab_size(), self.rope.max_positions());
        if prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        if let Some(&id) = prompt.iter().find(|&&id| id >= vocab) {
            return Err(GenerateError::TokenOutOfVocab { id, vocab });
        }
        if prompt.len() > max {
            return Err(GenerateError::PromptTooLong {
                len: prompt.len(),
                max,
            });
        }
        Ok(())
    }
}
