//! Delivery guarantees: events leave once per change, a crash between commit and ack doubles
//! nothing, Redis is only a fast path, a relay crash after the broker's confirm republishes the
//! same message id, and an event that commits late is still published.

use crate::helpers::{kinds, next_event, spawn_app, upsert};
use cardsync_bus::{Delivery, Handler as _, Processed, names};
use cardsync_cards::{EventSpec, outbox_message};
use cardsync_proto::Cause;
use cardsync_proto::card_event::Kind;
use cardsync_proto::{CardCommand, Message as _};
use cardsync_store::outbox;
use lapin::options::BasicGetOptions;
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long an event the running relay publishes may take (it sweeps every second).
const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn events_reach_the_bus_once_per_change_through_the_outbox() {
    let mut app = spawn_app().await;
    app.apply(&upsert(app.tenant, "u1", 1, &[("name", Some("Ann"))]))
        .await;
    app.apply(&upsert(app.tenant, "u1", 2, &[("name", Some("Ann Lee"))]))
        .await;
    // Same values again: a newer version with nothing visible to announce.
    app.apply(&upsert(app.tenant, "u1", 3, &[("name", Some("Ann Lee"))]))
        .await;
    let events = app.events().await;
    assert_eq!(kinds(&events), vec!["created", "updated"]);
    let ids: HashSet<&String> = events.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 2);
    for (id, event) in &events {
        assert_eq!(&event.envelope.as_ref().expect("envelope").message_id, id);
    }
    // Nothing is published twice.
    assert!(app.events().await.is_empty());
    assert_eq!(app.counted("unchanged").await, 1.0);
    app.teardown().await;
}

#[tokio::test]
async fn a_crash_between_commit_and_ack_doubles_neither_the_card_nor_the_event() {
    let mut app = spawn_app().await;
    let command = upsert(app.tenant, "u1", 1, &[("name", Some("Ann"))]);
    app.send(&command).await;

    // A worker takes the message, commits its effect, and dies before acknowledging.
    let channel = app.raw_channel().await;
    let queue = app.topology.name(names::CARD_WRITER_LIVE);
    let message = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .expect("basic.get")
        .expect("the command is queued");
    let decoded = CardCommand::decode(message.delivery.data.as_slice()).expect("decodes");
    app.live
        .handle(Delivery {
            message: decoded,
            attempt: 1,
            redelivered: false,
            message_id: None,
            tenant_id: Some(app.tenant.to_string()),
            exchange: String::new(),
            routing_key: String::new(),
        })
        .await
        .expect("applied");
    channel.close(200, "crash".into()).await.expect("closed");
    // Redis is gone too, so PostgreSQL's version check must catch the redelivery.
    assert!(app.flush_redis().await >= 1);

    assert_eq!(app.step().await, Processed::Acked);
    assert_eq!(app.cards().await.len(), 1);
    assert_eq!(app.counted("created").await, 1.0);
    assert_eq!(app.counted("duplicate").await, 1.0);
    assert_eq!(kinds(&app.events().await), vec!["created"]);
    app.teardown().await;
}

#[tokio::test]
async fn a_redelivered_command_is_skipped_by_redis_and_still_a_no_op_after_a_redis_flush() {
    let mut app = spawn_app().await;
    let command = upsert(app.tenant, "u1", 1, &[("name", Some("Ann"))]);
    app.apply(&command).await;
    app.apply(&command).await;
    assert_eq!(app.counted("duplicate_fast").await, 1.0);

    assert!(app.flush_redis().await >= 1);
    app.apply(&command).await;
    assert_eq!(
        app.counted("duplicate").await,
        1.0,
        "PostgreSQL is the guard"
    );
    assert_eq!(app.cards().await.len(), 1);
    assert_eq!(kinds(&app.events().await), vec!["created"]);
    app.teardown().await;
}

#[tokio::test]
async fn a_relay_crash_after_the_confirm_republishes_the_same_message_id() {
    let mut app = spawn_app().await;
    app.apply(&upsert(app.tenant, "u1", 1, &[("name", Some("Ann"))]))
        .await;
    // A relay takes the row, the broker confirms its event, and the relay dies before its
    // transaction commits: the delete rolls back.
    let exchanges = vec![app.topology.name(names::CARD_EVENTS)];
    let mut doomed = app.pool.begin().await.expect("begin");
    let rows = outbox::take(&mut doomed, &exchanges, 0, 100)
        .await
        .expect("taken");
    assert_eq!(rows.len(), 1);
    let published = rows.into_iter().map(card_writer::relay::outgoing).collect();
    app.publisher
        .publish_all(published)
        .await
        .expect("confirmed");
    // What PostgreSQL does with the transaction of a relay that died.
    doomed.rollback().await.expect("rolled back");

    let events = app.events().await;
    assert_eq!(kinds(&events), vec!["created", "created"]);
    assert_eq!(
        events[0].0, events[1].0,
        "same message id: consumers can deduplicate"
    );
    assert_eq!(unpublished(&app).await, 0, "published once more, then gone");
    app.teardown().await;
}

/// Rows of the app's tenant still in the outbox.
async fn unpublished(app: &crate::helpers::TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE tenant_id = $1")
        .bind(app.tenant)
        .fetch_one(&app.pool)
        .await
        .expect("outbox")
}

#[tokio::test]
async fn the_running_relay_publishes_an_event_that_commits_below_ids_it_already_published() {
    let mut app = spawn_app().await;
    let exchange = app.topology.name(names::CARD_EVENTS);
    // A writer transaction that takes its outbox id now and commits later.
    let mut late = app.pool.begin().await.expect("begin");
    let message = outbox_message(
        &EventSpec {
            tenant_id: app.tenant,
            cause: Cause::Notification,
            causation_id: "late",
            kind: Kind::Updated,
            card_id: uuid::Uuid::new_v4(),
            user_id: "u0",
            version: 1,
            changed_fields: &[],
        },
        &exchange,
    );
    outbox::enqueue_all(&mut late, &[message])
        .await
        .expect("enqueued");
    let mut stream = app.event_stream().await;
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(app.relay.clone().run(shutdown.clone()));
    app.apply(&upsert(app.tenant, "u1", 1, &[("name", Some("Ann"))]))
        .await;
    let first = next_event(&mut stream, WAIT).await.expect("u1's event");
    assert_eq!(
        kinds(&[first]),
        vec!["created"],
        "u1's event, the newest id"
    );

    late.commit().await.expect("committed");
    let late_event = next_event(&mut stream, WAIT)
        .await
        .expect("the late event is published too");
    assert_eq!(kinds(&[late_event]), vec!["updated"]);
    // A row leaves the outbox in the transaction that published it; a stopped relay has
    // committed every one.
    shutdown.cancel();
    relay.await.expect("the relay stops");
    assert_eq!(unpublished(&app).await, 0);
    app.teardown().await;
}
