use crate::support::*;
use cardsync_bus::lapin::options::QueueDeclareOptions;
use cardsync_bus::lapin::types::FieldTable;
use cardsync_bus::{Outgoing, Publisher, QueueLimit, Topology, names, routing};
use cardsync_proto::Message as _;
use cardsync_proto::{CardCommand, CardEvent, Cause, Envelope, SyncRequest};
use std::time::Duration;

#[tokio::test]
async fn declaring_the_standard_topology_twice_changes_nothing() {
    let topology = Topology::cardsync(&prefix())
        .with_retry_delays(&[Duration::from_millis(200), Duration::from_secs(1)]);
    let fixture = Fixture::with_topology(topology.clone()).await;
    cardsync_bus::declare(&fixture.channel, &topology)
        .await
        .unwrap();

    // Every queue, dead-letter queue and retry queue exists (a passive declare fails otherwise).
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    for queue in topology.queues() {
        let mut names = vec![queue.name.clone(), queue.dead_letter_queue()];
        names.extend(topology.retry_tiers().iter().map(|d| queue.retry_queue(*d)));
        for name in names {
            fixture
                .channel
                .queue_declare(name.as_str().into(), passive, FieldTable::default())
                .await
                .unwrap_or_else(|e| panic!("{name} missing: {e}"));
        }
    }
    fixture.cleanup().await;
}

#[tokio::test]
async fn the_standard_routing_keys_reach_their_queues() {
    let topology = Topology::cardsync(&prefix()).with_retry_delays(&[Duration::from_millis(200)]);
    let fixture = Fixture::with_topology(topology.clone()).await;
    let publisher = Publisher::connect(&settings(), topology.clone())
        .await
        .unwrap();
    let envelope = || Some(Envelope::new("t1", Cause::Manual));
    let command = CardCommand {
        envelope: envelope(),
        ..Default::default()
    };
    let event = CardEvent {
        envelope: envelope(),
        ..Default::default()
    };
    let cards = topology.name(names::CARDS);
    publisher
        .publish_all(vec![
            Outgoing::new(
                &topology.name(names::GRAPH),
                &routing::change("t1"),
                &change("t1"),
            ),
            Outgoing::new(
                &topology.name(names::SYNC),
                &routing::sync_request("t1"),
                &SyncRequest {
                    envelope: Some(Envelope::new("t1", Cause::Manual)),
                    ..Default::default()
                },
            ),
            Outgoing::new(&cards, &routing::live_command("t1"), &command),
            Outgoing::new(&cards, &routing::bulk_command("t1"), &command),
            Outgoing::new(
                &topology.name(names::CARD_EVENTS),
                &routing::card_event("created", "t1"),
                &event,
            ),
        ])
        .await
        .unwrap();
    for queue in [
        names::DELTA_WORKER_CHANGES,
        names::DELTA_WORKER_REQUESTS,
        names::CARD_WRITER_LIVE,
        names::CARD_WRITER_BULK,
        names::CARD_EVENTS_AUDIT,
    ] {
        assert_eq!(fixture.ready(&topology.name(queue)).await, 1, "{queue}");
    }
    assert_eq!(
        fixture
            .ready(&topology.name(names::SUBSCRIPTION_MANAGER_LIFECYCLE))
            .await,
        0
    );
    publisher.close().await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn a_bounded_sink_keeps_its_newest_messages_and_a_bounded_work_queue_refuses_past_its_limit()
{
    let topology = Topology::new(&prefix())
        .with_exchange("graph")
        .with_queue("sink", &[("graph", "change.*")])
        .with_queue_limit("sink", QueueLimit::DropHead(3))
        .with_queue("bounded", &[("graph", "lifecycle.*")])
        .with_queue_limit("bounded", QueueLimit::RejectPublish(2))
        .with_retry_delays(&settings().retry_delays);
    let fixture = Fixture::with_topology(topology.clone()).await;
    let publisher = Publisher::connect(&settings(), topology.clone())
        .await
        .unwrap();
    for tenant in ["t1", "t2", "t3", "t4", "t5"] {
        publisher
            .publish_all(vec![Outgoing::new(
                &fixture.graph(),
                &routing::change(tenant),
                &change(tenant),
            )])
            .await
            .expect("a sink never refuses");
    }
    let sink = topology.name("sink");
    assert_eq!(fixture.ready(&sink).await, 3, "the oldest two were dropped");
    let oldest = fixture.take(&sink).await.expect("a message");
    let oldest = cardsync_proto::GraphChange::decode(oldest.data.as_slice()).unwrap();
    assert_eq!(oldest.envelope.unwrap().tenant_id, "t3");

    let lifecycle = |tenant: &str| {
        Outgoing::new(
            &fixture.graph(),
            &routing::lifecycle(tenant),
            &change(tenant),
        )
    };
    let mut refused = 0;
    for tenant in ["t1", "t2", "t3", "t4", "t5", "t6"] {
        if publisher
            .publish_all(vec![lifecycle(tenant)])
            .await
            .is_err()
        {
            refused += 1;
        }
    }
    let held = fixture.ready(&topology.name("bounded")).await;
    // A quorum queue enforces its limit once it is reached, so it may take one more message.
    assert!(
        refused > 0 && held <= 3,
        "past its limit the queue refuses ({refused} refused, {held} held)"
    );
    assert_eq!(
        held + refused,
        6,
        "every message is held or refused back to its publisher"
    );
    publisher.close().await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn declaring_the_standard_topology_retires_the_unbounded_queues_of_earlier_releases() {
    let prefix = prefix();
    let (connection, channel) = admin().await;
    for retired in names::RETIRED_QUEUES {
        channel
            .queue_declare(
                format!("{prefix}{retired}").as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
    let topology = Topology::cardsync(&prefix).with_retry_delays(&[Duration::from_millis(200)]);
    let fixture = Fixture::with_topology(topology).await;
    for retired in names::RETIRED_QUEUES {
        let probe = connection.create_channel().await.unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        assert!(
            probe
                .queue_declare(
                    format!("{prefix}{retired}").as_str().into(),
                    passive,
                    FieldTable::default()
                )
                .await
                .is_err(),
            "{retired} was deleted"
        );
    }
    let _ = connection.close(200, "done".into()).await;
    fixture.cleanup().await;
}
