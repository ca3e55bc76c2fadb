//! `/health/live`, `/health/ready` and `/metrics`. Readiness runs the checks a service names
//! (its broker, database, Redis…) at once, plus the schema gate: a service never reports ready
//! against a database older than its migrations.

use crate::http::Observability;
use crate::schema::SchemaGate;
use actix_web::{HttpResponse, web};
use futures_util::future::{BoxFuture, join_all};
use std::fmt;
use std::future::Future;
use std::sync::Arc;

type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// What `/health/ready` checks. Each check answers whether one dependency is usable right now.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, CheckFn)>,
    schema: Option<SchemaGate>,
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.checks.iter().map(|(name, _)| *name).collect();
        f.debug_struct("Readiness")
            .field("checks", &names)
            .field("schema", &self.schema.is_some())
            .finish()
    }
}

/// The readiness verdict and the body `/health/ready` answers with.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Every check passed and the schema is current.
    pub ready: bool,
    /// `{"status": "ready"|"not_ready", "<check>": bool, …, "schema": {…}}`.
    pub body: serde_json::Value,
}

impl Readiness {
    /// No checks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check named `name` (a key of the readiness body).
    pub fn check<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.checks
            .push((name, Arc::new(move || Box::pin(check()))));
        self
    }

    /// Adds a check named `name` that asks `check` about (a clone of) `target`, e.g. a publisher
    /// whether it is connected.
    pub fn probe<T, F, Fut>(self, name: &'static str, target: T, check: F) -> Self
    where
        T: Clone + Send + Sync + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.check(name, move || check(target.clone()))
    }

    /// Adds the `database` check (PostgreSQL answers a trivial query on `pool`).
    pub fn database(self, pool: sqlx::PgPool) -> Self {
        self.probe("database", pool, |pool| async move {
            cardsync_store::ping(&pool).await
        })
    }

    /// Adds the schema gate: not ready while the database lacks a migration this binary embeds.
    pub fn schema(mut self, gate: SchemaGate) -> Self {
        self.schema = Some(gate);
        self
    }

    /// Runs every check at once.
    pub async fn evaluate(&self) -> Verdict {
        let checks = join_all(self.checks.iter().map(|(_, check)| check()));
        let schema = async {
            match &self.schema {
                Some(gate) => Some(gate.version().await),
                None => None,
            }
        };
        let (results, schema) = tokio::join!(checks, schema);
        let mut body = serde_json::Map::new();
        let mut ready = results.iter().all(|ok| *ok);
        for ((name, _), ok) in self.checks.iter().zip(&results) {
            body.insert((*name).to_owned(), (*ok).into());
        }
        match schema {
            None => {}
            Some(Ok(version)) => {
                ready &= version.current;
                body.insert(
                    "schema".into(),
                    serde_json::json!({
                        "database": version.database,
                        "required": version.required,
                        "current": version.current,
                    }),
                );
            }
            Some(Err(_)) => {
                ready = false;
                body.insert(
                    "schema".into(),
                    serde_json::json!({ "database": null, "current": false }),
                );
            }
        }
        body.insert(
            "status".into(),
            if ready { "ready" } else { "not_ready" }.into(),
        );
        Verdict {
            ready,
            body: body.into(),
        }
    }
}

/// Registers the three routes every service serves.
pub(crate) fn configure(config: &mut web::ServiceConfig) {
    config
        .service(web::resource("/health/live").route(web::get().to(live)))
        .service(web::resource("/health/ready").route(web::get().to(ready)))
        .service(web::resource("/metrics").route(web::get().to(metrics)));
}

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "live" }))
}

async fn ready(observability: web::Data<Observability>) -> HttpResponse {
    let verdict = observability.readiness.evaluate().await;
    if verdict.ready {
        HttpResponse::Ok().json(verdict.body)
    } else {
        HttpResponse::ServiceUnavailable().json(verdict.body)
    }
}

async fn metrics(observability: web::Data<Observability>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(cardsync_telemetry::metrics::render(&observability.registry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_check_is_reported_and_one_failure_makes_it_not_ready() {
        let readiness = Readiness::new()
            .check("broker", || async { true })
            .check("database", || async { false });
        let verdict = readiness.evaluate().await;
        assert!(!verdict.ready);
        assert_eq!(
            verdict.body,
            serde_json::json!({"status": "not_ready", "broker": true, "database": false})
        );
    }

    #[tokio::test]
    async fn no_failed_check_is_ready() {
        let verdict = Readiness::new()
            .check("broker", || async { true })
            .evaluate()
            .await;
        assert!(verdict.ready);
        assert_eq!(verdict.body["status"], "ready");
    }
}
