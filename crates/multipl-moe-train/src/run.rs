//! `multipl-moe train`: a run described by a TOML or JSON file, on a real corpus, optionally
//! upcycling a Hugging Face checkpoint with the paper's recipe.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use multipl_moe_core::{MoeConfig, MultiplMoeConfig, QwenConfig};
use multipl_moe_qwen::{SaveDtype, UpcycleOptions, load_model, save_model_from, upcycle};
use serde::{Deserialize, Serialize};

use crate::corpus::read_path;
use crate::data::{Mix, pack, split_documents, tokenize};
use crate::error::{Result, TrainError};
use crate::tokenizer::TextTokenizer;
use crate::trainer::{TrainConfig, TrainTarget, train};

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
    /// Training sequences drawn from the mix per run; default: as many as packed.
    #[serde(default)]
    pub sequences: Option<usize>,
    /// Upcycling options.
    #[serde(default)]
    pub upcycle: UpcycleOptions,
}

impl RunConfig {
    /// Reads a `.toml` or `.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
        let bad = |reason: String| TrainError::Data {
            path: path.to_path_buf(),
            reason,
        };
        if path.extension().and_then(|e| e.to_str()) == Some("toml") {
            toml::from_str(&text).map_err(|e| bad(e.to_string()))
        } else {
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))
        }
    }
}

/// The highest epoch with a model checkpoint under `dir/checkpoint`.
pub fn last_checkpoint(dir: &Path) -> Option<usize> {
    std::fs::read_dir(dir.join("checkpoint"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("model-")?.split('.').next()?.parse().ok())
        .max()
}

/// Runs `multipl-moe train`.
pub fn run_training<B: AutodiffBackend>(
    config: &Path,
    data: &Path,
    model_dir: Option<&Path>,
    out: &Path,
    resume: bool,
    devices: &[B::Device],
) -> Result<()> {
    let device = devices.first().ok_or(TrainError::Config {
        field: "devices",
        reason: "at least one device is needed".into(),
    })?;
    let cfg = RunConfig::from_file(config)?;
    cfg.train.validate()?;
    let corpus = read_path(data)?;
    println!(
        "data: {} documents, {} files skipped (binary, unreadable or unknown language)",
        corpus.documents.len(),
        corpus.skipped
    );
    let (train_docs, valid_docs) =
        split_documents(&corpus.documents, cfg.valid_fraction, cfg.train.seed);

    let tokenizer_path = cfg
        .tokenizer
        .clone()
        .or_else(|| model_dir.map(|d| d.join("tokenizer.json")));
    let (model_cfg, model) = match model_dir {
        Some(dir) => {
            let (c, m) = load_model::<B>(dir, device)?;
            (c, m)
        }
        None => {
            let base = cfg.model.clone().ok_or(TrainError::Config {
                field: "model",
                reason: "needed when no --model is given".into(),
            })?;
            let c = MultiplMoeConfig::new(base);
            let m = c.init::<B>(device)?;
            (c, m)
        }
    };
    let tokenizer = match tokenizer_path {
        Some(p) => TextTokenizer::from_file(&p)?,
        None => {
            let texts: Vec<String> = train_docs.iter().map(|d| d.text.clone()).collect();
            TextTokenizer::train(&texts, model_cfg.model.vocab_size)?
        }
    };
    if tokenizer.vocab_size() > model_cfg.model.vocab_size {
        return Err(TrainError::Config {
            field: "tokenizer",
            reason: format!(
                "{} tokens > model vocab_size {}",
                tokenizer.vocab_size(),
                model_cfg.model.vocab_size
            ),
        });
    }
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
    let train_packed = pack(&tokenize(&train_docs, &tokenizer)?, seq, tokenizer.eos());
    let valid_packed = pack(&tokenize(&valid_docs, &tokenizer)?, seq, tokenizer.eos());
    let mix = Mix::low_resource(cfg.low_resource_share);
    let available: usize = train_packed.values().map(Vec::len).sum();
    let train_seqs = mix.sample(
        &train_packed,
        cfg.sequences.unwrap_or(available),
        cfg.train.seed,
    )?;
    let valid_seqs: Vec<_> = valid_packed.values().flatten().cloned().collect();
    let resume_from = if resume { last_checkpoint(out) } else { None };
    if resume && resume_from.is_none() {
        println!(
            "no checkpoint under {}; starting from scratch",
            out.display()
        );
    }
    let trained = train(
        model,
        alpha,
        train_seqs,
        valid_seqs,
        &cfg.train,
        &TrainTarget::new(out)
            .with_resume(resume_from)
            .with_devices(devices.to_vec()),
    )?;
    // The run's own export, replaced whole when a resumed run finishes again.
    tokenizer.save(&out.join("tokenizer.json"))?;
    let dir = out.join("model");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| crate::TrainError::io(&dir, e))?;
    }
    save_model_from(&trained, &model_cfg, &dir, SaveDtype::F32, Some(out))?;
    println!("saved the trained model to {}", out.join("model").display());
    Ok(())
}
