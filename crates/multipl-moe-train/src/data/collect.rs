//! A reproducible corpus of real code, collected from the sources that the installed
//! toolchains ship: Python's and Ruby's standard libraries, Go's `src`, the JDK's
//! `lib/src.zip`, libstdc++'s headers and the crates in cargo's registry (issue 14). It
//! installs and downloads nothing; a language whose root is missing is reported with the
//! Debian package that provides it ([`roots::package`]).
//!
//! Selection, per language found: its candidate files ([`listing::list`]) sorted by path,
//! shuffled with the seed ([`shuffled`]), then taken in that order while they fit the
//! language's share of the byte budget (budget / languages found). Files over
//! `max_file_bytes`, empty, binary (not UTF-8, or a NUL byte) and duplicate (the same text up
//! to trailing whitespace, [`normalise`]) are left out and counted. The same trees, seed and
//! budget give the same corpus.
//!
//! Output: `DIR/<language>/<path>` ([`roots::output_path`]), which
//! [`read_tree`](crate::data::corpus::read_tree) reads with the right language for every
//! file, plus `SOURCES.md` (roots, packages, licences, counts, seed and budget) and
//! `manifest.tsv` (every file with its source and SHA-256). It is built in a hidden sibling
//! directory and renamed into place, so a kill leaves the old `DIR` or the new one.

pub mod listing;
mod report;
pub mod roots;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::data::corpus::Language;
use crate::data::dataset::shuffled;
use crate::progress::Progress;
use listing::{Candidate, Reader};
use roots::{Root, RootCandidate, find_root};

/// Why a corpus could not be collected.
#[derive(Debug, Error)]
pub enum CollectError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A zip root could not be read.
    #[error("{}: not a readable zip archive: {reason}", path.display())]
    Zip {
        /// The archive.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The output directory exists and `--overwrite` was not given.
    #[error("{} exists and is not empty; pass --overwrite to replace it", path.display())]
    OutputExists {
        /// The output directory.
        path: PathBuf,
    },
    /// `--overwrite` was given for a directory that no earlier run wrote.
    #[error("{} holds no SOURCES.md and manifest.tsv of an earlier corpus; refusing to replace it", path.display())]
    NotACorpus {
        /// The output directory.
        path: PathBuf,
    },
    /// An option is out of range.
    #[error("invalid `{field}`: {reason}")]
    Option {
        /// The option.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No language had a root, or no root had a usable file.
    #[error("no source files found; {}", missing.join("; "))]
    NothingFound {
        /// `language: how to install it` for every language without files.
        missing: Vec<String>,
    },
}

impl CollectError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What to collect and where.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// The corpus directory to write.
    pub out: PathBuf,
    /// Bytes of source text in all, shared equally by the languages found.
    pub budget_bytes: u64,
    /// Seed of the per-language shuffles.
    pub seed: u64,
    /// Replace an existing corpus at `out`.
    pub overwrite: bool,
    /// Files larger than this are left out.
    pub max_file_bytes: u64,
}

impl CollectOptions {
    /// `budget_mib` MiB into `out` with `seed`; files over 64 KiB left out, no overwrite.
    pub fn new(out: impl Into<PathBuf>, budget_mib: u64, seed: u64) -> Self {
        Self {
            out: out.into(),
            budget_bytes: budget_mib.saturating_mul(1 << 20),
            seed,
            overwrite: false,
            max_file_bytes: 64 << 10,
        }
    }
}

/// One file taken into the corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Its path in the corpus, relative to `DIR/<language>/`.
    pub out: String,
    /// Its path relative to its root.
    pub rel: String,
    /// Where it came from ([`Reader::source`]).
    pub source: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// SHA-256 of its bytes, lower-case hex.
    pub sha256: String,
}

/// Files met while selecting and left out, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Larger than `max_file_bytes`.
    pub too_large: usize,
    /// Empty or only whitespace.
    pub empty: usize,
    /// Not UTF-8, or holding a NUL byte.
    pub binary: usize,
    /// The same normalised text as a file already taken.
    pub duplicates: usize,
    /// Could not be listed or read.
    pub unreadable: usize,
}

/// What was taken for one language.
#[derive(Debug, Clone)]
pub struct LanguageReport {
    /// The root it came from.
    pub root: Root,
    /// The files taken, in the order they were taken.
    pub files: Vec<Taken>,
    /// Their bytes in all.
    pub bytes: u64,
    /// Candidate files of the root.
    pub candidates: usize,
    /// Files left out.
    pub skipped: Skipped,
}

/// The corpus written.
#[derive(Debug, Clone)]
pub struct CollectReport {
    /// One report per language found, in [`Language::ALL`] order.
    pub languages: Vec<LanguageReport>,
    /// Languages whose root was not found.
    pub missing: Vec<Language>,
    /// Each language's share of the budget, bytes.
    pub share: u64,
}

/// A file's text with trailing whitespace removed from every line and from the end: two
/// files with the same normalised text are duplicates.
pub fn normalise(text: &str) -> String {
    text.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_string()
}

/// Collects the corpus described by `options` from the first root found per language among
/// `candidates` ([`roots::default_candidates`] for the installed toolchains).
pub fn collect(
    options: &CollectOptions,
    candidates: &[RootCandidate],
) -> Result<CollectReport, CollectError> {
    if options.budget_bytes == 0 {
        return Err(CollectError::Option {
            field: "budget",
            reason: "must be positive".into(),
        });
    }
    check_output(&options.out, options.overwrite)?;
    let (mut roots, mut missing) = (Vec::new(), Vec::new());
    for language in Language::ALL {
        match find_root(candidates, language) {
            Some(root) => roots.push(root),
            None => missing.push(language),
        }
    }
    let nothing = |langs: &[Language]| CollectError::NothingFound {
        missing: langs
            .iter()
            .map(|&l| format!("{}: {}", l.name(), roots::install_hint(l)))
            .collect(),
    };
    if roots.is_empty() {
        return Err(nothing(&missing));
    }
    let share = options.budget_bytes / roots.len() as u64;
    let tmp = crate::files::temp_name(&options.out);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| CollectError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| CollectError::io(&tmp, e))?;
    let built = (|| {
        let progress = Progress::new("corpus", roots.len());
        let mut languages = Vec::new();
        for (i, root) in roots.iter().enumerate() {
            let report = take_language(root, share, options, &tmp)?;
            progress.item(
                i + 1,
                &format!(
                    "{}: {} files, {} bytes",
                    root.language.name(),
                    report.files.len(),
                    report.bytes
                ),
            );
            languages.push(report);
        }
        progress.finish();
        if languages.iter().all(|l| l.files.is_empty()) {
            return Err(nothing(&Language::ALL));
        }
        let report = CollectReport {
            languages,
            missing,
            share,
        };
        report::write_sources(&tmp, &report, options)?;
        report::write_manifest(&tmp, &report)?;
        publish(&tmp, &options.out)?;
        Ok(report)
    })();
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    built
}

/// Refuses a file, or a non-empty directory unless `overwrite` and it holds an earlier
/// corpus (`SOURCES.md` and `manifest.tsv`).
fn check_output(out: &Path, overwrite: bool) -> Result<(), CollectError> {
    if !multipl_moe_qwen::export::occupied(out) {
        return Ok(());
    }
    let path = out.to_path_buf();
    if !overwrite || out.is_file() {
        return Err(CollectError::OutputExists { path });
    }
    if !(out.join("SOURCES.md").is_file() && out.join("manifest.tsv").is_file()) {
        return Err(CollectError::NotACorpus { path });
    }
    Ok(())
}

/// Renames the finished `tmp` to `out`; an old corpus there is moved aside first and
/// removed after.
fn publish(tmp: &Path, out: &Path) -> Result<(), CollectError> {
    let old = out.with_file_name(format!(
        ".{}.old-{}",
        out.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let had_old = multipl_moe_qwen::export::occupied(out);
    if had_old {
        std::fs::rename(out, &old).map_err(|e| CollectError::io(out, e))?;
    } else if out.is_dir() {
        std::fs::remove_dir(out).map_err(|e| CollectError::io(out, e))?;
    }
    if let Err(e) = std::fs::rename(tmp, out) {
        if had_old {
            let _ = std::fs::rename(&old, out);
        }
        return Err(CollectError::io(out, e));
    }
    if had_old {
        std::fs::remove_dir_all(&old).map_err(|e| CollectError::io(&old, e))?;
    }
    Ok(())
}

/// Selects and writes one language's files into `tmp/<language>/` (see the module doc).
fn take_language(
    root: &Root,
    share: u64,
    options: &CollectOptions,
    tmp: &Path,
) -> Result<LanguageReport, CollectError> {
    let listing = listing::list(root)?;
    let mut reader = Reader::open(root)?;
    let mut skipped = Skipped {
        unreadable: listing.unreadable,
        ..Skipped::default()
    };
    let mut seen = HashSet::new();
    let mut names = BTreeSet::new();
    let (mut files, mut bytes) = (Vec::new(), 0u64);
    let dir = tmp.join(root.language.name());
    let seed = options.seed ^ ((root.language as u64 + 1) << 56);
    for i in shuffled(listing.files.len(), seed) {
        let file = &listing.files[i];
        if file.size > options.max_file_bytes {
            skipped.too_large += 1;
            continue;
        }
        if file.size == 0 {
            skipped.empty += 1;
            continue;
        }
        if bytes + file.size > share {
            continue;
        }
        let text = match reader.read(file, options.max_file_bytes) {
            Ok(Some(raw)) => String::from_utf8(raw).ok().filter(|t| !t.contains('\0')),
            Ok(None) => {
                skipped.too_large += 1;
                continue;
            }
            Err(_) => {
                skipped.unreadable += 1;
                continue;
            }
        };
        let Some(text) = text else {
            skipped.binary += 1;
            continue;
        };
        let normalised = normalise(&text);
        if normalised.is_empty() {
            skipped.empty += 1;
            continue;
        }
        if bytes + text.len() as u64 > share {
            continue;
        }
        if !seen.insert(Sha256::digest(normalised.as_bytes())) {
            skipped.duplicates += 1;
            continue;
        }
        let out = unique_name(&mut names, &file.out);
        let path = dir.join(&out);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| CollectError::io(parent, e))?;
        }
        std::fs::write(&path, &text).map_err(|e| CollectError::io(&path, e))?;
        bytes += text.len() as u64;
        files.push(taken(file, out, &reader, &text));
    }
    Ok(LanguageReport {
        root: root.clone(),
        files,
        bytes,
        candidates: listing.files.len(),
        skipped,
    })
}

fn taken(file: &Candidate, out: String, reader: &Reader, text: &str) -> Taken {
    Taken {
        out,
        rel: file.rel.clone(),
        source: reader.source(file),
        bytes: text.len() as u64,
        sha256: format!("{:x}", Sha256::digest(text.as_bytes())),
    }
}

/// `name`, or `name` with `-2`, `-3`, ... before its extension when two source paths
/// sanitise to the same output path.
fn unique_name(names: &mut BTreeSet<String>, name: &str) -> String {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.contains('/') => (stem, format!(".{ext}")),
        _ => (name, String::new()),
    };
    let mut candidate = name.to_string();
    let mut n = 1;
    while !names.insert(candidate.clone()) {
        n += 1;
        candidate = format!("{stem}-{n}{ext}");
    }
    candidate
}

#[cfg(test)]
mod tests;
