//! The machine a figure comes from. Every bench prints [`Host::measure`] first, and
//! `multipl-moe host` prints it for the scripts, because the same code runs at different shares
//! of PyTorch's speed on different CPUs (BENCHMARKS.md keeps one table per host kind):
//! the CPU's name, vendor, family and model (`/proc/cpuinfo`), the ISA extensions its kernels
//! can use (detected with CPUID), the f32 FMA peak and the read bandwidth on the bench's
//! threads.

pub mod bandwidth;
pub mod fma_peak;

use std::fmt;

/// What a figure's host is.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// `model name` of `/proc/cpuinfo` (e.g. `AMD EPYC 9B45`).
    pub name: String,
    /// `vendor_id` (`AuthenticAMD`, `GenuineIntel`).
    pub vendor: String,
    /// `cpu family` and `model`, decimal, as `/proc/cpuinfo` gives them.
    pub family_model: Option<(u32, u32)>,
    /// The vector extensions detected (AVX2, FMA, the AVX-512 subsets; AMX as the kernel
    /// reports it, its CPUID detection being unstable in Rust).
    pub isa: Vec<&'static str>,
    /// Threads the measurements ran on.
    pub threads: usize,
    /// f32 FMA peak in GFLOP/s and how it was reached ([`fma_peak::f32_fma_peak`]).
    pub fma_peak: Option<(f64, &'static str)>,
    /// Read bandwidth in GB/s ([`bandwidth::read_gb_per_s`]).
    pub read_gb_per_s: f64,
}

/// The value of the first `key : value` line of `/proc/cpuinfo` with `key`.
fn cpuinfo_field(cpuinfo: &str, key: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// The vector extensions of this CPU that matter to f32 kernels, by CPUID.
fn isa() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut found = Vec::new();
        macro_rules! detect {
            ($($feature:tt),*) => {
                $(if std::arch::is_x86_feature_detected!($feature) {
                    found.push($feature);
                })*
            };
        }
        detect!(
            "avx2",
            "fma",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni",
            "avx512bf16",
            "avx512fp16"
        );
        found
    }
    #[cfg(target_arch = "aarch64")]
    {
        let mut found = vec!["neon"];
        if std::arch::is_aarch64_feature_detected!("sve") {
            found.push("sve");
        }
        found
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        Vec::new()
    }
}

impl Host {
    /// Reads the CPU's identity and measures its FMA peak and read bandwidth on `threads`
    /// threads (about two seconds).
    pub fn measure(threads: usize) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |key| cpuinfo_field(&cpuinfo, key);
        let number = |key| field(key).and_then(|v| v.parse::<u32>().ok());
        Self {
            name: field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string()),
            vendor: field("vendor_id").unwrap_or_default(),
            family_model: number("cpu family").zip(number("model")),
            isa: {
                let mut isa = isa();
                let flags = field("flags").unwrap_or_default();
                if flags.split_whitespace().any(|f| f == "amx_tile") {
                    isa.push("amx-tile");
                }
                isa
            },
            threads,
            fma_peak: fma_peak::f32_fma_peak(threads),
            read_gb_per_s: bandwidth::read_gb_per_s(threads),
        }
    }
}

impl fmt::Display for Host {
    /// One line: `host: NAME (VENDOR family F model M); ISA ...; threads N: f32 FMA peak X
    /// GFLOP/s (how), read bandwidth Y GB/s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host: {} ({}", self.name, self.vendor)?;
        if let Some((family, model)) = self.family_model {
            write!(f, " family {family} model {model}")?;
        }
        write!(
            f,
            "); ISA {}; threads {}: ",
            self.isa.join(" "),
            self.threads
        )?;
        match self.fma_peak {
            Some((peak, how)) => write!(f, "f32 FMA peak {peak:.1} GFLOP/s ({how})")?,
            None => write!(f, "no f32 FMA peak measured")?,
        }
        write!(f, ", read bandwidth {:.1} GB/s", self.read_gb_per_s)
    }
}

#[cfg(test)]
mod tests {
    use super::cpuinfo_field;

    #[test]
    fn cpuinfo_fields_are_read_by_key() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n";
        assert_eq!(cpuinfo_field(text, "model").as_deref(), Some("2"));
        assert_eq!(
            cpuinfo_field(text, "model name").as_deref(),
            Some("AMD EPYC")
        );
        assert_eq!(cpuinfo_field(text, "cpu family").as_deref(), Some("26"));
        assert_eq!(cpuinfo_field(text, "stepping"), None);
    }
}
