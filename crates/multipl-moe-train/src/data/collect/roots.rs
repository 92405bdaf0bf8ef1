//! Where each language's sources are: a table of candidate roots probed in order, the Debian
//! package and licence of each, and which files of a root count as that language's source.

use std::path::{Path, PathBuf};

use crate::data::corpus::Language;

/// How a root holds its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// A directory tree, walked without following symbolic links.
    Dir,
    /// A zip archive (the JDK's `lib/src.zip`).
    Zip,
}

/// Where a candidate root is looked for.
#[derive(Debug, Clone)]
pub enum Location {
    /// A path whose components may hold `*` wildcards; of several matches the highest
    /// version (`python3.12` over `python3.9`) is taken.
    Pattern(PathBuf),
    /// The first line `program args` prints, joined with `suffix` (`go env GOROOT` + `src`).
    Command {
        /// The program, looked up in `PATH`.
        program: &'static str,
        /// Its arguments.
        args: &'static [&'static str],
        /// Joined to the printed path.
        suffix: &'static str,
    },
}

/// One place a language's sources may be.
#[derive(Debug, Clone)]
pub struct RootCandidate {
    /// The language it holds.
    pub language: Language,
    /// Where to look.
    pub location: Location,
    /// Directory or zip.
    pub kind: RootKind,
    /// A file the root must hold to count (`os.py` for Python), if any.
    pub marker: Option<&'static str>,
}

impl RootCandidate {
    /// A directory root at `path` (wildcards allowed), no marker.
    pub fn dir(language: Language, path: impl Into<PathBuf>) -> Self {
        Self {
            language,
            location: Location::Pattern(path.into()),
            kind: RootKind::Dir,
            marker: None,
        }
    }

    /// A zip root at `path` (wildcards allowed).
    pub fn zip(language: Language, path: impl Into<PathBuf>) -> Self {
        Self {
            kind: RootKind::Zip,
            ..Self::dir(language, path)
        }
    }

    fn marked(self, marker: &'static str) -> Self {
        Self {
            marker: Some(marker),
            ..self
        }
    }
}

/// A root found for a language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// Its language.
    pub language: Language,
    /// The directory or zip file (canonical).
    pub path: PathBuf,
    /// Directory or zip.
    pub kind: RootKind,
}

/// The well-known install locations of Debian's packages (see [`package`]), then what
/// `python3` and `go` report, then a cargo home from `CARGO_HOME` or `~/.cargo`.
pub fn default_candidates() -> Vec<RootCandidate> {
    use Language::*;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| home.map(|h| h.join(".cargo")));
    let mut roots = vec![
        RootCandidate::dir(Python, "/usr/lib/python3.*").marked("os.py"),
        RootCandidate {
            location: Location::Command {
                program: "python3",
                args: &[
                    "-c",
                    "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
                ],
                suffix: "",
            },
            ..RootCandidate::dir(Python, "").marked("os.py")
        },
        RootCandidate::zip(Java, "/usr/lib/jvm/java-17-openjdk-*/lib/src.zip"),
        RootCandidate::zip(Java, "/usr/lib/jvm/*/lib/src.zip"),
        RootCandidate::dir(Cpp, "/usr/include/c++/*").marked("vector"),
        RootCandidate::dir(Go, "/usr/lib/go*/src").marked("fmt/print.go"),
        RootCandidate::dir(Go, "/usr/share/go*/src").marked("fmt/print.go"),
        RootCandidate {
            location: Location::Command {
                program: "go",
                args: &["env", "GOROOT"],
                suffix: "src",
            },
            ..RootCandidate::dir(Go, "").marked("fmt/print.go")
        },
        RootCandidate::dir(Go, "/usr/local/go/src").marked("fmt/print.go"),
        RootCandidate::dir(Ruby, "/usr/lib/ruby/*.*"),
    ];
    if let Some(cargo) = cargo_home {
        roots.push(RootCandidate::dir(Rust, cargo.join("registry/src/*")));
    }
    roots
}

/// The first candidate of `language` that exists (and holds its marker), canonicalised.
pub fn find_root(candidates: &[RootCandidate], language: Language) -> Option<Root> {
    candidates
        .iter()
        .filter(|c| c.language == language)
        .find_map(|c| {
            let paths = match &c.location {
                Location::Pattern(p) => expand(p),
                Location::Command {
                    program,
                    args,
                    suffix,
                } => command_path(program, args)
                    .map(|p| vec![p.join(suffix)])
                    .unwrap_or_default(),
            };
            paths.into_iter().find_map(|p| {
                let ok = match c.kind {
                    RootKind::Dir => p.is_dir() && c.marker.is_none_or(|m| p.join(m).is_file()),
                    RootKind::Zip => p.is_file(),
                };
                let path = p.canonicalize().ok().filter(|_| ok)?;
                Some(Root {
                    language,
                    path,
                    kind: c.kind,
                })
            })
        })
}

fn command_path(program: &str, args: &[&str]) -> Option<PathBuf> {
    let out = std::process::Command::new(program)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let line = String::from_utf8(out.stdout).ok()?;
    let line = line.lines().next()?.trim();
    (!line.is_empty()).then(|| PathBuf::from(line))
}

/// The existing paths matching `pattern` (`*` inside a component matches any run of
/// characters), highest version first.
pub fn expand(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for part in pattern.components() {
        let part = part.as_os_str().to_string_lossy();
        if !part.contains('*') {
            found.iter_mut().for_each(|p| p.push(part.as_ref()));
            continue;
        }
        let mut next = Vec::new();
        for dir in &found {
            let base = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let Ok(entries) = base.read_dir() else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if wildcard(&part, &name) {
                    next.push(dir.join(name));
                }
            }
        }
        found = next;
    }
    found.retain(|p| !p.as_os_str().is_empty() && p.exists());
    found.sort_by_cached_key(|p| std::cmp::Reverse(version_key(&p.to_string_lossy())));
    found
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
fn wildcard(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(name) = name.strip_prefix(head) else {
                return false;
            };
            (0..=name.len())
                .filter(|&i| name.is_char_boundary(i))
                .any(|i| wildcard(rest, &name[i..]))
        }
    }
}

/// Runs of digits as numbers, the rest as text: `python3.12` sorts above `python3.9`.
fn version_key(s: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (token, tail) = rest.split_at(if digits > 0 {
            digits
        } else {
            rest.find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len())
        });
        key.push(match token.parse::<u64>() {
            Ok(n) => (n, String::new()),
            Err(_) => (0, token.to_string()),
        });
        rest = tail;
    }
    key
}

/// The Debian package that installs `language`'s default root.
pub fn package(language: Language) -> &'static str {
    match language {
        Language::Python => "python3",
        Language::Java => "openjdk-17-source",
        Language::Cpp => "libstdc++-12-dev",
        Language::Rust => "none (crates cargo downloaded into its registry)",
        Language::Go => "golang-go",
        Language::Ruby => "ruby",
    }
}

/// How to get `language`'s root: `apt-get install -y PACKAGE`, or for Rust, fetching any
/// crate with cargo.
pub fn install_hint(language: Language) -> String {
    match language {
        Language::Rust => "cargo's registry ($CARGO_HOME/registry/src) is empty; `cargo fetch` in any Rust project fills it".into(),
        l => format!("apt-get install -y {}", package(l)),
    }
}

/// The licence of `language`'s source (Rust: per crate, see the crate list).
pub fn licence(language: Language) -> &'static str {
    match language {
        Language::Python => "PSF License (Python Software Foundation License Version 2)",
        Language::Java => "GPL-2.0 with Classpath Exception (OpenJDK)",
        Language::Cpp => "GPL-3.0 with GCC Runtime Library Exception (libstdc++)",
        Language::Rust => "each crate's own (`license` of its Cargo.toml, listed below)",
        Language::Go => "BSD-3-Clause (the Go Authors)",
        Language::Ruby => "Ruby's licence (BSD-2-Clause or the Ruby License)",
    }
}

/// Whether the walk of `language`'s root leaves out a directory of this name: Python's
/// test suites and installed packages, Go's `testdata`.
pub fn skip_dir(language: Language, name: &str) -> bool {
    match language {
        Language::Python => matches!(
            name,
            "test" | "tests" | "idle_test" | "__pycache__" | "site-packages" | "dist-packages"
        ),
        Language::Go => name == "testdata",
        _ => false,
    }
}

/// Where a file at `rel` (relative to `language`'s root, `/`-separated) is written under
/// `DIR/<language>/`, or `None` when it is not a source of `language`: the path with every
/// character outside `[A-Za-z0-9._+-]` replaced by `_`; C++ headers without a C++
/// extension (`vector`, `c++config.h`) get `.hpp` appended, so that [`read_tree`] knows them.
///
/// [`read_tree`]: crate::data::corpus::read_tree
pub fn output_path(language: Language, rel: &str) -> Option<String> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|_| !name.starts_with('.'));
    let known = ext.and_then(Language::from_extension);
    let suffix = match language {
        Language::Cpp if known == Some(Language::Cpp) => "",
        Language::Cpp if matches!(ext, None | Some("h")) => ".hpp",
        _ if known == Some(language) => "",
        _ => return None,
    };
    let parts: Vec<String> = rel
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(|p| {
            if p == ".." {
                return "_".to_string();
            }
            p.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        })
        .collect();
    Some(format!("{}{suffix}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_path_keeps_or_adds_the_extension_read_tree_needs() {
        use Language::*;
        assert_eq!(output_path(Cpp, "vector").as_deref(), Some("vector.hpp"));
        assert_eq!(
            output_path(Cpp, "bits/c++config.h").as_deref(),
            Some("bits/c++config.h.hpp")
        );
        assert_eq!(
            output_path(Cpp, "bits/vector.tcc").as_deref(),
            Some("bits/vector.tcc")
        );
        assert_eq!(output_path(Cpp, "README.txt"), None);
        assert_eq!(output_path(Python, "a b/x.py").as_deref(), Some("a_b/x.py"));
        assert_eq!(output_path(Python, "../x.py").as_deref(), Some("_/x.py"));
        assert_eq!(output_path(Python, "x.pyc"), None);
        assert_eq!(output_path(Go, "x.rs"), None);
    }

    #[test]
    fn expand_takes_the_highest_version_first() {
        let dir = std::env::temp_dir().join(format!("collect-expand-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for name in ["python3.9", "python3.12", "python3", "other"] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
        }
        let found = expand(&dir.join("python3.*"));
        let names: Vec<_> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["python3.12", "python3.9"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
