//! Delta rounds end to end: initial sync, every kind of directory change, coalescing, expired
//! tokens, lost Redis state, crash recovery, group scope and photos.

use crate::support::{action, env, env_with, field, id_of};
use cardsync_bus::Transience as _;
use cardsync_proto::Cause;
use cardsync_proto::card_command::Action;
use cardsync_rounds::Mode;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

#[tokio::test]
async fn the_initial_round_emits_one_upsert_per_user_on_the_bulk_queue() {
    let env = env().await;
    let users = env.seed(60).await;
    let report = env.round(Cause::Manual, Mode::Incremental).await;
    assert!(report.full);
    let commands = env.commands().await;
    let ids: BTreeSet<String> = commands.iter().map(|c| c.user_id.clone()).collect();
    // Disabled seeded accounts never had a card, so they produce no command.
    let enabled: BTreeSet<String> = {
        let snapshot = env.control.snapshot(&env.tenant_text()).await.unwrap();
        snapshot["directory"]["users"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["accountEnabled"] != json!(false))
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids, enabled);
    assert!(ids.len() <= users.len() && ids.len() >= users.len() * 9 / 10);
    assert!(
        commands
            .iter()
            .all(|c| action(c) == Action::Upsert && c.version > 0)
    );
    assert!(
        commands.iter().all(|c| field(c, "email").is_some()),
        "mail or the UPN fallback"
    );

    // Nothing changed: the next round emits nothing.
    let report = env.round(Cause::SafetyPoll, Mode::Incremental).await;
    assert!(!report.full);
    assert_eq!(report.changed, 0);
    assert!(env.commands().await.is_empty());
    env.teardown().await;
}

#[tokio::test]
async fn a_tenants_first_enumeration_is_not_counted_as_changes_no_notification_announced() {
    let env = env().await;
    let users = env.seed(30).await;
    // The safety poll takes a tenant that never had a round: its first enumeration finds every
    // user, none of whom a notification could have announced (the loss alerts read this count).
    let report = env.round(Cause::SafetyPoll, Mode::Incremental).await;
    assert!(report.full);
    assert!(report.changed >= users.len() as u64, "{report:?}");
    assert_eq!(report.unannounced, 0, "{report:?}");
    env.commands().await;

    // A change whose notification was lost is unannounced, once the snapshot exists.
    env.control
        .update_user(&env.tenant_text(), &users[0], json!({"jobTitle": "Lost"}))
        .await
        .unwrap();
    let report = env.round(Cause::SafetyPoll, Mode::Incremental).await;
    assert_eq!(report.changed, 1, "{report:?}");
    assert_eq!(report.unannounced, 1, "{report:?}");
    env.teardown().await;
}

#[tokio::test]
async fn every_kind_of_change_becomes_the_right_command_with_a_growing_version() {
    let env = env().await;
    let tenant = env.tenant_text();
    let created = env.control.create_user(&tenant, json!({"displayName": "Ada Lovelace", "userPrincipalName": "ada@contoso.test", "accountEnabled": true})).await.unwrap();
    let ada = id_of(&created);
    let other = id_of(
        &env.control
            .create_user(
                &tenant,
                json!({"displayName": "Bob", "userPrincipalName": "bob@contoso.test"}),
            )
            .await
            .unwrap(),
    );
    env.round(Cause::Manual, Mode::Incremental).await;
    let first = env.commands().await;
    let ada_v1 = first.iter().find(|c| c.user_id == ada).unwrap().version;

    let expect =
        |commands: &[cardsync_proto::CardCommand], id: &str| -> cardsync_proto::CardCommand {
            let mine: Vec<_> = commands.iter().filter(|c| c.user_id == id).collect();
            assert_eq!(mine.len(), 1, "exactly one command for {id}: {commands:?}");
            mine[0].clone()
        };

    env.control
        .update_user(
            &tenant,
            &ada,
            json!({"jobTitle": "Analyst", "mobilePhone": "+44 20 7946 0000"}),
        )
        .await
        .unwrap();
    env.round(Cause::Notification, Mode::Incremental).await;
    let update = expect(&env.commands().await, &ada);
    assert_eq!(action(&update), Action::Upsert);
    assert_eq!(
        field(&update, "job_title").or(field(&update, "jobTitle")),
        Some("Analyst")
    );
    assert_eq!(
        field(&update, "name"),
        Some("Ada Lovelace"),
        "unchanged fields are carried from the snapshot"
    );
    assert!(update.version > ada_v1);

    env.control
        .update_user(&tenant, &ada, json!({"accountEnabled": false}))
        .await
        .unwrap();
    env.round(Cause::Notification, Mode::Incremental).await;
    let disabled = expect(&env.commands().await, &ada);
    assert_eq!(action(&disabled), Action::Deactivate);
    assert!(disabled.version > update.version);

    env.control
        .update_user(&tenant, &ada, json!({"accountEnabled": true}))
        .await
        .unwrap();
    env.control
        .delete_user(&tenant, &other, false)
        .await
        .unwrap();
    env.round(Cause::Notification, Mode::Incremental).await;
    let commands = env.commands().await;
    assert_eq!(
        action(&expect(&commands, &ada)),
        Action::Upsert,
        "re-enabled"
    );
    assert_eq!(
        action(&expect(&commands, &other)),
        Action::Delete,
        "soft-deleted: the removal policy applies"
    );

    env.control.restore_user(&tenant, &other).await.unwrap();
    env.round(Cause::Notification, Mode::Incremental).await;
    assert_eq!(
        action(&expect(&env.commands().await, &other)),
        Action::Upsert,
        "restored"
    );

    env.control
        .delete_user(&tenant, &other, true)
        .await
        .unwrap();
    env.round(Cause::Notification, Mode::Incremental).await;
    assert_eq!(
        action(&expect(&env.commands().await, &other)),
        Action::Delete,
        "permanently deleted"
    );
    env.teardown().await;
}

#[tokio::test]
async fn a_burst_of_triggers_costs_one_or_two_rounds() {
    let env = env().await;
    let users = env.seed(20).await;
    env.round(Cause::Manual, Mode::Incremental).await;
    env.commands().await;
    let before = delta_requests(&env).await;
    for user in &users[..10] {
        env.control
            .update_user(&env.tenant_text(), user, json!({"jobTitle": "Burst"}))
            .await
            .unwrap();
    }
    let coalescer = env.app.coalescer().clone();
    let waiters: Vec<_> = (0..200)
        .map(|i| {
            let coalescer = coalescer.clone();
            let tenant = env.tenant;
            let announced = users[i % 10].clone();
            tokio::spawn(async move {
                let trigger = delta_worker::coalesce::Trigger {
                    announced: Some(announced),
                    ..delta_worker::coalesce::Trigger::of(Cause::Notification)
                };
                coalescer.covered(tenant, trigger).await
            })
        })
        .collect();
    for waiter in waiters {
        assert!(matches!(
            waiter.await.unwrap(),
            delta_worker::coalesce::Covered::Done(_)
        ));
    }
    let rounds = delta_requests(&env).await - before;
    assert!(
        (1..=2).contains(&rounds),
        "{rounds} delta requests for 200 triggers"
    );
    let commands = env.commands().await;
    assert_eq!(
        commands.len(),
        10,
        "one command per changed user, not per trigger"
    );
    env.teardown().await;
}

async fn delta_requests(env: &crate::support::Env) -> u64 {
    let counters = env
        .control
        .counters(Some(&env.tenant_text()))
        .await
        .unwrap();
    counters[env.tenant_text()]["users.delta"]["requests"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn an_expired_delta_token_starts_a_full_round_that_finds_users_deleted_meanwhile() {
    let env = env().await;
    let users = env.seed(15).await;
    env.round(Cause::Manual, Mode::Incremental).await;
    let carded: BTreeSet<String> = env
        .commands()
        .await
        .into_iter()
        .map(|c| c.user_id)
        .collect();
    let victim = users.iter().find(|u| carded.contains(*u)).unwrap().clone();
    env.control
        .delete_user(&env.tenant_text(), &victim, true)
        .await
        .unwrap();
    // Eight days later the stored deltaLink is useless (Graph keeps directory tokens for 7).
    env.control.advance_clock(8 * 24 * 3600).await.unwrap();
    let report = env.round(Cause::SafetyPoll, Mode::Incremental).await;
    assert!(report.full);
    let commands = env.commands().await;
    let by_user: BTreeMap<String, Action> = commands
        .iter()
        .map(|c| (c.user_id.clone(), action(c)))
        .collect();
    assert_eq!(by_user.get(&victim), Some(&Action::Delete));
    assert_eq!(
        by_user.len(),
        1,
        "unchanged users are not re-sent: {by_user:?}"
    );
    env.teardown().await;
}

#[tokio::test]
async fn losing_redis_costs_one_full_round_and_no_duplicate_commands() {
    let env = env().await;
    env.seed(12).await;
    env.round(Cause::Manual, Mode::Incremental).await;
    // Later rounds move PostgreSQL's fence past what a fresh Redis counter starts from.
    env.round(Cause::SafetyPoll, Mode::Incremental).await;
    env.round(Cause::SafetyPoll, Mode::Incremental).await;
    env.commands().await;
    // Everything Redis held for this deployment is gone, the fencing counter included.
    assert!(cardsync_testkit::forget_redis_keys(&env.prefix).await > 0);

    // The first round after the loss succeeds (no "lease lost" until the counter catches up).
    let report = env.round(Cause::SafetyPoll, Mode::Incremental).await;
    assert!(report.full);
    assert_eq!(report.changed, 0);
    assert!(env.commands().await.is_empty());
    let report = env.round(Cause::SafetyPoll, Mode::Incremental).await;
    assert!(!report.full, "one full round, then incremental again");
    env.teardown().await;
}

#[tokio::test]
async fn commands_a_crashed_round_never_confirmed_are_sent_by_the_next_round() {
    let env = env().await;
    env.seed(5).await;
    env.round(Cause::Manual, Mode::Incremental).await;
    let first = env.commands().await;
    // As if the process died after saving versions but before the broker confirmed their commands.
    sqlx::query(
        "UPDATE directory_users SET emitted_version = 0 WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(env.tenant)
    .bind(&first[0].user_id)
    .execute(&env.pool)
    .await
    .unwrap();
    env.round(Cause::SafetyPoll, Mode::Incremental).await;
    let again = env.commands().await;
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].user_id.as_str(), again[0].version),
        (first[0].user_id.as_str(), first[0].version)
    );
    env.teardown().await;
}

#[tokio::test]
async fn group_scope_follows_nested_membership_in_and_out() {
    let env = env().await;
    let tenant = env.tenant_text();
    let (alice, bob) = (env.create_user("Alice").await, env.create_user("Bob").await);
    let carol = env.create_user("Carol").await;
    let emea = env.create_group("EMEA", &[&bob]).await;
    let sales = env.create_group("Sales", &[&alice, &emea]).await;
    cardsync_store::directory::set_scope(&env.pool, env.tenant, std::slice::from_ref(&sales))
        .await
        .unwrap();

    env.round(Cause::Manual, Mode::Incremental).await;
    let commands = env.commands().await;
    let carded: BTreeSet<&str> = commands.iter().map(|c| c.user_id.as_str()).collect();
    assert_eq!(
        carded,
        [alice.as_str(), bob.as_str()].into_iter().collect(),
        "nested members count, others do not"
    );
    let bob_command = commands.iter().find(|c| c.user_id == bob).unwrap();
    assert_eq!(bob_command.team_ids, vec![sales.clone()]);
    assert_eq!(bob_command.teams[0].name, "Sales");

    env.control
        .remove_member(&tenant, &emea, &bob)
        .await
        .unwrap();
    env.control
        .add_member(&tenant, &sales, &carol)
        .await
        .unwrap();
    env.round(Cause::Notification, Mode::Incremental).await;
    let moves: BTreeMap<String, Action> = env
        .commands()
        .await
        .iter()
        .map(|c| (c.user_id.clone(), action(c)))
        .collect();
    assert_eq!(moves.get(&bob), Some(&Action::Delete), "moved out of scope");
    assert_eq!(moves.get(&carol), Some(&Action::Upsert), "moved into scope");
    assert_eq!(moves.len(), 2);
    env.teardown().await;
}

#[tokio::test]
async fn a_group_rename_renames_its_team_and_keeps_its_description_without_a_command() {
    let env = env().await;
    let tenant = env.tenant_text();
    let alice = env.create_user("Alice").await;
    let sales = env.create_group("Sales", &[&alice]).await;
    cardsync_store::directory::set_scope(&env.pool, env.tenant, std::slice::from_ref(&sales))
        .await
        .unwrap();
    env.round(Cause::Manual, Mode::Incremental).await;
    assert_eq!(env.commands().await.len(), 1, "Alice's card");
    // The card-writer creates the team when Alice's card joins it (a tenant with the rules a
    // round uses when it has none stored).
    cardsync_store::tenants::put(
        &env.pool,
        &cardsync_store::tenants::TenantConfig {
            id: env.tenant,
            name: "teams".into(),
            rules: Default::default(),
            invites_enabled: false,
            admin_roles_enabled: false,
        },
    )
    .await
    .unwrap();
    let mut conn = env.pool.acquire().await.unwrap();
    cardsync_store::teams::upsert_all(&mut conn, &[(env.tenant, sales.as_str(), Some("Sales"))])
        .await
        .unwrap();
    drop(conn);

    env.control
        .update_group(
            &tenant,
            &sales,
            json!({"displayName": "Sales & Marketing", "description": "Everyone who sells"}),
        )
        .await
        .unwrap();
    env.round(Cause::Notification, Mode::Incremental).await;
    assert!(
        env.commands().await.is_empty(),
        "no member moved: no command"
    );
    let teams = cardsync_store::teams::list(&env.pool, env.tenant)
        .await
        .unwrap();
    assert_eq!(teams.len(), 1);
    assert_eq!(teams[0].name.as_deref(), Some("Sales & Marketing"));
    assert_eq!(teams[0].description.as_deref(), Some("Everyone who sells"));

    // A cleared description is cleared on the team too; the name stays.
    env.control
        .update_group(&tenant, &sales, json!({"description": null}))
        .await
        .unwrap();
    env.round(Cause::Notification, Mode::Incremental).await;
    let teams = cardsync_store::teams::list(&env.pool, env.tenant)
        .await
        .unwrap();
    assert_eq!(teams[0].name.as_deref(), Some("Sales & Marketing"));
    assert_eq!(teams[0].description, None);
    env.teardown().await;
}

#[tokio::test]
async fn photo_changes_are_found_by_the_budgeted_scan() {
    // Every round is due for its photo check, and every photo for a re-check.
    let env = env_with(&[
        ("CARDSYNC__WORKER__PHOTO_CHECK_INTERVAL", "0s"),
        ("CARDSYNC__WORKER__PHOTO_RECHECK_AFTER", "0s"),
    ])
    .await;
    let tenant = env.tenant_text();
    let ada = id_of(
        &env.control
            .create_user(
                &tenant,
                json!({"displayName": "Ada", "userPrincipalName": "ada@contoso.test"}),
            )
            .await
            .unwrap(),
    );
    env.round(Cause::Manual, Mode::Incremental).await;
    env.commands().await;
    env.control
        .set_photo(&tenant, &ada, vec![0xff, 0xd8, 0xff, 1, 2], "image/jpeg")
        .await
        .unwrap();
    let report = env.round(Cause::SafetyPoll, Mode::Incremental).await;
    assert_eq!(report.unannounced, 1, "no notification announces a photo");
    let commands = env.commands().await;
    assert_eq!(commands.len(), 1);
    assert!(!commands[0].photo_etag.is_empty());
    assert_eq!(
        crate::support::field(&commands[0], "photo"),
        Some(commands[0].photo_etag.as_str())
    );
    // The image was downloaded at the configured size and stored before the command was sent.
    assert_eq!(
        commands[0].photo_content_type, "image/png",
        "graph-sim's 240x240 rendition"
    );
    let settings = crate::support::load(&env.settings, &[]);
    let photos = cardsync_photos::PhotoStore::open(&settings.photos).unwrap();
    let stored = photos
        .get(&commands[0].photo_sha256)
        .await
        .unwrap()
        .expect("the image is in the store");
    assert!(stored.starts_with(b"\x89PNG"));
    assert_eq!(&stored[16..24], &[0, 0, 0, 240, 0, 0, 0, 240]);

    env.control.clear_photo(&tenant, &ada).await.unwrap();
    env.round(Cause::SafetyPoll, Mode::Incremental).await;
    let cleared = env.commands().await;
    assert_eq!(cleared.len(), 1);
    assert!(
        cleared[0]
            .fields
            .iter()
            .any(|f| f.name == "photo" && f.value.is_none()),
        "a removed photo is cleared"
    );
    assert!(cleared[0].photo_sha256.is_empty(), "and names no image");
    env.teardown().await;
}

#[tokio::test]
async fn a_per_user_sync_pushes_the_current_state_even_when_unchanged() {
    let env = env().await;
    let users = env.seed(8).await;
    env.round(Cause::Manual, Mode::Incremental).await;
    let first: BTreeMap<String, u64> = env
        .commands()
        .await
        .into_iter()
        .map(|c| (c.user_id, c.version))
        .collect();
    let target = users
        .iter()
        .find(|u| first.contains_key(*u))
        .unwrap()
        .clone();
    env.round(Cause::Manual, Mode::Users(vec![target.clone()]))
        .await;
    let commands = env.commands().await;
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0].user_id, target);
    assert!(
        commands[0].version > first[&target],
        "a new version, so the card-writer applies it"
    );
    env.teardown().await;
}

#[tokio::test]
async fn a_failed_round_counts_as_an_attempt_so_the_safety_poll_does_not_hammer_the_tenant() {
    let env = env().await;
    env.seed(3).await;
    let idle = |env: &crate::support::Env| {
        let pool = env.pool.clone();
        async move {
            cardsync_store::directory::idle_tenants(&pool, std::time::Duration::from_secs(3600))
                .await
                .unwrap()
        }
    };
    assert!(
        idle(&env).await.contains(&env.tenant),
        "a tenant that never had a round is idle"
    );
    env.control
        .set_faults(json!([{"endpoint": "users.delta", "kind": "unavailable", "retryAfter": "0"}]))
        .await
        .unwrap();
    let failed = env
        .app
        .coalescer()
        .rounds()
        .run(&cardsync_rounds::RoundRequest {
            tenant: env.tenant,
            cause: Cause::SafetyPoll,
            announced: Default::default(),
            mode: Mode::Incremental,
            triggers: Default::default(),
            run_id: None,
        })
        .await;
    assert!(failed.is_err_and(|e| e.is_transient()));
    assert!(
        !idle(&env).await.contains(&env.tenant),
        "the failed attempt waits a full interval"
    );
    env.control.set_faults(json!([])).await.unwrap();
    env.teardown().await;
}

#[tokio::test]
async fn a_tenant_whose_connection_was_removed_is_no_longer_polled() {
    let env = env().await;
    let idle = || async {
        cardsync_store::directory::idle_tenants(&env.pool, std::time::Duration::from_secs(3600))
            .await
            .unwrap()
    };
    assert!(idle().await.contains(&env.tenant));
    assert!(
        cardsync_store::connections::remove(&env.pool, env.tenant)
            .await
            .unwrap()
    );
    assert!(
        !idle().await.contains(&env.tenant),
        "no connection, no safety poll"
    );
    assert!(
        !cardsync_store::connections::remove(&env.pool, env.tenant)
            .await
            .unwrap(),
        "nothing left to remove"
    );
    env.teardown().await;
}

#[tokio::test]
async fn admin_roles_are_read_on_their_cadence_and_carried_by_the_commands() {
    use cardsync_graph::role_templates::{GLOBAL_ADMINISTRATOR, GROUPS_ADMINISTRATOR};
    use cardsync_proto::Role;
    let env = env().await;
    let tenant = env.tenant_text();
    cardsync_store::tenants::put(
        &env.pool,
        &cardsync_store::tenants::TenantConfig {
            id: env.tenant,
            name: "roles".into(),
            rules: cardsync_rules::FieldRules::default(),
            invites_enabled: false,
            admin_roles_enabled: true,
        },
    )
    .await
    .unwrap();
    let boss = env.create_user("Boss").await;
    let lead = env.create_user("Lead").await;
    let staff = env.create_user("Staff").await;
    env.control
        .assign_role(&tenant, GLOBAL_ADMINISTRATOR, &boss)
        .await
        .unwrap();
    env.control
        .assign_role(&tenant, GROUPS_ADMINISTRATOR, &lead)
        .await
        .unwrap();

    env.round(Cause::Manual, Mode::Incremental).await;
    // The last command per user carries the role read this round.
    let mut roles = BTreeMap::new();
    for command in env.commands().await {
        roles.insert(command.user_id.clone(), command.role());
    }
    assert_eq!(roles.get(&boss), Some(&Role::TeamAdmin));
    assert_eq!(roles.get(&lead), Some(&Role::SubteamAdmin));
    assert_eq!(
        roles.get(&staff),
        Some(&Role::Unspecified),
        "a member whose role never moved keeps the card's role"
    );

    // Role assignments make no delta and no notification: a round before the tenant's role
    // check is due (5 minutes after the last) does not look, whatever caused it; the first
    // round once it is due does, and only the moved users get a command.
    env.control
        .remove_role(&tenant, GLOBAL_ADMINISTRATOR, &boss)
        .await
        .unwrap();
    env.control
        .assign_role(&tenant, GLOBAL_ADMINISTRATOR, &staff)
        .await
        .unwrap();
    let report = env.round(Cause::SafetyPoll, Mode::Incremental).await;
    assert_eq!(report.changed, 0);
    assert!(env.commands().await.is_empty());
    sqlx::query(
        "UPDATE tenant_sync_state SET roles_checked_at = now() - interval '6 minutes'
          WHERE tenant_id = $1",
    )
    .bind(env.tenant)
    .execute(&env.pool)
    .await
    .unwrap();
    let report = env.round(Cause::Notification, Mode::Incremental).await;
    assert_eq!(report.unannounced, 2, "{report:?}");
    let moved: BTreeMap<String, Role> = env
        .commands()
        .await
        .into_iter()
        .map(|c| (c.user_id.clone(), c.role()))
        .collect();
    assert_eq!(
        moved,
        BTreeMap::from([(boss, Role::Member), (staff, Role::TeamAdmin)])
    );
    env.teardown().await;
}

#[tokio::test]
async fn a_group_sync_request_pushes_every_nested_member_of_the_group_and_no_one_else() {
    use cardsync_bus::{Delivery, Handler as _, HandlerError};
    use cardsync_proto::sync_request::{Depth, Scope};
    let env = env().await;
    let tenant = env.tenant_text();
    let (alice, bob) = (env.create_user("Alice").await, env.create_user("Bob").await);
    env.create_user("Carol").await;
    let emea = env.create_group("EMEA", &[&bob]).await;
    let sales = env.create_group("Sales", &[&alice, &emea]).await;
    env.round(Cause::Manual, Mode::Incremental).await;
    env.commands().await;

    let request = |target: &str| Delivery {
        message: cardsync_proto::SyncRequest {
            envelope: Some(cardsync_proto::Envelope::new(&tenant, Cause::Manual)),
            scope: Scope::Group as i32,
            target_id: target.to_owned(),
            depth: Depth::Full as i32,
            run_id: String::new(),
        },
        attempt: 1,
        redelivered: false,
        message_id: None,
        tenant_id: Some(tenant.clone()),
        exchange: String::new(),
        routing_key: String::new(),
    };
    let handler = env.app.request_handler();
    handler.handle(request(&sales)).await.unwrap();
    let pushed: BTreeSet<String> = env
        .commands()
        .await
        .into_iter()
        .map(|c| c.user_id)
        .collect();
    assert_eq!(
        pushed,
        [alice, bob].into(),
        "direct and nested members, unchanged but pushed"
    );

    let missing = handler.handle(request("")).await;
    assert!(
        matches!(missing, Err(HandlerError::Permanent(_))),
        "a group request without a group dead-letters: {missing:?}"
    );
    env.teardown().await;
}

#[tokio::test]
async fn a_sync_request_naming_a_run_records_its_commands_once_or_fails_it_with_the_reason() {
    use cardsync_bus::{Delivery, Handler as _};
    use cardsync_proto::sync_request::{Depth, Scope};
    use cardsync_store::runs::{self, NewRun, RunStatus};
    let env = env().await;
    let tenant = env.tenant_text();
    let alice = env.create_user("Alice").await;
    env.round(Cause::Manual, Mode::Incremental).await;
    env.commands().await;

    let request = |target: &str, run: uuid::Uuid| Delivery {
        message: cardsync_proto::SyncRequest {
            envelope: Some(cardsync_proto::Envelope::new(&tenant, Cause::Manual)),
            scope: Scope::User as i32,
            target_id: target.to_owned(),
            depth: Depth::Full as i32,
            run_id: run.to_string(),
        },
        attempt: 1,
        redelivered: false,
        message_id: None,
        tenant_id: Some(tenant.clone()),
        exchange: String::new(),
        routing_key: String::new(),
    };
    let new_run = |run: uuid::Uuid| NewRun {
        run_id: run,
        tenant_id: env.tenant,
        kind: "user_sync".into(),
        cause: "manual".into(),
        started_by: "test".into(),
        target: None,
    };
    let handler = env.app.request_handler();

    let done = uuid::Uuid::new_v4();
    runs::create(&env.pool, &new_run(done)).await.unwrap();
    handler.handle(request(&alice, done)).await.unwrap();
    // The round recorded its one command; the run ends when the card-writer has applied it
    // (no card-writer runs here), so it is still running, with every command out.
    let run = runs::get(&env.pool, done).await.unwrap().expect("run");
    assert_eq!(run.status, RunStatus::Running);
    assert!(run.started_at.is_some() && run.emitted_at.is_some() && run.finished_at.is_none());
    assert_eq!(run.counts.get("commands"), Some(&1), "{:?}", run.counts);
    // A redelivered request does not count the run's commands again.
    handler.handle(request(&alice, done)).await.unwrap();
    let again = runs::get(&env.pool, done).await.unwrap().expect("run");
    assert_eq!(again.counts, run.counts);
    env.commands().await;

    let failed = uuid::Uuid::new_v4();
    runs::create(&env.pool, &new_run(failed)).await.unwrap();
    assert!(handler.handle(request("", failed)).await.is_err());
    let run = runs::get(&env.pool, failed).await.unwrap().expect("run");
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        run.detail
            .as_deref()
            .is_some_and(|d| d.contains("target id")),
        "{:?}",
        run.detail
    );
    env.teardown().await;
}

#[tokio::test]
async fn a_round_of_an_offboarded_or_unknown_tenant_is_dropped_without_writing_anything() {
    let env = env().await;
    env.seed(2).await;
    let first = env.round(Cause::SafetyPoll, Mode::Full).await;
    assert!(first.commands > 0, "{first:?}");
    env.commands().await;
    // What offboarding leaves for the subscription manager: a connection whose disconnect is
    // requested, and no sync state.
    assert!(
        cardsync_store::subscription_slots::request_disconnect(&env.pool, env.tenant)
            .await
            .unwrap()
    );
    sqlx::query("DELETE FROM tenant_sync_state WHERE tenant_id = $1")
        .bind(env.tenant)
        .execute(&env.pool)
        .await
        .unwrap();
    let dropped = env.round(Cause::SafetyPoll, Mode::Full).await;
    assert_eq!((dropped.pages, dropped.commands), (0, 0), "{dropped:?}");
    assert!(env.commands().await.is_empty());
    let state: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_sync_state WHERE tenant_id = $1")
            .bind(env.tenant)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(state, 0, "nothing of the tenant is written again");
    // Once the manager removed the connection: still dropped, not an error.
    cardsync_store::connections::remove(&env.pool, env.tenant)
        .await
        .unwrap();
    let gone = env.round(Cause::Manual, Mode::Incremental).await;
    assert_eq!(gone.pages, 0);
    env.teardown().await;
}

/// The card command actions of a round, by user id.
async fn actions_by_user(env: &crate::support::Env) -> BTreeMap<String, Action> {
    env.commands()
        .await
        .iter()
        .map(|command| (command.user_id.clone(), action(command)))
        .collect()
}

#[tokio::test]
async fn a_user_filter_leaves_out_guests_and_users_failing_its_condition_and_rescopes_on_change() {
    let env = env().await;
    let tenant = env.tenant_text();
    let mut ids = BTreeMap::new();
    for (name, kind, department) in [
        ("Ann", "Member", "Sales"),
        ("Bob", "Member", "Legal"),
        ("Gus", "Guest", "Sales"),
    ] {
        let user = json!({
            "displayName": name, "userType": kind, "department": department,
            "userPrincipalName": format!("{}@contoso.test", name.to_lowercase()),
        });
        let created = env.control.create_user(&tenant, user).await.unwrap();
        ids.insert(name, id_of(&created));
    }
    env.round(Cause::Manual, Mode::Incremental).await;
    assert!(
        actions_by_user(&env)
            .await
            .values()
            .all(|a| *a == Action::Upsert)
    );

    // Sales members only. The stored delta selects neither property: the round enumerates
    // with them first, then Bob (Legal) and Gus (a guest) leave the scope.
    let filter = |value: serde_json::Value| -> cardsync_rules::UserFilter {
        serde_json::from_value(value).unwrap()
    };
    cardsync_store::directory::set_user_filter(
        &env.pool,
        env.tenant,
        Some(&filter(json!({"exclude_guests": true,
            "condition": {"expression": "department", "in": ["sales"]}}))),
    )
    .await
    .unwrap();
    env.round(Cause::Manual, Mode::Incremental).await;
    let moved = actions_by_user(&env).await;
    assert_ne!(moved[&ids["Bob"]], Action::Upsert, "{moved:?}");
    assert_ne!(moved[&ids["Gus"]], Action::Upsert, "{moved:?}");
    assert_eq!(
        moved.get(&ids["Ann"]).copied().unwrap_or(Action::Upsert),
        Action::Upsert
    );

    // A changed condition re-scopes from the snapshot: Legal in, Sales out, the guest stays out.
    cardsync_store::directory::set_user_filter(
        &env.pool,
        env.tenant,
        Some(&filter(json!({"exclude_guests": true,
            "condition": {"expression": "department", "in": ["Legal"]}}))),
    )
    .await
    .unwrap();
    env.round(Cause::Manual, Mode::Incremental).await;
    let moved = actions_by_user(&env).await;
    assert_eq!(moved.get(&ids["Bob"]), Some(&Action::Upsert), "{moved:?}");
    assert_ne!(moved[&ids["Ann"]], Action::Upsert, "{moved:?}");
    assert!(!moved.contains_key(&ids["Gus"]), "{moved:?}");

    // No filter: everyone is back.
    cardsync_store::directory::set_user_filter(&env.pool, env.tenant, None)
        .await
        .unwrap();
    env.round(Cause::Manual, Mode::Incremental).await;
    let moved = actions_by_user(&env).await;
    assert_eq!(moved.get(&ids["Ann"]), Some(&Action::Upsert), "{moved:?}");
    assert_eq!(moved.get(&ids["Gus"]), Some(&Action::Upsert), "{moved:?}");
    assert!(!moved.contains_key(&ids["Bob"]), "{moved:?}");
    env.teardown().await;
}

#[tokio::test]
async fn a_new_tenant_whose_first_sync_is_under_way_is_left_to_it_by_the_safety_poll() {
    let env = env().await;
    let idle = || async {
        cardsync_store::directory::idle_tenants(&env.pool, std::time::Duration::from_secs(3600))
            .await
            .unwrap()
    };
    assert!(
        idle().await.contains(&env.tenant),
        "a tenant that never had a round is idle"
    );
    // The operator's first Sync Now: a reconcile run, queued, then taken by a reconciler.
    let run_id = uuid::Uuid::now_v7();
    cardsync_store::runs::create(
        &env.pool,
        &cardsync_store::runs::NewRun {
            run_id,
            tenant_id: env.tenant,
            kind: "reconcile".into(),
            cause: "manual".into(),
            started_by: "admin@contoso.test".into(),
            target: None,
        },
    )
    .await
    .unwrap();
    assert!(
        !idle().await.contains(&env.tenant),
        "its queued first sync will enumerate it; a poll round would do it twice"
    );
    cardsync_store::runs::set_status(
        &env.pool,
        run_id,
        cardsync_store::runs::RunStatus::Running,
        None,
    )
    .await
    .unwrap();
    assert!(!idle().await.contains(&env.tenant));
    // The run failed before any round: the poll takes the tenant again.
    cardsync_store::runs::set_status(
        &env.pool,
        run_id,
        cardsync_store::runs::RunStatus::Failed,
        Some("no connection"),
    )
    .await
    .unwrap();
    assert!(idle().await.contains(&env.tenant));
    env.teardown().await;
}
