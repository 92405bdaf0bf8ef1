//! The main job from a real pretrained checkpoint (`multipl-moe demo --base DIR`): the base
//! model as it is (**dense**), fine-tuned with every weight trainable (**dense-FT**), fine-tuned
//! with its FFNs widened function-preservingly to MultiPL-MoE's trainable parameter count and
//! the rest frozen (**dense-FT (matched)**), and upcycled to MultiPL-MoE twice, each trained
//! with the SPEC §5 freeze: with the configured preset (**MultiPL-MoE**) and with
//! [`UpcycleOptions::function_preserving`] (**MultiPL-MoE (function-preserving)**, SPEC §6: the
//! dense model at step 0). Every fine-tuned model sees the same real-code mix (mostly Rust, Go
//! and Ruby, with replay of Python, Java and C++), the same steps, seed and data order.
//!
//! Each model is measured at step 0 and after fine-tuning, by validation cross-entropy per
//! language on held-out code and by MultiPL-E pass@1 (greedy, n = 1) on the given problem
//! files, run in the harness's sandbox ([`crate::multiple`]). Every stage keeps its result
//! under `seed-N/<model>/` (`model/` the fine-tuned export, `step-0/` and `fine-tuned/` the
//! measurements), so `resume` skips what is done and continues an interrupted training from
//! its newest checkpoint.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use multipl_moe_core::{CausalLm, MoeConfig, MultiplMoeConfig};
use multipl_moe_qwen::{
    FreezePolicy, SaveDtype, UpcycleOptions, load_model_with_notes, save_model_from,
    trainable_params, upcycle, widen_dense_ffn,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::data::corpus::Language;
use crate::data::dataset::{Mix, Sequence};
use crate::data::tokenizer::TextTokenizer;
use crate::demo::base_report::{BaseReport, Measurement, ProblemPass};
use crate::demo::pipeline::{
    DemoData, Prepared, Split, TokenizerSource, log, matched_widening, prepare,
};
use crate::error::{Result, TrainError};
use crate::files::{read_json, write_json};
use crate::infer::textgen::SpecialTokens;
use crate::multiple::exec::Status;
use crate::multiple::generate::{SampleSettings, generate_completions};
use crate::multiple::log::CompletionLog;
use crate::multiple::report::{EvalReport, EvalSettings, evaluate};
use crate::multiple::{Completion, Problem, first_per_language};
use crate::progress::Progress;
use crate::training::trainer::{TrainConfig, TrainTarget, train};
use crate::training::validation::loss_per_language;

/// The models compared, in table order: `(name, directory under seed-N/)`.
pub const BASE_MODELS: [(&str, &str); 5] = [
    ("dense", "dense"),
    ("dense-FT", "dense-ft"),
    ("dense-FT (matched)", "dense-ft-matched"),
    ("MultiPL-MoE", "multipl-moe"),
    ("MultiPL-MoE (function-preserving)", "multipl-moe-fp"),
];

/// Optimizer steps of the paper's fine-tuning (SPEC §5: 93k steps of 64 × 1024 tokens).
pub const PAPER_STEPS: usize = 93_000;

/// Settings of the main job on a pretrained base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseDemoConfig {
    /// Generated documents per language when the corpus is the embedded one (tests); a real
    /// corpus (`--data`) is read whole.
    pub documents_per_language: usize,
    /// Held-out fraction of each language's documents (split with seed 7).
    pub valid_fraction: f64,
    /// Most validation sequences per language (0: all).
    pub max_valid_per_language: usize,
    /// The upcycled models' hybrid MoE.
    pub moe: MoeConfig,
    /// When above 0, only the base model's last this many layers are upcycled (overrides
    /// `moe.hybrid_layers`).
    pub hybrid_last_layers: usize,
    /// Fine-tuning settings of every trained model (freeze policies are set per model; the
    /// seed is offset by the demo's seed).
    pub finetune: TrainConfig,
    /// Fine-tuning sequences of `finetune.seq_len` tokens: the run's length.
    pub finetune_sequences: usize,
    /// Share of Rust, Go and Ruby in the fine-tuning mix; the rest is replay of Python, Java
    /// and C++.
    pub low_resource_share: f64,
    /// Relative noise of the widened baseline's FFN copies after the first.
    pub widen_noise: f64,
    /// Problems evaluated per language, the first of each (0: all).
    pub problems_per_language: usize,
    /// Most tokens per completion.
    pub max_new_tokens: usize,
    /// Besides the greedy completion, this many sampled completions per problem for a
    /// sampled pass@1 (0: greedy only; MultiPL-E reports n = 20–200).
    pub samples: usize,
    /// Temperature of the sampled completions (MultiPL-E: 0.2 for pass@1), top-p 0.95.
    pub temperature: f64,
    /// Completions decoded together.
    pub eval_batch_size: usize,
    /// Validation sequences per forward.
    pub valid_batch_size: usize,
}

impl BaseDemoConfig {
    /// The preset sized for a 2-core CPU and SmolLM2-135M (30 layers): MultiPL-MoE with the
    /// paper's experts (`N_t = 6, K = 2, N_s = 6`) on the last 3 layers only (as many
    /// trainable parameters as the dense FFNs of all 30 layers, so the matched baseline needs no
    /// widening), 96 optimizer
    /// steps of 4 × 256 tokens at lr 1e-4, 12 validation sequences and 10 problems per
    /// language, completions of at most 256 tokens. Every reduction is listed by
    /// [`Self::reductions`] and printed.
    pub fn cpu() -> Self {
        Self {
            documents_per_language: 300,
            valid_fraction: 0.1,
            max_valid_per_language: 12,
            moe: MoeConfig::paper(),
            hybrid_last_layers: 3,
            finetune: TrainConfig {
                lr: 1e-4,
                min_lr: 1e-5,
                warmup_steps: 10,
                batch_size: 4,
                grad_accumulation: 1,
                seq_len: 256,
                max_valid_batches: 4,
                checkpoint_every: 24,
                ..TrainConfig::paper_recipe()
            },
            finetune_sequences: 384,
            low_resource_share: 0.8,
            widen_noise: 0.01,
            problems_per_language: 10,
            max_new_tokens: 256,
            samples: 0,
            temperature: 0.2,
            eval_batch_size: 20,
            valid_batch_size: 4,
        }
    }

    /// The paper's scale: `N_t = N_s = 6` on every layer, SPEC §5's recipe (lr 7e-6,
    /// 8 × 8 × 1024 tokens per step) for 1000 steps (the paper's run is [`PAPER_STEPS`]: the
    /// one reduction this preset names), every problem, 512 tokens per completion. The README
    /// gives its memory and time estimate for one GPU.
    pub fn paper() -> Self {
        Self {
            documents_per_language: 300,
            valid_fraction: 0.1,
            max_valid_per_language: 0,
            moe: MoeConfig::paper(),
            hybrid_last_layers: 0,
            finetune: TrainConfig {
                checkpoint_every: 100,
                ..TrainConfig::paper_recipe()
            },
            finetune_sequences: 64_000,
            low_resource_share: 0.8,
            widen_noise: 0.01,
            problems_per_language: 0,
            max_new_tokens: 512,
            samples: 20,
            temperature: 0.2,
            eval_batch_size: 20,
            valid_batch_size: 8,
        }
    }

    /// How this config departs from the paper's setting, one line each.
    pub fn reductions(&self) -> Vec<String> {
        let paper = Self::paper();
        let mut out = Vec::new();
        if self.hybrid_last_layers > 0 {
            out.push(format!(
                "hybrid MoE on the last {} layers only (paper: every layer)",
                self.hybrid_last_layers
            ));
        } else if let Some(layers) = &self.moe.hybrid_layers {
            out.push(format!(
                "hybrid MoE on layers {layers:?} only (paper: every layer)"
            ));
        }
        let (t, s) = (&self.moe.token, &self.moe.segment);
        if (t.num_experts, t.top_k, s.num_experts) != (6, 2, 6) {
            out.push(format!(
                "N_t = {}, K = {}, N_s = {} (paper: 6, 2, 6)",
                t.num_experts, t.top_k, s.num_experts
            ));
        }
        let (f, p) = (&self.finetune, &paper.finetune);
        let tokens = |c: &TrainConfig| c.batch_size * c.grad_accumulation * c.seq_len;
        let steps = self.finetune_sequences / (f.batch_size * f.grad_accumulation).max(1);
        if (tokens(f), f.lr, steps) != (tokens(p), p.lr, PAPER_STEPS) {
            out.push(format!(
                "{steps} optimizer steps of {} tokens ({} × {} × {}), lr {} (paper: {PAPER_STEPS} \
                 steps of {} tokens, ~6 B tokens, lr {})",
                tokens(f),
                f.batch_size,
                f.grad_accumulation,
                f.seq_len,
                f.lr,
                tokens(p),
                p.lr
            ));
        }
        if self.problems_per_language > 0 {
            out.push(format!(
                "the first {} problems of each language (MultiPL-E: every problem)",
                self.problems_per_language
            ));
        }
        if self.max_new_tokens < paper.max_new_tokens {
            out.push(format!(
                "completions of at most {} tokens (MultiPL-E: {})",
                self.max_new_tokens, paper.max_new_tokens
            ));
        }
        if self.samples == 0 {
            out.push(
                "greedy pass@1 only (MultiPL-E: pass@1 from 20 or more samples at temperature \
                 0.2; --samples N adds it)"
                    .into(),
            );
        }
        if self.max_valid_per_language > 0 {
            out.push(format!(
                "validation on {} held-out sequences of {} tokens per language",
                self.max_valid_per_language, f.seq_len
            ));
        }
        out
    }

    /// Checks the sampling settings by `eval`'s rules (the error names `--samples` or
    /// `--temperature`).
    ///
    /// # Errors
    /// [`TrainError::Eval`] naming the setting.
    pub fn validate(&self) -> Result<()> {
        if self.samples > 0 {
            SampleSettings {
                samples: self.samples,
                max_new_tokens: self.max_new_tokens,
                temperature: self.temperature,
                top_p: 0.95,
                seed: 0,
            }
            .validate()?;
        }
        Ok(())
    }

    /// The MoE config for a base model of `num_layers` layers.
    fn moe_for(&self, num_layers: usize) -> MoeConfig {
        let mut moe = self.moe.clone();
        if self.hybrid_last_layers > 0 {
            let first = num_layers.saturating_sub(self.hybrid_last_layers);
            moe.hybrid_layers = Some((first..num_layers).collect());
        }
        moe
    }
}

/// What the main job runs on besides its config.
pub struct BaseDemo<'a> {
    /// The pretrained Hugging Face checkpoint (with `tokenizer.json`).
    pub base: &'a Path,
    /// The fine-tuning and validation corpus.
    pub data: &'a DemoData,
    /// MultiPL-E problems (all languages; [`BaseDemoConfig::problems_per_language`] applies).
    pub problems: &'a [Problem],
    /// How completions run.
    pub eval: EvalSettings<'a>,
    /// Seeds; each gives its own fine-tuning data order, router initialisation and widening
    /// noise.
    pub seeds: &'a [u64],
    /// Output directory.
    pub out: &'a Path,
    /// Reuse what an interrupted run with the same settings finished.
    pub resume: bool,
}

/// Everything the stages of all seeds share.
struct Context<'a> {
    run: &'a BaseDemo<'a>,
    cfg: &'a BaseDemoConfig,
    data: Prepared,
    special: SpecialTokens,
    problems: Vec<Problem>,
    valid: Vec<Sequence>,
}

/// A model of one seed to fine-tune: where it starts and how it trains.
struct Candidate<B: Backend> {
    /// Its index in [`BASE_MODELS`].
    index: usize,
    /// The model at step 0.
    model: CausalLm<B>,
    /// Its config (for the export).
    config: MultiplMoeConfig,
    /// What trains.
    freeze: FreezePolicy,
    /// α of the load-balance loss (0 for a dense model).
    balance_coef: f64,
    /// Whether to measure it at step 0 (not when it starts as the dense model itself).
    step0: bool,
    /// How it trains, for the log.
    training: String,
}

/// What one seed gave: its measurements, each model's trainable parameters, each training's
/// wall-clock seconds.
struct SeedResult {
    measured: Vec<Measurement>,
    trainable: BTreeMap<String, usize>,
    seconds: BTreeMap<String, f64>,
}

/// Each problem's samples passed and scored, in the report's order (a harness fault or a
/// skipped language is not the program's verdict and is not scored).
fn per_problem(report: &EvalReport) -> Vec<ProblemPass> {
    let mut out: Vec<ProblemPass> = Vec::new();
    for r in &report.results {
        let Some(language) = Language::from_name(&r.language) else {
            continue;
        };
        let index = match out
            .iter()
            .position(|p| p.language == language && p.name == r.name)
        {
            Some(i) => i,
            None => {
                out.push(ProblemPass {
                    language,
                    name: r.name.clone(),
                    passed: 0,
                    scored: 0,
                });
                out.len() - 1
            }
        };
        // A harness fault or a language without its toolchain is not the program's verdict.
        if !matches!(r.status, Status::HarnessError | Status::Skipped) {
            out[index].scored += 1;
            out[index].passed += usize::from(r.status == Status::Ok);
        }
    }
    out
}

impl Context<'_> {
    /// `value` from `path` when resuming and it is there, else computed and written there.
    fn cached<T: Serialize + DeserializeOwned>(
        &self,
        path: &Path,
        compute: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if self.run.resume && path.is_file() {
            return read_json(path);
        }
        let value = compute()?;
        write_json(path, &value)?;
        Ok(value)
    }

    /// Validation cross-entropy per language and pass@1 per problem of `model`, kept in
    /// `dir` (`valid-loss.json`, `completions.jsonl`, `results.json`).
    fn measure<B: Backend>(
        &self,
        model: &CausalLm<B>,
        name: &str,
        seed: u64,
        step0: bool,
        dir: &Path,
        device: &B::Device,
    ) -> Result<Measurement> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let done = dir.join("measurement.json");
        if self.run.resume && done.is_file() {
            let m: Measurement = read_json(&done)?;
            return Ok(Measurement { seed, ..m });
        }
        let when = if step0 { "step 0" } else { "fine-tuned" };
        let start = Instant::now();
        let valid_loss: BTreeMap<Language, f64> =
            self.cached(&dir.join("valid-loss.json"), || {
                log(&format!(
                    "seed {seed}: {name} ({when}): validation loss on {} sequences",
                    self.valid.len()
                ));
                Ok(loss_per_language(
                    model,
                    &self.valid,
                    self.cfg.valid_batch_size,
                    device,
                ))
            })?;
        let greedy = SampleSettings {
            samples: 1,
            max_new_tokens: self.cfg.max_new_tokens,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        };
        let report: EvalReport = self.cached(&dir.join("results.json"), || {
            log(&format!(
                "seed {seed}: {name} ({when}): greedy pass@1 on {} problems",
                self.problems.len()
            ));
            self.run_problems(model, dir, &greedy)
        })?;
        let problems = per_problem(&report);
        let mut sampled = Vec::new();
        if self.cfg.samples > 0 {
            let settings = SampleSettings {
                samples: self.cfg.samples,
                temperature: self.cfg.temperature,
                top_p: 0.95,
                seed,
                ..greedy
            };
            let sub = dir.join("sampled");
            let report: EvalReport = self.cached(&sub.join("results.json"), || {
                log(&format!(
                    "seed {seed}: {name} ({when}): pass@1 of {} samples at temperature {} on {} \
                     problems",
                    settings.samples,
                    settings.temperature,
                    self.problems.len()
                ));
                self.run_problems(model, &sub, &settings)
            })?;
            sampled = per_problem(&report);
        }
        let measurement = Measurement {
            model: name.to_string(),
            seed,
            step0,
            valid_loss,
            problems,
            sampled,
            seconds: start.elapsed().as_secs_f64(),
        };
        write_json(&done, &measurement)?;
        Ok(measurement)
    }

    /// Completions of every problem under `settings` (resumable in `dir/completions.jsonl`),
    /// run in the sandbox.
    fn run_problems<B: Backend>(
        &self,
        model: &CausalLm<B>,
        dir: &Path,
        settings: &SampleSettings,
    ) -> Result<EvalReport> {
        let (mut log, done) = CompletionLog::open(&dir.join("completions.jsonl"), self.run.resume)?;
        let total = self.problems.len() * settings.samples;
        let progress = Progress::new("generate", total);
        let completions: Vec<Completion> = generate_completions(
            model,
            &self.data.tokenizer,
            &self.special,
            &self.problems,
            settings,
            self.cfg.eval_batch_size,
            &mut log,
            done,
            |n, _, name| progress.item(n, name),
        )?;
        progress.finish();
        let progress = Progress::new("evaluate", total);
        let report = evaluate(&self.problems, &completions, &self.run.eval, |n, _, r| {
            progress.item(n, &format!("{} {}", r.name, r.status.name()));
        })?;
        progress.finish();
        Ok(report)
    }

    /// Fine-tunes `start` in `dir` and exports it to `dir/model`; with `resume`, an export
    /// already there is loaded instead and an interrupted training continues.
    #[allow(clippy::too_many_arguments)]
    fn fine_tune<B: AutodiffBackend>(
        &self,
        start: CausalLm<B::InnerBackend>,
        config: &MultiplMoeConfig,
        freeze: FreezePolicy,
        balance_coef: f64,
        (mix, valid_mix): (&[Sequence], &[Sequence]),
        seed: u64,
        dir: &Path,
        device: &B::Device,
    ) -> Result<(CausalLm<B::InnerBackend>, f64)> {
        let model_dir = dir.join("model");
        let seconds_file = dir.join("train-seconds.json");
        if self.run.resume && model_dir.join("config.json").is_file() && seconds_file.is_file() {
            log(&format!("{}: fine-tuned, loading it", model_dir.display()));
            let model = load_model_with_notes::<B::InnerBackend>(&model_dir, device)?.model;
            return Ok((model, read_json(&seconds_file)?));
        }
        let began = Instant::now();
        let cfg = TrainConfig {
            freeze,
            seed: self.cfg.finetune.seed + seed,
            ..self.cfg.finetune.clone()
        };
        let target = TrainTarget::<B>::new(dir).with_resume(self.run.resume);
        let run = |target: &TrainTarget<B>| {
            train(
                CausalLm::<B>::from_inner(start.clone()),
                balance_coef,
                mix.to_vec(),
                valid_mix.to_vec(),
                &cfg,
                target,
            )
        };
        let trained = match run(&target) {
            // Training finished but the run stopped before its export was complete: the
            // checkpoints hold no model to export from, so the stage trains again.
            Err(TrainError::Config {
                field: "resume", ..
            }) => {
                log(&format!(
                    "{}: training had finished but its export had not; training it again",
                    dir.display()
                ));
                run(&target.clone().with_resume(false))?
            }
            other => other?,
        };
        if model_dir.exists() {
            // An export that a killed run finished before its time was recorded.
            std::fs::remove_dir_all(&model_dir).map_err(|e| TrainError::io(&model_dir, e))?;
        }
        save_model_from(
            &trained,
            config,
            &model_dir,
            SaveDtype::F32,
            Some(self.run.base),
        )?;
        let seconds = began.elapsed().as_secs_f64();
        write_json(&seconds_file, &seconds)?;
        Ok((trained, seconds))
    }

    /// Measures `candidate` at step 0 (when it is not the dense model itself), fine-tunes it
    /// in `dir/<its directory>`, measures it again, and records its trainable parameters and
    /// training time in `out`.
    fn fine_tune_and_measure<B: AutodiffBackend>(
        &self,
        candidate: Candidate<B::InnerBackend>,
        data: (&[Sequence], &[Sequence]),
        seed: u64,
        dir: &Path,
        device: &B::Device,
        out: &mut SeedResult,
    ) -> Result<()> {
        let (name, sub) = BASE_MODELS[candidate.index];
        let dir = dir.join(sub);
        let trainable = trainable_params(&candidate.model, &candidate.freeze);
        out.trainable.insert(name.to_string(), trainable);
        if candidate.step0 {
            let step0 = &dir.join("step-0");
            out.measured
                .push(self.measure(&candidate.model, name, seed, true, step0, device)?);
        }
        log(&format!("seed {seed}: {name}: {}", candidate.training));
        let (trained, secs) = self.fine_tune::<B>(
            candidate.model,
            &candidate.config,
            candidate.freeze,
            candidate.balance_coef,
            data,
            seed,
            &dir,
            device,
        )?;
        out.seconds
            .insert(format!("seed {seed}: {name} training"), secs);
        let after = &dir.join("fine-tuned");
        out.measured
            .push(self.measure(&trained, name, seed, false, after, device)?);
        Ok(())
    }

    /// The four fine-tuned models of `seed`, each measured at step 0 and after fine-tuning.
    fn run_seed<B: AutodiffBackend>(
        &self,
        dense: &CausalLm<B::InnerBackend>,
        dense_cfg: &MultiplMoeConfig,
        seed: u64,
        device: &B::Device,
    ) -> Result<SeedResult> {
        let dir = self.run.out.join(format!("seed-{seed}"));
        let share = self.cfg.low_resource_share;
        let valid_mix = Mix::low_resource(share).sample(&self.data.valid, 64, 2)?;
        let mix = Mix::low_resource(share).sample(
            &self.data.train,
            self.cfg.finetune_sequences,
            4 + 1000 * seed,
        )?;
        let data = (mix.as_slice(), valid_mix.as_slice());
        let mut out = SeedResult {
            measured: Vec::new(),
            trainable: BTreeMap::new(),
            seconds: BTreeMap::new(),
        };
        let mut run = |candidate| {
            self.fine_tune_and_measure::<B>(candidate, data, seed, &dir, device, &mut out)
        };
        // dense-FT starts as the dense model, measured once for every seed.
        run(Candidate {
            index: 1,
            model: dense.clone(),
            config: dense_cfg.clone(),
            freeze: FreezePolicy::all(),
            balance_coef: 0.0,
            step0: false,
            training: "fine-tuning every weight".into(),
        })?;
        let moe = self.cfg.moe_for(dense_cfg.model.num_hidden_layers);
        let mut moe_trainable = 0;
        for (index, function_preserving) in [(3, false), (4, true)] {
            let options = UpcycleOptions {
                seed,
                function_preserving,
                ..UpcycleOptions::default()
            };
            let (hybrid, hybrid_cfg) = upcycle(dense.clone(), dense_cfg, &moe, &options)?;
            let freeze = FreezePolicy::paper();
            moe_trainable = trainable_params(&hybrid, &freeze);
            run(Candidate {
                index,
                model: hybrid,
                config: hybrid_cfg,
                freeze,
                balance_coef: moe.balance_coef,
                step0: true,
                training: format!(
                    "training with the SPEC §5 freeze ({moe_trainable} trainable parameters)"
                ),
            })?;
        }
        let (factor, ffn_only) = matched_widening(dense, moe_trainable);
        let (wide, wide_cfg) =
            widen_dense_ffn(dense.clone(), dense_cfg, factor, self.cfg.widen_noise, seed)?;
        run(Candidate {
            index: 2,
            model: wide,
            config: wide_cfg,
            freeze: ffn_only,
            balance_coef: 0.0,
            step0: true,
            training: format!(
                "fine-tuning the FFNs widened {factor}× (function-preserving), the rest frozen"
            ),
        })?;
        Ok(out)
    }
}

/// What a run's results depend on besides the base's weights and the corpus' text, kept in
/// `demo-settings.json`: a resumed run must have the same.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Settings {
    config: BaseDemoConfig,
    base: String,
    data: String,
    seeds: Vec<u64>,
    problems: Vec<(String, String)>,
}

/// Writes `demo-settings.json`, or with `resume` checks the earlier run's, naming the first
/// setting that differs.
fn record_settings(cfg: &BaseDemoConfig, run: &BaseDemo, problems: &[Problem]) -> Result<()> {
    let settings = Settings {
        config: cfg.clone(),
        base: run.base.display().to_string(),
        data: match run.data {
            DemoData::Embedded => "embedded".into(),
            DemoData::Path(path) => path.display().to_string(),
        },
        seeds: run.seeds.to_vec(),
        problems: problems
            .iter()
            .map(|p| (p.language_name(), p.name.clone()))
            .collect(),
    };
    let path = run.out.join("demo-settings.json");
    // A run killed before it wrote its settings has nothing to compare: it starts here.
    if run.resume && path.is_file() {
        let earlier: Settings = read_json(&path)?;
        let differs = if earlier.config != settings.config {
            Some("the preset or its overrides (--preset, --limit, --samples, --temperature)")
        } else if earlier.base != settings.base {
            Some("--base")
        } else if earlier.data != settings.data {
            Some("--data")
        } else if earlier.seeds != settings.seeds {
            Some("--seeds")
        } else if earlier.problems != settings.problems {
            Some("the problems (--problems, --limit)")
        } else {
            None
        };
        if let Some(what) = differs {
            return Err(TrainError::Config {
                field: "resume",
                reason: format!(
                    "{what} differ from the run in {} ({}); resume with the same settings or \
                     start a new run",
                    run.out.display(),
                    path.display()
                ),
            });
        }
        return Ok(());
    }
    write_json(&path, &settings)
}

/// Runs the main job on the pretrained model `run.base` for each seed, prints the tables and
/// verdicts, and writes `report.json`, `table.txt` and the charts under `run.out`.
///
/// # Errors
/// The base model or its tokenizer cannot be read, the corpus lacks a language or data, a
/// stage fails, or the sandbox cannot run programs.
pub fn run_base_demo<B: AutodiffBackend>(
    cfg: &BaseDemoConfig,
    run: &BaseDemo,
    device: &B::Device,
) -> Result<BaseReport> {
    cfg.validate()?;
    let reductions = cfg.reductions();
    for line in &reductions {
        log(&format!("reduced from the paper: {line}"));
    }
    let loaded = load_model_with_notes::<B::InnerBackend>(run.base, device)?;
    for note in &loaded.notes {
        log(&format!("note: {note}"));
    }
    let (dense_cfg, dense) = (loaded.config, loaded.model);
    if dense_cfg.moe.is_some() {
        return Err(TrainError::Config {
            field: "base",
            reason: format!(
                "{} is already a hybrid model; the main job starts from a dense checkpoint",
                run.base.display()
            ),
        });
    }
    let tokenizer_json = run.base.join("tokenizer.json");
    let tokenizer = TextTokenizer::from_file(&tokenizer_json)?;
    if tokenizer.vocab_size() > dense_cfg.model.vocab_size {
        return Err(TrainError::Data {
            path: tokenizer_json,
            reason: format!(
                "has {} tokens but the model has vocab_size {}",
                tokenizer.vocab_size(),
                dense_cfg.model.vocab_size
            ),
        });
    }
    let special = SpecialTokens::load(
        &tokenizer,
        &tokenizer_json,
        &run.base.join("generation_config.json"),
    )?;
    let split = Split {
        valid_fraction: cfg.valid_fraction,
        max_valid_per_language: cfg.max_valid_per_language,
        seq_len: cfg.finetune.seq_len,
    };
    let data = prepare(
        run.data,
        cfg.documents_per_language,
        TokenizerSource::Given(Box::new(tokenizer)),
        &split,
        run.out,
    )?;
    let problems = match cfg.problems_per_language {
        0 => run.problems.to_vec(),
        n => first_per_language(run.problems, n),
    };
    if problems.is_empty() {
        return Err(TrainError::NotEnoughData(
            "no MultiPL-E problem to evaluate".into(),
        ));
    }
    record_settings(cfg, run, &problems)?;
    let valid: Vec<Sequence> = data.valid.values().flatten().cloned().collect();
    let ctx = Context {
        run,
        cfg,
        data,
        special,
        problems,
        valid,
    };
    let (dense_name, dense_dir) = BASE_MODELS[0];
    let base = ctx.measure(
        &dense,
        dense_name,
        0,
        true,
        &run.out.join(dense_dir),
        device,
    )?;
    let mut seconds = BTreeMap::from([(format!("{dense_name}: measurement"), base.seconds)]);
    let mut measurements = Vec::new();
    let mut trainable = BTreeMap::from([(dense_name.to_string(), 0)]);
    for &seed in run.seeds {
        // The base model is the same for every seed: its measurement is each seed's dense row.
        measurements.push(Measurement {
            seed,
            ..base.clone()
        });
        let result = ctx.run_seed::<B>(&dense, &dense_cfg, seed, device)?;
        measurements.extend(result.measured);
        trainable.extend(result.trainable);
        seconds.extend(result.seconds);
    }
    let report = BaseReport::new(
        run.base.display().to_string(),
        run.seeds.to_vec(),
        measurements,
        trainable,
        seconds,
        reductions,
        (cfg.samples > 0).then_some((cfg.samples, cfg.temperature)),
    );
    println!("\n{}", report.table());
    report.write(run.out)?;
    log(&format!(
        "wrote report.json, table.txt and the charts under {}",
        run.out.display()
    ));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::BaseDemoConfig;

    /// The paper preset departs only in its length; the CPU preset names each of its
    /// reductions.
    #[test]
    fn reductions_are_named() {
        let paper = BaseDemoConfig::paper().reductions();
        assert_eq!(paper.len(), 1, "{paper:?}");
        assert!(paper[0].starts_with("1000 optimizer steps"), "{paper:?}");
        let cpu = BaseDemoConfig::cpu().reductions().join("\n");
        for part in [
            "last 3 layers",
            "96 optimizer steps",
            "first 10 problems",
            "256 tokens",
            "greedy pass@1 only",
        ] {
            assert!(cpu.contains(part), "{part} missing from {cpu}");
        }
    }

    /// `hybrid_last_layers` picks the last layers of the base model.
    #[test]
    fn the_last_layers_are_upcycled() {
        let moe = BaseDemoConfig::cpu().moe_for(30);
        assert_eq!(moe.hybrid_layers, Some(vec![27, 28, 29]));
        let all = BaseDemoConfig::paper().moe_for(30);
        assert_eq!(all.hybrid_layers, None);
    }
}
