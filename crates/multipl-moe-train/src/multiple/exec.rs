//! Runs `prompt + completion + tests` with a language's toolchain in a fresh temporary
//! directory, under a time limit, without network where the OS allows it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::corpus::Language;

/// How one problem ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Compiled and exited with status 0: the tests passed.
    Ok,
    /// The compiler (or, for Python, Ruby and Go, the parser or build) rejected the program.
    CompileError,
    /// The program ran and failed: a failed assertion, an exception, a non-zero exit.
    RuntimeError,
    /// Compiling or running exceeded its time limit; the process group was killed.
    Timeout,
    /// The language's toolchain is missing here.
    Skipped,
    /// No completion was given for the problem.
    NoCompletion,
}

impl Status {
    /// Display name as in the results table.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::CompileError => "compile error",
            Status::RuntimeError => "runtime error",
            Status::Timeout => "timeout",
            Status::Skipped => "skipped",
            Status::NoCompletion => "no completion",
        }
    }
}

/// Limits of one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecLimits {
    /// Wall-clock limit of the program run.
    pub run: Duration,
    /// Wall-clock limit of the compilation.
    pub compile: Duration,
}

impl Default for ExecLimits {
    fn default() -> Self {
        Self {
            run: Duration::from_secs(15),
            compile: Duration::from_secs(60),
        }
    }
}

/// The result of [`execute`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// How it ended.
    pub status: Status,
    /// Exit code of the failing (or last) step, when it exited.
    pub exit_code: Option<i32>,
    /// The start of that step's stderr (and stdout), for diagnosis.
    pub output: String,
}

struct Step {
    argv: Vec<&'static str>,
    compile: bool,
}

/// Source file name and the steps that compile and run it.
fn plan(language: Language) -> (&'static str, Vec<Step>) {
    let run = |argv: Vec<&'static str>| Step {
        argv,
        compile: false,
    };
    let compile = |argv: Vec<&'static str>| Step {
        argv,
        compile: true,
    };
    match language {
        Language::Python => ("prog.py", vec![run(vec!["python3", "prog.py"])]),
        Language::Rust => (
            "prog.rs",
            vec![
                compile(vec![
                    "rustc",
                    "--edition",
                    "2021",
                    "-A",
                    "warnings",
                    "-o",
                    "prog",
                    "prog.rs",
                ]),
                run(vec!["./prog"]),
            ],
        ),
        Language::Cpp => (
            "prog.cpp",
            vec![
                compile(vec!["g++", "-std=c++17", "-o", "prog", "prog.cpp"]),
                run(vec!["./prog"]),
            ],
        ),
        Language::Java => (
            "Problem.java",
            vec![
                compile(vec!["javac", "Problem.java"]),
                run(vec!["java", "-ea", "-cp", ".", "Problem"]),
            ],
        ),
        Language::Go => (
            "prog_test.go",
            vec![run(vec!["go", "test", "prog_test.go"])],
        ),
        Language::Ruby => ("prog.rb", vec![run(vec!["ruby", "prog.rb"])]),
    }
}

/// The tool whose presence decides whether `language` can be evaluated, and how to ask for
/// its version.
fn probe(language: Language) -> (&'static str, &'static [&'static str]) {
    match language {
        Language::Python => ("python3", &["--version"]),
        Language::Rust => ("rustc", &["--version"]),
        Language::Cpp => ("g++", &["--version"]),
        Language::Java => ("javac", &["-version"]),
        Language::Go => ("go", &["version"]),
        Language::Ruby => ("ruby", &["--version"]),
    }
}

/// `Ok` when `language`'s toolchain runs here, else a message naming the missing tool.
pub fn toolchain(language: Language) -> Result<(), String> {
    let (tool, args) = probe(language);
    let ok = Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    // Java also needs the runtime.
    let ok = ok
        && (language != Language::Java
            || Command::new("java")
                .arg("-version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{tool}` was not found or does not run; {} problems are skipped",
            language.name()
        ))
    }
}

/// Whether programs run without network: `unshare -rn` (a new user and network namespace)
/// works on this machine. Probed once.
pub fn network_isolation() -> bool {
    static ISOLATED: OnceLock<bool> = OnceLock::new();
    *ISOLATED.get_or_init(|| {
        Command::new("unshare")
            .args(["-rn", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "multipl-moe-eval-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compiles (if needed) and runs `program` as `language` in a fresh temporary directory.
pub fn execute(language: Language, program: &str, limits: ExecLimits) -> Outcome {
    let failed = |output: String| Outcome {
        status: Status::RuntimeError,
        exit_code: None,
        output,
    };
    let dir = match TempDir::new() {
        Ok(dir) => dir,
        Err(e) => return failed(format!("creating a temporary directory: {e}")),
    };
    let (file, steps) = plan(language);
    if let Err(e) = std::fs::write(dir.0.join(file), program) {
        return failed(format!("writing {file}: {e}"));
    }
    let mut last = None;
    for step in steps {
        let limit = if step.compile {
            limits.compile
        } else {
            limits.run
        };
        let result = match run_step(&dir.0, &step.argv, limit) {
            Ok(r) => r,
            Err(e) => return failed(format!("starting `{}`: {e}", step.argv[0])),
        };
        if result.timed_out {
            return Outcome {
                status: Status::Timeout,
                exit_code: None,
                output: result.output,
            };
        }
        if result.code != Some(0) {
            let status = if step.compile || parse_failure(language, &result.output) {
                Status::CompileError
            } else {
                Status::RuntimeError
            };
            return Outcome {
                status,
                exit_code: result.code,
                output: result.output,
            };
        }
        last = Some(result);
    }
    Outcome {
        status: Status::Ok,
        exit_code: last.as_ref().and_then(|r| r.code),
        output: last.map(|r| r.output).unwrap_or_default(),
    }
}

/// Whether a failed run of an interpreted (or `go test`) program failed before running.
fn parse_failure(language: Language, output: &str) -> bool {
    match language {
        Language::Python => ["SyntaxError", "IndentationError", "TabError"]
            .iter()
            .any(|e| output.contains(e)),
        Language::Ruby => output.contains("syntax error"),
        Language::Go => output.contains("[build failed]") || output.contains("[setup failed]"),
        _ => false,
    }
}

struct StepResult {
    code: Option<i32>,
    timed_out: bool,
    output: String,
}

/// Most bytes of output kept per step.
const OUTPUT_CAP: usize = 4096;

fn run_step(dir: &Path, argv: &[&str], limit: Duration) -> std::io::Result<StepResult> {
    let mut command = if network_isolation() {
        let mut c = Command::new("unshare");
        c.arg("-rn").args(argv);
        c
    } else {
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..]);
        c
    };
    command
        .current_dir(dir)
        .env("TMPDIR", dir)
        .env("GOCACHE", dir.join(".gocache"))
        .env("GOPATH", dir.join(".gopath"))
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    let mut child = command.spawn()?;
    let readers: Vec<_> = [
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut pipe| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = OUTPUT_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            kept
        })
    })
    .collect();
    let start = Instant::now();
    let (code, timed_out) = loop {
        if let Some(status) = child.try_wait()? {
            break (status.code(), false);
        }
        if start.elapsed() >= limit {
            kill_group(&mut child);
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut output = Vec::new();
    for reader in readers {
        if let Ok(bytes) = reader.join() {
            output.extend(bytes);
        }
    }
    Ok(StepResult {
        code,
        timed_out,
        output: String::from_utf8_lossy(&output).into_owned(),
    })
}

/// Kills the child's whole process group (compilers and test runners spawn children).
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: `kill` has no memory-safety preconditions; a negative pid names the
            // process group this child leads (`process_group(0)` above).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
    let _ = child.kill();
}
