//! Graph's validation handshake on both endpoints.

use crate::helpers::spawn_app;
use webhook::{LIFECYCLE_PATH, NOTIFICATIONS_PATH};

#[tokio::test]
async fn the_handshake_echoes_the_decoded_token_as_plain_text_on_both_endpoints() {
    let mut app = spawn_app().await;
    for path in [NOTIFICATIONS_PATH, LIFECYCLE_PATH] {
        // Graph URL-encodes the token; '+' and %20 both stand for a space.
        let response = app
            .client
            .post(format!(
                "{}{path}?validationToken=Validation%3A+Testing%20client%20%3Cb%3E%26%2B",
                app.address
            ))
            .header("content-type", "text/plain; charset=utf-8")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(
            response.text().await.unwrap(),
            "Validation: Testing client <b>&+"
        );
    }
    assert!(app.drain("delta-worker.changes").await.is_empty());
    app.teardown().await;
}

#[tokio::test]
async fn the_handshake_never_reads_the_body() {
    let app = spawn_app().await;
    // A body that would be rejected three ways (type, size, shape) if it were looked at.
    let response = app
        .client
        .post(format!(
            "{}{NOTIFICATIONS_PATH}?validationToken=abc",
            app.address
        ))
        .header("content-type", "application/octet-stream")
        .body(vec![b'{'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "abc");
    app.teardown().await;
}

#[tokio::test]
async fn an_oversized_or_empty_token_is_a_400_with_a_reason() {
    let app = spawn_app().await;
    let long = "a".repeat(4097);
    let response = app
        .client
        .post(format!(
            "{}{NOTIFICATIONS_PATH}?validationToken={long}",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "validation_token_too_long");

    let response = app
        .client
        .post(format!("{}{LIFECYCLE_PATH}?validationToken=", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "empty_validation_token");
    app.teardown().await;
}

#[tokio::test]
async fn a_token_at_the_limit_is_answered() {
    let app = spawn_app().await;
    let token = "z".repeat(4096);
    let response = app
        .client
        .post(format!(
            "{}{NOTIFICATIONS_PATH}?validationToken={token}",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), token);
    app.teardown().await;
}
