//! The migration policy: a service never migrates; against a database older than its
//! migrations it is not ready (both versions shown) and waits; `migrate` makes it current.

use crate::start;
use cardsync_config::PostgresSettings;
use cardsync_runtime::{Readiness, SchemaGate};
use cardsync_testkit::FreshDatabase;
use secrecy::SecretString;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn postgres(url: &str) -> PostgresSettings {
    PostgresSettings {
        url: SecretString::from(url.to_owned()),
        max_connections: 2,
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn a_service_on_an_unmigrated_database_is_not_ready_until_migrate_ran() {
    let database = FreshDatabase::create().await;
    let pool = database.pool().await;
    let gate = SchemaGate::new(pool.clone());
    let running = start(
        Readiness::new().schema(gate.clone()),
        Duration::from_secs(5),
        Duration::ZERO,
    );
    let ready = running.get("/health/ready").await;
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("json");
    let required = cardsync_store::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .expect("migrations are embedded");
    assert_eq!(body["schema"]["database"], serde_json::Value::Null);
    assert_eq!(body["schema"]["required"], required);
    assert_eq!(body["status"], "not_ready");

    // Serving never migrated anything.
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&pool)
    .await
    .expect("counts tables");
    assert_eq!(tables, 0);

    // A worker waiting for the schema starts once `migrate` ran (as the Helm Job would).
    let waiting = tokio::spawn({
        let gate = gate.clone();
        async move { gate.wait_until_current(&CancellationToken::new()).await }
    });
    cardsync_runtime::migrate(&postgres(&database.url))
        .await
        .expect("migrate applies every migration");
    let started = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the waiting worker starts after migrate")
        .expect("joins");
    assert!(started);

    let ready = running.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["schema"]["database"], required);
    assert_eq!(body["schema"]["current"], true);

    running.shutdown.cancel();
    let _ = running.server.await;
    pool.close().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_worker_waiting_for_its_schema_gives_up_on_shutdown() {
    let database = FreshDatabase::create().await;
    let pool = database.pool().await;
    let gate = SchemaGate::new(pool.clone());
    let shutdown = CancellationToken::new();
    let waiting = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { gate.wait_until_current(&shutdown).await }
    });
    shutdown.cancel();
    let started = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("returns on shutdown")
        .expect("joins");
    assert!(!started, "it must not start work on an unmigrated database");
    pool.close().await;
    database.drop_database().await;
}
