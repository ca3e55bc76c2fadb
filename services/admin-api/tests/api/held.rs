//! The mass-change safety rail's routes: a held run's plan, approve (exactly the kept commands
//! on the cards exchange, then what waited while paused), reject, resume, and the tenant's
//! thresholds; their roles, their 404s and 409s, and their audit rows.

use crate::resources::{next_message, with_tenant};
use crate::support::Fixture;
use cardsync_bus::names;
use cardsync_proto::{self as proto, Message as _};
use cardsync_store::runs::{self, NewRun};
use cardsync_store::safety::{self, HeldCommand, HeldPlan, Worker};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

/// A run held as a round leaves it: `users` deactivations kept at versions 7, 8, …, on the
/// bulk lane, and its tenant paused.
async fn hold(fixture: &Fixture, tenant: Uuid, users: &[&str]) -> Uuid {
    let pool = &fixture.api.pool;
    let run_id = Uuid::now_v7();
    runs::create(
        pool,
        &NewRun {
            run_id,
            tenant_id: tenant,
            kind: "reconcile".into(),
            cause: "reconcile".into(),
            started_by: "system".into(),
            target: None,
        },
    )
    .await
    .expect("test setup");
    let kept: Vec<HeldCommand> = users
        .iter()
        .zip(7_i64..)
        .enumerate()
        .map(|(seq, (user, version))| {
            let command = proto::CardCommand {
                envelope: Some(proto::Envelope::new(
                    tenant.to_string(),
                    proto::Cause::Reconcile,
                )),
                action: proto::card_command::Action::Deactivate as i32,
                user_id: (*user).to_owned(),
                version: u64::try_from(version).expect("test setup"),
                run_id: run_id.to_string(),
                ..Default::default()
            };
            HeldCommand {
                seq: i64::try_from(seq).expect("test setup") + 1,
                user_id: (*user).to_owned(),
                version,
                action: "deactivate".into(),
                command: command.encode_to_vec(),
            }
        })
        .collect();
    let mut tx = pool.begin().await.expect("test setup");
    safety::lock(&mut tx, tenant).await.expect("test setup");
    let plan = HeldPlan {
        run_id,
        tenant_id: tenant,
        lane: "bulk".into(),
        summary: json!({"verdict": "would deactivate or delete 2 of 2 active cards", "outcomes": {"deactivated": 2}}),
        created_at: OffsetDateTime::now_utc(),
        decided_at: None,
        decided_by: None,
    };
    safety::hold(
        &mut tx,
        &plan,
        "held: would deactivate or delete 2 of 2 active cards",
    )
    .await
    .expect("test setup");
    safety::keep_commands(&mut tx, run_id, &kept)
        .await
        .expect("test setup");
    tx.commit().await.expect("test setup");
    run_id
}

async fn audited(fixture: &Fixture, tenant: Uuid, action: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM admin_audit WHERE tenant_id = $1 AND action = $2")
        .bind(tenant)
        .bind(action)
        .fetch_one(&fixture.api.pool)
        .await
        .expect("test setup")
}

#[tokio::test]
async fn approving_a_held_run_sends_exactly_its_kept_commands_then_what_waited_while_paused() {
    let (fixture, tenant) = with_tenant().await;
    let (api, admin, reader) = (&fixture.api, &fixture.admin, &fixture.reader);
    let run = hold(&fixture, tenant, &["u-1", "u-2"]).await;
    // While paused, a Sync Now's request was parked and a notification round left its mark.
    let parked = proto::SyncRequest {
        envelope: Some(proto::Envelope::new(
            tenant.to_string(),
            proto::Cause::Manual,
        )),
        scope: proto::sync_request::Scope::Tenant as i32,
        depth: proto::sync_request::Depth::Full as i32,
        run_id: Uuid::now_v7().to_string(),
        ..Default::default()
    };
    let parked_run = Uuid::parse_str(&parked.run_id).expect("test setup");
    let mut tx = api.pool.begin().await.expect("test setup");
    safety::lock(&mut tx, tenant).await.expect("test setup");
    let bytes = parked.encode_to_vec();
    safety::defer(
        &mut tx,
        tenant,
        Some((parked_run, Worker::Reconcile, &bytes)),
    )
    .await
    .expect("test setup");
    safety::defer(&mut tx, tenant, None)
        .await
        .expect("test setup");
    tx.commit().await.expect("test setup");

    let plan = api
        .get(&format!("/v1/runs/{run}/plan?limit=1"), reader)
        .await
        .expect(200);
    assert_eq!(plan["commands"], 2);
    assert_eq!(
        plan["sample"],
        json!([{"seq": 1, "user_id": "u-1", "version": 7, "action": "deactivate"}])
    );
    assert_eq!(plan["run"]["status"], "held");
    assert_eq!(plan["summary"]["outcomes"]["deactivated"], 2);
    api.get(&format!("/v1/runs/{run}/plan?limit=0"), reader)
        .await
        .assert_problem(400, "invalid-limit");
    let held = api
        .get(&format!("/v1/runs?tenant={tenant}&status=held"), reader)
        .await
        .expect(200);
    assert_eq!(held["items"][0]["id"], run.to_string());
    let shown = api
        .get(&format!("/v1/tenants/{tenant}/safety"), reader)
        .await
        .expect(200);
    assert_eq!(shown["paused"], true);
    assert_eq!(shown["round_pending"], true);
    assert_eq!(shown["parked_runs"], json!([parked_run]));

    api.post(&format!("/v1/runs/{run}/approve"), reader, json!({}))
        .await
        .expect(403);
    api.post(
        &format!("/v1/runs/{}/approve", Uuid::now_v7()),
        admin,
        json!({}),
    )
    .await
    .assert_problem(404, "unknown-run");
    let approved = api
        .post(&format!("/v1/runs/{run}/approve"), admin, json!({}))
        .await
        .expect(200);
    assert_eq!(approved["status"], "running");
    assert_eq!(approved["counts"]["commands"], 2);
    for (user, version) in [("u-1", 7), ("u-2", 8)] {
        let command: proto::CardCommand = next_message(&fixture, names::CARD_WRITER_BULK).await;
        assert_eq!((command.user_id.as_str(), command.version), (user, version));
        assert_eq!(command.run_id, run.to_string());
    }
    let again: proto::SyncRequest = next_message(&fixture, names::RECONCILER_REQUESTS).await;
    assert_eq!(again, parked);
    let owed: proto::SyncRequest = next_message(&fixture, names::DELTA_WORKER_REQUESTS).await;
    assert_eq!(owed.depth(), proto::sync_request::Depth::Info);
    assert!(owed.run_id.is_empty());
    let shown = api
        .get(&format!("/v1/tenants/{tenant}/safety"), reader)
        .await
        .expect(200);
    assert_eq!(shown["paused"], false);
    assert_eq!(shown["round_pending"], false);
    assert_eq!(shown["parked_runs"], json!([]));
    assert_eq!(shown["held_runs"], json!([]));
    assert_eq!(audited(&fixture, tenant, "run.approve").await, 1);
    api.post(&format!("/v1/runs/{run}/approve"), admin, json!({}))
        .await
        .assert_problem(409, "run-not-held");
    api.post(&format!("/v1/runs/{run}/reject"), admin, json!({}))
        .await
        .assert_problem(409, "run-not-held");
}

#[tokio::test]
async fn a_rejected_run_sends_nothing_and_its_tenant_stays_paused_until_resumed() {
    let (fixture, tenant) = with_tenant().await;
    let (api, admin) = (&fixture.api, &fixture.admin);
    let run = hold(&fixture, tenant, &["u-1", "u-2"]).await;
    api.post(&format!("/v1/tenants/{tenant}/resume"), admin, json!({}))
        .await
        .assert_problem(409, "run-held");
    api.post(
        &format!("/v1/runs/{run}/reject"),
        admin,
        json!({"reason": "x".repeat(501)}),
    )
    .await
    .assert_problem(422, "invalid-reason");
    let rejected = api
        .post(
            &format!("/v1/runs/{run}/reject"),
            admin,
            json!({"reason": "scope group deleted by mistake"}),
        )
        .await
        .expect(200);
    assert_eq!(rejected["status"], "rejected");
    assert!(
        rejected["detail"]
            .as_str()
            .expect("test setup")
            .ends_with(": scope group deleted by mistake")
    );
    let plan = api
        .get(&format!("/v1/runs/{run}/plan"), admin)
        .await
        .expect(200);
    assert_eq!(plan["commands"], 0, "the kept commands are gone");
    assert!(plan["decided_by"].as_str().is_some());
    let shown = api
        .get(&format!("/v1/tenants/{tenant}/safety"), admin)
        .await
        .expect(200);
    assert_eq!(shown["paused"], true);
    assert_eq!(shown["paused_by_run"], run.to_string());
    let resumed = api
        .post(&format!("/v1/tenants/{tenant}/resume"), admin, json!({}))
        .await
        .expect(200);
    assert_eq!(resumed["paused"], false);
    api.post(&format!("/v1/tenants/{tenant}/resume"), admin, json!({}))
        .await
        .assert_problem(409, "tenant-not-paused");
    assert_eq!(audited(&fixture, tenant, "run.reject").await, 1);
    assert_eq!(audited(&fixture, tenant, "tenant.resume").await, 1);
    api.post(
        &format!("/v1/tenants/{}/resume", Uuid::now_v7()),
        admin,
        json!({}),
    )
    .await
    .assert_problem(404, "unknown-tenant");
}

#[tokio::test]
async fn thresholds_default_then_change_within_bounds_and_are_audited() {
    let (fixture, tenant) = with_tenant().await;
    let (api, admin, reader) = (&fixture.api, &fixture.admin, &fixture.reader);
    let path = format!("/v1/tenants/{tenant}/safety");
    let shown = api.get(&path, reader).await.expect(200);
    assert_eq!(
        (
            &shown["removal_percent"],
            &shown["update_percent"],
            &shown["minimum"]
        ),
        (&json!(10.0), &json!(50.0), &json!(10))
    );
    let body = json!({"removal_percent": 5, "update_percent": 25.5, "minimum": 3});
    api.put(&path, reader, body.clone()).await.expect(403);
    for bad in [
        json!({"removal_percent": 101, "update_percent": 25, "minimum": 3}),
        json!({"removal_percent": 5, "update_percent": -1, "minimum": 3}),
    ] {
        api.put(&path, admin, bad)
            .await
            .assert_problem(422, "invalid-threshold");
    }
    api.put(
        &path,
        admin,
        json!({"removal_percent": 5, "update_percent": 25, "minimum": 0}),
    )
    .await
    .assert_problem(422, "invalid-minimum");
    let changed = api.put(&path, admin, body).await.expect(200);
    assert_eq!(
        (
            &changed["removal_percent"],
            &changed["update_percent"],
            &changed["minimum"]
        ),
        (&json!(5.0), &json!(25.5), &json!(3))
    );
    let stored = safety::state(&api.pool, tenant).await.expect("test setup");
    assert_eq!(stored.thresholds.minimum, 3);
    assert_eq!(audited(&fixture, tenant, "safety.update").await, 1);
    api.get(&format!("/v1/tenants/{}/safety", Uuid::now_v7()), admin)
        .await
        .assert_problem(404, "unknown-tenant");
}
