//! The delta-worker's readiness names every dependency it really has: the database, Redis and
//! the broker it publishes card commands to.

use cardsync_config::Sources;
use delta_worker::{Application, Settings};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn it_is_not_ready_while_the_broker_is_unreachable() {
    cardsync_testkit::init();
    let _pool = cardsync_testkit::test_pool().await;
    let prefix = cardsync_testkit::unique_prefix("dwh");
    let env = [
        ("CARDSYNC__HTTP__LISTEN", "127.0.0.1:0".to_owned()),
        ("CARDSYNC__TOPOLOGY__PREFIX", prefix.clone()),
        ("CARDSYNC__POSTGRES__URL", cardsync_testkit::database_url()),
        ("CARDSYNC__SECRETS__DEVELOPMENT", "true".to_owned()),
        ("CARDSYNC__REDIS__URL", cardsync_testkit::redis_url()),
        ("CARDSYNC__REDIS__KEY_PREFIX", prefix),
        // Nothing listens on port 1.
        (
            "CARDSYNC__BUS__URL",
            "amqp://guest:guest@127.0.0.1:1/%2f".to_owned(),
        ),
        ("CARDSYNC__BUS__CONNECT_TIMEOUT", "500ms".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let settings = Settings::load(&Sources {
        file: None,
        env: Some(env),
    })
    .expect("valid settings");
    let app = Application::build(settings).await.expect("builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    let ready = reqwest::get(format!("{address}/health/ready"))
        .await
        .expect("answers");
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["broker"], false, "{body}");
    assert_eq!(body["database"], true, "{body}");
    assert_eq!(body["redis"], true, "{body}");
    assert_eq!(body["schema"]["current"], true, "{body}");

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(30), running).await;
    assert!(stopped.is_ok(), "the delta-worker stops on shutdown");
}
