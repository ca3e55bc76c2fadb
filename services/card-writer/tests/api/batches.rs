//! Several commands in one transaction: each behaves exactly as it would alone, and a batch that
//! fails commits nothing, after which every command gets its own answer.

use crate::helpers::{kinds, spawn_app, upsert};
use card_writer::apply::{ApplyError, Outcome, apply_all};
use card_writer::command::{Origin, ValidCommand, validate};
use card_writer::handler::{Batcher, Batching};
use cardsync_bus::names;
use cardsync_proto::CardCommand;
use cardsync_store::audit;
use std::sync::Arc;

fn valid(command: CardCommand) -> ValidCommand {
    validate(command, Origin::default()).expect("a valid command")
}

#[tokio::test]
async fn a_batch_applies_each_command_as_if_alone_and_in_order() {
    let mut app = spawn_app().await;
    let t = app.tenant;
    let commands = [
        valid(upsert(t, "u1", 1, &[("name", Some("Ann"))])),
        valid(upsert(t, "u1", 2, &[("name", Some("Ann Lee"))])),
        // Redelivered and reordered copies inside the same batch are still no-ops.
        valid(upsert(t, "u1", 2, &[("name", Some("Ann Lee"))])),
        valid(upsert(t, "u1", 1, &[("name", Some("Ann"))])),
        valid(upsert(t, "u2", 1, &[("name", Some("Bob"))])),
    ];
    let span = tracing::Span::current();
    let batch: Vec<(&ValidCommand, &tracing::Span)> = commands.iter().map(|c| (c, &span)).collect();
    let exchange = app.topology.name(names::CARD_EVENTS);
    let applied = apply_all(&app.pool, &batch, &exchange)
        .await
        .expect("the batch commits");
    let outcomes: Vec<Outcome> = applied.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Created,
            Outcome::Updated,
            Outcome::Duplicate,
            Outcome::Stale,
            Outcome::Created
        ]
    );

    assert_eq!(app.cards().await.len(), 2);
    let ann = app.card_of("u1").await;
    assert_eq!(ann.applied_version, 2);
    assert_eq!(ann.fields.value("name"), Some("Ann Lee"));
    let history = audit::for_card(&app.pool, t, ann.card_id)
        .await
        .expect("audit");
    let actions: Vec<&str> = history.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, vec!["created", "updated"], "in command order");
    assert_eq!(
        kinds(&app.events().await),
        vec!["created", "updated", "created"]
    );
    app.teardown().await;
}

#[tokio::test]
async fn a_failing_command_rolls_back_its_whole_batch() {
    let app = spawn_app().await;
    let t = app.tenant;
    let commands = [
        valid(upsert(
            t,
            "u1",
            1,
            &[("email", Some("ann@contoso.example"))],
        )),
        // The email of another active user: this command cannot apply yet.
        valid(upsert(
            t,
            "u2",
            1,
            &[("email", Some("ANN@contoso.example"))],
        )),
        valid(upsert(t, "u3", 1, &[("email", Some("cy@contoso.example"))])),
    ];
    let span = tracing::Span::current();
    let batch: Vec<(&ValidCommand, &tracing::Span)> = commands.iter().map(|c| (c, &span)).collect();
    let exchange = app.topology.name(names::CARD_EVENTS);
    let error = apply_all(&app.pool, &batch, &exchange)
        .await
        .expect_err("one command fails");
    assert!(matches!(error, ApplyError::EmailHeld { .. }), "{error:?}");
    assert!(
        app.cards().await.is_empty(),
        "nothing of the batch committed"
    );
    app.teardown().await;
}

#[tokio::test]
async fn the_batcher_answers_every_command_on_its_own_when_a_batch_fails() {
    let mut app = spawn_app().await;
    let t = app.tenant;
    // One worker: the three commands queue behind each other and are taken as one batch
    // whenever they are waiting together; the answers must not depend on how they were cut.
    let batcher = Batcher::start(
        app.pool.clone(),
        app.topology.name(names::CARD_EVENTS),
        Batching {
            transactions: 1,
            max_commands: 8,
        },
    );
    let commands = [
        upsert(t, "u1", 1, &[("email", Some("ann@contoso.example"))]),
        upsert(t, "u2", 1, &[("email", Some("ANN@contoso.example"))]),
        upsert(t, "u3", 1, &[("email", Some("cy@contoso.example"))]),
    ];
    let answers = futures_util::future::join_all(
        commands
            .into_iter()
            .map(|command| batcher.apply(Arc::new(valid(command)))),
    )
    .await;
    assert!(
        matches!(&answers[0], Ok(a) if a.outcome == Outcome::Created),
        "{answers:?}"
    );
    match &answers[1] {
        Err(error @ ApplyError::EmailHeld { .. }) => assert!(error.is_transient()),
        other => panic!("expected EmailHeld, got {other:?}"),
    }
    assert!(
        matches!(&answers[2], Ok(a) if a.outcome == Outcome::Created),
        "{answers:?}"
    );
    let mut users: Vec<String> = app
        .cards()
        .await
        .into_iter()
        .filter_map(|card| card.user_id)
        .collect();
    users.sort();
    assert_eq!(users, vec!["u1", "u3"]);
    assert_eq!(kinds(&app.events().await), vec!["created", "created"]);
    app.teardown().await;
}
