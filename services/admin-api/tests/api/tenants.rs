//! Tenants: create, show, patch as a merge, list with paging, disconnect and reconnect, the
//! audit of every change, and two tenants through one API where each sees only its own.

use crate::support::{Fixture, Issuer, settings_for, spawn};
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn a_tenant_is_created_shown_and_patched_as_a_merge() {
    let fixture = Fixture::start().await;
    let (api, admin) = (&fixture.api, &fixture.admin);
    let id = Uuid::new_v4();
    let created = api
        .post(
            "/v1/tenants",
            admin,
            json!({"id": id, "name": "Contoso", "invites_enabled": true}),
        )
        .await
        .expect(201);
    assert_eq!(created["name"], "Contoso");
    assert_eq!(created["invites_enabled"], true);
    assert_eq!(created["rules_version"], 1);
    assert_eq!(created["has_connection"], false);

    let patched = api
        .patch(
            &format!("/v1/tenants/{id}"),
            admin,
            json!({"admin_roles_enabled": true}),
        )
        .await
        .expect(200);
    assert_eq!(patched["admin_roles_enabled"], true);
    assert_eq!(
        patched["invites_enabled"], true,
        "a patch keeps the flags it does not name"
    );
    assert_eq!(patched["name"], "Contoso");

    let shown = api
        .get(&format!("/v1/tenants/{id}"), &fixture.reader)
        .await
        .expect(200);
    assert_eq!(shown, patched);

    let audit = api
        .get(&format!("/v1/tenants/{id}/audit"), admin)
        .await
        .expect(200);
    let items = audit["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{audit}");
    assert_eq!(items[0]["action"], "tenant.update");
    assert_eq!(items[0]["before"]["admin_roles_enabled"], false);
    assert_eq!(items[0]["after"]["admin_roles_enabled"], true);
    assert_eq!(
        items[0]["actor"],
        format!("app:{}", fixture.directory.admin.0)
    );
    assert_eq!(items[1]["action"], "tenant.create");
}

#[tokio::test]
async fn bad_tenant_input_gets_clear_problems_and_changes_nothing() {
    let fixture = Fixture::start().await;
    let (api, admin) = (&fixture.api, &fixture.admin);
    let id = Uuid::new_v4();
    api.create_tenant(admin, id, "First").await;
    api.post("/v1/tenants", admin, json!({"id": id, "name": "Again"}))
        .await
        .assert_problem(409, "tenant-exists");
    api.post(
        "/v1/tenants",
        admin,
        json!({"id": Uuid::new_v4(), "name": ""}),
    )
    .await
    .assert_problem(422, "invalid-name");
    api.post(
        "/v1/tenants",
        admin,
        json!({"id": "not-a-uuid", "name": "x"}),
    )
    .await
    .assert_problem(422, "invalid-body");
    api.post(
        "/v1/tenants",
        admin,
        json!({"id": Uuid::new_v4(), "name": "x", "colour": "red"}),
    )
    .await
    .assert_problem(422, "invalid-body");
    let answer = api
        .post(
            "/v1/tenants",
            admin,
            json!({"id": Uuid::new_v4(), "name": "x", "rules": {"custom_fields": {"Bad Name": {"expression": "nope("}}}}),
        )
        .await;
    assert!(matches!(answer.status.as_u16(), 422), "{answer:?}");
    api.patch(
        &format!("/v1/tenants/{id}"),
        admin,
        json!({"invites_enabled": "yes"}),
    )
    .await
    .assert_problem(422, "invalid-body");
    api.get("/v1/tenants/not-a-uuid", admin)
        .await
        .assert_problem(400, "invalid-path");
    api.get("/v1/tenants?limit=0", admin)
        .await
        .assert_problem(400, "invalid-limit");
    api.get("/v1/nothing-here", admin)
        .await
        .assert_problem(404, "unknown-route");
    let shown = api
        .get(&format!("/v1/tenants/{id}"), admin)
        .await
        .expect(200);
    assert_eq!(shown["name"], "First");
}

#[tokio::test]
async fn the_tenant_list_pages_with_a_cursor() {
    let fixture = Fixture::start().await;
    let (api, admin) = (&fixture.api, &fixture.admin);
    let mut ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        api.create_tenant(admin, *id, "paged").await;
    }
    ids.sort();
    // Walk every page from just before our first tenant.
    let before_first = Uuid::from_u128(ids[0].as_u128() - 1);
    let mut seen = Vec::new();
    let mut cursor = Some(before_first.to_string());
    while let Some(at) = cursor.take() {
        let page = api
            .get(&format!("/v1/tenants?limit=2&cursor={at}"), admin)
            .await
            .expect(200);
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 2);
        for item in items {
            let id = Uuid::parse_str(item["id"].as_str().expect("id")).expect("uuid");
            if id > ids[2] {
                break;
            }
            seen.push(id);
        }
        if seen.last() == Some(&ids[2]) {
            break;
        }
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    for id in &ids {
        assert!(seen.contains(id), "{id} missing from {seen:?}");
    }
}

#[tokio::test]
async fn a_disconnected_tenant_keeps_its_configuration_and_refuses_sync_until_reconnected() {
    let fixture = Fixture::start().await;
    let (api, admin) = (&fixture.api, &fixture.admin);
    let id = Uuid::new_v4();
    api.create_tenant(admin, id, "Fabrikam").await;
    let off = api
        .post(&format!("/v1/tenants/{id}/disconnect"), admin, json!({}))
        .await
        .expect(200);
    assert!(off["disconnected_at"].is_string());
    assert_eq!(off["syncing"], false);
    api.post(&format!("/v1/tenants/{id}/sync"), admin, json!({}))
        .await
        .assert_problem(409, "tenant-disconnected");
    let on = api
        .post(&format!("/v1/tenants/{id}/reconnect"), admin, json!({}))
        .await
        .expect(200);
    assert!(on.get("disconnected_at").is_none());
    assert_eq!(on["name"], "Fabrikam");
    api.post(&format!("/v1/tenants/{id}/sync"), admin, json!({}))
        .await
        .assert_problem(409, "no-connection");
}

#[tokio::test]
async fn two_tenants_through_one_api_each_see_only_their_own() {
    let issuer = Issuer::start().await;
    let contoso = issuer.directory(1).await;
    let fabrikam = issuer.directory(1).await;
    let mut settings = settings_for(&issuer, &[&contoso, &fabrikam]);
    settings.auth.tenant_claim = Some("tid".into());
    let api = spawn(settings).await;
    let contoso_admin = issuer.token(&contoso, &contoso.admin).await;
    let fabrikam_admin = issuer.token(&fabrikam, &fabrikam.admin).await;

    api.create_tenant(&contoso_admin, contoso.uuid(), "Contoso")
        .await;
    api.create_tenant(&fabrikam_admin, fabrikam.uuid(), "Fabrikam")
        .await;
    api.post(
        "/v1/tenants",
        &contoso_admin,
        json!({"id": Uuid::new_v4(), "name": "not mine"}),
    )
    .await
    .assert_problem(403, "tenant-forbidden");

    let listed = api.get("/v1/tenants", &contoso_admin).await.expect(200);
    let names: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["Contoso"]);
    api.get(&format!("/v1/tenants/{}", fabrikam.id), &contoso_admin)
        .await
        .assert_problem(403, "tenant-forbidden");
    api.patch(
        &format!("/v1/tenants/{}", fabrikam.id),
        &contoso_admin,
        json!({"name": "taken over"}),
    )
    .await
    .assert_problem(403, "tenant-forbidden");
    api.get(&format!("/v1/runs?tenant={}", fabrikam.id), &contoso_admin)
        .await
        .assert_problem(403, "tenant-forbidden");
    let theirs = api
        .get(&format!("/v1/tenants/{}", fabrikam.id), &fabrikam_admin)
        .await
        .expect(200);
    assert_eq!(theirs["name"], "Fabrikam");
}

#[tokio::test]
async fn runs_are_listed_across_tenants_for_an_all_tenants_caller_and_a_limited_one_sees_its_own() {
    let issuer = Issuer::start().await;
    let contoso = issuer.directory(1).await;
    let fabrikam = issuer.directory(1).await;
    let operator = spawn(settings_for(&issuer, &[&contoso, &fabrikam])).await;
    let mut limited = settings_for(&issuer, &[&contoso, &fabrikam]);
    limited.auth.tenant_claim = Some("tid".into());
    let customer = spawn(limited).await;
    let contoso_admin = issuer.token(&contoso, &contoso.admin).await;
    let mut runs = Vec::new();
    for directory in [&contoso, &fabrikam] {
        operator
            .create_tenant(&contoso_admin, directory.uuid(), "Tenant")
            .await;
        let run = Uuid::new_v4();
        cardsync_store::runs::create(
            &operator.pool,
            &cardsync_store::runs::NewRun {
                run_id: run,
                tenant_id: directory.uuid(),
                kind: "sync_now".into(),
                cause: "manual".into(),
                started_by: "test".into(),
                target: None,
            },
        )
        .await
        .expect("run");
        runs.push(run.to_string());
    }

    // The operator (no tenant claim): both tenants' runs, newest first, paged with a cursor.
    let mut seen = Vec::new();
    let mut path = "/v1/runs?limit=1".to_owned();
    while seen.len() < 2 {
        let page = operator.get(&path, &contoso_admin).await.expect(200);
        let item = &page["items"][0];
        if runs.iter().any(|run| item["id"] == run.as_str()) {
            seen.push(item["id"].as_str().expect("id").to_owned());
        }
        let next = page["next_cursor"].as_str().expect("more runs to page");
        path = format!("/v1/runs?limit=1&cursor={next}");
    }
    assert_eq!(seen, [runs[1].clone(), runs[0].clone()], "newest first");

    // A customer's admin: its own tenant's runs only.
    let own = customer.get("/v1/runs", &contoso_admin).await.expect(200);
    let ids: Vec<&str> = own["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|run| run["id"].as_str())
        .collect();
    assert_eq!(ids, [runs[0].as_str()]);
    assert_eq!(own["items"][0]["tenant_id"], contoso.id.as_str());
}

#[tokio::test]
async fn the_document_states_the_page_size_this_server_allows() {
    let issuer = Issuer::start().await;
    let directory = issuer.directory(1).await;
    let mut settings = settings_for(&issuer, &[&directory]);
    settings.admin.page_size_max = 7;
    let api = spawn(settings).await;
    let admin = issuer.token(&directory, &directory.admin).await;
    let document = api
        .call(reqwest::Method::GET, "/openapi.json", None, None)
        .await
        .expect(200);
    let limit = document["paths"]["/v1/tenants"]["get"]["parameters"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == "limit"))
        .expect("the tenant list has a limit")["schema"]
        .clone();
    assert_eq!(limit["maximum"], 7, "{limit}");
    assert_eq!(limit["minimum"], 1, "{limit}");
    api.get("/v1/tenants?limit=7", &admin).await.expect(200);
    api.get("/v1/tenants?limit=8", &admin)
        .await
        .assert_problem(400, "invalid-limit");
}
