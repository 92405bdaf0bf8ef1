//! Import: a Hugging Face Qwen2, Llama or Mistral directory (or our hybrid export) into a
//! [`CausalLm`].

use std::path::Path;

use burn::module::Param;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use multipl_moe_core::experts::ExpertBank;
use multipl_moe_core::{CausalLm, MultiplMoeConfig};

use crate::error::Result;
use crate::hf_config::read_config;
use crate::params::{Layout, ParamVisitor, walk};
use crate::tensors::TensorStore;

/// A loaded model, its config, and what the loader has to say about the files.
#[derive(Debug)]
pub struct LoadedModel<B: Backend> {
    /// The model's config (from `config.json`).
    pub config: MultiplMoeConfig,
    /// The model, on the requested device.
    pub model: CausalLm<B>,
    /// Things a user should know that are not errors, e.g. a redundant `lm_head.weight`
    /// beside `tie_word_embeddings: true` that differs from the embedding.
    pub notes: Vec<String>,
}

/// Loads `dir` (`config.json` + `model.safetensors` or shards) onto `device`; see
/// [`load_model_with_notes`].
pub fn load_model<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(MultiplMoeConfig, CausalLm<B>)> {
    let loaded = load_model_with_notes(dir, device)?;
    Ok((loaded.config, loaded.model))
}

/// Marks as used the `rotary_emb.inv_freq` buffers that checkpoints saved by older
/// transformers carry (`model.layers.N.self_attn.rotary_emb.inv_freq`, `model.rotary_emb.
/// inv_freq`): transformers and vLLM skip them and compute the frequencies from the config.
/// Returns how many there were.
fn skip_rope_buffers(store: &mut TensorStore) -> usize {
    let buffers: Vec<String> = store
        .unused()
        .into_iter()
        .filter(|k| k.starts_with("model.") && k.ends_with(".rotary_emb.inv_freq"))
        .collect();
    for key in &buffers {
        store.mark_used(key);
    }
    buffers.len()
}

/// Loads `dir` onto `device`. f32, f16 and bf16 weights are converted to the backend's float
/// type one tensor at a time from the memory-mapped files; no parameter is drawn at random
/// first. Every parameter must be present with its exact shape, and every tensor in the
/// files must be used, but for the `rotary_emb.inv_freq` buffers of older checkpoints, which
/// are ignored with a note (as transformers ignores them).
///
/// f32 matrices (Linear weights, the embedding) are not copied: the tensors are made from the
/// mapped files' bytes ([`TensorStore::take_matrix`]), as transformers' `from_pretrained` maps
/// safetensors, and burn-ndarray reads them in place until they are modified. So, as with
/// transformers, the files must not be modified in place while the model is alive (writing a
/// new file and renaming it over the old one, as [`crate::export::save_model`] does, is safe).
///
/// A model with `tie_word_embeddings: true` may also ship `lm_head.weight` (some hub uploads
/// do). As transformers 5 does, an identical copy is accepted and the head stays tied, while a
/// head that differs from the embedding unties the model (the file's head is used, the
/// returned config says `tie_word_embeddings: false`), with a note.
pub fn load_model_with_notes<B: Backend>(dir: &Path, device: &B::Device) -> Result<LoadedModel<B>> {
    let mut config = read_config(dir)?;
    let mut store = TensorStore::open(dir)?;
    let mut notes = Vec::new();
    let redundant_head = config.model.tie_word_embeddings && store.contains(LM_HEAD);
    if redundant_head && !store.same_bytes(LM_HEAD, EMBED) {
        config.model.tie_word_embeddings = false;
        notes.push(format!(
            "{}: tie_word_embeddings is true but `{LM_HEAD}` differs from `{EMBED}`: \
             loaded untied with the file's head, as transformers 5 does",
            dir.display()
        ));
    }
    let mut model = config.init_for_loading::<B>(device)?;
    walk(
        &mut model,
        &mut Loader {
            store: &mut store,
            device,
        },
    )?;
    if config.model.tie_word_embeddings && redundant_head {
        store.mark_used(LM_HEAD);
    }
    let rope_buffers = skip_rope_buffers(&mut store);
    if rope_buffers > 0 {
        notes.push(format!(
            "{}: {rope_buffers} `rotary_emb.inv_freq` buffers (saved by older transformers) \
             ignored: the RoPE frequencies come from config.json, as transformers computes them",
            dir.display()
        ));
    }
    store.finish()?;
    Ok(LoadedModel {
        config,
        model,
        notes,
    })
}

const LM_HEAD: &str = "lm_head.weight";
const EMBED: &str = "model.embed_tokens.weight";

struct Loader<'a, B: Backend> {
    store: &'a mut TensorStore,
    device: &'a B::Device,
}

impl<B: Backend> Loader<'_, B> {
    fn upload<const D: usize>(&self, data: TensorData) -> Tensor<B, D> {
        Tensor::from_data(data, self.device)
    }

    /// A Linear weight as the file and PyTorch keep it, `[out, in]`, as burn's `[in, out]`
    /// parameter: its transposed view, so nothing is transposed at load, and every backend's
    /// matmul reads the view's strides without copying (burn-cubecl's reshape and matmul
    /// handle strides; the vendored burn-ndarray's too, fix 6).
    fn upload_linear(&self, out_in: TensorData) -> Tensor<B, 2> {
        self.upload::<2>(out_in).transpose()
    }
}

impl<B: Backend> ParamVisitor<B> for Loader<'_, B> {
    fn tensor<const D: usize>(
        &mut self,
        key: &str,
        param: &mut Param<Tensor<B, D>>,
        layout: Layout,
    ) -> Result<()> {
        // `lazy_shape`: the shape without drawing the lazy initial value.
        let shape = param.lazy_shape().to_vec();
        let value = match (layout, shape.as_slice()) {
            (Layout::Transposed, &[rows, cols]) => {
                let t = self.store.take_matrix(&[key], &[cols, rows])?;
                // D is 2 here (the shape has two axes).
                Tensor::from_primitive(self.upload_linear(t).into_primitive())
            }
            // The embedding (and an untied head): a matrix, borrowed when stored as f32.
            (_, &[_, _]) => {
                let t = self.store.take_matrix(&[key], &shape)?;
                self.upload(t)
            }
            // Norm weights and biases are copied: every op on them but a layout change, a
            // matmul or a row lookup would copy borrowed data again.
            _ => {
                let t = self.store.take(key, &shape)?;
                self.upload(TensorData::new(t.data, t.shape))
            }
        };
        *param = Param::initialized(param.id, value);
        Ok(())
    }

    fn bank(&mut self, prefix: &str, bank: &mut ExpertBank<B>) -> Result<()> {
        for (i, expert) in bank.experts.iter_mut().enumerate() {
            let [d, f2] = expert.gate_up.lazy_shape().dims();
            let f = f2 / 2;
            // The file's `[out, in]` gate and up matrices stacked into `[2f, d]`, whose
            // transposed view is the fused `[d, 2f]` (gate columns, then up columns).
            let gate_up = self.store.take_matrix(
                &[
                    &format!("{prefix}.{i}.gate_proj.weight"),
                    &format!("{prefix}.{i}.up_proj.weight"),
                ],
                &[f, d],
            )?;
            let down = self
                .store
                .take_matrix(&[&format!("{prefix}.{i}.down_proj.weight")], &[d, f])?;
            expert.gate_up = Param::initialized(expert.gate_up.id, self.upload_linear(gate_up));
            expert.down = Param::initialized(expert.down.id, self.upload_linear(down));
        }
        Ok(())
    }
}
