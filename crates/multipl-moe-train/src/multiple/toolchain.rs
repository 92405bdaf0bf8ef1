//! Each language's toolchain as found on this machine: the real programs behind `PATH`
//! (rustup and pyenv put shell shims there that need the caller's home), the install roots a
//! sandbox must mount read-only, and the compile and run steps.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::data::corpus::Language;

/// A language's toolchain, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    /// The language.
    pub language: Language,
    /// Absolute paths of the programs the steps run, in the order [`Toolchain::steps`] uses.
    programs: Vec<String>,
    /// Install roots outside the system directories, mounted read-only in the sandbox.
    pub roots: Vec<PathBuf>,
    /// Java: the jars on the compile and run classpath ([`JAVATUPLES_JAR`]); empty otherwise.
    classpath: Vec<String>,
}

/// Where Debian's `libjavatuples-java` puts the jar that MultiPL-E's Java prompts import
/// (every one starts with `import org.javatuples.*;`, some use `Pair`): MultiPL-E compiles and
/// runs Java with `javatuples-1.2.jar` on the classpath.
pub const JAVATUPLES_JAR: &str = "/usr/share/java/javatuples.jar";

/// The Java classpath MultiPL-E's problems need: `explicit` (`--java-classpath`, jars
/// separated by `:`) or [`JAVATUPLES_JAR`]; the error names the missing jar (and, for the
/// default, the package that installs it): without it every Java problem fails to compile.
fn java_classpath(explicit: Option<&str>) -> Result<Vec<String>, String> {
    if let Some(list) = explicit {
        let jars: Vec<String> = list
            .split(':')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if jars.is_empty() {
            return Err("--java-classpath is empty; java problems are skipped".into());
        }
        if let Some(missing) = jars.iter().find(|j| !Path::new(j).is_file()) {
            return Err(format!(
                "--java-classpath: {missing} is not a file; java problems are skipped"
            ));
        }
        return Ok(jars);
    }
    if Path::new(JAVATUPLES_JAR).is_file() {
        return Ok(vec![JAVATUPLES_JAR.to_string()]);
    }
    Err(format!(
        "{JAVATUPLES_JAR} was not found (Debian: libjavatuples-java; or pass --java-classpath \
         with javatuples-1.2.jar), and MultiPL-E's Java prompts import org.javatuples; java \
         problems are skipped"
    ))
}

/// One step of building and running a program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The command line, run in the program's directory.
    pub argv: Vec<String>,
    /// Compilation (its own time limit; a failure is a compile error) or the run.
    pub compile: bool,
}

/// The first `name` on `PATH` that is a file.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs `program args` on the host and returns its trimmed stdout if it succeeds.
fn ask(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The install root of a program: `/x/bin/tool` (symlinks resolved) gives `/x`.
fn root_of(program: &Path) -> Option<PathBuf> {
    let real = program.canonicalize().ok()?;
    Some(real.parent()?.parent()?.to_path_buf())
}

/// `program` resolved through `PATH` and symlinks, with its install root.
fn resolve(name: &str) -> Option<(String, PathBuf)> {
    let real = which(name)?.canonicalize().ok()?;
    let root = root_of(&real)?;
    Some((real.to_string_lossy().into_owned(), root))
}

/// "`tool` was not found or does not run; <language> problems are skipped".
fn missing(language: Language, tool: &str) -> String {
    format!(
        "`{tool}` was not found or does not run; {} problems are skipped",
        language.name()
    )
}

/// The programs a language's problems run (interpreter, compiler, runtime) and the
/// directories the sandbox must show for them to work.
fn programs_and_roots(language: Language) -> Result<(Vec<String>, Vec<PathBuf>), String> {
    let missing = |tool: &str| missing(language, tool);
    let found = match language {
        Language::Python => {
            let out = ask(
                "python3",
                &[
                    "-c",
                    "import sys; print(sys.executable); print(sys.base_prefix)",
                ],
            )
            .ok_or_else(|| missing("python3"))?;
            let mut lines = out.lines();
            // The real interpreter: a virtual environment's `python3` is a link to it.
            let exe = Path::new(lines.next().unwrap_or_default())
                .canonicalize()
                .map_err(|_| missing("python3"))?;
            let base = PathBuf::from(lines.next().unwrap_or_default());
            let mut roots = vec![base];
            roots.extend(root_of(&exe));
            (vec![exe.to_string_lossy().into_owned()], roots)
        }
        Language::Rust => {
            let sysroot = PathBuf::from(
                ask("rustc", &["--print", "sysroot"]).ok_or_else(|| missing("rustc"))?,
            );
            let rustc = sysroot.join("bin").join("rustc");
            if !rustc.is_file() {
                return Err(missing("rustc"));
            }
            (vec![rustc.to_string_lossy().into_owned()], vec![sysroot])
        }
        Language::Cpp => {
            let (gpp, root) = resolve("g++").ok_or_else(|| missing("g++"))?;
            (vec![gpp], vec![root])
        }
        Language::Java => {
            let (javac, root) = resolve("javac").ok_or_else(|| missing("javac"))?;
            let (java, jre) = resolve("java").ok_or_else(|| missing("java"))?;
            (vec![javac, java], vec![root, jre])
        }
        Language::Go => {
            let goroot = PathBuf::from(ask("go", &["env", "GOROOT"]).ok_or_else(|| missing("go"))?);
            let go = goroot.join("bin").join("go");
            if !go.is_file() {
                return Err(missing("go"));
            }
            (vec![go.to_string_lossy().into_owned()], vec![goroot])
        }
        Language::Ruby => {
            let ruby =
                ask("ruby", &["-e", "print RbConfig.ruby"]).ok_or_else(|| missing("ruby"))?;
            let root = root_of(Path::new(&ruby)).ok_or_else(|| missing("ruby"))?;
            (vec![ruby], vec![root])
        }
    };
    Ok(found)
}

impl Toolchain {
    /// Finds `language`'s toolchain; the error names the missing tool.
    pub fn find(language: Language) -> Result<Self, String> {
        Self::find_with(language, None)
    }

    /// [`Self::find`] with Java's classpath given (`--java-classpath`, jars separated by
    /// `:`; each jar's directory is mounted read-only in the sandbox) instead of
    /// [`JAVATUPLES_JAR`].
    pub fn find_with(language: Language, java_classpath: Option<&str>) -> Result<Self, String> {
        let missing = |tool: &str| missing(language, tool);
        let (programs, mut roots) = programs_and_roots(language)?;
        let classpath = match language {
            Language::Java => self::java_classpath(java_classpath)?,
            _ => Vec::new(),
        };
        for jar in &classpath {
            let dir = Path::new(jar)
                .canonicalize()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf));
            if let Some(dir) = dir.filter(|d| !d.starts_with("/usr") && !roots.contains(d)) {
                roots.push(dir);
            }
        }
        let toolchain = Self {
            language,
            programs,
            roots,
            classpath,
        };
        // The programs must run (a `java` without a JDK, a broken install).
        for program in &toolchain.programs {
            let version = if language == Language::Java {
                "-version"
            } else {
                "--version"
            };
            let arg = if language == Language::Go {
                "version"
            } else {
                version
            };
            if ask(program, &[arg]).is_none() {
                return Err(missing(program));
            }
        }
        Ok(toolchain)
    }

    /// A toolchain of `language` running `programs` (tests: a program the sandbox cannot
    /// start).
    #[cfg(test)]
    pub(crate) fn with_programs(language: Language, programs: &[&str]) -> Self {
        Self {
            language,
            programs: programs.iter().map(|p| p.to_string()).collect(),
            roots: Vec::new(),
            classpath: Vec::new(),
        }
    }

    /// The program's source file name.
    pub fn source_file(&self) -> &'static str {
        match self.language {
            Language::Python => "prog.py",
            Language::Rust => "prog.rs",
            Language::Cpp => "prog.cpp",
            Language::Java => "Problem.java",
            Language::Go => "prog_test.go",
            Language::Ruby => "prog.rb",
        }
    }

    /// The steps that compile (compiled languages, Go included) and run the source file, for
    /// programs limited to `memory_bytes` of data (`RLIMIT_DATA`), with the compiler flags of
    /// MultiPL-E's evaluation code (`evaluation/src/eval_*.py`): `rustc` with no edition
    /// (2015), `g++ -std=c++17`, `javac -encoding UTF8` with javatuples on the classpath,
    /// `java -ea`, `go test` (here built, then run: one budget covers both,
    /// [`super::exec::ExecLimits::multipl_e`]).
    ///
    /// The JVM sizes its heap from the host's RAM, not from the limit: under 256 MiB it could
    /// not start on a 24 GiB host, and under the default 4 GiB it fails on hosts with more
    /// than ~250 GiB. `javac` and `java` get a maximum heap of half the limit (`-Xmx`) and the
    /// serial collector (no per-core GC threads); MultiPL-E's container gives them a host's
    /// defaults instead, which no program of the benchmark comes near.
    pub fn steps(&self, memory_bytes: u64) -> Vec<Step> {
        let argv = |parts: &[&str]| parts.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let program = |i: usize| self.programs.get(i).map_or("", String::as_str);
        let compile = |parts: &[&str]| Step {
            argv: argv(parts),
            compile: true,
        };
        let run = |parts: &[&str]| Step {
            argv: argv(parts),
            compile: false,
        };
        match self.language {
            Language::Python => vec![run(&[program(0), "prog.py"])],
            // MultiPL-E: `rustc prog.rs -o prog`, so edition 2015 (`-A warnings` only keeps
            // warnings out of the recorded output; a crate's own lint attributes override it).
            Language::Rust => vec![
                compile(&[program(0), "-A", "warnings", "-o", "prog", "prog.rs"]),
                run(&["./prog"]),
            ],
            Language::Cpp => vec![
                compile(&[program(0), "-std=c++17", "-o", "prog", "prog.cpp"]),
                run(&["./prog"]),
            ],
            Language::Java => {
                let jars = self.classpath.join(":");
                let run_classpath = format!(".:{jars}");
                let heap = format!("-Xmx{}m", (memory_bytes >> 20) / 2);
                let javac_heap = format!("-J{heap}");
                vec![
                    compile(&[
                        program(0),
                        "-encoding",
                        "UTF8",
                        "-J-XX:-UsePerfData",
                        &javac_heap,
                        "-J-XX:+UseSerialGC",
                        "-cp",
                        &jars,
                        "Problem.java",
                    ]),
                    run(&[
                        program(1),
                        "-XX:-UsePerfData",
                        &heap,
                        "-XX:+UseSerialGC",
                        "-ea",
                        "-cp",
                        &run_classpath,
                        "Problem",
                    ]),
                ]
            }
            Language::Go => vec![
                compile(&[program(0), "test", "-c", "-o", "prog.test", "prog_test.go"]),
                run(&["./prog.test"]),
            ],
            Language::Ruby => vec![run(&[program(0), "prog.rb"])],
        }
    }

    /// Whether the toolchain keeps anything in the evaluation's shared cache (Go's build
    /// cache); only its compile steps see the cache.
    pub fn uses_cache(&self) -> bool {
        matches!(self.language, Language::Go)
    }

    /// Environment variables of every step, given the evaluation's cache directory: Go's
    /// build cache and module settings live there, shared by all problems.
    pub fn env(&self, cache: &Path) -> Vec<(String, String)> {
        let path = |sub: &str| cache.join(sub).to_string_lossy().into_owned();
        match self.language {
            Language::Go => [
                ("GOCACHE", path("go-build")),
                ("GOPATH", path("go-path")),
                ("GO111MODULE", "off".into()),
                ("GOTOOLCHAIN", "local".into()),
                ("GOPROXY", "off".into()),
                ("GOFLAGS", "-buildvcs=false".into()),
                ("GOTELEMETRY", "off".into()),
                ("CGO_ENABLED", "0".into()),
                (
                    "GOROOT",
                    self.roots
                        .first()
                        .map_or(String::new(), |r| r.to_string_lossy().into_owned()),
                ),
            ]
            .map(|(k, v)| (k.to_string(), v))
            .to_vec(),
            _ => Vec::new(),
        }
    }

    /// A program that builds what most problems of the language import, compiled once into
    /// the shared cache before the first problem; `None` where nothing is cached.
    pub fn warm_up_program(&self) -> Option<&'static str> {
        match self.language {
            Language::Go => Some(
                "package main\n\nimport (\n\t\"fmt\"\n\t\"math\"\n\t\"reflect\"\n\t\"sort\"\n\t\
                 \"strconv\"\n\t\"strings\"\n\t\"testing\"\n)\n\nfunc TestWarm(t *testing.T) {\n\t\
                 _ = fmt.Sprint(math.Pi, strconv.Itoa(1), strings.ToUpper(\"a\"))\n\t\
                 _ = reflect.DeepEqual(1, 1)\n\tsort.Ints([]int{2, 1})\n}\n",
            ),
            _ => None,
        }
    }
}
