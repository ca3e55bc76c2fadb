//! A real OTLP receiver for trace tests: `rotel-agent` (PyPI `rotel`, installed into the project's
//! `.venv` by `make test`) listening on loopback, printing every span it receives, and a parser
//! of what it printed. The services export to it exactly as to a collector in production.

use anyhow::{Context as _, bail};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// One span as the receiver printed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpanRecord {
    /// The resource's `service.name` (the service that sent it).
    pub service: String,
    /// Trace id (32 hex digits).
    pub trace_id: String,
    /// Span id (16 hex digits).
    pub span_id: String,
    /// The parent's span id (empty for a root).
    pub parent_id: String,
    /// The span's name.
    pub name: String,
    /// `(trace id, span id)` of every linked span.
    pub links: Vec<(String, String)>,
}

/// A running `rotel-agent`, stopped when dropped.
#[derive(Debug)]
pub struct Receiver {
    child: Child,
    port: u16,
    output: PathBuf,
}

impl Receiver {
    /// Starts the receiver on a free loopback port, printing into `dir/otlp-receiver.log`.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let agent = rotel_agent()?;
        let port = cardsync_bench::free_port()?;
        let grpc_port = cardsync_bench::free_port()?;
        let output = dir.join("otlp-receiver.log");
        let log = std::fs::File::create(&output)
            .with_context(|| format!("creating {}", output.display()))?;
        let child = Command::new(&agent)
            .args(["start", "--exporter", "blackhole"])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{port}")])
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
            .args(["--debug-log", "traces", "--debug-log-verbosity", "detailed"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", agent.display()))?;
        let mut receiver = Self {
            child,
            port,
            output,
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Some(status) = receiver.child.try_wait()? {
                bail!(
                    "the OTLP receiver exited ({status}): {}",
                    receiver.printed()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the OTLP receiver does not listen: {}", receiver.printed());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(receiver)
    }

    /// The base URL a service's `telemetry.otlp_endpoint` takes.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything the receiver printed so far.
    pub fn printed(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<SpanRecord> {
        parse(&self.printed())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The spans in rotel's detailed debug output.
pub fn parse(printed: &str) -> Vec<SpanRecord> {
    let mut spans = Vec::new();
    let mut service = String::new();
    let mut current: Option<SpanRecord> = None;
    let mut link: Option<String> = None;
    for line in printed.lines() {
        let line = line.trim();
        if line.starts_with("ResourceSpans #") {
            spans.extend(current.take());
            service.clear();
        } else if let Some(name) = line.strip_prefix("-> service.name: Str(") {
            service = name.trim_end_matches(')').to_owned();
        } else if line.starts_with("Span #") {
            spans.extend(current.take());
            current = Some(SpanRecord {
                service: service.clone(),
                ..SpanRecord::default()
            });
        } else if let Some(span) = current.as_mut() {
            let value = |prefix: &str| {
                line.strip_prefix(prefix)
                    .and_then(|rest| rest.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            };
            if let Some(id) = value("-> Trace ID") {
                link = Some(id);
            } else if let Some(id) = value("-> ID") {
                if let Some(trace) = link.take() {
                    span.links.push((trace, id));
                }
            } else if let Some(id) = value("Trace ID") {
                span.trace_id = id;
            } else if let Some(id) = value("Parent ID") {
                span.parent_id = id;
            } else if let Some(id) = value("ID") {
                span.span_id = id;
            } else if let Some(name) = value("Name") {
                span.name = name;
            }
        }
    }
    spans.extend(current);
    spans
}

/// The services that sent spans of `trace`.
pub fn services_in(spans: &[SpanRecord], trace: &str) -> BTreeSet<String> {
    spans
        .iter()
        .filter(|s| s.trace_id == trace)
        .map(|s| s.service.clone())
        .collect()
}

/// `rotel-agent`: `$CARDSYNC_TEST_ROTEL_AGENT`, else the one in the workspace's `.venv`.
fn rotel_agent() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("CARDSYNC_TEST_ROTEL_AGENT") {
        return Ok(PathBuf::from(path));
    }
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .flatten()
            .map(|entry| entry.path().join("site-packages/rotel/rotel-agent"))
            .find(|path| path.is_file())
    });
    found.with_context(|| {
        format!(
            "rotel-agent not found under {}: run `make test` (it installs tests/requirements.txt \
             into .venv) or set CARDSYNC_TEST_ROTEL_AGENT",
            lib.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRINTED: &str = "\
ResourceSpans #0
Resource attributes:
     -> service.name: Str(webhook)
ScopeSpans #0
Span #0
    Trace ID       : 5b8efff798038103d269b633813fc60c
    Parent ID      : 
    ID             : eee19b7ec3c1b174
    Name           : POST /graph/notifications
    Kind           : SPAN_KIND_SERVER
Attributes:
     -> tenant: Str(t1)
ResourceSpans #1
Resource attributes:
     -> service.name: Str(delta-worker)
Span #0
    Trace ID       : 5b8efff798038103d269b633813fc60c
    Parent ID      : 00f067aa0ba902b7
    ID             : 1111111111111111
    Name           : delta round
Links:
SpanLink #0
     -> Trace ID: 0af7651916cd43dd8448eb211c80319c
     -> ID: b7ad6b7169203331
     -> TraceState: 
Span #1
    Trace ID       : 0af7651916cd43dd8448eb211c80319c
    Parent ID      : 
    ID             : 2222222222222222
    Name           : bus.consume
";

    #[test]
    fn rotels_detailed_output_parses_into_spans_with_services_and_links() {
        let spans = parse(PRINTED);
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[0].service, "webhook");
        assert_eq!(spans[0].name, "POST /graph/notifications");
        assert_eq!(spans[0].parent_id, "");
        assert_eq!(spans[1].service, "delta-worker");
        assert_eq!(spans[1].span_id, "1111111111111111");
        assert_eq!(spans[1].parent_id, "00f067aa0ba902b7");
        assert_eq!(
            spans[1].links,
            vec![(
                "0af7651916cd43dd8448eb211c80319c".to_owned(),
                "b7ad6b7169203331".to_owned()
            )]
        );
        assert_eq!(spans[2].name, "bus.consume");
        assert!(spans[2].links.is_empty());
        assert_eq!(
            services_in(&spans, "5b8efff798038103d269b633813fc60c"),
            BTreeSet::from(["webhook".to_owned(), "delta-worker".to_owned()])
        );
    }
}
