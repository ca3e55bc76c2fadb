//! One telemetry init for every cardsync service: structured logs, OpenTelemetry traces
//! (exported over OTLP/HTTP only when an endpoint is configured), W3C trace-context
//! propagation helpers for the bus, and the per-process Prometheus registry.

mod budget;
mod errors;
pub mod metrics;
pub mod propagation;

pub use budget::LogBudget;
pub use errors::error_chain;

use cardsync_config::{LogFormat, TelemetrySettings};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// What can stop telemetry from starting.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter directive does not parse.
    #[error("telemetry.log_filter is invalid")]
    InvalidFilter(#[source] tracing_subscriber::filter::ParseError),
    /// The OTLP exporter could not be built.
    #[error("the OTLP trace exporter could not be built")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// A global subscriber was installed already.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled(#[source] tracing_subscriber::util::TryInitError),
}

/// Keeps the tracer provider alive; dropping it flushes spans still buffered for export.
#[must_use = "dropping the guard stops trace export"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Nothing useful can be done with a flush failure at exit; the exporter logs it itself.
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber and propagator for `service`.
pub fn init(
    service: &'static str,
    settings: &TelemetrySettings,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_new(&settings.log_filter).map_err(TelemetryError::InvalidFilter)?;
    let provider = tracer_provider(service, settings)?;
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    // The log filter applies to log output only. Spans at INFO and above always exist for the
    // OpenTelemetry layer, so trace context forms (and crosses the bus) even when logs are quiet.
    let otel = otel.with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let registry = tracing_subscriber::registry().with(otel);
    let result = match settings.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_filter(filter),
            )
            .try_init(),
    };
    result.map_err(TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard { provider })
}

/// Installs a quiet subscriber with trace propagation for tests; later calls are no-ops.
///
/// Spans get real OpenTelemetry contexts, so tests can check that a `traceparent` crosses the bus.
pub fn init_for_tests() {
    static ONCE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let provider = SdkTracerProvider::builder().build();
        let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        // The filter quietens log output only; spans must exist for trace context to form.
        let filter = EnvFilter::try_from_env("TEST_LOG").unwrap_or_else(|_| EnvFilter::new("off"));
        let _ = tracing_subscriber::registry()
            .with(otel)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(filter),
            )
            .try_init();
        // The provider must outlive every test span.
        std::mem::forget(provider);
    });
}

fn tracer_provider(
    service: &'static str,
    settings: &TelemetrySettings,
) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = Resource::builder().with_service_name(service).build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = &settings.otlp_endpoint {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig as _};
        // The HTTP exporter takes the full signal URL; operators configure the collector's base.
        let mut url = endpoint.clone();
        if url.path() == "/" || url.path().is_empty() {
            url.set_path("/v1/traces");
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url.as_str())
            .with_headers(Default::default())
            .build()
            .map_err(TelemetryError::Exporter)?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}
