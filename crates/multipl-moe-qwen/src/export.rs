//! Export: a dense or hybrid [`CausalLm`] as `config.json` + `model.safetensors`.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::tensor::{Tensor, backend::Backend};
use multipl_moe_core::experts::ExpertBank;
use multipl_moe_core::{CausalLm, MultiplMoeConfig};

use crate::error::{QwenError, Result, io_err};
use crate::hf_config::config_json;
use crate::params::{Layout, ParamVisitor, walk};
use crate::tensors::{HostTensor, SaveDtype, write_streamed};

/// Every parameter of `model` as host tensors in the file layout, by key (the whole model
/// copied to the host; [`save_model`] writes one tensor at a time instead).
pub fn model_tensors<B: Backend>(model: &CausalLm<B>) -> Result<BTreeMap<String, HostTensor>> {
    let mut tensors = BTreeMap::new();
    each_tensor(model, |key, _, value| {
        tensors.insert(key.to_string(), value());
        Ok(())
    })?;
    Ok(tensors)
}

/// Calls `emit(key, shape, value)` for every parameter of `model` in the file layout, in a
/// fixed order; `value()` reads that tensor to the host, only when called.
fn each_tensor<B: Backend>(
    model: &CausalLm<B>,
    emit: impl FnMut(&str, Vec<usize>, &mut dyn FnMut() -> HostTensor) -> Result<()>,
) -> Result<()> {
    multipl_moe_core::model::materialize(model);
    let mut model = model.clone();
    walk(&mut model, &mut Exporter(emit))
}

/// Files next to a model's weights that describe how to use it; [`save_model_from`] copies
/// those present in the source directory.
pub const SIDE_FILES: [&str; 7] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
];

/// Writes the model directory `dir` (`config.json` + `model.safetensors`); see
/// [`save_model_from`].
pub fn save_model<B: Backend>(
    model: &CausalLm<B>,
    config: &MultiplMoeConfig,
    dir: &Path,
    dtype: SaveDtype,
) -> Result<()> {
    save_model_from(model, config, dir, dtype, None)
}

/// Writes the model directory `dir`: `config.json`, `model.safetensors`, and the
/// [`SIDE_FILES`] found in `source` (e.g. the tokenizer of the model it was made from).
///
/// Nothing is overwritten and nothing is half-written: an existing non-empty `dir` is an error
/// ([`QwenError::OutputExists`]); the files are written to a sibling temporary directory
/// (`.NAME.partial-PID`) that is renamed to `dir` at the end. Partial directories left by
/// killed processes (whose PID is gone) are removed first.
pub fn save_model_from<B: Backend>(
    model: &CausalLm<B>,
    config: &MultiplMoeConfig,
    dir: &Path,
    dtype: SaveDtype,
    source: Option<&Path>,
) -> Result<()> {
    if occupied(dir) {
        return Err(QwenError::OutputExists(dir.to_path_buf()));
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| QwenError::OutputExists(dir.to_path_buf()))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    remove_stale_partials(&parent, &name);
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let written = write_dir(model, config, &tmp, dtype, source).and_then(|()| {
        if dir.exists() {
            std::fs::remove_dir(dir).map_err(io_err(dir))?;
        }
        std::fs::rename(&tmp, dir).map_err(io_err(dir))
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
}

/// Whether writing an output directory at `path` would overwrite something: `path` is a
/// file, or a directory with at least one entry.
pub fn occupied(path: &Path) -> bool {
    path.is_file() || path.read_dir().is_ok_and(|mut d| d.next().is_some())
}

fn write_dir<B: Backend>(
    model: &CausalLm<B>,
    config: &MultiplMoeConfig,
    dir: &Path,
    dtype: SaveDtype,
    source: Option<&Path>,
) -> Result<()> {
    // The layout first (keys and shapes, no values), then one tensor at a time: the file is
    // written without a second copy of the model in memory.
    let mut layout = Vec::new();
    each_tensor(model, |key, shape, _| {
        layout.push((key.to_string(), shape));
        Ok(())
    })?;
    write_streamed(&dir.join("model.safetensors"), &layout, dtype, |sink| {
        each_tensor(model, |key, _, value| sink.put(key, &value()))
    })?;
    let torch_dtype = match dtype {
        SaveDtype::F32 => "float32",
        SaveDtype::Bf16 => "bfloat16",
    };
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config_json(config, torch_dtype)).map_err(io_err(&config_path))?;
    for file in SIDE_FILES {
        if let Some(from) = source.map(|s| s.join(file)).filter(|p| p.is_file()) {
            std::fs::copy(&from, dir.join(file)).map_err(io_err(&from))?;
        }
    }
    Ok(())
}

/// Removes `.NAME.partial-PID` directories in `parent` whose process no longer runs (Linux:
/// `/proc/PID` is gone); elsewhere none is removed.
fn remove_stale_partials(parent: &Path, name: &str) {
    let prefix = format!(".{name}.partial-");
    let Ok(entries) = parent.read_dir() else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file_name.strip_prefix(&prefix) else {
            continue;
        };
        let alive = Path::new("/proc").join(pid).exists() || !Path::new("/proc/self").exists();
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A [`ParamVisitor`] handing each parameter, in the file layout, to its closure.
struct Exporter<F>(F);

/// Reads a tensor back to the host as f32 (export and tooling only, never in a forward pass).
pub fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> HostTensor {
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default();
    HostTensor { shape, data }
}

impl<B, F> ParamVisitor<B> for Exporter<F>
where
    B: Backend,
    F: FnMut(&str, Vec<usize>, &mut dyn FnMut() -> HostTensor) -> Result<()>,
{
    fn tensor<const D: usize>(
        &mut self,
        key: &str,
        param: &mut Param<Tensor<B, D>>,
        layout: Layout,
    ) -> Result<()> {
        let value = param.val();
        let value = if layout == Layout::Transposed {
            value.transpose()
        } else {
            value
        };
        let shape = value.dims().to_vec();
        (self.0)(key, shape, &mut || host(value.clone()))
    }

    fn bank(&mut self, prefix: &str, bank: &mut ExpertBank<B>) -> Result<()> {
        for (i, expert) in bank.experts.iter().enumerate() {
            let f = expert.d_ff();
            let gate_up = expert.gate_up.val();
            let gate = gate_up.clone().narrow(1, 0, f).transpose();
            let up = gate_up.narrow(1, f, f).transpose();
            let down = expert.down.val().transpose();
            for (name, t) in [("gate_proj", gate), ("up_proj", up), ("down_proj", down)] {
                let key = format!("{prefix}.{i}.{name}.weight");
                (self.0)(&key, t.dims().to_vec(), &mut || host(t.clone()))?;
            }
        }
        Ok(())
    }
}
