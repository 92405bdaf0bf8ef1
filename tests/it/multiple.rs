//! The MultiPL-E harness on the project's fixture problems: correct completions score
//! pass@1 = 1, wrong ones 0, an endless loop ends as a timeout; hostile completions are
//! contained by the sandbox; completions are cut, generated with special tokens handled,
//! logged as they come and resumed; the CLI validates its arguments.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::TestBackend;
use multipl_moe::core::{CausalLm, MultiplMoeConfig, QwenConfig};
use multipl_moe::train::data::corpus::Language;
use multipl_moe::train::data::tokenizer::TextTokenizer;
use multipl_moe::train::infer::textgen::{SpecialTokens, TextGenerateOptions, generate_text_with};
use multipl_moe::train::multiple::exec::{ExecLimits, LimitFlags, Status};
use multipl_moe::train::multiple::generate::{SampleSettings, generate_completions};
use multipl_moe::train::multiple::log::CompletionLog;
use multipl_moe::train::multiple::report::{EvalReport, EvalSettings, evaluate};
use multipl_moe::train::multiple::sandbox::{ResourceLimits, Sandbox, SandboxKind};
use multipl_moe::train::multiple::toolchain::Toolchain;
use multipl_moe::train::multiple::{Completion, Problem, cut_at_stop, read_jsonl, read_problems};

const DIR: &str = "fixtures/multiple";

/// A fresh directory for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "multipl-moe-test-{tag}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// bubblewrap is required (CI installs it): the harness's safety is what is tested.
fn sandbox(limits: ResourceLimits) -> Sandbox {
    Sandbox::bubblewrap(limits).expect("bubblewrap (`bwrap`) must be installed and usable")
}

fn eval(problems: &[Problem], completions: &[Completion], run: Duration) -> EvalReport {
    let sandbox = sandbox(ResourceLimits::default());
    let settings = EvalSettings {
        sandbox: &sandbox,
        limits: LimitFlags {
            run: Some(run),
            compile: None,
        },
        jobs: 4,
        java_classpath: None,
    };
    evaluate(problems, completions, &settings, |_, _, _| {}).expect("evaluates")
}

fn run(kind: &str, run_limit: Duration) -> EvalReport {
    let problems = read_problems(&Path::new(DIR).join("problems.jsonl"), None).expect("problems");
    let completions: Vec<Completion> =
        read_jsonl(&Path::new(DIR).join(format!("completions-{kind}.jsonl"))).expect("reads");
    eval(&problems, &completions, run_limit)
}

/// Installed by CI; Java is scored when a JDK is.
fn required() -> [Language; 4] {
    [
        Language::Rust,
        Language::Python,
        Language::Cpp,
        Language::Go,
    ]
}

fn check_java(report: &EvalReport, expected: f64) {
    match Toolchain::find(Language::Java) {
        Ok(_) => assert_eq!(report.pass_at_1(Language::Java), Some(expected)),
        Err(reason) => {
            assert_eq!(report.pass_at_1(Language::Java), None);
            assert_eq!(report.skipped.get("java"), Some(&reason));
        }
    }
}

/// Evaluates one [`py_problem`] per `(name, body)` under `resources`, with `run` as the run
/// limit (MultiPL-E's when `None`).
fn eval_python(
    resources: ResourceLimits,
    run: Option<Duration>,
    bodies: &[(&str, &str)],
) -> EvalReport {
    let sandbox = sandbox(resources);
    let settings = EvalSettings {
        sandbox: &sandbox,
        limits: LimitFlags { run, compile: None },
        jobs: 2,
        java_classpath: None,
    };
    let problems: Vec<Problem> = bodies.iter().map(|&(name, _)| py_problem(name)).collect();
    let records: Vec<Completion> = bodies
        .iter()
        .map(|&(name, body)| Completion::new(name, body))
        .collect();
    evaluate(&problems, &records, &settings, |_, _, _| {}).expect("evaluates")
}

/// Asserts each named problem's statuses (one per sample).
fn expect_statuses(report: &EvalReport, expected: &[(&str, &[Status])]) {
    for (name, statuses) in expected {
        assert_eq!(&status_of(report, name), statuses, "{name}: {report:?}");
    }
}

fn status_of(report: &EvalReport, name: &str) -> Vec<Status> {
    report
        .results
        .iter()
        .filter(|r| r.name == name)
        .map(|r| r.status)
        .collect()
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
    assert_eq!(good.sandbox, SandboxKind::Bubblewrap);
    // Go's build cache is warmed once, before the first problem.
    assert_eq!(good.warm_up.get("go").map(|w| w.status), Some(Status::Ok));

    let bad = run("wrong", Duration::from_secs(20));
    for lang in required() {
        assert_eq!(bad.pass_at_1(lang), Some(0.0), "{lang:?}\n{}", bad.table());
    }
    check_java(&bad, 0.0);
    for (name, status) in [
        ("Project_count_words", Status::SyntaxError),
        ("Project_sum_squares", Status::SyntaxError),
        ("Project_go_count_evens", Status::SyntaxError),
        ("Project_max_element", Status::Exception),
        ("Project_count_vowels", Status::Exception),
        ("Project_go_subtract", Status::Exception),
    ] {
        assert_eq!(status_of(&bad, name), vec![status], "{name}");
    }
    assert!(bad.table().contains("pass@1") && bad.table().contains("bubblewrap"));
}

#[test]
fn an_endless_loop_is_a_timeout() {
    let start = Instant::now();
    let report = run("loop", Duration::from_secs(2));
    for lang in required() {
        let results: Vec<_> = report
            .results
            .iter()
            .filter(|r| r.language == lang.name())
            .collect();
        let statuses: Vec<Status> = results.iter().map(|r| r.status).collect();
        assert!(
            statuses.contains(&Status::Timeout),
            "{lang:?}: {results:#?}"
        );
        // The other problem of the language has no completion in this file.
        assert!(
            statuses.contains(&Status::NoCompletion),
            "{lang:?}: {results:#?}"
        );
        assert_eq!(report.pass_at_1(lang), Some(0.0));
    }
    assert!(
        start.elapsed() < Duration::from_secs(120),
        "{:?}",
        start.elapsed()
    );
}

/// A one-line Python problem whose test passes when `add` adds.
fn py_problem(name: &str) -> Problem {
    Problem {
        name: name.into(),
        language: "py".into(),
        prompt: "import os, sys, time, subprocess\n\ndef add(x, y):\n".into(),
        tests: "assert add(2, 3) == 5\n".into(),
        stop_tokens: vec!["\ndef".into()],
    }
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(format!(
                    "{}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    found
}

#[test]
fn time_limit_holds_and_no_process_outlives_the_evaluation() {
    let marker = format!("mmoe-marker-{}", std::process::id());
    let sleeper = format!("[sys.executable, '-c', 'import time; time.sleep(600)  # {marker}']");
    let completions = [
        // A background child that keeps stdout open.
        format!("    subprocess.Popen({sleeper})\n    return x + y\n"),
        // A `setsid` daemon with its output elsewhere.
        format!(
            "    subprocess.Popen({sleeper}, start_new_session=True, stdout=subprocess.DEVNULL, \
             stderr=subprocess.DEVNULL)\n    return x + y\n"
        ),
        // Twenty forked children.
        format!(
            "    for _ in range(20):\n        if os.fork() == 0:\n            \
             os.execv(sys.executable, {sleeper})\n    return x + y\n"
        ),
        // Sleeping after the tests passed.
        format!(
            "    import atexit\n    atexit.register(lambda: subprocess.run({sleeper}))\n    \
             return x + y\n"
        ),
    ];
    let problems: Vec<Problem> = (0..completions.len())
        .map(|i| py_problem(&format!("hostile_{i}")))
        .collect();
    let records: Vec<Completion> = problems
        .iter()
        .zip(&completions)
        .map(|(p, c)| Completion::new(&p.name, c.as_str()))
        .collect();
    let limit = Duration::from_secs(3);
    let start = Instant::now();
    let report = eval(&problems, &records, limit);
    let elapsed = start.elapsed();
    for (name, status) in [
        ("hostile_0", Status::Ok),
        ("hostile_1", Status::Ok),
        ("hostile_2", Status::Ok),
        ("hostile_3", Status::Timeout),
    ] {
        assert_eq!(status_of(&report, name), vec![status], "{name}: {report:?}");
    }
    assert!(elapsed < limit + Duration::from_secs(5), "took {elapsed:?}");
    assert_eq!(processes_with(&marker), Vec::<String>::new());
}

#[test]
fn programs_see_no_host_files_env_or_network() {
    let dir = temp_dir("canary");
    let canary = dir.join("canary.txt");
    std::fs::write(&canary, "keep me").expect("canary");
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    // Each completion passes only if the attack fails.
    let attacks = [
        format!(
            "    try:\n        os.remove({canary:?})\n    except OSError:\n        pass\n    \
             assert not os.path.exists({canary:?})\n    return x + y\n"
        ),
        format!(
            "    for p in [{dir:?} + '/new.txt', {home:?} + '/mmoe-pwned', '/usr/mmoe-pwned', \
             '/tmp/mmoe-pwned']:\n        try:\n            open(p, 'w').write('x')\n            \
             return 0\n        except OSError:\n            pass\n    return x + y\n",
            dir = dir.to_string_lossy()
        ),
        "    allowed = {'PATH', 'HOME', 'TMPDIR', 'LANG', 'PWD'}\n    \
         assert set(os.environ) <= allowed, sorted(os.environ)\n    \
         assert not os.path.exists('/etc/shadow')\n    return x + y\n"
            .to_string(),
        "    import socket\n    try:\n        \
         socket.create_connection(('1.1.1.1', 53), timeout=2)\n        return 0\n    \
         except OSError:\n        return x + y\n"
            .to_string(),
        // The evaluation's shared toolchain cache is not there while a program runs (it
        // would carry files from one completion to the programs after it).
        "    import glob\n    own = os.path.dirname(os.getcwd())\n    \
         seen = glob.glob(os.path.dirname(own) + '/multipl-moe-eval-*')\n    \
         assert seen == [own], seen\n    return x + y\n"
            .to_string(),
    ];
    let problems: Vec<Problem> = (0..attacks.len())
        .map(|i| py_problem(&format!("attack_{i}")))
        .collect();
    let records: Vec<Completion> = problems
        .iter()
        .zip(&attacks)
        .map(|(p, c)| Completion::new(&p.name, c.as_str()))
        .collect();
    let report = eval(&problems, &records, Duration::from_secs(10));
    for r in &report.results {
        assert_eq!(r.status, Status::Ok, "{}: {}", r.name, r.output);
    }
    assert_eq!(std::fs::read_to_string(&canary).expect("canary"), "keep me");
    assert!(!dir.join("new.txt").exists());
    assert!(!Path::new(&home).join("mmoe-pwned").exists());
    assert!(!Path::new("/tmp/mmoe-pwned").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resource_limits_stop_big_files_and_allocations() {
    let limits = ResourceLimits::new(256, 1024, 1).expect("valid limits");
    let report = eval_python(
        limits,
        None,
        &[
            (
                "big_file",
                "    open('f', 'wb').write(b'x' * (4 << 20))\n    return x + y\n",
            ),
            (
                "big_alloc",
                "    b = bytearray(1 << 30)\n    return x + y\n",
            ),
        ],
    );
    expect_statuses(
        &report,
        &[
            ("big_file", &[Status::Exception]),
            ("big_alloc", &[Status::Exception]),
        ],
    );
    assert!(ResourceLimits::new(1, 1024, 1).is_err());
    assert!(ResourceLimits::new(u64::MAX, 1024, 1).is_err());
}

/// The process limit reaches the program (set on the sandbox's init once its user namespace
/// exists, so that only the sandbox's processes count; the counting itself cannot be shown
/// as root, whom the kernel never limits).
#[test]
fn the_process_limit_reaches_the_program() {
    let limits = ResourceLimits::new(4096, 77, 256).expect("valid limits");
    let body = "    def nproc(pid):\n        for line in open(f'/proc/{pid}/limits'):\n            \
                if line.startswith('Max processes'):\n                return line.split()[2:4]\n\
                \x20   assert nproc('self') == ['77', '77'], nproc('self')\n    return x + y\n";
    let report = eval_python(limits, None, &[("nproc", body)]);
    for r in &report.results {
        assert_eq!(r.status, Status::Ok, "{}", r.output);
    }
}

/// The JVM runs under a 256 MiB memory limit (its default heap, sized from the host's RAM,
/// did not start on a 24 GiB host): MultiPL-E's Java problem (javatuples header, a `Pair`)
/// compiles and passes. Java is scored when a JDK and libjavatuples-java are installed.
#[test]
fn java_runs_under_a_small_memory_limit() {
    let limits = ResourceLimits::new(256, 1024, 1).expect("valid limits");
    let sandbox = sandbox(limits);
    let settings = EvalSettings {
        sandbox: &sandbox,
        limits: LimitFlags::default(),
        jobs: 1,
        java_classpath: None,
    };
    let problems: Vec<Problem> = read_problems(&Path::new(DIR).join("problems.jsonl"), None)
        .expect("problems")
        .into_iter()
        .filter(|p| p.language == "java")
        .collect();
    assert_eq!(problems.len(), 1);
    let completions: Vec<Completion> =
        read_jsonl(&Path::new(DIR).join("completions-correct.jsonl")).expect("reads");
    let report = evaluate(&problems, &completions, &settings, |_, _, _| {}).expect("evaluates");
    check_java(&report, 1.0);

    // `--java-classpath`: a copy of the jar outside /usr (its directory is mounted in the
    // sandbox) works as well; a jar that is not there skips Java, naming the flag.
    if Toolchain::find(Language::Java).is_ok() {
        let dir = temp_dir("java-classpath");
        let jar = dir.join("javatuples-1.2.jar");
        std::fs::copy("/usr/share/java/javatuples.jar", &jar).expect("copies the jar");
        let with_classpath = |jar: &Path| {
            let jar = jar.to_str().expect("utf-8");
            let settings = EvalSettings {
                java_classpath: Some(jar),
                ..settings
            };
            evaluate(&problems, &completions, &settings, |_, _, _| {}).expect("evaluates")
        };
        let report = with_classpath(&jar);
        assert_eq!(report.pass_at_1(Language::Java), Some(1.0), "{report:?}");
        let report = with_classpath(&dir.join("missing.jar"));
        assert_eq!(report.pass_at_1(Language::Java), None);
        assert!(
            report.skipped["java"].contains("--java-classpath"),
            "{report:?}"
        );
    }
}

#[test]
fn humaneval_format_is_read_and_samples_give_pass_at_k() {
    let problems =
        read_problems(&Path::new(DIR).join("humaneval.jsonl"), None).expect("HumanEval format");
    assert_eq!(problems.len(), 2);
    assert_eq!(problems[0].name, "Project/0");
    assert_eq!(problems[0].lang(), Some(Language::Python));
    assert!(problems[0].tests.ends_with("\ncheck(double)\n"));
    // Problem 0: 2 of 3 samples pass; problem 1: 0 of 3.
    let records = [
        ("Project/0", "    return 2 * x\n"),
        ("Project/0", "    return x + x\n"),
        ("Project/0", "    return x\n"),
        ("Project/1", "    return s\n"),
        ("Project/1", "    return ''\n"),
        ("Project/1", "    return s.upper(\n"),
    ]
    .map(|(n, c)| Completion::new(n, c));
    let report = eval(&problems, &records, Duration::from_secs(10));
    let score = &report.scores[0];
    assert_eq!((score.problems, score.passed, score.total), (2, 2, 6));
    // pass@1 = mean(2/3, 0/3).
    assert!((score.pass_at_1 - 1.0 / 3.0).abs() < 1e-12, "{score:?}");
    assert_eq!(score.pass_at_k.keys().collect::<Vec<_>>(), vec!["pass@1"]);
    assert_eq!(
        status_of(&report, "Project/1"),
        vec![Status::Exception, Status::Exception, Status::SyntaxError]
    );
}

#[test]
fn problems_are_validated_and_completions_cut() {
    let dir = temp_dir("problems");
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
    std::fs::write(&file, "{\"task_id\": \"x\", \"prompt\": \"\"}\n").expect("write");
    let err = read_problems(&file, None).expect_err("HumanEval record without test");
    assert!(err.to_string().contains("test"), "{err}");
    let only_rust =
        read_problems(&Path::new(DIR).join("problems.jsonl"), Some("rs")).expect("problems");
    assert_eq!(only_rust.len(), 2);
    assert!(only_rust.iter().all(|p| p.lang() == Some(Language::Rust)));
    let stops = vec!["\n}".to_string(), "\nfn".to_string()];
    assert_eq!(cut_at_stop("  x\n  y\nfn z\n}", &stops), "  x\n  y");
    assert_eq!(cut_at_stop("  x", &stops), "  x");
    let once = cut_at_stop("  x\n}\nfn main() {}", &stops);
    assert_eq!(cut_at_stop(&once, &stops), once, "the cut is idempotent");
    let _ = std::fs::remove_dir_all(&dir);
}

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_multipl-moe"))
        .args(args)
        .output()
        .expect("runs the binary")
}

/// `multipl-moe eval --problems --completions` scores given completions without a model,
/// cuts them at the stop tokens unless `--no-cut`, and writes results.json.
#[test]
fn cli_evaluates_given_completions_without_a_model() {
    let out = temp_dir("eval-cli");
    let problems = format!("{DIR}/problems.jsonl");
    // Raw generations that run on past the function.
    let raw = out.join("raw.jsonl");
    std::fs::write(
        &raw,
        "{\"name\": \"Project_add\", \"completion\": \"    return x + y\\n\\ndef main():\\n    syntax error here\\n\"}\n",
    )
    .expect("write");
    let results = out.join("results");
    let run = |extra: &[&str]| {
        let mut args = vec!["eval", "--problems", &problems, "--completions"];
        args.push(raw.to_str().expect("utf-8 path"));
        args.extend([
            "--language",
            "python",
            "--out",
            results.to_str().expect("utf-8"),
        ]);
        args.extend(extra);
        let output = cli(&args);
        assert!(output.status.success(), "{output:?}");
        let report: EvalReport = serde_json::from_str(
            &std::fs::read_to_string(results.join("results.json")).expect("results.json"),
        )
        .expect("parses");
        report
    };
    let cut = run(&[]);
    assert_eq!(status_of(&cut, "Project_add"), vec![Status::Ok]);
    assert_eq!(
        status_of(&cut, "Project_sum_squares"),
        vec![Status::NoCompletion]
    );
    assert_eq!(cut.sandbox, SandboxKind::Bubblewrap);
    // The first run's results are not replaced unasked: refused before anything runs.
    let mut again = vec!["eval", "--problems", &problems, "--completions"];
    again.push(raw.to_str().expect("utf-8 path"));
    again.extend(["--out", results.to_str().expect("utf-8")]);
    let refused = cli(&again);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--overwrite"), "{stderr}");
    let uncut = run(&["--no-cut", "--overwrite"]);
    assert_eq!(status_of(&uncut, "Project_add"), vec![Status::SyntaxError]);

    let bad = cli(&["eval", "--problems", &problems]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--completions"));
    let _ = std::fs::remove_dir_all(&out);
}

/// Every eval argument is checked up front: a clear error, never a panic.
#[test]
fn cli_rejects_invalid_eval_arguments() {
    let problems = format!("{DIR}/problems.jsonl");
    let completions = format!("{DIR}/completions-correct.jsonl");
    for (flag, value, expected) in [
        ("--timeout", "1e30", "--timeout"),
        ("--timeout", "NaN", "--timeout"),
        ("--timeout", "-1", "--timeout"),
        ("--timeout", "0", "--timeout"),
        ("--compile-timeout", "inf", "--compile-timeout"),
        ("--samples", "0", "--samples"),
        ("--samples", "5", "--temperature"),
        ("--temperature", "-0.5", "--temperature"),
        ("--top-p", "0", "--top-p"),
        ("--jobs", "0", "--jobs"),
        ("--memory-mib", "1", "--memory-mib"),
        ("--max-processes", "2", "--max-processes"),
        ("--file-size-mib", "0", "--file-size-mib"),
    ] {
        let setting = format!("{flag}={value}");
        // Sampling settings go with a model (with --completions they are refused as such);
        // they are checked before it loads.
        let source = match flag {
            "--samples" | "--temperature" | "--top-p" => ["--model", "/nonexistent-model"],
            _ => ["--completions", completions.as_str()],
        };
        let out = cli(&[
            "eval",
            "--problems",
            &problems,
            source[0],
            source[1],
            &setting,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(stderr.contains(expected), "{flag} {value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flag} {value}: {stderr}");
    }
    // Without bubblewrap on PATH the harness refuses unless told otherwise.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_multipl-moe"))
        .args([
            "eval",
            "--problems",
            &problems,
            "--completions",
            &completions,
        ])
        .env("PATH", "/nonexistent")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--unsafe-no-sandbox"));
    // With the flag, the warning gives the cause, not the advice to pass the flag.
    let dir = temp_dir("no-sandbox-warning");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_multipl-moe"))
        .args([
            "eval",
            "--problems",
            &problems,
            "--completions",
            &completions,
            "--unsafe-no-sandbox",
            "--out",
            dir.join("out").to_str().expect("utf-8"),
        ])
        .env("PATH", "/nonexistent")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no sandbox (`bwrap` is not on PATH)") && !stderr.contains("or pass"),
        "{stderr}"
    );

    // Completion names that match no problem are an error naming them; those of problems
    // that --language leaves out are not.
    let dir = temp_dir("unknown-names");
    let typo = dir.join("typo.jsonl");
    std::fs::write(
        &typo,
        "{\"name\": \"Project_add\", \"completion\": \"    return x + y\\n\"}\n\
         {\"name\": \"Project_ad\", \"completion\": \"    return x + y\\n\"}\n",
    )
    .expect("writes");
    let out_dir = dir.join("out");
    let out = cli(&[
        "eval",
        "--problems",
        &problems,
        "--completions",
        typo.to_str().expect("utf-8"),
        "--out",
        out_dir.to_str().expect("utf-8"),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an unknown name was accepted");
    assert!(
        stderr.contains("`Project_ad`") && !stderr.contains("`Project_add`"),
        "{stderr}"
    );
    let out = cli(&[
        "eval",
        "--problems",
        &problems,
        "--completions",
        &completions,
        "--language",
        "go",
        "--out",
        out_dir.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unsandboxed_runs_are_recorded_as_such() {
    let sandbox = Sandbox::unsafe_none(ResourceLimits::default());
    let settings = EvalSettings {
        sandbox: &sandbox,
        limits: LimitFlags::default(),
        jobs: 1,
        java_classpath: None,
    };
    let problems = [py_problem("plain")];
    let report = evaluate(
        &problems,
        &[Completion::new("plain", "    return x + y\n")],
        &settings,
        |_, _, _| {},
    )
    .expect("evaluates");
    assert_eq!(report.sandbox, SandboxKind::None);
    assert_eq!(status_of(&report, "plain"), vec![Status::Ok]);
    assert!(report.table().contains("--unsafe-no-sandbox"));
}

/// A byte-level BPE and a random tiny model over its vocabulary with `positions` positions.
fn tiny_model(positions: usize) -> (TextTokenizer, CausalLm<TestBackend>) {
    let texts: Vec<String> = (0..40)
        .map(|i| format!("def f{i}(x):\n    return x + {i}\n"))
        .collect();
    let tokenizer = TextTokenizer::train(&texts, 300).expect("tokenizer");
    let device = Default::default();
    let model = MultiplMoeConfig::new(
        QwenConfig {
            vocab_size: tokenizer.vocab_size(),
            ..QwenConfig::tiny()
        }
        .with_max_position_embeddings(positions),
    )
    .init::<TestBackend>(&device)
    .expect("valid config");
    (tokenizer, model)
}

#[test]
fn special_tokens_end_generation_and_are_skipped_in_text() {
    let (tokenizer, model) = tiny_model(64);
    let dir = temp_dir("special");
    let tokenizer_json = dir.join("tokenizer.json");
    tokenizer.save(&tokenizer_json).expect("save");
    let config = dir.join("generation_config.json");
    let eos = tokenizer.eos() as usize;
    std::fs::write(&config, "{\"eos_token_id\": [7, 9]}").expect("write");
    let special = SpecialTokens::load(&tokenizer, &tokenizer_json, &config).expect("loads");
    assert_eq!(
        special.stop_ids,
        vec![7, 9, eos]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert!(special.skip_ids.contains(&(eos as u32)) && special.skip_ids.contains(&7));
    std::fs::write(&config, "{\"eos_token_id\": 11}").expect("write");
    let one = SpecialTokens::load(&tokenizer, &tokenizer_json, &config).expect("loads");
    assert!(one.stop_ids.contains(&11));
    std::fs::write(&config, "{\"eos_token_id\": \"x\"}").expect("write");
    let err = SpecialTokens::load(&tokenizer, &tokenizer_json, &config).expect_err("string");
    assert!(
        err.to_string().contains("eos_token_id")
            && err.to_string().contains("generation_config.json"),
        "{err}"
    );

    let options = TextGenerateOptions {
        max_new_tokens: 12,
        ..TextGenerateOptions::default()
    };
    let prompt = "def f3(x):\n";
    let none = SpecialTokens::default();
    let free =
        generate_text_with(&model, &tokenizer, prompt, &options, &none, |_| {}).expect("generates");
    let first = *free.generated.tokens.first().expect("a token");
    // The first greedy token, listed as a stop id, ends generation at once.
    let stop = SpecialTokens {
        stop_ids: vec![first],
        ..SpecialTokens::default()
    };
    let stopped =
        generate_text_with(&model, &tokenizer, prompt, &options, &stop, |_| {}).expect("generates");
    assert!(stopped.generated.tokens.is_empty() && stopped.text.is_empty());
    // Listed as a skip id, it is generated but left out of the text.
    let skip = SpecialTokens {
        skip_ids: [first as u32].into_iter().collect(),
        ..SpecialTokens::default()
    };
    let skipped =
        generate_text_with(&model, &tokenizer, prompt, &options, &skip, |_| {}).expect("generates");
    assert_eq!(skipped.generated.tokens, free.generated.tokens);
    let kept: Vec<u32> = free
        .generated
        .tokens
        .iter()
        .map(|&t| t as u32)
        .filter(|&t| t != first as u32)
        .collect();
    assert_eq!(skipped.text, tokenizer.decode(&kept).expect("decodes"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn long_prompts_are_recorded_and_runs_resume() {
    let (tokenizer, model) = tiny_model(48);
    let mut long = py_problem("long");
    long.prompt = format!(
        "{}def add(x, y):\n",
        "# a comment that is long enough\n".repeat(20)
    );
    // A prompt of exactly the context's 48 tokens leaves no room for a completion either.
    let mut full = py_problem("full");
    full.prompt = (1..400)
        .map(|n| "x = 1\n".repeat(n / 4) + &"y".repeat(n % 4))
        .find(|p| tokenizer.encode(p).map(|ids| ids.len()).ok() == Some(48))
        .expect("a prompt of exactly 48 tokens");
    let problems = [py_problem("short"), long, full];
    let dir = temp_dir("resume");
    let path = dir.join("completions.jsonl");
    let settings = SampleSettings {
        max_new_tokens: 4,
        ..SampleSettings::default()
    };
    let special = SpecialTokens::default();
    let (mut log, done) = CompletionLog::open(&path, true).expect("open");
    let records = generate_completions(
        &model,
        &tokenizer,
        &special,
        &problems,
        &settings,
        3,
        &mut log,
        done,
        |_, _, _| {},
    )
    .expect("generates");
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].status, None);
    assert_eq!(records[1].status, Some(Status::PromptTooLong));
    assert_eq!(
        records[2].status,
        Some(Status::PromptTooLong),
        "a full context"
    );
    let on_disk: Vec<Completion> = read_jsonl(&path).expect("written as produced");
    assert_eq!(on_disk, records);
    let report = eval(&problems, &records, Duration::from_secs(10));
    assert_eq!(status_of(&report, "long"), vec![Status::PromptTooLong]);
    assert!(report.table().contains("prompt too long"));

    // Resuming generates only what is missing: nothing, then the second sample of each.
    let (mut log, done) = CompletionLog::open(&path, true).expect("resume");
    let mut calls = 0;
    let again = generate_completions(
        &model,
        &tokenizer,
        &special,
        &problems,
        &settings,
        3,
        &mut log,
        done,
        |_, _, _| calls += 1,
    )
    .expect("resumes");
    assert_eq!((again, calls), (records.clone(), 0));
    let two = SampleSettings {
        samples: 2,
        temperature: 0.8,
        ..settings
    };
    let (mut log, done) = CompletionLog::open(&path, true).expect("resume");
    let more = generate_completions(
        &model,
        &tokenizer,
        &special,
        &problems,
        &two,
        1,
        &mut log,
        done,
        |_, _, _| calls += 1,
    )
    .expect("resumes");
    assert_eq!((more.len(), calls), (6, 3));
    assert_eq!(&more[..3], &records[..]);
    assert_eq!(read_jsonl::<Completion>(&path).expect("reads").len(), 6);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Completions decoded in batches (several problems left-padded together, the samples of
/// a problem sharing its prefill) are those decoded one at a time, in the same order.
#[test]
fn batched_completions_equal_one_at_a_time() {
    let (tokenizer, model) = tiny_model(96);
    let mut problems: Vec<Problem> = ["a", "b", "c"].into_iter().map(py_problem).collect();
    problems[1].prompt = "def f3(x):\n".into();
    problems[2].prompt = "def f1(x):\n    return x + 1\n\ndef f2(y):\n".into();
    let settings = SampleSettings {
        samples: 3,
        max_new_tokens: 6,
        temperature: 0.8,
        ..SampleSettings::default()
    };
    let special = SpecialTokens::default();
    let run = |batch_size: usize| {
        let dir = temp_dir(&format!("batched-{batch_size}"));
        let (mut log, done) = CompletionLog::open(&dir.join("c.jsonl"), false).expect("open");
        let mut calls = 0;
        let records = generate_completions(
            &model,
            &tokenizer,
            &special,
            &problems,
            &settings,
            batch_size,
            &mut log,
            done,
            |_, _, _| calls += 1,
        )
        .expect("generates");
        let _ = std::fs::remove_dir_all(&dir);
        (records, calls)
    };
    let (one, calls_one) = run(1);
    let (seven, calls_seven) = run(7);
    assert_eq!(one, seven);
    assert_eq!((calls_one, calls_seven), (9, 2), "progress once per batch");
    let names: Vec<&str> = one.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "a", "a", "b", "b", "b", "c", "c", "c"]);
    let texts: std::collections::BTreeSet<&str> =
        one.iter().map(|c| c.completion.as_str()).collect();
    assert!(texts.len() > 3, "samples differ: {texts:?}");
}

/// MultiPL-E's rules hold by default and are recorded: Rust and Ruby get 5 s to run, the
/// others 15 s, Go one 30 s budget; a flag replaces them for every language and says so.
#[test]
fn multipl_e_limits_hold_by_default_and_flags_are_recorded() {
    let secs = Duration::from_secs;
    let rules = LimitFlags::default();
    assert!(rules.is_multipl_e());
    assert_eq!(rules.limits(Language::Rust).run, secs(5));
    assert_eq!(rules.limits(Language::Ruby).run, secs(5));
    for lang in [Language::Python, Language::Cpp, Language::Java] {
        assert_eq!(rules.limits(lang), ExecLimits::default(), "{lang:?}");
        assert_eq!(rules.limits(lang).run, secs(15));
    }
    assert_eq!(rules.limits(Language::Go).total, Some(secs(30)));
    let flags = LimitFlags::from_secs(Some(2.0), None).expect("valid");
    assert_eq!(flags.limits(Language::Rust).run, secs(2));
    assert_eq!(flags.limits(Language::Go).total, None);
    assert!(LimitFlags::from_secs(Some(0.0), None).is_err());
    assert!(LimitFlags::from_secs(None, Some(f64::NAN)).is_err());

    let problems = [py_problem("rules")];
    let records = [Completion::new("rules", "    return x + y\n")];
    let report = eval(&problems, &records, secs(7));
    assert_eq!(report.rules, "MultiPL-E with --timeout 7");
    assert_eq!(report.limits["python"].run, secs(7));
    let sandbox = sandbox(ResourceLimits::default());
    let settings = EvalSettings {
        sandbox: &sandbox,
        limits: LimitFlags::default(),
        jobs: 1,
        java_classpath: None,
    };
    let report = evaluate(&problems, &records, &settings, |_, _, _| {}).expect("evaluates");
    assert_eq!(report.rules, "MultiPL-E");
    assert_eq!(
        report.limits["python"],
        ExecLimits::multipl_e(Language::Python)
    );

    // rustc as MultiPL-E runs it, edition 2015: `async` is an identifier, and `TryInto` is
    // not in the prelude.
    let rust = |name: &str| Problem {
        name: name.into(),
        language: "rs".into(),
        prompt: "fn add(x: i64, y: i64) -> i64 {\n".into(),
        tests: "fn main() {\n    assert_eq!(add(2, 3), 5);\n}\n".into(),
        stop_tokens: vec!["\nfn".into()],
    };
    let problems = [rust("edition_async"), rust("edition_try_into")];
    let records = [
        Completion::new("edition_async", "    let async = x;\n    async + y\n}\n"),
        Completion::new(
            "edition_try_into",
            "    let n: i32 = x.try_into().unwrap();\n    n as i64 + y\n}\n",
        ),
    ];
    let report = evaluate(&problems, &records, &settings, |_, _, _| {}).expect("evaluates");
    expect_statuses(
        &report,
        &[
            ("edition_async", &[Status::Ok]),
            ("edition_try_into", &[Status::SyntaxError]),
        ],
    );
}

/// Output as MultiPL-E's `safe_subprocess` treats it: printing without end is a timeout (the
/// output is drained from a pipe, not written to a file that hits `RLIMIT_FSIZE`), printing
/// 8 MiB (past a 1 MiB file-size limit) and then passing is ok, and the record keeps only the
/// first 4 KiB.
#[test]
fn endless_output_times_out_and_large_output_passes() {
    let report = eval_python(
        ResourceLimits::new(4096, 1024, 1).expect("valid limits"),
        Some(Duration::from_secs(3)),
        &[
            (
                "endless_output",
                "    while True:\n        sys.stdout.write('x' * 65536)\n",
            ),
            (
                "large_output",
                "    for _ in range(8):\n        sys.stdout.write('y' * (1 << 20))\n    return x + y\n",
            ),
        ],
    );
    expect_statuses(
        &report,
        &[
            ("endless_output", &[Status::Timeout]),
            ("large_output", &[Status::Ok]),
        ],
    );
    for r in &report.results {
        assert!(
            r.output.len() <= 4096,
            "{}: {} bytes kept",
            r.name,
            r.output.len()
        );
    }
}
