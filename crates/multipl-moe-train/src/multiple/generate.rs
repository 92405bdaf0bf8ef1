//! Generates `samples` completions per problem with a model, appending each to the
//! [`CompletionLog`] as it is produced; problems (and samples) already in the log are skipped,
//! so an interrupted run can be resumed. A prompt longer than the model's context gives a
//! [`Status::PromptTooLong`] record instead of stopping the run.

use burn::tensor::backend::Backend;
use multipl_moe_core::{CausalLm, SamplingConfig, StopReason};

use super::error::EvalError;
use super::exec::Status;
use super::log::CompletionLog;
use super::{Completion, Problem, cut_at_stop};
use crate::data::tokenizer::TextTokenizer;
use crate::error::{Result, TrainError};
use crate::infer::textgen::{SpecialTokens, TextBatchOptions, TextRow, generate_text_batch};

/// How completions are sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleSettings {
    /// Completions per problem.
    pub samples: usize,
    /// Most tokens per completion.
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 is greedy (then `samples` must be 1).
    pub temperature: f64,
    /// Nucleus sampling threshold in (0, 1].
    pub top_p: f64,
    /// Seed; each sample's stream is seeded from it, the problem's name and the sample index.
    pub seed: u64,
}

impl Default for SampleSettings {
    fn default() -> Self {
        Self {
            samples: 1,
            max_new_tokens: 512,
            temperature: 0.0,
            top_p: 0.95,
            seed: 0,
        }
    }
}

impl SampleSettings {
    /// Checks the ranges; the error names the flag.
    pub fn validate(&self) -> std::result::Result<(), EvalError> {
        let invalid = |name, value: String, reason: &str| {
            Err(EvalError::InvalidSetting {
                name,
                value,
                reason: reason.into(),
            })
        };
        if self.samples == 0 {
            return invalid("--samples", "0".into(), "must be at least 1");
        }
        if self.max_new_tokens == 0 {
            return invalid("--max-new-tokens", "0".into(), "must be at least 1");
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return invalid(
                "--temperature",
                self.temperature.to_string(),
                "must be finite and >= 0 (0 = greedy)",
            );
        }
        if self.samples > 1 && self.temperature == 0.0 {
            return invalid(
                "--temperature",
                "0".into(),
                "greedy decoding gives the same completion every time; --samples above 1 \
                 needs a temperature above 0 (MultiPL-E uses 0.2 or 0.8)",
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return invalid("--top-p", self.top_p.to_string(), "must be in (0, 1]");
        }
        Ok(())
    }

    /// The sampling stream of sample `index` of the problem `name`: independent of the order
    /// and the subset of problems, so a resumed run draws what the uninterrupted one would.
    fn sampling(&self, name: &str, index: usize) -> SamplingConfig {
        // FNV-1a of the name.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        SamplingConfig::new()
            .with_temperature(self.temperature)
            .with_top_p(if self.temperature == 0.0 {
                1.0
            } else {
                self.top_p
            })
            .with_seed(self.seed ^ hash ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
}

/// Generates the completions of `problems` not yet in `done` (the records a resumed
/// [`CompletionLog`] returned), appending each to `log`; returns every record of these
/// problems, `done` ones first. Up to `batch_size` completions are decoded together
/// ([`generate_text_batch`]: the samples of a problem share its prefill; several problems
/// share a batch, left-padded, in a model without hybrid layers) and logged when their batch
/// ends. `progress` is called with `(records, total, problem name)`.
#[allow(clippy::too_many_arguments)]
pub fn generate_completions<B: Backend>(
    model: &CausalLm<B>,
    tokenizer: &TextTokenizer,
    special: &SpecialTokens,
    problems: &[Problem],
    settings: &SampleSettings,
    batch_size: usize,
    log: &mut CompletionLog,
    done: Vec<Completion>,
    mut progress: impl FnMut(usize, usize, &str),
) -> Result<Vec<Completion>> {
    // The records of these problems, and how many samples each problem has.
    let mut all: Vec<Completion> = Vec::new();
    let mut have = vec![0usize; problems.len()];
    for c in done {
        if let Some(i) = problems.iter().position(|p| c.is_of(p)) {
            have[i] += 1;
            all.push(c);
        }
    }
    let total = problems.len() * settings.samples;
    // The samples still missing, problem by problem, and whether the prompt fits the
    // context (one past it is recorded as too long without generating).
    let mut pending: Vec<(&Problem, usize, bool)> = Vec::new();
    for (p, &first) in problems.iter().zip(&have) {
        if first >= settings.samples {
            continue;
        }
        let tokens = tokenizer.encode_prompt(&p.prompt)?.len();
        if tokens == 0 {
            // Checked before anything is generated: one empty prompt would stop a batch.
            return Err(TrainError::Data {
                path: p.name.clone().into(),
                reason: format!(
                    "the prompt of this problem ({}) is empty: there is nothing to complete",
                    p.language
                ),
            });
        }
        let fits = tokens <= model.rope.max_positions();
        pending.extend((first..settings.samples).map(|index| (p, index, fits)));
    }
    let options = TextBatchOptions {
        max_new_tokens: settings.max_new_tokens,
        stop_at_eos: true,
    };
    for batch in pending.chunks(batch_size.max(1)) {
        let rows: Vec<TextRow> = batch
            .iter()
            .filter(|(_, _, fits)| *fits)
            .map(|(p, index, _)| TextRow {
                prompt: p.prompt.clone(),
                stop: p.stop_tokens.clone(),
                sampling: settings.sampling(&p.name, *index),
            })
            .collect();
        let mut outs =
            generate_text_batch(model, tokenizer, &rows, &options, special, |_, _| {})?.into_iter();
        for (p, _, fits) in batch {
            let out = if *fits { outs.next() } else { None };
            let record = match out {
                // A prompt that fills the context leaves no room for a completion: as much
                // a prompt too long as one past the context.
                Some(out)
                    if !(out.generated.tokens.is_empty()
                        && out.generated.stop == StopReason::ContextFull) =>
                {
                    Completion::of(p, cut_at_stop(&out.text, &p.stop_tokens))
                }
                _ => Completion {
                    status: Some(Status::PromptTooLong),
                    ..Completion::of(p, "")
                },
            };
            log.append(&record)?;
            all.push(record);
        }
        if let Some((p, _, _)) = batch.last() {
            progress(all.len().min(total), total, &p.name);
        }
    }
    Ok(all)
}
