//! How often the inference routing of the segment level agrees with its training routing
//! (issue 5, SPEC §6), and what the difference costs in validation loss.
//!
//! Training routes a window by its pooled tokens with expert choice over every segment of the
//! batch; inference gives each window (or, while it grows, each prefix of it) its own top-`k`
//! experts of the same scores (see `CausalLm::forward_inference`). Both are evaluated on the
//! same FFN inputs `u` — the training forward's — so the figures isolate the routing rule.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use multipl_moe_core::decoder::FeedForward;
use multipl_moe_core::segment_moe::{SegmentMoe, pool_segments};
use multipl_moe_core::{CausalLm, Logits, SegmentRouting};
use serde::Serialize;

use crate::data::dataset::Sequence;
use crate::progress::Progress;

/// Agreement of one hybrid layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LayerAgreement {
    /// Layer index.
    pub layer: usize,
    /// Complete windows compared.
    pub windows: usize,
    /// Complete windows whose inference experts are exactly training's.
    pub closed_exact: f64,
    /// Inference picks on complete windows that training also made.
    pub closed_precision: f64,
    /// Windows to which training's expert choice gave no expert at all.
    pub unserved: f64,
    /// `prefix_precision[j-1]`: inference picks from the window's first `j` tokens that
    /// training made for the whole window (`j = a` is `closed_precision`).
    pub prefix_precision: Vec<f64>,
    /// `prefix_exact[j-1]`: the same as exact-set agreement.
    pub prefix_exact: Vec<f64>,
}

/// The whole measurement.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgreementReport {
    /// One entry per paper-mode hybrid layer (causal mode routes identically by design).
    pub layers: Vec<LayerAgreement>,
    /// Experts per segment at inference.
    pub k: usize,
    /// Sequences per training batch (expert choice competes within it).
    pub batch: usize,
    /// Validation cross-entropy with training routing (batched forward).
    pub ce_training_routing: f64,
    /// Validation cross-entropy as generation sees it: the cached inference forward, one token
    /// at a time, teacher-forced.
    pub ce_generation: f64,
}

impl AgreementReport {
    /// Averages over layers: `(closed_exact, closed_precision, unserved, prefix_precision
    /// averaged over all token positions)`.
    pub fn summary(&self) -> (f64, f64, f64, f64) {
        let n = self.layers.len().max(1) as f64;
        let mean = |f: &dyn Fn(&LayerAgreement) -> f64| self.layers.iter().map(f).sum::<f64>() / n;
        (
            mean(&|l| l.closed_exact),
            mean(&|l| l.closed_precision),
            mean(&|l| l.unserved),
            mean(&|l| {
                l.prefix_precision.iter().sum::<f64>() / l.prefix_precision.len().max(1) as f64
            }),
        )
    }

    /// A short plain-text report.
    pub fn table(&self) -> String {
        let mut out = format!(
            "segment routing, inference vs training (k = {}, training batch {}):\n\
             layer  windows  exact  precision  unserved  prefix precision (j = 1, a/4, a/2, a)\n",
            self.k, self.batch
        );
        for l in &self.layers {
            let a = l.prefix_precision.len();
            let at = |j: usize| l.prefix_precision[j.clamp(1, a) - 1];
            out.push_str(&format!(
                "{:>5}  {:>7}  {:>5.3}  {:>9.3}  {:>8.3}  {:.3} {:.3} {:.3} {:.3}\n",
                l.layer,
                l.windows,
                l.closed_exact,
                l.closed_precision,
                l.unserved,
                at(1),
                at(a / 4),
                at(a / 2),
                at(a)
            ));
        }
        out.push_str(&format!(
            "validation CE: training routing {:.4}, generation (cached, token by token) {:.4}\n",
            self.ce_training_routing, self.ce_generation
        ));
        out
    }
}

#[derive(Default)]
struct Counts {
    windows: usize,
    unserved: usize,
    exact: Vec<usize>,
    hits: Vec<usize>,
    picks: Vec<usize>,
}

impl Counts {
    /// Compares, for every complete window of `u: [B, T, d]`, the top-`k` experts
    /// (`k = experts_per_segment`) that the
    /// pool of its first `j` tokens gets at inference (`j = 1..=a`) with the experts that
    /// training's expert choice gave it (`gates: [B·P, N_s]`, non-zero = chosen).
    fn add<B: Backend>(&mut self, seg: &SegmentMoe<B>, u: Tensor<B, 3>, gates: Tensor<B, 2>) {
        let k = seg.experts_per_segment();
        let [b, t, d] = u.dims();
        let n_s = seg.experts.num_experts();
        let a = seg.window;
        let (p_all, p_full) = (t.div_ceil(a), t / a);
        let trained: Vec<Vec<usize>> = host(gates)
            .chunks(n_s)
            .map(|row| (0..n_s).filter(|&e| row[e] > 0.0).collect())
            .collect();
        self.exact.resize(a, 0);
        self.hits.resize(a, 0);
        self.picks.resize(a, 0);
        let windows = u.narrow(1, 0, p_full * a).reshape([b, p_full, a, d]);
        for j in 1..=a {
            let prefix = windows.clone().narrow(2, 0, j).reshape([b, p_full * j, d]);
            let pooled = pool_segments(prefix, j, seg.pooling).reshape([b * p_full, d]);
            let (experts, _) = seg.inference_choice(pooled);
            let chosen: Vec<i64> = experts
                .into_data()
                .convert::<i64>()
                .to_vec()
                .unwrap_or_default();
            let sets = chosen.chunks(k).map(|row| {
                let mut set: Vec<usize> = row.iter().map(|&e| e as usize).collect();
                set.sort_unstable();
                set
            });
            for (w, set) in sets.enumerate() {
                let train = &trained[(w / p_full) * p_all + w % p_full];
                self.exact[j - 1] += usize::from(*train == set);
                self.hits[j - 1] += set.iter().filter(|e| train.contains(e)).count();
                self.picks[j - 1] += set.len();
                if j == a {
                    self.windows += 1;
                    self.unserved += usize::from(train.is_empty());
                }
            }
        }
    }

    /// The rates of `layer`'s counts.
    fn agreement(self, layer: usize) -> LayerAgreement {
        let windows = self.windows.max(1) as f64;
        let prefix_exact: Vec<f64> = self.exact.iter().map(|&v| v as f64 / windows).collect();
        let prefix_precision: Vec<f64> = self
            .hits
            .iter()
            .zip(&self.picks)
            .map(|(&h, &p)| h as f64 / p.max(1) as f64)
            .collect();
        LayerAgreement {
            layer,
            windows: self.windows,
            closed_exact: prefix_exact.last().copied().unwrap_or(0.0),
            closed_precision: prefix_precision.last().copied().unwrap_or(0.0),
            unserved: self.unserved as f64 / windows,
            prefix_precision,
            prefix_exact,
        }
    }
}

/// Summed next-token NLL of `tokens` as generation computes it: the cached inference
/// forward, one token at a time, teacher-forced.
fn generation_nll<B: Backend>(model: &CausalLm<B>, tokens: &[u32], device: &B::Device) -> f64 {
    let mut cache = None;
    let mut nll = 0.0;
    for pos in 0..tokens.len() - 1 {
        let x = Tensor::<B, 2, Int>::from_data(
            TensorData::new(vec![tokens[pos] as i64], [1, 1]),
            device,
        );
        let (logits, grown) = model.forward_inference(x, cache.take(), Logits::Last);
        cache = Some(grown);
        let row = host(log_softmax(logits.reshape([1, model.vocab_size()]), 1));
        nll -= row[tokens[pos + 1] as usize] as f64;
    }
    nll
}

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap_or_default()
}

/// Measures agreement on `sequences` (equal lengths) in training batches of `batch`.
pub fn routing_agreement<B: Backend>(
    model: &CausalLm<B>,
    sequences: &[Sequence],
    batch: usize,
    device: &B::Device,
) -> AgreementReport {
    let mut counts: Vec<Option<Counts>> = model.layers.iter().map(|_| None).collect();
    let mut k = 0;
    let (mut ce_train, mut ce_gen, mut n_pred) = (0.0, 0.0, 0usize);
    let progress = Progress::new("routing agreement", sequences.len());
    let mut done = 0;
    for chunk in sequences.chunks(batch.max(1)) {
        let t = chunk[0].tokens.len();
        let ids: Vec<i64> = chunk
            .iter()
            .flat_map(|s| s.tokens.iter().map(|&x| x as i64))
            .collect();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [chunk.len(), t]), device);
        let inputs = tokens.clone().narrow(1, 0, t - 1);
        let targets = tokens.clone().narrow(1, 1, t - 1);
        let b = chunk.len();

        // The training forward, counting each paper-mode layer's agreement on its FFN input.
        let out = model.forward_observed(inputs, None, |i, u, routing| {
            if let (FeedForward::Hybrid(moe), Some(routing)) = (&model.layers[i].mlp, routing) {
                let seg = &moe.segment_moe;
                if seg.routing == SegmentRouting::Paper {
                    k = seg.experts_per_segment();
                    let c = counts[i].get_or_insert_with(Counts::default);
                    c.add(seg, u, routing.segment.gates.clone());
                }
            }
        });
        let logits = out.logits;
        let nll = log_softmax(logits, 2)
            .gather(2, targets.clone().unsqueeze_dim(2))
            .neg()
            .sum();
        ce_train += host(nll).first().copied().unwrap_or(0.0) as f64;

        for seq in chunk {
            ce_gen += generation_nll(model, &seq.tokens, device);
            done += 1;
            progress.item(done, "");
        }
        n_pred += b * (t - 1);
    }
    progress.finish();
    let layers = counts
        .into_iter()
        .enumerate()
        .filter_map(|(layer, c)| c.map(|c| c.agreement(layer)))
        .collect();
    let n = n_pred.max(1) as f64;
    AgreementReport {
        layers,
        k,
        batch,
        ce_training_routing: ce_train / n,
        ce_generation: ce_gen / n,
    }
}
