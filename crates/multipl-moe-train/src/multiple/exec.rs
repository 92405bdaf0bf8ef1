//! Runs `prompt + completion + tests` with a language's toolchain in a fresh temporary
//! directory inside the [sandbox](super::sandbox), compiling and running as separate steps
//! with their own time limits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::EvalError;
use super::process::Ended;
use super::sandbox::{Mounts, Sandbox};
use super::toolchain::Toolchain;
use crate::data::corpus::Language;

/// How one problem ended, in MultiPL-E's terms (`OK`, `SyntaxError`, `Exception`, `Timeout`,
/// as its `eval_*.py` name them), plus what only a harness that generates can say. The
/// names before MultiPL-E's (`ok`, `compile_error`, `runtime_error`, `timeout`) still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Status {
    /// Compiled and exited with status 0: the tests passed.
    #[serde(rename = "OK", alias = "ok")]
    Ok,
    /// The compiler (or, for Python and Ruby, the parser; for Go, the build) rejected the
    /// program. MultiPL-E calls every compile failure, type errors included, `SyntaxError`.
    #[serde(rename = "SyntaxError", alias = "compile_error")]
    SyntaxError,
    /// The program ran and failed: a failed assertion, an exception, a non-zero exit.
    #[serde(rename = "Exception", alias = "runtime_error")]
    Exception,
    /// Compiling or running exceeded its time limit; everything it started was killed.
    #[serde(rename = "Timeout", alias = "timeout")]
    Timeout,
    /// The prompt is longer than the model's context: no completion could be generated
    /// (counted as a failure).
    #[serde(rename = "prompt_too_long")]
    PromptTooLong,
    /// The language's toolchain is missing here.
    #[serde(rename = "skipped")]
    Skipped,
    /// No completion was given for the problem.
    #[serde(rename = "no_completion")]
    NoCompletion,
    /// The harness could not run the program — the sandbox failed to start (after retries),
    /// a temporary directory could not be made or written (a full disk), a toolchain program
    /// could not be started: not the completion's fault, so excluded from pass@k (like a
    /// skipped problem) and reported under the table.
    #[serde(rename = "harness_error")]
    HarnessError,
}

impl Status {
    /// Display name as in the results table.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::SyntaxError => "SyntaxError",
            Status::Exception => "Exception",
            Status::Timeout => "Timeout",
            Status::PromptTooLong => "prompt too long",
            Status::Skipped => "skipped",
            Status::NoCompletion => "no completion",
            Status::HarnessError => "harness error",
        }
    }
}

/// Limits of one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecLimits {
    /// Wall-clock limit of the program run.
    #[serde(with = "seconds")]
    pub run: Duration,
    /// Wall-clock limit of the compilation.
    #[serde(with = "seconds")]
    pub compile: Duration,
    /// One budget for compiling and running together, on top of the two (MultiPL-E's Go:
    /// `go test` builds and runs under one 30 s limit); `None` for none.
    #[serde(default, with = "optional_seconds")]
    pub total: Option<Duration>,
}

impl Default for ExecLimits {
    fn default() -> Self {
        Self {
            run: Duration::from_secs(15),
            compile: Duration::from_secs(15),
            total: None,
        }
    }
}

/// Most seconds a time limit may be (a day): more is a mistake, and `1e30` would overflow.
pub const MAX_LIMIT_SECS: f64 = 86_400.0;

impl ExecLimits {
    /// The limits of MultiPL-E's evaluation code (`evaluation/src/eval_*.py` of
    /// nuprl/MultiPL-E, whose `safe_subprocess.run` defaults to 15 s): Python, C++ and Java
    /// 15 s to compile and 15 s to run; Rust 15 s to compile and 5 s to run; Ruby 5 s; Go one
    /// 30 s budget for `go test` (build and run).
    pub fn multipl_e(language: Language) -> Self {
        let secs = Duration::from_secs;
        match language {
            Language::Python | Language::Cpp | Language::Java => Self::default(),
            Language::Rust | Language::Ruby => Self {
                run: secs(5),
                ..Self::default()
            },
            Language::Go => Self {
                run: secs(30),
                compile: secs(30),
                total: Some(secs(30)),
            },
        }
    }
}

/// Time limits set by flag (`--timeout`, `--compile-timeout`) over MultiPL-E's
/// ([`ExecLimits::multipl_e`]); both `None` keep the benchmark's rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitFlags {
    /// Every language's run limit.
    pub run: Option<Duration>,
    /// Every language's compile limit.
    pub compile: Option<Duration>,
}

impl LimitFlags {
    /// Flags from seconds (command-line values): each finite, above 0, at most
    /// [`MAX_LIMIT_SECS`]; the error names the flag.
    pub fn from_secs(run: Option<f64>, compile: Option<f64>) -> Result<Self, EvalError> {
        let check = |name: &'static str, secs: Option<f64>| match secs {
            None => Ok(None),
            Some(secs) if secs.is_finite() && secs > 0.0 && secs <= MAX_LIMIT_SECS => {
                Ok(Some(Duration::from_secs_f64(secs)))
            }
            Some(secs) => Err(EvalError::InvalidSetting {
                name,
                value: secs.to_string(),
                reason: format!("must be a number of seconds above 0 and at most {MAX_LIMIT_SECS}"),
            }),
        };
        Ok(Self {
            run: check("--timeout", run)?,
            compile: check("--compile-timeout", compile)?,
        })
    }

    /// `language`'s limits: MultiPL-E's, with what a flag sets replaced (a flag also lifts
    /// Go's shared budget).
    pub fn limits(&self, language: Language) -> ExecLimits {
        let mut limits = ExecLimits::multipl_e(language);
        if let Some(run) = self.run {
            limits.run = run;
            limits.total = None;
        }
        if let Some(compile) = self.compile {
            limits.compile = compile;
            limits.total = None;
        }
        limits
    }

    /// Whether the benchmark's rules hold (no flag set).
    pub fn is_multipl_e(&self) -> bool {
        self.run.is_none() && self.compile.is_none()
    }
}

/// A [`Duration`] as seconds (f64) in `results.json`.
mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        from_secs(f64::deserialize(d)?)
    }

    pub(super) fn from_secs<E: serde::de::Error>(secs: f64) -> Result<Duration, E> {
        Duration::try_from_secs_f64(secs).map_err(E::custom)
    }
}

/// An optional [`Duration`] as seconds or `null`.
mod optional_seconds {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(|d| d.as_secs_f64()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(super::seconds::from_secs)
            .transpose()
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

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

/// Prefix of [`TempDir`] names: `multipl-moe-eval-{pid}-{n}-{nanos}`.
const TEMP_PREFIX: &str = "multipl-moe-eval-";

/// Removes the temporary directories that evaluations of processes no longer running left
/// behind (a `kill -9`, or an interrupt while programs ran: drop never ran for them), and
/// returns how many. Directories of running processes, this one included, are left alone.
pub fn remove_stale_temp_dirs() -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(TEMP_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        if pid > 0 && !process_exists(pid) && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether a process with this id exists (it may belong to another user).
fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 sends nothing; it only checks that `pid` can be addressed.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

impl TempDir {
    /// Creates it.
    pub(crate) fn new() -> std::io::Result<Self> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("{TEMP_PREFIX}{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl TempDir {
    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compiles (if needed) and runs `program` with `toolchain` in a fresh temporary directory,
/// inside `sandbox`, with `cache` as the evaluation's shared toolchain cache.
pub fn execute(
    toolchain: &Toolchain,
    sandbox: &Sandbox,
    cache: &Path,
    program: &str,
    limits: ExecLimits,
) -> Outcome {
    let failed = |output: String| Outcome {
        status: Status::HarnessError,
        exit_code: None,
        output,
    };
    let dir = match TempDir::new() {
        Ok(dir) => dir,
        Err(e) => return failed(format!("creating a temporary directory: {e}")),
    };
    let work = dir.path().join("work");
    let file = toolchain.source_file();
    if let Err(e) =
        std::fs::create_dir(&work).and_then(|()| std::fs::write(work.join(file), program))
    {
        return failed(format!("writing {file}: {e}"));
    }
    let env = toolchain.env(cache);
    let mut last = None;
    let start = std::time::Instant::now();
    for step in toolchain.steps(sandbox.limits().memory_bytes) {
        // The shared cache is there for the toolchain's compiler only: a program's own code
        // (every run step) never sees it.
        let mounts = Mounts {
            work: &work,
            cache: (step.compile && toolchain.uses_cache()).then_some(cache),
            readonly: &toolchain.roots,
        };
        let step_limit = if step.compile {
            limits.compile
        } else {
            limits.run
        };
        // What is left of a shared budget (MultiPL-E's Go), if any.
        let limit = limits.total.map_or(step_limit, |total| {
            step_limit.min(total.saturating_sub(start.elapsed()))
        });
        if limit.is_zero() {
            return Outcome {
                status: Status::Timeout,
                exit_code: None,
                output: String::new(),
            };
        }
        let result = match run_step(sandbox, &step.argv, &mounts, &env, dir.path(), limit) {
            Ok(r) => r,
            Err(e) => return failed(format!("starting `{}`: {e}", step.argv.join(" "))),
        };
        if result.sandbox_failed {
            return failed(result.output);
        }
        if result.timed_out {
            return Outcome {
                status: Status::Timeout,
                exit_code: None,
                output: result.output,
            };
        }
        if result.code != Some(0) {
            let status = if step.compile || parse_failure(toolchain.language, &result.output) {
                Status::SyntaxError
            } else {
                Status::Exception
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

/// How many times a step is started when the sandbox itself fails to start.
const SANDBOX_TRIES: usize = 3;

/// Runs one step, starting it again (up to [`SANDBOX_TRIES`] times in all) when the sandbox
/// failed before the program could run (a transient namespace or mount failure is not the
/// completion's fault). The last failure is returned with its output marked as the
/// sandbox's.
fn run_step(
    sandbox: &Sandbox,
    argv: &[String],
    mounts: &Mounts,
    env: &[(String, String)],
    scratch: &Path,
    limit: Duration,
) -> std::io::Result<Ended> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut ended = sandbox.run(argv, mounts, env, scratch, limit)?;
        if !ended.sandbox_failed {
            return Ok(ended);
        }
        if tries == SANDBOX_TRIES {
            ended.output = format!(
                "the sandbox failed to start ({tries} tries): {}",
                ended.output
            );
            return Ok(ended);
        }
        std::thread::sleep(Duration::from_millis(100 * tries as u64));
    }
}

/// Whether a failed run of an interpreted program failed before running.
fn parse_failure(language: Language, output: &str) -> bool {
    match language {
        Language::Python => ["SyntaxError", "IndentationError", "TabError"]
            .iter()
            .any(|e| output.contains(e)),
        Language::Ruby => output.contains("syntax error"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{Status, TEMP_PREFIX, TempDir, remove_stale_temp_dirs};

    /// A program the sandbox cannot start (here: a toolchain program missing inside it) is a
    /// harness error, not the completion's `Exception`. Needs bubblewrap (CI installs it).
    #[test]
    fn a_sandbox_that_cannot_start_is_a_harness_error() {
        use super::super::sandbox::{ResourceLimits, Sandbox};
        use super::super::toolchain::Toolchain;
        use crate::data::corpus::Language;
        let sandbox = Sandbox::bubblewrap(ResourceLimits::default())
            .expect("bubblewrap (`bwrap`) must be installed and usable");
        let toolchain = Toolchain::with_programs(Language::Python, &["/nonexistent/python3"]);
        let cache = TempDir::new().expect("cache dir");
        let outcome = super::execute(
            &toolchain,
            &sandbox,
            cache.path(),
            "print(1)\n",
            super::ExecLimits::default(),
        );
        assert_eq!(outcome.status, Status::HarnessError, "{outcome:?}");
        assert!(
            outcome.output.contains("sandbox failed"),
            "{}",
            outcome.output
        );
    }

    /// results.json spells statuses as MultiPL-E does, and reads the earlier names.
    #[test]
    fn statuses_use_multipl_e_names_and_read_the_old_ones() {
        let json = |s: Status| serde_json::to_string(&s).expect("serialises");
        assert_eq!(json(Status::Ok), "\"OK\"");
        assert_eq!(json(Status::SyntaxError), "\"SyntaxError\"");
        assert_eq!(json(Status::Exception), "\"Exception\"");
        assert_eq!(json(Status::Timeout), "\"Timeout\"");
        for (old, status) in [
            ("ok", Status::Ok),
            ("compile_error", Status::SyntaxError),
            ("runtime_error", Status::Exception),
            ("timeout", Status::Timeout),
            ("prompt_too_long", Status::PromptTooLong),
        ] {
            let read: Status = serde_json::from_str(&format!("\"{old}\"")).expect("reads");
            assert_eq!(read, status, "{old}");
        }
    }

    /// A directory left by a process that has exited is removed; one of a running process
    /// (this one) is kept.
    #[test]
    fn temp_dirs_of_dead_evaluations_are_removed() {
        let mut child = std::process::Command::new("true").spawn().expect("spawns");
        let dead = child.id();
        child.wait().expect("exits");
        let left = std::env::temp_dir().join(format!("{TEMP_PREFIX}{dead}-0-42"));
        std::fs::create_dir_all(left.join("work")).expect("creates");
        let ours = TempDir::new().expect("creates");
        remove_stale_temp_dirs();
        assert!(!left.exists(), "{} is left behind", left.display());
        assert!(
            ours.path().exists(),
            "a running evaluation's directory is kept"
        );
    }
}
