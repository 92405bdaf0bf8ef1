//! The vendored burn-ndarray's element-wise patches (vendor/README.md, fix 7): `exp` and `log`
//! split over threads and filled tensors built in one pass give exactly what a plain loop
//! gives, and never write into a buffer another tensor shares.
#![cfg(feature = "ndarray")]

mod common;

use burn::backend::NdArray;
use burn::tensor::{DType, Tensor};
use common::{randn, tensor, values};

/// Above the patch's threading threshold (2^15 elements), with a ragged tail.
const N: usize = (1 << 16) + 37;

#[test]
fn exp_and_log_equal_the_plain_loop_in_place_or_shared() {
    let device = Default::default();
    let x = randn(N, 31, 3.0);
    let t = tensor::<NdArray, 1>(x.clone(), [N], &device);
    let want_exp: Vec<f32> = x.iter().map(|v| v.exp()).collect();
    // Shared: `t` stays readable after `exp` of a clone.
    let shared = t.clone().exp();
    assert_eq!(values(shared.clone()), want_exp, "exp of a shared buffer");
    assert_eq!(values(t.clone()), x, "exp wrote into a shared buffer");
    // Unique: computed in place.
    assert_eq!(values(t.exp()), want_exp, "exp in place");
    let want_log: Vec<f32> = want_exp.iter().map(|v| v.ln()).collect();
    assert_eq!(
        values(shared.clone().log()),
        want_log,
        "log of a shared buffer"
    );
    assert_eq!(values(shared), want_exp, "log wrote into a shared buffer");
    // Small tensors take the single-threaded path.
    let small = tensor::<NdArray, 1>(x[..100].to_vec(), [100], &device);
    assert_eq!(values(small.exp()), want_exp[..100].to_vec());
}

#[test]
fn zeros_ones_and_full_have_their_value_shape_and_dtype() {
    let device = Default::default();
    for (t, value) in [
        (Tensor::<NdArray, 3>::zeros([3, 5, 7], &device), 0.0),
        (Tensor::<NdArray, 3>::ones([3, 5, 7], &device), 1.0),
        (Tensor::<NdArray, 3>::full([3, 5, 7], -2.5, &device), -2.5),
    ] {
        assert_eq!(t.dims(), [3, 5, 7]);
        assert_eq!(t.dtype(), DType::F32);
        assert_eq!(values(t), vec![value; 105]);
    }
    // A filled tensor is an ordinary owned buffer: writing into one leaves the others alone.
    let a = Tensor::<NdArray, 1>::zeros([N], &device);
    let b = a.clone().add_scalar(1.0);
    assert_eq!(values(a), vec![0.0; N]);
    assert_eq!(values(b), vec![1.0; N]);
    let f64_ones = Tensor::<NdArray, 1>::ones([4], (&device, DType::F64));
    assert_eq!(f64_ones.dtype(), DType::F64);
    assert_eq!(values(f64_ones), vec![1.0; 4]);
}
