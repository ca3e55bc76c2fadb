//! The HTTP server: requests counted while in flight, cancelled ones too, and a drain that
//! waits for started requests but never for a count a dropped request forgot.

use crate::{Running, start};
use cardsync_runtime::Readiness;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

async fn send_slow_request(running: &Running) -> TcpStream {
    let port = running.address.rsplit(':').next().expect("a port");
    let mut socket = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("connects");
    socket
        .write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("writes");
    socket
}

#[tokio::test]
async fn a_request_that_never_finished_is_no_longer_counted_in_flight() {
    let running = start(Readiness::new(), Duration::from_secs(60), Duration::ZERO);
    let crashed = reqwest::get(format!("{}/crash", running.address)).await;
    assert!(
        crashed.is_err() || crashed.is_ok_and(|r| r.status().is_server_error()),
        "the crashing request is not answered as a success"
    );
    running.wait_in_flight(0, Duration::from_secs(10)).await;
    // The server still serves.
    let slow = running.get("/slow").await;
    assert_eq!(slow.status(), 200);

    // With nothing in flight, shutdown does not wait out its 60 s deadline.
    running.shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), running.server).await;
    assert!(
        stopped.is_ok(),
        "shutdown waited for a request that was gone"
    );
}

#[tokio::test]
async fn shutdown_lets_a_started_request_finish_and_then_stops() {
    let running = start(
        Readiness::new(),
        Duration::from_secs(30),
        Duration::from_millis(700),
    );
    let mut socket = send_slow_request(&running).await;
    running.wait_in_flight(1, Duration::from_secs(10)).await;
    running.shutdown.cancel();

    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = socket.read(&mut chunk).await.expect("reads");
            answer.extend_from_slice(&chunk[..n]);
            if n == 0 || String::from_utf8_lossy(&answer).ends_with("done") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to the in-flight request");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("done"), "{answer}");
    let stopped = tokio::time::timeout(Duration::from_secs(10), running.server).await;
    assert!(stopped.is_ok(), "the server stops once the request is done");
    // New connections are refused once it stopped.
    let port = running.address.rsplit(':').next().expect("a port");
    assert!(
        TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn health_metrics_and_readiness_are_served_with_the_services_checks() {
    let running = start(
        Readiness::new()
            .check("broker", || async { true })
            .check("redis", || async { false }),
        Duration::from_secs(5),
        Duration::ZERO,
    );
    let live = running.get("/health/live").await;
    assert_eq!(live.status(), 200);
    let ready = running.get("/health/ready").await;
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(
        body,
        serde_json::json!({"status": "not_ready", "broker": true, "redis": false})
    );
    let slow = running.get("/slow").await;
    assert_eq!(slow.status(), 200);
    let metrics = running.get("/metrics").await.text().await.expect("text");
    assert!(
        metrics.contains(r#"cardsync_kit_http_requests_total{route="/slow",status="200"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"cardsync_kit_http_requests_total{route="/health/ready",status="503"} 1"#),
        "{metrics}"
    );
    running.shutdown.cancel();
    let _ = running.server.await;
}
