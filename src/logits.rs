//! The `logits` subcommand: a model's logits for one sequence (`--tokens`, `[T, vocab]`) or a
//! batch of equal-length sequences (`--tokens-file`, `[B, T, vocab]`), in one forward pass
//! with the training routing — so paper-mode segment expert choice competes across the
//! `V = B·P` segments of the batch, as in training (SPEC §3).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::{Int, Tensor, TensorData};
use multipl_moe::backend::Backend;
use multipl_moe::qwen::SaveDtype;
use multipl_moe::qwen::tensors::{HostTensor, write_file};

use crate::loading::{ensure_backend, load_model};

/// Arguments of `multipl-moe logits`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["tokens", "tokens_file"])))]
pub struct LogitsArgs {
    /// Model directory: a Hugging Face dense model or an exported hybrid model.
    #[arg(long)]
    pub model: PathBuf,
    /// Comma-separated token ids of one sequence; the output is `logits` [T, vocab].
    #[arg(long)]
    pub tokens: Option<String>,
    /// A JSON file holding an array of B arrays of token ids, all of length T; the output is
    /// `logits` [B, T, vocab].
    #[arg(long)]
    pub tokens_file: Option<PathBuf>,
    /// Output file (safetensors) holding one f32 tensor `logits`. An existing file is refused
    /// unless `--overwrite` is given.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing `--out` file (never a directory).
    #[arg(long)]
    pub overwrite: bool,
}

/// Refuses an `--out` that exists, unless `overwrite` and it is a file; checked before the
/// model is loaded.
fn check_out(out: &Path, overwrite: bool) -> Result<()> {
    match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("--out {}", out.display())),
        Ok(meta) if meta.is_dir() => bail!("--out {} is a directory", out.display()),
        Ok(_) if overwrite => Ok(()),
        Ok(_) => bail!(
            "--out {} exists; pass --overwrite to replace it",
            out.display()
        ),
    }
}

/// Token ids `[B, T]`, row-major, and whether the output keeps the batch axis.
struct Batch {
    ids: Vec<i64>,
    batch: usize,
    len: usize,
    batched: bool,
}

/// Comma-separated token ids; every item must be one (an empty item is an error, not skipped).
fn parse_tokens(tokens: &str) -> Result<Batch> {
    if tokens.trim().is_empty() {
        bail!("--tokens: no token ids given");
    }
    let ids = tokens
        .split(',')
        .enumerate()
        .map(|(i, t)| {
            t.trim()
                .parse::<i64>()
                .with_context(|| format!("--tokens: item {i} (`{t}`) is not a token id"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Batch {
        len: ids.len(),
        ids,
        batch: 1,
        batched: false,
    })
}

/// Parses the `--tokens-file` JSON: a non-empty array of non-empty, equal-length arrays of
/// non-negative integers.
fn parse_batch(text: &str, path: &Path) -> Result<Batch> {
    let rows: Vec<Vec<i64>> = serde_json::from_str(text).with_context(|| {
        format!(
            "{}: expected a JSON array of arrays of token ids",
            path.display()
        )
    })?;
    let Some(first) = rows.first() else {
        bail!("{}: the batch is empty", path.display());
    };
    let len = first.len();
    if len == 0 {
        bail!("{}: sequence 0 is empty", path.display());
    }
    if let Some((i, row)) = rows.iter().enumerate().find(|(_, r)| r.len() != len) {
        bail!(
            "{}: sequence {i} has {} tokens but sequence 0 has {len}; all must be equal",
            path.display(),
            row.len()
        );
    }
    Ok(Batch {
        batch: rows.len(),
        len,
        ids: rows.into_iter().flatten().collect(),
        batched: true,
    })
}

/// Runs `multipl-moe logits`.
pub fn logits_cmd(args: &LogitsArgs) -> Result<()> {
    check_out(&args.out, args.overwrite)?;
    let input = match (&args.tokens, &args.tokens_file) {
        (Some(tokens), _) => parse_tokens(tokens)?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--tokens-file {}", path.display()))?;
            parse_batch(&text, path)?
        }
        (None, None) => bail!("give --tokens or --tokens-file"),
    };
    let device = ensure_backend()?;
    let (cfg, m) = load_model(&args.model, &device)?;
    let vocab = cfg.model.vocab_size;
    if let Some((pos, bad)) = input
        .ids
        .iter()
        .enumerate()
        .find(|&(_, &i)| i < 0 || i as usize >= vocab)
    {
        bail!(
            "token id {bad} (sequence {}, position {}) is outside the vocabulary (size {vocab})",
            pos / input.len,
            pos % input.len
        );
    }
    let (b, t) = (input.batch, input.len);
    let tokens = Tensor::<Backend, 2, Int>::from_data(TensorData::new(input.ids, [b, t]), &device);
    let data = m
        .forward(tokens, None)
        .logits
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))?;
    let shape = if input.batched {
        vec![b, t, vocab]
    } else {
        vec![t, vocab]
    };
    let mut tensors = BTreeMap::new();
    tensors.insert(
        "logits".to_string(),
        HostTensor {
            shape: shape.clone(),
            data,
        },
    );
    write_file(&args.out, &tensors, SaveDtype::F32)?;
    println!(
        "wrote logits {shape:?} of {} to {}",
        args.model.display(),
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match parse_batch(text, Path::new("t.json")) {
            Ok(_) => panic!("`{text}` parsed"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn batch_file_is_checked() {
        let b = parse_batch("[[1, 2, 3], [4, 5, 6]]", Path::new("t.json")).unwrap();
        assert_eq!((b.batch, b.len, b.ids), (2, 3, vec![1, 2, 3, 4, 5, 6]));
        assert!(err("[]").contains("empty"));
        assert!(err("[[]]").contains("empty"));
        assert!(err("[[1, 2], [3]]").contains("sequence 1 has 1 tokens"));
        assert!(err("[[1, \"a\"]]").contains("t.json"));
        assert!(err("{}").contains("t.json"));
    }

    #[test]
    fn token_list_is_checked() {
        assert_eq!(parse_tokens("1, 2,3").unwrap().ids, vec![1, 2, 3]);
        assert!(parse_tokens("").is_err());
        assert!(parse_tokens("1,x").is_err());
        let empty_item = format!("{:#}", parse_tokens("1,,2").err().unwrap());
        assert!(empty_item.contains("item 1"), "{empty_item}");
        assert!(parse_tokens("1,2,").is_err());
    }

    #[test]
    fn out_is_never_replaced_unasked() {
        let dir = std::env::temp_dir().join(format!("logits-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.json");
        std::fs::write(&file, "{}").unwrap();
        let refused = format!("{:#}", check_out(&file, false).err().unwrap());
        assert!(refused.contains("--overwrite"), "{refused}");
        assert!(check_out(&file, true).is_ok());
        assert!(
            check_out(&dir, true).is_err(),
            "a directory is never replaced"
        );
        assert!(check_out(&dir.join("new.safetensors"), false).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
