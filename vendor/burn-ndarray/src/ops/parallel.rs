//! multipl-moe patch (vendor/README.md, fixes 2 and 7): element-wise maps split over rayon's
//! threads for large arrays. Each element's result is the same as the single-threaded map's.

use crate::SharedArray;
use ndarray::Zip;

/// Below this many elements one thread runs the op. Measured on 2 cores: the demo-sized model
/// (tensors of 2^15–2^18 elements) trains a step in 0.095 s with 2^15 here and 0.076 s with
/// 2^18, qwen05b-2l's step is the same or faster with 2^18 (likely cause: rayon's workers spin
/// after each parallel op, holding the core that matrixmultiply's helper thread needs next).
#[cfg(feature = "multi-threads")]
pub(crate) const PARALLEL_MIN: usize = 1 << 18;

/// `f` element-wise into a new standard-layout array.
pub(crate) fn map_elements<F: Copy + Send + Sync>(
    array: &SharedArray<F>,
    f: impl Fn(F) -> F + Send + Sync,
) -> SharedArray<F> {
    #[cfg(feature = "multi-threads")]
    if array.len() >= PARALLEL_MIN {
        return Zip::from(array).par_map_collect(|x| f(*x)).into_shared();
    }
    Zip::from(array).map_collect(|x| f(*x)).into_shared()
}

/// `f` element-wise, in place when the buffer is not shared, else into a new array.
pub(crate) fn map_elements_into<F: Copy + Send + Sync>(
    mut array: SharedArray<F>,
    f: impl Fn(F) -> F + Send + Sync,
) -> SharedArray<F> {
    if !array.is_unique() {
        return map_elements(&array, f);
    }
    #[cfg(feature = "multi-threads")]
    if array.len() >= PARALLEL_MIN {
        array.par_mapv_inplace(f);
        return array;
    }
    array.mapv_inplace(f);
    array
}

/// `f` over two arrays of the same shape into a new standard-layout array.
pub(crate) fn zip_elements<F: Copy + Send + Sync>(
    a: &SharedArray<F>,
    b: &SharedArray<F>,
    f: impl Fn(F, F) -> F + Send + Sync,
) -> SharedArray<F> {
    #[cfg(feature = "multi-threads")]
    if a.len() >= PARALLEL_MIN {
        return Zip::from(a)
            .and(b)
            .par_map_collect(|x, y| f(*x, *y))
            .into_shared();
    }
    Zip::from(a)
        .and(b)
        .map_collect(|x, y| f(*x, *y))
        .into_shared()
}

/// The chunk length that splits `len` elements over rayon's threads, a few chunks per thread
/// (multiples of 1024 elements); `None` when one call should do it all (fix 7).
#[cfg(feature = "simd")]
fn chunk_len(len: usize) -> Option<usize> {
    #[cfg(feature = "multi-threads")]
    if len >= PARALLEL_MIN && rayon::current_num_threads() > 1 {
        let chunk = len
            .div_ceil(4 * rayon::current_num_threads())
            .next_multiple_of(1024)
            .max(PARALLEL_MIN / 2);
        return Some(chunk);
    }
    let _ = len;
    None
}

/// Calls `f(start, len)` on disjoint ranges that cover `0..len`, split as [`chunk_len`] says:
/// for kernels whose output may alias an input element for element (in place), which safe
/// slices cannot express.
#[cfg(feature = "simd")]
pub(crate) fn for_each_range(len: usize, f: impl Fn(usize, usize) + Send + Sync) {
    #[cfg(feature = "multi-threads")]
    if let Some(chunk) = chunk_len(len) {
        use rayon::prelude::*;
        (0..len.div_ceil(chunk)).into_par_iter().for_each(|c| {
            let start = c * chunk;
            f(start, chunk.min(len - start));
        });
        return;
    }
    f(0, len);
}

/// Calls `f` on disjoint chunks that cover `buf`, split as [`chunk_len`] says.
#[cfg(feature = "simd")]
pub(crate) fn for_each_chunk_mut<T: Send>(buf: &mut [T], f: impl Fn(&mut [T]) + Send + Sync) {
    #[cfg(feature = "multi-threads")]
    if let Some(chunk) = chunk_len(buf.len()) {
        use rayon::prelude::*;
        buf.par_chunks_mut(chunk).for_each(f);
        return;
    }
    f(buf);
}

/// Calls `f` on matching disjoint chunks of `input` and `out` (of the same length), split as
/// [`chunk_len`] says.
#[cfg(feature = "simd")]
pub(crate) fn for_each_chunk_pair<T: Sync, U: Send>(
    input: &[T],
    out: &mut [U],
    f: impl Fn(&[T], &mut [U]) + Send + Sync,
) {
    debug_assert_eq!(input.len(), out.len());
    #[cfg(feature = "multi-threads")]
    if let Some(chunk) = chunk_len(input.len()) {
        use rayon::prelude::*;
        input
            .par_chunks(chunk)
            .zip(out.par_chunks_mut(chunk))
            .for_each(|(i, o)| f(i, o));
        return;
    }
    f(input, out);
}

/// A raw pointer that may cross threads: [`for_each_range`] hands each task a disjoint range of
/// the buffer it points into.
#[cfg(feature = "simd")]
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
// SAFETY: only used to split one buffer into disjoint ranges, one per task.
#[cfg(feature = "simd")]
unsafe impl<T: Send> Send for SendPtr<T> {}
// SAFETY: as above.
#[cfg(feature = "simd")]
unsafe impl<T: Send + Sync> Sync for SendPtr<T> {}

#[cfg(feature = "simd")]
impl<T> SendPtr<T> {
    /// The slice `start..start + len` of the buffer.
    ///
    /// # Safety
    /// The range must lie inside the buffer, and no other live reference may overlap it
    /// mutably (each [`for_each_range`] task takes its own range).
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn range<'a>(&self, start: usize, len: usize) -> &'a mut [T] {
        unsafe { core::slice::from_raw_parts_mut(self.0.add(start), len) }
    }

    /// The slice `start..start + len` of the buffer, read-only.
    ///
    /// # Safety
    /// The range must lie inside the buffer and stay unchanged except through the task's own
    /// output range (which may alias it element for element, as upstream's in-place kernels do).
    pub(crate) unsafe fn range_ref<'a>(&self, start: usize, len: usize) -> &'a [T] {
        unsafe { core::slice::from_raw_parts(self.0.add(start), len) }
    }
}
