//! Running one command in the [`Sandbox`] under a wall-clock limit that holds whatever the
//! program does with its children or its output.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::sandbox::{Mounts, Sandbox, SandboxKind};

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Exit code, when it exited (not killed by a signal or the limit).
    pub code: Option<i32>,
    /// The limit passed and everything was killed.
    pub timed_out: bool,
    /// The start of its stdout and stderr (interleaved as written).
    pub output: String,
    /// Under bubblewrap: the sandbox failed before the program ran or could report an exit
    /// (bwrap ended without its `exit-code` status line and not by the limit), so the
    /// program is not to blame.
    pub sandbox_failed: bool,
}

/// Most bytes of output kept.
const OUTPUT_CAP: usize = 4096;

/// How long to wait for the kernel to finish killing a PID namespace.
const TEARDOWN: Duration = Duration::from_secs(2);

impl Sandbox {
    /// Runs `argv` (see [`Sandbox::command`]) and waits at most `limit`. Its stdout and stderr
    /// go to one pipe that is drained as the program writes, as MultiPL-E's `safe_subprocess`
    /// does: the first [`OUTPUT_CAP`] bytes are kept, the rest is read and dropped, so a
    /// program that prints without end runs into the time limit (a timeout), and one that
    /// prints hundreds of MiB and then passes passes. The pipe is read without blocking, so
    /// nothing waits for a descendant to close it. When the direct child ends or the limit
    /// passes its process group is killed; under bubblewrap that is bwrap, whose death kills
    /// the PID namespace's init and with it every descendant, and this returns once that init
    /// is gone.
    pub fn run(
        &self,
        argv: &[String],
        mounts: &Mounts,
        env: &[(String, String)],
        scratch: &Path,
        limit: Duration,
    ) -> std::io::Result<Ended> {
        let status_file = scratch.join("bwrap-status");
        let status = std::fs::File::create(&status_file)?;
        #[cfg(unix)]
        let status_fd = {
            use std::os::fd::AsRawFd;
            Some(status.as_raw_fd())
        };
        #[cfg(not(unix))]
        let status_fd = None;
        let (mut reader, writer) = std::io::pipe()?;
        set_nonblocking(&reader)?;
        // bwrap's child waits on this pipe until the process limit is set (`release`).
        let (block_reader, block_writer) = std::io::pipe()?;
        #[cfg(unix)]
        let block_fd = {
            use std::os::fd::AsRawFd;
            Some(block_reader.as_raw_fd()).filter(|_| self.kind() == SandboxKind::Bubblewrap)
        };
        #[cfg(not(unix))]
        let block_fd = None;
        let mut command = self.command(argv, mounts, env, status_fd, block_fd);
        command
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer);
        let mut child = command.spawn()?;
        // The parent's copies of the pipes' child ends go with the command.
        drop(command);
        drop(status);
        drop(block_reader);
        let mut output = Output::default();
        let start = Instant::now();
        let mut released = None;
        if block_fd.is_some() {
            released = Some(self.release(&status_file, &mut child, block_writer, limit));
        } else {
            drop(block_writer);
        }
        let (code, timed_out) = loop {
            let read = output.drain(&mut reader);
            if let Some(status) = child.try_wait()? {
                break (status.code(), false);
            }
            if start.elapsed() >= limit {
                break (None, true);
            }
            if read == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        kill_group(&mut child);
        let _ = child.wait();
        let status = BwrapStatus::read(&status_file);
        if let Some(init) = status.child_pid {
            wait_gone(init, TEARDOWN);
        }
        output.drain(&mut reader);
        let mut output = String::from_utf8_lossy(&output.kept).into_owned();
        let limit_failed = match released {
            Some(Err(e)) => {
                output = format!("setting the process limit of the sandbox failed: {e}\n{output}");
                true
            }
            _ => false,
        };
        Ok(Ended {
            code,
            timed_out,
            output,
            sandbox_failed: self.kind() == SandboxKind::Bubblewrap
                && (limit_failed || !timed_out && code != Some(0) && status.exit_code.is_none()),
        })
    }

    /// Lets bwrap's child start the program once its process limit is set: waits (at most
    /// `limit`) for the `child-pid` bwrap writes to its status file as soon as the sandbox's
    /// namespaces exist, sets that process's `RLIMIT_NPROC` ([`Sandbox::nproc_limit`]), then
    /// writes to `block` (bwrap's `--block-fd`). If bwrap ends first (it could not make the
    /// sandbox), or the limit cannot be set, bwrap is killed rather than released: the
    /// program never runs without its limit.
    fn release(
        &self,
        status_file: &Path,
        child: &mut std::process::Child,
        mut block: std::io::PipeWriter,
        limit: Duration,
    ) -> std::io::Result<()> {
        let start = Instant::now();
        let pid = loop {
            if let Some(pid) = BwrapStatus::read(status_file).child_pid {
                break pid;
            }
            if child.try_wait()?.is_some() {
                // bwrap ended before making the sandbox; its status says so.
                return Ok(());
            }
            if start.elapsed() >= limit {
                kill_group(child);
                return Err(std::io::Error::other(
                    "bwrap did not report its child within the time limit",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        #[cfg(unix)]
        if let Err(e) = self.nproc_limit(pid) {
            kill_group(child);
            return Err(e);
        }
        use std::io::Write;
        block.write_all(b"x")
    }
}

/// The output of a run: its first [`OUTPUT_CAP`] bytes.
#[derive(Default)]
struct Output {
    kept: Vec<u8>,
}

impl Output {
    /// Reads what the pipe holds now (until it would block or ends), keeping up to the cap;
    /// returns the bytes read.
    fn drain(&mut self, reader: &mut std::io::PipeReader) -> usize {
        let mut buf = [0u8; 1 << 16];
        let mut total = 0;
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return total,
                Ok(n) => {
                    total += n;
                    let room = OUTPUT_CAP.saturating_sub(self.kept.len());
                    self.kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return total,
            }
        }
    }
}

/// Makes reads of the pipe return at once when it is empty.
fn set_nonblocking(reader: &std::io::PipeReader) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let fd = reader.as_raw_fd();
        // SAFETY: fcntl on a descriptor this process owns; F_GETFL/F_SETFL touch no memory.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
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

/// What bwrap wrote to its `--json-status-fd`.
#[derive(Debug, Default, PartialEq, Eq)]
struct BwrapStatus {
    /// The PID (outside) of the namespace's init, from the `{"child-pid": N, ...}` line.
    child_pid: Option<u32>,
    /// The program's exit status, from the `{"exit-code": N}` line bwrap writes when the
    /// program ends (128 + the signal when a signal killed it).
    exit_code: Option<i64>,
}

impl BwrapStatus {
    /// Reads the status file; a missing or unreadable file gives the empty status.
    fn read(status_file: &Path) -> Self {
        let text = std::fs::read_to_string(status_file).unwrap_or_default();
        Self::parse(&text)
    }

    /// Parses bwrap's JSON status lines, skipping lines that are not JSON.
    fn parse(text: &str) -> Self {
        let mut status = Self::default();
        for value in text
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        {
            if let Some(pid) = value.get("child-pid").and_then(serde_json::Value::as_u64) {
                status.child_pid = u32::try_from(pid).ok();
            }
            if let Some(code) = value.get("exit-code").and_then(serde_json::Value::as_i64) {
                status.exit_code = Some(code);
            }
        }
        status
    }
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

#[cfg(test)]
mod tests {
    use super::BwrapStatus;

    #[test]
    fn bwrap_status_lines_give_the_init_and_the_exit_code() {
        // As bubblewrap 0.8 writes them: the namespaces line, then the exit line.
        let ran = "{ \"child-pid\": 9752, \"pid-namespace\": 4026532181 }\n{ \"exit-code\": 3 }\n";
        assert_eq!(
            BwrapStatus::parse(ran),
            BwrapStatus {
                child_pid: Some(9752),
                exit_code: Some(3)
            }
        );
        // A mount that fails: the child was created but the program never ran.
        let failed = "{ \"child-pid\": 9735, \"pid-namespace\": 4026532181 }";
        assert_eq!(BwrapStatus::parse(failed).exit_code, None);
        assert_eq!(BwrapStatus::parse("not json\n"), BwrapStatus::default());
    }
}
