//! A hostile client against the running webhook and admin API (issue 19 §4): for a bounded time
//! (`CARDSYNC_HOSTILE_SECONDS`, default 20) random methods, paths, headers and bodies, bad and
//! real bearer tokens, oversized, truncated and slowly sent requests, over raw TCP. Every
//! complete request is answered with a status below 500; the admin API's refusals under `/v1`
//! are problem documents naming their status; both processes are alive at the end, and their
//! resident memory is back under twice its baseline (plus 32 MiB of allocator slack) within
//! 30 s.

use crate::support::{self, Setup};
use anyhow::{Context as _, bail, ensure};
use cardsync_demo::Service;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "BREW",
];
const WEBHOOK_PATHS: [&str; 6] = [
    "/notifications",
    "/lifecycle",
    "/notifications?validationToken=abc",
    "/health/ready",
    "/metrics",
    "/%00/../x",
];
const ADMIN_PATHS: [&str; 10] = [
    "/v1/tenants",
    "/v1/tenants/{t}",
    "/v1/tenants/{t}/connection",
    "/v1/tenants/{t}/scope",
    "/v1/tenants/{t}/rules",
    "/v1/tenants/{t}/schedules/tenant",
    "/v1/tenants/{t}/sync",
    "/v1/tenants/{t}/cards?limit=0&cursor=%ff",
    "/v1/runs/not-a-run",
    "/v1/tenants/not-a-uuid/users/x/sync",
];
const CONTENT_TYPES: [&str; 4] = [
    "application/json",
    "text/plain",
    "application/json; charset=utf-16",
    "multipart/form-data; boundary=x",
];

/// One answer: the status, the content type and the body (empty when the connection closed
/// first).
struct Answer {
    status: Option<u16>,
    content_type: String,
    body: Vec<u8>,
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

fn random_body(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..6) {
        0 => Vec::new(),
        1 => (0..rng.random_range(1..512)).map(|_| rng.random()).collect(),
        2 => br#"{"value":[{"subscriptionId":"x","clientState":"y","tenantId":1}]}"#.to_vec(),
        3 => b"[".repeat(rng.random_range(1..5000)),
        4 => br#"{"id":"0b6f2a1e-5c3d-4e8f-9a7b-1c2d3e4f5a6b","name":"x","rules":{"custom_fields":{"a":{"expression":"coalesce(coalesce(coalesce("}}}}"#.to_vec(),
        _ => vec![b'a'; rng.random_range(1..3) << 20],
    }
}

fn random_token(rng: &mut StdRng, real: &str) -> Option<String> {
    match rng.random_range(0..6) {
        0 => None,
        1 => Some(real.to_owned()),
        2 => Some(format!("{real}x")),
        3 => Some("eyJhbGciOiJub25lIn0.eyJyb2xlcyI6WyJhZG1pbiJdfQ.".to_owned()),
        4 => Some("e".repeat(rng.random_range(1..20_000))),
        _ => Some(real.replacen('.', "..", 1)),
    }
}

/// Sends one request (in pieces, some slowly, some cut short) and reads the answer.
async fn send(port: u16, request: &[u8], cut: Option<usize>, slow: bool) -> anyhow::Result<Answer> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let bytes = cut.map_or(request, |at| &request[..at.min(request.len())]);
    // The server may answer and close before the whole request is sent (an oversized body, a
    // method it refuses from the request line): writing then fails with a broken pipe or a
    // reset, and what it answered is read below.
    if slow {
        for chunk in bytes.chunks(bytes.len().div_ceil(5).max(1)) {
            if stream.write_all(chunk).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    } else if stream.write_all(bytes).await.is_err() {
        // As above.
    }
    if cut.is_some() {
        let _ = stream.shutdown().await;
    }
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw)).await;
    ensure!(read.is_ok(), "no answer and no close within 30 s");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    Ok(Answer {
        status,
        content_type,
        body: body.as_bytes().to_vec(),
    })
}

/// One random request at one of the two services; fails on what must never happen, else
/// returns the status (`None`: closed without an answer).
async fn one(
    rng: &mut StdRng,
    tenant: &str,
    ports: (u16, u16),
    token: &str,
) -> anyhow::Result<Option<u16>> {
    let admin = rng.random_bool(0.5);
    let path = if admin {
        ADMIN_PATHS[rng.random_range(0..ADMIN_PATHS.len())].replace("{t}", tenant)
    } else {
        WEBHOOK_PATHS[rng.random_range(0..WEBHOOK_PATHS.len())].to_owned()
    };
    let method = METHODS[rng.random_range(0..METHODS.len())];
    let body = random_body(rng);
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    request.push_str(&format!(
        "Content-Type: {}\r\n",
        CONTENT_TYPES[rng.random_range(0..CONTENT_TYPES.len())]
    ));
    if admin && let Some(bearer) = random_token(rng, token) {
        request.push_str(&format!("Authorization: Bearer {bearer}\r\n"));
    }
    if rng.random_bool(0.05) {
        request.push_str(&format!("X-Junk: {}\r\n", "j".repeat(64 * 1024)));
    }
    // A declared length that lies now and then (longer than the body: a truncated request).
    let declared = if rng.random_bool(0.1) {
        body.len() + 100
    } else {
        body.len()
    };
    request.push_str(&format!("Content-Length: {declared}\r\n\r\n"));
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(&body);
    let complete = declared == body.len();
    let cut = (!complete || rng.random_bool(0.05)).then(|| rng.random_range(0..bytes.len()));
    let slow = rng.random_bool(0.02);
    let port = if admin { ports.1 } else { ports.0 };
    let answer = send(port, &bytes, cut, slow)
        .await
        .with_context(|| format!("{method} {path} ({} bytes)", bytes.len()))?;
    let Some(status) = answer.status else {
        ensure!(
            cut.is_some() || answer.body.is_empty(),
            "{method} {path}: an answer without a status"
        );
        return Ok(None);
    };
    ensure!(
        status < 500,
        "{method} {path}: {status} {}",
        String::from_utf8_lossy(&answer.body)
    );
    let documented = admin && path.starts_with("/v1/") && status >= 400 && method != "HEAD";
    if documented && cut.is_none() && answer.content_type.starts_with("application/problem+json") {
        let problem: serde_json::Value = serde_json::from_slice(&answer.body)
            .with_context(|| format!("{method} {path}: a problem that is not JSON"))?;
        ensure!(
            problem["status"] == status && problem["type"].is_string(),
            "{method} {path}: {status} with {problem}"
        );
    } else if documented && cut.is_none() && status != 413 && status != 431 && status != 405 {
        bail!(
            "{method} {path}: {status} as {:?}, not a problem: {}",
            answer.content_type,
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(Some(status))
}

#[tokio::test]
async fn a_hostile_client_gets_no_5xx_crashes_nothing_and_leaves_no_memory_behind() {
    support::run(Setup::new("hostile", 5), async |p| {
        let seconds: u64 = std::env::var("CARDSYNC_HOSTILE_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20);
        let port = |url: &str| -> anyhow::Result<u16> {
            Ok(url.rsplit(':').next().context("a port")?.parse()?)
        };
        let ports = (
            port(&p.service_url(Service::Webhook)?)?,
            port(&p.operator().server)?,
        );
        let pids = (
            p.pid(Service::Webhook).context("the webhook runs")?,
            p.admin_api_pid().context("the admin API runs")?,
        );
        let baseline = (rss_kib(pids.0)?, rss_kib(pids.1)?);
        let token = p.operator().token()?;
        let seed: u64 = rand::random();
        println!("hostile client: seed {seed}, {seconds} s");
        let started = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for worker in 0..8u64 {
            let (tenant, token) = (p.tenant.to_string(), token.clone());
            let mut rng = StdRng::seed_from_u64(seed ^ worker);
            workers.spawn(async move {
                let mut statuses = BTreeMap::<Option<u16>, u64>::new();
                while started.elapsed() < Duration::from_secs(seconds) {
                    *statuses
                        .entry(one(&mut rng, &tenant, ports, &token).await?)
                        .or_default() += 1;
                }
                anyhow::Ok(statuses)
            });
        }
        let mut statuses = BTreeMap::<Option<u16>, u64>::new();
        while let Some(done) = workers.join_next().await {
            for (status, count) in done?? {
                *statuses.entry(status).or_default() += count;
            }
        }
        println!(
            "{} hostile requests in {:.1} s; answers by status (None: closed unanswered): {statuses:?}",
            statuses.values().sum::<u64>(),
            started.elapsed().as_secs_f64()
        );
        ensure!(
            p.supervise()?.is_empty(),
            "a service exited under the hostile client"
        );
        support::eventually(
            "memory back near its baseline",
            Duration::from_secs(30),
            async || {
                let now = (rss_kib(pids.0)?, rss_kib(pids.1)?);
                println!("resident memory (KiB): baseline {baseline:?}, now {now:?}");
                let near = |now: u64, base: u64| now < 2 * base + 32 * 1024;
                Ok((near(now.0, baseline.0) && near(now.1, baseline.1)).then_some(()))
            },
        )
        .await?;
        Ok(())
    })
    .await;
}
