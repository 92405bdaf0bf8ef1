//! The main job (README command 1), the paper's claim in miniature: (a) pre-train a small
//! dense model mostly on the high-resource languages, (b) fine-tune a copy densely on a mostly
//! low-resource mix with replay, (b′) the same with the FFNs widened so that as many parameters
//! train as in (c), (c) upcycle the pre-trained model to MultiPL-MoE and train it on the same
//! mix with the SPEC §5 freeze; then compare validation loss per language, over one or more
//! seeds, on the embedded corpus or a real one ([`crate::data::collect`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use multipl_moe_core::rng::seeded;
use multipl_moe_core::{CausalLm, MoeConfig, MultiplMoeConfig, QwenConfig};
use multipl_moe_qwen::{
    FreezePolicy, SaveDtype, UpcycleOptions, save_model_from, trainable_params, upcycle,
    widen_dense_ffn,
};
use serde::{Deserialize, Serialize};

use crate::data::corpus::{Corpus, Document, Language, read_path};
use crate::data::dataset::{Mix, Sequence, pack, split_documents, tokenize};
use crate::data::generator::embedded;
use crate::data::tokenizer::TextTokenizer;
use crate::demo::report::{DemoReport, MODEL_DIRS, MODELS, SeedLosses, write_outputs};
use crate::error::{Result, TrainError};
use crate::files::remove_entry;
use crate::training::trainer::{TrainConfig, TrainTarget, train};
use crate::training::validation::loss_per_language;

/// Settings of the demo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoConfig {
    /// Generated documents per language (embedded corpus only).
    pub documents_per_language: usize,
    /// BPE vocabulary size.
    pub vocab_size: usize,
    /// Held-out fraction of each language's documents.
    pub valid_fraction: f64,
    /// Most validation sequences per language (0: all), so that evaluating four models per
    /// seed stays short on a large corpus.
    pub max_valid_per_language: usize,
    /// The dense model (its vocabulary is set from the tokenizer).
    pub model: QwenConfig,
    /// The hybrid MoE of stage (c).
    pub moe: MoeConfig,
    /// Stage (a) settings.
    pub pretrain: TrainConfig,
    /// Stage (a) sequences.
    pub pretrain_sequences: usize,
    /// Stages (b), (b′) and (c) settings (freeze policies are set per stage).
    pub finetune: TrainConfig,
    /// Stages (b), (b′) and (c) sequences.
    pub finetune_sequences: usize,
    /// Share of low-resource data in the fine-tuning mix (the rest is replay).
    pub low_resource_share: f64,
    /// Share of low-resource data in pre-training: small, as for a general code LLM that has
    /// seen little Rust/Go/Ruby (0 would leave their token embeddings untrained, and the
    /// SPEC §5 freeze keeps embeddings frozen).
    pub pretrain_low_resource_share: f64,
}

impl DemoConfig {
    /// The default demo on the embedded corpus: about 3 minutes on 2 CPU cores with ndarray.
    pub fn tiny() -> Self {
        let mut moe = MoeConfig::paper().with_router_init_std(0.02);
        moe.segment.window = 16;
        Self {
            documents_per_language: 300,
            vocab_size: 512,
            valid_fraction: 0.1,
            max_valid_per_language: 0,
            model: QwenConfig::new(512, 128, 256, 3, 4, 2).with_max_position_embeddings(256),
            moe,
            pretrain: TrainConfig {
                lr: 3e-3,
                epochs: 1,
                ..TrainConfig::tiny()
            },
            pretrain_sequences: 6400,
            finetune: TrainConfig {
                lr: 2e-3,
                warmup_steps: 10,
                epochs: 1,
                ..TrainConfig::tiny()
            },
            finetune_sequences: 4800,
            low_resource_share: 0.7,
            pretrain_low_resource_share: 0.1,
        }
    }

    /// The demo on a real-code corpus (`demo --data DIR`): a d = 64 model pre-trained on
    /// 92 % high-resource code, then fine-tuned on 90 % low-resource code with 10 % replay,
    /// long enough for dense fine-tuning to forget; about 8 minutes per seed on 2 cores.
    pub fn real_code() -> Self {
        let mut moe = MoeConfig::paper().with_router_init_std(0.02);
        moe.segment.window = 16;
        let base = TrainConfig {
            seq_len: 128,
            batch_size: 8,
            epochs: 1,
            ..TrainConfig::tiny()
        };
        Self {
            documents_per_language: 0,
            vocab_size: 2048,
            valid_fraction: 0.1,
            max_valid_per_language: 96,
            model: QwenConfig::new(2048, 64, 128, 2, 4, 2).with_max_position_embeddings(256),
            moe,
            pretrain: TrainConfig {
                lr: 3e-3,
                warmup_steps: 50,
                ..base.clone()
            },
            pretrain_sequences: 24_000,
            finetune: TrainConfig {
                lr: 2e-3,
                warmup_steps: 20,
                ..base
            },
            finetune_sequences: 4_800,
            low_resource_share: 0.9,
            pretrain_low_resource_share: 0.08,
        }
    }
}

/// Where the demo's documents come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DemoData {
    /// The embedded generator ([`embedded`]).
    Embedded,
    /// A source tree or JSONL file ([`read_path`]), e.g. made by `multipl-moe corpus`.
    Path(PathBuf),
}

pub(crate) fn log(msg: &str) {
    println!("[demo] {msg}");
}

/// The tokenized data every seed shares: the split, the tokenizer, the packed sequences.
pub(crate) struct Prepared {
    pub(crate) tokenizer: TextTokenizer,
    pub(crate) train: BTreeMap<Language, Vec<Sequence>>,
    pub(crate) valid: BTreeMap<Language, Vec<Sequence>>,
}

/// How [`prepare`] gets its tokenizer.
pub(crate) enum TokenizerSource {
    /// A byte-level BPE of this many tokens trained on the training split, saved as
    /// `tokenizer.json` in the output directory.
    Train(usize),
    /// A pretrained model's own tokenizer.
    Given(Box<TextTokenizer>),
}

/// How [`prepare`] splits and packs the corpus.
pub(crate) struct Split {
    /// Held-out fraction of each language's documents.
    pub(crate) valid_fraction: f64,
    /// Most validation sequences per language (0: all).
    pub(crate) max_valid_per_language: usize,
    /// Tokens per packed sequence.
    pub(crate) seq_len: usize,
}

fn load(data: &DemoData, documents_per_language: usize) -> Result<Corpus> {
    let corpus = match data {
        DemoData::Embedded => embedded(documents_per_language),
        DemoData::Path(path) => read_path(path)?,
    };
    let missing = corpus.missing();
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|l| l.name()).collect();
        return Err(TrainError::NotEnoughData(format!(
            "the demo compares all six languages; the corpus has no {} document",
            names.join(", no ")
        )));
    }
    Ok(corpus)
}

/// Reads the corpus (`documents_per_language` applies to the embedded one), splits its
/// documents into training and validation (seed 7), gets the tokenizer and packs both splits.
pub(crate) fn prepare(
    data: &DemoData,
    documents_per_language: usize,
    tokenizer: TokenizerSource,
    split: &Split,
    out: &Path,
) -> Result<Prepared> {
    let corpus = load(data, documents_per_language)?;
    let (train_docs, valid_docs): (Vec<Document>, Vec<Document>) =
        split_documents(&corpus.documents, split.valid_fraction, 7);
    log(&format!(
        "corpus: {} documents ({} train, {} valid), 6 languages",
        corpus.documents.len(),
        train_docs.len(),
        valid_docs.len()
    ));
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let tokenizer = match tokenizer {
        TokenizerSource::Train(vocab_size) => {
            let texts: Vec<String> = train_docs.iter().map(|d| d.text.clone()).collect();
            let tokenizer = TextTokenizer::train(&texts, vocab_size)?;
            tokenizer.save(&out.join("tokenizer.json"))?;
            log(&format!(
                "tokenizer: byte-level BPE, {} tokens",
                tokenizer.vocab_size()
            ));
            tokenizer
        }
        TokenizerSource::Given(tokenizer) => *tokenizer,
    };
    let seq = split.seq_len;
    let train = pack(&tokenize(&train_docs, &tokenizer)?, seq, tokenizer.eos());
    let mut valid = pack(&tokenize(&valid_docs, &tokenizer)?, seq, tokenizer.eos());
    if split.max_valid_per_language > 0 {
        for sequences in valid.values_mut() {
            sequences.truncate(split.max_valid_per_language);
        }
    }
    for (lang, sequences) in &train {
        let held = valid.get(lang).map_or(0, Vec::len);
        log(&format!(
            "{:<7} {:>6} train / {held:>4} valid sequences of {seq} tokens",
            lang.name(),
            sequences.len()
        ));
    }
    Ok(Prepared {
        tokenizer,
        train,
        valid,
    })
}

/// The four trained models of one seed, with their configs.
struct Trained<B: AutodiffBackend> {
    models: Vec<(CausalLm<B::InnerBackend>, MultiplMoeConfig)>,
    trainable: Vec<usize>,
}

/// A stage's settings: `base` with `freeze`, its seed offset by the demo's `seed`, run in
/// `dir/name`.
fn stage<B: AutodiffBackend>(
    name: &str,
    freeze: FreezePolicy,
    base: &TrainConfig,
    seed: u64,
    dir: &Path,
) -> (TrainConfig, TrainTarget<B>) {
    let cfg = TrainConfig {
        freeze,
        seed: base.seed + seed,
        ..base.clone()
    };
    (cfg, TrainTarget::new(dir.join(name)))
}

/// Stage (a): a fresh dense model pre-trained on the mostly high-resource mix.
fn pretrain<B: AutodiffBackend>(
    cfg: &DemoConfig,
    data: &Prepared,
    model_cfg: &MultiplMoeConfig,
    seed: u64,
    dir: &Path,
    device: &B::Device,
) -> Result<CausalLm<B::InnerBackend>> {
    let valid_high = Mix::high_resource().sample(&data.valid, 64, 1)?;
    let dense0 = seeded::<B, _>(device, 11 + seed, || model_cfg.init::<B>(device))?;
    log(&format!(
        "seed {seed}: (a) pre-training the dense model, {:.0}% python/java/cpp, {:.0}% rust/go/ruby",
        100.0 * (1.0 - cfg.pretrain_low_resource_share),
        100.0 * cfg.pretrain_low_resource_share
    ));
    let pre = Mix::low_resource(cfg.pretrain_low_resource_share).sample(
        &data.train,
        cfg.pretrain_sequences,
        3 + 1000 * seed,
    )?;
    let (pre_cfg, target) = stage::<B>(
        "stage-a-pretrain",
        FreezePolicy::all(),
        &cfg.pretrain,
        seed,
        dir,
    );
    train(dense0, 0.0, pre, valid_high, &pre_cfg, &target)
}

/// What stage (b′) trains: the dense FFNs only, and by how much they are widened so that
/// it trains `moe_trainable` parameters (what the upcycled model trains under SPEC §5).
pub(crate) fn matched_widening<B: burn::tensor::backend::Backend>(
    dense: &CausalLm<B>,
    moe_trainable: usize,
) -> (usize, FreezePolicy) {
    let ffn_only = FreezePolicy {
        shared_and_dense_ffn: true,
        ..FreezePolicy::none()
    };
    let ffn_params = trainable_params(dense, &ffn_only);
    let factor = ((moe_trainable as f64 / ffn_params.max(1) as f64).round() as usize).max(1);
    (factor, ffn_only)
}

/// Stages (a), (b), (b′) and (c) for `seed`, in `dir`.
fn train_seed<B: AutodiffBackend>(
    cfg: &DemoConfig,
    data: &Prepared,
    seed: u64,
    dir: &Path,
    device: &B::Device,
) -> Result<Trained<B>> {
    let model_cfg = MultiplMoeConfig::new(QwenConfig {
        vocab_size: data.tokenizer.vocab_size(),
        ..cfg.model.clone()
    });
    let dense = pretrain::<B>(cfg, data, &model_cfg, seed, dir, device)?;
    let valid_mix = Mix::low_resource(cfg.low_resource_share).sample(&data.valid, 64, 2)?;
    let mix = Mix::low_resource(cfg.low_resource_share).sample(
        &data.train,
        cfg.finetune_sequences,
        4 + 1000 * seed,
    )?;
    let fresh = || CausalLm::<B>::from_inner(dense.clone());
    let run = |name: &str, freeze: FreezePolicy| stage::<B>(name, freeze, &cfg.finetune, seed, dir);

    log(&format!(
        "seed {seed}: (b) dense fine-tuning on the low-resource mix"
    ));
    let (ft_cfg, ft_target) = run("stage-b-dense-ft", FreezePolicy::all());
    let dense_ft = train(
        fresh(),
        0.0,
        mix.clone(),
        valid_mix.clone(),
        &ft_cfg,
        &ft_target,
    )?;

    let (hybrid, hybrid_cfg) = upcycle(fresh(), &model_cfg, &cfg.moe, &UpcycleOptions::default())?;
    let moe_trainable = trainable_params(&hybrid, &FreezePolicy::paper());
    let (factor, ffn_only) = matched_widening(&dense, moe_trainable);
    log(&format!(
        "seed {seed}: (b') dense fine-tuning of the FFNs widened {factor}× (function-preserving), \
         the rest frozen: as many trainable parameters as MultiPL-MoE"
    ));
    let (wide, wide_cfg) = widen_dense_ffn(fresh(), &model_cfg, factor, 0.01, seed)?;
    let (wide_ft_cfg, wide_target) = run("stage-b2-dense-ft-matched", ffn_only);
    let matched = train(
        wide,
        0.0,
        mix.clone(),
        valid_mix.clone(),
        &wide_ft_cfg,
        &wide_target,
    )?;

    log(&format!(
        "seed {seed}: (c) upcycling to MultiPL-MoE and training with the SPEC §5 freeze"
    ));
    let (moe_cfg, moe_target) = run("stage-c-multipl-moe", FreezePolicy::paper());
    let alpha = cfg.moe.balance_coef;
    let moe = train(hybrid, alpha, mix, valid_mix, &moe_cfg, &moe_target)?;
    let trainable = vec![
        trainable_params(&dense, &FreezePolicy::all()),
        trainable_params(&dense_ft, &FreezePolicy::all()),
        trainable_params(&matched, &ffn_only),
        moe_trainable,
    ];
    Ok(Trained {
        models: vec![
            (dense, model_cfg.clone()),
            (dense_ft, model_cfg),
            (matched, wide_cfg),
            (moe, hybrid_cfg),
        ],
        trainable,
    })
}

/// Makes `out` ready for the main job: a missing or empty directory is fine; one that holds an
/// earlier run's entries (`report.json`, `table.txt`, the charts, `tokenizer.json`, the model
/// directories and `seed-N/`) is refused unless `overwrite`,
/// which deletes those entries and nothing else.
///
/// # Errors
/// `out` is a file, holds an earlier run without `overwrite`, or an entry cannot be deleted.
pub fn prepare_demo_out(out: &Path, overwrite: bool) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(TrainError::Data {
            path: out.to_path_buf(),
            reason: "--out must be a directory".into(),
        });
    }
    if !multipl_moe_qwen::export::occupied(out) {
        return Ok(());
    }
    if !overwrite {
        return Err(TrainError::Data {
            path: out.to_path_buf(),
            reason: "is not empty; pass --overwrite to replace an earlier run's files there".into(),
        });
    }
    let entries = std::fs::read_dir(out).map_err(|e| TrainError::io(out, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| TrainError::io(out, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = [
            "report.json",
            "table.txt",
            "validation-loss.svg",
            "training-curves.svg",
            "pass-at-1.svg",
            "demo-settings.json",
            "tokenizer.json",
        ]
        .contains(&name.as_str())
            || MODEL_DIRS.contains(&name.as_str())
            || name
                .strip_prefix("seed-")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if ours {
            remove_entry(&entry.path())?;
        }
    }
    Ok(())
}

/// Runs the stages for each of `seeds`, prints the table (mean ± sd over seeds and the
/// two-standard-error verdicts), and writes under `out`: `report.json`, `table.txt`, the
/// charts `validation-loss.svg` and `training-curves.svg`, each seed's stage directories
/// under `seed-N/`, the tokenizer, and the four models of the first seed in the export
/// format (`dense`, `dense-ft`, `dense-ft-matched`, `multipl-moe`).
///
/// # Errors
/// An unreadable corpus, a missing language, too little data, or a failed stage.
pub fn run_demo<B: AutodiffBackend>(
    cfg: &DemoConfig,
    data: &DemoData,
    seeds: &[u64],
    out: &Path,
    device: &B::Device,
) -> Result<DemoReport> {
    let split = Split {
        valid_fraction: cfg.valid_fraction,
        max_valid_per_language: cfg.max_valid_per_language,
        seq_len: cfg.pretrain.seq_len,
    };
    let prepared = prepare(
        data,
        cfg.documents_per_language,
        TokenizerSource::Train(cfg.vocab_size),
        &split,
        out,
    )?;
    let valid_all: Vec<Sequence> = prepared.valid.values().flatten().cloned().collect();
    let mut per_seed = Vec::new();
    let mut trainable = Vec::new();
    for (i, &seed) in seeds.iter().enumerate() {
        let dir = out.join(format!("seed-{seed}"));
        let trained = train_seed::<B>(cfg, &prepared, seed, &dir, device)?;
        log(&format!("seed {seed}: validation loss per language"));
        let inner = device.clone();
        let mut losses: SeedLosses = BTreeMap::new();
        for ((model, _), name) in trained.models.iter().zip(MODELS) {
            losses.insert(
                name.to_string(),
                loss_per_language(model, &valid_all, 16, &inner),
            );
        }
        per_seed.push((seed, losses));
        trainable = trained.trainable.clone();
        if i == 0 {
            save_models(&trained.models, out)?;
        }
    }
    let report = DemoReport::new(per_seed, &trainable);
    println!("\n{}", report.table());
    write_outputs(&report, out)?;
    log(&format!(
        "wrote report.json, table.txt, validation-loss.svg, training-curves.svg and the first \
         seed's models under {}",
        out.display()
    ));
    Ok(report)
}

/// Exports the models (each dir replaced whole, with the run's tokenizer.json copied in).
fn save_models<B: burn::tensor::backend::Backend>(
    models: &[(CausalLm<B>, MultiplMoeConfig)],
    out: &Path,
) -> Result<()> {
    for ((model, config), name) in models.iter().zip(crate::demo::report::MODEL_DIRS) {
        let dir = out.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
        }
        save_model_from(model, config, &dir, SaveDtype::F32, Some(out))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::prepare_demo_out;

    /// A non-empty `--out` is refused; `--overwrite` deletes the main job's entries and
    /// nothing else; a file is never an output directory.
    #[test]
    fn an_earlier_run_is_replaced_only_when_asked() {
        let dir = std::env::temp_dir().join(format!("multipl-moe-demo-out-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        prepare_demo_out(&dir, false).expect("a missing directory is fine");
        for dir_entry in ["seed-0/stage", "multipl-moe", "seed-x"] {
            std::fs::create_dir_all(dir.join(dir_entry)).unwrap();
        }
        for file in ["table.txt", "report.json", "notes.txt"] {
            std::fs::write(dir.join(file), "x").unwrap();
        }
        let refused = prepare_demo_out(&dir, false).unwrap_err().to_string();
        assert!(refused.contains("--overwrite"), "{refused}");
        assert!(
            dir.join("table.txt").exists(),
            "nothing deleted when refused"
        );
        prepare_demo_out(&dir, true).expect("overwrite");
        for gone in ["seed-0", "multipl-moe", "table.txt", "report.json"] {
            assert!(!dir.join(gone).exists(), "{gone} is left");
        }
        for kept in ["seed-x", "notes.txt"] {
            assert!(dir.join(kept).exists(), "{kept} is not the main job's");
        }
        assert!(prepare_demo_out(&dir.join("notes.txt"), true).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
