//! What a reconcile repairs and counts: cards compared with the directory, not with cardsync's
//! own snapshot.

use crate::support::{env, field};
use cardsync_bus::Processed;
use cardsync_proto::{Cause, card_command::Action};
use cardsync_rounds::Mode;
use cardsync_rules::FieldRules;
use cardsync_store::runs::RunStatus;
use cardsync_store::tenants::{self, TenantConfig};
use serde_json::json;

#[tokio::test]
async fn a_card_whose_command_was_dead_lettered_is_repaired_by_the_next_reconcile() {
    let env = env().await;
    let ids = env.synced_users(&["Ada", "Bob"]).await;
    env.update_user(&ids[1], json!({"jobTitle": "CTO"})).await;
    env.round(Cause::Notification, Mode::Incremental).await;
    let lost = env.commands().await;
    assert_eq!(lost.len(), 1, "Bob's update");
    // The update never reaches the card: it was dead-lettered.

    let run = env.new_run().await;
    env.request(run).await;
    assert_eq!(env.reconcile_with(&env.app).await, Processed::Acked);

    let repairs = env.commands().await;
    assert_eq!(repairs.len(), 1, "only Bob's card drifted: {repairs:?}");
    let (queue, command) = &repairs[0];
    assert_eq!(*queue, "card-writer.bulk");
    assert_eq!(command.user_id, ids[1]);
    assert_eq!(command.action(), Action::Upsert);
    assert_eq!(field(command, "job_title"), Some("CTO"));
    assert!(command.version > lost[0].1.version, "a newer version");
    assert_eq!(command.envelope.as_ref().unwrap().cause(), Cause::Reconcile);
    env.apply(&repairs).await;
    assert_eq!(
        env.card_value(&ids[1], "job_title").await.as_deref(),
        Some("CTO")
    );

    let run = env.run(run).await;
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.counts.get("repaired"), Some(&1));
    assert_eq!(
        run.counts.get("unannounced"),
        None,
        "the change was announced"
    );
    env.teardown().await;
}

#[tokio::test]
async fn a_card_edited_behind_cardsyncs_back_is_put_right_and_a_kept_local_edit_stays() {
    let env = env().await;
    let ids = env.synced_users(&["Ada", "Bob"]).await;
    let rules: FieldRules =
        serde_json::from_value(json!({"fields": {"job_title": {"overwrite": false}}})).unwrap();
    tenants::put(
        &env.pool,
        &TenantConfig {
            id: env.tenant,
            name: "Contoso".into(),
            rules,
            invites_enabled: false,
            admin_roles_enabled: false,
        },
    )
    .await
    .unwrap();
    // Ada's name changed in the database, not through cardsync; Bob's job title is a local edit
    // the rules keep.
    sqlx::query(
        "UPDATE cards SET fields = jsonb_set(fields::jsonb, '{name,value}', '\"Mallory\"')::json
          WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(env.tenant)
    .bind(&ids[0])
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE cards SET fields = jsonb_set(jsonb_set(fields::jsonb, '{job_title,value}', '\"Chief\"'),
                                             '{job_title,source}', '\"local\"')::json
          WHERE tenant_id = $1 AND user_id = $2",
    )
    .bind(env.tenant)
    .bind(&ids[1])
    .execute(&env.pool)
    .await
    .unwrap();

    let run = env.new_run().await;
    env.request(run).await;
    assert_eq!(env.reconcile_with(&env.app).await, Processed::Acked);

    let repairs = env.commands().await;
    assert_eq!(repairs.len(), 1, "only Ada's card drifted: {repairs:?}");
    assert_eq!(repairs[0].1.user_id, ids[0]);
    assert_eq!(field(&repairs[0].1, "name"), Some("Ada"));
    env.apply(&repairs).await;
    assert_eq!(
        env.card_value(&ids[0], "name").await.as_deref(),
        Some("Ada")
    );
    assert_eq!(
        env.card_value(&ids[1], "job_title").await.as_deref(),
        Some("Chief")
    );
    assert_eq!(env.run(run).await.counts.get("repaired"), Some(&1));
    env.teardown().await;
}

#[tokio::test]
async fn changes_no_notification_announced_are_counted_as_unannounced() {
    let env = env().await;
    let ids = env.synced_users(&["Ada", "Bob", "Cy"]).await;
    // Two changes whose notifications were lost: no round ran.
    env.update_user(&ids[0], json!({"jobTitle": "CTO"})).await;
    env.update_user(&ids[1], json!({"department": "Sales"}))
        .await;

    let run = env.new_run().await;
    env.request(run).await;
    assert_eq!(env.reconcile_with(&env.app).await, Processed::Acked);

    let mut commands = env.commands().await;
    commands.sort_by(|a, b| a.1.user_id.cmp(&b.1.user_id));
    let mut expected = vec![ids[0].clone(), ids[1].clone()];
    expected.sort();
    assert_eq!(
        commands
            .iter()
            .map(|(_, c)| c.user_id.clone())
            .collect::<Vec<_>>(),
        expected
    );
    assert!(
        commands
            .iter()
            .all(|(queue, _)| *queue == "card-writer.bulk")
    );
    assert_eq!(
        env.run(run).await.status,
        RunStatus::Running,
        "the run waits for its commands to be applied"
    );
    env.apply(&commands).await;
    let run = env.run(run).await;
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.counts.get("unannounced"), Some(&2));
    assert_eq!(
        run.counts.get("repaired"),
        None,
        "the changed users' cards are being updated, not repaired again"
    );

    // The reconcile renewed the stored delta link: the next live round starts from it.
    let next = env.round(Cause::Notification, Mode::Incremental).await;
    assert!(!next.full, "the delta link was stored");
    assert_eq!(next.changed, 0);
    env.teardown().await;
}

#[tokio::test]
async fn a_queued_reconcile_of_an_offboarded_tenant_is_dropped_and_records_no_run() {
    let env = env().await;
    env.synced_users(&["Ada"]).await;
    let run = env.new_run().await;
    env.request(run).await;
    // Offboarded while the request waited in the queue: its rows go, its connection waits for
    // the subscription manager with its disconnect requested.
    let mut tx = env.pool.begin().await.unwrap();
    cardsync_store::offboarding::offboard(&mut tx, env.tenant)
        .await
        .unwrap()
        .expect("the tenant exists");
    tx.commit().await.unwrap();

    assert_eq!(env.reconcile_with(&env.app).await, Processed::Acked);
    assert!(env.commands().await.is_empty());
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM sync_runs WHERE tenant_id = $1")
        .bind(env.tenant)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(runs, 0, "no run of the offboarded tenant is recorded again");
    env.teardown().await;
}
