//! The `generate` and `eval` subcommands.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use multipl_moe::backend::Backend;
use multipl_moe::core::{CausalLm, SamplingConfig};
use multipl_moe::train::data::corpus::Language;
use multipl_moe::train::data::tokenizer::TextTokenizer;
use multipl_moe::train::files::write_atomic;
use multipl_moe::train::infer::textgen::{
    SpecialTokens, TextBatchOptions, TextGenerateOptions, TextRow, generate_text_batch,
    generate_text_with,
};
use multipl_moe::train::multiple::error::EvalError;
use multipl_moe::train::multiple::exec::LimitFlags;
use multipl_moe::train::multiple::generate::{SampleSettings, generate_completions};
use multipl_moe::train::multiple::log::{
    CompletionLog, GenerationRecord, model_sha256, prepare_eval_out, sha256_files,
};
use multipl_moe::train::multiple::report::{EvalSettings, evaluate};
use multipl_moe::train::multiple::sandbox::{ResourceLimits, Sandbox};
use multipl_moe::train::multiple::{
    Completion, Problem, assign_languages, cut_at_stop, first_per_language, read_jsonl,
    read_problems,
};
use multipl_moe::train::progress::Progress;

use crate::loading::{ensure_backend, load_model};

/// `--tokenizer`, else `tokenizer.json` next to the model's weights.
fn tokenizer_path(model: &Path, explicit: Option<&Path>) -> PathBuf {
    explicit.map_or_else(|| model.join("tokenizer.json"), Path::to_path_buf)
}

/// The tokenizer file at [`tokenizer_path`], which must exist (`load` parses it).
fn tokenizer_file(model: &Path, explicit: Option<&Path>) -> Result<PathBuf> {
    let path = tokenizer_path(model, explicit);
    if !path.is_file() {
        bail!(
            "no tokenizer at {}; pass --tokenizer FILE (a Hugging Face tokenizer.json)",
            path.display()
        );
    }
    Ok(path)
}

/// The model of `model` and its tokenizer, after checking that they belong together; also the
/// seconds each took to load (weights, tokenizer), which `generate` reports.
fn load(
    model: &Path,
    tokenizer: Option<&Path>,
) -> Result<(CausalLm<Backend>, TextTokenizer, [f64; 2])> {
    let tokenizer_file = tokenizer_file(model, tokenizer)?;
    let device = ensure_backend()?;
    let start = std::time::Instant::now();
    let (cfg, m) = load_model(model, &device)?;
    let model_seconds = start.elapsed().as_secs_f64();
    // Parsed after the weights, so that it overlaps with the import's background mapping of
    // the weights' pages (`TensorStore::finish`).
    let start = std::time::Instant::now();
    let tokenizer = TextTokenizer::from_file(&tokenizer_file)?;
    let tokenizer_seconds = start.elapsed().as_secs_f64();
    // As `train` does: every id the tokenizer can produce must have an embedding row.
    if tokenizer.vocab_size() > cfg.model.vocab_size {
        bail!(
            "the tokenizer has {} tokens but the model {} has vocab_size {}: they do not belong \
             together (pass the model's own tokenizer with --tokenizer)",
            tokenizer.vocab_size(),
            model.display(),
            cfg.model.vocab_size
        );
    }
    Ok((m, tokenizer, [model_seconds, tokenizer_seconds]))
}

/// Settings of `multipl-moe generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Model directory (Hugging Face dense or exported hybrid).
    #[arg(long)]
    model: PathBuf,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus sampling threshold; 1 keeps every token.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Keep the k most likely tokens; 0 keeps all.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop sequence (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// tokenizer.json, if not in the model directory.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Keep generating after EOS (for benchmarks: always `--max-new-tokens` tokens).
    #[arg(long)]
    ignore_eos: bool,
    /// Completions of the prompt to sample (needs --temperature above 0 when above 1); sample
    /// `i` is seeded with `--seed` mixed with `i` (sample 0 with `--seed` itself).
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// Samples decoded together (one forward per step for all of them, one shared prefill).
    #[arg(long, default_value_t = 20)]
    batch_size: usize,
}

/// Streams a completion to stdout, then prints prefill and decode speed.
pub fn generate_cmd(args: GenerateArgs) -> Result<()> {
    // Checked before the model loads.
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if args.max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1");
    }
    if args.samples > 1 && args.temperature == 0.0 {
        bail!(
            "--samples {}: greedy decoding gives the same completion every time; sampling \
             several needs --temperature above 0",
            args.samples
        );
    }
    let (model, tokenizer, [model_seconds, tokenizer_seconds]) =
        load(&args.model, args.tokenizer.as_deref())?;
    eprintln!(
        "loaded {} in {model_seconds:.3} s (tokenizer {tokenizer_seconds:.3} s)",
        args.model.display(),
    );
    let options = TextGenerateOptions {
        max_new_tokens: args.max_new_tokens,
        stop: args.stop.clone(),
        sampling: SamplingConfig::new()
            .with_temperature(args.temperature)
            .with_top_p(args.top_p)
            .with_top_k(args.top_k)
            .with_seed(args.seed),
        stop_at_eos: !args.ignore_eos,
    };
    // As `eval`: stop at EOS, Qwen's end tokens and generation_config.json's eos_token_id,
    // and leave special tokens out of the text.
    let special = SpecialTokens::load(
        &tokenizer,
        &tokenizer_path(&args.model, args.tokenizer.as_deref()),
        &args.model.join("generation_config.json"),
    )?;
    if args.samples > 1 {
        return generate_samples(&args, &model, &tokenizer, &options, &special);
    }
    let mut stdout = std::io::stdout();
    let out = generate_text_with(
        &model,
        &tokenizer,
        &args.prompt,
        &options,
        &special,
        |piece| {
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        },
    )?;
    println!();
    let g = &out.generated;
    eprintln!(
        "prefill: {} tokens in {:.3} s ({:.1} tokens/s); decode: {} tokens in {:.3} s ({:.1} \
         tokens/s); stopped by {}",
        g.prompt_tokens,
        g.prefill_secs,
        g.prefill_tokens_per_sec(),
        g.decode_steps,
        g.decode_secs,
        g.decode_tokens_per_sec(),
        match (&out.stop_sequence, g.stop) {
            (Some(s), _) => format!("stop sequence {s:?}"),
            (None, reason) => format!("{reason:?}"),
        }
    );
    Ok(())
}

/// `generate --samples N`: the samples in batches of `--batch-size`, each printed after a
/// `=== sample i ===` line, then the throughput (completions and tokens per second).
fn generate_samples(
    args: &GenerateArgs,
    model: &CausalLm<Backend>,
    tokenizer: &TextTokenizer,
    options: &TextGenerateOptions,
    special: &SpecialTokens,
) -> Result<()> {
    let rows: Vec<TextRow> = (0..args.samples)
        .map(|i| TextRow {
            prompt: args.prompt.clone(),
            stop: options.stop.clone(),
            sampling: options
                .sampling
                .clone()
                .with_seed(args.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        })
        .collect();
    let batch = TextBatchOptions {
        max_new_tokens: options.max_new_tokens,
        stop_at_eos: options.stop_at_eos,
    };
    let start = std::time::Instant::now();
    let (mut index, mut tokens) = (0, 0);
    for chunk in rows.chunks(args.batch_size) {
        for out in generate_text_batch(model, tokenizer, chunk, &batch, special, |_, _| {})? {
            println!("=== sample {index} ===\n{}", out.text);
            tokens += out.generated.tokens.len();
            index += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "samples: {} completions, {tokens} tokens in {secs:.3} s ({:.2} completions/s, {:.1} \
         tokens/s), batch size {}",
        args.samples,
        args.samples as f64 / secs,
        tokens as f64 / secs,
        args.batch_size.min(args.samples)
    );
    Ok(())
}

/// Settings of `multipl-moe eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Model directory; without it no model is loaded and --completions is evaluated.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Problems: MultiPL-E JSONL (name, language, prompt, tests, stop_tokens; the Hugging
    /// Face dataset's rows and MultiPL-E's prompts/*.jsonl as they are) or OpenAI HumanEval
    /// JSONL (task_id, prompt, test, entry_point). Repeatable, and a directory stands for its
    /// `*.jsonl` files: several languages in one run, scored per language.
    #[arg(long, required = true, num_args = 1..)]
    problems: Vec<PathBuf>,
    /// Completions made elsewhere (JSONL: name, completion; one line per sample).
    #[arg(long)]
    completions: Option<PathBuf>,
    /// Do not cut --completions at the problem's stop tokens.
    #[arg(long)]
    no_cut: bool,
    /// Only this language (python, java, cpp, rust, go, ruby or a MultiPL-E code).
    #[arg(long)]
    language: Option<String>,
    /// Only the first N problems of each language, in file order (a quick subset; the
    /// benchmark's figures use every problem).
    #[arg(long)]
    limit: Option<usize>,
    /// Output directory for completions.jsonl and results.json.
    #[arg(long, default_value = "runs/eval")]
    out: PathBuf,
    /// Continue an interrupted run: keep OUT/completions.jsonl and generate only what is
    /// missing, with the settings the run recorded in OUT/eval.json (others are refused).
    #[arg(long)]
    resume: bool,
    /// Replace an earlier evaluation in --out (its completions.jsonl, results.json and
    /// eval.json; nothing else there is touched).
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Completions per problem (needs --temperature above 0 when above 1).
    #[arg(long, default_value_t = 1, conflicts_with = "completions")]
    samples: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0, conflicts_with = "completions")]
    temperature: f64,
    /// Nucleus sampling threshold when sampling.
    #[arg(long, default_value_t = 0.95, conflicts_with = "completions")]
    top_p: f64,
    /// Sampling seed.
    #[arg(long, default_value_t = 0, conflicts_with = "completions")]
    seed: u64,
    /// Most tokens per completion.
    #[arg(long, default_value_t = 512, conflicts_with = "completions")]
    max_new_tokens: usize,
    /// Time limit of each program run, in seconds, for every language (default: MultiPL-E's
    /// per language: 5 s for Rust and Ruby, 15 s for the others, Go 30 s with its build).
    #[arg(long)]
    timeout: Option<f64>,
    /// Time limit of each compilation, in seconds, for every language (default: MultiPL-E's,
    /// 15 s; Go 30 s with its run).
    #[arg(long)]
    compile_timeout: Option<f64>,
    /// Jars on Java's compile and run classpath, separated by `:` (default: Debian's
    /// /usr/share/java/javatuples.jar, which MultiPL-E's Java prompts import).
    #[arg(long)]
    java_classpath: Option<String>,
    /// Memory limit of every process of a program (RLIMIT_DATA), in MiB.
    #[arg(long, default_value_t = 4096)]
    memory_mib: u64,
    /// Process and thread limit of a program (RLIMIT_NPROC, set in the sandbox's user
    /// namespace, where only the program's own processes count; the kernel does not apply it
    /// to root).
    #[arg(long, default_value_t = 1024)]
    max_processes: u64,
    /// Largest file a program may write, its output included, in MiB.
    #[arg(long, default_value_t = 256)]
    file_size_mib: u64,
    /// Run the programs without a sandbox, with your own permissions, when bubblewrap is
    /// unavailable.
    #[arg(long)]
    unsafe_no_sandbox: bool,
    /// Completions decoded together: the samples of a problem share its prompt's prefill; a
    /// model without hybrid layers also batches several problems (left-padded).
    #[arg(long, default_value_t = 20, conflicts_with = "completions")]
    batch_size: usize,
    /// Programs run in parallel (default: the number of CPUs).
    #[arg(long)]
    jobs: Option<usize>,
    /// tokenizer.json, if not in the model directory.
    #[arg(long, conflicts_with = "completions")]
    tokenizer: Option<PathBuf>,
}

/// `--completions FILE`: its records, each given its problem's language and cut at its
/// stop sequences if `cut`. A record of a problem that `--language` left out is dropped; one
/// that no problem file has, or whose name several languages share and that names no
/// language, is an error.
fn read_completions(
    file: &Path,
    problems: &[Problem],
    files: &[PathBuf],
    cut: bool,
) -> Result<Vec<Completion>> {
    let mut records = read_jsonl::<Completion>(file)?;
    let mut every = Vec::new();
    for f in files {
        every.extend(read_problems(f, None)?);
    }
    // Records of problems that --language or --limit left out are dropped; the others must
    // each name one problem of the run.
    records.retain(|c| problems.iter().any(|p| c.is_of(p)) || !every.iter().any(|p| c.is_of(p)));
    assign_languages(problems, &mut records).map_err(|reason| {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        anyhow::anyhow!(
            "{}: {reason} (problems: {})",
            file.display(),
            names.join(", ")
        )
    })?;
    if cut {
        for c in &mut records {
            if let Some(p) = problems.iter().find(|p| c.is_of(p)) {
                c.completion = cut_at_stop(&c.completion, &p.stop_tokens);
            }
        }
    }
    Ok(records)
}

/// The problem files of `--problems`: files as given, directories as their `*.jsonl` files
/// in name order (an error when a directory has none).
pub(crate) fn problem_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"))
                })
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            if found.is_empty() {
                bail!(
                    "{}: a directory with no *.jsonl problem file",
                    path.display()
                );
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    // A file given twice (by name, or by name and through its directory) is read once; the
    // order of the flags does not matter (it would change the digest --resume compares).
    let mut keyed: Vec<(PathBuf, PathBuf)> = files
        .into_iter()
        .map(|f| (std::fs::canonicalize(&f).unwrap_or_else(|_| f.clone()), f))
        .collect();
    keyed.sort();
    keyed.dedup_by(|a, b| a.0 == b.0);
    Ok(keyed.into_iter().map(|(_, f)| f).collect())
}

/// The problems of every file, those of `language` when given; a problem (language and
/// name) in two files is an error naming both.
pub(crate) fn read_all_problems(files: &[PathBuf], language: Option<&str>) -> Result<Vec<Problem>> {
    let mut seen: BTreeMap<(String, String), &Path> = BTreeMap::new();
    let mut all = Vec::new();
    for file in files {
        for p in read_problems(file, language)? {
            let key = (p.language_name(), p.name.clone());
            if let Some(first) = seen.insert(key, file) {
                bail!(
                    "problem `{}` ({}) is in both {} and {}",
                    p.name,
                    p.language_name(),
                    first.display(),
                    file.display()
                );
            }
            all.push(p);
        }
    }
    Ok(all)
}

/// `--model DIR`: generates `sampling.samples` completions per problem into
/// `<out>/completions.jsonl`, continuing that file with `--resume`.
fn generate_for_eval(
    model: &Path,
    args: &EvalArgs,
    files: &[PathBuf],
    problems: &[Problem],
    sampling: &SampleSettings,
) -> Result<Vec<Completion>> {
    // Checked before the model loads: a resume with other settings is refused at once.
    // A missing tokenizer is refused here with its own advice (--tokenizer).
    let tokenizer_json = tokenizer_file(model, args.tokenizer.as_deref())?;
    GenerationRecord {
        model_sha256: model_sha256(model)?,
        tokenizer_sha256: sha256_files(std::slice::from_ref(&tokenizer_json))?,
        problems_sha256: sha256_files(files)?,
        // Canonical (`py` and `python` are one setting).
        language: args
            .language
            .as_deref()
            .map(|l| Language::from_name(l).map_or(l.to_string(), |lang| lang.name().to_string())),
        samples: sampling.samples,
        max_new_tokens: sampling.max_new_tokens,
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        seed: sampling.seed,
    }
    .record(&args.out, args.resume)?;
    let (lm, tokenizer, _) = load(model, args.tokenizer.as_deref())?;
    let special = SpecialTokens::load(
        &tokenizer,
        &tokenizer_json,
        &model.join("generation_config.json"),
    )?;
    let path = args.out.join("completions.jsonl");
    let (mut log, done) = CompletionLog::open(&path, args.resume)?;
    if !done.is_empty() {
        eprintln!(
            "resuming: {} completions already in {}",
            done.len(),
            path.display()
        );
    }
    let progress = Progress::new("generate", problems.len() * args.samples);
    let records = generate_completions(
        &lm,
        &tokenizer,
        &special,
        problems,
        sampling,
        args.batch_size,
        &mut log,
        done,
        |n, _, name| progress.item(n, name),
    )?;
    progress.finish();
    eprintln!("wrote {}", path.display());
    Ok(records)
}

/// Bubblewrap with `resources`; without it, no sandbox (with a warning) only when
/// `unsafe_no_sandbox`.
pub(crate) fn sandbox(resources: ResourceLimits, unsafe_no_sandbox: bool) -> Result<Sandbox> {
    match Sandbox::bubblewrap(resources) {
        Ok(sandbox) => Ok(sandbox),
        Err(e) if unsafe_no_sandbox => {
            // The cause, not the error's advice to pass the flag that was passed.
            let cause = match &e {
                EvalError::NoSandbox { reason } => reason.clone(),
                other => other.to_string(),
            };
            eprintln!(
                "warning: --unsafe-no-sandbox: no sandbox ({cause}); programs run with your \
                 permissions"
            );
            Ok(Sandbox::unsafe_none(resources))
        }
        Err(e) => Err(e.into()),
    }
}

/// Generates (with a model) or reads completions, runs them in the sandbox and writes
/// `results.json`.
pub fn eval_cmd(args: EvalArgs) -> Result<()> {
    // Every setting is checked before anything slow starts.
    let limits = LimitFlags::from_secs(args.timeout, args.compile_timeout)?;
    let resources = ResourceLimits::new(args.memory_mib, args.max_processes, args.file_size_mib)?;
    let sampling = SampleSettings {
        samples: args.samples,
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
    };
    sampling.validate()?;
    if args.jobs == Some(0) {
        bail!("--jobs must be at least 1");
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if args.resume && args.model.is_none() {
        bail!(
            "--resume continues generating with --model; there is nothing to resume with --completions"
        );
    }
    if args.no_cut && args.completions.is_none() {
        bail!("--no-cut applies to --completions only (generated completions are always cut)");
    }
    if args.limit == Some(0) {
        bail!("--limit must be at least 1");
    }
    match (&args.model, &args.completions) {
        (Some(_), Some(_)) => bail!("give --model (to generate) or --completions, not both"),
        (None, None) => bail!("give --model DIR to generate completions, or --completions FILE"),
        _ => {}
    }
    let files = problem_files(&args.problems)?;
    let mut problems = read_all_problems(&files, args.language.as_deref())?;
    if let Some(limit) = args.limit {
        problems = first_per_language(&problems, limit);
    }
    if problems.is_empty() {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        bail!(
            "{}: no problems{}",
            names.join(", "),
            args.language
                .as_deref()
                .map_or(String::new(), |l| format!(" for --language {l}"))
        );
    }
    let sandbox = sandbox(resources, args.unsafe_no_sandbox)?;
    // Everything is checked (and given completions read) before an earlier evaluation in
    // --out is replaced.
    let read = match &args.completions {
        Some(file) => Some(read_completions(file, &problems, &files, !args.no_cut)?),
        None => None,
    };
    prepare_eval_out(&args.out, args.resume, args.overwrite, args.model.is_some())?;
    let completions: Vec<Completion> = match (read, &args.model) {
        (Some(records), _) => records,
        (None, Some(model)) => generate_for_eval(model, &args, &files, &problems, &sampling)?,
        (None, None) => bail!("give --model DIR to generate completions, or --completions FILE"),
    };
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
    });
    let settings = EvalSettings {
        sandbox: &sandbox,
        limits,
        jobs,
        java_classpath: args.java_classpath.as_deref(),
    };
    // One run per sample, or one per problem without a completion.
    let total: usize = problems
        .iter()
        .map(|p| completions.iter().filter(|c| c.is_of(p)).count().max(1))
        .sum();
    let progress = Progress::new("evaluate", total);
    let report = evaluate(&problems, &completions, &settings, |done, _, r| {
        progress.item(done.min(total), &format!("{} {}", r.name, r.status.name()));
    })?;
    progress.finish();
    let path = args.out.join("results.json");
    write_atomic(&path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    print!("{}", report.table());
    println!("wrote {}", path.display());
    Ok(())
}

/// Settings of `multipl-moe routing`.
#[derive(clap::Args, Debug)]
pub struct RoutingArgs {
    /// Model directory (a hybrid model, with tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Source tree or JSONL; default: the demo's embedded corpus.
    #[arg(long)]
    data: Option<PathBuf>,
    /// A `train` run directory: hold out its validation split (its run.json's
    /// `valid_fraction` and `train.seed`) of `--data` instead of the demo's.
    #[arg(long, requires = "data")]
    run: Option<PathBuf>,
    /// Validation sequences.
    #[arg(long, default_value_t = 48)]
    sequences: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Sequences per training batch (expert choice competes within it).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// tokenizer.json, if not in the model directory.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

/// Measures inference-vs-training segment routing on a validation split and prints it: the
/// demo's (whole documents, fraction 0.1, seed 7), or with `--run` that `train` run's.
pub fn routing_cmd(args: RoutingArgs) -> Result<()> {
    use multipl_moe::train::data::corpus::read_path;
    use multipl_moe::train::data::dataset::{
        interleave_languages, pack, split_documents, tokenize,
    };
    use multipl_moe::train::data::generator::embedded;
    use multipl_moe::train::demo::agreement::routing_agreement;
    use multipl_moe::train::demo::pipeline::DemoConfig;
    use multipl_moe::train::training::run::RunConfig;

    for (name, value) in [
        ("--sequences", args.sequences),
        ("--seq-len", args.seq_len),
        ("--batch", args.batch),
    ] {
        if value == 0 {
            bail!("{name} must be >= 1, got 0");
        }
    }
    if args.seq_len < 2 {
        bail!("--seq-len must be >= 2 (one input and one target), got 1");
    }
    let (model, tokenizer, _) = load(&args.model, args.tokenizer.as_deref())?;
    if !model
        .layers
        .iter()
        .any(|l| matches!(l.mlp, multipl_moe::core::decoder::FeedForward::Hybrid(_)))
    {
        bail!(
            "{}: the model has no hybrid MoE layer; routing agreement needs a hybrid model \
             (`multipl-moe upcycle` makes one)",
            args.model.display()
        );
    }
    let max_len = model.rope.max_positions();
    if args.seq_len > max_len {
        bail!(
            "--seq-len {} is longer than the model's {max_len} positions (max_position_embeddings)",
            args.seq_len
        );
    }
    let demo = DemoConfig::tiny();
    let (valid_fraction, seed) = match &args.run {
        Some(run) => {
            let cfg = RunConfig::from_file(&run.join("run.json"))?;
            (cfg.valid_fraction, cfg.train.seed)
        }
        None => (demo.valid_fraction, 7),
    };
    let corpus = match &args.data {
        Some(path) => read_path(path)?,
        None => embedded(demo.documents_per_language),
    };
    let (_, valid) = split_documents(&corpus.documents, valid_fraction, seed);
    let packed = pack(
        &tokenize(&valid, &tokenizer)?,
        args.seq_len,
        tokenizer.eos(),
    );
    // Every language in turn, so that any number of sequences covers them all.
    let mut sequences = interleave_languages(packed.into_values().flatten().collect());
    sequences.truncate(args.sequences);
    if sequences.is_empty() {
        bail!(
            "no validation sequence of {} tokens in the data",
            args.seq_len
        );
    }
    let device = ensure_backend()?;
    let report = routing_agreement(&model, &sequences, args.batch, &device);
    if report.layers.is_empty() {
        println!("no paper-mode hybrid layer: inference routing is training routing by design");
        return Ok(());
    }
    print!("{}", report.table());
    let (exact, precision, unserved, prefix) = report.summary();
    println!(
        "mean over layers: exact {exact:.3}, precision {precision:.3}, unserved {unserved:.3}, \
         prefix precision over all positions {prefix:.3} ({} sequences of {} tokens)",
        sequences.len(),
        args.seq_len
    );
    Ok(())
}
