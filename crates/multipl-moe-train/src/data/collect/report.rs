//! `SOURCES.md` (where each language came from, its package and licence, counts, seed and
//! budget) and `manifest.tsv` (every file with its source and SHA-256) of a corpus.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::roots::{self, RootKind};
use super::{CollectError, CollectOptions, CollectReport, LanguageReport};
use crate::data::corpus::Language;

/// Writes `dir/SOURCES.md`.
pub fn write_sources(
    dir: &Path,
    report: &CollectReport,
    options: &CollectOptions,
) -> Result<(), CollectError> {
    let mut md = String::from("# Sources of this corpus\n\n");
    let _ = writeln!(
        md,
        "Collected by `multipl-moe corpus --seed {} --budget-mib {}` from the sources of the \
         installed toolchains: a budget of {} bytes, {} bytes per language found. Per language \
         the candidate files are sorted by path, shuffled with the seed and taken while they \
         fit; files over {} bytes, empty, binary (not UTF-8, or a NUL byte) and duplicate \
         (the same text up to trailing whitespace) are left out. `manifest.tsv` lists every \
         file with its source and SHA-256.\n",
        options.seed,
        budget_mib(options.budget_bytes),
        options.budget_bytes,
        report.share,
        options.max_file_bytes,
    );
    md.push_str("| language | files | bytes | root | Debian package | licence |\n");
    md.push_str("|---|---:|---:|---|---|---|\n");
    for l in &report.languages {
        let lang = l.root.language;
        let _ = writeln!(
            md,
            "| {} | {} | {} | `{}` | `{}` | {} |",
            lang.name(),
            l.files.len(),
            l.bytes,
            l.root.path.display(),
            roots::package(lang),
            roots::licence(lang)
        );
    }
    md.push_str(
        "\nLeft out while selecting (too large / empty / binary / duplicate / unreadable):\n\n",
    );
    for l in &report.languages {
        let s = l.skipped;
        let _ = writeln!(
            md,
            "- {}: {} candidates; {} / {} / {} / {} / {}",
            l.root.language.name(),
            l.candidates,
            s.too_large,
            s.empty,
            s.binary,
            s.duplicates,
            s.unreadable
        );
    }
    if !report.missing.is_empty() {
        md.push_str("\nMissing languages:\n\n");
        for &l in &report.missing {
            let _ = writeln!(md, "- {}: {}", l.name(), roots::install_hint(l));
        }
    }
    if let Some(rust) = report
        .languages
        .iter()
        .find(|l| l.root.language == Language::Rust)
    {
        md.push_str(
            "\n## Rust crates\n\n| crate | licence | files | bytes |\n|---|---|---:|---:|\n",
        );
        for (name, (licence, files, bytes)) in crate_licences(rust) {
            let _ = writeln!(md, "| {name} | {licence} | {files} | {bytes} |");
        }
    }
    let path = dir.join("SOURCES.md");
    std::fs::write(&path, md).map_err(|e| CollectError::io(&path, e))
}

fn budget_mib(bytes: u64) -> String {
    let mib = bytes as f64 / (1u64 << 20) as f64;
    format!("{mib}")
}

/// Per crate directory (`name-version`, the first component of a Rust file's path):
/// the `license` of its `Cargo.toml` (or `see FILE` for a `license-file`, or `not stated`),
/// files and bytes taken.
pub fn crate_licences(rust: &LanguageReport) -> BTreeMap<String, (String, usize, u64)> {
    let mut crates: BTreeMap<String, (String, usize, u64)> = BTreeMap::new();
    for file in &rust.files {
        let name = file.rel.split('/').next().unwrap_or_default().to_string();
        let entry = crates.entry(name).or_insert_with_key(|name| {
            let licence = match rust.root.kind {
                RootKind::Dir => crate_licence(&rust.root.path.join(name).join("Cargo.toml")),
                RootKind::Zip => None,
            };
            (licence.unwrap_or_else(|| "not stated".into()), 0, 0)
        });
        entry.1 += 1;
        entry.2 += file.bytes;
    }
    crates
}

fn crate_licence(manifest: &Path) -> Option<String> {
    let text = std::fs::read_to_string(manifest).ok()?;
    let table: toml::Table = text.parse().ok()?;
    let package = table.get("package")?.as_table()?;
    match (package.get("license"), package.get("license-file")) {
        (Some(toml::Value::String(l)), _) => Some(l.clone()),
        (_, Some(toml::Value::String(f))) => Some(format!("see {f}")),
        _ => None,
    }
}

/// Writes `dir/manifest.tsv`: `language`, `path` (relative to `dir`), `bytes`, `sha256`,
/// `source`, one line per file, with a header line.
pub fn write_manifest(dir: &Path, report: &CollectReport) -> Result<(), CollectError> {
    let mut tsv = String::from("language\tpath\tbytes\tsha256\tsource\n");
    let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
    for l in &report.languages {
        let lang = l.root.language.name();
        let mut files: Vec<_> = l.files.iter().collect();
        files.sort_by(|a, b| a.out.cmp(&b.out));
        for f in files {
            let _ = writeln!(
                tsv,
                "{lang}\t{lang}/{}\t{}\t{}\t{}",
                clean(&f.out),
                f.bytes,
                f.sha256,
                clean(&f.source)
            );
        }
    }
    let path = dir.join("manifest.tsv");
    std::fs::write(&path, tsv).map_err(|e| CollectError::io(&path, e))
}

/// The per-language counts as a table, then each missing language with how to install it.
impl std::fmt::Display for CollectReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<8} {:>6} {:>10} {:>10}  left out (too large / empty / binary / duplicate / unreadable)  root",
            "language", "files", "bytes", "candidates"
        )?;
        for l in &self.languages {
            let s = l.skipped;
            writeln!(
                f,
                "{:<8} {:>6} {:>10} {:>10}  {} / {} / {} / {} / {}  {}",
                l.root.language.name(),
                l.files.len(),
                l.bytes,
                l.candidates,
                s.too_large,
                s.empty,
                s.binary,
                s.duplicates,
                s.unreadable,
                l.root.path.display()
            )?;
        }
        for &l in &self.missing {
            writeln!(f, "{:<8} missing: {}", l.name(), roots::install_hint(l))?;
        }
        Ok(())
    }
}
