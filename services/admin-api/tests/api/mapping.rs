//! Mapping help: the tenant's directory extensions as Graph lists them
//! (`getAvailableExtensionProperties` in graph-sim), with sample values from the stored snapshot.

use crate::resources::connect;
use crate::support::Fixture;
use cardsync_rounds::snapshot::{Scope, merge_user};
use cardsync_store::directory;
use graph_sim::control_client::CARDSYNC_PERMISSIONS;
use serde_json::{Value, json};
use time::OffsetDateTime;

/// Users in graph-sim and in the snapshot, as a full enumeration selecting `selected` stored them.
async fn directory_with(fixture: &Fixture, users: &[Value], selected: &[&str]) {
    let tenant = fixture.directory.uuid();
    let mut rows = Vec::new();
    for user in users {
        let created = fixture
            .issuer
            .control
            .create_user(&fixture.directory.id, user.clone())
            .await
            .expect("user");
        // Graph returns the `$select`ed properties only.
        let mut stored: serde_json::Map<String, Value> = user
            .as_object()
            .expect("an object")
            .iter()
            .filter(|(name, _)| selected.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        stored.insert("id".into(), created["id"].clone());
        let stored = Value::Object(stored);
        rows.push(
            merge_user(
                None,
                &stored,
                &Scope::Everyone,
                None,
                OffsetDateTime::now_utc(),
                false,
            )
            .expect("a row"),
        );
    }
    let pool = &fixture.api.pool;
    directory::ensure_sync_state(pool, tenant)
        .await
        .expect("state");
    let selected: Vec<String> = selected.iter().map(|s| (*s).to_owned()).collect();
    let mut tx = pool.begin().await.expect("tx");
    directory::save_users(&mut tx, tenant, &rows)
        .await
        .expect("snapshot");
    directory::record_users_select(&mut tx, tenant, &selected)
        .await
        .expect("select");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn extension_attributes_are_listed_as_graph_defines_them_with_samples_from_the_snapshot() {
    let fixture = Fixture::start().await;
    let tenant = fixture.directory.uuid();
    let path = format!("/v1/tenants/{tenant}/mapping/extension-attributes");
    fixture
        .api
        .get(&path, &fixture.reader)
        .await
        .assert_problem(404, "unknown-tenant");
    fixture
        .api
        .create_tenant(&fixture.admin, tenant, "Contoso")
        .await;
    fixture
        .api
        .get(&path, &fixture.reader)
        .await
        .assert_problem(409, "no-connection");

    // The HR app that registered the extensions, named by its client id as Entra names them.
    let hr = fixture
        .issuer
        .control
        .create_secret_app(&fixture.directory.id, &[])
        .await
        .expect("hr app");
    let app = hr.client_id.replace('-', "");
    let cost_center = format!("extension_{app}_costCenter");
    let badge = format!("extension_{app}_badgeNumber");
    let person = |name: &str, cost: &str, number: i64| {
        json!({
            "displayName": name, "accountEnabled": true,
            "userPrincipalName": format!("{}@contoso.test", name.to_lowercase()),
            cost_center.as_str(): cost, badge.as_str(): number,
        })
    };
    directory_with(
        &fixture,
        &[
            person("Ann", "CC-1", 7),
            person("Bob", "CC-2", 8),
            person("Cid", "CC-1", 9),
        ],
        &["id", "displayName", &cost_center],
    )
    .await;

    // Reading extension definitions needs Directory.Read.All.
    connect(&fixture, tenant, CARDSYNC_PERMISSIONS).await;
    fixture
        .api
        .get(&path, &fixture.reader)
        .await
        .assert_problem(409, "graph-permission-missing");
    let mut permissions = CARDSYNC_PERMISSIONS.to_vec();
    permissions.push("Directory.Read.All");
    connect(&fixture, tenant, &permissions).await;

    let listed = fixture.api.get(&path, &fixture.reader).await.expect(200);
    let items = listed["items"].as_array().expect("items");
    let item = |name: &str| {
        items
            .iter()
            .find(|item| item["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed: {listed}"))
            .clone()
    };
    assert_eq!(items.len(), 2, "{listed}");
    let cost = item(&cost_center);
    assert_eq!(cost["short_name"], "costCenter");
    assert_eq!(cost["data_type"], "String");
    assert_eq!(cost["target_objects"], json!(["User"]));
    assert!(
        cost["app_display_name"]
            .as_str()
            .is_some_and(|name| !name.is_empty()),
        "{cost}"
    );
    assert_eq!(cost["in_snapshot"], true);
    assert_eq!(cost["users_with_value"], 3);
    assert_eq!(cost["samples"], json!(["CC-1", "CC-2"]));
    // Defined in the directory, but the rules read it not, so the snapshot has no values yet.
    let number = item(&badge);
    assert_eq!(number["data_type"], "Integer");
    assert_eq!(number["in_snapshot"], false);
    assert_eq!(number["users_with_value"], 0);
    assert_eq!(number["samples"], json!([]));
}
