//! The rules dry run (counts and samples from the stored snapshot and cards; fields it cannot
//! preview named; invalid rules refused; admins only) and the rules apply (a `rules_apply` run
//! and its request on the reconciler's queue, from a save or asked for again).

use crate::support::Fixture;
use cardsync_bus::lapin::options::BasicGetOptions;
use cardsync_bus::names;
use cardsync_proto as proto;
use cardsync_rounds::select::users_select;
use cardsync_rounds::snapshot::{Scope, merge_user};
use cardsync_rules::{DirectoryUser, FieldRules, map_user, plan_create};
use cardsync_store::cards::{self, Card};
use cardsync_store::directory;
use graph_sim::control_client::CARDSYNC_PERMISSIONS;
use prost::Message as _;
use serde_json::{Value, json};
use std::time::Duration;
use time::OffsetDateTime;
use uuid::Uuid;

/// A fixture whose directory is a cardsync tenant, with `users` in its snapshot (enumerated
/// with the default rules' `$select`) and each one's card as the default rules make it.
async fn with_synced_tenant(users: &[Value]) -> (Fixture, Uuid) {
    let fixture = Fixture::start().await;
    let tenant = fixture.directory.uuid();
    fixture
        .api
        .create_tenant(&fixture.admin, tenant, "Contoso")
        .await;
    let pool = &fixture.api.pool;
    let rules = FieldRules::default();
    let now = OffsetDateTime::now_utc();
    let rows: Vec<_> = users
        .iter()
        .map(|user| merge_user(None, user, &Scope::Everyone, None, now, false).expect("a row"))
        .collect();
    directory::ensure_sync_state(pool, tenant)
        .await
        .expect("state");
    let selected: Vec<String> = users_select(&rules).into_iter().collect();
    let mut tx = pool.begin().await.expect("tx");
    directory::save_users(&mut tx, tenant, &rows)
        .await
        .expect("snapshot");
    directory::record_users_select(&mut tx, tenant, &selected)
        .await
        .expect("select");
    for user in users {
        let mapped =
            map_user(&rules, &DirectoryUser::from_graph(user).expect("user")).expect("map");
        let mut card = Card::new(tenant);
        card.user_id = Some(mapped.object_id.clone());
        card.uid = Some(mapped.uid.clone());
        card.email = mapped.link_email.clone();
        card.fields = plan_create(&rules, &mapped);
        cards::insert(&mut tx, &card).await.expect("card");
    }
    tx.commit().await.expect("commit");
    (fixture, tenant)
}

fn people() -> Vec<Value> {
    [
        ("u-ann", "Ann Archer", "Engineer"),
        ("u-bob", "Bob Baker", "ENGINEER"),
        ("u-cid", "Cid Carter", "Designer"),
    ]
    .into_iter()
    .map(|(id, name, title)| {
        json!({
            "id": id, "displayName": name, "jobTitle": title, "accountEnabled": true,
            "userPrincipalName": format!("{id}@contoso.test"),
        })
    })
    .collect()
}

async fn rules_of(fixture: &Fixture, tenant: Uuid) -> Value {
    fixture
        .api
        .get(&format!("/v1/tenants/{tenant}/rules"), &fixture.reader)
        .await
        .expect(200)
}

#[tokio::test]
async fn a_dry_run_counts_each_fields_changes_with_samples_and_saves_nothing() {
    let (fixture, tenant) = with_synced_tenant(&people()).await;
    let before = rules_of(&fixture, tenant).await;
    let mut proposed = before["rules"].clone();
    proposed["fields"]["job_title"]["source"] = json!("upper(jobTitle)");
    proposed["fields"]["name"]["source"] = json!("displayName");
    let preview = fixture
        .api
        .post(
            &format!("/v1/tenants/{tenant}/rules/dry-run"),
            &fixture.admin,
            proposed,
        )
        .await
        .expect(200);
    assert_eq!(preview["users"], 3, "{preview}");
    assert_eq!(preview["rules_version"], 1);
    // Ann's and Cid's titles change case; Bob's is upper case already; names stay.
    assert_eq!(preview["cards_changed"], 2, "{preview}");
    assert_eq!(preview["cards_created"], 0);
    let fields = preview["fields"].as_array().expect("fields");
    assert_eq!(fields.len(), 1, "{preview}");
    assert_eq!(fields[0]["field"], "job_title");
    assert_eq!(fields[0]["changes"], 2);
    let ann = &fields[0]["samples"][0];
    assert_eq!(ann["user_id"], "u-ann");
    assert_eq!(ann["before"], "Engineer");
    assert_eq!(ann["after"], "ENGINEER");
    assert!(ann["card_id"].as_str().is_some(), "{ann}");
    assert_eq!(preview["status"]["changes"], 0);
    assert_eq!(preview["unpreviewable"], json!([]));
    assert_eq!(preview["enumeration_first"], false);
    // Nothing saved, nothing asked of a worker.
    assert_eq!(rules_of(&fixture, tenant).await, before);
    let runs = fixture
        .api
        .get(&format!("/v1/runs?tenant={tenant}"), &fixture.reader)
        .await
        .expect(200);
    assert_eq!(runs["items"], json!([]), "{runs}");
}

#[tokio::test]
async fn a_dry_run_names_the_fields_it_cannot_preview_instead_of_counting_them_unchanged() {
    let (fixture, tenant) = with_synced_tenant(&people()).await;
    let mut proposed = rules_of(&fixture, tenant).await["rules"].clone();
    proposed["custom_fields"] = json!({
        "office": {"expression": "coalesce(officeLocation, \"remote\")"},
        "kind": {"expression": "upper(jobTitle)"}
    });
    let preview = fixture
        .api
        .post(
            &format!("/v1/tenants/{tenant}/rules/dry-run"),
            &fixture.admin,
            proposed,
        )
        .await
        .expect(200);
    assert_eq!(
        preview["unpreviewable"],
        json!([{"field": "office", "properties": ["officeLocation"]}]),
        "{preview}"
    );
    assert_eq!(preview["enumeration_first"], true);
    // The previewable new field is counted on every card; the other is not counted at all.
    let fields = preview["fields"].as_array().expect("fields");
    assert_eq!(fields.len(), 1, "{preview}");
    assert_eq!(fields[0]["field"], "kind");
    assert_eq!(fields[0]["changes"], 3);
    assert_eq!(preview["cards_changed"], 3);
}

#[tokio::test]
async fn invalid_proposed_rules_are_refused_with_the_problems_path() {
    let (fixture, tenant) = with_synced_tenant(&people()).await;
    let path = format!("/v1/tenants/{tenant}/rules/dry-run");
    let refused = fixture
        .api
        .post(
            &path,
            &fixture.admin,
            json!({"custom_fields": {"cost": {"expression": "coalesce(officeLocaton, \"x\")"}}}),
        )
        .await;
    refused.assert_problem(422, "invalid-rules");
    let errors = refused.body["errors"].as_array().expect("errors");
    assert!(
        errors.iter().any(|e| e.as_str().is_some_and(|e| e
            .starts_with("custom_fields.cost.expression")
            && e.contains("officeLocaton"))),
        "{errors:?}"
    );
    fixture
        .api
        .post(
            &path,
            &fixture.admin,
            json!({"uid": {"source": "nickname"}}),
        )
        .await
        .assert_problem(422, "invalid-body");
}

#[tokio::test]
async fn a_dry_run_needs_the_admin_role_and_a_token() {
    let (fixture, tenant) = with_synced_tenant(&people()).await;
    let path = format!("/v1/tenants/{tenant}/rules/dry-run");
    let proposed = rules_of(&fixture, tenant).await["rules"].clone();
    fixture
        .api
        .post(&path, &fixture.reader, proposed.clone())
        .await
        .assert_problem(403, "admin-role-required");
    let anonymous = fixture
        .api
        .call(reqwest::Method::POST, &path, None, Some(proposed.clone()))
        .await;
    assert_eq!(anonymous.status.as_u16(), 401);
    fixture
        .api
        .post(
            &format!("/v1/tenants/{}/rules/dry-run", Uuid::new_v4()),
            &fixture.admin,
            proposed,
        )
        .await
        .assert_problem(404, "unknown-tenant");
}

/// The next request on the reconciler's queue.
async fn next_reconciler_request(fixture: &Fixture) -> proto::SyncRequest {
    let connection = cardsync_bus::lapin::Connection::connect(
        &cardsync_testkit::amqp_url(),
        cardsync_bus::lapin::ConnectionProperties::default(),
    )
    .await
    .expect("RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    let queue = fixture.api.topology.name(names::RECONCILER_REQUESTS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(message) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            return proto::SyncRequest::decode(message.delivery.data.as_slice())
                .expect("a SyncRequest");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request on {queue}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn saving_changed_rules_asks_the_reconciler_to_apply_them_as_a_run() {
    let (fixture, tenant) = with_synced_tenant(&people()).await;
    let (api, admin) = (&fixture.api, &fixture.admin);
    let path = format!("/v1/tenants/{tenant}/rules");
    let mut rules = rules_of(&fixture, tenant).await["rules"].clone();
    rules["fields"]["job_title"]["source"] = json!("upper(jobTitle)");

    // Not connected: saved, and applied by the tenant's next sync.
    let saved = api.put(&path, admin, rules.clone()).await.expect(200);
    assert_eq!(saved["version"], 2);
    assert!(saved.get("apply").is_none(), "{saved}");
    api.post(&format!("{path}/apply"), admin, json!({}))
        .await
        .assert_problem(409, "no-connection");

    api.publisher().await;
    let issuer = &fixture.issuer;
    let app = issuer
        .control
        .create_secret_app(&fixture.directory.id, CARDSYNC_PERMISSIONS)
        .await
        .expect("graph app");
    api.put(
        &format!("/v1/tenants/{tenant}/connection"),
        admin,
        json!({"client_id": app.client_id, "kind": "secret", "credential": app.secret.expect("secret")}),
    )
    .await
    .expect(200);
    rules["fields"]["name"]["source"] = json!("upper(displayName)");
    let saved = api.put(&path, admin, rules.clone()).await.expect(200);
    assert_eq!(saved["version"], 3);
    assert_eq!(saved["apply"]["status"], "queued", "{saved}");
    let run_id = saved["apply"]["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();
    let request = next_reconciler_request(&fixture).await;
    assert_eq!(request.run_id, run_id);
    assert_eq!(request.scope(), proto::sync_request::Scope::Tenant);
    assert_eq!(request.depth(), proto::sync_request::Depth::Cards);
    let run = api
        .get(&format!("/v1/runs/{run_id}"), &fixture.reader)
        .await
        .expect(200);
    assert_eq!(run["kind"], "rules_apply");
    assert_eq!(run["status"], "queued");

    // The same rules again: nothing saved, nothing applied.
    let unchanged = api.put(&path, admin, rules).await.expect(200);
    assert_eq!(unchanged["version"], 3);
    assert!(unchanged.get("apply").is_none(), "{unchanged}");

    // Applying the rules in force again is a run of its own, audited.
    let accepted = api
        .post(&format!("{path}/apply"), admin, json!({}))
        .await
        .expect(202);
    let again = accepted["run_id"].as_str().expect("run id");
    assert_ne!(again, run_id);
    assert_eq!(next_reconciler_request(&fixture).await.run_id, again);
    api.post(&format!("{path}/apply"), &fixture.reader, json!({}))
        .await
        .assert_problem(403, "admin-role-required");
    let audit = api
        .get(&format!("/v1/tenants/{tenant}/audit"), admin)
        .await
        .expect(200);
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|change| change["action"].as_str())
        .collect();
    assert!(actions.contains(&"rules.apply"), "{actions:?}");
    assert!(actions.contains(&"rules.update"), "{actions:?}");
}
