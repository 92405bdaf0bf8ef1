//! Running one command in the [`Sandbox`] under a wall-clock limit that holds whatever the
//! program does with its children or its output.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::sandbox::{Mounts, Sandbox};

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Exit code, when it exited (not killed by a signal or the limit).
    pub code: Option<i32>,
    /// The limit passed and everything was killed.
    pub timed_out: bool,
    /// The start of its stdout and stderr (interleaved as written).
    pub output: String,
}

/// Most bytes of output kept.
const OUTPUT_CAP: u64 = 4096;

/// How long to wait for the kernel to finish killing a PID namespace.
const TEARDOWN: Duration = Duration::from_secs(2);

impl Sandbox {
    /// Runs `argv` (see [`Sandbox::command`]) and waits at most `limit`. Output goes to a file
    /// in `scratch` (a directory the program cannot see), not to a pipe, so nothing waits for
    /// a descendant to close it. When the direct child ends or the limit passes its process
    /// group is killed; under bubblewrap that is bwrap, whose death kills the PID namespace's
    /// init and with it every descendant, and this returns once that init is gone.
    pub fn run(
        &self,
        argv: &[String],
        mounts: &Mounts,
        env: &[(String, String)],
        scratch: &Path,
        limit: Duration,
    ) -> std::io::Result<Ended> {
        let output_file = scratch.join("output");
        let status_file = scratch.join("bwrap-status");
        let out = std::fs::File::create(&output_file)?;
        let status = std::fs::File::create(&status_file)?;
        #[cfg(unix)]
        let status_fd = {
            use std::os::fd::AsRawFd;
            Some(status.as_raw_fd())
        };
        #[cfg(not(unix))]
        let status_fd = None;
        let mut command = self.command(argv, mounts, env, status_fd);
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let mut child = command.spawn()?;
        drop(status);
        let start = Instant::now();
        let (code, timed_out) = loop {
            if let Some(status) = child.try_wait()? {
                break (status.code(), false);
            }
            if start.elapsed() >= limit {
                break (None, true);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        kill_group(&mut child);
        let _ = child.wait();
        if let Some(init) = namespace_init(&status_file) {
            wait_gone(init, TEARDOWN);
        }
        let mut kept = Vec::new();
        std::fs::File::open(&output_file)?
            .take(OUTPUT_CAP)
            .read_to_end(&mut kept)?;
        Ok(Ended {
            code,
            timed_out,
            output: String::from_utf8_lossy(&kept).into_owned(),
        })
    }
}

/// Kills the child's whole process group.
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: `kill` has no memory-safety preconditions; a negative pid names the
            // process group this child leads (`Sandbox::command` sets `process_group(0)`).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
    let _ = child.kill();
}

/// The PID (outside) of the namespace's init, from bwrap's `{"child-pid": N, ...}` line.
fn namespace_init(status_file: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(status_file).ok()?;
    text.lines().find_map(|line| {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        u32::try_from(value.get("child-pid")?.as_u64()?).ok()
    })
}

/// Waits until process `pid` has exited (gone or a zombie), at most `limit`. An init exits
/// only after every process of its namespace has.
fn wait_gone(pid: u32, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return;
        };
        // The state follows the parenthesised command name.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if matches!(state, Some('Z' | 'X') | None) {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
