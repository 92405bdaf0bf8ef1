//! Plain-loop reference implementations of SPEC §2–§4 on `Vec<f32>`, written independently of
//! the library's tensor code (no burn, no shared helpers).
#![allow(clippy::needless_range_loop)] // plain index loops are the point of a reference

/// A matrix `[rows][cols]` row-major, as burn stores `[in, out]` weights.
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
}

/// `x · W` for `x: [rows]`.
pub fn vec_mat(x: &[f32], w: &Mat) -> Vec<f32> {
    let mut out = vec![0.0f64; w.cols];
    for (i, xi) in x.iter().enumerate() {
        for j in 0..w.cols {
            out[j] += *xi as f64 * w.data[i * w.cols + j] as f64;
        }
    }
    out.into_iter().map(|v| v as f32).collect()
}

/// SwiGLU expert with weights `gate_up: [d][2f]` (gate then up), `down: [f][d]`.
pub fn swiglu(x: &[f32], gate_up: &[f32], down: &[f32], d: usize, f: usize) -> Vec<f32> {
    vec_mat(
        &swiglu_hidden(x, gate_up, d, f),
        &Mat {
            data: down,
            rows: f,
            cols: d,
        },
    )
}

/// The SwiGLU hidden activation `silu(x·W_gate) ⊙ (x·W_up)`, `[f]`.
pub fn swiglu_hidden(x: &[f32], gate_up: &[f32], d: usize, f: usize) -> Vec<f32> {
    let h = vec_mat(
        x,
        &Mat {
            data: gate_up,
            rows: d,
            cols: 2 * f,
        },
    );
    (0..f)
        .map(|j| {
            let g = h[j] as f64;
            (g / (1.0 + (-g).exp()) * h[f + j] as f64) as f32
        })
        .collect()
}

/// Softmax of a row.
pub fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = x.iter().map(|v| ((v - m) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| (v / s) as f32).collect()
}

/// Indices of the `k` largest values (ties: lower index first).
pub fn top_k(x: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[b].partial_cmp(&x[a]).unwrap().then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Token routing of one token: (probs, chosen router indices incl. shared, gates).
pub fn token_route(logits: &[f32], shared: usize, k: usize) -> (Vec<f32>, Vec<usize>, Vec<f32>) {
    let s = softmax(logits);
    let mut routed: Vec<f32> = s.clone();
    routed[shared] = f32::NEG_INFINITY;
    let picks = top_k(&routed, k - 1);
    let norm: f32 = s[shared] + picks.iter().map(|&i| s[i]).sum::<f32>();
    let mut chosen = vec![shared];
    chosen.extend(&picks);
    let gates = chosen.iter().map(|&i| s[i] / norm).collect();
    (s, chosen, gates)
}

/// Expert weights of a token MoE, per router index (the shared one included).
pub struct TokenWeights {
    pub router: Vec<f32>,                   // [d][N_t]
    pub experts: Vec<(Vec<f32>, Vec<f32>)>, // per router index: (gate_up [d][2f], down [f][d])
    pub shared: usize,
    pub k: usize,
    pub d: usize,
    pub f: usize,
}

/// SPEC §2 output for tokens `u: [N][d]`.
pub fn token_moe(u: &[f32], w: &TokenWeights) -> Vec<f32> {
    let n_t = w.experts.len();
    let mut out = Vec::new();
    for x in u.chunks(w.d) {
        let logits = vec_mat(
            x,
            &Mat {
                data: &w.router,
                rows: w.d,
                cols: n_t,
            },
        );
        let (_, chosen, gates) = token_route(&logits, w.shared, w.k);
        let mut acc = vec![0.0f32; w.d];
        for (&e, g) in chosen.iter().zip(gates) {
            let y = swiglu(x, &w.experts[e].0, &w.experts[e].1, w.d, w.f);
            for (a, v) in acc.iter_mut().zip(y) {
                *a += g * v;
            }
        }
        out.extend(acc);
    }
    out
}

/// Segment-level settings of the reference.
pub struct SegmentWeights {
    pub router: Vec<f32>,                   // [d][N_s]
    pub experts: Vec<(Vec<f32>, Vec<f32>)>, // per expert
    pub window: usize,
    pub capacity_factor: f64,
    pub max_pool: bool,
    pub gamma: f32,
    pub cap: Option<usize>,
    pub d: usize,
    pub f: usize,
}

/// `softmax(pool(u[rows]) W_seg)` for the token rows `lo..hi` of `u` (`[rows][d]`).
pub fn segment_scores(u: &[f32], (lo, hi): (usize, usize), w: &SegmentWeights) -> Vec<f32> {
    let d = w.d;
    let mut pooled = vec![if w.max_pool { f32::NEG_INFINITY } else { 0.0 }; d];
    for tok in lo..hi {
        for c in 0..d {
            let x = u[tok * d + c];
            if w.max_pool {
                pooled[c] = pooled[c].max(x)
            } else {
                pooled[c] += x / (hi - lo) as f32
            }
        }
    }
    softmax(&vec_mat(
        &pooled,
        &Mat {
            data: &w.router,
            rows: d,
            cols: w.experts.len(),
        },
    ))
}

/// Inference routing of the segment level (issue 5), `[B][T][d]`: token `i` of window `p`
/// is routed by window `p − 1` (window 0: token 0) in causal mode; in paper mode by its whole
/// window when that window is complete, else by the window's tokens up to `i`. Each token
/// mixes its `k` best experts with weights `γ·S`.
pub fn segment_inference(
    u: &[f32],
    b: usize,
    t: usize,
    w: &SegmentWeights,
    k: usize,
    causal: bool,
) -> Vec<f32> {
    let (d, a) = (w.d, w.window);
    let mut y = vec![0.0f32; b * t * d];
    for bi in 0..b {
        for i in 0..t {
            let p = i / a;
            let (lo, hi) = match (causal, p) {
                (true, 0) => (0, 1),
                (true, _) => ((p - 1) * a, p * a),
                (false, _) if (p + 1) * a <= t => (p * a, (p + 1) * a),
                (false, _) => (p * a, i + 1),
            };
            let s = segment_scores(u, (bi * t + lo, bi * t + hi), w);
            let row = (bi * t + i) * d;
            for e in top_k(&s, k) {
                let out = swiglu(&u[row..row + d], &w.experts[e].0, &w.experts[e].1, d, w.f);
                for c in 0..d {
                    y[row + c] += s[e] * w.gamma * out[c];
                }
            }
        }
    }
    y
}

/// SPEC §3 routing: (S [V][N_s], I [N_s][r], D [N_s][r], r).
#[allow(clippy::type_complexity)]
pub fn segment_route(
    u: &[f32],
    b: usize,
    t: usize,
    w: &SegmentWeights,
) -> (Vec<Vec<f32>>, Vec<Vec<usize>>, Vec<Vec<f32>>, usize) {
    let a = w.window;
    let n_s = w.experts.len();
    let p = t.div_ceil(a);
    let v = b * p;
    let mut s = Vec::new();
    for bi in 0..b {
        for pi in 0..p {
            let lo = pi * a;
            let hi = (lo + a).min(t);
            s.push(segment_scores(u, (bi * t + lo, bi * t + hi), w));
        }
    }
    let r = ((v as f64 * w.capacity_factor / n_s as f64).floor() as usize).clamp(1, v);
    let mut taken = vec![0usize; v];
    let (mut ii, mut dd) = (Vec::new(), Vec::new());
    for e in 0..n_s {
        let col: Vec<f32> = (0..v)
            .map(|seg| match w.cap {
                Some(c) if taken[seg] >= c => -1.0,
                _ => s[seg][e],
            })
            .collect();
        let picks = top_k(&col, r);
        let mut ds = Vec::new();
        for &seg in &picks {
            let ok = w.cap.is_none_or(|c| taken[seg] < c);
            ds.push(if ok { s[seg][e] } else { 0.0 });
            if ok {
                taken[seg] += 1;
            }
        }
        ii.push(picks);
        dd.push(ds);
    }
    (s, ii, dd, r)
}

/// SPEC §3 output `[B][T][d]`.
pub fn segment_moe(u: &[f32], b: usize, t: usize, w: &SegmentWeights) -> Vec<f32> {
    let (d, a) = (w.d, w.window);
    let p = t.div_ceil(a);
    let (_, ii, dd, _) = segment_route(u, b, t, w);
    let mut y = vec![0.0f32; b * t * d];
    for (e, (segs, ds)) in ii.iter().zip(&dd).enumerate() {
        for (&seg, &dv) in segs.iter().zip(ds) {
            let (bi, pi) = (seg / p, seg % p);
            for tok in pi * a..((pi + 1) * a).min(t) {
                let row = (bi * t + tok) * d;
                let out = swiglu(&u[row..row + d], &w.experts[e].0, &w.experts[e].1, d, w.f);
                for c in 0..d {
                    y[row + c] += dv * w.gamma * out[c];
                }
            }
        }
    }
    y
}

/// SPEC §4 balance loss over routed experts for token routings (probs, chosen incl. shared).
pub fn balance_loss(routes: &[(Vec<f32>, Vec<usize>)], shared: usize) -> f32 {
    let n_t = routes[0].0.len();
    let e_r = n_t - 1;
    let n = routes.len() as f64;
    let mut f = vec![0.0f64; n_t];
    let mut p = vec![0.0f64; n_t];
    let mut picks_total = 0.0;
    for (probs, chosen) in routes {
        let routed_sum: f64 = (0..n_t)
            .filter(|&i| i != shared)
            .map(|i| probs[i] as f64)
            .sum();
        for i in (0..n_t).filter(|&i| i != shared) {
            p[i] += probs[i] as f64 / routed_sum / n;
        }
        for &c in chosen.iter().filter(|&&c| c != shared) {
            f[c] += 1.0;
            picks_total += 1.0;
        }
    }
    let l: f64 = (0..n_t).map(|i| f[i] / picks_total * p[i]).sum();
    (l * e_r as f64) as f32
}
