//! Subcommands of the `multipl-moe` binary.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::{Int, Tensor, TensorData};
use clap::{Parser, Subcommand};
use multipl_moe::backend::{self, Backend, TrainBackend};
use multipl_moe::core::{MoeConfig, MultiplMoeConfig, QwenConfig, SegmentRouting};
use multipl_moe::qwen::export::occupied;
use multipl_moe::qwen::{SaveDtype, UpcycleOptions, save_model_from, upcycle};

use crate::inference::{EvalArgs, GenerateArgs, RoutingArgs, eval_cmd, generate_cmd, routing_cmd};
use crate::loading::{ensure_backend, load_model};
use crate::logits::{LogitsArgs, logits_cmd};

/// MoE presets selectable on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Preset {
    /// SPEC defaults, mean pooling, γ = 1.
    Paper,
    /// The released code: max pooling, γ = 1/a, cap 4.
    ReleasedCode,
}

/// The preset of `demo --base`.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
enum BasePreset {
    /// Sized for a 2-core CPU (`BaseDemoConfig::cpu`).
    #[default]
    Cpu,
    /// The paper's scale (`BaseDemoConfig::paper`).
    Paper,
}

fn dtype(bf16: bool) -> SaveDtype {
    if bf16 {
        SaveDtype::Bf16
    } else {
        SaveDtype::F32
    }
}

/// `upcycle` and `convert` never overwrite: an existing non-empty output directory (the
/// source directory included) is refused before the model is loaded.
fn refuse_existing(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("--out {} is a file; choose a new directory", out.display());
    }
    if occupied(out) {
        bail!(
            "--out {} exists and is not empty; choose a new directory",
            out.display()
        );
    }
    Ok(())
}

fn upcycle_cmd(
    model: &Path,
    out: &Path,
    moe: &MoeConfig,
    opts: &UpcycleOptions,
    bf16: bool,
) -> Result<()> {
    refuse_existing(out)?;
    let device = ensure_backend()?;
    let (cfg, dense) = load_model(model, &device)?;
    if cfg.moe.is_some() {
        bail!("{} is already a hybrid model", model.display());
    }
    let (hybrid, hcfg) = upcycle(dense, &cfg, moe, opts)?;
    save_model_from(&hybrid, &hcfg, out, dtype(bf16), Some(model))?;
    let layers = hybrid.layers.len();
    println!(
        "upcycled {} ({layers} layers, N_t = {}, K = {}, N_s = {}, a = {}, function_preserving = {}) to {}",
        model.display(),
        moe.token.num_experts,
        moe.token.top_k,
        moe.segment.num_experts,
        moe.segment.window,
        opts.function_preserving,
        out.display()
    );
    Ok(())
}

/// `corpus`: collects from the installed toolchains' roots, prints the counts and the time.
fn corpus_cmd(out: PathBuf, budget_mib: u64, seed: u64, overwrite: bool) -> Result<()> {
    use multipl_moe::train::data::collect::{CollectOptions, collect, roots};
    let start = std::time::Instant::now();
    let options = CollectOptions {
        overwrite,
        ..CollectOptions::new(out, budget_mib, seed)
    };
    let report = collect(&options, &roots::default_candidates())?;
    print!("{report}");
    println!(
        "wrote {} in {:.1} s",
        options.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// MultiPL-MoE on Burn.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// What to do; without a subcommand, runs `demo`.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The main job: pre-train a tiny dense model (or start from a pretrained one with
    /// --base), fine-tune it densely (all weights, and FFNs widened to MultiPL-MoE's trainable
    /// parameter count), upcycle it to MultiPL-MoE and train that, then compare validation
    /// loss per language over seeds (and MultiPL-E pass@1 with --base).
    Demo {
        /// Output directory for checkpoints, models, the report and the charts.
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
        /// A real-code corpus (a source tree such as `multipl-moe corpus` writes, or JSONL);
        /// default: the embedded generated corpus. Selects the real-code preset.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Number of seeds (0, 1, …, N − 1); the table shows mean ± sd over them.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
        seeds: u64,
        /// Replace an earlier run's files in --out (report, table, charts, tokenizer, models,
        /// seed-N/; nothing else there is touched). Without it a non-empty --out is refused.
        #[arg(long, conflicts_with = "resume")]
        overwrite: bool,
        /// The main job on a pretrained checkpoint (`--base` and its flags).
        #[command(flatten)]
        base: BaseFlags,
    },
    /// Train on a corpus with a config file (TOML or JSON), optionally upcycling a Hugging
    /// Face checkpoint.
    Train {
        /// Run config (TOML or JSON); see `RunConfig`.
        #[arg(long)]
        config: PathBuf,
        /// Source tree or JSONL file.
        #[arg(long)]
        data: PathBuf,
        /// Hugging Face dense model directory to upcycle (with its tokenizer.json).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Continue the run in `out` after its newest checkpoint whose files all load.
        #[arg(long, conflicts_with = "overwrite")]
        resume: bool,
        /// Replace the run already in `out` (without it, a non-empty `out` is refused).
        #[arg(long)]
        overwrite: bool,
        /// Data-parallel devices (burn-train's multi-device strategy): the first N GPUs.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        devices: u64,
    },
    /// Collect a real-code corpus (Python, Java, C++, Rust, Go, Ruby) from the sources the
    /// installed toolchains ship, seeded and de-duplicated; installs nothing.
    Corpus {
        /// Output directory (built beside it, then renamed into place).
        #[arg(long)]
        out: PathBuf,
        /// MiB of source text in all, shared equally by the languages found.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        budget_mib: u64,
        /// Seed of each language's file selection.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Replace a corpus this command wrote earlier at `out`.
        #[arg(long)]
        overwrite: bool,
    },
    /// Upcycle a dense Hugging Face model (Qwen2, Llama, Mistral) into MultiPL-MoE and export it.
    Upcycle {
        /// Hugging Face model directory (config.json + safetensors).
        #[arg(long)]
        model: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// MoE preset.
        #[arg(long, value_enum, default_value_t = Preset::Paper)]
        preset: Preset,
        /// Start exactly at the dense model's function (SPEC §6).
        #[arg(long)]
        function_preserving: bool,
        /// Seed of the router initialisation and expert noise.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Relative noise added to the expert copies: each weight `w` becomes `w · (1 + ε)`,
        /// `ε ~ N(0, noise²)`, noise in [0, 1].
        #[arg(long, default_value_t = 0.0)]
        expert_noise: f64,
        /// Save as bf16 instead of f32.
        #[arg(long)]
        bf16: bool,
    },
    /// Write the logits of a model for given token ids to a safetensors file.
    Logits(LogitsArgs),
    /// Load a model directory and save it again (one file, f32 or bf16).
    Convert {
        /// Input model directory.
        #[arg(long)]
        model: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Save as bf16 instead of f32.
        #[arg(long)]
        bf16: bool,
    },
    /// Generate text after a prompt, streaming it, then print prefill and decode speed.
    Generate(GenerateArgs),
    /// MultiPL-E pass@1: generate one greedy completion per problem (with --model) or take
    /// given ones (--completions), run them with each language's toolchain, score them.
    Eval(EvalArgs),
    /// Measure how often inference routing of the segment level agrees with training routing
    /// on validation data, and the validation loss of each.
    Routing(RoutingArgs),
    /// Print this machine as the benches do: CPU name, vendor, family and model, the vector
    /// extensions detected, the f32 FMA peak and the read bandwidth (about two seconds).
    Host {
        /// Threads the peak and the bandwidth are measured on (default: every core).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
        threads: Option<u64>,
    },
    /// Run one forward pass of a randomly initialised hybrid model and print its routing.
    Forward {
        /// Model config (JSON); default: the tiny preset.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// Batch size.
        #[arg(long, default_value_t = 2)]
        batch: usize,
        /// Sequence length.
        #[arg(long, default_value_t = 64)]
        seq_len: usize,
        /// Use causal segment routing.
        #[arg(long)]
        causal: bool,
    },
}

/// The main job (`demo`): the embedded corpus, or `data` with the real-code preset.
fn demo_cmd(out: &Path, data: Option<PathBuf>, seeds: u64, overwrite: bool) -> Result<()> {
    use multipl_moe::train::demo::pipeline::{DemoConfig, DemoData, prepare_demo_out, run_demo};
    prepare_demo_out(out, overwrite)?;
    let device = ensure_backend()?;
    println!("backend: {}", backend::NAME);
    let (config, data) = match data {
        Some(path) => (DemoConfig::real_code(), DemoData::Path(path)),
        None => (DemoConfig::tiny(), DemoData::Embedded),
    };
    let seeds: Vec<u64> = (0..seeds).collect();
    run_demo::<TrainBackend>(&config, &data, &seeds, out, &device)?;
    Ok(())
}

/// The flags of `demo --base`.
#[derive(clap::Args, Debug, Default)]
struct BaseFlags {
    /// Start from this pretrained Hugging Face checkpoint (Llama or Qwen2, with its
    /// tokenizer.json) instead of pre-training a tiny model, and score every model by
    /// MultiPL-E pass@1 on --problems too. Needs --data and --problems.
    #[arg(long, requires_all = ["data", "problems"])]
    base: Option<PathBuf>,
    /// With --base: MultiPL-E problem files or directories of them (e.g. the six
    /// humaneval-*-reworded.jsonl).
    #[arg(long, num_args = 1.., requires = "base")]
    problems: Vec<PathBuf>,
    /// With --base: `cpu` (2-core CPU, under 2 hours on SmolLM2-135M, reductions printed)
    /// or `paper` (N_t = N_s = 6 on every layer, SPEC §5's recipe; a GPU's work).
    #[arg(long, value_enum, default_value_t = BasePreset::Cpu, requires = "base")]
    preset: BasePreset,
    /// With --base: problems per language (overrides the preset's; 0: all).
    #[arg(long, requires = "base")]
    limit: Option<usize>,
    /// With --base: also a sampled pass@1 from this many completions per problem
    /// (overrides the preset's; 0: greedy only).
    #[arg(long, requires = "base")]
    samples: Option<usize>,
    /// With --base: temperature of the sampled completions (default: the preset's, 0.2).
    #[arg(long, requires = "base")]
    temperature: Option<f64>,
    /// With --base: continue an interrupted run in --out (finished stages and
    /// measurements are reused, an interrupted training resumes from its checkpoint).
    #[arg(long, requires = "base")]
    resume: bool,
    /// With --base: run completions without a sandbox when bubblewrap is unusable.
    #[arg(long, requires = "base")]
    unsafe_no_sandbox: bool,
}

/// The main job on a pretrained checkpoint (`demo --base`).
fn base_demo_cmd(
    out: &Path,
    base: PathBuf,
    data: PathBuf,
    args: BaseFlags,
    seeds: u64,
    overwrite: bool,
) -> Result<()> {
    use multipl_moe::train::demo::base::{BaseDemo, BaseDemoConfig, run_base_demo};
    use multipl_moe::train::demo::pipeline::{DemoData, prepare_demo_out};
    use multipl_moe::train::multiple::exec::LimitFlags;
    use multipl_moe::train::multiple::report::EvalSettings;
    use multipl_moe::train::multiple::sandbox::ResourceLimits;
    let mut config = match args.preset {
        BasePreset::Cpu => BaseDemoConfig::cpu(),
        BasePreset::Paper => BaseDemoConfig::paper(),
    };
    if let Some(limit) = args.limit {
        config.problems_per_language = limit;
    }
    if let Some(samples) = args.samples {
        config.samples = samples;
    }
    if let Some(temperature) = args.temperature {
        if config.samples == 0 {
            anyhow::bail!(
                "--temperature {temperature}: only sampled pass@1 uses it, and this run samples \
                 nothing (pass --samples N)"
            );
        }
        config.temperature = temperature;
    }
    config.validate()?;
    // Everything is read and checked before an earlier run is touched.
    for (flag, file) in [
        ("--base", base.join("config.json")),
        ("--base", base.join("tokenizer.json")),
    ] {
        if !file.is_file() {
            anyhow::bail!(
                "{flag}: no {} (a Hugging Face model directory with its tokenizer)",
                file.display()
            );
        }
    }
    if !data.exists() {
        anyhow::bail!("--data: {} does not exist", data.display());
    }
    let files = crate::inference::problem_files(&args.problems)?;
    let problems = crate::inference::read_all_problems(&files, None)?;
    // The main job scores the six languages; another one would be generated for nothing.
    if let Some(p) = problems.iter().find(|p| p.lang().is_none()) {
        anyhow::bail!(
            "--problems: `{}` is in language `{}`, not one of the six the main job compares \
             (python, java, cpp, rust, go, ruby)",
            p.name,
            p.language_name()
        );
    }
    if problems.is_empty() {
        anyhow::bail!(
            "--problems: {} file(s) and not one problem in them",
            files.len()
        );
    }
    // eval's default limits (4 GiB, 1024 processes, 256 MiB files).
    let sandbox = crate::inference::sandbox(ResourceLimits::default(), args.unsafe_no_sandbox)?;
    if args.resume {
        if !out.is_dir() {
            anyhow::bail!("--resume: {} holds no earlier run", out.display());
        }
    } else {
        prepare_demo_out(out, overwrite)?;
    }
    let device = ensure_backend()?;
    println!("backend: {}", backend::NAME);
    let seeds: Vec<u64> = (0..seeds).collect();
    let run = BaseDemo {
        base: &base,
        data: &DemoData::Path(data),
        problems: &problems,
        eval: EvalSettings {
            sandbox: &sandbox,
            limits: LimitFlags::from_secs(None, None)?,
            jobs: std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            java_classpath: None,
        },
        seeds: &seeds,
        out,
        resume: args.resume,
    };
    run_base_demo::<TrainBackend>(&config, &run, &device)?;
    Ok(())
}

/// Parses the command line and runs the subcommand.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Demo {
        out: PathBuf::from("runs/demo"),
        data: None,
        seeds: 1,
        overwrite: false,
        base: BaseFlags::default(),
    });
    match command {
        Command::Demo {
            out,
            data,
            seeds,
            overwrite,
            base,
        } => match (base.base.clone(), data) {
            (Some(model), Some(data)) => base_demo_cmd(&out, model, data, base, seeds, overwrite),
            (_, data) => demo_cmd(&out, data, seeds, overwrite),
        },
        Command::Train {
            config,
            data,
            model,
            out,
            resume,
            overwrite,
            devices,
        } => {
            ensure_backend()?;
            multipl_moe::train::training::run::run_training::<TrainBackend>(
                &config,
                &data,
                model.as_deref(),
                &out,
                multipl_moe::train::training::run::RunMode { resume, overwrite },
                &backend::devices(usize::try_from(devices)?),
            )?;
            Ok(())
        }
        Command::Host { threads } => {
            let threads = match threads {
                Some(n) => usize::try_from(n)?,
                None => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            };
            println!("{}", multipl_moe::host::Host::measure(threads));
            Ok(())
        }
        Command::Forward {
            config,
            batch,
            seq_len,
            causal,
        } => forward(config, batch, seq_len, causal),
        Command::Upcycle {
            model,
            out,
            preset,
            function_preserving,
            seed,
            expert_noise,
            bf16,
        } => {
            let moe = match preset {
                Preset::Paper => MoeConfig::paper(),
                Preset::ReleasedCode => MoeConfig::released_code(),
            };
            let opts = UpcycleOptions {
                seed,
                expert_noise,
                function_preserving,
            };
            upcycle_cmd(&model, &out, &moe, &opts, bf16)
        }
        Command::Corpus {
            out,
            budget_mib,
            seed,
            overwrite,
        } => corpus_cmd(out, budget_mib, seed, overwrite),
        Command::Generate(args) => generate_cmd(args),
        Command::Eval(args) => eval_cmd(args),
        Command::Routing(args) => routing_cmd(args),
        Command::Logits(args) => logits_cmd(&args),
        Command::Convert { model, out, bf16 } => {
            refuse_existing(&out)?;
            let device = ensure_backend()?;
            let (cfg, m) = load_model(&model, &device)?;
            save_model_from(&m, &cfg, &out, dtype(bf16), Some(&model))?;
            println!("saved {} to {}", model.display(), out.display());
            Ok(())
        }
    }
}

fn forward(
    config: Option<std::path::PathBuf>,
    batch: usize,
    seq_len: usize,
    causal: bool,
) -> Result<()> {
    let mut cfg = match config {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str::<MultiplMoeConfig>(&text)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None => MultiplMoeConfig::new(QwenConfig::tiny()).with_moe(Some(MoeConfig::tiny())),
    };
    if causal && let Some(moe) = cfg.moe.as_mut() {
        moe.segment.routing = SegmentRouting::Causal;
    }
    if batch == 0 || seq_len == 0 {
        bail!("--batch and --seq-len must be positive");
    }
    let device = ensure_backend()?;
    let model = cfg.init::<Backend>(&device)?;
    let vocab = cfg.model.vocab_size as i64;
    let ids: Vec<i64> = (0..(batch * seq_len) as i64)
        .map(|i| (i * 7919) % vocab)
        .collect();
    let tokens =
        Tensor::<Backend, 2, Int>::from_data(TensorData::new(ids, [batch, seq_len]), &device);
    let out = model.forward(tokens, None);
    println!("backend: {}", backend::NAME);
    println!("logits: {:?}", out.logits.dims());
    for (layer, routing) in out.routing.iter().enumerate() {
        match routing {
            None => println!("layer {layer}: dense"),
            Some(r) => {
                let bal = r.balance_loss.clone().into_scalar();
                println!(
                    "layer {layer}: hybrid, balance loss {bal:.4}, segment capacity {}",
                    r.segment.capacity
                );
            }
        }
    }
    Ok(())
}
