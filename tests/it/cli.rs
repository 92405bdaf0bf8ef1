//! The `train`, `generate` and `eval --model` subcommands end to end on tiny models.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::TestBackend;

use multipl_moe::core::{MoeConfig, MultiplMoeConfig, QwenConfig};
use multipl_moe::qwen::{SaveDtype, save_model};
use multipl_moe::train::TrainConfig;
use multipl_moe::train::data::generator::embedded;
use multipl_moe::train::data::tokenizer::TextTokenizer;
use multipl_moe::train::training::run::RunConfig;

/// A random tiny hybrid model with a BPE tokenizer, saved in the export format.
fn saved_model(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("multipl-moe-cli-{name}-{}", std::process::id()));
    let texts: Vec<String> = embedded(5).documents.into_iter().map(|d| d.text).collect();
    let tokenizer = TextTokenizer::train(&texts, 300).expect("tokenizer");
    let mut moe = MoeConfig::tiny();
    moe.segment.window = 4;
    let config = MultiplMoeConfig::new(QwenConfig {
        vocab_size: tokenizer.vocab_size(),
        ..QwenConfig::tiny()
    })
    .with_moe(Some(moe));
    let model = config
        .init::<TestBackend>(&Default::default())
        .expect("valid");
    let _ = std::fs::remove_dir_all(&dir);
    save_model(&model, &config, &dir, SaveDtype::F32).expect("saves");
    tokenizer.save(&dir.join("tokenizer.json")).expect("saves");
    dir
}

/// A new temporary directory `DIR` and `DIR/corpus.jsonl`: the embedded corpus's first
/// documents in The Stack's JSONL layout.
fn corpus_dir(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("multipl-moe-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let data = dir.join("corpus.jsonl");
    let lines: Vec<String> = embedded(4)
        .documents
        .iter()
        .map(|d| serde_json::json!({"content": d.text, "language": d.language.name()}).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n")).expect("write");
    (dir, data)
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_multipl-moe"))
}

/// `multipl-moe train --config CONFIG --data DATA --out OUT`, to add flags to.
fn train_command(config: &Path, data: &Path, out: &Path) -> Command {
    let mut cmd = bin();
    cmd.args(["train", "--config"])
        .arg(config)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out);
    cmd
}

/// Arguments that once panicked (issue 12) are refused with an error naming them.
#[test]
fn bad_arguments_are_refused_by_name() {
    let hybrid = saved_model("bad-args");
    let refused = |args: &[&str], model: &Path, name: &str| {
        let out = bin()
            .arg(args[0])
            .arg("--model")
            .arg(model)
            .args(&args[1..])
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert!(
            stderr.contains(name),
            "{args:?}: {name} not named in {stderr}"
        );
    };
    for (flag, value) in [
        ("--seq-len", "0"),
        ("--seq-len", "1"),
        ("--batch", "0"),
        ("--sequences", "0"),
    ] {
        refused(&["routing", flag, value], &hybrid, flag);
    }
    refused(
        &["routing", "--seq-len", "100000"],
        &hybrid,
        "max_position_embeddings",
    );
    // A dense model in the export format (Hugging Face layout) to upcycle.
    let dense = std::env::temp_dir().join(format!("multipl-moe-cli-dense-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dense);
    let config = MultiplMoeConfig::new(QwenConfig::tiny());
    let model = config
        .init::<TestBackend>(&Default::default())
        .expect("valid");
    save_model(&model, &config, &dense, SaveDtype::F32).expect("saves");
    // Routing agreement needs hybrid layers: a dense model is refused, not scored as zeros.
    let tokenizer = hybrid.join("tokenizer.json");
    refused(
        &["routing", "--tokenizer", tokenizer.to_str().expect("utf-8")],
        &dense,
        "no hybrid MoE layer",
    );
    let out = dense.with_extension("upcycled");
    for noise in ["NaN", "-1", "inf", "1.5", "3e38"] {
        let flag = format!("--expert-noise={noise}");
        refused(
            &["upcycle", "--out", out.to_str().expect("utf-8"), &flag],
            &dense,
            "expert_noise",
        );
        assert!(!out.exists(), "nothing written for --expert-noise {noise}");
    }
    for (args, name) in [
        (&["--samples", "0"][..], "--samples"),
        (&["--batch-size", "0"][..], "--batch-size"),
        (&["--max-new-tokens", "0"][..], "--max-new-tokens"),
        (&["--samples", "3"][..], "--temperature"),
    ] {
        let mut all = vec!["generate", "--prompt", "x"];
        all.extend_from_slice(args);
        refused(&all, &hybrid, name);
    }
    let _ = std::fs::remove_dir_all(&hybrid);
    let _ = std::fs::remove_dir_all(&dense);
}

#[test]
fn generate_streams_and_reports_speed() {
    let dir = saved_model("generate");
    let sample = || {
        bin()
            .args(["generate", "--model"])
            .arg(&dir)
            .args(["--prompt", "fn main() {", "--max-new-tokens", "12"])
            .args(["--temperature", "0.9", "--top-p", "0.9", "--seed", "4"])
            .output()
            .expect("runs")
    };
    let out = sample();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("prefill:") && stderr.contains("decode:") && stderr.contains("tokens/s"),
        "{stderr}"
    );
    assert_eq!(out.stdout, sample().stdout, "seeded sampling repeats");
    let bad = bin()
        .args(["generate", "--model"])
        .arg(&dir)
        .args(["--prompt", "x", "--top-p", "1.5"])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("top_p"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eval_with_a_model_writes_completions_and_results() {
    let dir = saved_model("eval");
    let out_dir = dir.join("eval");
    let eval = |resume: bool| {
        let mut cmd = bin();
        cmd.args(["eval", "--model"])
            .arg(&dir)
            .arg("--problems")
            .arg(Path::new("fixtures/multiple/problems.jsonl"))
            .args([
                "--language",
                "python",
                "--max-new-tokens",
                "8",
                "--timeout",
                "5",
            ])
            .arg("--out")
            .arg(&out_dir);
        if resume {
            cmd.arg("--resume");
        }
        cmd.output().expect("runs")
    };
    let out = eval(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let completions = std::fs::read_to_string(out_dir.join("completions.jsonl")).expect("written");
    assert_eq!(completions.lines().count(), 2, "one per python problem");
    for line in completions.lines() {
        let c: serde_json::Value = serde_json::from_str(line).expect("json");
        let text = c["completion"].as_str().expect("completion");
        assert!(!text.contains("\ndef"), "cut at the stop token: {text:?}");
    }
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("results.json")).expect("written"),
    )
    .expect("json");
    assert_eq!(results["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(results["scores"][0]["language"], "python");

    // `--resume` knows the model by its content: the same files resume (nothing is left to
    // generate), new weights saved into the same directory are refused, naming the digest.
    let resume = || eval(true);
    let same = resume();
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    let weights = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).expect("weights");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&weights, bytes).expect("rewrite");
    let changed = resume();
    let stderr = String::from_utf8_lossy(&changed.stderr);
    assert!(
        !changed.status.success() && stderr.contains("model_sha256"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `train --config examples/run.toml` on a JSONL corpus: upcycles a fresh model, checkpoints
/// every 10 steps, saves the model; killed after a checkpoint, `--resume` finishes the run.
/// A second process given the same config and data writes the same `loss.csv` byte for byte,
/// and so does the resumed run (issue 12: reproducible runs).
#[test]
fn train_checkpoints_and_resumes() {
    let (dir, data) = corpus_dir("train");
    // examples/run.toml (strictly parsed) cut down to the tiny corpus.
    let mut run = RunConfig::from_file(Path::new("examples/run.toml")).expect("example");
    run.train = TrainConfig {
        seq_len: 32,
        batch_size: 4,
        grad_accumulation: 2,
        epochs: 2,
        warmup_steps: 5,
        checkpoint_every: 10,
        valid_every: 0,
        ..run.train
    };
    run.model = run.model.map(|m| QwenConfig {
        vocab_size: 300,
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        ..m
    });
    let config = dir.join("run.json");
    std::fs::write(&config, serde_json::to_string(&run).expect("json")).expect("write");
    let out = dir.join("run");
    let train_into = |out: &Path, resume: bool| {
        let mut cmd = train_command(&config, &data, out);
        if resume {
            cmd.arg("--resume");
        }
        let result = cmd.output().expect("runs");
        assert!(
            result.status.success(),
            "{}",
            String::from_utf8_lossy(&result.stderr)
        );
        String::from_utf8_lossy(&result.stdout).into_owned()
    };
    let train = |resume: bool| train_into(&out, resume);
    train(false);
    assert!(out.join("model/config.json").exists() && out.join("model/tokenizer.json").exists());
    let last = multipl_moe::train::training::run::last_checkpoint(&out).expect("checkpoints");
    assert!(last >= 2, "several checkpoints of 10 steps: {last}");
    let rows = |p: &Path| std::fs::read_to_string(p.join("loss.csv")).expect("loss.csv");
    let full = rows(&out);
    let again = dir.join("again");
    train_into(&again, false);
    assert_eq!(rows(&again), full, "a second run writes the same loss.csv");
    for kind in ["model", "optim", "scheduler"] {
        std::fs::remove_file(out.join(format!("checkpoint/{kind}-{last}.mpk"))).expect("rm");
    }
    std::fs::remove_dir_all(out.join("model")).expect("rm");
    // Resuming with another config is refused by name, before any training.
    let mut changed = run.clone();
    changed.train.lr *= 2.0;
    let other = dir.join("other.json");
    std::fs::write(&other, serde_json::to_string(&changed).expect("json")).expect("write");
    let refused = train_command(&other, &data, &out)
        .arg("--resume")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("`train.lr` was"), "{stderr}");
    let stdout = train(true);
    assert!(stdout.contains("saved the trained model"), "{stdout}");
    assert!(out.join("model/config.json").exists());
    assert_eq!(
        rows(&out),
        full,
        "the resumed run repeats the uninterrupted loss.csv"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `train --model DIR` exports the files that say how to use the model beside its weights, as
/// `upcycle` does: DIR's `generation_config.json` and its tokenizer's `tokenizer_config.json`.
/// `--resume` into a directory without a checkpoint says that it starts from the beginning.
#[test]
fn train_exports_the_side_files_of_its_model() {
    let model = saved_model("side-files");
    let generation = r#"{"eos_token_id": [1, 2], "do_sample": false}"#;
    let tokenizer_config = r#"{"add_bos_token": false, "model_max_length": 64}"#;
    std::fs::write(model.join("generation_config.json"), generation).expect("write");
    std::fs::write(model.join("tokenizer_config.json"), tokenizer_config).expect("write");
    let (dir, data) = corpus_dir("side");
    let mut run = RunConfig::from_file(Path::new("examples/run.toml")).expect("example");
    run.train = TrainConfig {
        seq_len: 32,
        batch_size: 4,
        epochs: 1,
        warmup_steps: 1,
        ..run.train
    };
    let config = dir.join("run.json");
    std::fs::write(&config, serde_json::to_string(&run).expect("json")).expect("write");
    let out = dir.join("run");
    let result = train_command(&config, &data, &out)
        .arg("--model")
        .arg(&model)
        .arg("--resume")
        .output()
        .expect("runs");
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        stdout.contains("no usable checkpoint under") && stdout.contains("starting from scratch"),
        "{stdout}"
    );
    let read = |name: &str| std::fs::read_to_string(out.join("model").join(name)).expect(name);
    assert_eq!(read("generation_config.json"), generation);
    assert_eq!(read("tokenizer_config.json"), tokenizer_config);
    assert_eq!(
        read("tokenizer.json"),
        std::fs::read_to_string(model.join("tokenizer.json")).expect("tokenizer")
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&model);
}

/// A row of MultiPL-E's Hugging Face dataset (every column, as the dataset has them).
fn dataset_row(name: &str, language: &str, prompt: &str, tests: &str, stops: &[&str]) -> String {
    serde_json::json!({
        "name": name,
        "language": language,
        "prompt": prompt,
        "doctests": "transform",
        "original": format!("originals/{name}.py"),
        "prompt_terminology": "reworded",
        "tests": tests,
        "stop_tokens": stops,
    })
    .to_string()
}

/// `eval --problems DIR` reads every `*.jsonl` of a directory (here the Hugging Face
/// dataset's rows, written for this test, of two languages that share problem names) and
/// scores them per language; completions name their language, a name both languages have
/// with no language is refused, and so is a problem given twice.
#[test]
fn eval_scores_several_languages_from_a_directory_of_problem_files() {
    let dir = std::env::temp_dir().join(format!("multipl-moe-cli-langs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let problems = dir.join("problems");
    std::fs::create_dir_all(&problems).expect("dir");
    let py = problems.join("humaneval-py-reworded.jsonl");
    // An upper-case extension is a problem file too.
    let rb = problems.join("humaneval-rb-reworded.JSONL");
    let py_stops = ["\ndef", "\n#", "\nif", "\nclass"];
    std::fs::write(
        &py,
        [
            dataset_row(
                "Shared_0_add",
                "py",
                "def add(x: int, y: int) -> int:\n",
                "def check(candidate):\n    assert candidate(2, 3) == 5\n\ncheck(add)\n",
                &py_stops,
            ),
            dataset_row(
                "Shared_1_double",
                "py",
                "def double(x: int) -> int:\n",
                "def check(candidate):\n    assert candidate(4) == 8\n\ncheck(double)\n",
                &py_stops,
            ),
        ]
        .join("\n"),
    )
    .expect("write");
    std::fs::write(
        &rb,
        dataset_row(
            "Shared_0_add",
            "rb",
            "# Adds two numbers.\ndef add(x, y)\n",
            "require 'test/unit'\nclass TestHumanEval < Test::Unit::TestCase\n  def test_add\n    \
             candidate = method(:add)\n    assert_equal(5, candidate.call(2, 3))\n  end\nend\n",
            &["\nclass", "\ndef", "\n#", "\n\n"],
        ),
    )
    .expect("write");
    let completions = dir.join("completions.jsonl");
    let write_completions = |records: &[serde_json::Value]| {
        let lines: Vec<String> = records.iter().map(|r| r.to_string()).collect();
        std::fs::write(&completions, lines.join("\n")).expect("write");
    };
    let record = |name: &str, language: Option<&str>, text: &str| {
        let mut r = serde_json::json!({"name": name, "completion": text});
        if let Some(l) = language {
            r["language"] = l.into();
        }
        r
    };
    write_completions(&[
        record("Shared_0_add", Some("py"), "    return x + y\n"),
        // The Ruby one is wrong; the record names the language by its full name.
        record("Shared_0_add", Some("ruby"), "  x - y\nend\n"),
        // The only problem of that name: no language needed.
        record("Shared_1_double", None, "    return 2 * x\n"),
    ]);
    let eval = |problem_args: &[&Path], out: &str| {
        let mut cmd = bin();
        cmd.arg("eval").arg("--problems").args(problem_args);
        cmd.arg("--completions")
            .arg(&completions)
            .args(["--timeout", "20", "--out"])
            .arg(dir.join(out))
            .output()
            .expect("runs")
    };
    let out = eval(&[&problems], "out");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |lang: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(lang))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("python").contains("1.000   (2/2)"), "{stdout}");
    assert!(line("ruby").contains("0.000   (0/1)"), "{stdout}");
    // Generation settings do nothing to given completions: they are refused by name.
    for flag in [
        "--temperature=0.2",
        "--samples=5",
        "--max-new-tokens=9",
        "--batch-size=2",
    ] {
        let mut cmd = bin();
        cmd.arg("eval").arg("--problems").arg(&problems);
        let out = cmd
            .arg("--completions")
            .arg(&completions)
            .arg(flag)
            .arg("--out")
            .arg(dir.join("flag"))
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = flag.split('=').next().unwrap_or_default();
        assert!(
            !out.status.success() && stderr.contains(name),
            "{flag}: {stderr}"
        );
    }

    // The two files named one by one give the same; a name both have, with no language, is
    // refused by name.
    write_completions(&[record("Shared_0_add", None, "    return x + y\n")]);
    let out = eval(&[&py, &rb], "ambiguous");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("several languages") && stderr.contains("Shared_0_add"),
        "{stderr}"
    );
    // A record naming a language no one knows is refused as such.
    write_completions(&[record("Shared_0_add", Some("lua"), "x")]);
    let out = eval(&[&problems], "lua");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown language `lua`"), "{stderr}");

    // --language settles a name both languages have; the other language's records drop.
    write_completions(&[
        record("Shared_0_add", None, "    return x + y\n"),
        record("Shared_1_double", None, "    return 2 * x\n"),
    ]);
    let mut cmd = bin();
    cmd.args(["eval", "--language", "python", "--problems"])
        .arg(&problems)
        .arg("--completions")
        .arg(&completions)
        .arg("--out")
        .arg(dir.join("python-only"));
    let out = cmd.output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1.000   (2/2)"), "{stdout}");

    // The same file given twice (directly and through its directory) is read once; the same
    // problem in two files is refused, naming both, and nothing in --out is replaced first.
    write_completions(&[
        record("Shared_0_add", Some("py"), "    return x + y\n"),
        record("Shared_0_add", Some("rb"), "  x + y\nend\n"),
    ]);
    let out = eval(&[&py, &problems], "twice");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copy = dir.join("copy-of-py.jsonl");
    std::fs::copy(&py, &copy).expect("copy");
    let kept = dir.join("twice").join("results.json");
    let before = std::fs::read(&kept).expect("results");
    let mut cmd = bin();
    cmd.args(["eval", "--overwrite", "--problems"])
        .arg(&py)
        .arg(&copy)
        .arg("--completions")
        .arg(&completions)
        .arg("--out")
        .arg(dir.join("twice"));
    let out = cmd.output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("is in both"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&kept).ok(),
        Some(before),
        "--overwrite kept the earlier run"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `demo --base` needs its model, corpus and problems, its flags need `--base`, and
/// `--resume` needs an earlier run: each is refused by name before anything loads.
#[test]
fn demo_base_arguments_are_checked_first() {
    let refused = |args: &[&str], name: &str| {
        let out = bin().arg("demo").args(args).output().expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        assert!(
            stderr.contains(name),
            "{args:?}: {name} not named in {stderr}"
        );
    };
    let problems = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/multiple/problems.jsonl");
    let problems = problems.to_str().expect("utf-8");
    refused(&["--base", "m", "--problems", problems], "--data");
    refused(&["--base", "m", "--data", "d"], "--problems");
    refused(&["--problems", problems], "--base");
    refused(&["--limit", "3"], "--base");
    refused(&["--samples", "3"], "--base");
    let base = saved_model("demo-base");
    let b = base.to_str().expect("utf-8");
    refused(
        &["--base", "m", "--data", "d", "--problems", problems],
        "m/config.json",
    );
    refused(
        &[
            "--base",
            b,
            "--data",
            "/nonexistent",
            "--problems",
            problems,
        ],
        "--data: /nonexistent",
    );
    refused(
        &["--base", b, "--data", b, "--problems", "/nonexistent.jsonl"],
        "/nonexistent.jsonl",
    );
    let missing = std::env::temp_dir().join(format!("multipl-moe-no-run-{}", std::process::id()));
    let missing = missing.to_str().expect("utf-8");
    let resume = ["--resume", "--out", missing];
    let mut args = vec!["--base", b, "--data", b, "--problems", problems];
    args.extend(resume);
    refused(&args, "holds no earlier run");
    let mut args = vec!["--base", b, "--data", b, "--problems", problems];
    args.extend(["--samples", "5", "--temperature", "0"]);
    refused(&args, "--temperature");
    // A temperature with nothing sampled would do nothing.
    let mut args = vec!["--base", b, "--data", b, "--problems", problems];
    args.extend(["--temperature", "0.8"]);
    refused(&args, "--temperature 0.8");
    let _ = std::fs::remove_dir_all(base);
}
