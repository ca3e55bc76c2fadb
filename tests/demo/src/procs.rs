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
    /// The directory holding `graph-sim`, `webhook`, `delta-worker`, `card-writer` and `reconciler`.
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
///
/// Children are supervised as Kubernetes would: a service that exits on its own (crashed, or
/// killed from a shell while the demo runs) is started again with the same command, and the
/// restart is counted. A crash loop (more than [`MAX_RESTARTS_PER_MINUTE`] exits of one child in
/// a minute) and the exit of a child that cannot be restarted (graph-sim, which holds the
/// directory in memory) end the run.
#[derive(Debug, Default)]
pub struct Children {
    running: Vec<Supervised>,
    restarts: std::collections::BTreeMap<String, Vec<Instant>>,
}

/// Most exits of one child within a minute before the run gives up on it.
pub const MAX_RESTARTS_PER_MINUTE: usize = 5;

/// How a child was started, so that it can be started again.
#[derive(Debug)]
struct Spec {
    name: String,
    path: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    restartable: bool,
}

impl Spec {
    fn spawn(&self) -> anyhow::Result<Child> {
        spawn_logged(&self.path, &self.args, &self.env, &self.log_path)
            .with_context(|| format!("starting {}", self.name))
    }
}

/// A running child and how to start it again.
#[derive(Debug)]
struct Supervised {
    spec: Spec,
    child: Child,
}

fn spawn_logged(
    path: &Path,
    args: &[String],
    env: &[(String, String)],
    log_path: &Path,
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    Ok(Command::new(path)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
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
        let spec = Spec {
            name: name.to_owned(),
            path: binaries.path(name)?,
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            env: env.to_vec(),
            log_path: binaries.logs.join(format!("{name}.log")),
            // graph-sim holds the directory in memory: a new one would be another Graph.
            restartable: name != "graph-sim",
        };
        let child = spec.spawn()?;
        let log_path = spec.log_path.clone();
        self.running.push(Supervised { spec, child });
        Ok(log_path)
    }

    /// Starts again every service that exited on its own, and says which; fails for a child that
    /// cannot be restarted or that keeps exiting. A crash is never silently ignored: it is
    /// counted ([`Children::restarts`]) and logged.
    pub fn supervise(&mut self) -> anyhow::Result<Vec<String>> {
        let mut restarted = Vec::new();
        for supervised in &mut self.running {
            let Some(status) = supervised.child.try_wait()? else {
                continue;
            };
            let name = supervised.spec.name.clone();
            if !supervised.spec.restartable {
                bail!("{name} exited unexpectedly ({status}); see its log");
            }
            let exits = self.restarts.entry(name.clone()).or_default();
            exits.push(Instant::now());
            let recent = exits
                .iter()
                .filter(|at| at.elapsed() < Duration::from_secs(60))
                .count();
            if recent > MAX_RESTARTS_PER_MINUTE {
                bail!("{name} exited {recent} times within a minute ({status}); see its log");
            }
            eprintln!("{name} exited ({status}); starting it again");
            supervised.child = supervised.spec.spawn()?;
            restarted.push(name);
        }
        Ok(restarted)
    }

    /// The process id of the running child `name` (to kill it from outside, as a user would).
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.running
            .iter()
            .find(|running| running.spec.name == name)
            .map(|running| running.child.id())
    }

    /// How often each child was started again after exiting on its own.
    pub fn restarts(&self) -> std::collections::BTreeMap<String, usize> {
        self.restarts
            .iter()
            .map(|(name, exits)| (name.clone(), exits.len()))
            .collect()
    }

    /// Kills `name` with SIGKILL (no drain, no goodbye: a crash) and reaps it; it is no longer
    /// supervised ([`Children::supervise`]) until started again.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let index = self
            .running
            .iter()
            .position(|running| running.spec.name == name)
            .with_context(|| format!("{name} is not running"))?;
        let Supervised { mut child, .. } = self.running.remove(index);
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
            .filter_map(|Supervised { spec, child }| {
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
                Some((spec.name.clone(), kib))
            })
            .collect()
    }

    /// Stops every child: SIGTERM, up to 25 s to drain (the services' own drain deadline is 20 s), then SIGKILL.
    pub fn stop_all(&mut self) {
        for Supervised { child, .. } in self.running.iter().rev() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(25);
        for Supervised { spec, mut child } in self.running.drain(..).rev() {
            let name = spec.name;
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

/// The binaries every pipeline runs (each is its package's name too, but `cardsync`'s, see
/// [`package_of`]).
pub const SERVICE_BINARIES: [&str; 8] = [
    "graph-sim",
    "webhook",
    "delta-worker",
    "card-writer",
    "subscription-manager",
    "reconciler",
    "admin-api",
    "cardsync",
];

/// The package building a binary of [`SERVICE_BINARIES`].
fn package_of(binary: &str) -> &str {
    match binary {
        "cardsync" => "cardsync-cli",
        other => other,
    }
}

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
        command.args(["-p", package_of(name)]);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A binaries folder whose `name` is a link to a system program.
    fn binaries_with(links: &[(&str, &str)]) -> Binaries {
        let dir = std::env::temp_dir().join(format!("procs-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, target) in links {
            std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
        }
        Binaries {
            logs: dir.clone(),
            dir,
        }
    }

    fn kill_from_outside(pid: u32) {
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until `name` has exited (without reaping it: supervise must see the exit).
    fn wait_exited(pid: u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
        {
            assert!(Instant::now() < deadline, "{pid} did not die");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_service_killed_from_outside_is_started_again_and_counted() {
        let binaries = binaries_with(&[("webhook", "/bin/sleep")]);
        let mut children = Children::default();
        children.start(&binaries, "webhook", &["60"], &[]).unwrap();
        assert!(children.supervise().unwrap().is_empty());
        let first = children.pid("webhook").unwrap();
        kill_from_outside(first);
        wait_exited(first);
        assert_eq!(children.supervise().unwrap(), ["webhook"]);
        let second = children.pid("webhook").unwrap();
        assert_ne!(first, second);
        assert!(std::fs::metadata(format!("/proc/{second}")).is_ok());
        assert_eq!(children.restarts().get("webhook"), Some(&1));
    }

    #[test]
    fn a_crash_loop_ends_the_run() {
        let binaries = binaries_with(&[("card-writer", "/bin/false")]);
        let mut children = Children::default();
        children.start(&binaries, "card-writer", &[], &[]).unwrap();
        let mut outcome = Ok(Vec::new());
        for _ in 0..=MAX_RESTARTS_PER_MINUTE + 1 {
            let pid = children.pid("card-writer").unwrap();
            wait_exited(pid);
            outcome = children.supervise();
            if outcome.is_err() {
                break;
            }
        }
        let error = outcome.unwrap_err().to_string();
        assert!(error.contains("within a minute"), "{error}");
    }

    #[test]
    fn graph_sim_is_never_restarted_since_it_holds_the_directory() {
        let binaries = binaries_with(&[("graph-sim", "/bin/false")]);
        let mut children = Children::default();
        children.start(&binaries, "graph-sim", &[], &[]).unwrap();
        wait_exited(children.pid("graph-sim").unwrap());
        let error = children.supervise().unwrap_err().to_string();
        assert!(error.contains("graph-sim exited unexpectedly"), "{error}");
    }
}
