//! graph-sim: a Microsoft Graph and Microsoft identity platform simulator for cardsync's tests, demo and
//! benchmarks.
//!
//! [`spawn`] starts two HTTP servers on loopback: the Graph surface (token endpoint, `/v1.0` directory reads,
//! delta, subscriptions) and a separate control API used to set up tenants, seed and mutate directories, inject
//! faults and read back counters and the delivery log. Behaviour follows `graph-facts.md`; see the README for
//! the endpoint list and fidelity notes.

pub mod bench;
pub mod clock;
pub mod control;
pub mod control_client;
pub mod delivery;
pub mod delta;
pub mod directory;
pub mod graph;
pub mod identity;
pub mod seed;
pub mod state;
pub mod subscriptions;
pub mod throttle;
pub mod tls;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use tokio_util::sync::CancellationToken;

use crate::clock::SimClock;
use crate::delivery::Notifier;
use crate::identity::SigningKey;
use crate::state::{Settings, Sim};

/// Start-up settings of a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where the Graph and identity endpoints listen (port 0 = any free port).
    pub graph_listen: SocketAddr,
    /// Where the control API listens.
    pub control_listen: SocketAddr,
    /// Compresses simulated waits (retry back-off, slow/drop windows): 3600 turns an hour into a second.
    pub time_scale: f64,
    /// Access token lifetime (`expires_in`), seconds.
    pub token_lifetime_secs: i64,
    /// HTTP worker threads per server.
    pub workers: usize,
    /// Also serve the Graph and identity endpoints over HTTPS (on `https_listen`); plain HTTP stays available.
    pub tls: bool,
    /// Where the HTTPS listener binds when `tls` is on.
    pub https_listen: SocketAddr,
    /// Serve these PEM files instead of a generated CA + server certificate.
    pub tls_files: Option<tls::TlsFiles>,
    /// Where to write the CA PEM clients must trust (default: a file in the temp directory named after the port).
    pub ca_out: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            graph_listen: loopback,
            control_listen: loopback,
            time_scale: 1.0,
            token_lifetime_secs: 3599,
            workers: 2,
            tls: false,
            https_listen: loopback,
            tls_files: None,
            ca_out: None,
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// Binding a listener failed.
    #[error("binding {addr} failed")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The token-signing key could not be generated.
    #[error("generating the token-signing key failed")]
    Key(#[from] identity::KeyError),
    /// The outbound HTTP client could not be built.
    #[error("building the HTTP client failed")]
    Client(#[from] reqwest::Error),
    /// The server could not start.
    #[error("starting the HTTP server failed")]
    Serve(#[source] std::io::Error),
    /// The TLS certificates could not be generated, loaded or written.
    #[error("preparing TLS failed")]
    Tls(#[from] tls::TlsError),
}

/// The HTTPS side of a running simulator.
#[derive(Debug)]
struct HttpsInfo {
    url: String,
    ca_pem: String,
    ca_file: PathBuf,
    /// The CA file was placed in the temp directory by us (no `ca_out`), so it goes when the simulator does.
    owns_ca_file: bool,
}

impl Drop for HttpsInfo {
    fn drop(&mut self) {
        if self.owns_ca_file {
            let _ = std::fs::remove_file(&self.ca_file);
        }
    }
}

/// A running simulator; dropping it stops the servers and background work.
#[derive(Debug)]
pub struct RunningSim {
    graph_url: String,
    control_url: String,
    https: Option<HttpsInfo>,
    sim: web::Data<Sim>,
    handles: Vec<ServerHandle>,
    cancel: CancellationToken,
}

impl RunningSim {
    /// Base URL of the Graph and identity endpoints (`http://127.0.0.1:PORT`).
    pub fn graph_url(&self) -> &str {
        &self.graph_url
    }

    /// Base URL of the control API.
    pub fn control_url(&self) -> &str {
        &self.control_url
    }

    /// Base URL of the Graph and identity endpoints over HTTPS (`https://127.0.0.1:PORT`), when `tls` is on.
    pub fn https_url(&self) -> Option<&str> {
        self.https.as_ref().map(|h| h.url.as_str())
    }

    /// PEM of the CA that signed the HTTPS certificate, when `tls` is on.
    pub fn ca_pem(&self) -> Option<&str> {
        self.https.as_ref().map(|h| h.ca_pem.as_str())
    }

    /// The file holding [`Self::ca_pem`], when `tls` is on.
    pub fn ca_file(&self) -> Option<&Path> {
        self.https.as_ref().map(|h| h.ca_file.as_path())
    }

    /// The token endpoint of a tenant.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.graph_url)
    }

    /// Direct access to the simulator state (for in-process callers such as the benchmark).
    pub fn state(&self) -> &Sim {
        &self.sim
    }

    /// Stops both servers gracefully and ends background work.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for h in self.handles.drain(..) {
            h.stop(true).await;
        }
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            for h in self.handles.drain(..) {
                rt.spawn(async move { h.stop(false).await });
            }
        }
    }
}

fn bind(addr: SocketAddr, scheme: &str) -> Result<(TcpListener, String), SpawnError> {
    let listener = TcpListener::bind(addr).map_err(|source| SpawnError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| SpawnError::Bind { addr, source })?;
    Ok((listener, format!("{scheme}://{local}")))
}

/// Binds the HTTPS listener, prepares the certificates and writes the CA PEM.
fn prepare_https(
    config: &SimConfig,
) -> Result<Option<(TcpListener, tls::TlsMaterial, HttpsInfo)>, SpawnError> {
    if !config.tls {
        return Ok(None);
    }
    let material = match &config.tls_files {
        Some(files) => tls::load(files)?,
        None => tls::generate()?,
    };
    let (listener, url) = bind(config.https_listen, "https")?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let owns_ca_file = config.ca_out.is_none();
    let ca_file = config.ca_out.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("graph-sim-{}-{port}-ca.pem", std::process::id()))
    });
    tls::write_ca(&ca_file, &material.ca_pem)?;
    let info = HttpsInfo {
        url,
        ca_pem: material.ca_pem.clone(),
        ca_file,
        owns_ca_file,
    };
    Ok(Some((listener, material, info)))
}

/// Starts the simulator on the current Tokio runtime.
pub async fn spawn(config: SimConfig) -> Result<RunningSim, SpawnError> {
    // ring is the workspace's single rustls provider; an earlier install by the host process is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clock = Arc::new(SimClock::new(config.time_scale));
    let keys = SigningKey::generate()?;
    let http = reqwest::Client::builder().build()?;
    let cancel = CancellationToken::new();
    let notifier = Notifier::new(
        http.clone(),
        clock.clone(),
        tokio::runtime::Handle::current(),
        cancel.clone(),
    );
    let settings = Settings {
        token_lifetime_secs: config.token_lifetime_secs,
    };
    let sim = web::Data::new(Sim::new(clock, keys, settings, http, notifier));

    let (graph_listener, graph_url) = bind(config.graph_listen, "http")?;
    let (control_listener, control_url) = bind(config.control_listen, "http")?;
    let https = prepare_https(&config)?;
    let data = sim.clone();
    let mut graph = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(4 * 1024 * 1024))
            .wrap(actix_web::middleware::from_fn(graph::stamp_ids))
            .wrap(actix_web::middleware::from_fn(graph::log_request))
            .configure(graph::configure)
            .default_service(web::to(graph::unknown_route))
    })
    .workers(config.workers.max(1))
    .disable_signals()
    .listen(graph_listener)
    .map_err(SpawnError::Serve)?;
    let https = match https {
        Some((listener, material, info)) => {
            graph = graph
                .listen_rustls_0_23(listener, (*material.server).clone())
                .map_err(SpawnError::Serve)?;
            Some(info)
        }
        None => None,
    };
    let graph = graph.run();
    let data = sim.clone();
    let control = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
            .app_data(web::JsonConfig::default().limit(16 * 1024 * 1024))
            .configure(control::configure)
    })
    .workers(config.workers.max(1))
    // The control API's clients (tests, the demo, the soak) keep connections idle for longer
    // than actix's 5 s default, and a server closing an idle connection as a client reuses it
    // resets that request: the keep-alive outlasts the clients' pools (see `Control::new`).
    .keep_alive(Duration::from_secs(120))
    // A busy 2-core machine can take seconds to send a large request.
    .client_request_timeout(Duration::from_secs(60))
    .disable_signals()
    .listen(control_listener)
    .map_err(SpawnError::Serve)?
    .run();
    let handles = vec![graph.handle(), control.handle()];
    tokio::spawn(graph);
    tokio::spawn(control);
    spawn_housekeeping(sim.clone(), cancel.clone());
    Ok(RunningSim {
        graph_url,
        control_url,
        https,
        sim,
        handles,
        cancel,
    })
}

fn spawn_housekeeping(sim: web::Data<Sim>, cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = every.tick() => sim.tick(),
            }
        }
    });
}
