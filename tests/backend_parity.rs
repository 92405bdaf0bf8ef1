//! The same model, with the same weights, on wgpu and on ndarray: logits agree within 1e-4.
#![cfg(feature = "wgpu")]

mod common;

use burn::module::Module;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use common::{assert_close, values};
use multipl_moe::core::{CausalLm, MultiplMoeConfig, SegmentRouting};

fn logits<Bk: Backend>(model: &CausalLm<Bk>, device: &Bk::Device) -> Vec<f32> {
    let ids: Vec<i64> = (0..2 * 21).map(|i| (i * 37 % 500) as i64).collect();
    let tokens = Tensor::<Bk, 2, Int>::from_data(TensorData::new(ids, [2, 21]), device);
    values(model.forward(tokens, None).logits)
}

#[test]
fn wgpu_logits_match_ndarray() {
    for routing in [SegmentRouting::Paper, SegmentRouting::Causal] {
        let mut cfg = MultiplMoeConfig::tiny();
        if let Some(moe) = cfg.moe.as_mut() {
            moe.segment.routing = routing;
            moe.router_init_std = 0.5;
        }
        let cpu = Default::default();
        let reference = cfg.init::<burn::backend::NdArray>(&cpu).unwrap();
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = recorder.record(reference.clone().into_record(), ()).unwrap();
        let gpu = Default::default();
        let record = recorder.load(bytes, &gpu).unwrap();
        let model = cfg.init::<burn::backend::Wgpu>(&gpu).unwrap().load_record(record);
        assert_close(&logits(&model, &gpu), &logits(&reference, &cpu), 1e-4, &format!("{routing:?} logits"));
    }
}
