//! The sandbox every program of an evaluation runs in: bubblewrap (`bwrap`) with
//!
//! - a private mount view: the system directories (`/usr`, `/bin`, `/lib*`, a few files of
//!   `/etc`) and the toolchains' install roots read-only, the program's own directory
//!   writable, the evaluation's toolchain cache writable during a compile step of a
//!   toolchain that uses it (Go) and absent otherwise, nothing else (the caller's home,
//!   `/tmp`, the project are not there);
//! - a fresh PID namespace whose init dies with bwrap (`--die-with-parent`), so that killing
//!   bwrap, or the program's main process ending, ends *every* descendant, `setsid` daemons
//!   included;
//! - no network, IPC or UTS sharing (`--unshare-all`), a new session (no terminal);
//! - only the environment the harness gives (`--clearenv`);
//! - resource limits set before bwrap starts and inherited by everything inside:
//!   `RLIMIT_DATA` (memory), `RLIMIT_FSIZE` (largest file written; output goes to a pipe) and
//!   no core dumps; `RLIMIT_NPROC` (processes and threads) is set on the sandbox's init once
//!   its user namespace exists (bwrap's `--block-fd` holds the program until then;
//!   `prlimit(2)` from the harness), so the kernel counts only the sandbox's processes (Linux
//!   ≥ 5.14 counts them per user namespace; set before bwrap, every process the user runs
//!   elsewhere would count, and with many of them bwrap could not even start). The kernel
//!   does not apply it to root.
//!
//! Without bubblewrap the harness refuses to run unless the caller asks for
//! [`Sandbox::unsafe_none`], which keeps only the limits, the scrubbed environment and a
//! process group.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::error::EvalError;

/// Which sandbox ran the programs, as recorded in `results.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxKind {
    /// bubblewrap: private mounts, PID and network namespaces.
    Bubblewrap,
    /// No isolation (`--unsafe-no-sandbox`): the programs run with the caller's permissions.
    None,
}

/// Resource limits of every process a program starts (`setrlimit`, inherited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceLimits {
    /// `RLIMIT_DATA`: heap and private writable mappings, in bytes.
    pub memory_bytes: u64,
    /// `RLIMIT_NPROC`: processes and threads, counted in the sandbox's user namespace (its
    /// own processes; with `--unsafe-no-sandbox`, every process of the user); not enforced
    /// for root.
    pub processes: u64,
    /// `RLIMIT_FSIZE`: largest file a process may write, in bytes (output goes to a pipe).
    pub file_size_bytes: u64,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 4 << 30,
            processes: 1024,
            file_size_bytes: 256 << 20,
        }
    }
}

impl ResourceLimits {
    /// Limits from command-line values: memory at least 64 MiB, at least 16 processes, files
    /// at least 1 MiB; the error names the flag.
    pub fn new(memory_mib: u64, processes: u64, file_size_mib: u64) -> Result<Self, EvalError> {
        let mib = |name: &'static str, value: u64, least: u64| {
            value
                .checked_mul(1 << 20)
                .filter(|_| value >= least)
                .ok_or_else(|| EvalError::InvalidSetting {
                    name,
                    value: value.to_string(),
                    reason: format!("must be at least {least} MiB and fit in 64 bits of bytes"),
                })
        };
        if processes < 16 {
            return Err(EvalError::InvalidSetting {
                name: "--max-processes",
                value: processes.to_string(),
                reason: "must be at least 16 (compilers and runtimes start threads)".into(),
            });
        }
        Ok(Self {
            memory_bytes: mib("--memory-mib", memory_mib, 64)?,
            processes,
            file_size_bytes: mib("--file-size-mib", file_size_mib, 1)?,
        })
    }
}

/// The directories a program's command sees besides the system ones.
#[derive(Debug, Clone, Copy)]
pub struct Mounts<'a> {
    /// The program's own directory: writable, the working directory, `HOME` and `TMPDIR`.
    pub work: &'a Path,
    /// The evaluation's toolchain cache (e.g. Go's build cache), shared by all programs of
    /// the evaluation: writable, and mounted only for the compile steps of a toolchain that
    /// uses it (never while a program's own code runs, so that no completion can leave
    /// anything there for the programs after it).
    pub cache: Option<&'a Path>,
    /// Toolchain install roots outside `/usr` (rustup's sysroot, a pyenv Python): read-only.
    pub readonly: &'a [PathBuf],
}

/// How programs are isolated; see the module documentation.
#[derive(Debug, Clone)]
pub struct Sandbox {
    bwrap: Option<PathBuf>,
    limits: ResourceLimits,
}

/// System paths mounted read-only (symlinks such as `/bin -> usr/bin` are recreated).
const SYSTEM: [&str; 7] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Files of `/etc` that toolchains read (dynamic linker, users, time zone); everything else
/// of `/etc` (`shadow`, ...) stays out. Directories named `java*` are added (the JDK's
/// `conf` links there).
const ETC: [&str; 9] = [
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "passwd",
    "group",
    "nsswitch.conf",
    "localtime",
    "alternatives",
    "ssl",
];

impl Sandbox {
    /// bubblewrap from `PATH`, after a self-test (it must run `true` with every option the
    /// harness uses); the error says why it is unusable.
    pub fn bubblewrap(limits: ResourceLimits) -> Result<Self, EvalError> {
        let bwrap = super::toolchain::which("bwrap").ok_or_else(|| EvalError::NoSandbox {
            reason: "`bwrap` is not on PATH".into(),
        })?;
        let sandbox = Self {
            bwrap: Some(bwrap),
            limits,
        };
        let dir =
            super::exec::TempDir::new().map_err(|e| EvalError::io(std::env::temp_dir(), e))?;
        let mounts = Mounts {
            work: dir.path(),
            cache: None,
            readonly: &[],
        };
        let output = sandbox
            .command(&["true".to_string()], &mounts, &[], None, None)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| EvalError::NoSandbox {
                reason: format!("starting bwrap: {e}"),
            })?;
        if !output.status.success() {
            return Err(EvalError::NoSandbox {
                reason: format!(
                    "the bwrap self-test failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            });
        }
        Ok(sandbox)
    }

    /// Sets `RLIMIT_NPROC` of the process `pid` (the sandbox's init, in its own user
    /// namespace, before it starts the program) to the limit, never above the harness's own
    /// hard limit; the program and its descendants inherit it.
    #[cfg(unix)]
    pub(crate) fn nproc_limit(&self, pid: u32) -> std::io::Result<()> {
        let mut own = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `getrlimit` writes the struct it is given and nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut own) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = (self.limits.processes as libc::rlim_t).min(own.rlim_max);
        let limit = libc::rlimit {
            rlim_cur: n,
            rlim_max: n,
        };
        let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
        // SAFETY: `prlimit` reads `limit` and writes nothing (no old-limit pointer).
        if unsafe { libc::prlimit(pid, libc::RLIMIT_NPROC, &limit, std::ptr::null_mut()) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// No isolation: only the limits, the scrubbed environment and a process group. For
    /// `--unsafe-no-sandbox`.
    pub fn unsafe_none(limits: ResourceLimits) -> Self {
        Self {
            bwrap: None,
            limits,
        }
    }

    /// Which sandbox this is.
    pub fn kind(&self) -> SandboxKind {
        if self.bwrap.is_some() {
            SandboxKind::Bubblewrap
        } else {
            SandboxKind::None
        }
    }

    /// The resource limits.
    pub fn limits(&self) -> ResourceLimits {
        self.limits
    }

    /// A command that runs `argv` in `mounts.work` with exactly the environment `PATH`,
    /// `HOME`, `TMPDIR`, `LANG` plus `env`, in its own process group, under the limits. Under
    /// bubblewrap, `status_fd` (open until the command is spawned) receives bwrap's JSON
    /// status lines, which name the PID namespace's init.
    pub(crate) fn command(
        &self,
        argv: &[String],
        mounts: &Mounts,
        env: &[(String, String)],
        status_fd: Option<i32>,
        block_fd: Option<i32>,
    ) -> Command {
        let work = mounts.work.to_string_lossy().into_owned();
        let mut vars: Vec<(String, String)> = vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), work.clone()),
            ("TMPDIR".into(), work.clone()),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        vars.extend(env.iter().cloned());
        let mut command = match &self.bwrap {
            Some(bwrap) => {
                let mut c = Command::new(bwrap);
                c.args(bwrap_args(mounts, &vars));
                if status_fd.is_some() {
                    c.args(["--json-status-fd", &STATUS_FD.to_string()]);
                }
                if block_fd.is_some() {
                    c.args(["--block-fd", &BLOCK_FD.to_string()]);
                }
                c.arg("--").args(argv);
                c
            }
            None => {
                let mut c = Command::new(argv.first().map_or("", String::as_str));
                c.args(argv.iter().skip(1)).env_clear().envs(vars);
                c
            }
        };
        command.current_dir(mounts.work);
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            let limits = ResourceLimits {
                // Under bubblewrap the process limit is set on the sandbox's init once its
                // user namespace exists ([`Self::nproc_limit`]), not on bwrap.
                processes: match self.bwrap {
                    Some(_) => u64::MAX,
                    None => self.limits.processes,
                },
                ..self.limits
            };
            let status_fd = status_fd.filter(|_| self.bwrap.is_some());
            let block_fd = block_fd.filter(|_| self.bwrap.is_some());
            command.process_group(0);
            // SAFETY: the closure only calls `dup2`, `fcntl` and `setrlimit`, which are
            // async-signal-safe, and touches no memory shared with the parent.
            unsafe {
                command.pre_exec(move || {
                    for (fd, target) in [(status_fd, STATUS_FD), (block_fd, BLOCK_FD)] {
                        let Some(fd) = fd else { continue };
                        // `dup2` onto itself keeps close-on-exec set: clear it instead.
                        let kept = if fd == target {
                            libc::fcntl(fd, libc::F_SETFD, 0)
                        } else {
                            libc::dup2(fd, target)
                        };
                        if kept < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    set_limits(limits)
                });
            }
        }
        command
    }
}

/// The descriptor bwrap writes its JSON status to.
const STATUS_FD: i32 = 3;
/// The descriptor bwrap's child waits on (`--block-fd`) before it starts the program.
const BLOCK_FD: i32 = 4;

/// bubblewrap's options for `mounts` and the environment `vars`.
fn bwrap_args(mounts: &Mounts, vars: &[(String, String)]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
    ]
    .map(String::from)
    .to_vec();
    let mut ro = |path: &Path| {
        let p = path.to_string_lossy().into_owned();
        match std::fs::read_link(path) {
            Ok(target) => args.extend(["--symlink".into(), target.to_string_lossy().into(), p]),
            Err(_) if path.exists() => args.extend(["--ro-bind".into(), p.clone(), p]),
            Err(_) => {}
        }
    };
    for dir in SYSTEM {
        ro(Path::new(dir));
    }
    for name in ETC {
        ro(&Path::new("/etc").join(name));
    }
    if let Ok(entries) = std::fs::read_dir("/etc") {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("java") {
                ro(&entry.path());
            }
        }
    }
    for root in mounts.readonly {
        // `/usr` is mounted already; `/` (a tool in a non-merged `/bin`) would undo the view.
        if !root.starts_with("/usr") && root.parent().is_some() {
            ro(root);
        }
    }
    for dir in mounts.cache.into_iter().chain([mounts.work]) {
        let d = dir.to_string_lossy().into_owned();
        args.extend(["--bind".into(), d.clone(), d]);
    }
    args.extend(["--chdir".into(), mounts.work.to_string_lossy().into()]);
    for (key, value) in vars {
        args.extend(["--setenv".into(), key.clone(), value.clone()]);
    }
    // The sandbox's root (a tmpfs holding the mount points) becomes read-only too.
    args.extend(["--remount-ro".into(), "/".into()]);
    args
}

#[cfg(unix)]
fn set_limits(limits: ResourceLimits) -> std::io::Result<()> {
    let set = |resource, value: u64| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `getrlimit` writes the struct it is given and nothing else.
        if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Never above the hard limit the caller already has (raising it needs privilege).
        let value = (value as libc::rlim_t).min(limit.rlim_max);
        limit.rlim_cur = value;
        limit.rlim_max = value;
        // SAFETY: `setrlimit` reads the struct it is given and nothing else.
        if unsafe { libc::setrlimit(resource, &limit) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    set(libc::RLIMIT_DATA, limits.memory_bytes)?;
    if limits.processes != u64::MAX {
        set(libc::RLIMIT_NPROC, limits.processes)?;
    }
    set(libc::RLIMIT_FSIZE, limits.file_size_bytes)?;
    set(libc::RLIMIT_CORE, 0)
}
