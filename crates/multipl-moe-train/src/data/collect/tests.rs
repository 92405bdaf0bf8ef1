//! Collecting from small trees made here: one per language, Java as a zip.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;
use crate::data::corpus::read_tree;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("collect-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

const MAX_FILE: u64 = 2_000;

/// Per language: distinct sources, one duplicate up to trailing whitespace, and the files
/// each language's rules leave out. Returns the candidates.
fn make_trees(root: &Path, extra_python: usize) -> Vec<RootCandidate> {
    let py = root.join("python3.11");
    write(&py.join("os.py"), b"import sys\n");
    write(&py.join("json/a.py"), b"def a():\n    return 1\n");
    write(&py.join("json/dup.py"), b"def a():   \n    return 1\n\n\n");
    write(&py.join("big.py"), "x = 1\n".repeat(400).as_bytes());
    write(&py.join("latin1.py"), b"s = '\xe9'\n");
    write(&py.join("empty.py"), b"  \n");
    write(&py.join("test/test_os.py"), b"assert True\n");
    write(&py.join("site-packages/pkg.py"), b"pkg = 1\n");
    write(&py.join("notes.txt"), b"not code\n");
    for i in 0..extra_python {
        write(
            &py.join(format!("lib/m{i:02}.py")),
            format!("def f{i}(x):\n    return x * {i}\n").as_bytes(),
        );
    }
    let rb = root.join("ruby/3.1.0");
    write(&rb.join("set.rb"), b"class Set\nend\n");
    write(&rb.join("net/http.rb"), b"module Net\nend\n");
    let go = root.join("go/src");
    write(&go.join("fmt/print.go"), b"package fmt\n");
    write(&go.join("os/file.go"), b"package os\n");
    write(&go.join("os/testdata/x.go"), b"package testdata\n");
    let cpp = root.join("c++/12");
    write(
        &cpp.join("vector"),
        b"// <vector> -*- C++ -*-\n#include <bits/v.tcc>\n",
    );
    write(&cpp.join("bits/v.tcc"), b"namespace std { }\n");
    write(&cpp.join("bits/c++config.h"), b"#define _GLIBCXX 1\n");
    let rs = root.join("registry/src/index");
    write(
        &rs.join("foo-1.0.0/Cargo.toml"),
        b"[package]\nname = \"foo\"\nlicense = \"MIT OR Apache-2.0\"\n",
    );
    write(
        &rs.join("foo-1.0.1/Cargo.toml"),
        b"[package]\nname = \"foo\"\nlicense = \"MIT OR Apache-2.0\"\n",
    );
    write(&rs.join("foo-1.0.0/src/lib.rs"), b"pub fn foo() {}\n");
    write(&rs.join("foo-1.0.1/src/lib.rs"), b"pub fn foo() {}\n");
    write(&rs.join("bar-0.1.0/src/main.rs"), b"fn main() {}\n");
    let zip_path = root.join("jdk/lib/src.zip");
    write_zip(
        &zip_path,
        &[
            ("java.base/java/lang/A.java", "class A {}\n"),
            ("java.base/java/lang/B.java", "class B {}\n"),
            ("java.desktop/java/lang/A.java", "class A {}  \n"),
            ("java.base/META-INF/x.properties", "k=v\n"),
        ],
    );
    vec![
        RootCandidate::dir(Language::Python, root.join("python3.*")),
        RootCandidate::zip(Language::Java, root.join("jdk/lib/src.zip")),
        RootCandidate::dir(Language::Cpp, root.join("c++/*")),
        RootCandidate::dir(Language::Go, root.join("go/src")),
        RootCandidate::dir(Language::Ruby, root.join("ruby/*.*")),
        RootCandidate::dir(Language::Rust, root.join("registry/src/*")),
    ]
}

fn write_zip(path: &Path, entries: &[(&str, &str)]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, text) in entries {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
}

fn options(out: &Path, budget: u64, seed: u64) -> CollectOptions {
    CollectOptions {
        budget_bytes: budget,
        max_file_bytes: MAX_FILE,
        ..CollectOptions::new(out, 0, seed)
    }
}

fn language(report: &CollectReport, l: Language) -> &LanguageReport {
    report
        .languages
        .iter()
        .find(|r| r.root.language == l)
        .unwrap()
}

#[test]
fn every_language_is_taken_once_per_text_and_read_tree_reads_it_back() {
    let tmp = TempDir::new("all");
    let candidates = make_trees(&tmp.0.join("src"), 0);
    let out = tmp.0.join("corpus");
    let report = collect(&options(&out, 1 << 20, 0), &candidates).unwrap();
    let counts: Vec<(Language, usize)> = report
        .languages
        .iter()
        .map(|l| (l.root.language, l.files.len()))
        .collect();
    use Language::*;
    assert_eq!(
        counts,
        [
            (Python, 2),
            (Java, 2),
            (Cpp, 3),
            (Rust, 2),
            (Go, 2),
            (Ruby, 2)
        ]
    );
    assert!(report.missing.is_empty());
    let py = language(&report, Python).skipped;
    assert_eq!(
        py,
        Skipped {
            too_large: 1,
            empty: 1,
            binary: 1,
            duplicates: 1,
            unreadable: 0
        }
    );
    assert_eq!(language(&report, Java).skipped.duplicates, 1);
    assert_eq!(language(&report, Rust).skipped.duplicates, 1);
    assert_eq!(language(&report, Go).candidates, 2, "testdata is left out");

    let corpus = read_tree(&out).unwrap();
    let read: Vec<(Language, usize)> = corpus
        .counts()
        .into_iter()
        .map(|(l, (files, _))| (l, files))
        .collect();
    let mut expected = counts.clone();
    expected.sort();
    assert_eq!(read, expected);
    assert_eq!(corpus.skipped, 2, "SOURCES.md and manifest.tsv");
    assert!(out.join("cpp/vector.hpp").is_file());
    assert!(out.join("cpp/bits/c++config.h.hpp").is_file());
    assert!(out.join("cpp/bits/v.tcc").is_file());

    let sources = std::fs::read_to_string(out.join("SOURCES.md")).unwrap();
    for needle in [
        "PSF License",
        "BSD-3-Clause",
        "Classpath Exception",
        "GCC Runtime Library Exception",
        "BSD-2-Clause",
        " | MIT OR Apache-2.0 | 1 | 16 |",
        "| bar-0.1.0 | not stated | 1 | 13 |",
        "--seed 0",
    ] {
        assert!(
            sources.contains(needle),
            "SOURCES.md lacks {needle}:\n{sources}"
        );
    }
    let manifest = std::fs::read_to_string(out.join("manifest.tsv")).unwrap();
    assert_eq!(manifest.lines().count(), 1 + 13);
    assert!(manifest.contains("java/java.base/java/lang/B.java\t11\t"));
    assert!(manifest.contains("src.zip!/java.base/java/lang/B.java"));
    let line = manifest
        .lines()
        .find(|l| l.contains("\tpython/json/"))
        .unwrap();
    let fields: Vec<&str> = line.split('\t').collect();
    let (rel, hash) = (fields[1], fields[3]);
    let bytes = std::fs::read(out.join(rel)).unwrap();
    assert_eq!(hash, format!("{:x}", Sha256::digest(&bytes)));
}

fn taken_paths(report: &CollectReport) -> Vec<String> {
    report
        .languages
        .iter()
        .flat_map(|l| l.files.iter().map(|f| f.source.clone()))
        .collect()
}

#[test]
fn selection_is_fixed_by_the_seed_and_stays_within_the_budget() {
    let tmp = TempDir::new("seed");
    let candidates = make_trees(&tmp.0.join("src"), 40);
    // 6 languages, 170 bytes each: a handful of Python's ~35-byte files.
    let budget = 6 * 170;
    let run = |name: &str, seed| {
        let report = collect(&options(&tmp.0.join(name), budget, seed), &candidates).unwrap();
        assert!(report.languages.iter().all(|l| l.bytes <= report.share));
        let total: u64 = report.languages.iter().map(|l| l.bytes).sum();
        assert!(total <= budget);
        let python = language(&report, Language::Python);
        assert!((3..=7).contains(&python.files.len()), "{python:?}");
        assert!(python.bytes > 170 - 40, "the share is used up to one file");
        report
    };
    let a = run("a", 7);
    let b = run("b", 7);
    let c = run("c", 8);
    assert_eq!(taken_paths(&a), taken_paths(&b));
    assert_ne!(taken_paths(&a), taken_paths(&c));
    let manifest = |d: &str| std::fs::read_to_string(tmp.0.join(d).join("manifest.tsv")).unwrap();
    assert_eq!(manifest("a"), manifest("b"));
}

#[test]
fn output_is_refused_unless_overwrite_replaces_an_earlier_corpus() {
    let tmp = TempDir::new("overwrite");
    let candidates = make_trees(&tmp.0.join("src"), 0);
    let out = tmp.0.join("corpus");
    collect(&options(&out, 1 << 20, 0), &candidates).unwrap();
    let again = collect(&options(&out, 1 << 20, 1), &candidates);
    assert!(matches!(again, Err(CollectError::OutputExists { .. })));
    let overwrite = CollectOptions {
        overwrite: true,
        ..options(&out, 1 << 20, 1)
    };
    collect(&overwrite, &candidates).unwrap();
    assert!(
        std::fs::read_to_string(out.join("SOURCES.md"))
            .unwrap()
            .contains("--seed 1")
    );
    let leftovers: Vec<_> = std::fs::read_dir(&tmp.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let other = tmp.0.join("src");
    let refused = collect(
        &CollectOptions {
            overwrite: true,
            ..options(&other, 1 << 20, 0)
        },
        &candidates,
    );
    assert!(matches!(refused, Err(CollectError::NotACorpus { .. })));
}

#[test]
fn missing_languages_are_named_and_nothing_found_is_an_error() {
    let tmp = TempDir::new("missing");
    let mut candidates = make_trees(&tmp.0.join("src"), 0);
    candidates.retain(|c| c.language != Language::Ruby);
    let report = collect(&options(&tmp.0.join("five"), 1 << 20, 0), &candidates).unwrap();
    assert_eq!(report.missing, [Language::Ruby]);
    assert!(report.to_string().contains("apt-get install -y ruby"));
    let sources = std::fs::read_to_string(tmp.0.join("five/SOURCES.md")).unwrap();
    assert!(sources.contains("- ruby: apt-get install -y ruby"));

    let none = vec![RootCandidate::dir(Language::Go, tmp.0.join("absent"))];
    let err = collect(&options(&tmp.0.join("none"), 1 << 20, 0), &none).unwrap_err();
    assert!(matches!(err, CollectError::NothingFound { .. }));
    assert!(err.to_string().contains("golang-go"), "{err}");
    assert!(!tmp.0.join("none").exists());
}
