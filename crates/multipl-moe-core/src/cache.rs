//! What the model keeps between generation steps.

use burn::tensor::{Int, Tensor, backend::Backend};

use crate::attention::KvCache;

/// The state of one decoder layer after some positions.
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    /// Attention keys and values.
    pub kv: KvCache<B>,
    /// For a hybrid layer, its FFN inputs `u` (the post-attention RMSNorm output) at every
    /// cached position, `[B, S, d]`: segment routing pools them; `None` for a dense layer.
    pub ffn_inputs: Option<Tensor<B, 3>>,
}

impl<B: Backend> LayerCache<B> {
    /// The first `len` positions.
    pub fn truncate(self, len: usize) -> Self {
        Self {
            kv: self.kv.truncate(len),
            ffn_inputs: self.ffn_inputs.map(|u| u.narrow(1, 0, len)),
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
        }
    }
}
