//! The PyTorch side of the benches: `bench/*.py` scripts run in a fresh `python3` process per
//! round, alternating with our own timing so that both see the same load.

use std::process::Command;

/// Whether `python3` can import torch and safetensors.
pub fn torch_available() -> bool {
    Command::new("python3")
        .args(["-c", "import torch, safetensors"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The thread count both sides use: every core of this machine.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `bench/{script}` with `args`; its stdout, or why it failed.
pub fn run_script(script: &str, args: &[String]) -> Result<String, String> {
    let path = format!("{}/bench/{script}", env!("CARGO_MANIFEST_DIR"));
    match Command::new("python3").arg(&path).args(args).output() {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).into_owned()),
        Ok(o) => Err(format!(
            "{script} failed: {} {}",
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("could not run python3: {e}")),
    }
}

/// The number that follows `marker` in `text` (e.g. `"fwd+bwd: "` in `"... fwd+bwd: 0.5 s"`).
pub fn number_after(text: &str, marker: &str) -> Option<f64> {
    text.split(marker)
        .nth(1)?
        .split_whitespace()
        .next()?
        .trim_end_matches(',')
        .parse()
        .ok()
}

/// Per-round seconds of ours and torch's, printed as a table with the overall ratio.
#[derive(Default)]
pub struct Rounds {
    rows: Vec<(f64, f64)>,
}

impl Rounds {
    /// Records one round.
    pub fn push(&mut self, ours: f64, torch: f64) {
        self.rows.push((ours, torch));
    }

    /// Prints `| round | ours s | torch s | ours / torch |` rows and the totals.
    pub fn print(&self) {
        println!("| round | ours s | torch s | ours / torch |");
        println!("|---:|---:|---:|---:|");
        for (i, (ours, torch)) in self.rows.iter().enumerate() {
            println!(
                "| {} | {ours:.3} | {torch:.3} | {:.2} |",
                i + 1,
                ours / torch
            );
        }
        let (ours, torch) = self
            .rows
            .iter()
            .fold((0.0, 0.0), |(a, b), (o, t)| (a + o, b + t));
        println!("| all | {ours:.3} | {torch:.3} | **{:.2}** |", ours / torch);
    }
}
