//! The vendored burn-ndarray's `into_data` (vendor/README.md, fix 10): reading a tensor that
//! other tensors share (a model's parameter while training holds it, as a checkpoint or an
//! export reads it) hands out its buffer instead of copying it, gives the values in row-major
//! order whatever the layout, and no later write, to the tensor or to the data, reaches the
//! other side.
#![cfg(feature = "ndarray")]

use crate::common::{first_element, randn, tensor, values};
use burn::backend::NdArray;
use burn::tensor::{AllocationProperty, Bytes, DType, Tensor, TensorData};

fn data_values(d: &TensorData) -> Vec<f32> {
    d.as_slice::<f32>().expect("f32 data").to_vec()
}

#[test]
fn reading_a_shared_tensor_shares_its_buffer_and_writes_copy_first() {
    let device = Default::default();
    let w = randn(2 * 5 * 3, 41, 1.0);
    let param = tensor::<NdArray, 3>(w.clone(), [2, 5, 3], &device);
    let (a, b) = (param.to_data(), param.to_data());
    assert_eq!(
        a.as_bytes().as_ptr(),
        first_element(&param).cast(),
        "copied"
    );
    assert_eq!(
        b.as_bytes().as_ptr(),
        first_element(&param).cast(),
        "copied"
    );
    assert_eq!((a.shape.to_vec(), a.dtype), (vec![2, 5, 3], DType::F32));
    assert_eq!(data_values(&a), w);

    // The data holds a reference, so an op on the last tensor handle does not write in place.
    let plus_one = param.add_scalar(1.0);
    assert_eq!(data_values(&a), w, "the write reached the data");
    let expected: Vec<f32> = w.iter().map(|v| v + 1.0).collect();
    assert_eq!(values(plus_one.clone()), expected);

    // A write to the data copies it first and leaves the tensor alone.
    let mut c = plus_one.to_data();
    c.as_mut_slice::<f32>().expect("f32")[0] = 99.0;
    assert_eq!(data_values(&c)[0], 99.0);
    assert_eq!(values(plus_one), expected, "the write reached the tensor");
}

#[test]
fn every_layout_reads_in_row_major_order() {
    let device = Default::default();
    let (rows, cols) = (4, 6);
    let w = randn(rows * cols, 42, 1.0);
    let m = tensor::<NdArray, 2>(w.clone(), [rows, cols], &device);
    let transposed: Vec<f32> = (0..cols)
        .flat_map(|c| (0..rows).map(|r| w[r * cols + c]).collect::<Vec<_>>())
        .collect();
    // Transposed (strided) while the original is alive, then as the only handle.
    let t = m.clone().transpose();
    assert_eq!(data_values(&t.to_data()), transposed);
    assert_eq!(values(t), transposed);
    // A slice sharing the buffer at an offset (fix 9).
    let tail = m.clone().narrow(0, 1, 3);
    assert_eq!(data_values(&tail.to_data()), w[cols..].to_vec());
    assert_eq!(values(tail), w[cols..].to_vec());
    // A uniquely owned array is moved.
    assert_eq!(values(m), w);

    // Borrowed bytes (a mapped f32 matrix): shared as they are, or reordered when transposed.
    let raw: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let shared = bytes::Bytes::from(raw);
    let data = TensorData::from_bytes(
        Bytes::from_shared(shared, AllocationProperty::File),
        [rows, cols],
        DType::F32,
    );
    let mapped = Tensor::<NdArray, 2>::from_data(data, &device);
    assert!(mapped.clone().into_primitive().tensor().is_borrowed());
    let read = mapped.to_data();
    assert_eq!(
        read.as_bytes().as_ptr(),
        first_element(&mapped).cast(),
        "copied"
    );
    assert_eq!(data_values(&read), w);
    assert_eq!(values(mapped.clone().transpose()), transposed);

    // A transposed mapped weight (as the importer makes every Linear weight) that an update
    // copies becomes a row-major array, so reading it while training holds it needs no copy.
    let weight = mapped.transpose();
    let updated = weight.sub_scalar(0.5);
    let read = updated.to_data();
    assert_eq!(
        read.as_bytes().as_ptr(),
        first_element(&updated).cast(),
        "copied"
    );
    let expected: Vec<f32> = transposed.iter().map(|v| v - 0.5).collect();
    assert_eq!(data_values(&read), expected);
}

/// Whether `t`'s buffer is an owned row-major array (what a checkpoint reads without a copy).
fn row_major_owned<const D: usize>(t: &Tensor<NdArray, D>) -> bool {
    match t.clone().into_primitive().tensor() {
        burn_ndarray::NdArrayTensor::F32(storage) => {
            storage.is_owned() && storage.view().is_standard_layout()
        }
        _ => false,
    }
}

/// Each parameter's id and whether it is [`row_major_owned`].
struct Layouts(std::collections::HashMap<burn::module::ParamId, bool>);

impl burn::module::ModuleVisitor<NdArray> for Layouts {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<NdArray, D>>) {
        self.0.insert(param.id, row_major_owned(&param.val()));
    }
}

/// Training an imported f32 checkpoint (Linear weights borrowed from the mapped file as
/// transposed views, fix 8) leaves every trained parameter and every AdamW moment an owned
/// row-major array, so neither a checkpoint nor an export copies them.
#[test]
fn trained_parameters_and_moments_are_row_major() {
    use crate::common::fixtures::fixture;
    use burn::backend::Autodiff;
    use burn::module::{AutodiffModule, Module};
    use burn::optim::adaptor::OptimizerAdaptor;
    use burn::optim::record::AdaptorRecordV1;
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    use multipl_moe::core::MoeConfig;
    use multipl_moe::qwen::{FreezePolicy, UpcycleOptions, apply_freeze, load_model, upcycle};

    type Ad = Autodiff<NdArray>;
    let device = Default::default();
    let (cfg, dense) = load_model::<Ad>(&fixture("qwen2-tied-f32"), &device).expect("loads");
    let mut moe = MoeConfig::paper();
    moe.segment.window = 4;
    let (hybrid, _) = upcycle(dense, &cfg, &moe, &UpcycleOptions::default()).expect("upcycles");
    let mut model = apply_freeze(hybrid, &FreezePolicy::paper());
    let mut optim: OptimizerAdaptor<burn::optim::AdamW, _, Ad> = AdamWConfig::new().init();
    let ids: Vec<i64> = (0..16).map(|i| (i * 7 + 3) % 64).collect();
    for _ in 0..2 {
        let tokens = Tensor::<Ad, 2, burn::tensor::Int>::from_data(
            TensorData::new(ids.clone(), [2, 8]),
            &device,
        );
        let loss = model.forward(tokens, None).logits.powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
    }
    let record = optim.to_record();
    assert!(!record.is_empty(), "nothing trained");
    let mut layouts = Layouts(Default::default());
    model.valid().visit(&mut layouts);
    for (id, state) in record {
        assert_eq!(
            layouts.0.get(&id),
            Some(&true),
            "a trained parameter is not row-major"
        );
        let burn::optim::record::AdaptorRecord::V1(v1) = state;
        let row_major = match v1 {
            AdaptorRecordV1::Rank2(s) => {
                row_major_owned(&s.momentum.moment_1) && row_major_owned(&s.momentum.moment_2)
            }
            AdaptorRecordV1::Rank1(s) => {
                row_major_owned(&s.momentum.moment_1) && row_major_owned(&s.momentum.moment_2)
            }
            _ => panic!("a trained parameter of another rank"),
        };
        assert!(row_major, "an AdamW moment is not row-major");
    }
}
