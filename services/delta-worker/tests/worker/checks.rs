//! The photo and admin-role checks' own cadence per tenant: a round of any cause runs a check
//! that is due (a busy tenant's notification rounds included), none that is not, and the safety
//! poll starts a round for a tenant whose check is due even when it is not idle.

use crate::support::{Env, env_with, eventually, id_of};
use cardsync_proto::{CardCommand, Cause};
use cardsync_rounds::Mode;
use serde_json::json;
use std::cell::RefCell;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(30);

/// Creates user `name` and returns its id.
async fn user(env: &Env, name: &str) -> String {
    id_of(
        &env.control
            .create_user(
                &env.tenant_text(),
                json!({"displayName": name, "userPrincipalName": format!("{name}@contoso.test")}),
            )
            .await
            .unwrap(),
    )
}

/// When the tenant's last photo check ran, as PostgreSQL says.
async fn photos_checked_at(env: &Env) -> Option<time::OffsetDateTime> {
    sqlx::query_scalar("SELECT photos_checked_at FROM tenant_sync_state WHERE tenant_id = $1")
        .bind(env.tenant)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// The commands carrying a stored image for `user`.
fn photo_commands<'a>(commands: &'a [CardCommand], user: &str) -> Vec<&'a CardCommand> {
    commands
        .iter()
        .filter(|c| c.user_id == user && !c.photo_sha256.is_empty())
        .collect()
}

#[tokio::test]
async fn a_round_of_any_cause_checks_photos_when_the_tenants_check_is_due_and_not_before() {
    let env = env_with(&[
        ("CARDSYNC__WORKER__PHOTO_CHECK_INTERVAL", "1h"),
        ("CARDSYNC__WORKER__PHOTO_RECHECK_AFTER", "0s"),
    ])
    .await;
    let ada = user(&env, "ada").await;
    env.round(Cause::Manual, Mode::Incremental).await;
    env.commands().await;
    let first = photos_checked_at(&env)
        .await
        .expect("Sync Now checks photos");
    env.control
        .set_photo(&env.tenant_text(), &ada, vec![0xff, 0xd8, 1], "image/jpeg")
        .await
        .unwrap();

    for cause in [Cause::Notification, Cause::SafetyPoll] {
        env.round(cause, Mode::Incremental).await;
        assert!(
            photo_commands(&env.commands().await, &ada).is_empty(),
            "{cause:?}: the check is not due for an hour"
        );
    }
    assert_eq!(photos_checked_at(&env).await, Some(first));

    // An hour later, as far as the tenant's check knows: a notification round does it.
    sqlx::query(
        "UPDATE tenant_sync_state SET photos_checked_at = now() - interval '61 minutes'
          WHERE tenant_id = $1",
    )
    .bind(env.tenant)
    .execute(&env.pool)
    .await
    .unwrap();
    let report = env.round(Cause::Notification, Mode::Incremental).await;
    let commands = env.commands().await;
    assert_eq!(photo_commands(&commands, &ada).len(), 1, "{commands:?}");
    assert_eq!(report.unannounced, 1);
    assert!(photos_checked_at(&env).await.expect("recorded") > first);
    env.teardown().await;
}

#[tokio::test]
async fn a_photo_check_spends_at_most_its_budget_and_the_rest_come_first_next_time() {
    let env = env_with(&[
        ("CARDSYNC__WORKER__PHOTO_CHECK_INTERVAL", "0s"),
        ("CARDSYNC__WORKER__PHOTO_RECHECK_AFTER", "1h"),
        // Three users with photos: a metadata read and a download each.
        ("CARDSYNC__WORKER__PHOTO_CHECK_BUDGET", "4"),
    ])
    .await;
    let mut users = Vec::new();
    for name in ["ann", "bea", "cid"] {
        let id = user(&env, name).await;
        env.control
            .set_photo(&env.tenant_text(), &id, vec![0xff, 0xd8, 2], "image/jpeg")
            .await
            .unwrap();
        users.push(id);
    }
    // The round creates the three; its budget covers two of them.
    env.round(Cause::Notification, Mode::Incremental).await;
    let first = env.commands().await;
    let with_image = |commands: &[CardCommand]| {
        users
            .iter()
            .filter(|u| !photo_commands(commands, u).is_empty())
            .count()
    };
    assert_eq!(with_image(&first), 2, "{first:?}");
    // The next check takes the one never checked (the others were checked just now).
    env.round(Cause::Notification, Mode::Incremental).await;
    let second = env.commands().await;
    assert_eq!(with_image(&second), 1, "{second:?}");
    env.round(Cause::Notification, Mode::Incremental).await;
    assert_eq!(with_image(&env.commands().await), 0, "nothing left to find");
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_changed_every_second_still_gets_its_photo_check_within_the_cadence() {
    // The idle-tenant safety poll never comes (an hour): only the tenant's own notification
    // rounds, one a second, can run its photo check, due every 3 seconds.
    let env = env_with(&[
        ("CARDSYNC__WORKER__SAFETY_POLL_INTERVAL", "1h"),
        ("CARDSYNC__WORKER__SAFETY_POLL_TICK", "1h"),
        ("CARDSYNC__WORKER__PHOTO_CHECK_INTERVAL", "3s"),
        ("CARDSYNC__WORKER__PHOTO_RECHECK_AFTER", "0s"),
    ])
    .await;
    let ada = user(&env, "ada").await;
    let bob = user(&env, "bob").await;
    env.round(Cause::Manual, Mode::Incremental).await;
    env.commands().await;
    let worker = env.replica(&[]).await;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run_until_stopped(shutdown.clone()));
    env.control
        .set_photo(&env.tenant_text(), &ada, vec![0xff, 0xd8, 3], "image/jpeg")
        .await
        .unwrap();

    let busy = {
        let tenant = env.tenant_text();
        let control = env.control.clone();
        let bob = bob.clone();
        async move {
            for n in 0u32.. {
                control
                    .update_user(&tenant, &bob, json!({"jobTitle": format!("title {n}")}))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let seen = RefCell::new(Vec::new());
    let notify = async {
        let started = tokio::time::Instant::now();
        let (env, seen, ada, bob) = (&env, &seen, &ada, &bob);
        eventually(
            "ada's photo lands while bob keeps changing",
            PATIENCE,
            || async move {
                env.publish_change(bob).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                let commands = env.commands().await;
                seen.borrow_mut().extend(commands);
                !photo_commands(&seen.borrow(), ada).is_empty()
            },
        )
        .await;
        started.elapsed()
    };
    let elapsed = tokio::select! {
        () = busy => unreachable!("the change loop never ends"),
        elapsed = notify => elapsed,
    };
    let bob_updates = seen.borrow().iter().filter(|c| c.user_id == bob).count();
    assert!(
        bob_updates >= 2,
        "the tenant was busy: bob's changes kept coming"
    );
    // Within the cadence (3 s) plus generous slack for a loaded machine; without a cadence of
    // its own the check never comes while the tenant stays busy (the wait above fails).
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    shutdown.cancel();
    running.await.unwrap().unwrap();
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_safety_poll_starts_a_round_for_a_tenant_whose_photo_check_is_due() {
    // Not idle for an hour, but due for its photo check every 2 seconds.
    let env = env_with(&[
        ("CARDSYNC__WORKER__SAFETY_POLL_INTERVAL", "1h"),
        ("CARDSYNC__WORKER__SAFETY_POLL_TICK", "300ms"),
        ("CARDSYNC__WORKER__PHOTO_CHECK_INTERVAL", "2s"),
        ("CARDSYNC__WORKER__PHOTO_RECHECK_AFTER", "0s"),
    ])
    .await;
    let ada = user(&env, "ada").await;
    env.round(Cause::Manual, Mode::Incremental).await;
    env.commands().await;
    env.control
        .set_photo(&env.tenant_text(), &ada, vec![0xff, 0xd8, 4], "image/jpeg")
        .await
        .unwrap();
    let worker = env.replica(&[]).await;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run_until_stopped(shutdown.clone()));
    let seen = RefCell::new(Vec::new());
    let (env_ref, seen_ref, ada_ref) = (&env, &seen, &ada);
    eventually(
        "the safety poll's round finds ada's photo",
        PATIENCE,
        || async move {
            let commands = env_ref.commands().await;
            seen_ref.borrow_mut().extend(commands);
            !photo_commands(&seen_ref.borrow(), ada_ref).is_empty()
        },
    )
    .await;
    shutdown.cancel();
    running.await.unwrap().unwrap();
    env.teardown().await;
}
