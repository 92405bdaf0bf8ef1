//! The backend chosen by cargo feature, picked once at the edge of the program.
//!
//! Precedence when several features are enabled: `cuda` > `metal` > `vulkan` > `wgpu` >
//! `ndarray`.

#[cfg(feature = "cuda")]
mod chosen {
    /// The compute backend.
    pub type Backend = burn::backend::Cuda;
    /// Its name, for messages.
    pub const NAME: &str = "cuda";
}

#[cfg(all(
    not(feature = "cuda"),
    any(feature = "wgpu", feature = "metal", feature = "vulkan")
))]
mod chosen {
    /// The compute backend.
    pub type Backend = burn::backend::Wgpu;
    /// Its name, for messages.
    pub const NAME: &str = if cfg!(feature = "metal") {
        "wgpu (metal)"
    } else if cfg!(feature = "vulkan") {
        "wgpu (vulkan)"
    } else {
        "wgpu"
    };
}

#[cfg(not(any(
    feature = "cuda",
    feature = "wgpu",
    feature = "metal",
    feature = "vulkan"
)))]
mod chosen {
    /// The compute backend.
    pub type Backend = burn::backend::NdArray;
    /// Its name, for messages.
    pub const NAME: &str = "ndarray";
}

pub use chosen::{Backend, NAME};

/// The training backend: autodiff over [`Backend`]. With the `activation-checkpointing` feature,
/// burn's `BalancedCheckpointing`: the outputs of memory-bound operations (element-wise ops,
/// activations) are recomputed in the backward pass instead of kept from the forward pass.
#[cfg(not(feature = "activation-checkpointing"))]
pub type TrainBackend = burn::backend::Autodiff<Backend>;
/// The training backend: autodiff over [`Backend`], recomputing memory-bound operations in the
/// backward pass (burn's `BalancedCheckpointing`; the `activation-checkpointing` feature).
#[cfg(feature = "activation-checkpointing")]
pub type TrainBackend = burn::backend::Autodiff<
    Backend,
    burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing,
>;

/// The default device of [`Backend`].
pub fn device() -> burn::tensor::Device<Backend> {
    Default::default()
}

/// `n` devices of [`Backend`] for data-parallel training (burn-train's multi-device
/// strategy): the first `n` GPUs (CUDA ordinals, or wgpu's discrete GPUs) on GPU backends;
/// ndarray has a single CPU device, which is repeated (burn-train then runs `n` workers on
/// it — a check of the code path, not a speed-up). `n <= 1` gives the default device.
pub fn devices(n: usize) -> Vec<burn::tensor::Device<Backend>> {
    if n <= 1 {
        return vec![device()];
    }
    (0..n).map(nth_device).collect()
}

#[cfg(feature = "cuda")]
fn nth_device(i: usize) -> burn::tensor::Device<Backend> {
    burn::backend::cuda::CudaDevice::new(i)
}

#[cfg(all(
    not(feature = "cuda"),
    any(feature = "wgpu", feature = "metal", feature = "vulkan")
))]
fn nth_device(i: usize) -> burn::tensor::Device<Backend> {
    burn::backend::wgpu::WgpuDevice::DiscreteGpu(i)
}

#[cfg(not(any(
    feature = "cuda",
    feature = "wgpu",
    feature = "metal",
    feature = "vulkan"
)))]
fn nth_device(_: usize) -> burn::tensor::Device<Backend> {
    device()
}
