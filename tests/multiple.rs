//! The MultiPL-E harness on the project's fixture problems: correct completions score
//! pass@1 = 1, wrong ones 0, an endless loop ends as a timeout; the CLI evaluates given
//! completions without a model.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use multipl_moe::train::corpus::Language;
use multipl_moe::train::multiple::exec::{ExecLimits, Status, toolchain};
use multipl_moe::train::multiple::report::{EvalReport, evaluate};
use multipl_moe::train::multiple::{Completion, cut_at_stop, read_jsonl, read_problems};

const DIR: &str = "fixtures/multiple";

fn run(kind: &str, run_limit: Duration) -> EvalReport {
    let problems = read_problems(&Path::new(DIR).join("problems.jsonl"), None).expect("problems");
    let completions: BTreeMap<String, String> =
        read_jsonl::<Completion>(&Path::new(DIR).join(format!("completions-{kind}.jsonl")))
            .expect("completions")
            .into_iter()
            .map(|c| (c.name, c.completion))
            .collect();
    let limits = ExecLimits {
        run: run_limit,
        ..ExecLimits::default()
    };
    evaluate(&problems, &completions, limits, 4, |_, _, _| {})
}

/// Rust, Python and C++ must be installed (CI installs them); Java is scored when a JDK is.
fn required() -> [Language; 3] {
    [Language::Rust, Language::Python, Language::Cpp]
}

fn check_java(report: &EvalReport, expected: f64) {
    match toolchain(Language::Java) {
        Ok(()) => assert_eq!(report.pass_at_1(Language::Java), Some(expected)),
        Err(reason) => {
            assert_eq!(report.pass_at_1(Language::Java), None);
            assert_eq!(report.skipped.get("java"), Some(&reason));
        }
    }
}

#[test]
fn correct_completions_pass_and_wrong_ones_fail() {
    let good = run("correct", Duration::from_secs(20));
    for lang in required() {
        assert_eq!(
            good.pass_at_1(lang),
            Some(1.0),
            "{lang:?}\n{}",
            good.table()
        );
    }
    check_java(&good, 1.0);

    let bad = run("wrong", Duration::from_secs(20));
    for lang in required() {
        assert_eq!(bad.pass_at_1(lang), Some(0.0), "{lang:?}\n{}", bad.table());
    }
    check_java(&bad, 0.0);
    let status = |name: &str| {
        bad.results
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.status)
    };
    assert_eq!(status("Project_count_words"), Some(Status::CompileError));
    assert_eq!(status("Project_sum_squares"), Some(Status::CompileError));
    assert_eq!(status("Project_max_element"), Some(Status::RuntimeError));
    assert_eq!(status("Project_count_vowels"), Some(Status::RuntimeError));
    assert!(bad.table().contains("pass@1"));
}

#[test]
fn an_endless_loop_is_a_timeout() {
    let report = run("loop", Duration::from_secs(2));
    for lang in required() {
        let statuses: Vec<Status> = report
            .results
            .iter()
            .filter(|r| r.language == lang.name())
            .map(|r| r.status)
            .collect();
        assert!(
            statuses.contains(&Status::Timeout),
            "{lang:?}: {statuses:?}"
        );
        // The other problem of the language has no completion in this file.
        assert!(
            statuses.contains(&Status::NoCompletion),
            "{lang:?}: {statuses:?}"
        );
        assert_eq!(report.pass_at_1(lang), Some(0.0));
    }
}

#[test]
fn problems_are_validated_and_completions_cut() {
    let dir = std::env::temp_dir().join(format!("multipl-moe-problems-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.jsonl");
    std::fs::write(
        &file,
        "{\"name\":\"a\",\"language\":\"cobol\",\"prompt\":\"\",\"tests\":\"\",\"stop_tokens\":[]}\n",
    )
    .expect("write");
    let err = read_problems(&file, None).expect_err("cobol");
    assert!(err.to_string().contains("cobol") && err.to_string().contains("bad.jsonl"));
    std::fs::write(&file, "{\"name\": 3}\n").expect("write");
    let err = read_problems(&file, None).expect_err("malformed");
    assert!(err.to_string().contains("line 1"), "{err}");
    let only_rust =
        read_problems(&Path::new(DIR).join("problems.jsonl"), Some("rs")).expect("problems");
    assert_eq!(only_rust.len(), 2);
    assert!(only_rust.iter().all(|p| p.lang() == Some(Language::Rust)));
    let stops = vec!["\n}".to_string(), "\nfn".to_string()];
    assert_eq!(cut_at_stop("  x\n  y\nfn z\n}", &stops), "  x\n  y");
    assert_eq!(cut_at_stop("  x", &stops), "  x");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `multipl-moe eval --problems --completions` scores given completions without a model and
/// writes results.json.
#[test]
fn cli_evaluates_given_completions_without_a_model() {
    let out = std::env::temp_dir().join(format!("multipl-moe-eval-cli-{}", std::process::id()));
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_multipl-moe"))
        .args(["eval", "--problems"])
        .arg(Path::new(DIR).join("problems.jsonl"))
        .arg("--completions")
        .arg(Path::new(DIR).join("completions-correct.jsonl"))
        .args(["--language", "python", "--out"])
        .arg(&out)
        .output()
        .expect("runs the binary");
    assert!(status.status.success(), "{status:?}");
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        stdout.contains("python") && stdout.contains("1.000"),
        "{stdout}"
    );
    let results: EvalReport = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("results.json"),
    )
    .expect("parses");
    assert_eq!(results.pass_at_1(Language::Python), Some(1.0));
    assert_eq!(results.results.len(), 2);
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_multipl-moe"))
        .args(["eval", "--problems"])
        .arg(Path::new(DIR).join("problems.jsonl"))
        .output()
        .expect("runs the binary");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--completions"));
    let _ = std::fs::remove_dir_all(&out);
}
