//! The vendored burn-ndarray's borrowed weights (vendor/README.md, fix 8): a tensor made from
//! shared bytes, as the importer makes an f32 checkpoint's matrices from the mapped file,
//! stays borrowed through transposes, permutations and unit-axis reshapes, is read in place by
//! `matmul` and `select`, and gives the values plain loops give; any other op copies it and
//! leaves the bytes untouched.
#![cfg(feature = "ndarray")]

use crate::common::{randn, tensor, values};
use burn::backend::{Autodiff, NdArray};
use burn::tensor::{AllocationProperty, Bytes, DType, Int, Tensor, TensorData, backend::Backend};

/// `values` as `shape`, made from shared bytes (4-byte aligned) the way the importer makes a
/// mapped f32 matrix.
fn mapped<B: Backend, const D: usize>(values: &[f32], shape: [usize; D]) -> Tensor<B, D> {
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut padded = vec![0u8; raw.len() + 4];
    let offset = (4 - padded.as_ptr() as usize % 4) % 4;
    padded[offset..offset + raw.len()].copy_from_slice(&raw);
    let shared = bytes::Bytes::from(padded).slice(offset..offset + raw.len());
    let data = TensorData::from_bytes(
        Bytes::from_shared(shared, AllocationProperty::File),
        shape,
        DType::F32,
    );
    Tensor::from_data(data, &Default::default())
}

fn borrowed<const D: usize>(t: &Tensor<NdArray, D>) -> bool {
    t.clone().into_primitive().tensor().is_borrowed()
}

/// `[rows, cols]` row-major, transposed.
fn transposed(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| x[r * cols + c]))
        .collect()
}

/// `a [m, k] · b [k, n]`, row-major.
fn product(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    out
}

fn assert_near(actual: &[f32], expected: &[f32], what: &str) {
    crate::common::assert_close(actual, expected, 1e-5, what);
}

#[test]
fn layout_changes_stay_borrowed_and_keep_every_value_in_place() {
    let (rows, cols) = (3, 5);
    let w_values = randn(rows * cols, 1, 1.0);
    let w = mapped::<NdArray, 2>(&w_values, [rows, cols]);
    assert!(borrowed(&w), "made from shared bytes");
    assert_eq!(values(w.clone()), w_values);

    let wt = w.clone().transpose();
    assert!(borrowed(&wt), "a transpose is a view");
    assert_eq!(wt.dims(), [cols, rows]);
    assert_eq!(values(wt.clone()), transposed(&w_values, rows, cols));

    let batched = wt.clone().unsqueeze::<3>();
    assert!(
        borrowed(&batched),
        "adding a unit axis to a transposed view"
    );
    assert_eq!(batched.dims(), [1, cols, rows]);
    assert_eq!(values(batched.clone()), transposed(&w_values, rows, cols));
    let squeezed = batched.clone().squeeze_dim::<2>(0);
    assert!(borrowed(&squeezed), "removing it again");
    assert_eq!(values(squeezed), transposed(&w_values, rows, cols));

    let permuted = batched.permute([2, 0, 1]);
    assert!(borrowed(&permuted), "a permutation");
    assert_eq!(permuted.dims(), [rows, 1, cols]);
    assert_eq!(values(permuted), w_values);

    let reshaped = w.clone().reshape([cols, rows]);
    assert!(borrowed(&reshaped), "a row-major reshape");
    assert_eq!(values(reshaped), w_values);

    // Flattening the transposed view moves elements: copied, in the transposed order.
    let flat = wt.reshape([rows * cols]);
    assert!(!borrowed(&flat), "a reshape that moves elements copies");
    assert_eq!(values(flat), transposed(&w_values, rows, cols));
    assert!(borrowed(&w), "the source stays borrowed");
}

#[test]
fn matmul_and_row_lookup_read_borrowed_weights_as_plain_loops_do() {
    let device = Default::default();
    let (m, k, n) = (4, 6, 3);
    let x_values = randn(m * k, 2, 1.0);
    let w_values = randn(n * k, 3, 1.0); // `[out, in]`, as a checkpoint stores a Linear weight
    let x = tensor::<NdArray, 2>(x_values.clone(), [m, k], &device);
    let w = mapped::<NdArray, 2>(&w_values, [n, k]);
    let w_t = transposed(&w_values, n, k);
    let want = product(&x_values, &w_t, m, k, n);

    // A Linear: `x · Wᵀ`, the weight a transposed borrowed view.
    assert_near(
        &values(x.clone().matmul(w.clone().transpose())),
        &want,
        "x · Wᵀ",
    );
    // Batched, the weight broadcast over a unit batch axis (burn's `linear`).
    let x3 = tensor::<NdArray, 3>(
        [x_values.clone(), x_values.clone()].concat(),
        [2, m, k],
        &device,
    );
    let y3 = x3.matmul(w.clone().transpose().unsqueeze::<3>());
    assert_near(&values(y3), &want.repeat(2), "batched x · Wᵀ");
    // Four axes: the transposed view with two unit axes is made row-major for the product.
    let x4 = tensor::<NdArray, 4>(x_values.repeat(4), [2, 2, m, k], &device);
    let y4 = x4.matmul(w.clone().transpose().unsqueeze::<4>());
    assert_near(&values(y4), &want.repeat(4), "4-D x · Wᵀ");
    // A tied head, the borrowed matrix on the left: `E · xᵀ`.
    let head = w.clone().matmul(x.clone().transpose());
    assert_near(
        &values(head),
        &product(&w_values, &transposed(&x_values, m, k), n, k, m),
        "E · xᵀ",
    );
    // An embedding lookup.
    let ids = Tensor::<NdArray, 1, Int>::from_data(TensorData::new(vec![2i64, 0, 2], [3]), &device);
    let rows: Vec<f32> = [2, 0, 2]
        .iter()
        .flat_map(|&r| w_values[r * k..(r + 1) * k].to_vec())
        .collect();
    assert_eq!(values(w.clone().select(0, ids)), rows, "rows looked up");
    assert!(borrowed(&w), "read in place, never converted");
}

#[test]
fn other_ops_copy_borrowed_weights_and_leave_their_bytes_untouched() {
    let w_values = randn(12, 4, 1.0);
    let w = mapped::<NdArray, 2>(&w_values, [3, 4]);
    let plus: Vec<f32> = w_values.iter().map(|v| v + 1.0).collect();
    assert_eq!(values(w.clone().add_scalar(1.0)), plus, "a scalar op");
    let squares: Vec<f32> = w_values.iter().map(|v| v * v).collect();
    assert_eq!(values(w.clone() * w.clone()), squares, "a binary op");
    let t = w.clone().transpose();
    assert_eq!(
        values(t.clone().exp()),
        transposed(&w_values, 3, 4)
            .iter()
            .map(|v| v.exp())
            .collect::<Vec<_>>(),
        "a unary op of a transposed view"
    );
    assert_eq!(values(w), w_values, "the shared bytes are unchanged");
}

#[test]
fn gradients_flow_into_a_borrowed_weight() {
    type A = Autodiff<NdArray>;
    let device = Default::default();
    let (m, k, n) = (3, 4, 2);
    let x_values = randn(m * k, 5, 1.0);
    let w_values = randn(n * k, 6, 1.0);
    let x = tensor::<A, 2>(x_values.clone(), [m, k], &device);
    let w = mapped::<A, 2>(&w_values, [n, k]).require_grad();
    let loss = x.matmul(w.clone().transpose()).sum();
    let grads = loss.backward();
    let grad = w.grad(&grads).expect("a gradient for the weight");
    // d/dW_{o,i} of Σ_{r,o} Σ_i x_{r,i} W_{o,i} = Σ_r x_{r,i}, the same for every output o.
    let column_sums: Vec<f32> = (0..k)
        .map(|i| (0..m).map(|r| x_values[r * k + i]).sum())
        .collect();
    assert_near(
        &values(grad),
        &[column_sums.clone(), column_sums].concat(),
        "dL/dW",
    );
}
