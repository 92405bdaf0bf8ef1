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

/// Documents read from a source, and how many files were skipped.
#[derive(Debug, Default)]
pub struct Corpus {
    /// The documents, in a deterministic order.
    pub documents: Vec<Document>,
    /// Files skipped: binary, unreadable, or of no known language.
    pub skipped: usize,
    /// Paths reached a second time through a symbolic link (each file is read once, by
    /// canonical path); not counted in `skipped`.
    pub duplicates: usize,
}

impl Corpus {
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
                corpus.skipped += 1;
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
        let text = std::fs::read(&path)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|t| !t.contains('\0'));
        match text.and_then(|t| Some((Language::detect(&path, &t)?, t))) {
            Some((language, text)) => corpus.documents.push(Document { language, text }),
            None => corpus.skipped += 1,
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
            None => corpus.skipped += 1,
        }
    }
    Ok(corpus)
}

/// Reads `path`: a directory tree, or a `.jsonl` file.
pub fn read_path(path: &Path) -> Result<Corpus> {
    if path.is_dir() {
        read_tree(path)
    } else if path.exists() {
        read_jsonl(path)
    } else {
        Err(TrainError::io(path, std::io::ErrorKind::NotFound.into()))
    }
}
