use crate::support::*;
use cardsync_bus::lapin::BasicProperties;
use cardsync_bus::{
    Consumer, DeadLetterReason, Delivery, Handler, HandlerError, Processed, Publisher, header_int,
    header_str, headers,
};
use cardsync_proto::{BusMessage, GraphChange, LifecycleEvent, Message};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(3);

#[tokio::test]
async fn a_handled_message_is_acknowledged_and_gone() {
    let fixture = Fixture::new().await;
    publish_one(&fixture, "tenant-a").await;
    let consumer = Consumer::new(settings(), fixture.topology.clone(), "work");
    let handler = Scripted::new(|_| Ok(()));

    assert_eq!(
        consumer.process_next(&handler, WAIT).await.unwrap(),
        Processed::Acked
    );
    consumer.close().await;
    // Closing would have returned an unacknowledged message to the queue.
    assert_eq!(fixture.ready(&fixture.work()).await, 0);
    assert_eq!(
        handler.seen(),
        vec![Seen {
            attempt: 1,
            redelivered: false,
            tenant: Some("tenant-a".into())
        }]
    );
    fixture.cleanup().await;
}

#[tokio::test]
async fn an_interrupted_handler_returns_the_message_to_its_queue_without_counting_an_attempt() {
    let fixture = Fixture::new().await;
    publish_one(&fixture, "t").await;
    let consumer = Consumer::new(settings(), fixture.topology.clone(), "work");
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = Scripted::new({
        let calls = calls.clone();
        move |_| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                Err(HandlerError::interrupted("the process is stopping"))
            } else {
                Ok(())
            }
        }
    });

    assert_eq!(
        consumer.process_next(&handler, WAIT).await.unwrap(),
        Processed::Requeued
    );
    // Back on the work queue itself: no retry queue, no delay, no dead letter.
    fixture.wait_ready(&fixture.work(), 1, WAIT).await;
    assert_eq!(
        consumer.process_next(&handler, WAIT).await.unwrap(),
        Processed::Acked
    );
    let seen = handler.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].redelivered, "{seen:?}");
    assert_eq!(seen[1].attempt, 1, "a returned message is not a retry");
    assert_eq!(fixture.ready(&fixture.dlq()).await, 0);
    consumer.close().await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn a_transient_failure_is_retried_after_the_delay_with_the_attempt_incremented() {
    let fixture = Fixture::new().await;
    publish_one(&fixture, "t").await;
    let consumer = Consumer::new(settings(), fixture.topology.clone(), "work");
    let handler = Scripted::new(|attempt| {
        if attempt == 1 {
            Err(HandlerError::transient("graph throttled"))
        } else {
            Ok(())
        }
    });

    let first = consumer.process_next(&handler, WAIT).await.unwrap();
    assert_eq!(
        first,
        Processed::Retried {
            attempt: 2,
            delay: Duration::from_millis(200)
        }
    );
    // It waits in the retry queue, not in the work queue.
    assert_eq!(
        consumer
            .process_next(&handler, Duration::ZERO)
            .await
            .unwrap(),
        Processed::Empty
    );
    assert_eq!(
        consumer.process_next(&handler, WAIT).await.unwrap(),
        Processed::Acked
    );
    let attempts: Vec<u32> = handler.seen().iter().map(|s| s.attempt).collect();
    assert_eq!(attempts, vec![1, 2]);
    consumer.close().await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn a_message_dead_letters_after_max_attempts_with_its_last_error() {
    let fixture = Fixture::new().await;
    publish_one(&fixture, "t").await;
    let consumer = Consumer::new(settings(), fixture.topology.clone(), "work");
    let handler = Scripted::new(|attempt| {
        Err(HandlerError::transient(format!(
            "database down on try {attempt}"
        )))
    });

    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(consumer.process_next(&handler, WAIT).await.unwrap());
    }
    assert!(
        matches!(outcomes[0], Processed::Retried { attempt: 2, .. }),
        "{outcomes:?}"
    );
    assert!(
        matches!(outcomes[1], Processed::Retried { attempt: 3, .. }),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[2], Processed::DeadLettered { reason: DeadLetterReason::AttemptsExhausted, error } if error == "database down on try 3"),
        "{outcomes:?}"
    );

    let dead = fixture
        .take(&fixture.dlq())
        .await
        .expect("the message is in the DLQ");
    assert_eq!(
        header_str(&dead.properties, headers::ERROR),
        Some("database down on try 3")
    );
    assert_eq!(header_int(&dead.properties, headers::ATTEMPT), Some(3));
    assert_eq!(
        header_str(&dead.properties, headers::DEAD_LETTER_REASON),
        Some("attempts-exhausted")
    );
    assert_eq!(
        header_str(&dead.properties, headers::SOURCE_QUEUE),
        Some(fixture.work().as_str())
    );
    assert!(GraphChange::decode(dead.data.as_slice()).is_ok());
    consumer.close().await;
    assert_eq!(fixture.ready(&fixture.work()).await, 0);
    fixture.cleanup().await;
}

#[tokio::test]
async fn a_permanent_failure_dead_letters_at_once() {
    let fixture = Fixture::new().await;
    publish_one(&fixture, "t").await;
    let consumer = Consumer::new(settings(), fixture.topology.clone(), "work");
    let handler = Scripted::new(|_| Err(HandlerError::permanent("unknown tenant")));

    let processed = consumer.process_next(&handler, WAIT).await.unwrap();
    assert_eq!(
        processed,
        Processed::DeadLettered {
            reason: DeadLetterReason::Permanent,
            error: "unknown tenant".into()
        }
    );
    let dead = fixture
        .take(&fixture.dlq())
        .await
        .expect("the message is in the DLQ");
    assert_eq!(
        header_str(&dead.properties, headers::ERROR),
        Some("unknown tenant")
    );
    assert_eq!(header_int(&dead.properties, headers::ATTEMPT), Some(1));
    assert_eq!(handler.seen().len(), 1);
    consumer.close().await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn undecodable_and_wrongly_typed_messages_dead_letter_without_reaching_the_handler() {
    let fixture = Fixture::new().await;
    let typed = |kind: &str| BasicProperties::default().with_type(kind.into());
    fixture
        .put_raw(&[0xff, 0xff, 0xff], typed(GraphChange::TYPE))
        .await;
    fixture
        .put_raw(
            &LifecycleEvent::default().encode_to_vec(),
            typed(LifecycleEvent::TYPE),
        )
        .await;
    let consumer = Consumer::new(settings(), fixture.topology.clone(), "work");
    let handler = Scripted::new(|_| Ok(()));

    let first = consumer.process_next(&handler, WAIT).await.unwrap();
    assert!(
        matches!(
            first,
            Processed::DeadLettered {
                reason: DeadLetterReason::Undecodable,
                ..
            }
        ),
        "{first:?}"
    );
    let second = consumer.process_next(&handler, WAIT).await.unwrap();
    assert!(
        matches!(
            second,
            Processed::DeadLettered {
                reason: DeadLetterReason::WrongType,
                ..
            }
        ),
        "{second:?}"
    );
    assert!(handler.seen().is_empty());
    fixture.wait_ready(&fixture.dlq(), 2, WAIT).await;
    let dead = fixture.take(&fixture.dlq()).await.unwrap();
    assert_eq!(
        header_str(&dead.properties, headers::DEAD_LETTER_REASON),
        Some("undecodable")
    );
    consumer.close().await;
    fixture.cleanup().await;
}

/// Signals when a delivery starts, then waits for `release` (forever if never released).
struct Blocking {
    started: Arc<Notify>,
    release: Arc<Notify>,
    finished: Arc<AtomicUsize>,
}

impl Blocking {
    fn new() -> Self {
        Self {
            started: Arc::default(),
            release: Arc::default(),
            finished: Arc::default(),
        }
    }
}

impl Handler for Blocking {
    type Message = GraphChange;

    fn handle(
        &self,
        _: Delivery<GraphChange>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let (started, release, finished) = (
            self.started.clone(),
            self.release.clone(),
            self.finished.clone(),
        );
        async move {
            started.notify_one();
            release.notified().await;
            finished.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_consumer_died_before_acking_is_redelivered() {
    let fixture = Fixture::new().await;
    let proxy = Proxy::start().await;
    let mut dying_settings = settings_for(&proxy.addr());
    dying_settings.drain_timeout = Duration::from_millis(200);
    let dying = Arc::new(Consumer::new(
        dying_settings,
        fixture.topology.clone(),
        "work",
    ));
    let handler = Arc::new(Blocking::new());
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (dying, handler, shutdown) = (dying.clone(), handler.clone(), shutdown.clone());
        async move { dying.run(handler, shutdown).await }
    });
    publish_one(&fixture, "t").await;
    tokio::time::timeout(WAIT, handler.started.notified())
        .await
        .expect("the handler started");

    // The consumer's connection dies mid-handler and it cannot come back.
    proxy.refuse();
    proxy.cut();

    let survivor = Consumer::new(settings(), fixture.topology.clone(), "work");
    let recorder = Scripted::new(|_| Ok(()));
    assert_eq!(
        survivor.process_next(&recorder, WAIT).await.unwrap(),
        Processed::Acked
    );
    let seen = recorder.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].redelivered, "{seen:?}");
    assert_eq!(seen[0].attempt, 1, "a redelivery is not a retry");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(handler.finished.load(Ordering::SeqCst), 0);
    survivor.close().await;
    fixture.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_resumes_after_its_connection_is_cut() {
    let fixture = Fixture::new().await;
    let proxy = Proxy::start().await;
    let consumer = Arc::new(Consumer::new(
        settings_for(&proxy.addr()),
        fixture.topology.clone(),
        "work",
    ));
    let handler = Arc::new(Scripted::new(|_| Ok(())));
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, handler, shutdown) = (consumer.clone(), handler.clone(), shutdown.clone());
        async move { consumer.run(handler, shutdown).await }
    });

    publish_one(&fixture, "first").await;
    eventually("the first message is handled", WAIT, || {
        handler.seen().len() == 1
    })
    .await;
    // The cut may come before the first message's ack has left, and then the broker delivers
    // it again after the reconnect: the messages are told apart by tenant, not by count.
    proxy.cut();
    publish_one(&fixture, "second").await;
    eventually(
        "the second message is handled after reconnecting",
        Duration::from_secs(10),
        || {
            handler
                .seen()
                .iter()
                .any(|seen| seen.tenant.as_deref() == Some("second"))
        },
    )
    .await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(fixture.ready(&fixture.work()).await, 0);
    fixture.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_work_finish_and_acknowledges_it() {
    let fixture = Fixture::new().await;
    let consumer = Arc::new(Consumer::new(settings(), fixture.topology.clone(), "work"));
    let handler = Arc::new(Blocking::new());
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, handler, shutdown) = (consumer.clone(), handler.clone(), shutdown.clone());
        async move { consumer.run(handler, shutdown).await }
    });
    publish_one(&fixture, "t").await;
    tokio::time::timeout(WAIT, handler.started.notified())
        .await
        .expect("the handler started");

    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !run.is_finished(),
        "run must wait for the in-flight handler"
    );
    handler.release.notify_one();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    assert_eq!(handler.finished.load(Ordering::SeqCst), 1);
    // run closed its connection: an unacknowledged message would be back in the queue.
    assert_eq!(fixture.ready(&fixture.work()).await, 0);
    fixture.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_on_a_stuck_handler_after_the_drain_timeout_and_the_message_survives() {
    let fixture = Fixture::new().await;
    let mut settings = settings();
    settings.drain_timeout = Duration::from_millis(300);
    let consumer = Arc::new(Consumer::new(settings, fixture.topology.clone(), "work"));
    let handler = Arc::new(Blocking::new());
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, handler, shutdown) = (consumer.clone(), handler.clone(), shutdown.clone());
        async move { consumer.run(handler, shutdown).await }
    });
    publish_one(&fixture, "t").await;
    tokio::time::timeout(WAIT, handler.started.notified())
        .await
        .expect("the handler started");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    fixture.wait_ready(&fixture.work(), 1, WAIT).await;
    fixture.cleanup().await;
}

/// Publishes `tenants` in order, one message each, confirmed.
async fn publish_in_order(fixture: &Fixture, tenants: &[String]) {
    let publisher = Publisher::connect(&settings(), fixture.topology.clone())
        .await
        .unwrap();
    let batch = tenants.iter().map(|t| outgoing(fixture, t)).collect();
    publisher.publish_all(batch).await.unwrap();
    publisher.close().await;
}

/// Runs `consumer` with `handler` until `done` holds, then shuts it down cleanly.
async fn run_until<H: Handler>(
    consumer: Consumer,
    handler: Arc<H>,
    what: &str,
    done: impl FnMut() -> bool,
) {
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { consumer.run(handler, shutdown).await }
    });
    eventually(what, Duration::from_secs(10), done).await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_handled_messages_is_acknowledged_in_groups_and_gone() {
    let fixture = Fixture::new().await;
    let tenants: Vec<String> = (0..60).map(|i| format!("t{i}")).collect();
    publish_in_order(&fixture, &tenants).await;
    let handler = Arc::new(Scripted::new(|_| Ok(())));
    // Prefetch 8 of 60: the stream keeps flowing only while acks go out.
    let consumer = Consumer::new(settings(), fixture.topology.clone(), "work");
    let seen = handler.seen.clone();
    run_until(consumer, handler, "60 messages handled", || {
        seen.lock().unwrap().len() >= 60
    })
    .await;

    // Every message once, none redelivered, and none back in the queue after the close.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 60);
    assert!(seen.iter().all(|s| !s.redelivered && s.attempt == 1));
    assert_eq!(fixture.ready(&fixture.work()).await, 0);
    fixture.cleanup().await;
}

/// Holds the delivery of tenant `slow` until released; every other one passes at once.
struct OneSlow {
    release: Arc<Notify>,
    fast_done: Arc<AtomicUsize>,
}

impl Handler for OneSlow {
    type Message = GraphChange;

    fn handle(
        &self,
        delivery: Delivery<GraphChange>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let slow = delivery.tenant_id.as_deref() == Some("slow");
        let (release, fast_done) = (self.release.clone(), self.fast_done.clone());
        async move {
            if slow {
                release.notified().await;
            } else {
                fast_done.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_finished_behind_a_slow_one_are_acknowledged_without_waiting_for_it() {
    let fixture = Fixture::new().await;
    let mut tenants = vec!["slow".to_owned()];
    tenants.extend((0..20).map(|i| format!("t{i}")));
    publish_in_order(&fixture, &tenants).await;
    let mut settings = settings();
    // Four unacknowledged at most: if finished messages waited for the slow first one, the
    // broker would stop after three of them.
    settings.prefetch = 4;
    settings.concurrency = 8;
    let handler = Arc::new(OneSlow {
        release: Arc::default(),
        fast_done: Arc::default(),
    });
    let consumer = Consumer::new(settings, fixture.topology.clone(), "work");
    let (release, fast_done) = (handler.release.clone(), handler.fast_done.clone());
    let mut released = false;
    run_until(consumer, handler, "the slow message handled last", || {
        // Release the slow one only after all twenty others went through.
        if !released && fast_done.load(Ordering::SeqCst) == 20 {
            release.notify_one();
            released = true;
        }
        released
    })
    .await;
    assert_eq!(fast_done.load(Ordering::SeqCst), 20);
    // The slow one finished during the drain and was acknowledged too.
    assert_eq!(fixture.ready(&fixture.work()).await, 0);
    fixture.cleanup().await;
}

/// Records the trace id the handler runs under.
struct TraceProbe {
    traceparent: Arc<std::sync::Mutex<Option<String>>>,
}

impl Handler for TraceProbe {
    type Message = GraphChange;

    fn handle(
        &self,
        _: Delivery<GraphChange>,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let headers = cardsync_telemetry::propagation::current_trace_headers();
        *self.traceparent.lock().unwrap() = headers
            .into_iter()
            .find(|(k, _)| k == "traceparent")
            .map(|(_, v)| v);
        std::future::ready(Ok(()))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_handler_runs_in_the_publishers_trace() {
    // init_for_tests installs the W3C propagator, but its subscriber disables every span unless
    // TEST_LOG is set; this thread gets a subscriber that always records spans instead.
    cardsync_telemetry::init_for_tests();
    let _subscriber = tracing::subscriber::set_default(tracing_with_otel());
    let fixture = Fixture::new().await;
    let publisher = Publisher::connect(&settings(), fixture.topology.clone())
        .await
        .unwrap();
    let outgoing = tracing::info_span!("webhook.request").in_scope(|| outgoing(&fixture, "t"));
    let sent = outgoing
        .headers
        .iter()
        .find(|(k, _)| k == "traceparent")
        .unwrap()
        .1
        .clone();
    publisher.publish_all(vec![outgoing]).await.unwrap();

    let consumer = Consumer::new(settings(), fixture.topology.clone(), "work");
    let probe = TraceProbe {
        traceparent: Arc::default(),
    };
    assert_eq!(
        consumer.process_next(&probe, WAIT).await.unwrap(),
        Processed::Acked
    );
    let seen = probe.traceparent.lock().unwrap().clone().unwrap();
    let trace_id = |traceparent: &str| traceparent.split('-').nth(1).unwrap().to_owned();
    assert_eq!(
        trace_id(&seen),
        trace_id(&sent),
        "sent {sent}, handler saw {seen}"
    );
    assert_ne!(seen, sent, "the handler has its own span");
    consumer.close().await;
    publisher.close().await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn a_queue_outside_the_topology_is_an_error() {
    let consumer = Consumer::new(settings(), small_topology(&prefix()), "nope");
    let error = consumer
        .process_next(&Scripted::new(|_| Ok(())), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        matches!(error, cardsync_bus::BusError::UnknownQueue(_)),
        "{error:?}"
    );
}

fn tracing_with_otel() -> impl tracing::Subscriber + Send + Sync {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let tracer = provider.tracer("bus-test");
    tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// The value of `name{…}` with every one of `labels` in `registry`'s scrape.
fn sample(registry: &cardsync_telemetry::metrics::Registry, name: &str, labels: &[&str]) -> f64 {
    cardsync_telemetry::metrics::render(registry)
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_counts_outcomes_and_reports_its_queues_depth_and_age() {
    let fixture = Fixture::new().await;
    let registry = cardsync_telemetry::metrics::Registry::new();
    let metrics = cardsync_bus::BusMetrics::register(&registry).unwrap();
    let queue = r#"queue="work""#;

    // Before any message every outcome is there, at zero.
    let stepper =
        Consumer::new(settings(), fixture.topology.clone(), "work").with_metrics(&metrics);
    assert_eq!(
        sample(
            &registry,
            "cardsync_bus_messages_total",
            &[queue, r#"outcome="dead_lettered""#]
        ),
        0.0
    );

    // One handled, one dead-lettered at once (a permanent error).
    publish_one(&fixture, "ok").await;
    publish_one(&fixture, "bad").await;
    let handler = Scripted::new(|_| Ok(()));
    assert_eq!(
        stepper.process_next(&handler, WAIT).await.unwrap(),
        Processed::Acked
    );
    let refusing = Scripted::new(|_| Err(HandlerError::permanent("not a GraphChange we know")));
    assert!(matches!(
        stepper.process_next(&refusing, WAIT).await.unwrap(),
        Processed::DeadLettered { .. }
    ));
    stepper.close().await;
    assert_eq!(
        sample(
            &registry,
            "cardsync_bus_messages_total",
            &[queue, r#"outcome="acked""#]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &registry,
            "cardsync_bus_messages_total",
            &[queue, r#"outcome="dead_lettered""#]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &registry,
            "cardsync_bus_message_age_seconds_count",
            &[queue]
        ),
        2.0
    );

    // A slow consumer (prefetch 1, 50 ms a message) samples its queue's depth as it starts.
    let publisher = Publisher::connect(&settings(), fixture.topology.clone())
        .await
        .unwrap();
    publisher
        .publish_all(
            (0..20)
                .map(|i| outgoing(&fixture, &format!("waiting-{i}")))
                .collect(),
        )
        .await
        .unwrap();
    publisher.close().await;
    let slow = Arc::new(Scripted::new(|_| {
        std::thread::sleep(Duration::from_millis(50));
        Ok(())
    }));
    let mut narrow = settings();
    narrow.prefetch = 1;
    narrow.concurrency = 1;
    let consumer =
        Arc::new(Consumer::new(narrow, fixture.topology.clone(), "work").with_metrics(&metrics));
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (consumer, handler, shutdown) = (consumer.clone(), slow.clone(), shutdown.clone());
        async move { consumer.run(handler, shutdown).await }
    });
    eventually("the depth is sampled", WAIT, || {
        sample(&registry, "cardsync_bus_queue_messages", &[queue]) >= 5.0
    })
    .await;
    eventually("every message is handled", Duration::from_secs(30), || {
        slow.seen().len() == 20
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    fixture.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_gives_up_on_a_broker_that_stopped_answering() {
    let fixture = Fixture::new().await;
    let proxy = Proxy::start().await;
    let consumer = Consumer::new(
        settings_for(&proxy.addr()),
        fixture.topology.clone(),
        "work",
    );
    publish_one(&fixture, "t").await;
    let recorder = Scripted::new(|_| Ok(()));
    assert_eq!(
        consumer.process_next(&recorder, WAIT).await.unwrap(),
        Processed::Acked
    );

    proxy.freeze();
    let started = std::time::Instant::now();
    consumer.close().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "the close waited for the silent broker for about its 2 s budget, not {took:?}"
    );
    proxy.cut();
    fixture.cleanup().await;
}
