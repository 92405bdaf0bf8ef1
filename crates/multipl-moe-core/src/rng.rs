//! A small deterministic PRNG (splitmix64), the same on every platform and every version of
//! this crate: data shuffles and seeded sampling reproduce exactly.

/// splitmix64 state.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A random element.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Seeds burn's random number generator for `B` with `seed`, then runs `draw` (which builds or
/// perturbs modules by drawing from it), holding one process-wide lock throughout.
///
/// `Backend::seed` sets a generator global to the process, so two threads that each seed and
/// then draw (tests running in parallel, an app initialising two models at once) can interleave
/// and each get the other's numbers. Everything in this workspace that seeds burn's generator
/// goes through here; code that draws without seeding is not serialised. `draw` must not call
/// `seeded` itself (the lock is not reentrant).
pub fn seeded<B: burn::tensor::backend::Backend, T>(
    device: &B::Device,
    seed: u64,
    draw: impl FnOnce() -> T,
) -> T {
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A panic while drawing leaves nothing half-updated that the next caller depends on: it
    // seeds again first.
    let _guard = GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(device, seed);
    draw()
}
