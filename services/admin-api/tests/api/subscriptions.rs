//! A tenant's Graph subscriptions as an operator sees them, and a recreate asked for by hand.

use crate::support::Fixture;
use cardsync_store::subscription_slots;
use cardsync_store::subscriptions::{self, ClientStateHash, Subscription};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

#[tokio::test]
async fn the_subscriptions_show_state_expiry_last_notification_and_error_and_a_recreate_is_queued()
{
    let fixture = Fixture::start().await;
    let (api, admin) = (&fixture.api, &fixture.admin);
    let tenant = fixture.directory.uuid();
    api.create_tenant(admin, tenant, "Contoso").await;
    let path = format!("/v1/tenants/{tenant}/subscriptions");
    let listed = api.get(&path, admin).await.expect(200);
    assert_eq!(listed["items"], json!([]));

    // What the subscription manager and the webhook wrote.
    let now = OffsetDateTime::now_utc();
    let users = Subscription {
        id: Uuid::new_v4(),
        tenant_id: tenant,
        resource: "/users".into(),
        client_state: ClientStateHash::of("a-client-state"),
        expires_at: now + time::Duration::days(28),
    };
    subscription_slots::activate(&api.pool, &users, now + time::Duration::days(1), now)
        .await
        .expect("slot");
    let delivered = now - time::Duration::minutes(3);
    subscriptions::note_deliveries(&api.pool, &[(users.id, delivered)])
        .await
        .expect("delivery");
    // An older time never moves it back.
    subscriptions::note_deliveries(
        &api.pool,
        &[(users.id, delivered - time::Duration::hours(1))],
    )
    .await
    .expect("delivery");
    let by_hand = Subscription {
        id: Uuid::new_v4(),
        resource: "/groups".into(),
        ..users.clone()
    };
    subscriptions::register(&api.pool, &by_hand)
        .await
        .expect("registered by hand");

    let listed = api.get(&path, &fixture.reader).await.expect(200);
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{listed}");
    assert_eq!(items[0]["resource"], "/groups");
    assert_eq!(items[0]["state"], "registered");
    assert_eq!(items[0]["id"], by_hand.id.to_string());
    assert_eq!(items[1]["resource"], "/users");
    assert_eq!(items[1]["state"], "active");
    assert_eq!(items[1]["id"], users.id.to_string());
    assert_eq!(items[1]["failures"], 0);
    assert!(items[1]["expires_at"].is_string());
    let seen = OffsetDateTime::parse(
        items[1]["last_notification_at"]
            .as_str()
            .expect("last notification"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    assert!(
        (seen - delivered).abs() < time::Duration::seconds(1),
        "{seen} {delivered}"
    );
    assert!(items[1]["recreate_requested_at"].is_null());
    assert!(!listed.to_string().contains("a-client-state"));

    // A recreate: only an admin, only an existing slot; the manager carries it out later.
    let recreate = format!("{path}/recreate");
    api.post(&recreate, &fixture.reader, json!({"resource": "/users"}))
        .await
        .assert_problem(403, "admin-role-required");
    api.post(&recreate, admin, json!({"resource": "/calendars"}))
        .await
        .assert_problem(404, "unknown-subscription");
    api.post(&recreate, admin, json!({"resource": "/users", "now": true}))
        .await
        .assert_problem(422, "invalid-body");
    // A NUL, which PostgreSQL cannot store in text, is refused before any query (it was a 503).
    api.post(&recreate, admin, json!({"resource": "/us\u{0}ers"}))
        .await
        .assert_problem(422, "invalid-resource");
    let accepted = api
        .post(&recreate, admin, json!({"resource": "/users"}))
        .await
        .expect(202);
    assert_eq!(accepted["resource"], "/users");
    let slot = subscription_slots::get(&api.pool, tenant, "/users")
        .await
        .expect("slot")
        .expect("there");
    assert!(slot.recreate_requested_at.is_some());
    assert!(
        slot.next_attempt_at
            .is_some_and(|at| at <= OffsetDateTime::now_utc())
    );
    let listed = api.get(&path, admin).await.expect(200);
    assert!(
        listed["items"][1]["recreate_requested_at"].is_string(),
        "{listed}"
    );
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM admin_audit WHERE tenant_id = $1 AND action = 'subscription.recreate'",
    )
    .bind(tenant)
    .fetch_one(&api.pool)
    .await
    .expect("audit");
    assert_eq!(audited, 1);
}
