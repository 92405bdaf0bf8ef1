//! `multipl-moe train`: a run described by a TOML or JSON file, on a real corpus, optionally
//! upcycling a Hugging Face checkpoint with the paper's recipe.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use multipl_moe_core::rng::seeded;
use multipl_moe_core::{CausalLm, MoeConfig, MultiplMoeConfig, QwenConfig};
use multipl_moe_qwen::{
    SIDE_FILES, SaveDtype, UpcycleOptions, load_model, save_model_from, upcycle,
};
use serde::{Deserialize, Serialize};

use crate::data::corpus::{Corpus, Document, Language, read_path};
use crate::data::dataset::{Mix, Sequence, TokenizedDocument, pack, split_documents, tokenize};
use crate::data::tokenizer::TextTokenizer;
use crate::error::{Result, TrainError};
use crate::files::{remove_entry, same_as_recorded, write_atomic};
use crate::training::config::{Range, check_count, check_real};
use crate::training::strict::parse_strict;
use crate::training::trainer::{TrainConfig, TrainTarget, enough_data, train};

fn default_share() -> f64 {
    0.7
}

fn default_valid() -> f64 {
    0.05
}

/// A training run. Every field but `train` may be omitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Optimisation settings (`TrainConfig::paper_recipe()` is the paper's).
    pub train: TrainConfig,
    /// The hybrid MoE to upcycle into; `None` trains the model as it is.
    #[serde(default)]
    pub moe: Option<MoeConfig>,
    /// Architecture of a fresh model when no `--model` is given.
    #[serde(default)]
    pub model: Option<QwenConfig>,
    /// `tokenizer.json`; default: the model directory's, else a BPE trained on the data.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Share of low-resource languages in the mix (the rest replays high-resource data).
    #[serde(default = "default_share")]
    pub low_resource_share: f64,
    /// Held-out fraction of each language's documents.
    #[serde(default = "default_valid")]
    pub valid_fraction: f64,
    /// Training sequences drawn from the mix, at most as many as packed (the default).
    #[serde(default)]
    pub sequences: Option<usize>,
    /// Upcycling options.
    #[serde(default)]
    pub upcycle: UpcycleOptions,
}

impl RunConfig {
    /// Reads a `.toml` or `.json` file; unknown keys and values out of range are errors
    /// naming the key ([`parse_strict`], [`RunConfig::validate`]).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let cfg: Self = parse_strict(path, &text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects values out of range; the error names the key, its range and the value.
    pub fn validate(&self) -> Result<()> {
        self.train.validate()?;
        check_real(
            "low_resource_share",
            self.low_resource_share,
            Range::Closed(0.0, 1.0),
        )?;
        check_real("valid_fraction", self.valid_fraction, Range::Open(0.0, 1.0))?;
        if let Some(n) = self.sequences {
            check_count("sequences", n, 1)?;
        }
        Ok(())
    }
}

/// The newest checkpoint number with any file under `dir/checkpoint` (complete or not; a
/// resumed run checks, see [`crate::training::trainer::train`]).
pub fn last_checkpoint(dir: &Path) -> Option<usize> {
    crate::training::checkpoint::numbers(&dir.join("checkpoint"))
        .first()
        .copied()
}

/// Per-language counts of a run's data, written to `OUT/data.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LanguageCounts {
    /// Documents read.
    pub documents: usize,
    /// Their bytes.
    pub bytes: usize,
    /// Documents in the training split.
    pub train_documents: usize,
    /// Documents held out for validation.
    pub valid_documents: usize,
    /// Tokens of the training split (EOS separators not counted).
    pub train_tokens: usize,
    /// Tokens of the validation split.
    pub valid_tokens: usize,
    /// Packed training sequences available to the mix.
    pub train_sequences: usize,
    /// Packed validation sequences.
    pub valid_sequences: usize,
}

/// What a run read: `OUT/data.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DataReport {
    /// Files skipped: binary, unreadable, or of no known language.
    pub skipped_files: usize,
    /// Paths reached again through a symbolic link (read once).
    pub duplicate_paths: usize,
    /// Languages of the paper with no document.
    pub missing_languages: Vec<Language>,
    /// Counts per language present.
    pub languages: BTreeMap<Language, LanguageCounts>,
    /// SHA-256 of the corpus's documents (each one's language and text, in corpus order): a
    /// resumed run must read the same corpus, not only one of the same size.
    pub corpus_sha256: String,
    /// Devices the batches are split over: the order in which examples are drawn and summed
    /// depends on it, so a run resumes on as many.
    pub devices: usize,
}

impl DataReport {
    /// One line per language, for the terminal.
    pub fn lines(&self) -> String {
        let mut s = String::new();
        for (lang, c) in &self.languages {
            s += &format!(
                "  {:<7}{:>7} documents ({} train, {} valid), {:>10} tokens ({} train, {} valid)\n",
                lang.name(),
                c.documents,
                c.train_documents,
                c.valid_documents,
                c.train_tokens + c.valid_tokens,
                c.train_tokens,
                c.valid_tokens
            );
        }
        if !self.missing_languages.is_empty() {
            let names: Vec<&str> = self.missing_languages.iter().map(|l| l.name()).collect();
            s += &format!("  missing: {} (no document)\n", names.join(", "));
        }
        s
    }
}

/// Entries a run writes in its directory; `--overwrite` deletes these and nothing else.
pub const RUN_ENTRIES: [&str; 9] = [
    "checkpoint",
    "train",
    "valid",
    "model",
    "loss.csv",
    "experiment.log",
    "tokenizer.json",
    "data.json",
    "run.json",
];

/// Makes `out` ready for a run: a missing or empty directory is fine, as is any with
/// `resume`; otherwise `overwrite` deletes the entries of an earlier run ([`RUN_ENTRIES`])
/// and without it the run is refused ([`TrainError::OutputExists`]).
pub fn prepare_out_dir(out: &Path, resume: bool, overwrite: bool) -> Result<()> {
    if out.is_file() {
        return Err(TrainError::OutputExists {
            path: out.to_path_buf(),
        });
    }
    if resume || !multipl_moe_qwen::export::occupied(out) {
        return Ok(());
    }
    if !overwrite {
        return Err(TrainError::OutputExists {
            path: out.to_path_buf(),
        });
    }
    for name in RUN_ENTRIES {
        remove_entry(&out.join(name))?;
    }
    Ok(())
}

/// How `multipl-moe train` treats an existing run directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunMode {
    /// Continue after the newest usable checkpoint.
    pub resume: bool,
    /// Replace an earlier run's files.
    pub overwrite: bool,
}

/// Runs `multipl-moe train`: a fresh model is initialised from the backend seeded with
/// `train.seed`, so the same config, data and machine give the same `loss.csv`.
pub fn run_training<B: AutodiffBackend>(
    config: &Path,
    data: &Path,
    model_dir: Option<&Path>,
    out: &Path,
    mode: RunMode,
    devices: &[B::Device],
) -> Result<()> {
    let device = devices.first().ok_or(TrainError::Config {
        field: "devices",
        reason: "must be >= 1, got 0".into(),
    })?;
    let cfg = RunConfig::from_file(config)?;
    prepare_out_dir(out, mode.resume, mode.overwrite)?;
    let corpus = read_path(data)?;
    let (train_docs, valid_docs) =
        split_documents(&corpus.documents, cfg.valid_fraction, cfg.train.seed);

    let (model_cfg, model) = initial_model::<B>(&cfg, model_dir, device)?;
    let tokenizer = run_tokenizer(&cfg, model_dir, &train_docs, model_cfg.model.vocab_size)?;
    let (model, model_cfg, alpha) = match (&cfg.moe, &model_cfg.moe) {
        (Some(moe), None) => {
            let (m, c) = upcycle(model, &model_cfg, moe, &cfg.upcycle)?;
            (m, c, moe.balance_coef)
        }
        (_, existing) => {
            let alpha = existing.as_ref().map_or(0.0, |m| m.balance_coef);
            (model, model_cfg, alpha)
        }
    };
    let seq = cfg.train.seq_len;
    let train_tok = tokenize(&train_docs, &tokenizer)?;
    let valid_tok = tokenize(&valid_docs, &tokenizer)?;
    let train_packed = pack(&train_tok, seq, tokenizer.eos());
    let valid_packed = pack(&valid_tok, seq, tokenizer.eos());
    let report = data_report(
        &corpus,
        &train_tok,
        &valid_tok,
        &train_packed,
        &valid_packed,
        devices.len(),
    );
    println!(
        "data: {} documents, {} files skipped (binary, unreadable or unknown language), {} paths \
         reached again through links\n{}",
        corpus.documents.len(),
        corpus.skipped,
        corpus.duplicates,
        report.lines()
    );
    let available: Vec<Language> = train_packed.keys().copied().collect();
    let mix = Mix::low_resource_over(cfg.low_resource_share, &available)?;
    let total: usize = train_packed.values().map(Vec::len).sum();
    let drawn = cfg.sequences.map_or(total, |n| n.min(total));
    let train_seqs = mix.sample(&train_packed, drawn, cfg.train.seed)?;
    let valid_seqs: Vec<_> = valid_packed.values().flatten().cloned().collect();
    enough_data(
        train_seqs.len(),
        valid_seqs.len(),
        &cfg.train,
        devices.len(),
    )?;
    // Recorded once the data is known to make a run: a corpus refused above leaves nothing
    // in `out`, so the same command with other data needs no --overwrite.
    record_run(out, &report, &cfg, mode.resume)?;
    let trained = train(
        model,
        alpha,
        train_seqs,
        valid_seqs,
        &cfg.train,
        &TrainTarget::new(out)
            .with_resume(mode.resume)
            .with_devices(devices.to_vec()),
    )?;
    // The run's own export, replaced whole when a resumed run finishes again, with the files
    // that say how to use the model, as `upcycle` exports them.
    tokenizer.save(&out.join("tokenizer.json"))?;
    copy_side_files(&cfg, model_dir, out)?;
    let dir = out.join("model");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| crate::TrainError::io(&dir, e))?;
    }
    save_model_from(&trained, &model_cfg, &dir, SaveDtype::F32, Some(out))?;
    println!("saved the trained model to {}", out.join("model").display());
    Ok(())
}

/// Copies into `out`, for the export, the [`SIDE_FILES`] that describe the model a run starts
/// from: `generation_config.json` from `--model`, and the tokenizer's (`tokenizer_config.json`,
/// `special_tokens_map.json`, ...) from the directory of the tokenizer the run uses (the
/// config's `tokenizer`, else `--model`'s). A run that trains its own tokenizer has none.
fn copy_side_files(cfg: &RunConfig, model_dir: Option<&Path>, out: &Path) -> Result<()> {
    let tokenizer_dir = match &cfg.tokenizer {
        Some(path) => path.parent(),
        None => model_dir,
    };
    for file in SIDE_FILES {
        let source = match file {
            "tokenizer.json" => continue,
            "generation_config.json" => model_dir,
            _ => tokenizer_dir,
        };
        let Some(from) = source.map(|d| d.join(file)).filter(|p| p.is_file()) else {
            continue;
        };
        let bytes = std::fs::read(&from).map_err(|e| TrainError::io(&from, e))?;
        write_atomic(&out.join(file), &bytes)?;
    }
    Ok(())
}

/// The model a run starts from: `--model`'s checkpoint, or a fresh one from `[model]`
/// initialised from the backend seeded with `train.seed`.
fn initial_model<B: AutodiffBackend>(
    cfg: &RunConfig,
    model_dir: Option<&Path>,
    device: &B::Device,
) -> Result<(MultiplMoeConfig, CausalLm<B>)> {
    if let Some(dir) = model_dir {
        return Ok(load_model::<B>(dir, device)?);
    }
    let base = cfg.model.clone().ok_or(TrainError::Config {
        field: "model",
        reason: "needed when no --model is given".into(),
    })?;
    let c = MultiplMoeConfig::new(base);
    let m = seeded::<B, _>(device, cfg.train.seed, || c.init::<B>(device))?;
    Ok((c, m))
}

/// The run's tokenizer: `tokenizer` of the config, else `--model`'s `tokenizer.json`, else a
/// BPE of `vocab_size` tokens trained on the training documents; never larger than the
/// model's vocabulary.
fn run_tokenizer(
    cfg: &RunConfig,
    model_dir: Option<&Path>,
    train_docs: &[Document],
    vocab_size: usize,
) -> Result<TextTokenizer> {
    let path = cfg
        .tokenizer
        .clone()
        .or_else(|| model_dir.map(|d| d.join("tokenizer.json")));
    let tokenizer = match path {
        Some(p) => TextTokenizer::from_file(&p)?,
        None => {
            let texts: Vec<String> = train_docs.iter().map(|d| d.text.clone()).collect();
            TextTokenizer::train(&texts, vocab_size)?
        }
    };
    if tokenizer.vocab_size() > vocab_size {
        return Err(TrainError::Config {
            field: "tokenizer",
            reason: format!(
                "{} tokens > model vocab_size {vocab_size}",
                tokenizer.vocab_size()
            ),
        });
    }
    Ok(tokenizer)
}

/// Writes `data.json` and `run.json` into `out`; a resumed run first checks that both equal
/// what the run recorded ([`same_as_recorded`]).
fn record_run(out: &Path, report: &DataReport, cfg: &RunConfig, resume: bool) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    for (name, record) in [("data.json", pretty(report)), ("run.json", pretty(cfg))] {
        let path = out.join(name);
        if resume {
            same_as_recorded(&path, &record)?;
        }
        write_atomic(&path, record.as_bytes())?;
    }
    Ok(())
}

fn pretty(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Counts of [`DataReport`] from the corpus, its tokenized splits and their packing.
fn data_report(
    corpus: &Corpus,
    train: &[TokenizedDocument],
    valid: &[TokenizedDocument],
    train_packed: &BTreeMap<Language, Vec<Sequence>>,
    valid_packed: &BTreeMap<Language, Vec<Sequence>>,
    devices: usize,
) -> DataReport {
    let mut languages: BTreeMap<Language, LanguageCounts> = BTreeMap::new();
    for (lang, (documents, bytes)) in corpus.counts() {
        let c = languages.entry(lang).or_default();
        c.documents = documents;
        c.bytes = bytes;
    }
    for d in train {
        let c = languages.entry(d.language).or_default();
        c.train_documents += 1;
        c.train_tokens += d.ids.len();
    }
    for d in valid {
        let c = languages.entry(d.language).or_default();
        c.valid_documents += 1;
        c.valid_tokens += d.ids.len();
    }
    for (lang, c) in languages.iter_mut() {
        c.train_sequences = train_packed.get(lang).map_or(0, Vec::len);
        c.valid_sequences = valid_packed.get(lang).map_or(0, Vec::len);
    }
    DataReport {
        skipped_files: corpus.skipped,
        duplicate_paths: corpus.duplicates,
        missing_languages: corpus.missing(),
        languages,
        corpus_sha256: corpus_sha256(&corpus.documents),
        devices,
    }
}

/// SHA-256 over each document's language name and text, NUL-separated, in corpus order.
fn corpus_sha256(documents: &[Document]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for d in documents {
        hash.update(d.language.name().as_bytes());
        hash.update([0]);
        hash.update(d.text.as_bytes());
        hash.update([0]);
    }
    format!("{:x}", hash.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(language: Language, text: &str) -> Document {
        Document {
            language,
            text: text.into(),
        }
    }

    #[test]
    fn the_corpus_digest_sees_text_of_the_same_size_and_the_language() {
        let a = [
            doc(Language::Rust, "fn f() {}"),
            doc(Language::Go, "func f"),
        ];
        let same = [
            doc(Language::Rust, "fn f() {}"),
            doc(Language::Go, "func f"),
        ];
        let other_text = [
            doc(Language::Rust, "fn g() {}"),
            doc(Language::Go, "func f"),
        ];
        let other_language = [
            doc(Language::Ruby, "fn f() {}"),
            doc(Language::Go, "func f"),
        ];
        // Text moved across the document boundary: the same bytes, other documents.
        let moved = [
            doc(Language::Rust, "fn f() {}f"),
            doc(Language::Go, "unc f"),
        ];
        let digest = corpus_sha256(&a);
        assert_eq!(digest, corpus_sha256(&same));
        assert_eq!(digest.len(), 64);
        for other in [&other_text, &other_language, &moved] {
            assert_ne!(digest, corpus_sha256(other));
        }
    }
}
