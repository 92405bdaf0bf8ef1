//! Import: a Hugging Face Qwen2 directory (or our hybrid export) into a [`CausalLm`].

use std::path::Path;

use burn::module::Param;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use multipl_moe_core::experts::ExpertBank;
use multipl_moe_core::{CausalLm, MultiplMoeConfig};

use crate::error::Result;
use crate::hf_config::read_config;
use crate::params::{Layout, ParamVisitor, walk};
use crate::tensors::{HostTensor, TensorStore};

/// Loads `dir` (`config.json` + `model.safetensors` or shards) onto `device`. f32, f16 and
/// bf16 weights are converted to the backend's float type. Every parameter must be present
/// with its exact shape, and every tensor in the files must be used.
pub fn load_model<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(MultiplMoeConfig, CausalLm<B>)> {
    let config = read_config(dir)?;
    let mut store = TensorStore::open(dir)?;
    let mut model = config.init::<B>(device)?;
    walk(
        &mut model,
        &mut Loader {
            store: &mut store,
            device,
        },
    )?;
    store.finish()?;
    Ok((config, model))
}

struct Loader<'a, B: Backend> {
    store: &'a mut TensorStore,
    device: &'a B::Device,
}

impl<B: Backend> Loader<'_, B> {
    fn upload<const D: usize>(&self, t: HostTensor) -> Tensor<B, D> {
        Tensor::from_data(TensorData::new(t.data, t.shape), self.device)
    }
}

impl<B: Backend> ParamVisitor<B> for Loader<'_, B> {
    fn tensor<const D: usize>(
        &mut self,
        key: &str,
        param: &mut Param<Tensor<B, D>>,
        layout: Layout,
    ) -> Result<()> {
        let mut shape = param.dims().to_vec();
        if layout == Layout::Transposed {
            shape.reverse();
        }
        let t = self.store.take(key, &shape)?;
        let mut value: Tensor<B, D> = self.upload(t);
        if layout == Layout::Transposed {
            value = value.transpose();
        }
        *param = Param::initialized(param.id, value);
        Ok(())
    }

    fn bank(&mut self, prefix: &str, bank: &mut ExpertBank<B>) -> Result<()> {
        for (i, expert) in bank.experts.iter_mut().enumerate() {
            let [d, f2] = expert.gate_up.dims();
            let f = f2 / 2;
            let gate = self
                .store
                .take(&format!("{prefix}.{i}.gate_proj.weight"), &[f, d])?
                .data;
            let up = self
                .store
                .take(&format!("{prefix}.{i}.up_proj.weight"), &[f, d])?
                .data;
            let dn = self
                .store
                .take(&format!("{prefix}.{i}.down_proj.weight"), &[d, f])?
                .data;
            // The file's [out, in] matrices, transposed and fused into burn's [d, 2f], [f, d].
            let mut gate_up = Vec::with_capacity(d * f2);
            for r in 0..d {
                gate_up.extend((0..f).map(|c| gate[c * d + r]));
                gate_up.extend((0..f).map(|c| up[c * d + r]));
            }
            let mut down = Vec::with_capacity(f * d);
            for r in 0..f {
                down.extend((0..d).map(|c| dn[c * f + r]));
            }
            expert.gate_up = Param::initialized(
                expert.gate_up.id,
                self.upload(HostTensor {
                    shape: vec![d, f2],
                    data: gate_up,
                }),
            );
            expert.down = Param::initialized(
                expert.down.id,
                self.upload(HostTensor {
                    shape: vec![f, d],
                    data: down,
                }),
            );
        }
        Ok(())
    }
}
