//! The webhook binary as an outsider meets it, in a process of its own: a flood of forged
//! notifications, clients that trickle their requests, and ten thousand connections at once.
//! What is observed is what an operator would see: its log lines, its answers, its memory.

use crate::helpers::{CLIENT_STATE, user_change};
use cardsync_store::subscriptions::{self, ClientStateHash, Subscription};
use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use uuid::Uuid;

/// The webhook binary, started with JSON logs going to a file.
struct Webhook {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Webhook {
    async fn start(extra: &[(&str, &str)]) -> Self {
        let _ = cardsync_testkit::test_pool().await;
        let port = cardsync_bench::free_port().expect("a free port");
        let log = std::env::temp_dir().join(format!("webhook-{}.log", Uuid::new_v4().simple()));
        let out = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_webhook"))
            .env_remove("CARDSYNC_CONFIG")
            .env("CARDSYNC__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("CARDSYNC__POSTGRES__URL", cardsync_testkit::database_url())
            .env("CARDSYNC__BUS__URL", cardsync_testkit::amqp_url())
            .env("CARDSYNC__BUS__QUEUE_TYPE", "classic")
            .env("CARDSYNC__BUS__CONNECT_TIMEOUT", "20s")
            .env(
                "CARDSYNC__TOPOLOGY__PREFIX",
                cardsync_testkit::unique_prefix("out"),
            )
            .env("CARDSYNC__TELEMETRY__LOG_FORMAT", "json")
            .env("CARDSYNC__TELEMETRY__LOG_FILTER", "info")
            .envs(extra.iter().copied())
            .stdout(out.try_clone().expect("the log file"))
            .stderr(out)
            .spawn()
            .expect("the webhook binary starts");
        let webhook = Self { child, port, log };
        webhook.wait_ready().await;
        webhook
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client.get(self.url("/health/ready")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the webhook binary never became ready: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// Resident memory of the process, in KiB.
    fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The process's peak resident memory so far.
    fn peak_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the process is alive");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} is reported"))
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// About 1 MiB of notifications: `items(subscription)` for each of 2,300 users.
fn flood(item: impl Fn(usize) -> serde_json::Value) -> Vec<u8> {
    let items: Vec<serde_json::Value> = (0..2_300).map(item).collect();
    let body = serde_json::to_vec(&serde_json::json!({ "value": items })).expect("json");
    assert!(body.len() > 900 * 1024 && body.len() <= 1024 * 1024);
    body
}

#[tokio::test]
async fn a_flood_of_forged_notifications_is_logged_in_a_few_lines_not_one_per_item() {
    let webhook = Webhook::start(&[]).await;
    // A real subscription, forged with a guessed clientState.
    let (subscription, tenant) = (Uuid::new_v4(), Uuid::new_v4());
    subscriptions::register(
        &cardsync_testkit::test_pool().await,
        &Subscription {
            id: subscription,
            tenant_id: tenant,
            resource: "/users".into(),
            client_state: ClientStateHash::of(CLIENT_STATE),
            expires_at: time::OffsetDateTime::now_utc() + time::Duration::days(2),
        },
    )
    .await
    .expect("registered");
    let forged = flood(|i| user_change(subscription, tenant, "guessed", &format!("u{i}")));
    // And ids nobody registered: more than the registry may look up, so Graph would retry.
    let unknown = flood(|i| {
        user_change(
            Uuid::new_v4(),
            Uuid::new_v4(),
            CLIENT_STATE,
            &format!("u{i}"),
        )
    });
    let client = reqwest::Client::new();
    let before = webhook.log_text().lines().count();
    for (body, status) in [(&forged, 202), (&unknown, 503)] {
        for _ in 0..20 {
            let answer = client
                .post(webhook.url("/graph/notifications"))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .expect("answers");
            assert_eq!(answer.status(), status);
        }
    }
    let lines: Vec<String> = webhook
        .log_text()
        .lines()
        .skip(before)
        .map(str::to_owned)
        .collect();
    let rejections: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("notifications rejected"))
        .collect();
    // 20 requests of 2,300 rejected items each: one line per request at most, within the budget.
    assert!(
        !rejections.is_empty() && rejections.len() <= 20,
        "{} rejection lines",
        rejections.len()
    );
    assert!(
        rejections[0].contains("\"client_state_mismatch\":2300"),
        "{}",
        rejections[0]
    );
    assert!(
        !rejections[0].contains("guessed"),
        "the clientState never appears in a log line"
    );
    let unavailable = lines.iter().filter(|l| l.contains("answering 503")).count();
    assert!(
        (1..=20).contains(&unavailable),
        "{unavailable} lines for 20 answers of 503"
    );
    assert!(
        lines.len() < 100,
        "{} log lines for 40 requests of 2,300 notifications",
        lines.len()
    );
    let metrics = client
        .get(webhook.url("/metrics"))
        .send()
        .await
        .expect("answers")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(
            r#"cardsync_webhook_notifications_rejected_total{reason="client_state_mismatch"} 46000"#
        ),
        "every rejection is still counted: {}",
        metrics
            .lines()
            .filter(|line| line.contains("rejected_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Sends a request head declaring a 1 MiB body, then one byte per second. Returns what the
/// server answered before it closed the connection, or `None` if it never closed it.
async fn trickle(port: u16) -> Option<String> {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    socket
        .write_all(
            b"POST /graph/notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{",
        )
        .await
        .ok()?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 512];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), socket.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => return Some(String::from_utf8_lossy(&answer).into_owned()),
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => {
                // Nothing from the server this second: send one more byte.
                if socket.write_all(b" ").await.is_err() {
                    return Some(String::from_utf8_lossy(&answer).into_owned());
                }
            }
        }
    }
    None
}

#[tokio::test]
async fn a_hundred_clients_trickling_their_bodies_are_cut_off_with_408() {
    let webhook = Webhook::start(&[("CARDSYNC__HTTP__BODY_TIMEOUT", "3s")]).await;
    let mut clients = JoinSet::new();
    for _ in 0..100 {
        clients.spawn(trickle(webhook.port));
    }
    let mut cut_off = 0;
    while let Some(answer) = clients.join_next().await {
        let answer = answer.expect("joins");
        let answer = answer.expect("the server closed the trickling connection");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        cut_off += 1;
    }
    assert_eq!(cut_off, 100);
    // And it still serves.
    let live = reqwest::get(webhook.url("/health/live"))
        .await
        .expect("answers");
    assert_eq!(live.status(), 200);
}

/// One validation handshake on a connection of its own, sent once `go` says so. The server
/// serves at most `http.max_connections` per worker at once and the kernel queues only so many
/// more, so a client of the flood may go unanswered; like Graph, it then tries again.
async fn handshake(port: u16, token: usize, go: tokio::sync::watch::Receiver<bool>) -> bool {
    let mut go = go;
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let Ok(mut socket) = TcpStream::connect(("127.0.0.1", port)).await else {
            continue;
        };
        if go.wait_for(|go| *go).await.is_err() {
            return false;
        }
        let request = format!(
            "POST /graph/notifications?validationToken=t{token} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        if socket.write_all(request.as_bytes()).await.is_err() {
            continue;
        }
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut answer)).await;
        if read.is_ok_and(|read| read.is_ok()) && answer.starts_with(b"HTTP/1.1 200") {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn memory_comes_back_after_ten_thousand_concurrent_connections() {
    let webhook = Webhook::start(&[]).await;
    let start = webhook.rss_kib();
    let (go, ready) = tokio::sync::watch::channel(false);
    let mut clients = JoinSet::new();
    for token in 0..10_000 {
        clients.spawn(handshake(webhook.port, token, ready.clone()));
    }
    // Let the connections open, then send every handshake at once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    go.send(true).expect("the clients listen");
    let mut answered = 0;
    while let Some(ok) = clients.join_next().await {
        if ok.expect("joins") {
            answered += 1;
        }
    }
    assert_eq!(answered, 10_000, "every handshake is answered in the end");
    let closed = webhook.rss_kib();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = webhook.rss_kib();
    // The figures BENCHMARKS.md records (`--nocapture` shows them).
    println!(
        "webhook resident memory: {start} KiB at start, peak {} KiB, {closed} KiB as the last \
         connection closed, {after} KiB 30 s later",
        webhook.peak_kib()
    );
    assert!(
        after < 2 * start,
        "resident memory {after} KiB 30 s after the connections closed, {start} KiB at start"
    );
}
