//! The vendored burn-ndarray's element-wise patches (vendor/README.md, fix 7): `exp` and `log`
//! split over threads and filled tensors built in one pass give exactly what a plain loop
//! gives, and never write into a buffer another tensor shares.
#![cfg(feature = "ndarray")]

use crate::common::{randn, tensor, values};
use burn::backend::NdArray;
use burn::tensor::{DType, Tensor};

/// Above the patch's threading threshold (2^18 elements), with a ragged tail.
const N: usize = (1 << 18) + 37;

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

/// `[rows, cols]` values of `f` applied to `a` broadcast against `b` (shapes `[ra, ca]` and
/// `[rb, cb]`, each axis equal or 1), as plain loops.
fn broadcast_loop(
    a: &[f32],
    [ra, ca]: [usize; 2],
    b: &[f32],
    [rb, cb]: [usize; 2],
    f: impl Fn(f32, f32) -> f32,
) -> Vec<f32> {
    let (rows, cols) = (ra.max(rb), ca.max(cb));
    let at = |v: &[f32], r: usize, c: usize, [vr, vc]: [usize; 2]| {
        v[(if vr == 1 { 0 } else { r }) * vc + if vc == 1 { 0 } else { c }]
    };
    (0..rows)
        .flat_map(|r| (0..cols).map(move |c| (r, c)))
        .map(|(r, c)| f(at(a, r, c, [ra, ca]), at(b, r, c, [rb, cb])))
        .collect()
}

#[test]
fn large_binary_ops_equal_plain_loops_whichever_operand_is_written() {
    type Op = fn(Tensor<NdArray, 2>, Tensor<NdArray, 2>) -> Tensor<NdArray, 2>;
    type Case = (&'static str, Op, fn(f32, f32) -> f32);
    let device = Default::default();
    let (rows, cols) = (263, 1031); // > 2^18 elements, not a multiple of any chunk
    let ops: [Case; 4] = [
        ("add", |a, b| a + b, |a, b| a + b),
        ("sub", |a, b| a - b, |a, b| a - b),
        ("mul", |a, b| a * b, |a, b| a * b),
        ("div", |a, b| a / b, |a, b| a / b),
    ];
    let shapes = [
        ([rows, cols], [rows, cols]), // same shape: the SIMD path
        ([rows, cols], [rows, 1]),    // the log-softmax's broadcast
        ([rows, 1], [rows, cols]),
        ([1, cols], [rows, cols]),
        ([rows, 1], [1, cols]), // both broadcast
    ];
    for (name, op, f) in ops {
        for (sa, sb) in shapes {
            let a = randn(sa[0] * sa[1], 41, 2.0);
            // Divisors away from zero.
            let b: Vec<f32> = randn(sb[0] * sb[1], 42, 1.0)
                .iter()
                .map(|v| v + 2.0)
                .collect();
            let want = broadcast_loop(&a, sa, &b, sb, f);
            let ta = tensor::<NdArray, 2>(a.clone(), sa, &device);
            let tb = tensor::<NdArray, 2>(b.clone(), sb, &device);
            // Both shared: a new buffer; the operands keep their values.
            assert_eq!(
                values(op(ta.clone(), tb.clone())),
                want,
                "{name} {sa:?} {sb:?} shared"
            );
            assert_eq!(values(ta.clone()), a, "{name} wrote into a shared lhs");
            assert_eq!(values(tb.clone()), b, "{name} wrote into a shared rhs");
            // Unique lhs, then unique rhs: may be written in place.
            assert_eq!(
                values(op(ta, tb.clone())),
                want,
                "{name} {sa:?} {sb:?} unique lhs"
            );
            let ta = tensor::<NdArray, 2>(a.clone(), sa, &device);
            assert_eq!(values(op(ta, tb)), want, "{name} {sa:?} {sb:?} unique rhs");
        }
        // A transposed (strided) operand of the same shape.
        let a = randn(rows * cols, 43, 2.0);
        let b: Vec<f32> = randn(rows * cols, 44, 1.0)
            .iter()
            .map(|v| v + 2.0)
            .collect();
        let at = tensor::<NdArray, 2>(a.clone(), [cols, rows], &device).transpose();
        let a_t: Vec<f32> = (0..rows)
            .flat_map(|r| (0..cols).map(move |c| (r, c)))
            .map(|(r, c)| a[c * rows + r])
            .collect();
        let want = broadcast_loop(&a_t, [rows, cols], &b, [rows, cols], f);
        let tb = tensor::<NdArray, 2>(b, [rows, cols], &device);
        assert_eq!(values(op(at, tb)), want, "{name} strided lhs");
    }
}

#[test]
fn large_scalar_and_unary_ops_equal_plain_loops() {
    let device = Default::default();
    let x = randn(N, 51, 4.0);
    let t = tensor::<NdArray, 1>(x.clone(), [N], &device);
    let cases: [(&str, Tensor<NdArray, 1>, Vec<f32>); 5] = [
        (
            "mul_scalar",
            t.clone().mul_scalar(1.5),
            x.iter().map(|v| v * 1.5).collect(),
        ),
        (
            "add_scalar",
            t.clone().add_scalar(-0.25),
            x.iter().map(|v| v + -0.25).collect(),
        ),
        (
            "div_scalar",
            t.clone().div_scalar(3.0),
            x.iter().map(|v| v / 3.0).collect(),
        ),
        ("neg", t.clone().neg(), x.iter().map(|v| -v).collect()),
        ("abs", t.clone().abs(), x.iter().map(|v| v.abs()).collect()),
    ];
    for (name, got, want) in cases {
        assert_eq!(values(got), want, "{name} of a shared buffer");
    }
    assert_eq!(values(t.clone()), x, "an op wrote into a shared buffer");
    // In place on the unique buffer.
    let want: Vec<f32> = x.iter().map(|v| -(v * 1.5)).collect();
    assert_eq!(values(t.mul_scalar(1.5).neg()), want, "in place");
}

#[test]
fn abs_of_a_shared_transposed_tensor_keeps_each_element_in_place() {
    // A transposed matrix is contiguous in F order; with its buffer shared, `abs` writes a new
    // array. Upstream wrote it in C order and so transposed the values (fix 7 mends that).
    let device = Default::default();
    for (rows, cols) in [(6, 40), (300, 1031)] {
        let x = randn(rows * cols, 61, 1.0);
        let t = tensor::<NdArray, 2>(x.clone(), [rows, cols], &device);
        let want: Vec<f32> = (0..cols)
            .flat_map(|c| (0..rows).map(move |r| (r, c)))
            .map(|(r, c)| x[r * cols + c].abs())
            .collect();
        assert_eq!(values(t.clone().transpose().abs()), want, "{rows}x{cols}");
        assert_eq!(values(t), x, "abs wrote into a shared buffer");
    }
}

#[test]
fn large_broadcasts_against_an_empty_axis_are_empty() {
    let device = Default::default();
    let empty = Tensor::<NdArray, 2>::zeros([0, 1 << 18], &device);
    let row = tensor::<NdArray, 2>(randn(1 << 18, 71, 1.0), [1, 1 << 18], &device);
    assert_eq!((empty.clone() - row.clone()).dims(), [0, 1 << 18]);
    assert_eq!((row - empty).dims(), [0, 1 << 18]);
}
