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

/// The training backend: autodiff over [`Backend`].
pub type TrainBackend = burn::backend::Autodiff<Backend>;

/// The default device of [`Backend`].
pub fn device() -> burn::tensor::Device<Backend> {
    Default::default()
}
