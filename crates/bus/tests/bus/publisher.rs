use crate::support::*;
use cardsync_bus::{PublishError, Publisher, header_str, headers};
use cardsync_proto::{BusMessage, GraphChange, Message};
use cardsync_telemetry::propagation::is_valid_traceparent;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_confirmed_publish_is_on_the_queue_with_type_id_persistence_tenant_and_trace() {
    let fixture = Fixture::new().await;
    let publisher = Publisher::connect(&settings(), fixture.topology.clone())
        .await
        .unwrap();
    let message = change("tenant-a");
    let outgoing = cardsync_bus::Outgoing::new(&fixture.graph(), "change.tenant-a", &message);
    publisher.publish_all(vec![outgoing]).await.unwrap();

    let delivery = fixture
        .take(&fixture.work())
        .await
        .expect("the message is on the queue");
    let properties = &delivery.properties;
    assert_eq!(
        properties.kind().as_ref().unwrap().as_str(),
        GraphChange::TYPE
    );
    let envelope = message.envelope.as_ref().unwrap();
    assert_eq!(
        properties.message_id().as_ref().unwrap().as_str(),
        envelope.message_id
    );
    assert_eq!(*properties.delivery_mode(), Some(2));
    assert_eq!(
        properties.content_type().as_ref().unwrap().as_str(),
        cardsync_bus::CONTENT_TYPE
    );
    assert_eq!(header_str(properties, headers::TENANT_ID), Some("tenant-a"));
    assert!(is_valid_traceparent(
        header_str(properties, headers::TRACEPARENT).unwrap()
    ));
    assert_eq!(
        GraphChange::decode(delivery.data.as_slice()).unwrap(),
        message
    );
    publisher.close().await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn an_unroutable_publish_is_an_error_and_the_publisher_stays_usable() {
    let fixture = Fixture::new().await;
    let publisher = Publisher::connect(&settings(), fixture.topology.clone())
        .await
        .unwrap();
    let lost = cardsync_bus::Outgoing::new(&fixture.graph(), "nobody.listens", &change("t"));
    let error = publisher
        .publish_all(vec![outgoing(&fixture, "t"), lost])
        .await
        .unwrap_err();
    match error {
        PublishError::Unroutable {
            exchange,
            routing_key,
        } => {
            assert_eq!(exchange, fixture.graph());
            assert_eq!(routing_key, "nobody.listens");
        }
        other => panic!("expected Unroutable, got {other:?}"),
    }
    publisher
        .publish_all(vec![outgoing(&fixture, "t")])
        .await
        .unwrap();
    assert_eq!(fixture.ready(&fixture.work()).await, 2);
    publisher.close().await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn a_missing_exchange_is_an_error_not_a_hang() {
    let fixture = Fixture::new().await;
    let publisher = Publisher::connect(&settings(), fixture.topology.clone())
        .await
        .unwrap();
    let nowhere = cardsync_bus::Outgoing::new(
        &format!("{}missing", fixture.topology.prefix()),
        "change.t",
        &change("t"),
    );
    let error = publisher.publish_all(vec![nowhere]).await.unwrap_err();
    assert!(matches!(error, PublishError::Unconfirmed(_)), "{error:?}");
    publisher
        .publish_all(vec![outgoing(&fixture, "t")])
        .await
        .unwrap();
    publisher.close().await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn an_unreachable_broker_is_reported_fast() {
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut settings = settings_for(&format!("127.0.0.1:{port}"));
    settings.connect_timeout = Duration::from_secs(1);
    let publisher = Publisher::lazy(&settings, small_topology(&prefix()));

    let started = Instant::now();
    let error = publisher
        .publish_all(vec![cardsync_bus::Outgoing::new(
            "x",
            "change.t",
            &change("t"),
        )])
        .await
        .unwrap_err();
    assert!(matches!(error, PublishError::Unreachable(_)), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        started.elapsed()
    );
    assert!(!publisher.is_ready().await);
    assert!(
        Publisher::connect(&settings, small_topology(&prefix()))
            .await
            .is_err()
    );
    // The error names no secret.
    assert!(
        !format!("{error:?} {}", cardsync_telemetry::error_chain(&error)).contains("guest:guest")
    );
}

#[tokio::test]
async fn a_lazy_publisher_connects_on_first_use() {
    let fixture = Fixture::new().await;
    let publisher = Publisher::lazy(&settings(), fixture.topology.clone());
    assert!(publisher.is_ready().await);
    publisher
        .publish_all(vec![outgoing(&fixture, "t")])
        .await
        .unwrap();
    assert_eq!(fixture.ready(&fixture.work()).await, 1);
    publisher.close().await;
    fixture.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_100_lands_completely_and_concurrent_batches_too() {
    let fixture = Fixture::new().await;
    let publisher = Publisher::connect(&settings(), fixture.topology.clone())
        .await
        .unwrap();
    let batch = (0..100)
        .map(|i| outgoing(&fixture, &format!("t{i}")))
        .collect();
    publisher.publish_all(batch).await.unwrap();
    fixture
        .wait_ready(&fixture.work(), 100, Duration::from_secs(5))
        .await;

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let publisher = publisher.clone();
        let batch: Vec<_> = (0..50).map(|_| outgoing(&fixture, "t")).collect();
        tasks.spawn(async move { publisher.publish_all(batch).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    fixture
        .wait_ready(&fixture.work(), 600, Duration::from_secs(5))
        .await;
    publisher.close().await;
    fixture.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_reconnects_after_the_connection_drops() {
    let fixture = Fixture::new().await;
    let proxy = Proxy::start().await;
    let publisher = Publisher::connect(&settings_for(&proxy.addr()), fixture.topology.clone())
        .await
        .unwrap();
    publisher
        .publish_all(vec![outgoing(&fixture, "t")])
        .await
        .unwrap();

    proxy.cut();
    // The call that meets the broken connection may fail (503 for the webhook); the next succeeds.
    let mut failures = 0;
    while let Err(error) = publisher.publish_all(vec![outgoing(&fixture, "t")]).await {
        failures += 1;
        assert!(failures < 2, "still failing after a reconnect: {error:?}");
    }
    fixture
        .wait_ready(&fixture.work(), 2, Duration::from_secs(5))
        .await;

    proxy.refuse();
    proxy.cut();
    let started = Instant::now();
    let error = loop {
        if let Err(error) = publisher.publish_all(vec![outgoing(&fixture, "t")]).await {
            break error;
        }
    };
    assert!(
        matches!(
            error,
            PublishError::Unreachable(_) | PublishError::Unconfirmed(_)
        ),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    publisher.close().await;
    fixture.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_gives_up_on_a_broker_that_stopped_answering() {
    let fixture = Fixture::new().await;
    let proxy = Proxy::start().await;
    let mut settings = settings_for(&proxy.addr());
    // A patient connect timeout (the tests' own is 20 s) must not make a stopping service wait.
    settings.connect_timeout = Duration::from_secs(30);
    let publisher = Publisher::connect(&settings, fixture.topology.clone())
        .await
        .unwrap();
    publisher
        .publish_all(vec![outgoing(&fixture, "t")])
        .await
        .unwrap();
    fixture
        .wait_ready(&fixture.work(), 1, Duration::from_secs(5))
        .await;

    proxy.freeze();
    let started = Instant::now();
    publisher.close().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "the close waited for the silent broker for about its 2 s budget, not {took:?}"
    );
    proxy.cut();
    fixture.cleanup().await;
}

/// actix gives each HTTP worker a runtime of its own, and a readiness probe may be the first to
/// use a service's publisher; that worker's runtime stops before the service closes the publisher.
#[test]
fn a_connection_first_opened_on_a_short_lived_runtime_outlives_it() {
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (fixture, publisher) = main.block_on(async {
        let fixture = Fixture::new().await;
        let publisher = Publisher::lazy(&settings(), fixture.topology.clone());
        (fixture, publisher)
    });
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let worker = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                assert!(worker.block_on(publisher.is_ready()));
            })
            .join()
            .unwrap();
    });
    main.block_on(async {
        publisher
            .publish_all(vec![outgoing(&fixture, "t")])
            .await
            .expect("the connection outlived the runtime that first used it");
        fixture
            .wait_ready(&fixture.work(), 1, Duration::from_secs(5))
            .await;
        let started = Instant::now();
        publisher.close().await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the broker answered the close: {:?}",
            started.elapsed()
        );
        fixture.cleanup().await;
    });
}
