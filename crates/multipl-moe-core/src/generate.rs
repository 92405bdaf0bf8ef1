//! Autoregressive generation over token ids with the KV cache (or, for checking, full
//! recomputation at every step).

use std::ops::ControlFlow;
use std::time::Instant;

use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};

use crate::cache::ModelCache;
use crate::decoder::FeedForward;
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
        let mut out = self.generate_batch(
            &[prompt],
            options,
            std::slice::from_mut(sampler),
            |_, id| on_token(id),
        )?;
        out.pop().ok_or(GenerateError::BatchSize {
            prompts: 1,
            samplers: 0,
        })
    }

    /// Generates after every prompt of `prompts`, decoding the rows together: one forward
    /// per step for the whole batch, with per-row KV caches, samplers (`samplers[i]` draws
    /// row `i`'s tokens), stop ids and stops asked by `on_token(row, id)`. A row that ends
    /// leaves the batch, so the rows still running are all that is computed. Returns one
    /// [`Generated`] per prompt, in order; the timings are those of the row's batch.
    ///
    /// Rows with the same prompt (the samples of one problem) share one prefill. Rows with
    /// different prompts are left-padded to one length with the padding hidden from
    /// attention; a greedy row gives what [`Self::generate`] gives for it alone, up to
    /// rounding. Padded positions count towards the model's last position, so prompts are
    /// padded together only when the longest plus `max_new_tokens` fits the positions (the
    /// others decode in batches of their own): padding never ends a row early. In a model
    /// with hybrid layers the segment level's windows are counted from position 0, so
    /// padding would move them: there each distinct prompt is a batch of its own, run one
    /// after another.
    pub fn generate_batch(
        &self,
        prompts: &[&[usize]],
        options: &GenerateOptions,
        samplers: &mut [Sampler],
        mut on_token: impl FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<Vec<Generated>, GenerateError> {
        if samplers.len() != prompts.len() {
            return Err(GenerateError::BatchSize {
                prompts: prompts.len(),
                samplers: samplers.len(),
            });
        }
        for prompt in prompts {
            self.check_prompt(prompt)?;
        }
        // Rows with one prompt decode together; in a model without hybrid layers, so do the
        // prompts whose padded rows cannot reach the last position (see above).
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for (row, prompt) in prompts.iter().enumerate() {
            match groups.iter_mut().find(|g| prompts[g[0]] == *prompt) {
                Some(group) => group.push(row),
                None => groups.push(vec![row]),
            }
        }
        let hybrid = self
            .layers
            .iter()
            .any(|layer| matches!(layer.mlp, FeedForward::Hybrid(_)));
        if !hybrid {
            let max = self.rope.max_positions();
            let (fit, alone): (Vec<_>, Vec<_>) = groups
                .into_iter()
                .partition(|g| prompts[g[0]].len() + options.max_new_tokens <= max);
            groups = alone;
            let mut merged: Vec<usize> = fit.into_iter().flatten().collect();
            if !merged.is_empty() {
                merged.sort_unstable();
                groups.push(merged);
            }
        }
        let mut out: Vec<Generated> = prompts
            .iter()
            .map(|p| Generated {
                tokens: Vec::new(),
                stop: StopReason::MaxNewTokens,
                prompt_tokens: p.len(),
                prefill_secs: 0.0,
                decode_steps: 0,
                decode_secs: 0.0,
            })
            .collect();
        for group in groups {
            self.decode_rows(prompts, &group, options, samplers, &mut out, &mut on_token)?;
        }
        Ok(out)
    }

    /// One batch of [`Self::generate_batch`]: the rows `group` (indices into `prompts`,
    /// `samplers` and `out`) are decoded in lock step, left-padded when their prompts differ.
    /// The prompts are checked.
    fn decode_rows(
        &self,
        prompts: &[&[usize]],
        group: &[usize],
        options: &GenerateOptions,
        samplers: &mut [Sampler],
        out: &mut [Generated],
        on_token: &mut impl FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Result<(), GenerateError> {
        let vocab = self.vocab_size();
        let max = self.rope.max_positions();
        let device = self.embed_tokens.weight.device();
        let width = group.iter().map(|&r| prompts[r].len()).max().unwrap_or(0);
        let shared = group.windows(2).all(|w| prompts[w[0]] == prompts[w[1]]);
        // Every running row, left-padded with its first token to `width` columns.
        let mut rows: Vec<Row> = group
            .iter()
            .map(|&index| {
                let p = prompts[index];
                let pad = width - p.len();
                let mut ids = vec![p[0]; pad];
                ids.extend_from_slice(p);
                Row { index, pad, ids }
            })
            .collect();
        let padded = rows.iter().any(|r| r.pad > 0);
        let mut cache: Option<ModelCache<B>> = None;
        let clock = Instant::now();
        let mut prefill_end = None;
        for step in 0..options.max_new_tokens {
            let columns = rows[0].ids.len();
            if columns >= max {
                for row in &rows {
                    out[row.index].stop = StopReason::ContextFull;
                }
                break;
            }
            // The prefill of one shared prompt is one row, repeated for every sample after.
            let batch = if step == 0 && shared { 1 } else { rows.len() };
            let fed = if options.use_cache && step > 0 {
                1
            } else {
                columns
            };
            let ids: Vec<i64> = rows[..batch]
                .iter()
                .flat_map(|r| r.ids[columns - fed..].iter().map(|&id| id as i64))
                .collect();
            let tokens =
                Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [batch, fed]), &device);
            let padding = (padded && fed == columns).then(|| {
                let mask: Vec<bool> = rows[..batch]
                    .iter()
                    .flat_map(|r| (0..columns).map(move |c| c < r.pad))
                    .collect();
                Tensor::<B, 2, Bool>::from_data(TensorData::new(mask, [batch, fed]), &device)
            });
            let past = if options.use_cache {
                cache.take()
            } else {
                None
            };
            let (logits, grown) =
                self.forward_inference_padded(tokens, padding, past, Logits::Last);
            if options.use_cache {
                cache = Some(if batch < rows.len() {
                    grown.select_rows(&vec![0; rows.len()])
                } else {
                    grown
                });
            }
            let logits = logits
                .reshape([batch * vocab])
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| GenerateError::Read(format!("{e:?}")))?;
            if step == 0 {
                prefill_end = Some(Instant::now());
            }
            let mut kept = Vec::with_capacity(rows.len());
            for (i, row) in rows.iter_mut().enumerate() {
                let g = &mut out[row.index];
                if step > 0 {
                    g.decode_steps += 1;
                }
                let from = if batch == 1 { 0 } else { i * vocab };
                let id = samplers[row.index].sample(&logits[from..from + vocab]);
                let stopped = if options.stop_ids.contains(&id) {
                    g.stop = StopReason::StopToken;
                    true
                } else {
                    g.tokens.push(id);
                    row.ids.push(id);
                    let asked = on_token(row.index, id).is_break();
                    if asked {
                        g.stop = StopReason::Callback;
                    }
                    asked
                };
                if stopped {
                    finish(g, clock, prefill_end);
                } else {
                    kept.push(i);
                }
            }
            if kept.len() < rows.len() {
                if !kept.is_empty() {
                    cache = cache.map(|c| c.select_rows(&kept));
                }
                let mut i = 0;
                rows.retain(|_| {
                    i += 1;
                    kept.contains(&(i - 1))
                });
            }
            if rows.is_empty() {
                break;
            }
        }
        for row in &rows {
            finish(&mut out[row.index], clock, prefill_end);
        }
        Ok(())
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

/// A running row of [`CausalLm::generate_batch`].
struct Row {
    /// Index into the call's prompts.
    index: usize,
    /// Padding positions before the prompt.
    pad: usize,
    /// Padding, prompt and generated ids.
    ids: Vec<usize>,
}

/// Sets the timings of a row that ended now: the prefill (`clock` to `prefill_end`) and
/// the decoding steps after it.
fn finish(g: &mut Generated, clock: Instant, prefill_end: Option<Instant>) {
    let end = prefill_end.unwrap_or_else(Instant::now);
    g.prefill_secs = end.duration_since(clock).as_secs_f64();
    g.decode_secs = if g.decode_steps == 0 {
        0.0
    } else {
        end.elapsed().as_secs_f64()
    };
}
