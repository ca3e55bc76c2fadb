//! What a slow or hostile client may take is bounded: a trickled body gets `408`, a head sent
//! too slowly gets cut off, and neither holds its connection.

use crate::start;
use cardsync_runtime::Readiness;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Everything the server sends until it closes the connection (or 10 s pass).
async fn read_until_closed(socket: &mut TcpStream) -> (String, bool) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&received).into_owned(), closed)
}

#[tokio::test]
async fn a_body_trickled_slower_than_the_body_timeout_gets_408_and_its_connection_closes() {
    let running = start(Readiness::new(), Duration::from_secs(5), Duration::ZERO);
    let port = running.address.rsplit(':').next().expect("a port");
    let mut socket = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("connects");
    socket
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        .await
        .expect("writes the head");
    let trickle = async {
        for _ in 0..40 {
            if socket.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    // The trickle stops either when the server hangs up or after 10 s.
    tokio::time::timeout(Duration::from_secs(10), trickle)
        .await
        .ok();
    let (answer, closed) = read_until_closed(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(closed, "the connection stays open after the 408");
    running.wait_in_flight(0, Duration::from_secs(5)).await;
    running.shutdown.cancel();
    let _ = running.server.await;
}

#[tokio::test]
async fn a_head_sent_too_slowly_is_cut_off() {
    let running = start(Readiness::new(), Duration::from_secs(5), Duration::ZERO);
    let port = running.address.rsplit(':').next().expect("a port");
    let mut socket = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("connects");
    socket
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("writes half a head");
    let (answer, closed) = read_until_closed(&mut socket).await;
    assert!(closed, "a half-sent head holds its connection");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    running.shutdown.cancel();
    let _ = running.server.await;
}

#[tokio::test]
async fn a_body_sent_in_time_is_served() {
    let running = start(Readiness::new(), Duration::from_secs(5), Duration::ZERO);
    let echoed = reqwest::Client::new()
        .post(format!("{}/echo", running.address))
        .body("hello")
        .send()
        .await
        .expect("answers");
    assert_eq!(echoed.status(), 200);
    assert_eq!(echoed.text().await.expect("text"), "hello");
    running.shutdown.cancel();
    let _ = running.server.await;
}
