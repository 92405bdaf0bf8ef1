//! Export: a dense or hybrid [`CausalLm`] as `config.json` + `model.safetensors`.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::tensor::{Tensor, backend::Backend};
use multipl_moe_core::experts::ExpertBank;
use multipl_moe_core::{CausalLm, MultiplMoeConfig};

use crate::error::{Result, io_err};
use crate::hf_config::config_json;
use crate::params::{Layout, ParamVisitor, walk};
use crate::tensors::{HostTensor, SaveDtype, write_atomic, write_file};

/// Every parameter of `model` as host tensors in the file layout, by key.
pub fn model_tensors<B: Backend>(model: &CausalLm<B>) -> Result<BTreeMap<String, HostTensor>> {
    let mut collector = Collector(BTreeMap::new());
    multipl_moe_core::model::materialize(model);
    let mut model = model.clone();
    walk(&mut model, &mut collector)?;
    Ok(collector.0)
}

/// Writes `dir/config.json` and `dir/model.safetensors` (each via a temporary file).
pub fn save_model<B: Backend>(
    model: &CausalLm<B>,
    config: &MultiplMoeConfig,
    dir: &Path,
    dtype: SaveDtype,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tensors = model_tensors(model)?;
    write_file(&dir.join("model.safetensors"), &tensors, dtype)?;
    let torch_dtype = match dtype {
        SaveDtype::F32 => "float32",
        SaveDtype::Bf16 => "bfloat16",
    };
    write_atomic(
        &dir.join("config.json"),
        config_json(config, torch_dtype).as_bytes(),
    )
}

struct Collector(BTreeMap<String, HostTensor>);

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

impl<B: Backend> ParamVisitor<B> for Collector {
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
        self.0.insert(key.to_string(), host(value));
        Ok(())
    }

    fn bank(&mut self, prefix: &str, bank: &mut ExpertBank<B>) -> Result<()> {
        for (i, expert) in bank.experts.iter().enumerate() {
            let f = expert.d_ff();
            let gate_up = expert.gate_up.val();
            let gate = gate_up.clone().narrow(1, 0, f).transpose();
            let up = gate_up.narrow(1, f, f).transpose();
            let down = expert.down.val().transpose();
            self.0
                .insert(format!("{prefix}.{i}.gate_proj.weight"), host(gate));
            self.0
                .insert(format!("{prefix}.{i}.up_proj.weight"), host(up));
            self.0
                .insert(format!("{prefix}.{i}.down_proj.weight"), host(down));
        }
        Ok(())
    }
}
