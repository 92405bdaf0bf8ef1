//! Embedding the hybrid MoE layer in a Burn model of your own.
//!
//! A toy model — embedding, one `HybridMoe`, a linear head — learns to predict the next
//! token of a periodic sequence for a few AdamW steps. Run with
//! `cargo run --release --example embed` (add `--features wgpu` for the GPU).

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use multipl_moe::backend::{NAME, TrainBackend};
use multipl_moe::core::{HybridMoe, HybridMoeConfig, MoeConfig};

/// The user's own model: the hybrid MoE is just one of its layers.
#[derive(Module, Debug)]
struct TinyLm<B: Backend> {
    embed: Embedding<B>,
    moe: HybridMoe<B>,
    head: Linear<B>,
}

impl<B: Backend> TinyLm<B> {
    fn new(vocab: usize, d: usize, device: &B::Device) -> Self {
        Self {
            embed: EmbeddingConfig::new(vocab, d).init(device),
            moe: HybridMoeConfig::new(MoeConfig::tiny(), d, 2 * d).init(device),
            head: LinearConfig::new(d, vocab).init(device),
        }
    }

    /// Next-token loss plus `α·L_bal`.
    fn loss(&self, tokens: Tensor<B, 2, Int>) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let [b, t] = tokens.dims();
        let inputs = tokens.clone().narrow(1, 0, t - 1);
        let targets = tokens.narrow(1, 1, t - 1).reshape([b * (t - 1)]);
        let h = self.embed.forward(inputs);
        let (moe, routing) = self.moe.forward(h.clone(), None);
        let logits = self.head.forward(h.add(moe));
        let vocab = logits.dims()[2];
        let ce = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.reshape([b * (t - 1), vocab]), targets);
        let total = ce.clone().add(routing.balance_loss.mul_scalar(0.01));
        (total, ce)
    }
}

fn main() {
    let device = Default::default();
    let (vocab, d) = (32, 32);
    let mut model = TinyLm::<TrainBackend>::new(vocab, d, &device);
    let mut optim = AdamWConfig::new().init();
    let ids: Vec<i64> = (0..4 * 33)
        .map(|i| (i * 5 % 11 + i / 33) % vocab as i64)
        .collect();
    let tokens = Tensor::<TrainBackend, 2, Int>::from_data(TensorData::new(ids, [4, 33]), &device);
    println!("backend: {NAME}");
    for step in 0..30 {
        let (loss, ce) = model.loss(tokens.clone());
        let ce = ce.into_scalar();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(3e-3, model, grads);
        if step % 5 == 0 || step == 29 {
            println!("step {step:>2}: cross-entropy {ce:.4}");
        }
    }
}
