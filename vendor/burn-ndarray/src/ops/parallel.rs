//! multipl-moe patch (vendor/README.md, fixes 2 and 7): element-wise maps split over rayon's
//! threads for large arrays. Each element's result is the same as the single-threaded map's.

use crate::SharedArray;
use ndarray::Zip;

/// Below this many elements a single thread is faster than splitting the work.
#[cfg(feature = "multi-threads")]
const PARALLEL_MIN: usize = 1 << 15;

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
    Zip::from(a).and(b).map_collect(|x, y| f(*x, *y)).into_shared()
}
