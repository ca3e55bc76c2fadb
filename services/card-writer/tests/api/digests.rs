//! Runs and their digests through the real card-writer, RabbitMQ and PostgreSQL: a dead-lettered
//! command is counted on its run by reason (once, however often it is delivered) so the run
//! ends; a run that ends publishes one `RunDigest` naming the people it added and removed, on
//! the routing key a mailer binds to; a day of live runs is one daily digest.

use crate::helpers::{TestApp, command, spawn_app, upsert};
use cardsync_bus::{DeadLetterReason, Processed, names};
use cardsync_cards::DigestEvents;
use cardsync_proto::card_command::Action;
use cardsync_proto::{BusMessage, CardCommand, Message as _, RunDigest};
use cardsync_store::runs::{self, NewRun, RunStatus};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use time::OffsetDateTime;
use uuid::Uuid;

/// A mailer's queue: bound to `card-events` with `pattern`, as the README tells a mailer to.
async fn mailer_queue(app: &mut TestApp, pattern: &str) -> (lapin::Channel, String) {
    let channel = app.raw_channel().await;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("mailer queue declared");
    let name = queue.name().to_string();
    channel
        .queue_bind(
            name.as_str().into(),
            app.topology.name(names::CARD_EVENTS).as_str().into(),
            pattern.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("mailer queue bound");
    (channel, name)
}

/// Publishes the outbox, then takes every digest the mailer's queue received.
async fn digests(app: &TestApp, mailer: &(lapin::Channel, String)) -> Vec<RunDigest> {
    app.relay.drain().await.expect("outbox published");
    let (channel, queue) = mailer;
    let mut digests = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
    {
        let kind = message
            .delivery
            .properties
            .kind()
            .as_ref()
            .map(|k| k.to_string());
        assert_eq!(kind.as_deref(), Some(RunDigest::TYPE));
        digests.push(RunDigest::decode(message.delivery.data.as_slice()).expect("decodes"));
    }
    digests
}

/// A running Sync Now run whose worker emitted `commands` commands.
async fn sync_now(app: &TestApp, commands: i64) -> Uuid {
    let run_id = Uuid::now_v7();
    runs::create(
        &app.pool,
        &NewRun {
            run_id,
            tenant_id: app.tenant,
            kind: "sync_now".into(),
            cause: "manual".into(),
            started_by: "admin@contoso.example".into(),
            target: None,
        },
    )
    .await
    .expect("run recorded");
    runs::set_status(&app.pool, run_id, RunStatus::Running, None)
        .await
        .expect("running");
    let mut tx = app.pool.begin().await.expect("tx");
    let digests = DigestEvents::new(app.topology.name(names::CARD_EVENTS));
    runs::emission_done(&mut tx, run_id, commands, &[], &digests)
        .await
        .expect("emission recorded");
    tx.commit().await.expect("commit");
    run_id
}

fn of_run(run_id: Uuid, mut command: CardCommand) -> CardCommand {
    command.run_id = run_id.to_string();
    command
}

async fn run(app: &TestApp, run_id: Uuid) -> runs::Run {
    runs::get(&app.pool, run_id)
        .await
        .expect("read")
        .expect("run")
}

#[tokio::test]
async fn a_run_with_an_invalid_command_ends_succeeded_counting_the_error_by_reason_once() {
    let mut app = spawn_app().await;
    let pattern = format!("digest.run.{}", app.tenant);
    let mailer = mailer_queue(&mut app, &pattern).await;
    let run_id = sync_now(&app, 3).await;
    app.apply(&of_run(
        run_id,
        upsert(app.tenant, "u1", 1, &[("name", Some("Ada"))]),
    ))
    .await;
    let mut invalid = of_run(run_id, upsert(app.tenant, "u2", 1, &[]));
    invalid.version = 0;
    // Delivered twice (a redelivery before the first dead-lettering completed looks the same).
    for _ in 0..2 {
        app.send(&invalid).await;
        match app.step().await {
            Processed::DeadLettered { reason, .. } => {
                assert_eq!(reason, DeadLetterReason::Permanent)
            }
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }
    assert_eq!(run(&app, run_id).await.status, RunStatus::Running);
    app.apply(&of_run(
        run_id,
        upsert(app.tenant, "u3", 1, &[("name", Some("Cy"))]),
    ))
    .await;

    let done = run(&app, run_id).await;
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.counts.get("error:invalid_command"), Some(&1));
    assert_eq!(done.counts.get("created"), Some(&2));
    let published = digests(&app, &mailer).await;
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].counts.get("error:invalid_command"), Some(&1));
    app.teardown().await;
}

#[tokio::test]
async fn a_sync_now_that_creates_cards_publishes_one_digest_naming_each_person_added_once() {
    let mut app = spawn_app().await;
    let mailer = mailer_queue(&mut app, "digest.#").await;
    let run_id = sync_now(&app, 3).await;
    let ada = of_run(
        run_id,
        upsert(
            app.tenant,
            "u1",
            1,
            &[
                ("name", Some("Ada Lovelace")),
                ("email", Some("ada@contoso.example")),
            ],
        ),
    );
    app.apply(&ada).await;
    // A duplicate past the Redis fast path: PostgreSQL sees it, and nobody is named twice.
    app.flush_redis().await;
    app.apply(&ada).await;
    app.apply(&of_run(
        run_id,
        upsert(app.tenant, "u2", 1, &[("name", Some("Bob"))]),
    ))
    .await;
    assert!(
        digests(&app, &mailer).await.is_empty(),
        "nothing before the run ends"
    );
    app.apply(&of_run(
        run_id,
        upsert(app.tenant, "u1", 2, &[("name", Some("Ada L."))]),
    ))
    .await;

    let published = digests(&app, &mailer).await;
    assert_eq!(published.len(), 1, "one digest per run");
    let digest = &published[0];
    let envelope = digest.envelope.as_ref().expect("envelope");
    assert_eq!(envelope.tenant_id, app.tenant.to_string());
    assert_eq!(
        (
            digest.run_id.as_str(),
            digest.kind.as_str(),
            digest.status.as_str()
        ),
        (run_id.to_string().as_str(), "sync_now", "succeeded")
    );
    assert_eq!(digest.added_total, 2);
    let added: Vec<(&str, &str, &str)> = digest
        .added
        .iter()
        .map(|p| (p.user_id.as_str(), p.name.as_str(), p.email.as_str()))
        .collect();
    assert_eq!(
        added,
        [
            ("u1", "Ada Lovelace", "ada@contoso.example"),
            ("u2", "Bob", "")
        ]
    );
    assert!(digest.removed.is_empty() && digest.removed_total == 0);
    assert_eq!(digest.counts.get("updated"), Some(&1));
    app.teardown().await;
}

#[tokio::test]
async fn a_run_that_deactivates_people_names_them_removed() {
    let mut app = spawn_app().await;
    let pattern = format!("digest.run.{}", app.tenant);
    let mailer = mailer_queue(&mut app, &pattern).await;
    app.apply(&upsert(app.tenant, "u1", 1, &[("name", Some("Ada"))]))
        .await;
    app.apply(&upsert(app.tenant, "u2", 1, &[("name", Some("Bob"))]))
        .await;
    let run_id = sync_now(&app, 2).await;
    app.apply(&of_run(
        run_id,
        command(app.tenant, Action::Deactivate, "u1", 2, &[]),
    ))
    .await;
    app.apply(&of_run(
        run_id,
        command(app.tenant, Action::Delete, "u2", 2, &[]),
    ))
    .await;

    let published = digests(&app, &mailer).await;
    assert_eq!(published.len(), 1);
    let removed: Vec<(&str, &str)> = published[0]
        .removed
        .iter()
        .map(|p| (p.user_id.as_str(), p.name.as_str()))
        .collect();
    assert_eq!(removed, [("u1", "Ada"), ("u2", "Bob")]);
    assert_eq!(published[0].removed_total, 2);
    assert!(published[0].added.is_empty());
    app.teardown().await;
}

#[tokio::test]
async fn a_tenants_live_runs_of_a_day_publish_one_daily_digest() {
    let mut app = spawn_app().await;
    let pattern = format!("digest.*.{}", app.tenant);
    let mailer = mailer_queue(&mut app, &pattern).await;
    let yesterday =
        OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT) - time::Duration::DAY;
    let morning = runs::live(&app.pool, app.tenant, yesterday + time::Duration::hours(8))
        .await
        .expect("live run");
    let night = runs::live(&app.pool, app.tenant, yesterday + time::Duration::hours(22))
        .await
        .expect("live run");
    app.apply(&of_run(
        morning,
        upsert(app.tenant, "u1", 1, &[("name", Some("Ada"))]),
    ))
    .await;
    app.apply(&of_run(
        night,
        upsert(app.tenant, "u2", 1, &[("name", Some("Bob"))]),
    ))
    .await;
    app.apply(&of_run(
        night,
        command(app.tenant, Action::Deactivate, "u1", 2, &[]),
    ))
    .await;
    assert!(
        digests(&app, &mailer).await.is_empty(),
        "live runs wait for the day"
    );

    // What `reconciler due` does every few minutes.
    let digest_events = DigestEvents::new(app.topology.name(names::CARD_EVENTS));
    for _ in 0..2 {
        let mut tx = app.pool.begin().await.expect("tx");
        runs::end_live_before(&mut tx, OffsetDateTime::now_utc(), &digest_events)
            .await
            .expect("live runs ended");
        tx.commit().await.expect("commit");
    }
    let published = digests(&app, &mailer).await;
    assert_eq!(published.len(), 1, "one digest for the day");
    let day = &published[0];
    assert_eq!(
        (day.run_id.as_str(), day.kind.as_str(), day.runs),
        ("", "live", 2)
    );
    assert_eq!(
        day.from.as_ref().map(|t| t.seconds),
        Some(yesterday.unix_timestamp())
    );
    let added: Vec<&str> = day.added.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(added, ["Ada", "Bob"]);
    let removed: Vec<&str> = day.removed.iter().map(|p| p.user_id.as_str()).collect();
    assert_eq!(removed, ["u1"]);
    assert_eq!((day.added_total, day.removed_total), (2, 1));
    app.teardown().await;
}
