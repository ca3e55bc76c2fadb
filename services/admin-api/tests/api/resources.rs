//! Connections, scope and group search, rules, sync requests with their runs, and cards: each
//! resource's effect (the row, the message on the queue) and its bad inputs.

use crate::support::Fixture;
use cardsync_bus::lapin::options::BasicGetOptions;
use cardsync_bus::names;
use cardsync_proto as proto;
use cardsync_rules::{FieldName, FieldState, FieldStates, ValueSource};
use cardsync_store::cards::{self, Card, CardStatus};
use graph_sim::control_client::CARDSYNC_PERMISSIONS;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

/// A fixture whose directory is also a cardsync tenant, created through the API.
pub(crate) async fn with_tenant() -> (Fixture, Uuid) {
    let fixture = Fixture::start().await;
    let tenant = fixture.directory.uuid();
    // Earlier runs of the suite may have left this id: graph-sim ids are fresh GUIDs.
    fixture
        .api
        .create_tenant(&fixture.admin, tenant, "Contoso")
        .await;
    (fixture, tenant)
}

/// Registers cardsync's Graph app in the directory with `permissions`, and stores it as the
/// tenant's connection through the API.
pub(crate) async fn connect(
    fixture: &Fixture,
    tenant: Uuid,
    permissions: &[&str],
) -> (String, String) {
    let app = fixture
        .issuer
        .control
        .create_secret_app(&fixture.directory.id, permissions)
        .await
        .expect("graph app");
    let secret = app.secret.expect("secret");
    fixture
        .api
        .put(
            &format!("/v1/tenants/{tenant}/connection"),
            &fixture.admin,
            json!({"client_id": app.client_id, "kind": "secret", "credential": secret}),
        )
        .await
        .expect(200);
    (app.client_id, secret)
}

#[tokio::test]
async fn a_connection_needs_its_tenant_and_is_shown_without_its_secret() {
    let fixture = Fixture::start().await;
    let (api, admin) = (&fixture.api, &fixture.admin);
    let tenant = fixture.directory.uuid();
    let body = json!({"client_id": "app-1", "kind": "secret", "credential": "very-secret-value"});
    api.put(
        &format!("/v1/tenants/{tenant}/connection"),
        admin,
        body.clone(),
    )
    .await
    .assert_problem(404, "unknown-tenant");
    api.create_tenant(admin, tenant, "Contoso").await;
    let stored = api
        .put(&format!("/v1/tenants/{tenant}/connection"), admin, body)
        .await
        .expect(200);
    assert_eq!(stored["client_id"], "app-1");
    assert_eq!(stored["kind"], "secret");
    assert!(!stored.to_string().contains("very-secret-value"));
    let shown = api
        .get(&format!("/v1/tenants/{tenant}/connection"), &fixture.reader)
        .await
        .expect(200);
    assert!(!shown.to_string().contains("very-secret-value"));
    let sealed: Vec<u8> =
        sqlx::query_scalar("SELECT credential_sealed FROM tenant_connections WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(&api.pool)
            .await
            .expect("row");
    assert!(!sealed.windows(17).any(|w| w == b"very-secret-value"));

    api.put(
        &format!("/v1/tenants/{tenant}/connection"),
        admin,
        json!({"client_id": "app-1", "kind": "password", "credential": "x"}),
    )
    .await
    .assert_problem(422, "invalid-body");
    api.put(
        &format!("/v1/tenants/{tenant}/connection"),
        admin,
        json!({"client_id": " ", "kind": "secret", "credential": "x"}),
    )
    .await
    .assert_problem(422, "invalid-client-id");

    let audit = api
        .get(&format!("/v1/tenants/{tenant}/audit"), admin)
        .await
        .expect(200);
    assert_eq!(audit["items"][0]["action"], "connection.put");
    assert!(!audit.to_string().contains("very-secret-value"));

    assert_eq!(
        api.delete(&format!("/v1/tenants/{tenant}/connection"), admin)
            .await
            .status
            .as_u16(),
        204
    );
    api.get(&format!("/v1/tenants/{tenant}/connection"), admin)
        .await
        .assert_problem(404, "unknown-connection");
}

#[tokio::test]
async fn the_connection_test_counts_users_and_groups_and_names_each_missing_permission() {
    let (fixture, tenant) = with_tenant().await;
    let control = &fixture.issuer.control;
    let directory = &fixture.directory.id;
    for name in ["Ann", "Bob", "Cid"] {
        control
            .create_user(
                directory,
                json!({"displayName": name, "userPrincipalName": format!("{name}@contoso.test")}),
            )
            .await
            .expect("user");
    }
    control
        .create_group(directory, json!({"displayName": "Sales"}))
        .await
        .expect("group");

    connect(&fixture, tenant, &["User.Read.All"]).await;
    let report = fixture
        .api
        .post(
            &format!("/v1/tenants/{tenant}/connection/test"),
            &fixture.admin,
            json!(null),
        )
        .await
        .expect(200);
    assert_eq!(report["token"], true, "{report}");
    assert_eq!(report["users"], 3, "{report}");
    assert_eq!(report["ok"], false);
    let missing: Vec<&str> = report["missing_permissions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(missing.contains(&"Group.Read.All"), "{report}");
    assert!(
        missing.contains(&"RoleManagement.Read.Directory"),
        "{report}"
    );
    assert!(!missing.contains(&"User.Read.All"), "{report}");

    connect(&fixture, tenant, CARDSYNC_PERMISSIONS).await;
    let report = fixture
        .api
        .post(
            &format!("/v1/tenants/{tenant}/connection/test"),
            &fixture.admin,
            json!(null),
        )
        .await
        .expect(200);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["users_in_scope"], 3, "{report}");
    assert_eq!(report["groups"], 1, "{report}");

    let wrong = fixture
        .api
        .post(
            &format!("/v1/tenants/{tenant}/connection/test"),
            &fixture.admin,
            json!({"client_id": "00000000-0000-0000-0000-00000000000a", "kind": "secret", "credential": "wrong"}),
        )
        .await
        .expect(200);
    assert_eq!(wrong["token"], false, "{wrong}");
    assert!(wrong["token_error"].is_string());
}

#[tokio::test]
async fn groups_are_searched_through_graph_and_the_scope_is_set_and_audited() {
    let (fixture, tenant) = with_tenant().await;
    let control = &fixture.issuer.control;
    let directory = &fixture.directory.id;
    let europe = control
        .create_group(directory, json!({"displayName": "Sales Team Europe"}))
        .await
        .expect("group");
    control
        .create_group(directory, json!({"displayName": "Sales Team Asia"}))
        .await
        .expect("group");
    control
        .create_group(directory, json!({"displayName": "Engineering"}))
        .await
        .expect("group");
    let europe = europe["id"].as_str().expect("id").to_owned();
    for name in ["Ann", "Bob"] {
        let user = control
            .create_user(
                directory,
                json!({"displayName": name, "userPrincipalName": format!("{name}@contoso.test")}),
            )
            .await
            .expect("user");
        control
            .add_member(directory, &europe, user["id"].as_str().expect("id"))
            .await
            .expect("member");
    }
    connect(&fixture, tenant, CARDSYNC_PERMISSIONS).await;

    let found = fixture
        .api
        .get(
            &format!("/v1/tenants/{tenant}/groups?search=sales"),
            &fixture.reader,
        )
        .await
        .expect(200);
    let items = found["items"].as_array().expect("items");
    let mut names: Vec<&str> = items
        .iter()
        .filter_map(|g| g["display_name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["Sales Team Asia", "Sales Team Europe"]);
    let europe_found = items
        .iter()
        .find(|g| g["id"] == europe.as_str())
        .expect("europe");
    assert_eq!(europe_found["members"], 2);
    fixture
        .api
        .get(
            &format!("/v1/tenants/{tenant}/groups?search=%22"),
            &fixture.reader,
        )
        .await
        .assert_problem(400, "invalid-search");

    let all = fixture
        .api
        .get(&format!("/v1/tenants/{tenant}/scope"), &fixture.reader)
        .await
        .expect(200);
    assert_eq!(all["all_users"], true);
    let set = fixture
        .api
        .put(
            &format!("/v1/tenants/{tenant}/scope"),
            &fixture.admin,
            json!({"groups": [europe]}),
        )
        .await
        .expect(200);
    assert_eq!(set["all_users"], false);
    assert_eq!(set["groups"], json!([europe]));
    let stored = cardsync_store::directory::scope(&fixture.api.pool, tenant)
        .await
        .expect("scope");
    assert_eq!(stored, Some(vec![europe.clone()]));
    fixture
        .api
        .put(
            &format!("/v1/tenants/{tenant}/scope"),
            &fixture.admin,
            json!({"groups": ["not a group!"]}),
        )
        .await
        .assert_problem(422, "invalid-group-id");
    let audit = fixture
        .api
        .get(&format!("/v1/tenants/{tenant}/audit"), &fixture.admin)
        .await
        .expect(200);
    let change = &audit["items"][0];
    assert_eq!(change["action"], "scope.update");
    assert_eq!(change["before"]["all_users"], true);
    assert_eq!(change["after"]["groups"], json!([europe]));
}

#[tokio::test]
async fn rules_are_validated_versioned_and_kept_in_history() {
    let (fixture, tenant) = with_tenant().await;
    let (api, admin) = (&fixture.api, &fixture.admin);
    let path = format!("/v1/tenants/{tenant}/rules");
    let current = api.get(&path, &fixture.reader).await.expect(200);
    assert_eq!(current["version"], 1);

    let mut rules = current["rules"].clone();
    rules["custom_fields"] = json!({"cost_center": {"expression": "coalesce(employeeId, \"none\")", "sync": true, "overwrite": true, "locked": false}});
    let saved = api.put(&path, admin, rules.clone()).await.expect(200);
    assert_eq!(saved["version"], 2, "{saved}");

    let mut bad = rules.clone();
    bad["custom_fields"] = json!({"name": {"expression": "displayName", "sync": true, "overwrite": true, "locked": false}});
    let refused = api.put(&path, admin, bad).await;
    refused.assert_problem(422, "invalid-rules");
    assert!(
        refused.body["errors"][0]
            .as_str()
            .is_some_and(|e| e.starts_with("custom_fields.name")),
        "{:?}",
        refused.body
    );
    let history = api.get(&format!("{path}/history"), admin).await.expect(200);
    let versions: Vec<i64> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|v| v["version"].as_i64())
        .collect();
    assert_eq!(versions, [2, 1]);
    assert_eq!(
        history["items"][0]["changed_by"],
        format!("app:{}", fixture.directory.admin.0)
    );
    assert_eq!(api.get(&path, admin).await.expect(200)["version"], 2);
}

/// The next `SyncRequest` on the test's queue `queue` (short name).
async fn next_request(fixture: &Fixture, queue: &str) -> proto::SyncRequest {
    next_message(fixture, queue).await
}

/// The next message on the test's queue `queue` (short name), decoded as `M`.
pub(crate) async fn next_message<M: prost::Message + Default>(fixture: &Fixture, queue: &str) -> M {
    let connection = cardsync_bus::lapin::Connection::connect(
        &cardsync_testkit::amqp_url(),
        cardsync_bus::lapin::ConnectionProperties::default(),
    )
    .await
    .expect("RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    let queue = fixture.api.topology.name(queue);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            return M::decode(message.delivery.data.as_slice()).expect("a message of the type");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message on {queue}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sync_now_asks_the_reconciler_and_user_sync_the_delta_worker_naming_their_runs() {
    let (fixture, tenant) = with_tenant().await;
    // Declares the test's topology, so the request queue exists before the API publishes.
    fixture.api.publisher().await;
    connect(&fixture, tenant, CARDSYNC_PERMISSIONS).await;
    let accepted = fixture
        .api
        .post(
            &format!("/v1/tenants/{tenant}/sync"),
            &fixture.admin,
            json!({}),
        )
        .await
        .expect(202);
    let run_id = accepted["run_id"].as_str().expect("run id").to_owned();
    let request = next_request(&fixture, names::RECONCILER_REQUESTS).await;
    assert_eq!(request.run_id, run_id);
    assert_eq!(request.scope(), proto::sync_request::Scope::Tenant);
    assert_eq!(request.depth(), proto::sync_request::Depth::Full);
    assert_eq!(
        request.envelope.expect("envelope").tenant_id,
        tenant.to_string()
    );

    let runs = fixture
        .api
        .get(&format!("/v1/runs?tenant={tenant}"), &fixture.reader)
        .await
        .expect(200);
    let run = &runs["items"][0];
    assert_eq!(run["id"], run_id.as_str());
    assert_eq!(run["kind"], "reconcile");
    assert_eq!(run["cause"], "manual");
    assert_eq!(run["status"], "queued");
    assert_eq!(
        run["started_by"],
        format!("app:{}", fixture.directory.admin.0)
    );
    fixture
        .api
        .get(&format!("/v1/runs/{run_id}"), &fixture.reader)
        .await
        .expect(200);

    let accepted = fixture
        .api
        .post(
            &format!("/v1/tenants/{tenant}/sync"),
            &fixture.admin,
            json!({"group": "group-1"}),
        )
        .await
        .expect(202);
    let request = next_request(&fixture, names::RECONCILER_REQUESTS).await;
    assert_eq!(request.run_id, accepted["run_id"].as_str().expect("run id"));
    assert_eq!(request.scope(), proto::sync_request::Scope::Group);
    assert_eq!(request.target_id, "group-1");

    let accepted = fixture
        .api
        .post(
            &format!("/v1/tenants/{tenant}/users/user-1/sync"),
            &fixture.admin,
            json!({"depth": "cards"}),
        )
        .await
        .expect(202);
    let request = next_request(&fixture, names::DELTA_WORKER_REQUESTS).await;
    assert_eq!(request.run_id, accepted["run_id"].as_str().expect("run id"));
    assert_eq!(request.scope(), proto::sync_request::Scope::User);
    assert_eq!(request.depth(), proto::sync_request::Depth::Cards);
    assert_eq!(request.target_id, "user-1");

    fixture
        .api
        .post(
            &format!("/v1/tenants/{tenant}/users/user-1/sync"),
            &fixture.admin,
            json!({"depth": "deep"}),
        )
        .await
        .assert_problem(422, "invalid-body");
    fixture
        .api
        .post(
            &format!("/v1/tenants/{tenant}/users/bad%20id/sync"),
            &fixture.admin,
            json!({}),
        )
        .await
        .assert_problem(400, "invalid-id");
    fixture
        .api
        .get("/v1/runs?tenant=not-a-uuid", &fixture.reader)
        .await
        .assert_problem(400, "invalid-query");
    fixture
        .api
        .get(&format!("/v1/runs/{}", Uuid::new_v4()), &fixture.reader)
        .await
        .assert_problem(404, "unknown-run");
}

fn card(tenant: Uuid, user: &str, name: &str, email: &str, status: CardStatus) -> Card {
    let mut card = Card::new(tenant);
    card.user_id = Some(user.to_owned());
    card.email = Some(email.to_owned());
    card.status = status;
    let mut fields = FieldStates::new();
    for (field, value) in [("name", name), ("email", email), ("job_title", "Engineer")] {
        fields.insert(
            FieldName::new(field),
            FieldState {
                value: Some(value.to_owned()),
                source: ValueSource::Directory,
                last_directory: Some(value.to_owned()),
            },
        );
    }
    card.fields = fields;
    card
}

#[tokio::test]
async fn cards_are_listed_with_filters_and_paging_and_shown_with_provenance() {
    let (fixture, tenant) = with_tenant().await;
    let (api, reader) = (&fixture.api, &fixture.reader);
    let stored = [
        card(
            tenant,
            "u-ann",
            "Ann Archer",
            "ann@contoso.test",
            CardStatus::Active,
        ),
        card(
            tenant,
            "u-bob",
            "Bob Baker",
            "bob@contoso.test",
            CardStatus::Deactivated,
        ),
        card(
            tenant,
            "u-cid",
            "Cid Carter",
            "cid@contoso.test",
            CardStatus::Active,
        ),
    ];
    let mut tx = api.pool.begin().await.expect("tx");
    for card in &stored {
        cards::insert(&mut tx, card).await.expect("card");
    }
    tx.commit().await.expect("commit");
    let path = format!("/v1/tenants/{tenant}/cards");

    let active = api
        .get(&format!("{path}?status=active"), reader)
        .await
        .expect(200);
    assert_eq!(active["items"].as_array().expect("items").len(), 2);
    let bob = api
        .get(&format!("{path}?name=BAK"), reader)
        .await
        .expect(200);
    assert_eq!(bob["items"][0]["email"], "bob@contoso.test");
    assert_eq!(bob["items"].as_array().expect("items").len(), 1);
    let by_email = api
        .get(&format!("{path}?email=CID@contoso.test"), reader)
        .await
        .expect(200);
    assert_eq!(by_email["items"][0]["fields"]["name"], "Cid Carter");
    let none = api
        .get(&format!("{path}?name=%25"), reader)
        .await
        .expect(200);
    assert_eq!(
        none["items"].as_array().expect("items").len(),
        0,
        "% is matched literally"
    );
    api.get(&format!("{path}?status=gone"), reader)
        .await
        .assert_problem(400, "invalid-status");

    let mut seen = Vec::new();
    let mut next = format!("{path}?limit=1");
    loop {
        let page = api.get(&next, reader).await.expect(200);
        for item in page["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => next = format!("{path}?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    let mut expected: Vec<String> = stored.iter().map(|c| c.card_id.to_string()).collect();
    expected.sort();
    assert_eq!(seen, expected);

    let ann = stored[0].card_id;
    // Ann is in a team whose group has a description: the card shows both.
    sqlx::query(
        "INSERT INTO teams (tenant_id, group_id, name, description)
         VALUES ($1, 'g-sales', 'Sales', 'Everyone who sells')",
    )
    .bind(tenant)
    .execute(&api.pool)
    .await
    .expect("team");
    sqlx::query("INSERT INTO card_teams (tenant_id, card_id, group_id) VALUES ($1, $2, 'g-sales')")
        .bind(tenant)
        .bind(ann)
        .execute(&api.pool)
        .await
        .expect("membership");
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["id"].as_str().expect("id").to_owned())
            .collect()
    };
    let sales = api
        .get(&format!("{path}?team=g-sales"), reader)
        .await
        .expect(200);
    assert_eq!(ids(&sales), [ann.to_string()]);
    // Filters and the cursor combine: the active cards after the first active one.
    let mut active_ids: Vec<String> = [&stored[0], &stored[2]]
        .iter()
        .map(|c| c.card_id.to_string())
        .collect();
    active_ids.sort();
    let rest = api
        .get(
            &format!("{path}?status=active&limit=5&cursor={}", active_ids[0]),
            reader,
        )
        .await
        .expect(200);
    assert_eq!(ids(&rest), [active_ids[1].clone()]);
    let shown = api.get(&format!("{path}/{ann}"), reader).await.expect(200);
    assert_eq!(
        shown["teams"],
        json!([{"group_id": "g-sales", "name": "Sales", "description": "Everyone who sells"}])
    );
    let email = &shown["provenance"]["email"];
    assert_eq!(email["rule"], "coalesce(mail, userPrincipalName)");
    assert_eq!(email["set_by"], "directory");
    assert_eq!(email["rules_version"], 1);
    assert_eq!(email["last_directory"], "ann@contoso.test");

    let edited = api
        .put(
            &format!("{path}/{ann}/fields/job_title"),
            &fixture.admin,
            json!({"value": "Chief Engineer"}),
        )
        .await
        .expect(200);
    assert_eq!(edited["fields"]["job_title"], "Chief Engineer");
    let shown = api.get(&format!("{path}/{ann}"), reader).await.expect(200);
    assert_eq!(shown["provenance"]["job_title"]["set_by"], "local");
    assert_eq!(
        shown["provenance"]["job_title"]["last_directory"],
        "Engineer"
    );
    assert!(shown["history"].as_array().is_some_and(|h| !h.is_empty()));
    api.get(&format!("{path}/{}", Uuid::new_v4()), reader)
        .await
        .assert_problem(404, "unknown-card");
    api.put(
        &format!("{path}/{ann}/fields/Bad%20Name"),
        &fixture.admin,
        json!({"value": "x"}),
    )
    .await
    .assert_problem(400, "invalid-field");
}

#[tokio::test]
async fn a_locked_field_is_refused_until_the_tenant_is_disconnected() {
    let (fixture, tenant) = with_tenant().await;
    let (api, admin) = (&fixture.api, &fixture.admin);
    let mut rules = api
        .get(&format!("/v1/tenants/{tenant}/rules"), admin)
        .await
        .expect(200)["rules"]
        .clone();
    rules["fields"]["job_title"]["locked"] = json!(true);
    rules["fields"]["job_title"]["sync"] = json!(true);
    rules["fields"]["job_title"]["overwrite"] = json!(true);
    api.put(&format!("/v1/tenants/{tenant}/rules"), admin, rules)
        .await
        .expect(200);
    let stored = card(
        tenant,
        "u-dee",
        "Dee Dale",
        "dee@contoso.test",
        CardStatus::Active,
    );
    let mut tx = api.pool.begin().await.expect("tx");
    cards::insert(&mut tx, &stored).await.expect("card");
    tx.commit().await.expect("commit");
    let path = format!(
        "/v1/tenants/{tenant}/cards/{}/fields/job_title",
        stored.card_id
    );

    api.put(&path, admin, json!({"value": "Boss"}))
        .await
        .assert_problem(409, "field-locked");
    api.post(
        &format!("/v1/tenants/{tenant}/disconnect"),
        admin,
        json!({}),
    )
    .await
    .expect(200);
    let edited = api
        .put(&path, admin, json!({"value": "Boss"}))
        .await
        .expect(200);
    assert_eq!(edited["fields"]["job_title"], "Boss");
}
