use crate::{
    NdArray, NdArrayTensor, SharedArray,
    element::{FloatNdArrayElement, IntNdArrayElement, QuantElement},
    execute_with_float_dtype, execute_with_numeric_dtype,
    ops::NdArrayMathOps,
    ops::parallel::{map_elements, zip_elements},
};
use burn_backend::{ElementConversion, TensorMetadata, ops::ActivationOps, tensor::FloatTensor};

impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> ActivationOps<Self>
    for NdArray<E, I, Q>
where
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
    fn relu(tensor: FloatTensor<Self>) -> FloatTensor<Self> {
        execute_with_numeric_dtype!(tensor, |array| NdArrayMathOps::clamp_min(array, 0.elem()))
    }

    // multipl-moe patch (vendor/README.md): the trait's default sigmoid is
    // exp(-log(1 + exp(-x))), five single-threaded passes with three transcendentals, and
    // the autodiff backward recomputes it. One pass, split over threads for large arrays.
    fn sigmoid(tensor: FloatTensor<Self>) -> FloatTensor<Self> {
        execute_with_float_dtype!(tensor, F, |array: SharedArray<F>| {
            map_elements(&array, |x: F| 1.0 / (1.0 + (-x).exp()))
        })
    }

    fn sigmoid_backward(output: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        execute_with_float_dtype!((output, grad), F, |y: SharedArray<F>, g: SharedArray<F>| {
            if y.shape() == g.shape() {
                zip_elements(&y, &g, |y: F, g: F| y * (1.0 - y) * g)
            } else {
                NdArrayMathOps::mul(y.mapv(|y| y * (1.0 - y)).into_shared(), g)
            }
        })
    }
}
