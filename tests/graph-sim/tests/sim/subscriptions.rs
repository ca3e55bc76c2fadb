//! Subscriptions: handshake, limits, renew, reauthorize, delete (graph-facts §1, §4).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ALL_READ, Behaviour, Env, Receiver, env, in_minutes};

fn users_sub(url: &str, minutes: i64) -> Value {
    json!({"changeType": "updated,deleted", "notificationUrl": url, "resource": "/users", "expirationDateTime": in_minutes(minutes), "clientState": "s3cret"})
}

async fn setup() -> (Env, String, Receiver) {
    let env = env(ALL_READ).await;
    let token = env.token().await;
    let rx = Receiver::start(Behaviour::default()).await;
    (env, token, rx)
}

#[tokio::test(flavor = "multi_thread")]
async fn creating_a_subscription_validates_the_endpoint_and_returns_201_with_the_documented_shape()
{
    let (env, token, rx) = setup().await;
    let mut body = users_sub(&rx.url, 60);
    body["lifecycleNotificationUrl"] = json!(rx.url);
    let (status, sub) = env.subscribe(&token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    for key in [
        "id",
        "resource",
        "applicationId",
        "changeType",
        "clientState",
        "notificationUrl",
        "lifecycleNotificationUrl",
        "expirationDateTime",
        "creatorId",
        "latestSupportedTlsVersion",
        "includeResourceData",
    ] {
        assert!(sub.get(key).is_some(), "{key} missing from {sub}");
    }
    assert_eq!(
        sub["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity"
    );
    assert_eq!(sub["applicationId"], env.client_id);
    let validations = rx.validations();
    assert_eq!(
        validations.len(),
        2,
        "notification and lifecycle URLs are both validated"
    );
    for (token, content_type) in validations {
        assert!(
            token.starts_with("Validation: "),
            "the receiver saw the decoded token: {token}"
        );
        assert_eq!(content_type, "text/plain; charset=utf-8");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_encoded_echo_or_a_slow_validation_fails_the_create_with_400() {
    let (env, token, rx) = setup().await;
    rx.behaviour.lock().expect("lock").echo_correctly = false;
    let (status, body) = env.subscribe(&token, users_sub(&rx.url, 60)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("must respond with 200 OK"),
        "{body}"
    );

    env.put_ok(
        env.control_url("/subscription-policy"),
        json!({"validationTimeoutMs": 200}),
    )
    .await;
    {
        let mut b = rx.behaviour.lock().expect("lock");
        b.echo_correctly = true;
        b.validation_delay_ms = 600;
    }
    let (status, body) = env.subscribe(&token, users_sub(&rx.url, 60)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"]["message"],
        "Subscription validation request timed out."
    );
    let (_, list) = env
        .control(Method::GET, env.tenant_url("/subscriptions"), None)
        .await;
    assert_eq!(list["value"], json!([]), "failed creates store nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn expiry_is_raised_to_45_minutes_and_refused_past_41760() {
    let (env, token, rx) = setup().await;
    let (status, sub) = env.subscribe(&token, users_sub(&rx.url, 5)).await;
    assert_eq!(status, StatusCode::CREATED);
    let exp = time::OffsetDateTime::parse(
        sub["expirationDateTime"].as_str().expect("exp"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("parse");
    let minutes = (exp - time::OffsetDateTime::now_utc()).whole_minutes();
    assert!(
        (44..=45).contains(&minutes),
        "raised to the floor, got {minutes} min"
    );
    let mut far = users_sub(&rx.url, 41_760 + 10);
    far["resource"] = json!("/groups");
    let (status, body) = env.subscribe(&token, far).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_are_409_and_bad_change_types_client_states_and_urls_are_400() {
    let (env, token, rx) = setup().await;
    assert_eq!(
        env.subscribe(&token, users_sub(&rx.url, 60)).await.0,
        StatusCode::CREATED
    );
    let (status, body) = env.subscribe(&token, users_sub(&rx.url, 60)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("already exists for the requested combination")
    );

    let mut created = users_sub(&rx.url, 60);
    created["changeType"] = json!("created");
    created["resource"] = json!("/groups");
    assert_eq!(
        env.subscribe(&token, created).await.0,
        StatusCode::BAD_REQUEST
    );
    let mut long_state = users_sub(&rx.url, 60);
    long_state["resource"] = json!("/groups");
    long_state["clientState"] = json!("x".repeat(129));
    assert_eq!(
        env.subscribe(&token, long_state).await.0,
        StatusCode::BAD_REQUEST
    );
    let mut remote_http = users_sub("http://webhook.example.com/hook", 60);
    remote_http["resource"] = json!("/groups");
    assert_eq!(
        env.subscribe(&token, remote_http).await.0,
        StatusCode::BAD_REQUEST
    );
    env.put_ok(
        env.control_url("/subscription-policy"),
        json!({"urlPolicy": "httpsOnly"}),
    )
    .await;
    let mut loopback = users_sub(&rx.url, 60);
    loopback["resource"] = json!("/groups");
    assert_eq!(
        env.subscribe(&token, loopback).await.0,
        StatusCode::BAD_REQUEST,
        "https-only refuses plain http even on loopback"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_101st_subscription_of_an_app_in_a_tenant_is_403() {
    let (env, token, rx) = setup().await;
    for i in 0..100 {
        let mut b = users_sub(&rx.url, 60);
        b["resource"] = json!(format!("/users/u{i}"));
        assert_eq!(
            env.subscribe(&token, b).await.0,
            StatusCode::CREATED,
            "subscription {i}"
        );
    }
    let (status, body) = env.subscribe(&token, users_sub(&rx.url, 60)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn renewing_reauthorizing_listing_and_deleting_follow_the_documented_statuses() {
    let (env, token, rx) = setup().await;
    let (_, sub) = env.subscribe(&token, users_sub(&rx.url, 60)).await;
    let id = sub["id"].as_str().expect("id").to_owned();
    let url = env.graph(&format!("/v1.0/subscriptions/{id}"));
    let resp = env
        .http
        .patch(&url)
        .bearer_auth(&token)
        .json(&json!({"expirationDateTime": in_minutes(120)}))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::OK);
    let renewed: Value = resp.json().await.expect("json");
    assert_ne!(renewed["expirationDateTime"], sub["expirationDateTime"]);
    let resp = env
        .http
        .post(format!("{url}/reauthorize"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("reauthorize");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let list = env.get_json(&token, "/v1.0/subscriptions").await;
    assert_eq!(list["value"][0]["id"], id);
    let resp = env
        .http
        .delete(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        env.get(&token, &format!("/v1.0/subscriptions/{id}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn patching_an_expired_subscription_is_404() {
    let (env, token, rx) = setup().await;
    let (_, sub) = env.subscribe(&token, users_sub(&rx.url, 60)).await;
    let id = sub["id"].as_str().expect("id");
    env.advance_clock(3 * 3600).await;
    let token = env.token().await;
    let resp = env
        .http
        .patch(env.graph(&format!("/v1.0/subscriptions/{id}")))
        .bearer_auth(&token)
        .json(&json!({"expirationDateTime": in_minutes(600)}))
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_list_is_paged_with_next_links_ordered_by_id_and_hides_every_client_state() {
    let (env, token, rx) = setup().await;
    env.put_ok(
        env.control_url("/subscription-policy"),
        json!({"listPageSize": 2}),
    )
    .await;
    let mut created = Vec::new();
    for i in 0..5 {
        let mut b = users_sub(&rx.url, 60);
        b["resource"] = json!(format!("/users/u{i}"));
        let (status, sub) = env.subscribe(&token, b).await;
        assert_eq!(status, StatusCode::CREATED, "{sub}");
        assert_eq!(sub["clientState"], "s3cret", "create answers with it");
        created.push(sub["id"].as_str().expect("id").to_owned());
    }
    created.sort();
    let mut listed = Vec::new();
    let mut pages = 0;
    let mut next = Some("/v1.0/subscriptions".to_owned());
    while let Some(path) = next {
        let page = env.get_json(&token, &path).await;
        pages += 1;
        assert_eq!(
            page["@odata.context"],
            "https://graph.microsoft.com/v1.0/$metadata#subscriptions"
        );
        for s in page["value"].as_array().expect("value") {
            assert_eq!(s["clientState"], Value::Null, "lists never show it: {s}");
            listed.push(s["id"].as_str().expect("id").to_owned());
        }
        next = page["@odata.nextLink"].as_str().map(str::to_owned);
        assert!(pages <= 3, "2 per page: 5 subscriptions take 3 pages");
    }
    assert_eq!((pages, listed), (3, created));
    assert_eq!(
        env.get(&token, "/v1.0/subscriptions?$skiptoken=not*base64")
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
}
