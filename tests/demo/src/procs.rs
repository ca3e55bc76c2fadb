//! The child processes a pipeline starts: the real binaries, each with its own log file, stopped
//! with SIGTERM (then SIGKILL) however the demo or the test ends, and killable one by one with
//! SIGKILL to play a crash.

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the binaries are and where their logs go.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The directory holding `graph-sim`, `webhook`, `delta-worker` and `card-writer`.
    pub dir: PathBuf,
    /// The run's log directory.
    pub logs: PathBuf,
}

impl Binaries {
    /// The path of one binary, checked to exist.
    pub fn path(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(name);
        if !path.exists() {
            bail!(
                "{} is missing: `make demo` builds it (or pass --bin-dir)",
                path.display()
            );
        }
        Ok(path)
    }

    /// Runs a one-shot command (an operator CLI) to completion; fails with its output.
    pub fn run(
        &self,
        name: &str,
        args: &[&str],
        env: &[(String, String)],
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let output = Command::new(self.path(name)?)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {name} {}", args.join(" ")))?;
        if !output.status.success() {
            bail!(
                "{name} {} failed ({}): {}{}",
                args.first().copied().unwrap_or_default(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

/// Every long-running child of the demo; dropping it stops them all, last started first.
#[derive(Debug, Default)]
pub struct Children {
    running: Vec<(String, Child)>,
}

impl Children {
    /// Starts `name args…` with `env`, stdout and stderr appended to `<logs>/<name>.log` (appended,
    /// so a restarted service keeps what it logged before its crash in the same file).
    pub fn start(
        &mut self,
        binaries: &Binaries,
        name: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> anyhow::Result<PathBuf> {
        let log_path = binaries.logs.join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(binaries.path(name)?)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.running.push((name.to_owned(), child));
        Ok(log_path)
    }

    /// Fails if a child has exited (a crash is a demo failure, never silently ignored).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.running {
            if let Some(status) = child.try_wait()? {
                bail!("{name} exited unexpectedly ({status}); see its log");
            }
        }
        Ok(())
    }

    /// Kills `name` with SIGKILL (no drain, no goodbye: a crash) and reaps it; it is no longer
    /// watched by [`Children::check_alive`] until started again.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let index = self
            .running
            .iter()
            .position(|(running, _)| running == name)
            .with_context(|| format!("{name} is not running"))?;
        let (_, mut child) = self.running.remove(index);
        // `Child::kill` is SIGKILL on Unix.
        child
            .kill()
            .with_context(|| format!("killing {name} with SIGKILL"))?;
        child.wait().with_context(|| format!("reaping {name}"))?;
        Ok(())
    }

    /// Peak resident memory (`VmHWM`, KiB) of every running child, by name; a restarted
    /// child reports its own lifetime only.
    pub fn peak_memory_kib(&self) -> Vec<(String, u64)> {
        self.running
            .iter()
            .filter_map(|(name, child)| {
                let status =
                    std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
                let kib = status
                    .lines()
                    .find_map(|line| line.strip_prefix("VmHWM:"))?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()?;
                Some((name.clone(), kib))
            })
            .collect()
    }

    /// Stops every child: SIGTERM, up to 25 s to drain (the services' own drain deadline is 20 s), then SIGKILL.
    pub fn stop_all(&mut self) {
        for (_, child) in self.running.iter().rev() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(25);
        for (name, mut child) in self.running.drain(..).rev() {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        eprintln!("{name} did not stop in time; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The last `lines` lines of a log file (for failure messages), or why it cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("({} unreadable: {error})", path.display()),
    }
}

/// The directory of the running executable (where cargo put the other binaries).
pub fn own_dir() -> anyhow::Result<PathBuf> {
    std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .context("locating the binaries")
}

/// The binaries every pipeline runs (each is its package's name too).
pub const SERVICE_BINARIES: [&str; 5] = [
    "graph-sim",
    "webhook",
    "delta-worker",
    "card-writer",
    "cardsync-admin",
];

/// The directory holding the service binaries for an integration test of this crate: the test
/// executable lives in `target/<profile>/deps/`, the binaries one level up. Under
/// `cargo test --workspace` cargo has built them (their packages have integration tests); under
/// `cargo test -p cardsync-demo` it has not, so they are built here, once per test process.
pub fn test_binary_dir() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| locate_or_build().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn locate_or_build() -> anyhow::Result<PathBuf> {
    let dir = own_dir()?
        .parent()
        .map(Path::to_path_buf)
        .context("the test executable has no target directory above it")?;
    if SERVICE_BINARIES.iter().all(|name| dir.join(name).exists()) {
        return Ok(dir);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--locked"]);
    for name in SERVICE_BINARIES {
        command.args(["-p", name]);
    }
    command.arg("--bins");
    if dir.file_name().is_some_and(|profile| profile == "release") {
        command.arg("--release");
    }
    // Cargo describes the package under test to the test process; handed to a nested build,
    // those variables change ring's build-script fingerprint and everything is rebuilt.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || matches!(
                key.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
            )
        {
            command.env_remove(key.as_ref());
        }
    }
    let status = command
        .stdin(Stdio::null())
        .status()
        .context("running cargo build for the service binaries")?;
    if !status.success() {
        bail!("cargo build of the service binaries failed ({status})");
    }
    for name in SERVICE_BINARIES {
        if !dir.join(name).exists() {
            bail!(
                "{name} is still missing from {} after cargo build",
                dir.display()
            );
        }
    }
    Ok(dir)
}
