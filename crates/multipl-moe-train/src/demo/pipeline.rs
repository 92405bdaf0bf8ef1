//! The demo that reproduces the paper's claim in miniature (README command 1):
//! (a) pre-train a small dense model mostly on the high-resource languages, (b) fine-tune a copy
//! densely on the low-resource mix, (c) upcycle the pre-trained model to MultiPL-MoE and train
//! it on the same mix with the SPEC §5 freeze; then compare validation loss per language.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use multipl_moe_core::{CausalLm, MoeConfig, MultiplMoeConfig, QwenConfig};
use multipl_moe_qwen::{FreezePolicy, SaveDtype, UpcycleOptions, save_model_from, upcycle};
use serde::{Deserialize, Serialize};

use crate::data::corpus::{Document, Language, embedded};
use crate::data::dataset::{Mix, pack, split_documents, tokenize};
use crate::data::tokenizer::TextTokenizer;
use crate::error::Result;
use crate::training::trainer::{TrainConfig, TrainTarget, train};
use crate::training::validation::loss_per_language;

/// Settings of the demo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoConfig {
    /// Generated documents per language.
    pub documents_per_language: usize,
    /// BPE vocabulary size.
    pub vocab_size: usize,
    /// Held-out fraction of each language's documents.
    pub valid_fraction: f64,
    /// The dense model (its vocabulary is set from the tokenizer).
    pub model: QwenConfig,
    /// The hybrid MoE of stage (c).
    pub moe: MoeConfig,
    /// Stage (a) settings.
    pub pretrain: TrainConfig,
    /// Stage (a) sequences.
    pub pretrain_sequences: usize,
    /// Stages (b) and (c) settings (freeze policies are set per stage).
    pub finetune: TrainConfig,
    /// Stages (b) and (c) sequences.
    pub finetune_sequences: usize,
    /// Share of low-resource data in the fine-tuning mix (the rest is replay).
    pub low_resource_share: f64,
    /// Share of low-resource data in pre-training: small, as for a general code LLM that has
    /// seen little Rust/Go/Ruby (0 would leave their token embeddings untrained, and the
    /// SPEC §5 freeze keeps embeddings frozen).
    pub pretrain_low_resource_share: f64,
}

impl DemoConfig {
    /// The default demo: about 10 minutes on 2 CPU cores with ndarray.
    pub fn tiny() -> Self {
        let mut moe = MoeConfig::paper().with_router_init_std(0.02);
        moe.segment.window = 16;
        Self {
            documents_per_language: 300,
            vocab_size: 512,
            valid_fraction: 0.1,
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
}

/// Validation loss per language of the three models.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DemoReport {
    /// Pre-trained dense model.
    pub dense: BTreeMap<Language, f64>,
    /// Dense model fine-tuned on the low-resource mix.
    pub dense_ft: BTreeMap<Language, f64>,
    /// Upcycled MultiPL-MoE trained on the same mix.
    pub moe: BTreeMap<Language, f64>,
}

impl DemoReport {
    /// The table of validation losses, plus a verdict on the paper's direction.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<10}{:>10}{:>10}{:>13}\n",
            "language", "dense", "dense-FT", "MultiPL-MoE"
        );
        for lang in Language::ALL {
            let g = |m: &BTreeMap<Language, f64>| m.get(&lang).copied().unwrap_or(f64::NAN);
            let tag = if lang.is_low_resource() { " (low)" } else { "" };
            s += &format!(
                "{:<10}{:>10.4}{:>10.4}{:>13.4}{tag}\n",
                lang.name(),
                g(&self.dense),
                g(&self.dense_ft),
                g(&self.moe)
            );
        }
        let mean = |m: &BTreeMap<Language, f64>, low: bool| {
            let v: Vec<f64> = m
                .iter()
                .filter(|(l, _)| l.is_low_resource() == low)
                .map(|(_, v)| *v)
                .collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        let (low_gain, low_gain_ft) = (
            mean(&self.dense, true) - mean(&self.moe, true),
            mean(&self.dense, true) - mean(&self.dense_ft, true),
        );
        let (high_moe, high_ft) = (mean(&self.moe, false), mean(&self.dense_ft, false));
        s += &format!(
            "low-resource loss drop vs dense: MultiPL-MoE {low_gain:+.4}, dense-FT {low_gain_ft:+.4}\n\
             high-resource loss: MultiPL-MoE {high_moe:.4} vs dense-FT {high_ft:.4} (dense {:.4})\n",
            mean(&self.dense, false)
        );
        let yes = |b: bool| if b { "yes" } else { "NO" };
        s += &format!(
            "MultiPL-MoE gains on low-resource vs dense: {}; gains more than dense-FT: {}; \
             keeps high-resource loss better than dense-FT: {}\n",
            yes(low_gain > 0.0),
            yes(low_gain > low_gain_ft),
            yes(high_moe < high_ft)
        );
        s
    }
}

fn log(msg: &str) {
    println!("[demo] {msg}");
}

/// Runs the three stages, prints the table and saves the three models (and the tokenizer)
/// under `out` in the export format.
pub fn run_demo<B: AutodiffBackend>(
    cfg: &DemoConfig,
    out: &Path,
    device: &B::Device,
) -> Result<DemoReport> {
    let corpus = embedded(cfg.documents_per_language);
    let (train_docs, valid_docs): (Vec<Document>, Vec<Document>) =
        split_documents(&corpus.documents, cfg.valid_fraction, 7);
    log(&format!(
        "corpus: {} documents ({} train, {} valid), 6 languages",
        corpus.documents.len(),
        train_docs.len(),
        valid_docs.len()
    ));
    let texts: Vec<String> = train_docs.iter().map(|d| d.text.clone()).collect();
    let tokenizer = TextTokenizer::train(&texts, cfg.vocab_size)?;
    std::fs::create_dir_all(out).map_err(|e| crate::TrainError::io(out, e))?;
    tokenizer.save(&out.join("tokenizer.json"))?;
    log(&format!(
        "tokenizer: byte-level BPE, {} tokens",
        tokenizer.vocab_size()
    ));

    let seq = cfg.pretrain.seq_len;
    let train_packed = pack(&tokenize(&train_docs, &tokenizer)?, seq, tokenizer.eos());
    let valid_packed = pack(&tokenize(&valid_docs, &tokenizer)?, seq, tokenizer.eos());
    let valid_all: Vec<_> = valid_packed.values().flatten().cloned().collect();
    let valid_high = Mix::high_resource().sample(&valid_packed, 64, 1)?;
    let valid_mix = Mix::low_resource(cfg.low_resource_share).sample(&valid_packed, 64, 2)?;

    let model_cfg = MultiplMoeConfig::new(QwenConfig {
        vocab_size: tokenizer.vocab_size(),
        ..cfg.model.clone()
    });
    B::seed(device, 11);
    let dense0 = model_cfg.init::<B>(device)?;

    log(&format!(
        "(a) pre-training the dense model, {:.0}% python/java/cpp, {:.0}% rust/go/ruby",
        100.0 * (1.0 - cfg.pretrain_low_resource_share),
        100.0 * cfg.pretrain_low_resource_share
    ));
    let pre = Mix::low_resource(cfg.pretrain_low_resource_share).sample(
        &train_packed,
        cfg.pretrain_sequences,
        3,
    )?;
    let pretrain_cfg = TrainConfig {
        freeze: FreezePolicy::all(),
        ..cfg.pretrain.clone()
    };
    let dense = train(
        dense0,
        0.0,
        pre,
        valid_high,
        &pretrain_cfg,
        &TrainTarget::new(out.join("stage-a-pretrain")),
    )?;

    let mix = Mix::low_resource(cfg.low_resource_share).sample(
        &train_packed,
        cfg.finetune_sequences,
        4,
    )?;
    log("(b) dense fine-tuning on the low-resource mix (baseline)");
    let ft_cfg = TrainConfig {
        freeze: FreezePolicy::all(),
        ..cfg.finetune.clone()
    };
    let dense_ft = train(
        CausalLm::<B>::from_inner(dense.clone()),
        0.0,
        mix.clone(),
        valid_mix.clone(),
        &ft_cfg,
        &TrainTarget::new(out.join("stage-b-dense-ft")),
    )?;

    log("(c) upcycling to MultiPL-MoE and training with the SPEC §5 freeze");
    let (hybrid, hybrid_cfg) = upcycle(
        CausalLm::<B>::from_inner(dense.clone()),
        &model_cfg,
        &cfg.moe,
        &UpcycleOptions::default(),
    )?;
    let moe_cfg = TrainConfig {
        freeze: FreezePolicy::paper(),
        ..cfg.finetune.clone()
    };
    let moe = train(
        hybrid,
        cfg.moe.balance_coef,
        mix,
        valid_mix,
        &moe_cfg,
        &TrainTarget::new(out.join("stage-c-multipl-moe")),
    )?;

    log("evaluating validation loss per language");
    let inner_device = device.clone();
    let eval = |m: &CausalLm<B::InnerBackend>| loss_per_language(m, &valid_all, 16, &inner_device);
    let report = DemoReport {
        dense: eval(&dense),
        dense_ft: eval(&dense_ft),
        moe: eval(&moe),
    };
    println!("\n{}", report.table());
    for (name, model, config) in [
        ("dense", &dense, &model_cfg),
        ("dense-ft", &dense_ft, &model_cfg),
        ("multipl-moe", &moe, &hybrid_cfg),
    ] {
        // The demo rewrites its own run directory; each model dir is replaced whole, with
        // the run's tokenizer.json copied in.
        let dir = out.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| crate::TrainError::io(&dir, e))?;
        }
        save_model_from(model, config, &dir, SaveDtype::F32, Some(out))?;
    }
    let report_path = out.join("report.json");
    std::fs::write(
        &report_path,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| crate::TrainError::io(&report_path, e))?;
    log(&format!(
        "saved dense, dense-ft and multipl-moe models, tokenizer.json and report.json under {}",
        out.display()
    ));
    Ok(report)
}
