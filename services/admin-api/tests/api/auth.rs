//! The JWT matrix: every way a token can be wrong gets a 401 (or a 403 for what it grants)
//! with a problem body and a `Bearer` challenge; the right tokens get through.

use crate::support::{Fixture, Issuer, settings_for, spawn};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use graph_sim::SimConfig;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid")
}

#[tokio::test]
async fn a_request_without_a_token_gets_401_with_a_bearer_challenge_and_a_problem() {
    let fixture = Fixture::start().await;
    let answer = fixture
        .api
        .call(Method::GET, "/v1/tenants", None, None)
        .await;
    answer.assert_problem(401, "token-missing");
    assert_eq!(
        answer.www_authenticate.as_deref(),
        Some("Bearer realm=\"cardsync\"")
    );

    let answer = fixture
        .api
        .call(Method::GET, "/v1/tenants", Some("not-a-jwt"), None)
        .await;
    answer.assert_problem(401, "token-malformed");
    let challenge = answer.www_authenticate.expect("challenge");
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""),
        "{challenge}"
    );
}

#[tokio::test]
async fn health_and_metrics_need_no_token() {
    let fixture = Fixture::start().await;
    for path in ["/health/live", "/metrics"] {
        let answer = fixture.api.call(Method::GET, path, None, None).await;
        assert_eq!(answer.status.as_u16(), 200, "{path}: {answer:?}");
    }
}

#[tokio::test]
async fn refusals_are_counted_by_reason_and_every_reason_is_exported_before_its_first() {
    let fixture = Fixture::start().await;
    for _ in 0..2 {
        fixture
            .api
            .call(Method::GET, "/v1/tenants", None, None)
            .await
            .assert_problem(401, "token-missing");
    }
    fixture
        .api
        .get("/v1/tenants", "not.a.jwt")
        .await
        .assert_problem(401, "token-malformed");
    let scrape = fixture.api.call(Method::GET, "/metrics", None, None).await;
    let text = scrape.body.as_str().expect("a text exposition");
    let count = |reason: &str| {
        let series = format!("cardsync_admin_api_auth_refusals_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .unwrap_or_else(|| panic!("no series for {reason} in {text}"))
            .to_owned()
    };
    assert_eq!(count("token-missing"), "2");
    assert_eq!(count("token-malformed"), "1");
    assert_eq!(count("token-expired"), "0");
    assert_eq!(count("issuer-unavailable"), "0");
}

#[tokio::test]
async fn a_token_with_alg_none_is_refused() {
    let fixture = Fixture::start().await;
    let real = fixture.admin.clone();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = real.split('.').nth(1).expect("payload");
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        let answer = fixture.api.get("/v1/tenants", &token).await;
        assert_eq!(answer.status.as_u16(), 401, "{answer:?}");
        assert!(answer.www_authenticate.is_some());
    }
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_issuers_public_key_is_refused() {
    let fixture = Fixture::start().await;
    let jwks = fixture.issuer.jwks().await;
    let certificate = STANDARD
        .decode(jwks["keys"][0]["x5c"][0].as_str().expect("x5c"))
        .expect("DER");
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        STANDARD.encode(&certificate)
    );
    let claims = claims_of(&fixture.admin);
    for secret in [pem.as_bytes(), certificate.as_slice()] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid_of(&fixture.admin));
        let forged = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret))
            .expect("signs");
        fixture
            .api
            .get("/v1/tenants", &forged)
            .await
            .assert_problem(401, "token-algorithm");
    }
}

fn foreign_key() -> EncodingKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("key");
    EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).expect("PEM")
}

#[tokio::test]
async fn a_token_signed_with_another_key_is_refused_whatever_its_kid() {
    let fixture = Fixture::start().await;
    let claims = claims_of(&fixture.admin);
    let key = foreign_key();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid_of(&fixture.admin));
    let forged = jsonwebtoken::encode(&header, &claims, &key).expect("signs");
    fixture
        .api
        .get("/v1/tenants", &forged)
        .await
        .assert_problem(401, "token-signature");

    header.kid = Some("made-up-kid".into());
    let forged = jsonwebtoken::encode(&header, &claims, &key).expect("signs");
    fixture
        .api
        .get("/v1/tenants", &forged)
        .await
        .assert_problem(401, "token-key-unknown");
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    // An issuer whose tokens expired an hour before they were issued: an expired token,
    // signed by the trusted key, without waiting.
    let issuer = Issuer::start_with(SimConfig {
        token_lifetime_secs: -3600,
        ..SimConfig::default()
    })
    .await;
    let directory = issuer.directory(1).await;
    let api = spawn(settings_for(&issuer, &[&directory])).await;
    let token = issuer.token(&directory, &directory.admin).await;
    assert!(claims_of(&token)["exp"].as_u64().expect("exp") < now());
    api.get("/v1/tenants", &token)
        .await
        .assert_problem(401, "token-expired");
}

#[tokio::test]
async fn a_token_not_valid_yet_is_refused() {
    let issuer = Issuer::start().await;
    let directory = issuer.directory(1).await;
    let api = spawn(settings_for(&issuer, &[&directory])).await;
    // The issuer's clock runs two hours ahead: its tokens start (nbf) in the future.
    issuer.control.advance_clock(7200).await.expect("clock");
    let token = issuer.token(&directory, &directory.admin).await;
    assert!(claims_of(&token)["nbf"].as_u64().expect("nbf") > now() + 3600);
    api.get("/v1/tenants", &token)
        .await
        .assert_problem(401, "token-not-yet-valid");
}

#[tokio::test]
async fn a_token_from_an_issuer_not_accepted_is_refused() {
    let issuer = Issuer::start().await;
    let directory = issuer.directory(1).await;
    let mut settings = settings_for(&issuer, &[&directory]);
    settings.auth.issuers =
        vec!["https://sts.windows.net/00000000-0000-0000-0000-000000000001/".into()];
    let api = spawn(settings).await;
    let token = issuer.token(&directory, &directory.admin).await;
    api.get("/v1/tenants", &token)
        .await
        .assert_problem(401, "token-issuer");
}

#[tokio::test]
async fn a_token_for_another_api_is_refused() {
    let fixture = Fixture::start().await;
    // Another API in the same directory, the admin client granted its `admin` role too.
    let other = fixture
        .issuer
        .control
        .create_app(
            &fixture.directory.id,
            json!({"identifierUris": ["api://someone-else"], "appRoles": ["admin"]}),
        )
        .await
        .expect("other api");
    fixture
        .issuer
        .control
        .call(
            Method::PATCH,
            &format!(
                "/tenants/{}/apps/{}",
                fixture.directory.id, fixture.directory.admin.0
            ),
            Some(json!({"appRoleAssignments": {
                fixture.directory.api_client.clone(): ["admin"],
                other.client_id: ["admin"],
            }})),
        )
        .await
        .expect("granted");
    let token = fixture
        .issuer
        .token_for(
            &fixture.directory.id,
            &fixture.directory.admin,
            "api://someone-else",
        )
        .await;
    assert_eq!(claims_of(&token)["roles"], json!(["admin"]));
    fixture
        .api
        .get("/v1/tenants", &token)
        .await
        .assert_problem(401, "token-audience");
}

#[tokio::test]
async fn a_token_without_a_role_is_forbidden_and_a_reader_cannot_change_anything() {
    let fixture = Fixture::start().await;
    let nobody = fixture
        .issuer
        .token(&fixture.directory, &fixture.directory.nobody)
        .await;
    assert!(claims_of(&nobody).get("roles").is_none());
    let answer = fixture.api.get("/v1/tenants", &nobody).await;
    answer.assert_problem(403, "role-missing");
    assert!(
        answer
            .www_authenticate
            .as_deref()
            .is_some_and(|c| c.contains("insufficient_scope"))
    );

    assert_eq!(
        fixture
            .api
            .get("/v1/tenants", &fixture.reader)
            .await
            .status
            .as_u16(),
        200
    );
    let id = uuid::Uuid::new_v4();
    fixture
        .api
        .post(
            "/v1/tenants",
            &fixture.reader,
            json!({"id": id, "name": "nope"}),
        )
        .await
        .assert_problem(403, "admin-role-required");
    fixture
        .api
        .get(&format!("/v1/tenants/{id}"), &fixture.reader)
        .await
        .assert_problem(404, "unknown-tenant");
}

#[tokio::test]
async fn a_token_signed_by_a_new_key_is_accepted_after_one_jwks_refresh() {
    let issuer = Issuer::start().await;
    let directory = issuer.directory(1).await;
    let mut settings = settings_for(&issuer, &[&directory]);
    settings.auth.jwks_refresh_interval = Duration::ZERO;
    let api = spawn(settings).await;
    let first = issuer.token(&directory, &directory.reader).await;
    assert_eq!(api.get("/v1/tenants", &first).await.status.as_u16(), 200);

    let kid = issuer.control.rotate_signing_key().await.expect("rotated");
    let second = issuer.token(&directory, &directory.reader).await;
    assert_eq!(kid_of(&second), kid);
    assert_ne!(kid_of(&first), kid);
    assert_eq!(api.get("/v1/tenants", &second).await.status.as_u16(), 200);
    assert_eq!(api.get("/v1/tenants", &first).await.status.as_u16(), 200);
}

#[tokio::test]
async fn an_unknown_kid_does_not_refetch_the_keys_within_the_refresh_interval() {
    let issuer = Issuer::start().await;
    let directory = issuer.directory(1).await;
    let mut settings = settings_for(&issuer, &[&directory]);
    settings.auth.jwks_refresh_interval = Duration::from_secs(3600);
    let api = spawn(settings).await;
    let first = issuer.token(&directory, &directory.reader).await;
    assert_eq!(api.get("/v1/tenants", &first).await.status.as_u16(), 200);
    issuer.control.rotate_signing_key().await.expect("rotated");
    let second = issuer.token(&directory, &directory.reader).await;
    api.get("/v1/tenants", &second)
        .await
        .assert_problem(401, "token-key-unknown");
}

#[tokio::test]
async fn v2_tokens_naming_the_api_by_client_id_are_accepted() {
    let issuer = Issuer::start().await;
    let directory = issuer.directory(2).await;
    let api = spawn(settings_for(&issuer, &[&directory])).await;
    let token = issuer.token(&directory, &directory.admin).await;
    let claims = claims_of(&token);
    assert_eq!(claims["ver"], "2.0");
    assert_eq!(claims["aud"], directory.api_client.as_str());
    assert_eq!(
        claims["iss"],
        format!("https://login.microsoftonline.com/{}/v2.0", directory.id)
    );
    assert_eq!(api.get("/v1/tenants", &token).await.status.as_u16(), 200);
}

#[tokio::test]
async fn hs256_with_a_shared_secret_works_only_when_enabled_and_roles_follow_the_claim_path() {
    let issuer = Issuer::start().await;
    let directory = issuer.directory(1).await;
    let secret = "a development secret of at least 32 bytes";
    let claims = json!({
        "iss": "https://keycloak.test/realms/cardsync",
        "aud": "cardsync",
        "exp": now() + 600,
        "sub": "dev-user",
        "preferred_username": "dev@example.test",
        "realm_access": {"roles": ["admin"]},
    });
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signs");

    let mut settings = settings_for(&issuer, &[&directory]);
    settings
        .auth
        .issuers
        .push("https://keycloak.test/realms/cardsync".into());
    settings.auth.audiences.push("cardsync".into());
    settings.auth.roles_claim = "realm_access.roles".into();
    let off = spawn(settings.clone()).await;
    off.get("/v1/tenants", &token)
        .await
        .assert_problem(401, "token-algorithm");

    settings.auth.allow_hs256 = true;
    settings.auth.hs256_secret = Some(secret.to_owned().into());
    let on = spawn(settings).await;
    let id = uuid::Uuid::new_v4();
    let created = on.create_tenant(&token, id, "hs256 tenant").await;
    assert_eq!(created["id"], id.to_string());
    let audit = on
        .get(&format!("/v1/tenants/{id}/audit"), &token)
        .await
        .expect(200);
    assert_eq!(audit["items"][0]["actor"], "dev@example.test");
}
