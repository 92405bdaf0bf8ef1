//! The vendored burn-ndarray's matmul dispatch (vendor/README.md, fix 4): each class of product
//! goes to the kernel the README names, and every class computes the product a plain loop
//! computes.
#![cfg(all(feature = "ndarray", not(feature = "openblas")))]

use crate::common::{first_element, randn, tensor, values};
use burn::backend::NdArray;
use burn::tensor::Tensor;
use burn_ndarray::{
    GEMM_BELOW, MATRIXMULTIPLY_MAX_THREADS, MatmulKernel, MatmulProduct, avx512_on_256_bit_units,
    matmul_kernel,
};

fn product(m: usize, k: usize, n: usize) -> MatmulProduct {
    MatmulProduct {
        float: true,
        m,
        k,
        n,
        beta_zero: true,
        parallel: true,
        rayon_threads: 2,
        avx512_on_256_bit_units: false,
    }
}

#[test]
fn each_shape_class_goes_to_the_documented_kernel() {
    use MatmulKernel::{Gemm, GeneralMatMul};
    let wide = product(512, 256, 512);
    let cases = [
        ("decoding: one row", product(1, 1024, 2816), Gemm),
        ("tied LM head: one column", product(1024, 151_936, 1), Gemm),
        ("just thin", product(GEMM_BELOW - 1, 256, 4096), Gemm),
        (
            "just wide",
            product(GEMM_BELOW, 256, GEMM_BELOW),
            GeneralMatMul,
        ),
        ("wide, 2 threads", wide, GeneralMatMul),
        (
            "wide inside a parallel batch loop",
            MatmulProduct {
                parallel: false,
                ..wide
            },
            Gemm,
        ),
        (
            "wide, more threads than matrixmultiply uses",
            MatmulProduct {
                rayon_threads: MATRIXMULTIPLY_MAX_THREADS + 1,
                ..wide
            },
            Gemm,
        ),
        (
            "thin but integer",
            MatmulProduct {
                float: false,
                ..product(1, 64, 64)
            },
            GeneralMatMul,
        ),
        (
            "thin but accumulating (beta != 0)",
            MatmulProduct {
                beta_zero: false,
                ..product(1, 64, 64)
            },
            GeneralMatMul,
        ),
        (
            "wide, AVX-512 on 256-bit units",
            MatmulProduct {
                avx512_on_256_bit_units: true,
                ..wide
            },
            Gemm,
        ),
        (
            "integer, AVX-512 on 256-bit units",
            MatmulProduct {
                float: false,
                avx512_on_256_bit_units: true,
                ..wide
            },
            GeneralMatMul,
        ),
        ("empty", product(0, 64, 64), GeneralMatMul),
    ];
    for (name, p, want) in cases {
        assert_eq!(matmul_kernel(p), want, "{name}: {p:?}");
    }
}

/// The CPU check agrees with /proc/cpuinfo: AMD family 25 (19h) with AVX-512F.
#[test]
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn avx512_on_256_bit_units_matches_proc_cpuinfo() {
    let info = std::fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo");
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let zen4 = field("vendor_id") == "AuthenticAMD"
        && field("cpu family") == "25"
        && field("flags").split(' ').any(|f| f == "avx512f");
    assert_eq!(avx512_on_256_bit_units(), zen4, "{}", field("model name"));
}

/// `[b, m, k] · [k, n]` in plain f64 loops.
fn reference(a: &[f32], w: &[f32], b: usize, m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; b * m * n];
    for bi in 0..b {
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|l| a[(bi * m + i) * k + l] as f64 * w[l * n + j] as f64)
                    .sum();
                out[(bi * m + i) * n + j] = s as f32;
            }
        }
    }
    out
}

#[test]
fn every_shape_class_computes_the_plain_loop_product() {
    let device = Default::default();
    // (batches, m, k, n): thin rows (gemm), wide (matrixmultiply), a batch split over rayon
    // (gemm inside the loop), a transposed right operand (strided, read as is).
    for (b, m, k, n, transposed) in [
        (1, 1, 200, 300, false),
        (1, 300, 1, 2, false),
        (1, 96, 160, 80, false),
        (16, 70, 96, 72, false),
        (1, 80, 64, 96, true),
    ] {
        let a = randn(b * m * k, 11, 1.0);
        let w = randn(k * n, 12, 1.0);
        let lhs = tensor::<NdArray, 3>(a.clone(), [b, m, k], &device);
        let rhs: Tensor<NdArray, 2> = if transposed {
            // Stored as [n, k] and transposed: a strided view.
            let mut wt = vec![0f32; k * n];
            for l in 0..k {
                for j in 0..n {
                    wt[j * k + l] = w[l * n + j];
                }
            }
            tensor::<NdArray, 2>(wt, [n, k], &device).transpose()
        } else {
            tensor::<NdArray, 2>(w.clone(), [k, n], &device)
        };
        let got = values(lhs.matmul(rhs.unsqueeze::<3>()));
        let want = reference(&a, &w, b, m, k, n);
        crate::common::assert_close(&got, &want, 1e-4, &format!("[{b}, {m}, {k}] · [{k}, {n}]"));
    }
}

/// Address of a float tensor's first element on the ndarray backend.
/// Fix 6: adding or removing axes of length 1 keeps a strided layout (no copy), so `linear`
/// reads an imported `[out, in]` weight through its transposed view; other reshapes still
/// reorder elements as before.
#[test]
fn unit_axis_reshapes_of_a_transposed_weight_share_its_buffer() {
    let device = Default::default();
    let (out, inp) = (6, 4);
    let w = randn(out * inp, 21, 1.0);
    let stored = tensor::<NdArray, 2>(w.clone(), [out, inp], &device);
    let base: Tensor<NdArray, 3> = stored.clone().unsqueeze();
    let view = stored.transpose(); // [in, out], strided
    let unsqueezed: Tensor<NdArray, 3> = view.clone().unsqueeze();
    assert_eq!(unsqueezed.dims(), [1, inp, out]);
    assert_eq!(first_element(&unsqueezed), first_element(&base), "copied");
    let squeezed_back: Tensor<NdArray, 3> = unsqueezed.clone().reshape([inp, 1, out]);
    assert_eq!(
        first_element(&squeezed_back),
        first_element(&base),
        "copied"
    );
    let transposed_plain: Vec<f32> = (0..inp)
        .flat_map(|i| (0..out).map(|o| w[o * inp + i]).collect::<Vec<_>>())
        .collect();
    assert_eq!(values(unsqueezed), transposed_plain);
    assert_eq!(values(squeezed_back), transposed_plain);
    // A reshape that moves elements still follows row-major order.
    assert_eq!(values(view.clone().reshape([out * inp])), transposed_plain);

    // `linear` on the view: y = x · wᵀ as PyTorch computes it.
    let x = randn(3 * inp, 22, 1.0);
    let y = burn::tensor::module::linear(
        tensor::<NdArray, 2>(x.clone(), [3, inp], &device),
        view,
        None,
    );
    let want: Vec<f32> = (0..3)
        .flat_map(|r| {
            let (x, w) = (&x, &w);
            (0..out).map(move |o| (0..inp).map(|i| x[r * inp + i] * w[o * inp + i]).sum())
        })
        .collect();
    crate::common::assert_close(&values(y), &want, 1e-5, "linear on a transposed view");
}

/// Fix 9: a slice of an owned tensor is a view of its buffer (a preallocated KV cache's filled
/// part is read in place), and writing to the tensor afterwards copies on write: the slice
/// keeps the values it had.
#[test]
fn slices_share_the_buffer_and_writes_copy_on_write() {
    let device = Default::default();
    let w = randn(2 * 5 * 3, 31, 1.0);
    let full = tensor::<NdArray, 3>(w.clone(), [2, 5, 3], &device);
    let head = full.clone().narrow(1, 0, 2);
    let tail = full.clone().narrow(1, 1, 4);
    assert_eq!(first_element(&head), first_element(&full), "copied");
    assert_eq!(
        first_element(&tail),
        first_element(&full).wrapping_add(3),
        "copied"
    );
    let head_plain: Vec<f32> = (0..2)
        .flat_map(|b| w[b * 15..b * 15 + 6].to_vec())
        .collect();
    let written = full.slice_assign([0..2, 0..1, 0..3], Tensor::zeros([2, 1, 3], &device));
    assert_eq!(values(head), head_plain, "the write reached the slice");
    assert_eq!(values(written.narrow(1, 0, 1)), vec![0.0; 6]);
    let tail_plain: Vec<f32> = (0..2)
        .flat_map(|b| w[b * 15 + 3..b * 15 + 15].to_vec())
        .collect();
    assert_eq!(values(tail), tail_plain);
}
