//! When the broker or the database misbehaves, and at shutdown.

use crate::helpers::{
    CLIENT_STATE, database_server, decode, spawn_app, spawn_app_unready, spawn_app_with,
    user_change,
};
use cardsync_proto as proto;
use cardsync_testkit::database_url;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use uuid::Uuid;
use webhook::NOTIFICATIONS_PATH;

#[tokio::test]
async fn an_unreachable_broker_gives_503_with_retry_after_and_publishes_nothing() {
    // Nothing listens on port 1; the publisher must fail fast instead of hanging past Graph's 3 s.
    let mut app =
        spawn_app_unready(&[("CARDSYNC__BUS__URL", "amqp://guest:guest@127.0.0.1:1/%2f")]).await;
    let tenant = Uuid::new_v4();
    let subscription = app.register(tenant).await;
    let started = std::time::Instant::now();
    let response = app
        .post_json(NOTIFICATIONS_PATH, &serde_json::json!({ "value": [user_change(subscription, tenant, CLIENT_STATE, "u1")] }))
        .await;
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let reason: serde_json::Value = response.json().await.unwrap();
    assert_eq!(reason["error"], "temporarily_unavailable");
    assert!(
        !reason.to_string().contains("guest"),
        "no connection details in the body"
    );
    assert!(app.drain("delta-worker.changes").await.is_empty());

    let ready = app
        .client
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(
        (ready["broker"].as_bool(), ready["registry"].as_bool()),
        (Some(false), Some(true))
    );
    app.teardown().await;
}

#[tokio::test]
async fn health_endpoints_report_live_and_ready() {
    let app = spawn_app().await;
    let live = app
        .client
        .get(format!("{}/health/live", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let ready = app
        .client
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    app.teardown().await;
}

/// A loopback TCP proxy that can be cut, to take PostgreSQL away from one app only.
struct Proxy {
    port: u16,
    tasks: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let port = listener.local_addr().expect("bound").port();
        let tasks = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { port, tasks }
    }

    /// Drops the listener and every proxied connection (the JoinSet aborts them when dropped).
    fn cut(&self) {
        self.tasks.abort();
    }
}

#[tokio::test]
async fn known_subscriptions_are_served_while_postgres_is_down_and_unknown_ones_get_503() {
    let server = database_server();
    let proxy = Proxy::start(server.clone()).await;
    let proxied = database_url().replacen(&server, &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(
        proxied,
        database_url(),
        "the test database URL names {server}"
    );
    let mut app = spawn_app_with(&[
        ("CARDSYNC__POSTGRES__URL", &proxied),
        ("CARDSYNC__POSTGRES__TIMEOUT", "300ms"),
    ])
    .await;
    let tenant = Uuid::new_v4();
    let subscription = app.register(tenant).await;
    let notify = |user: &str| serde_json::json!({ "value": [user_change(subscription, tenant, CLIENT_STATE, user)] });
    assert_eq!(
        app.post_json(NOTIFICATIONS_PATH, &notify("before"))
            .await
            .status(),
        202
    );

    proxy.cut();
    let response = app.post_json(NOTIFICATIONS_PATH, &notify("during")).await;
    assert_eq!(response.status(), 202);
    let response = app
        .post_json(NOTIFICATIONS_PATH, &serde_json::json!({ "value": [user_change(Uuid::new_v4(), tenant, CLIENT_STATE, "x")] }))
        .await;
    assert_eq!(
        response.status(),
        503,
        "an id that cannot be checked must be redelivered, not dropped"
    );
    assert!(response.headers().contains_key("retry-after"));

    let users: Vec<String> = app
        .drain("delta-worker.changes")
        .await
        .iter()
        .map(|d| decode::<proto::GraphChange>(d).resource_id)
        .collect();
    assert_eq!(users, ["before", "during"]);
    app.teardown().await;
}

#[tokio::test]
async fn random_subscription_ids_do_not_reach_the_database_more_than_the_budget_allows() {
    let mut app = spawn_app_with(&[("CARDSYNC__REGISTRY__MISS_BUDGET_PER_SECOND", "5")]).await;
    let tenant = Uuid::new_v4();
    let items: Vec<_> = (0..40)
        .map(|_| user_change(Uuid::new_v4(), tenant, CLIENT_STATE, "x"))
        .collect();
    let started = std::time::Instant::now();
    let response = app
        .post_json(NOTIFICATIONS_PATH, &serde_json::json!({ "value": items }))
        .await;
    // The budget ran out before every id could be checked, so the request is refused for later.
    assert_eq!(response.status(), 503);
    let looked_up = app
        .metric("cardsync_webhook_registry_lookups_total{result=\"unknown\"}")
        .await;
    // 5 up front, plus what the bucket refilled while the request ran.
    let allowed = 5.0 + (started.elapsed().as_secs_f64() * 5.0).ceil();
    assert!(
        looked_up <= allowed && looked_up < 40.0,
        "{looked_up} database look-ups, {allowed} allowed"
    );
    assert_eq!(
        app.metric("cardsync_webhook_registry_lookups_total{result=\"unverifiable\"}")
            .await,
        1.0
    );

    // The same unknown id again is answered from the negative cache.
    let id = Uuid::new_v4();
    for _ in 0..2 {
        let body = serde_json::json!({ "value": [user_change(id, tenant, CLIENT_STATE, "y")] });
        let _ = app.post_json(NOTIFICATIONS_PATH, &body).await;
    }
    assert!(app.drain("delta-worker.changes").await.is_empty());
    app.teardown().await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut app = spawn_app().await;
    let tenant = Uuid::new_v4();
    let subscription = app.register(tenant).await;
    let body = serde_json::to_vec(
        &serde_json::json!({ "value": [user_change(subscription, tenant, CLIENT_STATE, "late")] }),
    )
    .unwrap();
    let (head, tail) = body.split_at(body.len() / 2);

    // Raw HTTP/1.1 on one socket: a complete request first proves a worker owns the connection,
    // then a second request is left half-sent while shutdown begins.
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    let mut socket = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    socket
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut socket).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");

    let request = format!(
        "POST {NOTIFICATIONS_PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    socket.write_all(head).await.unwrap();
    socket.flush().await.unwrap();

    // Wait until the server is handling it (the metrics request itself is the other one).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.metric("cardsync_webhook_http_requests_in_flight").await < 2.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request never reached the handler"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.shutdown.cancel();
    // The server must still be running, waiting for the rest of the in-flight request.
    let still_running =
        tokio::time::timeout(Duration::from_millis(300), app.server.as_mut().unwrap()).await;
    assert!(
        still_running.is_err(),
        "the server stopped with a request in flight"
    );
    socket.write_all(tail).await.unwrap();
    let second = read_response(&mut socket).await;
    assert!(second.starts_with("HTTP/1.1 202"), "{second}");

    let stopped = tokio::time::timeout(Duration::from_secs(10), app.server.take().unwrap()).await;
    assert!(
        stopped.is_ok(),
        "the server stops once the in-flight request is done"
    );
    let users: Vec<String> = app
        .drain("delta-worker.changes")
        .await
        .iter()
        .map(|d| decode::<proto::GraphChange>(d).resource_id)
        .collect();
    assert_eq!(users, ["late"]);
    let _ = socket.read(&mut [0u8; 1]).await;
    app.teardown().await;
}

/// Reads one HTTP/1.1 response (head plus a Content-Length body) from `socket`.
async fn read_response(socket: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut chunk))
            .await
            .expect("response within 10 s")
            .expect("read from the socket");
        assert!(n > 0, "connection closed before a full response");
        buffer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buffer).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().expect("numeric content-length"))
                })
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                return text;
            }
        }
    }
}
