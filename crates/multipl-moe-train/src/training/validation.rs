//! Validation loss per language.

use std::collections::BTreeMap;

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::backend::Backend;
use multipl_moe_core::CausalLm;

use crate::data::corpus::Language;
use crate::data::dataset::{LmBatcher, Sequence};
use crate::training::lm::LanguageModel;

/// Mean next-token cross-entropy of `model` on `sequences`, per language, in batches of
/// `batch_size`. Prints one progress line per language when `progress` is set.
pub fn loss_per_language<B: Backend>(
    model: &CausalLm<B>,
    sequences: &[Sequence],
    batch_size: usize,
    device: &B::Device,
) -> BTreeMap<Language, f64> {
    let lm = LanguageModel::new(model.clone(), 0.0);
    let mut sums: BTreeMap<Language, (f64, usize)> = BTreeMap::new();
    for chunk in sequences.chunks(batch_size.max(1)) {
        let batch = LmBatcher.batch(chunk.to_vec(), device);
        let out = lm.forward_loss(batch);
        let per_seq = out
            .per_sequence_ce
            .into_data()
            .iter::<f64>()
            .collect::<Vec<_>>();
        for (lang, ce) in out.languages.iter().zip(per_seq) {
            let e = sums.entry(*lang).or_insert((0.0, 0));
            e.0 += ce;
            e.1 += 1;
        }
    }
    sums.into_iter()
        .map(|(l, (s, n))| (l, s / n as f64))
        .collect()
}
