//! What every answer of the Graph surface carries, including the ones no handler produced: `request-id` and the
//! echoed `client-request-id` headers, and in errors Graph's envelope with `innerError.date` (graph-facts §9).

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::support::{ALL_READ, env};

const CLIENT_REQUEST_ID: &str = "7e1f6a52-cardsync-test";

/// Checks the headers and, for errors, the envelope; returns the body.
async fn assert_graph_answer(resp: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(resp.status(), status);
    let headers = resp.headers().clone();
    let request_id = headers
        .get("request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no request-id header: {headers:?}"))
        .to_owned();
    assert_eq!(headers["client-request-id"], CLIENT_REQUEST_ID);
    let text = resp.text().await.expect("body");
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not Graph's JSON envelope ({e}): {text:?}"));
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    let inner = &body["error"]["innerError"];
    assert_eq!(inner["request-id"], request_id.as_str(), "{body}");
    assert_eq!(inner["client-request-id"], CLIENT_REQUEST_ID, "{body}");
    let date = inner["date"].as_str().expect("innerError.date");
    assert!(
        time::OffsetDateTime::parse(date, &time::format_description::well_known::Rfc3339).is_ok(),
        "{date}"
    );
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_path_answers_graphs_envelope_with_date_and_request_ids() {
    let env = env(ALL_READ).await;
    let token = env.token().await;
    for path in ["/v1.0/nonsense", "/v1.0/users/someone/nonsense", "/nowhere"] {
        let resp = env
            .http
            .get(env.graph(path))
            .bearer_auth(&token)
            .header("client-request-id", CLIENT_REQUEST_ID)
            .send()
            .await
            .expect("call");
        let body = assert_graph_answer(resp, StatusCode::BAD_REQUEST, "BadRequest").await;
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("nonsense") || m.contains("nowhere")),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_refused_before_any_handler_carry_the_envelope_and_request_ids() {
    let env = env(ALL_READ).await;
    let token = env.token().await;
    let wrong_method = env
        .http
        .request(Method::DELETE, env.graph("/v1.0/users"))
        .bearer_auth(&token)
        .header("client-request-id", CLIENT_REQUEST_ID)
        .send()
        .await
        .expect("call");
    assert_graph_answer(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
    )
    .await;
    let too_large = env
        .http
        .post(env.graph("/v1.0/subscriptions"))
        .bearer_auth(&token)
        .header("client-request-id", CLIENT_REQUEST_ID)
        .header("Content-Type", "application/json")
        .body(vec![b' '; 5 * 1024 * 1024])
        .send()
        .await
        .expect("call");
    assert_graph_answer(too_large, StatusCode::PAYLOAD_TOO_LARGE, "BadRequest").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn successful_answers_and_identity_answers_carry_request_ids_too() {
    let env = env(ALL_READ).await;
    let token = env.token().await;
    let ok = env
        .http
        .get(env.graph("/v1.0/users"))
        .bearer_auth(&token)
        .header("client-request-id", CLIENT_REQUEST_ID)
        .send()
        .await
        .expect("call");
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(ok.headers().contains_key("request-id"));
    assert_eq!(ok.headers()["client-request-id"], CLIENT_REQUEST_ID);
    for path in [
        format!("/{}/discovery/v2.0/keys", env.tenant),
        format!("/{}/v2.0/.well-known/openid-configuration", env.tenant),
    ] {
        let resp = env
            .http
            .get(env.graph(&path))
            .header("client-request-id", CLIENT_REQUEST_ID)
            .send()
            .await
            .expect("call");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(resp.headers().contains_key("x-ms-request-id"), "{path}");
        assert_eq!(resp.headers()["client-request-id"], CLIENT_REQUEST_ID);
    }
}
