//! What the model keeps between generation steps.

use std::ops::Range;

use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};

use crate::attention::KvCache;

/// The state of one decoder layer after some positions.
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    /// Attention keys and values.
    pub kv: KvCache<B>,
    /// For a hybrid layer, its FFN inputs `u` (the post-attention RMSNorm output) at every
    /// cached position, `[B, S, d]` along axis 1: segment routing pools them; `None` for a
    /// dense layer.
    pub ffn_inputs: Option<Growing<B, 3>>,
}

impl<B: Backend> LayerCache<B> {
    /// The first `len` positions.
    pub fn truncate(self, len: usize) -> Self {
        Self {
            kv: self.kv.truncate(len),
            ffn_inputs: self.ffn_inputs.map(|u| u.truncate(len)),
        }
    }

    /// The batch rows `rows` (indices into the `batch` rows held, repeats allowed), in that
    /// order.
    pub fn select_rows(self, rows: &[usize], batch: usize) -> Self {
        let kv_rows = self.kv.keys.rows() / batch.max(1);
        // Keys and values hold `[B·KV, S, h]`: row `r` is the block `r·KV .. (r+1)·KV`.
        let kv_index: Vec<usize> = rows
            .iter()
            .flat_map(|&r| r * kv_rows..(r + 1) * kv_rows)
            .collect();
        Self {
            kv: KvCache {
                keys: self.kv.keys.select_rows(&kv_index),
                values: self.kv.values.select_rows(&kv_index),
            },
            ffn_inputs: self.ffn_inputs.map(|u| u.select_rows(rows)),
        }
    }
}

/// The state of the whole model after some positions: every layer's [`LayerCache`] and the
/// token ids, so that the inference forward can replay a window it must recompute (see
/// [`crate::CausalLm::forward_inference`]).
#[derive(Debug, Clone)]
pub struct ModelCache<B: Backend> {
    /// One entry per decoder layer.
    pub layers: Vec<LayerCache<B>>,
    /// Token ids of the cached positions, `[B, S]`.
    pub tokens: Tensor<B, 2, Int>,
    /// Which cached positions are padding (`[B, S]`, `true` = padding; left padding of a
    /// batch of prompts of different lengths), `None` when none is.
    pub padding: Option<Tensor<B, 2, Bool>>,
}

impl<B: Backend> ModelCache<B> {
    /// Number of cached positions `S`.
    pub fn len(&self) -> usize {
        self.tokens.dims()[1]
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `len` positions (`len <= S`).
    pub fn truncate(self, len: usize) -> Self {
        Self {
            layers: self.layers.into_iter().map(|l| l.truncate(len)).collect(),
            tokens: self.tokens.narrow(1, 0, len),
            padding: self.padding.map(|p| p.narrow(1, 0, len)),
        }
    }

    /// Number of batch rows `B`.
    pub fn rows(&self) -> usize {
        self.tokens.dims()[0]
    }

    /// The batch rows `rows` (indices into `0..B`, repeats allowed), in that order: drops
    /// the rows of finished sequences, or repeats one prompt's cache for several samples.
    pub fn select_rows(self, rows: &[usize]) -> Self {
        let batch = self.rows();
        let index = row_index::<B>(rows, &self.tokens.device());
        Self {
            layers: self
                .layers
                .into_iter()
                .map(|l| l.select_rows(rows, batch))
                .collect(),
            tokens: self.tokens.select(0, index.clone()),
            padding: self.padding.map(|p| p.select(0, index)),
        }
    }
}

/// `rows` as an index tensor for `select` along the batch axis.
fn row_index<B: Backend>(rows: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let ids: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    Tensor::from_data(TensorData::new(ids, [rows.len()]), device)
}

/// A tensor that grows along one axis, as a KV cache does at every decoding step, without
/// copying what it holds each time: an append is written into spare capacity
/// (`slice_assign`), and the capacity doubles when it runs out (amortised O(1) per position,
/// like the preallocated `AutoregressiveCache` of tracel-ai/models' llama-burn, without a
/// fixed maximum length). [`Self::value`] is a `narrow` view of the filled part.
///
/// Appending writes in place when this value holds the only reference to its buffer (the
/// decoding loop); after a `clone`, the first append copies the buffer (copy on write), so
/// clones never see each other's positions.
#[derive(Debug, Clone)]
pub struct Growing<B: Backend, const D: usize> {
    buffer: Tensor<B, D>,
    axis: usize,
    len: usize,
}

impl<B: Backend, const D: usize> Growing<B, D> {
    /// Holds `value` (its whole length along `axis`), with no spare capacity yet.
    pub fn new(value: Tensor<B, D>, axis: usize) -> Self {
        let len = value.dims()[axis];
        Self {
            buffer: value,
            axis,
            len,
        }
    }

    /// Positions held along the axis.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the buffer can hold before it must grow.
    pub fn capacity(&self) -> usize {
        self.buffer.dims()[self.axis]
    }

    /// The held positions: a view of the buffer, not a copy.
    pub fn value(&self) -> Tensor<B, D> {
        if self.len == self.capacity() {
            self.buffer.clone()
        } else {
            self.buffer.clone().narrow(self.axis, 0, self.len)
        }
    }

    /// Appends `value` (same shape except along the axis) after the held positions.
    pub fn append(mut self, value: Tensor<B, D>) -> Self {
        let added = value.dims()[self.axis];
        let end = self.len + added;
        if end > self.capacity() {
            let mut dims = self.buffer.dims();
            dims[self.axis] = end.max(2 * self.capacity());
            let grown = Tensor::zeros(dims, &self.buffer.device());
            self.buffer = grown.slice_assign(self.ranges(0..self.len), self.value());
        }
        let ranges = self.ranges(self.len..end);
        self.buffer = self.buffer.slice_assign(ranges, value);
        self.len = end;
        self
    }

    /// The first `len` positions (`len <= self.len()`); the capacity is kept.
    pub fn truncate(mut self, len: usize) -> Self {
        self.len = self.len.min(len);
        self
    }

    /// Size of axis 0 (the batch rows; the growing axis is another).
    pub fn rows(&self) -> usize {
        self.buffer.dims()[0]
    }

    /// The entries `rows` of axis 0 (repeats allowed), in that order, with the capacity kept;
    /// the growing axis must be another.
    pub fn select_rows(mut self, rows: &[usize]) -> Self {
        debug_assert_ne!(self.axis, 0, "rows are selected across the growing axis");
        let index = row_index::<B>(rows, &self.buffer.device());
        self.buffer = self.buffer.select(0, index);
        self
    }

    /// Whole ranges on every axis but `self.axis`, which gets `along`.
    fn ranges(&self, along: Range<usize>) -> [Range<usize>; D] {
        let dims = self.buffer.dims();
        std::array::from_fn(|i| {
            if i == self.axis {
                along.clone()
            } else {
                0..dims[i]
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray;

    fn block(start: usize, len: usize) -> Tensor<B, 3> {
        let values: Vec<f32> = (0..2 * len * 3).map(|i| (start * 100 + i) as f32).collect();
        Tensor::from_data(TensorData::new(values, [2, len, 3]), &Default::default())
    }

    /// Appends, growth, truncation and clones against plain concatenation.
    #[test]
    fn growing_matches_concatenation() {
        let mut grown = Growing::new(block(0, 2), 1);
        let mut plain = block(0, 2);
        for (step, len) in [1, 1, 3, 1, 5].into_iter().enumerate() {
            let next = block(step + 1, len);
            grown = grown.append(next.clone());
            plain = Tensor::cat(vec![plain, next], 1);
            assert_eq!(grown.len(), plain.dims()[1]);
            assert!(grown.capacity() >= grown.len());
            assert_eq!(grown.value().into_data(), plain.clone().into_data());
        }
        // Doubling: 2 → 4 → 8 → 16 for 13 positions.
        assert_eq!(grown.capacity(), 16);

        // A rewind keeps the capacity and is overwritten by what comes next.
        let rewound = grown.clone().truncate(4).append(block(9, 2));
        let expected = Tensor::cat(vec![plain.clone().narrow(1, 0, 4), block(9, 2)], 1);
        assert_eq!(rewound.value().into_data(), expected.into_data());
        // The clone it was made from still holds its own positions.
        assert_eq!(grown.value().into_data(), plain.into_data());
    }

    /// Selecting rows (dropping, reordering, repeating) gives the rows of the held value,
    /// keeps the capacity, and later appends go to the selected rows.
    #[test]
    fn selected_rows_are_the_rows_of_the_value() {
        let grown = Growing::new(block(0, 2), 1).append(block(1, 1));
        let row = |t: Tensor<B, 3>, r: usize| t.narrow(0, r, 1);
        let picked = grown.clone().select_rows(&[1, 1, 0]);
        assert_eq!((picked.rows(), picked.capacity()), (3, grown.capacity()));
        let want = Tensor::cat(
            vec![
                row(grown.value(), 1),
                row(grown.value(), 1),
                row(grown.value(), 0),
            ],
            0,
        );
        assert_eq!(picked.value().into_data(), want.clone().into_data());
        let next = Tensor::cat(vec![block(2, 1), row(block(3, 1), 0)], 0);
        let appended = picked.append(next.clone());
        let want = Tensor::cat(vec![want, next], 1);
        assert_eq!(appended.value().into_data(), want.into_data());
    }
}
