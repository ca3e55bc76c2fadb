//! The child processes the demo starts: the real binaries, each with its own log file, stopped
//! with SIGTERM (then SIGKILL) however the demo ends.

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
    /// Starts `name args…` with `env`, stdout and stderr appended to `<logs>/<name>.log`.
    pub fn start(
        &mut self,
        binaries: &Binaries,
        name: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> anyhow::Result<PathBuf> {
        let log_path = binaries.logs.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
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

/// A free loopback port (bound, then released for the child to take).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The directory of the running executable (where cargo put the other binaries).
pub fn own_dir() -> anyhow::Result<PathBuf> {
    std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .context("locating the binaries")
}
