//! The subscription registry: who may claim a slot for a create, what a pending registration
//! vouches for, and what replacing or losing a subscription leaves for the webhook.

use cardsync_store::subscription_slots::{self as slots, SlotState};
use cardsync_store::subscriptions::{self, ClientStateHash, Subscription};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

fn subscription(tenant: Uuid, state: &str, now: OffsetDateTime) -> Subscription {
    Subscription {
        id: Uuid::new_v4(),
        tenant_id: tenant,
        resource: "/users".into(),
        client_state: ClientStateHash::of(state),
        expires_at: now + Duration::days(29),
    }
}

#[tokio::test]
async fn a_slot_is_claimed_once_per_create_and_again_only_when_due_or_abandoned() {
    let pool = cardsync_testkit::test_pool().await;
    let tenant = Uuid::new_v4();
    let now = OffsetDateTime::now_utc();
    let hash = ClientStateHash::of("first");
    let claim = |hash: ClientStateHash, at: OffsetDateTime| {
        let pool = pool.clone();
        async move {
            slots::begin_create(
                &pool,
                tenant,
                "/users",
                &hash,
                at + Duration::minutes(15),
                at,
            )
            .await
            .expect("claim")
        }
    };
    assert!(claim(hash, now).await, "a new slot is claimed");
    assert!(
        !claim(ClientStateHash::of("second"), now).await,
        "not while its create is in flight"
    );
    assert!(
        claim(ClientStateHash::of("late"), now + Duration::minutes(16)).await,
        "an abandoned create (its pending registration expired) is claimed again"
    );

    let active = subscription(tenant, "late", now);
    slots::activate(&pool, &active, now + Duration::days(1), now)
        .await
        .expect("activated");
    assert!(
        !claim(ClientStateHash::of("other"), now + Duration::days(2)).await,
        "an active slot is never claimed"
    );
    let slot = slots::get(&pool, tenant, "/users")
        .await
        .expect("read")
        .expect("slot");
    assert_eq!(slot.state, SlotState::Active);
    assert_eq!(slot.subscription_id, Some(active.id));
    assert_eq!(slot.pending_until, None, "the pending registration ended");

    // Lost: unregistered at once and due now.
    assert!(
        slots::lost(&pool, tenant, "/users", active.id, "gone", now)
            .await
            .expect("lost")
    );
    assert!(
        subscriptions::find(&pool, active.id)
            .await
            .expect("find")
            .is_none()
    );
    assert!(
        !slots::lost(&pool, tenant, "/users", active.id, "again", now)
            .await
            .expect("lost twice"),
        "a stale loss changes nothing"
    );
    slots::failed(
        &pool,
        tenant,
        "/users",
        SlotState::Retrying,
        "Graph is unavailable",
        now + Duration::minutes(1),
        now,
    )
    .await
    .expect("failed");
    assert!(
        !claim(ClientStateHash::of("early"), now + Duration::seconds(30)).await,
        "not before its retry is due"
    );
    assert!(claim(ClientStateHash::of("due"), now + Duration::minutes(2)).await);
}

#[tokio::test]
async fn a_pending_registration_vouches_for_its_tenant_and_client_state_only_while_live() {
    let pool = cardsync_testkit::test_pool().await;
    let (tenant, other) = (Uuid::new_v4(), Uuid::new_v4());
    let now = OffsetDateTime::now_utc();
    let hash = ClientStateHash::of("pending-secret");
    slots::begin_create(
        &pool,
        tenant,
        "/users",
        &hash,
        now + Duration::minutes(15),
        now,
    )
    .await
    .expect("claim");
    let id = Uuid::new_v4();
    let found = subscriptions::verify(&pool, id, tenant, &hash)
        .await
        .expect("verify");
    assert_eq!(found.registered, None);
    let pending = found.pending.expect("vouched for");
    assert_eq!(
        (pending.tenant_id, pending.resource.as_str()),
        (tenant, "/users")
    );
    for (tenant, hash) in [(other, hash), (tenant, ClientStateHash::of("guess"))] {
        let found = subscriptions::verify(&pool, id, tenant, &hash)
            .await
            .expect("verify");
        assert_eq!(found, subscriptions::Verification::default());
    }
    assert!(
        subscriptions::pending(&pool)
            .await
            .expect("pending")
            .iter()
            .any(|p| p.tenant_id == tenant && p.client_state == hash)
    );

    // Activated: the id is registered, the pending registration gone.
    let mut active = subscription(tenant, "pending-secret", now);
    active.id = id;
    slots::activate(&pool, &active, now + Duration::days(1), now)
        .await
        .expect("activated");
    let found = subscriptions::verify(&pool, id, tenant, &hash)
        .await
        .expect("verify");
    let registered = found.registered.expect("registered");
    assert_eq!((registered.id, registered.tenant_id), (id, tenant));
    assert!(registered.client_state.matches(&hash));
    assert_eq!(found.pending, None);

    // Recreated: the old id is unregistered in the same transaction.
    let replacement = subscription(tenant, "next", now);
    let replaced = slots::activate(&pool, &replacement, now + Duration::days(1), now)
        .await
        .expect("activated");
    assert_eq!(replaced, Some(id));
    assert!(
        subscriptions::find(&pool, id)
            .await
            .expect("find")
            .is_none()
    );
    assert_eq!(
        slots::remove(&pool, tenant, "/users")
            .await
            .expect("removed"),
        Some(replacement.id)
    );
    assert!(
        subscriptions::find(&pool, replacement.id)
            .await
            .expect("find")
            .is_none()
    );
}
