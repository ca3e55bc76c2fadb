//! The `graph-sim bench` measurement: seed a large tenant and enumerate `/users/delta` over loopback HTTP.

use std::time::Instant;

use serde_json::{Value, json};

use crate::{SimConfig, SpawnError, spawn};

/// Why the benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The simulator did not start.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// An HTTP call failed.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    /// A response was not what the benchmark expects.
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

/// The figures `graph-sim bench` prints.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Users seeded.
    pub users: usize,
    /// Seconds for the seed call (control API, over HTTP).
    pub seed_seconds: f64,
    /// Seconds for the full delta enumeration.
    pub delta_seconds: f64,
    /// Delta pages fetched.
    pub pages: usize,
    /// Objects received.
    pub objects: usize,
    /// Peak resident set size of this process (VmHWM), MiB.
    pub peak_rss_mib: f64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "graph-sim bench users={}", self.users)?;
        writeln!(f, "seed_seconds={:.3}", self.seed_seconds)?;
        writeln!(
            f,
            "delta_seconds={:.3} pages={} objects={}",
            self.delta_seconds, self.pages, self.objects
        )?;
        write!(f, "peak_rss_mib={:.1}", self.peak_rss_mib)
    }
}

/// Peak RSS of this process in MiB, from `/proc/self/status` (0 where unavailable).
pub fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn post_json(client: &reqwest::Client, url: &str, body: Value) -> Result<Value, BenchError> {
    let resp = client.post(url).json(&body).send().await?;
    if !resp.status().is_success() {
        return Err(BenchError::Unexpected(format!("{url}: {}", resp.status())));
    }
    Ok(resp.json().await?)
}

/// Seeds `users` users and enumerates `/users/delta` with `Prefer: odata.maxpagesize={page_size}`.
pub async fn run(users: usize, page_size: usize) -> Result<BenchReport, BenchError> {
    let sim = spawn(SimConfig::default()).await?;
    let client = reqwest::Client::new();
    let control = sim.control_url().to_owned();
    let tenant = post_json(&client, &format!("{control}/control/tenants"), json!({})).await?;
    let tid = tenant["id"].as_str().unwrap_or_default().to_owned();
    let app = post_json(
        &client,
        &format!("{control}/control/tenants/{tid}/apps"),
        json!({"secret": true, "permissions": ["User.Read.All"]}),
    )
    .await?;
    // The benchmark measures the simulator, not the throttle.
    client
        .put(format!("{control}/control/throttle"))
        .json(&json!({"enabled": false}))
        .send()
        .await?;

    let started = Instant::now();
    post_json(
        &client,
        &format!("{control}/control/tenants/{tid}/seed"),
        json!({"users": users, "seed": 1, "groups": false}),
    )
    .await?;
    let seed_seconds = started.elapsed().as_secs_f64();

    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", app["clientId"].as_str().unwrap_or_default()),
        ("client_secret", app["secret"].as_str().unwrap_or_default()),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let request = client
        .post(sim.token_url(&tid))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body);
    let token: Value = request.send().await?.json().await?;
    let bearer = token["access_token"]
        .as_str()
        .ok_or_else(|| BenchError::Unexpected(token.to_string()))?
        .to_owned();

    let select = "displayName,givenName,surname,mail,userPrincipalName,jobTitle,companyName,department,mobilePhone,businessPhones,streetAddress,city,state,postalCode,country,employeeId,accountEnabled";
    let mut url = format!("{}/v1.0/users/delta?$select={select}", sim.graph_url());
    let (mut pages, mut objects) = (0, 0);
    let started = Instant::now();
    loop {
        let resp = client
            .get(&url)
            .bearer_auth(&bearer)
            .header("Prefer", format!("odata.maxpagesize={page_size}"))
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(BenchError::Unexpected(format!(
                "delta page {pages}: {}",
                resp.status()
            )));
        }
        let body: Value = resp.json().await?;
        pages += 1;
        objects += body["value"].as_array().map_or(0, Vec::len);
        match body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    let delta_seconds = started.elapsed().as_secs_f64();
    sim.shutdown().await;
    Ok(BenchReport {
        users,
        seed_seconds,
        delta_seconds,
        pages,
        objects,
        peak_rss_mib: peak_rss_mib(),
    })
}
