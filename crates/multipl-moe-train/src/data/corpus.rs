//! The six languages and source documents: a directory tree (language from the file
//! extension) or JSONL. The embedded corpus is made by [`crate::data::generator::embedded`],
//! which depends on this module and not the other way round.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The six languages of the paper (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Language {
    /// Python (high resource).
    Python,
    /// Java (high resource).
    Java,
    /// C++ (high resource).
    Cpp,
    /// Rust (low resource).
    Rust,
    /// Go (low resource).
    Go,
    /// Ruby (low resource).
    Ruby,
}

impl Language {
    /// All six, high-resource first.
    pub const ALL: [Language; 6] = [
        Language::Python,
        Language::Java,
        Language::Cpp,
        Language::Rust,
        Language::Go,
        Language::Ruby,
    ];

    /// Whether the paper counts it as low-resource.
    pub fn is_low_resource(self) -> bool {
        matches!(self, Language::Rust | Language::Go | Language::Ruby)
    }

    /// The language of a file extension: `py`; `java`; `cpp`, `cc`, `cxx`, `c++`, `hpp`,
    /// `hh`, `hxx`, `h++`, `tcc`, `ipp`; `rs`; `go`; `rb`. `.h` is not here: C and C++ share
    /// it, see [`Language::detect`].
    pub fn from_extension(ext: &str) -> Option<Self> {
        Some(match ext.to_ascii_lowercase().as_str() {
            "py" => Language::Python,
            "java" => Language::Java,
            "cpp" | "cc" | "cxx" | "c++" | "hpp" | "hh" | "hxx" | "h++" | "tcc" | "ipp" => {
                Language::Cpp
            }
            "rs" => Language::Rust,
            "go" => Language::Go,
            "rb" => Language::Ruby,
            _ => return None,
        })
    }

    /// The language of a file from its name and text. By extension first
    /// ([`Language::from_extension`]); a `.h` file is C++ when its text looks like C++
    /// ([`looks_like_cpp`]), and skipped as C otherwise; a file without extension is known by
    /// an editor mode line (`-*- C++ -*-`, as libstdc++'s `<vector>` has), a C++-looking
    /// header ([`looks_like_cpp`] plus an `#include` or include guard), or a `python`/`ruby`
    /// shebang.
    pub fn detect(path: &Path, text: &str) -> Option<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("h" | "H") => looks_like_cpp(text).then_some(Language::Cpp),
            Some(ext) => Language::from_extension(ext),
            None => {
                let head: String = text.lines().take(5).collect::<Vec<_>>().join("\n");
                let first = text.lines().next().unwrap_or("");
                if head.to_ascii_lowercase().contains("-*- c++ -*-") {
                    Some(Language::Cpp)
                } else if first.starts_with("#!") && first.contains("python") {
                    Some(Language::Python)
                } else if first.starts_with("#!") && first.contains("ruby") {
                    Some(Language::Ruby)
                } else if (text.contains("#include") || text.contains("#ifndef"))
                    && looks_like_cpp(text)
                {
                    Some(Language::Cpp)
                } else {
                    None
                }
            }
        }
    }

    /// Parses a name as written in JSONL (`python`, `java`, `cpp`/`c++`, `rust`, `go`, `ruby`).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "python" | "py" => Language::Python,
            "java" => Language::Java,
            "cpp" | "c++" => Language::Cpp,
            "rust" | "rs" => Language::Rust,
            "go" | "golang" | "go_test.go" => Language::Go,
            "ruby" | "rb" => Language::Ruby,
            _ => return None,
        })
    }

    /// Short display name.
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Java => "java",
            Language::Cpp => "cpp",
            Language::Rust => "rust",
            Language::Go => "go",
            Language::Ruby => "ruby",
        }
    }
}

/// Whether C/C++ source text uses C++: a `-*- C++ -*-` mode line, a namespace, a template,
/// `std::`, or an access specifier.
pub fn looks_like_cpp(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("-*- c++ -*-")
        || [
            "namespace ",
            "template <",
            "template<",
            "std::",
            "public:",
            "private:",
        ]
        .iter()
        .any(|sign| text.contains(sign))
}

/// One source document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Its language.
    pub language: Language,
    /// Its text.
    pub text: String,
}

/// Why files (or JSONL lines) of a source were skipped, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SkipReasons {
    /// Broken links and files that could not be read.
    pub unreadable: usize,
    /// Files holding a NUL byte.
    pub binary: usize,
    /// Files that are not UTF-8.
    pub not_utf8: usize,
    /// Files, or lines, of no known language.
    pub unknown_language: usize,
}

impl std::fmt::Display for SkipReasons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} binary, {} not UTF-8, {} of no known language, {} unreadable or broken links",
            self.binary, self.not_utf8, self.unknown_language, self.unreadable
        )
    }
}

/// Documents read from a source, and how many files were skipped.
#[derive(Debug, Default)]
pub struct Corpus {
    /// The documents, in a deterministic order.
    pub documents: Vec<Document>,
    /// Files skipped: binary, unreadable, or of no known language.
    pub skipped: usize,
    /// The same files by reason.
    pub skip_reasons: SkipReasons,
    /// Paths reached a second time through a symbolic link (each file is read once, by
    /// canonical path); not counted in `skipped`.
    pub duplicates: usize,
}

impl Corpus {
    /// Counts one skipped file under the reason `reason` picks.
    fn skip(&mut self, reason: impl FnOnce(&mut SkipReasons) -> &mut usize) {
        self.skipped += 1;
        *reason(&mut self.skip_reasons) += 1;
    }

    /// Refuses a corpus with nothing to train on ([`TrainError::Data`] naming `path`): no
    /// document, or only empty ones; the error counts what was read and what was skipped, by
    /// reason.
    pub fn check_usable(&self, path: &Path) -> Result<()> {
        let empty = self
            .documents
            .iter()
            .filter(|d| d.text.trim().is_empty())
            .count();
        if empty < self.documents.len() {
            return Ok(());
        }
        Err(TrainError::Data {
            path: path.to_path_buf(),
            reason: format!(
                "no source code to train on: {} documents of a known language, {empty} of them \
                 empty; {} files skipped ({})",
                self.documents.len(),
                self.skipped,
                self.skip_reasons
            ),
        })
    }

    /// Documents and bytes of each language present.
    pub fn counts(&self) -> std::collections::BTreeMap<Language, (usize, usize)> {
        let mut counts = std::collections::BTreeMap::new();
        for d in &self.documents {
            let c: &mut (usize, usize) = counts.entry(d.language).or_default();
            c.0 += 1;
            c.1 += d.text.len();
        }
        counts
    }

    /// The languages of [`Language::ALL`] with no document.
    pub fn missing(&self) -> Vec<Language> {
        let counts = self.counts();
        Language::ALL
            .into_iter()
            .filter(|l| !counts.contains_key(l))
            .collect()
    }
}

/// Reads every file under `dir` whose language [`Language::detect`] knows. Symbolic links
/// are followed, but every directory and file is visited once, by canonical path, so a link
/// to a parent neither loops nor duplicates documents; broken links, binary (NUL byte) and
/// non-UTF-8 files are skipped and counted, not fatal.
pub fn read_tree(dir: &Path) -> Result<Corpus> {
    let mut corpus = Corpus::default();
    let root = dir.canonicalize().map_err(|e| TrainError::io(dir, e))?;
    let mut seen_dirs = std::collections::BTreeSet::from([root.clone()]);
    let mut seen_files = std::collections::BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| TrainError::io(&d, e))?;
        for entry in entries {
            let path = entry.map_err(|e| TrainError::io(&d, e))?.path();
            // `canonicalize` resolves every link; a broken one fails.
            let Ok(real) = path.canonicalize() else {
                corpus.skip(|r| &mut r.unreadable);
                continue;
            };
            if real.is_dir() {
                if seen_dirs.insert(real) {
                    stack.push(path);
                } else {
                    corpus.duplicates += 1;
                }
            } else if seen_files.insert(real) {
                files.push(path);
            } else {
                corpus.duplicates += 1;
            }
        }
    }
    files.sort();
    for path in files {
        let Ok(bytes) = std::fs::read(&path) else {
            corpus.skip(|r| &mut r.unreadable);
            continue;
        };
        if bytes.contains(&0) {
            corpus.skip(|r| &mut r.binary);
            continue;
        }
        let Ok(text) = String::from_utf8(bytes) else {
            corpus.skip(|r| &mut r.not_utf8);
            continue;
        };
        match Language::detect(&path, &text) {
            Some(language) => corpus.documents.push(Document { language, text }),
            None => corpus.skip(|r| &mut r.unknown_language),
        }
    }
    Ok(corpus)
}

/// Reads JSONL lines `{"content": ..., "language": ...}`, or The Stack's
/// `{"content": ..., "lang": ...}` (other keys are ignored); a line without a known language
/// is skipped and counted. A malformed line is an error naming its number.
pub fn read_jsonl(path: &Path) -> Result<Corpus> {
    #[derive(Deserialize)]
    struct Line {
        content: String,
        #[serde(alias = "lang")]
        language: Option<String>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let mut corpus = Corpus::default();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let parsed: Line = serde_json::from_str(line).map_err(|e| TrainError::Data {
            path: path.to_path_buf(),
            reason: format!("line {}: {e}", i + 1),
        })?;
        match parsed.language.as_deref().and_then(Language::from_name) {
            Some(language) => corpus.documents.push(Document {
                language,
                text: parsed.content,
            }),
            None => corpus.skip(|r| &mut r.unknown_language),
        }
    }
    Ok(corpus)
}

/// Reads `path`, a directory tree or a `.jsonl` file, and refuses it when it holds nothing to
/// train on ([`Corpus::check_usable`]).
pub fn read_path(path: &Path) -> Result<Corpus> {
    let corpus = if path.is_dir() {
        read_tree(path)?
    } else if path.exists() {
        read_jsonl(path)?
    } else {
        return Err(TrainError::io(path, std::io::ErrorKind::NotFound.into()));
    };
    corpus.check_usable(path)?;
    Ok(corpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of nothing usable is refused naming it, what was read and each reason a
    /// file was skipped; one real document makes it usable.
    #[test]
    fn an_unusable_tree_is_refused_with_its_skip_reasons() {
        let dir = std::env::temp_dir().join(format!("multipl-moe-unusable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let empty = read_tree(&dir).unwrap();
        let err = empty.check_usable(&dir).unwrap_err().to_string();
        assert!(err.starts_with(&dir.display().to_string()), "{err}");
        assert!(err.contains("0 documents"), "{err}");

        std::fs::write(dir.join("blob.go"), b"package main\0\x01").unwrap();
        std::fs::write(dir.join("latin1.py"), b"print('caf\xe9')\n").unwrap();
        std::fs::write(dir.join("NOTES"), "plain words, no code\n").unwrap();
        std::fs::write(dir.join("empty.rs"), "\n").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.join("gone.rb"), dir.join("broken.rb")).unwrap();
        let corpus = read_tree(&dir).unwrap();
        let err = corpus.check_usable(&dir).unwrap_err().to_string();
        let unreadable = usize::from(cfg!(unix));
        for part in [
            "1 documents of a known language, 1 of them empty".to_string(),
            format!("{} files skipped", 3 + unreadable),
            "1 binary, 1 not UTF-8, 1 of no known language".to_string(),
            format!("{unreadable} unreadable or broken links"),
        ] {
            assert!(err.contains(&part), "`{part}` in: {err}");
        }
        assert_eq!(corpus.skipped, 3 + unreadable);

        std::fs::write(dir.join("main.rs"), "fn main() {}\n").unwrap();
        read_tree(&dir).unwrap().check_usable(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
