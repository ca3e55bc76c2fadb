//! The control API: seeding, mutation reports, snapshots, counters.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ALL_READ, GLOBAL_ADMIN, env};

#[tokio::test(flavor = "multi_thread")]
async fn seeding_is_deterministic_across_simulators() {
    let a = env(ALL_READ).await;
    let b = env(ALL_READ).await;
    let sa = a
        .post_ok(a.tenant_url("/seed"), json!({"users": 30, "seed": 9}))
        .await;
    let sb = b
        .post_ok(b.tenant_url("/seed"), json!({"users": 30, "seed": 9}))
        .await;
    assert_eq!(
        sa["summary"]["sampleUserIds"],
        sb["summary"]["sampleUserIds"]
    );
    assert_eq!(
        sa["summary"]["globalAdmins"]
            .as_array()
            .expect("admins")
            .len(),
        3
    );
    let token = a.token().await;
    let admins = a
        .get_json(
            &token,
            &format!("/v1.0/directoryRoles/roleTemplateId={GLOBAL_ADMIN}/members"),
        )
        .await;
    assert_eq!(admins["value"].as_array().expect("value").len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn mutations_report_their_time_and_the_snapshot_reflects_them() {
    let env = env(ALL_READ).await;
    let created = env
        .post_ok(
            env.tenant_url("/users"),
            json!({"displayName": "Snap", "userPrincipalName": "snap@x.com", "employeeId": "E9"}),
        )
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(
        created["change"]["changedAt"]
            .as_str()
            .expect("changedAt")
            .ends_with('Z')
    );
    assert!(
        created["change"]["changedAtUnixMs"]
            .as_i64()
            .expect("unix ms")
            > 1_600_000_000_000
    );
    let patched = env.patch_user(&id, json!({"accountEnabled": false})).await;
    assert!(patched["change"]["sequence"].as_u64() > created["change"]["sequence"].as_u64());
    let (status, snap) = env
        .control(Method::GET, env.tenant_url("/snapshot"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let user = snap["directory"]["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["id"] == id)
        .cloned()
        .expect("user in snapshot");
    assert_eq!(user["accountEnabled"], false);
    assert_eq!(user["employeeId"], "E9");
    assert_eq!(user["lifecycleState"], "active");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_mutations_are_refused_with_a_reason() {
    let env = env(ALL_READ).await;
    let id = env.create_user("V").await;
    let (status, body) = env
        .control(
            Method::PATCH,
            env.tenant_url(&format!("/users/{id}")),
            Some(json!({"employeeId": "x".repeat(17)})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("employeeId")
    );
    let (status, _) = env
        .control(
            Method::PATCH,
            env.tenant_url("/users/nope"),
            Some(json!({"city": "X"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn request_counters_are_kept_per_tenant_and_endpoint() {
    let env = env(ALL_READ).await;
    let token = env.token().await;
    env.get(&token, "/v1.0/users").await;
    env.get(&token, "/v1.0/users").await;
    env.get(&token, "/v1.0/users/missing").await;
    let (_, counters) = env
        .control(
            Method::GET,
            env.control_url(&format!("/counters?tenant={}", env.tenant)),
            None,
        )
        .await;
    let t: &Value = &counters[&env.tenant];
    assert_eq!(t["users.list"]["requests"], 2);
    assert_eq!(t["users.get"]["byStatus"]["404"], 1);
    assert_eq!(t["token"]["requests"], 1);
}
