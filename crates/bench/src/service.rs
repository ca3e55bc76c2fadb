//! The service under test: its binary, built from this workspace with the benchmark's own
//! profile, run as a child process with only the benchmark's settings.

use anyhow::{Context as _, ensure};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How often [`ServiceProcess::stop`] looks whether the process has exited.
const EXIT_POLL: Duration = Duration::from_millis(100);

/// A free loopback port for a child process to listen on (bound here, then released for it).
///
/// The port comes from below the kernel's ephemeral range: a port `bind(0)` picks is one the
/// kernel also hands to outgoing connections, and one to PostgreSQL or RabbitMQ could take it in
/// the moment between the release here and the child's own bind (a pipeline test failed that way:
/// "Address already in use"). Ports handed out once are never handed out again by this process,
/// so services started side by side do not pick the same one either.
pub fn free_port() -> std::io::Result<u16> {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let (low, high) = (10_000_u16, ephemeral_low().max(10_001));
    for _ in 0..1000 {
        let port = rand::random_range(low..high);
        let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrNotAvailable,
        format!("no free loopback port between {low} and {high}"),
    ))
}

/// The first port of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// The settings (`CARDSYNC__…` variables) every service under test runs with: its own listen
/// port and topology prefix, so it meets nothing of another run, and the benchmark's database
/// and broker.
pub fn service_env(
    port: u16,
    prefix: &str,
    postgres_url: &str,
    amqp_url: &str,
) -> Vec<(String, String)> {
    [
        ("CARDSYNC__HTTP__LISTEN", format!("127.0.0.1:{port}")),
        ("CARDSYNC__TOPOLOGY__PREFIX", prefix.to_owned()),
        ("CARDSYNC__POSTGRES__URL", postgres_url.to_owned()),
        ("CARDSYNC__SECRETS__DEVELOPMENT", "true".to_owned()),
        ("CARDSYNC__BUS__URL", amqp_url.to_owned()),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value))
    .collect()
}

/// A parsed `--set CARDSYNC__SECTION__KEY=value` argument: an extra setting for the service.
pub fn parse_setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if key.starts_with("CARDSYNC__") => Ok((key.into(), value.into())),
        _ => Err("expected CARDSYNC__SECTION__KEY=value".into()),
    }
}

/// The profile directory (`target/release`) of an executable cargo built: a binary lives in it,
/// an example or a test one level down (`examples/`, `deps/`).
fn profile_dir_of(exe: &Path) -> Option<&Path> {
    let parent = exe.parent()?;
    match parent.file_name().and_then(|name| name.to_str()) {
        Some("examples" | "deps") => parent.parent(),
        _ => Some(parent),
    }
}

/// The binary of `package` (named like its package, as every cardsync service is), (re)built
/// with the profile and target dir of the running benchmark, so the figures are never those of
/// a stale or debug build.
///
/// The target dir is passed explicitly: `cargo run` does not hand `CARGO_TARGET_DIR` to its
/// child in every setup, and a build into another directory would leave this one stale.
pub fn service_binary(package: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = profile_dir_of(&exe).context("locating the build directory")?;
    let target_dir = profile_dir
        .parent()
        .context("locating the target directory")?;
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("debug");
    if profile != "release" {
        println!("warning: profile {profile:?}; only release figures belong in BENCHMARKS.md");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    // `cargo run` hands this process the package's CARGO_MANIFEST_DIR, CARGO_PKG_* and so on;
    // build scripts that track them would rerun and rebuild half the tree, so they are dropped.
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&key_text.as_ref())
        {
            build.env_remove(&key);
        }
    }
    // The service's binary alone: the benchmark is another package, so nothing of its own
    // joins the feature unification. Any member's manifest names the workspace; `-p` picks the
    // package in it.
    build
        .args(["build", "--quiet", "--locked", "-p", package])
        .args(["--bin", package])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    let status = build.status().context("running cargo build")?;
    ensure!(status.success(), "building the {package} binary failed");
    Ok(profile_dir.join(package))
}

/// A service running as a child process (`<binary> serve`); stopped with SIGTERM (then
/// killed) however the run ends.
#[derive(Debug)]
pub struct ServiceProcess(Option<Child>);

impl ServiceProcess {
    /// Starts `binary serve` with the settings `env`, its output appended to `log` (so a run
    /// that starts the service more than once keeps every start's log).
    pub fn spawn(binary: &Path, env: &[(String, String)], log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)?;
        let mut command = Command::new(binary);
        command.arg("serve");
        // Only our settings: a CARDSYNC variable in the caller's shell would make the child
        // differ from the settings the benchmark loaded and reports.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CARDSYNC") {
                command.env_remove(key);
            }
        }
        let child = command
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self(Some(child)))
    }

    /// The process id (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// Whether the process has ended (or its state cannot be read).
    pub fn has_exited(&mut self) -> bool {
        self.0
            .as_mut()
            .is_none_or(|child| !matches!(child.try_wait(), Ok(None)))
    }

    /// SIGTERM, up to `grace` for the graceful drain, then SIGKILL.
    pub fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.0.take()?;
        // std can only send SIGKILL; `kill` sends SIGTERM without a libc dependency.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        for _ in 0..grace.as_millis().div_ceil(EXIT_POLL.as_millis()) {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(EXIT_POLL);
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let low = ephemeral_low();
        let ports: Vec<u16> = (0..50).map(|_| free_port().expect("a free port")).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        for port in ports {
            assert!(port < low, "{port} is in the ephemeral range from {low}");
            std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
        }
    }

    #[test]
    fn parse_setting_splits_a_cardsync_setting_at_the_first_equals_sign() {
        assert_eq!(
            parse_setting("CARDSYNC__BUS__URL=amqp://a/b?c=d"),
            Ok(("CARDSYNC__BUS__URL".into(), "amqp://a/b?c=d".into()))
        );
    }

    #[test]
    fn parse_setting_rejects_other_variables() {
        assert!(parse_setting("RUST_LOG=debug").is_err());
        assert!(parse_setting("CARDSYNC__BUS__URL").is_err());
    }

    #[test]
    fn a_binary_an_example_and_a_test_find_the_same_profile_directory() {
        let profile = Path::new("/work/target/release");
        assert_eq!(profile_dir_of(&profile.join("writer_bench")), Some(profile));
        assert_eq!(
            profile_dir_of(&profile.join("examples/writer_bench")),
            Some(profile)
        );
        assert_eq!(
            profile_dir_of(&profile.join("deps/bench-0123abcd")),
            Some(profile)
        );
    }
}
