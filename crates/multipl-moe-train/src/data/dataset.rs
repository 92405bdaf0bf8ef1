//! The data pipeline: tokenize, split by whole documents, pack into fixed-length sequences
//! with EOS separators, mix languages, and batch.

use std::collections::BTreeMap;

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use serde::{Deserialize, Serialize};

use multipl_moe_core::rng::Rng;

use crate::data::corpus::{Document, Language};
use crate::data::tokenizer::TextTokenizer;
use crate::error::{Result, TrainError};

/// A tokenized document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedDocument {
    /// Its language.
    pub language: Language,
    /// Its token ids.
    pub ids: Vec<u32>,
}

/// One training sequence of exactly `seq_len` tokens, all from one language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequence {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// The language of its documents.
    pub language: Language,
}

/// Tokenizes every document.
pub fn tokenize(docs: &[Document], tokenizer: &TextTokenizer) -> Result<Vec<TokenizedDocument>> {
    docs.iter()
        .map(|d| {
            Ok(TokenizedDocument {
                language: d.language,
                ids: tokenizer.encode(&d.text)?,
            })
        })
        .collect()
}

/// Deterministic permutation of `0..n` for `seed`.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = Rng(seed);
    for i in (1..n).rev() {
        idx.swap(i, rng.below(i + 1));
    }
    idx
}

/// Splits documents into (train, valid), holding out `valid_fraction` of each language's
/// documents — whole documents, chosen by a seeded shuffle, at least one per language.
pub fn split_documents<T: Clone + HasLanguage>(
    docs: &[T],
    valid_fraction: f64,
    seed: u64,
) -> (Vec<T>, Vec<T>) {
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for lang in Language::ALL {
        let of_lang: Vec<&T> = docs.iter().filter(|d| d.language() == lang).collect();
        if of_lang.is_empty() {
            continue;
        }
        let n_valid =
            ((of_lang.len() as f64 * valid_fraction).round() as usize).clamp(1, of_lang.len());
        for (rank, i) in shuffled(of_lang.len(), seed ^ lang as u64)
            .into_iter()
            .enumerate()
        {
            if rank < n_valid {
                valid.push(of_lang[i].clone())
            } else {
                train.push(of_lang[i].clone())
            }
        }
    }
    (train, valid)
}

/// Anything with a language.
pub trait HasLanguage {
    /// Its language.
    fn language(&self) -> Language;
}

impl HasLanguage for Document {
    fn language(&self) -> Language {
        self.language
    }
}

impl HasLanguage for TokenizedDocument {
    fn language(&self) -> Language {
        self.language
    }
}

/// Packs each language's documents, in order, into sequences of `seq_len` tokens, with `eos`
/// after every document; the tail shorter than `seq_len` is dropped.
pub fn pack(
    docs: &[TokenizedDocument],
    seq_len: usize,
    eos: u32,
) -> BTreeMap<Language, Vec<Sequence>> {
    let mut out = BTreeMap::new();
    for lang in Language::ALL {
        let mut stream = Vec::new();
        for d in docs.iter().filter(|d| d.language == lang) {
            stream.extend_from_slice(&d.ids);
            stream.push(eos);
        }
        let seqs: Vec<Sequence> = stream
            .chunks_exact(seq_len)
            .map(|c| Sequence {
                tokens: c.to_vec(),
                language: lang,
            })
            .collect();
        if !seqs.is_empty() {
            out.insert(lang, seqs);
        }
    }
    out
}

/// The sequences reordered to take one of each language in turn (in [`Language::ALL`]
/// order, each language's own order kept), so that any prefix covers every language.
pub fn interleave_languages(seqs: Vec<Sequence>) -> Vec<Sequence> {
    let mut by_lang: BTreeMap<Language, std::collections::VecDeque<Sequence>> = BTreeMap::new();
    let total = seqs.len();
    for s in seqs {
        by_lang.entry(s.language).or_default().push_back(s);
    }
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        for queue in by_lang.values_mut() {
            out.extend(queue.pop_front());
        }
    }
    out
}

/// A language mix: the share of sequences drawn from each language.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mix {
    /// `(language, weight)`; weights are normalised.
    pub weights: Vec<(Language, f64)>,
}

impl Mix {
    /// Only the high-resource languages, evenly (pre-training of the demo's base model).
    pub fn high_resource() -> Self {
        Self {
            weights: Language::ALL
                .iter()
                .filter(|l| !l.is_low_resource())
                .map(|&l| (l, 1.0))
                .collect(),
        }
    }

    /// `low_share` of the data from the low-resource languages, the rest replayed from the
    /// high-resource ones, each group split evenly.
    pub fn low_resource(low_share: f64) -> Self {
        let weights = Language::ALL
            .iter()
            .map(|&l| {
                (
                    l,
                    if l.is_low_resource() {
                        low_share / 3.0
                    } else {
                        (1.0 - low_share) / 3.0
                    },
                )
            })
            .filter(|(_, w)| *w > 0.0)
            .collect();
        Self { weights }
    }

    /// [`Mix::low_resource`] over the languages `available` only: each group's share is
    /// spread over its languages present. A group with a positive share and no language
    /// present is an error naming the group's languages.
    pub fn low_resource_over(low_share: f64, available: &[Language]) -> Result<Self> {
        let mut weights = Vec::new();
        for (low, share) in [(false, 1.0 - low_share), (true, low_share)] {
            let group: Vec<Language> = Language::ALL
                .into_iter()
                .filter(|l| l.is_low_resource() == low)
                .collect();
            let present: Vec<Language> = group
                .iter()
                .copied()
                .filter(|l| available.contains(l))
                .collect();
            if share <= 0.0 {
                continue;
            }
            if present.is_empty() {
                let names: Vec<&str> = group.iter().map(|l| l.name()).collect();
                return Err(TrainError::NotEnoughData(format!(
                    "low_resource_share = {low_share} asks for {} data ({}), and the corpus has none",
                    if low { "low-resource" } else { "high-resource" },
                    names.join(", ")
                )));
            }
            let w = share / present.len() as f64;
            weights.extend(present.into_iter().map(|l| (l, w)));
        }
        weights.sort_by_key(|(l, _)| *l);
        Ok(Self { weights })
    }

    /// Draws `total` sequences following the mix (cycling through a language's sequences if it
    /// has fewer than its share), shuffled with `seed`.
    pub fn sample(
        &self,
        by_lang: &BTreeMap<Language, Vec<Sequence>>,
        total: usize,
        seed: u64,
    ) -> Result<Vec<Sequence>> {
        let sum: f64 = self.weights.iter().map(|(_, w)| w).sum();
        if sum <= 0.0 {
            return Err(TrainError::Config {
                field: "mix",
                reason: "weights sum to 0".into(),
            });
        }
        let mut out = Vec::with_capacity(total);
        for (lang, w) in &self.weights {
            let n = (total as f64 * w / sum).round() as usize;
            let seqs = by_lang.get(lang).filter(|s| !s.is_empty()).ok_or_else(|| {
                TrainError::NotEnoughData(format!(
                    "no {} sequence for a mix that asks for it",
                    lang.name()
                ))
            })?;
            let order = shuffled(seqs.len(), seed ^ (*lang as u64) << 8);
            out.extend((0..n).map(|i| seqs[order[i % seqs.len()]].clone()));
        }
        let order = shuffled(out.len(), seed);
        Ok(order.into_iter().map(|i| out[i].clone()).collect())
    }
}

/// A batch: tokens `[B, T]` and each row's language index (`Language as usize`).
#[derive(Debug, Clone)]
pub struct LmBatch<B: Backend> {
    /// Token ids.
    pub tokens: Tensor<B, 2, Int>,
    /// Language of each row.
    pub languages: Vec<Language>,
}

/// Stacks sequences into an [`LmBatch`].
#[derive(Debug, Clone, Default)]
pub struct LmBatcher;

impl<B: Backend> Batcher<B, Sequence, LmBatch<B>> for LmBatcher {
    fn batch(&self, items: Vec<Sequence>, device: &B::Device) -> LmBatch<B> {
        let t = items.first().map_or(0, |s| s.tokens.len());
        let ids: Vec<i64> = items
            .iter()
            .flat_map(|s| s.tokens.iter().map(|&x| x as i64))
            .collect();
        LmBatch {
            tokens: Tensor::from_data(TensorData::new(ids, [items.len(), t]), device),
            languages: items.iter().map(|s| s.language).collect(),
        }
    }
}
