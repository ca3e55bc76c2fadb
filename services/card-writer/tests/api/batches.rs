//! Several commands in one transaction: each behaves exactly as it would alone, and a batch that
//! fails commits nothing, after which every command gets its own answer.

use crate::helpers::{command, kinds, spawn_app, spawn_app_with, upsert};
use card_writer::apply::{ApplyError, Outcome, apply, apply_all};
use card_writer::command::{Origin, ValidCommand, validate};
use card_writer::handler::{Batcher, Batching};
use cardsync_bus::{Transience as _, names};
use cardsync_proto::CardCommand;
use cardsync_proto::card_command::Action;
use cardsync_rules::{FieldRules, RemovalPolicy};
use cardsync_store::audit;
use cardsync_store::tenants::{self, TenantConfig};
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
        None,
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

/// What a tenant's cards look like, independent of card ids: per card (sorted by user), its
/// user, UID, email, status, fields, version and teams; then the audit trail with card ids
/// replaced by the order in which the cards first appear in it; then the events' types.
async fn picture(
    pool: &sqlx::PgPool,
    tenant: uuid::Uuid,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let mut cards = Vec::new();
    for card in cardsync_store::cards::list(pool, tenant)
        .await
        .expect("cards")
    {
        let teams = cardsync_store::cards::teams_of(pool, tenant, card.card_id)
            .await
            .expect("teams");
        cards.push(format!(
            "{:?} uid={:?} email={:?} {} v{} {:?} teams={teams:?}",
            card.user_id,
            card.uid,
            card.email,
            card.status,
            card.applied_version,
            card.fields
                .iter()
                .map(|(n, s)| (n.to_string(), s.value.clone()))
                .collect::<Vec<_>>(),
        ));
    }
    cards.sort();
    let rows: Vec<(uuid::Uuid, String, Option<i64>)> = sqlx::query_as(
        "SELECT card_id, action, version FROM audit_log WHERE tenant_id = $1 ORDER BY id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await
    .expect("audit");
    let mut order: Vec<uuid::Uuid> = Vec::new();
    let audit = rows
        .into_iter()
        .map(|(card, action, version)| {
            let index = order.iter().position(|c| *c == card).unwrap_or_else(|| {
                order.push(card);
                order.len() - 1
            });
            format!("card{index} {action} v{version:?}")
        })
        .collect();
    let events: Vec<String> =
        sqlx::query_scalar("SELECT message_type FROM outbox WHERE tenant_id = $1 ORDER BY id")
            .bind(tenant)
            .fetch_all(pool)
            .await
            .expect("outbox");
    let teams = cardsync_store::teams::list(pool, tenant)
        .await
        .expect("teams");
    cards.extend(
        teams
            .into_iter()
            .map(|t| format!("team {} {:?}", t.group_id, t.name)),
    );
    (cards, audit, events)
}

#[tokio::test]
async fn a_batch_ends_exactly_where_the_same_commands_applied_one_by_one_end() {
    let rules = FieldRules {
        removal: RemovalPolicy::Delete,
        ..FieldRules::default()
    };
    let app = spawn_app_with(rules.clone(), false).await;
    let alone = uuid::Uuid::new_v4();
    tenants::put(
        &app.pool,
        &TenantConfig {
            id: alone,
            name: "applied one by one".into(),
            rules,
            invites_enabled: false,
            admin_roles_enabled: false,
        },
    )
    .await
    .expect("tenant stored");

    // Ann and Bob have cards before the batch; every later command depends on what an
    // earlier one of the batch wrote, or on a start-of-batch read it made out of date.
    let setup = |t: uuid::Uuid| -> Vec<CardCommand> {
        let mut ann = upsert(
            t,
            "u1",
            1,
            &[("name", Some("Ann")), ("email", Some("a@x.example"))],
        );
        ann.team_ids = vec!["g1".into(), "g2".into()];
        ann.teams = vec![cardsync_proto::Team {
            group_id: "g1".into(),
            name: "One".into(),
        }];
        vec![
            ann,
            upsert(
                t,
                "u2",
                1,
                &[("name", Some("Bob")), ("email", Some("b@x.example"))],
            ),
        ]
    };
    let script = |t: uuid::Uuid| -> Vec<CardCommand> {
        let mut moved = upsert(
            t,
            "u1",
            5,
            &[("name", Some("Ann")), ("email", Some("c@x.example"))],
        );
        moved.team_ids = vec!["g2".into()];
        moved.teams = vec![cardsync_proto::Team {
            group_id: "g2".into(),
            name: "Two".into(),
        }];
        vec![
            // u1 lets go of a@, which u3 then takes (different case) as a new card.
            upsert(
                t,
                "u1",
                2,
                &[("name", Some("Ann")), ("email", Some("c@x.example"))],
            ),
            upsert(
                t,
                "u3",
                1,
                &[("name", Some("Cy")), ("email", Some("A@x.example"))],
            ),
            // u2's card is deactivated, then linked by u4 through its email...
            command(t, Action::Deactivate, "u2", 2, &[]),
            upsert(
                t,
                "u4",
                1,
                &[("name", Some("Dee")), ("email", Some("B@x.example"))],
            ),
            // ...so u2, back, no longer has a card and gets a new one.
            upsert(
                t,
                "u2",
                3,
                &[("name", Some("Bob")), ("email", Some("z@x.example"))],
            ),
            // u1 is deleted for good and comes back: the tombstone makes way for a new card.
            command(t, Action::Delete, "u1", 3, &[]),
            upsert(
                t,
                "u1",
                4,
                &[("name", Some("Ann")), ("email", Some("c@x.example"))],
            ),
            command(t, Action::Delete, "u5", 1, &[]),
            moved,
            upsert(
                t,
                "u3",
                1,
                &[("name", Some("Cy")), ("email", Some("A@x.example"))],
            ),
        ]
    };
    let exchange = app.topology.name(names::CARD_EVENTS);
    for tenant in [app.tenant, alone] {
        for command in setup(tenant).into_iter().map(valid) {
            apply(&app.pool, &command, &exchange).await.expect("set up");
        }
    }
    let batched: Vec<ValidCommand> = script(app.tenant).into_iter().map(valid).collect();
    let span = tracing::Span::current();
    let batch: Vec<(&ValidCommand, &tracing::Span)> = batched.iter().map(|c| (c, &span)).collect();
    let outcomes: Vec<Outcome> = apply_all(&app.pool, &batch, &exchange)
        .await
        .expect("the batch commits")
        .iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Updated,
            Outcome::Created,
            Outcome::Deactivated,
            Outcome::Linked,
            Outcome::Created,
            Outcome::Deleted,
            Outcome::Created,
            Outcome::Tombstoned,
            Outcome::Updated,
            Outcome::Duplicate,
        ]
    );
    let mut one_by_one = Vec::new();
    for command in script(alone).into_iter().map(valid) {
        let applied = apply(&app.pool, &command, &exchange)
            .await
            .expect("applied");
        one_by_one.push(applied.outcome);
    }
    assert_eq!(outcomes, one_by_one);

    let batched = picture(&app.pool, app.tenant).await;
    let alone_picture = picture(&app.pool, alone).await;
    assert_eq!(batched, alone_picture);
    let (cards, audit, _) = &batched;
    // Five people's rows (u5 only as a tombstone), the two teams with their last names.
    assert_eq!(cards.len(), 5 + 2, "{cards:#?}");
    assert!(
        cards
            .iter()
            .any(|c| c.starts_with("Some(\"u4\")") && c.contains("B@x.example")),
        "{cards:#?}"
    );
    assert!(
        cards
            .iter()
            .any(|c| c.starts_with("Some(\"u1\")") && c.contains("teams=[\"g2\"]"))
    );
    assert!(
        cards.contains(&"team g2 Some(\"Two\")".to_owned()),
        "{cards:#?}"
    );
    assert_eq!(audit.len(), 2 + 8, "{audit:#?}");
    sqlx::query("DELETE FROM tenants WHERE tenant_id = $1")
        .bind(alone)
        .execute(&app.pool)
        .await
        .expect("tenant removed");
    app.teardown().await;
}

#[tokio::test]
async fn look_ups_of_a_tenant_newer_than_the_statistics_probe_each_keys_own_index() {
    let app = spawn_app().await;
    // Another tenant's cards make a table where the choice of index matters.
    let other = uuid::Uuid::new_v4();
    tenants::put(
        &app.pool,
        &TenantConfig {
            id: other,
            name: "another tenant".into(),
            rules: FieldRules::default(),
            invites_enabled: false,
            admin_roles_enabled: false,
        },
    )
    .await
    .expect("tenant stored");
    sqlx::query(
        "INSERT INTO cards (tenant_id, card_id, user_id, uid, email)
         SELECT $1, gen_random_uuid(), 'u' || i, 'u' || i, 'u' || i || '@example.com'
           FROM generate_series(1, 3000) AS i",
    )
    .bind(other)
    .execute(&app.pool)
    .await
    .expect("cards of another tenant");
    // Statistics taken while the tenant has no card, as during any initial sync: PostgreSQL
    // believes the tenant is empty, so every index that starts with tenant_id looks as cheap.
    sqlx::query("ANALYZE cards")
        .execute(&app.pool)
        .await
        .expect("analysed");
    let t = app.tenant;
    for (user, version) in [("u1", 1), ("u2", 1), ("u1", 2)] {
        app.apply(&upsert(t, user, version, &[("name", Some(user))]))
            .await;
    }
    let mut conn = app.pool.acquire().await.expect("a connection");
    let indexes = cardsync_store::cards::lookup_indexes(&mut conn, t)
        .await
        .expect("planned");
    drop(conn);
    sqlx::query("DELETE FROM tenants WHERE tenant_id = $1")
        .bind(other)
        .execute(&app.pool)
        .await
        .expect("the other tenant removed");
    assert_eq!(indexes, ["cards_by_user", "cards_by_uid", "cards_by_email"]);
    app.teardown().await;
}
