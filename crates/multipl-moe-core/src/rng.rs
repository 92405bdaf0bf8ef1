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

/// Runs `draw` holding the process-wide lock on burn's random number generator.
///
/// `Backend::seed` sets a generator global to the process, so a thread that seeds and then
/// draws (tests running in parallel, an app initialising two models at once) gets other
/// numbers whenever another thread draws in between. Every draw this workspace makes goes
/// through here: [`seeded`], and [`crate::model::materialize`] (where
/// [`crate::MultiplMoeConfig::init`] and the upcycler draw burn's lazily initialised
/// parameters). The lock is reentrant on one thread, so `draw` may call [`seeded`] or
/// `init`. Draws outside this workspace's code (a burn module read before it is
/// materialised, `Tensor::random`) are not serialised: wrap them in this function.
pub fn with_generator<T>(draw: impl FnOnce() -> T) -> T {
    use std::cell::Cell;
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    thread_local! {
        static HELD: Cell<bool> = const { Cell::new(false) };
    }
    if HELD.with(Cell::get) {
        return draw();
    }
    /// Releases the thread's claim even when `draw` panics.
    struct Held;
    impl Drop for Held {
        fn drop(&mut self) {
            HELD.with(|h| h.set(false));
        }
    }
    // A panic while drawing leaves nothing half-updated that the next caller depends on: it
    // seeds again first.
    let _guard = GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    HELD.with(|h| h.set(true));
    let _held = Held;
    draw()
}

/// Seeds burn's random number generator for `B` with `seed`, then runs `draw` (which builds or
/// perturbs modules by drawing from it), holding [`with_generator`]'s lock throughout: the
/// same seed gives the same values however many threads draw at once.
pub fn seeded<B: burn::tensor::backend::Backend, T>(
    device: &B::Device,
    seed: u64,
    draw: impl FnOnce() -> T,
) -> T {
    with_generator(|| {
        B::seed(device, seed);
        draw()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, Tensor};

    fn draw(n: usize) -> Vec<f32> {
        Tensor::<NdArray, 1>::random([n], Distribution::Default, &Default::default())
            .into_data()
            .to_vec()
            .unwrap_or_default()
    }

    /// Threads that draw without seeding, all through `with_generator`, never move a seeded
    /// draw off its values; nesting does not deadlock.
    #[test]
    fn seeded_draws_repeat_while_other_threads_draw() {
        let device = Default::default();
        let expected = seeded::<NdArray, _>(&device, 7, || draw(64));
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        with_generator(|| draw(16));
                    }
                });
            }
            for _ in 0..50 {
                let got = seeded::<NdArray, _>(&device, 7, || with_generator(|| draw(64)));
                assert_eq!(got, expected);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
}
