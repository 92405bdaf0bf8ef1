//! Loading at the edge of the program: the backend's device, probed once, and model
//! directories with the loader's notes printed.

use std::path::Path;

use anyhow::{Result, bail};
use burn::tensor::Tensor;
use multipl_moe::backend::{self, Backend};
use multipl_moe::core::{CausalLm, MultiplMoeConfig};
use multipl_moe::qwen::load_model_with_notes;

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

/// Loads a model directory onto `device`, printing the loader's notes (e.g. a redundant
/// `lm_head.weight` that unties a tied model) to stderr.
pub fn load_model(
    dir: &Path,
    device: &burn::tensor::Device<Backend>,
) -> Result<(MultiplMoeConfig, CausalLm<Backend>)> {
    let loaded = load_model_with_notes::<Backend>(dir, device)?;
    for note in &loaded.notes {
        eprintln!("note: {note}");
    }
    Ok((loaded.config, loaded.model))
}
