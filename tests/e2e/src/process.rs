//! Child processes of the harness: each writes to its own log file, dies with the harness
//! (parent-death signal through `setpriv`), and is stopped gently, then firmly, on drop.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A user to run a program as, for servers that refuse to run as root (PostgreSQL).
#[derive(Debug, Clone)]
pub struct RunAs {
    pub user: String,
}

/// A running component of the local platform.
#[derive(Debug)]
pub struct Service {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Starts `program` with `args`, output appended to `<log_dir>/<name>.log`.
    pub fn spawn<I, S>(
        name: &str,
        program: &Path,
        args: I,
        log_dir: &Path,
        run_as: Option<&RunAs>,
    ) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut command = Command::new("setpriv");
        command.arg("--pdeathsig").arg("KILL");
        if let Some(run_as) = run_as {
            command
                .args(["--reuid", &run_as.user, "--regid", &run_as.user])
                .arg("--init-groups");
        }
        command
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// Like [`Service::spawn`], but from a thread that lives as long as the test binary, so
    /// the process outlives the test (or runtime) that started it and still dies with the
    /// binary.
    pub fn spawn_long_lived(
        name: &str,
        program: &Path,
        args: Vec<String>,
        log_dir: &Path,
    ) -> Result<Self> {
        type Request = (
            String,
            PathBuf,
            Vec<String>,
            PathBuf,
            std::sync::mpsc::Sender<Result<Service>>,
        );
        static SPAWNER: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Request>>> =
            std::sync::OnceLock::new();
        let spawner = SPAWNER.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Request>();
            std::thread::Builder::new()
                .name("tiqzy-spawner".into())
                .spawn(move || {
                    for (name, program, args, log_dir, reply) in rx {
                        let _ = reply.send(Service::spawn(&name, &program, &args, &log_dir, None));
                    }
                    loop {
                        std::thread::park();
                    }
                })
                .expect("spawner thread");
            std::sync::Mutex::new(tx)
        });
        let (reply, answer) = std::sync::mpsc::channel();
        spawner
            .lock()
            .expect("spawner lock")
            .send((
                name.to_owned(),
                program.to_owned(),
                args,
                log_dir.to_owned(),
                reply,
            ))
            .context("the spawner thread is gone")?;
        answer.recv().context("the spawner thread did not answer")?
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Fails with the log's tail when the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                self.log_tail(40)
            );
        }
        Ok(())
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Polls `ready` until it succeeds; fails with the component's name and log tail when
    /// the process exits or `timeout` passes.
    pub async fn wait_ready<F, Fut>(&mut self, timeout: Duration, mut ready: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let start = Instant::now();
        loop {
            self.check_running()?;
            let last_error = match ready().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if start.elapsed() > timeout {
                bail!(
                    "{} was not ready after {timeout:?} (last check: {last_error:#}); last lines of {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, up to five seconds' grace, then SIGKILL.
    /// Kills the process at once (SIGKILL), as a crash or an evicted pod would end it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a log file (reads at most its last 64 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_ok() {
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tiqzy-process-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[tokio::test]
    async fn a_component_that_dies_is_named_with_its_log_tail() {
        let dir = scratch_dir("dies");
        let mut service = Service::spawn(
            "broken-db",
            Path::new("/bin/sh"),
            ["-c", "echo 'FATAL: config is wrong'; exit 3"],
            &dir,
            None,
        )
        .expect("spawn");
        let err = service
            .wait_ready(Duration::from_secs(10), || async { bail!("not yet") })
            .await
            .expect_err("the process exits before it is ready");
        let message = format!("{err:#}");
        assert!(message.starts_with("broken-db exited"), "{message}");
        assert!(message.contains("FATAL: config is wrong"), "{message}");
    }

    #[tokio::test]
    async fn a_component_that_never_gets_ready_times_out_with_its_log() {
        let dir = scratch_dir("slow");
        let mut service = Service::spawn(
            "slow",
            Path::new("/bin/sh"),
            ["-c", "echo warming up; sleep 30"],
            &dir,
            None,
        )
        .expect("spawn");
        let err = service
            .wait_ready(Duration::from_millis(300), || async {
                bail!("port closed")
            })
            .await
            .expect_err("never ready");
        let message = format!("{err:#}");
        assert!(message.contains("slow was not ready"), "{message}");
        assert!(message.contains("port closed"), "{message}");
        assert!(message.contains("warming up"), "{message}");
    }

    #[test]
    fn dropping_a_service_stops_its_process() {
        let dir = scratch_dir("drop");
        let service =
            Service::spawn("sleeper", Path::new("/bin/sleep"), ["60"], &dir, None).expect("spawn");
        let pid = service.pid();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(service);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} outlived its Service"
        );
    }
}
