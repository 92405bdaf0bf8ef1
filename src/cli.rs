//! Subcommands of the `multipl-moe` binary.

use anyhow::{Context, Result, bail};
use burn::tensor::{Int, Tensor, TensorData};
use clap::{Parser, Subcommand};
use multipl_moe::backend::{self, Backend};
use multipl_moe::core::{MoeConfig, MultiplMoeConfig, QwenConfig, SegmentRouting};

/// MultiPL-MoE on Burn.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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

/// Parses the command line and runs the subcommand.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Forward {
            config,
            batch,
            seq_len,
            causal,
        } => forward(config, batch, seq_len, causal),
    }
}

/// Fails with one line when the compiled-in backend has no usable device (e.g. `--features
/// cuda` on a machine without the NVIDIA driver) instead of a panic backtrace.
pub fn ensure_backend() -> Result<burn::tensor::Device<Backend>> {
    let device = backend::device();
    #[allow(clippy::clone_on_copy)] // the device is Copy on ndarray only
    let probe_device = device.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(move || {
        Tensor::<Backend, 1>::zeros([1], &probe_device)
            .into_data()
            .to_vec::<f32>()
            .is_ok()
    });
    std::panic::set_hook(hook);
    match probe {
        Ok(true) => Ok(device),
        _ => bail!(
            "the {} backend has no usable device here{}",
            backend::NAME,
            if backend::NAME == "cuda" {
                " (no CUDA driver found); rebuild without `--features cuda` or install the NVIDIA driver"
            } else {
                "; rebuild with another backend feature"
            }
        ),
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
