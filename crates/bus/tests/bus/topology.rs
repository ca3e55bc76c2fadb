use crate::support::*;
use cardsync_bus::lapin::options::QueueDeclareOptions;
use cardsync_bus::lapin::types::FieldTable;
use cardsync_bus::{Outgoing, Publisher, Topology, names, routing};
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
