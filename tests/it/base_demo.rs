//! The main job on a pretrained base (`demo --base`): the whole pipeline on a tiny random
//! Llama-shaped checkpoint, the embedded corpus and the harness's fixture problems, so that
//! the path a user takes with SmolLM2 cannot rot.

use crate::common::{TestAutodiff, TestBackend, run_dir};
use multipl_moe::core::config::ModelType;
use multipl_moe::core::{MoeConfig, MultiplMoeConfig, QwenConfig};
use multipl_moe::qwen::{SaveDtype, save_model_from};
use multipl_moe::train::TrainConfig;
use multipl_moe::train::demo::base::{BASE_MODELS, BaseDemo, BaseDemoConfig, run_base_demo};
use multipl_moe::train::demo::pipeline::DemoData;
use multipl_moe::train::multiple::exec::LimitFlags;
use multipl_moe::train::multiple::read_problems;
use multipl_moe::train::multiple::report::EvalSettings;
use multipl_moe::train::multiple::sandbox::{ResourceLimits, Sandbox};
use std::path::Path;

/// A random Llama (no biases, GQA, tied embeddings) with the fixture tokenizer (400 tokens),
/// written as a Hugging Face checkpoint.
fn tiny_llama(dir: &Path) {
    let model = QwenConfig {
        model_type: Some(ModelType::Llama),
        attention_bias: Some(false),
        ..QwenConfig::new(400, 32, 64, 2, 4, 2).with_max_position_embeddings(128)
    };
    let config = MultiplMoeConfig::new(model);
    let device = Default::default();
    let lm = multipl_moe::core::rng::seeded::<TestBackend, _>(&device, 5, || {
        config.init::<TestBackend>(&device)
    })
    .unwrap();
    let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tokenizer");
    save_model_from(&lm, &config, dir, SaveDtype::F32, Some(&tokenizer)).unwrap();
}

fn config() -> BaseDemoConfig {
    let mut moe = MoeConfig::tiny();
    moe.segment.window = 8;
    let cpu = BaseDemoConfig::cpu();
    BaseDemoConfig {
        documents_per_language: 12,
        max_valid_per_language: 2,
        moe,
        hybrid_last_layers: 1,
        finetune: TrainConfig {
            batch_size: 2,
            seq_len: 32,
            warmup_steps: 1,
            max_valid_batches: 1,
            ..cpu.finetune.clone()
        },
        finetune_sequences: 4,
        problems_per_language: 1,
        max_new_tokens: 4,
        samples: 2,
        temperature: 0.8,
        ..cpu
    }
}

/// Every model is measured at step 0 and fine-tuned, by loss and by pass@1 on every
/// language that has problems; the report, the charts and each fine-tuned export are
/// written; `resume` reuses all of it and gives the same report.
#[test]
fn the_main_job_runs_from_a_pretrained_llama() {
    let dir = run_dir("base-demo");
    let base = dir.join("base");
    tiny_llama(&base);
    let problems = read_problems(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/multiple/problems.jsonl"),
        None,
    )
    .unwrap();
    let sandbox = Sandbox::bubblewrap(ResourceLimits::default())
        .expect("bubblewrap (`bwrap`) must be installed and usable");
    let out = dir.join("out");
    let cfg = config();
    let run = |resume: bool| {
        let run = BaseDemo {
            base: &base,
            data: &DemoData::Embedded,
            problems: &problems,
            eval: EvalSettings {
                sandbox: &sandbox,
                limits: LimitFlags::from_secs(None, None).unwrap(),
                jobs: 2,
                java_classpath: None,
            },
            seeds: &[0],
            out: &out,
            resume,
        };
        run_base_demo::<TestAutodiff>(&cfg, &run, &Default::default()).unwrap()
    };
    let report = run(false);
    // dense once, then each of the other four at step 0 (dense-FT's step 0 is dense) and
    // fine-tuned.
    assert_eq!(
        report.measurements.len(),
        1 + 1 + 3 * 2,
        "{:?}",
        report.measurements
    );
    let languages = ["python", "rust", "cpp", "java", "go"];
    for m in &report.measurements {
        assert_eq!(m.valid_loss.len(), 6, "{}: a loss per language", m.model);
        assert!(m.valid_loss.values().all(|l| l.is_finite() && *l > 0.0));
        let names: Vec<&str> = m.problems.iter().map(|p| p.language.name()).collect();
        assert_eq!(
            names, languages,
            "{}: the first problem of each language",
            m.model
        );
        // At most one greedy and two sampled runs each: a harness fault (a sandbox that could
        // not start on a loaded machine) is not scored.
        assert!(
            m.problems.iter().all(|p| p.scored <= 1),
            "{}: one greedy sample",
            m.model
        );
        let sampled: Vec<&str> = m.sampled.iter().map(|p| p.language.name()).collect();
        assert_eq!(sampled, languages, "{}: sampled too", m.model);
        assert!(
            m.sampled.iter().all(|p| p.scored <= 2),
            "{}: two samples",
            m.model
        );
    }
    let scored: usize = report
        .measurements
        .iter()
        .flat_map(|m| m.problems.iter().chain(&m.sampled))
        .map(|p| p.scored)
        .sum();
    assert!(scored > 0, "no completion was run");
    // A function-preserving upcycle computes the dense model at step 0.
    let at = |model: &str, step0: bool| {
        report
            .measurements
            .iter()
            .find(|m| m.model == model && (m.step0 == step0))
            .unwrap()
    };
    let (dense, fp) = (at(BASE_MODELS[0].0, true), at(BASE_MODELS[4].0, true));
    for (lang, loss) in &dense.valid_loss {
        assert!((loss - fp.valid_loss[lang]).abs() < 1e-4, "{lang:?}");
    }
    // Fine-tuning moved every trained model's loss.
    for (name, _) in &BASE_MODELS[1..] {
        let before = if *name == BASE_MODELS[1].0 {
            dense
        } else {
            at(name, true)
        };
        let after = at(name, false);
        assert_ne!(before.valid_loss, after.valid_loss, "{name} did not train");
    }
    let table = std::fs::read_to_string(out.join("table.txt")).unwrap();
    for part in [
        "at step 0",
        "fine-tuned",
        "n = 2 samples at temperature 0.8",
        "verdicts on greedy pass@1",
        "verdicts on sampled pass@1",
        "reduced from the paper",
    ] {
        assert!(table.contains(part), "{part} missing:\n{table}");
    }
    for file in ["report.json", "validation-loss.svg", "pass-at-1.svg"] {
        assert!(out.join(file).is_file(), "{file}");
    }
    for (_, sub) in &BASE_MODELS[1..] {
        let model = out.join("seed-0").join(sub).join("model");
        assert!(model.join("config.json").is_file(), "{sub} exported");
        assert!(
            model.join("tokenizer.json").is_file(),
            "{sub} has the tokenizer"
        );
    }
    // Resuming a finished run measures and trains nothing again: the same measurements and
    // the first run's times.
    let again = run(true);
    assert_eq!(again.seconds, report.seconds);
    assert_eq!(again.measurements.len(), report.measurements.len());
    for (a, b) in again.measurements.iter().zip(&report.measurements) {
        assert_eq!(
            (&a.model, a.step0, &a.valid_loss),
            (&b.model, b.step0, &b.valid_loss)
        );
        assert_eq!(a.problems, b.problems);
    }
    let _ = std::fs::remove_dir_all(dir);
}
