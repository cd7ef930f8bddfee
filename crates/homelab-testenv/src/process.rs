//! Child processes that cannot outlive the process that started them, and the scratch directory
//! they run in.
//!
//! Linux sends `PR_SET_PDEATHSIG` when the *thread* that forked a child exits, not the process.
//! Tests run on short-lived threads (every `#[tokio::test]` has its own runtime), so all children
//! are forked by one dedicated thread that lives as long as the process. When the process ends —
//! normally, by panic, or by `SIGKILL` — that thread ends with it and the kernel kills every child.
//! [`ChildProcess`] also kills its child when dropped, and [`RunDir`] removes its directory when
//! dropped; directories left by processes that were killed are removed by the next [`RunDir::create`].

use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::Error;

struct SpawnRequest {
    command: Command,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// The sending half of the spawner thread's queue, or why the thread could not be started.
static SPAWNER: OnceLock<Result<mpsc::Sender<SpawnRequest>, String>> = OnceLock::new();

fn spawner() -> Result<&'static mpsc::Sender<SpawnRequest>, Error> {
    let spawner = SPAWNER.get_or_init(|| {
        let (sender, requests) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("homelab-testenv-spawner".into())
            // The sender lives in a static, so this loop, and the thread, last until the process exits.
            .spawn(move || {
                for SpawnRequest { mut command, reply } in requests {
                    set_parent_death_signal(&mut command);
                    // If the requester has given up waiting, nobody would ever stop the child.
                    if let Err(Ok(mut orphan)) = reply.send(command.spawn()) {
                        let _ = orphan.kill();
                        let _ = orphan.wait();
                    }
                }
            })
            .map(|_| sender)
            .map_err(|e| e.to_string())
    });
    spawner.as_ref().map_err(|reason| Error::Spawn {
        what: "the spawner thread".into(),
        reason: reason.clone(),
    })
}

/// Makes the kernel send `SIGKILL` to the child when the thread that forked it exits.
///
/// This is the crate's only unsafe code: `pre_exec` is unsafe because the hook runs between
/// `fork` and `exec`, where only async-signal-safe functions may be called. The hook calls
/// `prctl(2)` and `getppid(2)`, both async-signal-safe, and does not allocate.
#[allow(unsafe_code)]
fn set_parent_death_signal(command: &mut Command) {
    use std::os::unix::process::CommandExt;

    let parent = std::process::id();
    // SAFETY: see the function's documentation; the closure only issues two system calls.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // If the parent died between fork and prctl, no signal will ever come: give up now.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// A running child process whose output goes to a log file. Killed when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    log_path: PathBuf,
    child: Mutex<Child>,
}

impl ChildProcess {
    /// Starts `program` with `args` on the spawner thread, with stdin closed and stdout and stderr
    /// appended to `log_path`.
    pub async fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log_path: &Path,
    ) -> Result<Self, Error> {
        Self::spawn_with_env(name, program, args, &[], log_path).await
    }

    /// Like [`ChildProcess::spawn`], with `env` added to the inherited environment.
    pub async fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log_path: &Path,
    ) -> Result<Self, Error> {
        let spawn_error = |reason: String| Error::Spawn {
            what: format!("{name} ({})", program.display()),
            reason,
        };
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| spawn_error(format!("cannot open {}: {e}", log_path.display())))?;
        let log_for_stderr = log.try_clone().map_err(|e| spawn_error(e.to_string()))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr);

        let (reply, response) = oneshot::channel();
        spawner()?
            .send(SpawnRequest { command, reply })
            .map_err(|_| spawn_error("the spawner thread has stopped".into()))?;
        let child = response
            .await
            .map_err(|_| spawn_error("the spawner thread dropped the request".into()))?
            .map_err(|e| spawn_error(e.to_string()))?;
        tracing::debug!(name, pid = child.id(), log = %log_path.display(), "started");
        Ok(Self {
            name: name.to_owned(),
            log_path: log_path.to_owned(),
            child: Mutex::new(child),
        })
    }

    /// The name given at start, e.g. `etcd`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The exit status, if the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// An error saying that this process exited, with the end of its log.
    pub(crate) fn exited_error(&self, status: ExitStatus) -> Error {
        Error::Exited {
            name: self.name.clone(),
            status: status.to_string(),
            log_path: self.log_path.clone(),
            log_tail: self.log_tail(30),
        }
    }

    /// An error saying that `what` did not happen within `after`, with the end of this log.
    pub(crate) fn timeout_error(&self, what: impl Into<String>, after: Duration) -> Error {
        Error::Timeout {
            what: what.into(),
            after,
            log: format!(
                "; the end of {}:\n{}",
                self.log_path.display(),
                self.log_tail(30)
            ),
        }
    }

    /// Kills the process and waits for it.
    pub fn kill(&self) {
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a file, or a note that it could not be read.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> Result<u16, Error> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| Error::Io {
            what: "finding a free loopback port".into(),
            source: e,
        })
}

/// Waits until something accepts connections on the loopback `port`, failing early if `process`
/// exits.
pub(crate) async fn wait_for_port(
    process: &ChildProcess,
    port: u16,
    timeout: Duration,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = process.exit_status() {
            return Err(process.exited_error(status));
        }
        let connect = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port));
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(process.timeout_error(
                format!("{} to listen on 127.0.0.1:{port}", process.name),
                timeout,
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A scratch directory for one control plane, removed when dropped.
///
/// Lives under `$TMPDIR/homelab-testenv/<pid>-<random>`, so that directories of processes that
/// were killed before they could clean up can be recognised and removed later.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    keep: bool,
}

impl RunDir {
    /// Creates a fresh directory, first removing those left by processes that no longer run.
    pub fn create() -> Result<Self, Error> {
        let root = std::env::temp_dir().join("homelab-testenv");
        remove_stale(&root);
        let path = root.join(format!(
            "{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::create_dir_all(&path).map_err(|e| Error::Io {
            what: format!("creating {}", path.display()),
            source: e,
        })?;
        Ok(Self { path, keep: false })
    }

    /// Whether to leave the directory in place when dropped (it is then removed by a later
    /// [`RunDir::create`] once this process has exited).
    pub fn keep(&mut self, keep: bool) {
        self.keep = keep;
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Err(e) = fs::remove_dir_all(&self.path) {
            tracing::warn!(dir = %self.path.display(), "could not remove: {e}");
        }
    }
}

fn remove_stale(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs `hack/<script>` with `args` and `env` (building or finding cached what it makes; its
/// progress shows on stderr) and returns the path it prints on its last stdout line.
pub(crate) async fn run_build_script(
    script: &str,
    args: &[&str],
    env: &[(&str, &Path)],
) -> Result<PathBuf, Error> {
    let script = crate::repo_root().join("hack").join(script);
    let failed = |reason: String| Error::Node {
        what: format!("running {}", script.display()),
        reason,
    };
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        return Err(failed(format!(
            "{}; its output above says why",
            output.status
        )));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    Ok(PathBuf::from(
        stdout.lines().last().unwrap_or_default().trim(),
    ))
}
