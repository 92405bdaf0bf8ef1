//! Source documents: a directory tree (language from the file extension), JSONL, or the
//! embedded default corpus made by a deterministic generator with each language's idioms.

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

    /// The language of a file extension (`py`, `java`, `cpp`/`cc`/`cxx`/`hpp`/`h`, `rs`, `go`, `rb`).
    pub fn from_extension(ext: &str) -> Option<Self> {
        Some(match ext.to_ascii_lowercase().as_str() {
            "py" => Language::Python,
            "java" => Language::Java,
            "cpp" | "cc" | "cxx" | "hpp" | "hh" | "h" => Language::Cpp,
            "rs" => Language::Rust,
            "go" => Language::Go,
            "rb" => Language::Ruby,
            _ => return None,
        })
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
}

/// Reads every file under `dir` whose extension names a language. Binary (NUL byte) or
/// non-UTF-8 files are skipped and counted, not fatal.
pub fn read_tree(dir: &Path) -> Result<Corpus> {
    let mut corpus = Corpus::default();
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| TrainError::io(&d, e))?;
        for entry in entries {
            let path = entry.map_err(|e| TrainError::io(&d, e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    for path in files {
        let lang = path
            .extension()
            .and_then(|e| e.to_str())
            .and_then(Language::from_extension);
        let Some(language) = lang else {
            corpus.skipped += 1;
            continue;
        };
        match std::fs::read(&path)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
        {
            Some(text) if !text.contains('\0') => {
                corpus.documents.push(Document { language, text })
            }
            _ => corpus.skipped += 1,
        }
    }
    Ok(corpus)
}

/// Reads JSONL lines `{"content": ..., "language": ...}`; a line without a known language is
/// skipped and counted. A malformed line is an error naming its number.
pub fn read_jsonl(path: &Path) -> Result<Corpus> {
    #[derive(Deserialize)]
    struct Line {
        content: String,
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

/// The embedded default corpus: `per_language` generated documents in each language.
pub fn embedded(per_language: usize) -> Corpus {
    let mut documents = Vec::new();
    for (li, &language) in Language::ALL.iter().enumerate() {
        for i in 0..per_language {
            let mut rng = Rng(0x5EED ^ ((li as u64) << 32) ^ i as u64);
            documents.push(Document {
                language,
                text: crate::generator::document(language, &mut rng),
            });
        }
    }
    Corpus {
        documents,
        skipped: 0,
    }
}

pub use multipl_moe_core::rng::Rng;
