//! Scope filters beyond groups: guests left out and an attribute condition, stored with the
//! groups, shown, audited, and refused with every problem named when invalid.

use crate::support::Fixture;
use serde_json::json;

#[tokio::test]
async fn a_scope_with_filters_is_set_shown_and_audited_and_bad_filters_are_refused() {
    let fixture = Fixture::start().await;
    let (api, admin) = (&fixture.api, &fixture.admin);
    let tenant = fixture.directory.uuid();
    api.create_tenant(admin, tenant, "Contoso").await;
    let path = format!("/v1/tenants/{tenant}/scope");

    let set = api
        .put(
            &path,
            admin,
            json!({"groups": [], "exclude_guests": true,
                   "condition": {"expression": "lower(department)", "in": ["sales", "marketing"]}}),
        )
        .await
        .expect(200);
    assert_eq!(set["all_users"], false, "{set}");
    let shown = api.get(&path, &fixture.reader).await.expect(200);
    assert_eq!(shown, set);
    assert_eq!(shown["exclude_guests"], true);
    assert_eq!(shown["condition"]["expression"], "lower(department)");
    assert_eq!(shown["condition"]["in"], json!(["sales", "marketing"]));
    let filter = cardsync_store::directory::user_filter(&api.pool, tenant)
        .await
        .expect("filter")
        .expect("stored");
    assert!(filter.exclude_guests);

    let bad = api
        .put(
            &path,
            admin,
            json!({"groups": [], "condition": {"expression": "departmnt", "in": []}}),
        )
        .await;
    bad.assert_problem(422, "invalid-filter");
    let errors = bad.body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .starts_with("condition.expression: unknown property")
    );
    api.put(&path, admin, json!({"groups": [], "guests": false}))
        .await
        .assert_problem(422, "invalid-body");
    assert_eq!(
        api.get(&path, &fixture.reader).await.expect(200),
        set,
        "nothing changed"
    );

    // A PUT replaces the whole scope: without filters, everyone again.
    let cleared = api
        .put(&path, admin, json!({"groups": []}))
        .await
        .expect(200);
    assert_eq!(cleared["all_users"], true, "{cleared}");
    assert!(
        cardsync_store::directory::user_filter(&api.pool, tenant)
            .await
            .expect("filter")
            .is_none()
    );
    let audit = api
        .get(&format!("/v1/tenants/{tenant}/audit"), &fixture.reader)
        .await
        .expect(200);
    let last = &audit["items"][0];
    assert_eq!(last["action"], "scope.update");
    assert_eq!(last["before"]["exclude_guests"], true);
    assert_eq!(last["after"]["exclude_guests"], false);
}
