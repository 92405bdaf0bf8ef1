//! Import of a Hugging Face checkpoint: wall time and peak RSS of `load_model` (issue 10).
//!
//! `cargo bench -p multipl-moe-qwen --bench import -- DIR` loads DIR once onto the ndarray backend and prints one
//! JSON line: `{"seconds": .., "peak_rss_mib": .., "baseline_rss_mib": .., "f32_mib": ..}`.
//! `scripts/bench_import.py` makes a Qwen1.5-0.5B-shaped checkpoint with transformers and
//! alternates this bench with transformers' `from_pretrained` on the same files and threads.

use std::time::Instant;

use burn::backend::NdArray;
use burn::module::Module;
use multipl_moe_qwen::load_model;

/// A field of /proc/self/status in MiB (Linux).
fn status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let Some(dir) = std::env::args().skip(1).find(|a| !a.starts_with("--")) else {
        eprintln!("usage: cargo bench --bench import -- MODEL_DIR");
        std::process::exit(2);
    };
    let baseline = status_mib("VmRSS:").unwrap_or(f64::NAN);
    let start = Instant::now();
    let (_, model) = match load_model::<NdArray>(std::path::Path::new(&dir), &Default::default()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let f32_mib = model.num_params() as f64 * 4.0 / (1024.0 * 1024.0);
    println!(
        "{{\"seconds\": {seconds:.3}, \"peak_rss_mib\": {:.1}, \"baseline_rss_mib\": {baseline:.1}, \"f32_mib\": {f32_mib:.1}}}",
        status_mib("VmHWM:").unwrap_or(f64::NAN)
    );
}
