//! The same model, with the same weights, on the backend under test and on ndarray: logits
//! agree within 1e-4. Weights travel through our safetensors export (`multipl-moe-qwen`), so
//! this is also a save → load round trip. Under `--features wgpu` it compares wgpu with
//! ndarray.

use crate::common::{TestBackend, assert_close, values};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use multipl_moe::core::{CausalLm, MultiplMoeConfig, SegmentRouting};
use multipl_moe::qwen::{SaveDtype, load_model, save_model};

fn logits<Bk: Backend>(model: &CausalLm<Bk>, device: &Bk::Device) -> Vec<f32> {
    let ids: Vec<i64> = (0..2 * 21).map(|i| (i * 37 % 500) as i64).collect();
    let tokens = Tensor::<Bk, 2, Int>::from_data(TensorData::new(ids, [2, 21]), device);
    values(model.forward(tokens, None).logits)
}

#[test]
fn backend_logits_match_ndarray() {
    for routing in [SegmentRouting::Paper, SegmentRouting::Causal] {
        let mut cfg = MultiplMoeConfig::tiny();
        if let Some(moe) = cfg.moe.as_mut() {
            moe.segment.routing = routing;
            moe.router_init_std = 0.5;
        }
        let cpu = Default::default();
        let reference = cfg.init::<burn::backend::NdArray>(&cpu).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "multipl-moe-parity-{routing:?}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        save_model(&reference, &cfg, &dir, SaveDtype::F32).unwrap();
        let device = Default::default();
        let (loaded_cfg, model) = load_model::<TestBackend>(&dir, &device).unwrap();
        assert_eq!(loaded_cfg, cfg);
        assert_close(
            &logits(&model, &device),
            &logits(&reference, &cpu),
            1e-4,
            &format!("{routing:?} logits"),
        );
    }
}
