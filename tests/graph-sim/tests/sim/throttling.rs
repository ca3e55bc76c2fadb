//! Throttling and injected faults (graph-facts §8, §9).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{ALL_READ, env};

#[tokio::test(flavor = "multi_thread")]
async fn responses_carry_the_resource_unit_cost() {
    let env = env(ALL_READ).await;
    let token = env.token().await;
    let resp = env.get(&token, "/v1.0/users").await;
    assert_eq!(resp.headers()["x-ms-resource-unit"], "2");
    let resp = env.get(&token, "/v1.0/users?$select=displayName").await;
    assert_eq!(resp.headers()["x-ms-resource-unit"], "1");
    let g = env.create_group("G").await;
    let resp = env
        .get(&token, &format!("/v1.0/groups/{g}/transitiveMembers"))
        .await;
    assert_eq!(resp.headers()["x-ms-resource-unit"], "5");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exhausted_bucket_answers_429_with_the_documented_headers_and_body() {
    let env = env(ALL_READ).await;
    env.put_ok(
        env.control_url("/throttle"),
        json!({"limit": 4, "windowSecs": 60, "retryAfter": "fractional"}),
    )
    .await;
    let token = env.token().await;
    let first = env.get(&token, "/v1.0/users").await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = env.get(&token, "/v1.0/users").await;
    assert_eq!(second.status(), StatusCode::OK);
    assert!(
        second
            .headers()
            .get("x-ms-throttle-limit-percentage")
            .is_some(),
        "past 80% of the limit"
    );
    let resp = env.get(&token, "/v1.0/users").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = resp.headers()["retry-after"]
        .to_str()
        .expect("retry-after")
        .to_owned();
    assert!(
        retry_after.contains('.') && retry_after.parse::<f64>().expect("float") > 0.0,
        "{retry_after}"
    );
    assert_eq!(
        resp.headers()["x-ms-throttle-information"],
        "ResourceUnitLimitExceeded"
    );
    let scope = resp.headers()["x-ms-throttle-scope"]
        .to_str()
        .expect("scope")
        .to_owned();
    assert_eq!(
        scope,
        format!(
            "Tenant_Application/ReadWrite/{}/{}",
            env.client_id, env.tenant
        )
    );
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "TooManyRequests");
    assert_eq!(body["error"]["innerError"]["status"], "429");

    env.put_ok(
        env.control_url("/throttle"),
        json!({"limit": 1, "windowSecs": 60, "retryAfter": "absent"}),
    )
    .await;
    let resp = env.get(&token, "/v1.0/users?$select=id").await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_none());
    env.put_ok(
        env.control_url("/throttle"),
        json!({"limit": 1, "windowSecs": 60, "retryAfter": "integer"}),
    )
    .await;
    let resp = env.get(&token, "/v1.0/users?$select=id").await;
    assert!(
        resp.headers()["retry-after"]
            .to_str()
            .expect("ra")
            .parse::<u64>()
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_503s_slow_responses_and_dropped_connections_hit_only_their_endpoint() {
    let env = env(ALL_READ).await;
    let rules = json!([
        {"endpoint": "users.delta", "kind": "unavailable", "remaining": 1, "retryAfter": "2.128"},
        {"endpoint": "groups.list", "kind": "slow", "remaining": 1, "delayMs": 400},
        {"endpoint": "users.get", "kind": "drop", "remaining": 1}
    ]);
    env.put_ok(env.control_url("/faults"), rules).await;
    let token = env.token().await;
    assert_eq!(
        env.get(&token, "/v1.0/users").await.status(),
        StatusCode::OK
    );
    let resp = env.get(&token, "/v1.0/users/delta").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "2.128");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "serviceNotAvailable");
    assert_eq!(
        env.get(&token, "/v1.0/users/delta").await.status(),
        StatusCode::OK,
        "the rule ran out"
    );

    let started = Instant::now();
    assert_eq!(
        env.get(&token, "/v1.0/groups").await.status(),
        StatusCode::OK
    );
    assert!(started.elapsed() >= Duration::from_millis(400));

    let id = env.create_user("Drop").await;
    let dropped = match env
        .http
        .get(env.graph(&format!("/v1.0/users/{id}")))
        .bearer_auth(&token)
        .send()
        .await
    {
        Err(_) => true,
        Ok(resp) => resp.bytes().await.is_err(),
    };
    assert!(dropped, "the connection was cut");
    assert_eq!(
        env.get(&token, &format!("/v1.0/users/{id}")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_endpoint_can_be_made_unavailable() {
    let env = env(ALL_READ).await;
    env.put_ok(
        env.control_url("/faults"),
        json!([{"endpoint": "token", "kind": "unavailable", "remaining": 1}]),
    )
    .await;
    let pairs = [
        ("grant_type", "client_credentials"),
        ("client_id", env.client_id.as_str()),
        ("client_secret", env.secret.as_str()),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let resp = env
        .http
        .post(env.sim.token_url(&env.tenant))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish(),
        )
        .send()
        .await
        .expect("token");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    env.token().await;
}
