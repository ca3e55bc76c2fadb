//! Applying commands: create, update, versions, linking, removal policies, dead letters.

use crate::helpers::{command, kinds, spawn_app, spawn_app_with, upsert};
use cardsync_bus::{DeadLetterReason, Processed};
use cardsync_proto::card_command::Action;
use cardsync_rules::{FieldRules, RemovalPolicy, ValueSource};
use cardsync_store::audit;
use cardsync_store::cards::CardStatus;

#[tokio::test]
async fn an_upsert_creates_a_card_audits_it_and_announces_it() {
    let mut app = spawn_app().await;
    app.apply(&upsert(
        app.tenant,
        "u1",
        1,
        &[
            ("name", Some("Jessica Swift")),
            ("email", Some("Jess@Contoso.example")),
            ("job_title", Some("Marketing Manager")),
        ],
    ))
    .await;

    let cards = app.cards().await;
    assert_eq!(cards.len(), 1);
    let card = &cards[0];
    assert_eq!(card.status, CardStatus::Active);
    assert_eq!(card.applied_version, 1);
    assert_eq!(card.email.as_deref(), Some("Jess@Contoso.example"));
    assert_eq!(card.fields.value("job_title"), Some("Marketing Manager"));
    assert_eq!(
        card.fields.get("name").expect("name").source,
        ValueSource::Directory
    );

    let history = audit::for_card(&app.pool, app.tenant, card.card_id)
        .await
        .expect("audit");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].action, "created");
    assert_eq!(history[0].cause, "notification");
    assert!(history[0].fields_before.is_none());
    let after = history[0].fields_after.as_ref().expect("after").0.clone();
    assert_eq!(after.value("name"), Some("Jessica Swift"));

    let events = app.events().await;
    assert_eq!(kinds(&events), vec!["created"]);
    assert_eq!(events[0].1.card_id, card.card_id.to_string());
    assert_eq!(events[0].1.user_id, "u1");
    assert_eq!(app.counted("created").await, 1.0);
    app.teardown().await;
}

#[tokio::test]
async fn a_newer_version_updates_and_stale_or_duplicate_versions_are_counted_no_ops() {
    let mut app = spawn_app().await;
    app.apply(&upsert(
        app.tenant,
        "u1",
        1,
        &[("name", Some("Ann")), ("job_title", Some("Manager"))],
    ))
    .await;
    app.apply(&upsert(
        app.tenant,
        "u1",
        3,
        &[("name", Some("Ann")), ("job_title", Some("Director"))],
    ))
    .await;
    // Older (reordered) and equal (replayed under a new message id) versions change nothing.
    app.apply(&upsert(
        app.tenant,
        "u1",
        2,
        &[("job_title", Some("Stale"))],
    ))
    .await;
    app.apply(&upsert(
        app.tenant,
        "u1",
        3,
        &[("job_title", Some("Replay"))],
    ))
    .await;

    let card = app.card_of("u1").await;
    assert_eq!(card.fields.value("job_title"), Some("Director"));
    assert_eq!(card.applied_version, 3);
    assert_eq!(app.counted("stale").await, 1.0);
    assert_eq!(app.counted("duplicate").await, 1.0);
    assert_eq!(app.counted("updated").await, 1.0);

    let events = app.events().await;
    assert_eq!(kinds(&events), vec!["created", "updated"]);
    assert_eq!(events[1].1.changed_fields, vec!["job_title".to_owned()]);
    assert_eq!(events[1].1.version, 3);
    let history = audit::for_card(&app.pool, app.tenant, card.card_id)
        .await
        .expect("audit");
    assert_eq!(history.len(), 2);
    // The update's row holds the one field that changed, as it was and as it is.
    let before = history[1].fields_before.as_ref().expect("before").0.clone();
    let after = history[1].fields_after.as_ref().expect("after").0.clone();
    assert_eq!(before.value("job_title"), Some("Manager"));
    assert_eq!(after.value("job_title"), Some("Director"));
    assert_eq!((before.len(), after.len()), (1, 1));
    app.teardown().await;
}

#[tokio::test]
async fn an_email_match_links_the_existing_card_instead_of_creating_a_second() {
    let mut app = spawn_app_with(FieldRules::default(), true).await;
    let local = app
        .create_local(&[
            ("name", Some("Jess")),
            ("email", Some("JSwift@Contoso.Example")),
            ("nickname", Some("JJ")),
        ])
        .await;
    let local_id = local.card_id.to_string();

    app.apply(&upsert(
        app.tenant,
        "u1",
        1,
        &[
            ("name", Some("Jessica Swift")),
            ("email", Some("jswift@contoso.example")),
        ],
    ))
    .await;

    let cards = app.cards().await;
    assert_eq!(cards.len(), 1, "linked, not duplicated");
    let card = &cards[0];
    assert_eq!(card.card_id.to_string(), local_id);
    assert_eq!(card.user_id.as_deref(), Some("u1"));
    assert_eq!(card.fields.value("name"), Some("Jessica Swift"));
    assert_eq!(
        card.fields.value("nickname"),
        Some("JJ"),
        "local-only field kept"
    );
    let events = app.events().await;
    assert_eq!(kinds(&events), vec!["created", "linked", "invited"]);
    assert_eq!(app.counted("linked").await, 1.0);
    app.teardown().await;
}

#[tokio::test]
async fn a_uid_match_links_the_card_of_a_recreated_account() {
    let mut app = spawn_app().await;
    let mut first = upsert(app.tenant, "object-1", 5, &[("name", Some("Ann"))]);
    first.uid = "E-100".into();
    app.apply(&first).await;
    // Same employee id, new object id: the same person, so the same card.
    let mut second = upsert(app.tenant, "object-2", 1, &[("name", Some("Ann Lee"))]);
    second.uid = "E-100".into();
    app.apply(&second).await;

    let cards = app.cards().await;
    assert_eq!(cards.len(), 1);
    assert_eq!(cards[0].user_id.as_deref(), Some("object-2"));
    assert_eq!(cards[0].fields.value("name"), Some("Ann Lee"));
    assert_eq!(cards[0].applied_version, 1);
    assert_eq!(kinds(&app.events().await), vec!["created", "linked"]);
    app.teardown().await;
}

#[tokio::test]
async fn removal_deactivates_under_the_default_policy_and_upsert_reactivates() {
    let mut app = spawn_app().await;
    app.apply(&upsert(app.tenant, "u1", 1, &[("name", Some("Ann"))]))
        .await;
    app.apply(&command(app.tenant, Action::Delete, "u1", 2, &[]))
        .await;
    let card = app.card_of("u1").await;
    assert_eq!(card.status, CardStatus::Deactivated);
    assert_eq!(
        card.fields.value("name"),
        Some("Ann"),
        "kept for reactivation"
    );

    app.apply(&command(
        app.tenant,
        Action::Reactivate,
        "u1",
        3,
        &[("name", Some("Ann"))],
    ))
    .await;
    assert_eq!(app.card_of("u1").await.status, CardStatus::Active);
    // A disabled account only ever deactivates.
    app.apply(&command(app.tenant, Action::Deactivate, "u1", 4, &[]))
        .await;
    assert_eq!(app.card_of("u1").await.status, CardStatus::Deactivated);
    app.apply(&upsert(app.tenant, "u1", 5, &[("name", Some("Ann"))]))
        .await;
    assert_eq!(app.card_of("u1").await.status, CardStatus::Active);

    assert_eq!(
        kinds(&app.events().await),
        vec![
            "created",
            "deactivated",
            "reactivated",
            "deactivated",
            "reactivated"
        ]
    );
    assert_eq!(app.cards().await.len(), 1);
    app.teardown().await;
}

#[tokio::test]
async fn removal_under_the_delete_policy_leaves_a_tombstone_that_keeps_stale_commands_out() {
    let rules = FieldRules {
        removal: RemovalPolicy::Delete,
        ..FieldRules::default()
    };
    let mut app = spawn_app_with(rules, false).await;
    app.apply(&upsert(
        app.tenant,
        "u1",
        1,
        &[
            ("name", Some("Ann")),
            ("email", Some("ann@contoso.example")),
        ],
    ))
    .await;
    let created = app.card_of("u1").await;
    app.apply(&command(app.tenant, Action::Delete, "u1", 2, &[]))
        .await;
    let tombstone = app.card_of("u1").await;
    assert_eq!(tombstone.status, CardStatus::Deleted);
    assert!(tombstone.fields.is_empty());
    assert_eq!(tombstone.email, None);
    // A reordered older upsert does not bring the card back.
    app.apply(&upsert(app.tenant, "u1", 1, &[("name", Some("Ann"))]))
        .await;
    assert_eq!(app.card_of("u1").await.status, CardStatus::Deleted);
    assert_eq!(app.counted("stale").await, 1.0);
    // A disabled account on a deleted card stays deleted; a newer upsert is a new card.
    app.apply(&command(app.tenant, Action::Deactivate, "u1", 3, &[]))
        .await;
    app.apply(&upsert(app.tenant, "u1", 4, &[("name", Some("Ann"))]))
        .await;
    let again = app.card_of("u1").await;
    assert_eq!(again.status, CardStatus::Active);
    assert_ne!(again.card_id, created.card_id);
    assert_eq!(app.cards().await.len(), 1);

    let history = audit::for_card(&app.pool, app.tenant, created.card_id)
        .await
        .expect("audit");
    let deleted = history.last().expect("a deletion row");
    assert_eq!(deleted.action, "deleted");
    let before = deleted.fields_before.as_ref().expect("before").0.clone();
    assert_eq!(before.value("name"), Some("Ann"));
    assert_eq!(
        kinds(&app.events().await),
        vec!["created", "deleted", "created"]
    );
    app.teardown().await;
}

#[tokio::test]
async fn teams_follow_the_groups_of_the_command_and_a_late_command_keeps_the_stored_name() {
    let mut app = spawn_app().await;
    let mut first = upsert(app.tenant, "u1", 1, &[("name", Some("Ann"))]);
    first.team_ids = vec!["g-sales".into(), "g-emea".into()];
    first.teams = vec![cardsync_proto::Team {
        group_id: "g-sales".into(),
        name: "Sales".into(),
    }];
    app.apply(&first).await;
    let mut moved = upsert(app.tenant, "u1", 2, &[("name", Some("Ann"))]);
    moved.team_ids = vec!["g-sales".into()];
    moved.teams = vec![
        cardsync_proto::Team {
            group_id: "g-sales".into(),
            name: "Sales & Marketing".into(),
        },
        cardsync_proto::Team {
            group_id: "g-emea".into(),
            name: "EMEA".into(),
        },
    ];
    app.apply(&moved).await;

    let card = app.card_of("u1").await;
    let teams = cardsync_store::cards::teams_of(&app.pool, app.tenant, card.card_id)
        .await
        .expect("teams");
    assert_eq!(teams, vec!["g-sales".to_owned()]);
    let stored = cardsync_store::teams::list(&app.pool, app.tenant)
        .await
        .expect("teams");
    let sales = stored
        .iter()
        .find(|t| t.group_id == "g-sales")
        .expect("sales");
    // The stored name stays: a command emitted before a rename could be applied after it, so
    // only the rounds rename teams (from the directory snapshot).
    assert_eq!(sales.name.as_deref(), Some("Sales"));
    let emea = stored
        .iter()
        .find(|t| t.group_id == "g-emea")
        .expect("emea");
    assert_eq!(
        emea.name.as_deref(),
        Some("EMEA"),
        "a team without a name takes one"
    );
    let events = app.events().await;
    assert_eq!(kinds(&events), vec!["created", "updated"]);
    assert_eq!(events[1].1.changed_fields, vec!["teams".to_owned()]);
    app.teardown().await;
}

#[tokio::test]
async fn a_new_team_takes_its_name_and_description_from_the_directory_snapshot() {
    let app = spawn_app().await;
    // The round saved the group, renamed since the command left, before the command arrives.
    sqlx::query(
        "INSERT INTO directory_groups (tenant_id, group_id, display_name, description)
         VALUES ($1, 'g-sales', 'Sales & Marketing', 'Everyone who sells')",
    )
    .bind(app.tenant)
    .execute(&app.pool)
    .await
    .expect("group");
    let mut ann = upsert(app.tenant, "u1", 1, &[("name", Some("Ann"))]);
    ann.team_ids = vec!["g-sales".into(), "g-unknown".into()];
    ann.teams = vec![
        cardsync_proto::Team {
            group_id: "g-sales".into(),
            name: "Sales".into(),
        },
        cardsync_proto::Team {
            group_id: "g-unknown".into(),
            name: "Unknown".into(),
        },
    ];
    app.apply(&ann).await;

    let stored = cardsync_store::teams::list(&app.pool, app.tenant)
        .await
        .expect("teams");
    let named: Vec<(&str, Option<&str>, Option<&str>)> = stored
        .iter()
        .map(|t| {
            (
                t.group_id.as_str(),
                t.name.as_deref(),
                t.description.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        named,
        vec![
            (
                "g-sales",
                Some("Sales & Marketing"),
                Some("Everyone who sells")
            ),
            ("g-unknown", Some("Unknown"), None),
        ],
        "the snapshot names a team it knows; the command names one it does not"
    );
    app.teardown().await;
}

#[tokio::test]
async fn invalid_commands_are_dead_lettered_and_commands_of_unknown_tenants_dropped() {
    let app = spawn_app().await;
    let mut invalid = upsert(app.tenant, "u1", 0, &[]);
    invalid.version = 0;
    app.send(&invalid).await;
    match app.step().await {
        Processed::DeadLettered { reason, error } => {
            assert_eq!(reason, DeadLetterReason::Permanent);
            assert!(error.contains("version"), "{error}");
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }

    // An offboarded tenant's commands still queued: consumed and counted, never dead-lettered.
    let stranger = uuid::Uuid::new_v4();
    app.send(&upsert(stranger, "u1", 1, &[])).await;
    assert_eq!(app.step().await, Processed::Acked);
    let dropped = app
        .sample(
            "cardsync_card_writer_commands_total",
            &[
                ("outcome", "unknown_tenant"),
                ("tenant", stranger.to_string().as_str()),
            ],
        )
        .await;
    assert_eq!(dropped, Some(1.0));
    assert!(app.cards().await.is_empty());
    app.teardown().await;
}

#[tokio::test]
async fn a_command_that_meets_an_offboarding_in_progress_is_dropped_with_the_tenant() {
    let app = spawn_app().await;
    app.apply(&upsert(app.tenant, "early", 1, &[("name", Some("Early"))]))
        .await;
    // The admin API's offboarding, holding the tenant's row until it commits.
    let mut offboarding = app.pool.begin().await.expect("transaction");
    let offboarder: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *offboarding)
        .await
        .expect("backend pid");
    cardsync_store::offboarding::offboard(&mut offboarding, app.tenant)
        .await
        .expect("offboarded")
        .expect("the tenant existed");
    app.send(&upsert(app.tenant, "late", 1, &[("name", Some("Late"))]))
        .await;
    let commit = async {
        // Commits once the writer waits on the offboarding, so it meets the deletion half-way.
        let waiting = || {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
            )
            .bind(offboarder)
            .fetch_one(&app.pool)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while waiting().await.expect("pg_stat_activity") == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never waited on the offboarding"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        offboarding.commit().await.expect("committed");
    };
    let (processed, ()) = tokio::join!(app.step(), commit);
    assert_eq!(
        processed,
        Processed::Acked,
        "dropped with the tenant, neither retried nor dead-lettered"
    );
    let dropped = app
        .sample(
            "cardsync_card_writer_commands_total",
            &[
                ("outcome", "unknown_tenant"),
                ("tenant", app.tenant.to_string().as_str()),
            ],
        )
        .await;
    assert_eq!(dropped, Some(1.0));
    assert!(
        app.cards().await.is_empty(),
        "the offboarding took every card"
    );
    app.teardown().await;
}

#[tokio::test]
async fn directory_roles_apply_only_when_the_tenant_turns_admin_roles_on() {
    use cardsync_proto::Role;
    use cardsync_store::cards::CardRole;
    let app = spawn_app().await;
    let with_role = |user: &str, version: u64, role: Role| {
        let mut command = upsert(app.tenant, user, version, &[("name", Some(user))]);
        command.role = role as i32;
        command
    };
    // Roles off (the default): a Global Administrator is a member like everyone else.
    app.apply(&with_role("boss", 1, Role::TeamAdmin)).await;
    assert_eq!(app.card_of("boss").await.role, CardRole::Member);

    let mut tenant = cardsync_store::tenants::get(&app.pool, app.tenant)
        .await
        .expect("tenant read")
        .expect("tenant exists");
    tenant.admin_roles_enabled = true;
    cardsync_store::tenants::put(
        &app.pool,
        &cardsync_store::tenants::TenantConfig {
            id: tenant.id,
            name: tenant.name.clone(),
            rules: tenant.rules.clone(),
            invites_enabled: tenant.invites_enabled,
            admin_roles_enabled: true,
        },
    )
    .await
    .expect("tenant stored");
    app.apply(&with_role("boss", 2, Role::TeamAdmin)).await;
    assert_eq!(app.card_of("boss").await.role, CardRole::TeamAdmin);
    app.apply(&with_role("lead", 1, Role::SubteamAdmin)).await;
    assert_eq!(app.card_of("lead").await.role, CardRole::SubteamAdmin);
    // A command whose role was never read keeps the card's role; a demotion applies.
    app.apply(&with_role("boss", 3, Role::Unspecified)).await;
    assert_eq!(app.card_of("boss").await.role, CardRole::TeamAdmin);
    app.apply(&with_role("boss", 4, Role::Member)).await;
    assert_eq!(app.card_of("boss").await.role, CardRole::Member);
    app.teardown().await;
}

#[tokio::test]
async fn a_write_a_notification_asked_for_is_measured_from_the_notifications_arrival() {
    let app = spawn_app().await;
    let tenant = app.tenant.to_string();
    let arrived = time::OffsetDateTime::now_utc() - time::Duration::seconds(3);
    let mut notified = upsert(app.tenant, "u1", 1, &[("name", Some("Ann"))]);
    notified.notified_at = Some(cardsync_proto::timestamp(arrived));
    app.apply(&notified).await;
    // The same version again writes nothing, and a command no notification asked for (a
    // safety poll's) has no arrival: neither is measured.
    app.apply(&notified).await;
    app.apply(&upsert(app.tenant, "u2", 1, &[("name", Some("Bo"))]))
        .await;

    let family = "cardsync_card_writer_freshness_seconds";
    let count = app
        .sample(&format!("{family}_count"), &[("tenant", &tenant)])
        .await;
    assert_eq!(count, Some(1.0));
    let sum = app
        .sample(&format!("{family}_sum"), &[("tenant", &tenant)])
        .await
        .expect("sum");
    assert!((3.0..3600.0).contains(&sum), "freshness {sum} s");
    let under_2s = app
        .sample(
            &format!("{family}_bucket"),
            &[("tenant", &tenant), ("le", "2")],
        )
        .await;
    assert_eq!(under_2s, Some(0.0));
    let under_an_hour = app
        .sample(
            &format!("{family}_bucket"),
            &[("tenant", &tenant), ("le", "3600")],
        )
        .await;
    assert_eq!(under_an_hour, Some(1.0));
    app.teardown().await;
}

#[tokio::test]
async fn a_runs_commands_count_their_outcomes_and_end_the_run_once_all_are_applied() {
    use cardsync_store::runs::{self, NewRun, RunStatus};
    let app = spawn_app().await;
    let run_id = uuid::Uuid::now_v7();
    runs::create(
        &app.pool,
        &NewRun {
            run_id,
            tenant_id: app.tenant,
            kind: "reconcile".into(),
            cause: "reconcile".into(),
            started_by: "system".into(),
            target: None,
        },
    )
    .await
    .expect("run recorded");
    runs::set_status(&app.pool, run_id, RunStatus::Running, None)
        .await
        .expect("running");
    let of_run = |mut command: cardsync_proto::CardCommand| {
        command.run_id = run_id.to_string();
        command
    };
    let mut tx = app.pool.begin().await.expect("tx");
    // Three commands went out: a new card, its update, and an older version overtaken by it.
    let digests =
        cardsync_cards::DigestEvents::new(app.topology.name(cardsync_bus::names::CARD_EVENTS));
    runs::emission_done(&mut tx, run_id, 3, &[], &digests)
        .await
        .expect("emission recorded");
    tx.commit().await.expect("commit");
    let created = of_run(upsert(app.tenant, "u1", 1, &[("name", Some("Ada"))]));
    app.apply(&created).await;
    app.apply(&of_run(upsert(
        app.tenant,
        "u1",
        3,
        &[("name", Some("Ada L."))],
    )))
    .await;
    // A redelivery of an applied command is not counted twice.
    app.apply(&created).await;
    let waiting = runs::get(&app.pool, run_id)
        .await
        .expect("read")
        .expect("run");
    assert_eq!(waiting.status, RunStatus::Running);
    assert_eq!(waiting.counts.get("created"), Some(&1));
    assert_eq!(waiting.counts.get("updated"), Some(&1));
    app.apply(&of_run(upsert(
        app.tenant,
        "u1",
        2,
        &[("name", Some("Ada"))],
    )))
    .await;
    let done = runs::get(&app.pool, run_id)
        .await
        .expect("read")
        .expect("run");
    assert_eq!(done.counts.get("superseded"), Some(&1));
    assert_eq!(done.status, RunStatus::Succeeded);
    assert!(done.finished_at.is_some());
    app.teardown().await;
}
