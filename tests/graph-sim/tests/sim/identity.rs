//! Token endpoint and bearer checks (graph-facts §10).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::support::{ALL_READ, env};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

struct TestCert {
    pem: String,
    der: Vec<u8>,
    key: EncodingKey,
}

fn test_cert() -> TestCert {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("rsa key");
    let cert = rcgen::CertificateParams::new(vec!["cardsync-test".to_owned()])
        .expect("params")
        .self_signed(&pair)
        .expect("cert");
    let key = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).expect("encoding key");
    TestCert {
        pem: cert.pem(),
        der: cert.der().to_vec(),
        key,
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn assertion(cert: &TestCert, alg: Algorithm, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.typ = Some("JWT".into());
    match alg {
        Algorithm::PS256 => {
            header.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&cert.der)))
        }
        _ => header.x5t = Some(URL_SAFE_NO_PAD.encode(Sha1::digest(&cert.der))),
    }
    jsonwebtoken::encode(&header, claims, &cert.key).expect("sign")
}

fn claims(client_id: &str, aud: &str, jti: &str) -> Value {
    json!({"aud": aud, "iss": client_id, "sub": client_id, "jti": jti, "nbf": now(), "exp": now() + 600})
}

fn assertion_form<'a>(client_id: &'a str, assertion: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", "https://graph.microsoft.com/.default"),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
    ]
}

fn assert_entra_error(body: &Value, error: &str, code: u64) {
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let desc = body["error_description"]
        .as_str()
        .expect("error_description");
    assert!(desc.starts_with(&format!("AADSTS{code}: ")), "{desc}");
    assert!(
        desc.contains("Trace ID: ")
            && desc.contains("Correlation ID: ")
            && desc.contains("Timestamp: "),
        "{desc}"
    );
    for key in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[key].is_string(), "{key} missing in {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_secret_gets_a_bearer_token_that_expires_in_3599_seconds() {
    let env = env(ALL_READ).await;
    let pairs = [
        ("grant_type", "client_credentials"),
        ("client_id", env.client_id.as_str()),
        ("client_secret", env.secret.as_str()),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let (status, body) = env.token_request(&env.tenant, &pairs).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert!(body.get("refresh_token").is_none());
    let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(
        body["access_token"].as_str().expect("token"),
    )
    .expect("jwt");
    assert_eq!(claims["aud"], "https://graph.microsoft.com");
    assert_eq!(claims["tid"], env.tenant);
    assert_eq!(claims["appid"], env.client_id);
    assert_eq!(
        claims["iss"],
        format!("https://sts.windows.net/{}/", env.tenant)
    );
    assert!(
        claims["roles"]
            .as_array()
            .expect("roles")
            .contains(&json!("User.Read.All"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tenant_can_be_named_by_its_domain_and_secrets_by_basic_auth() {
    let env = env(ALL_READ).await;
    let form = "grant_type=client_credentials&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default";
    let resp = env
        .http
        .post(env.sim.token_url(&env.domain))
        .basic_auth(&env.client_id, Some(&env.secret))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .expect("token call");
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_secret_is_invalid_client_with_entras_error_shape() {
    let env = env(ALL_READ).await;
    let pairs = [
        ("grant_type", "client_credentials"),
        ("client_id", env.client_id.as_str()),
        ("client_secret", "wrong"),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let (status, body) = env.token_request(&env.tenant, &pairs).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_entra_error(&body, "invalid_client", 7000215);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_tenants_clients_and_bad_scopes_get_their_aadsts_codes() {
    let env = env(ALL_READ).await;
    let ok = |client: &'static str, scope: &'static str| {
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("client_secret", "x"),
            ("scope", scope),
        ]
    };
    let (status, body) = env
        .token_request(
            "no-such-tenant.onmicrosoft.com",
            &ok("c", "https://graph.microsoft.com/.default"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_entra_error(&body, "invalid_request", 90002);
    let (status, body) = env
        .token_request(
            &env.tenant,
            &ok(
                "00000000-0000-0000-0000-000000000001",
                "https://graph.microsoft.com/.default",
            ),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_entra_error(&body, "unauthorized_client", 700016);
    let (status, body) = env
        .token_request(&env.tenant, &ok("c", "User.Read.All"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_entra_error(&body, "invalid_scope", 1002012);
    let (status, body) = env
        .token_request(
            &env.tenant,
            &ok(
                "c",
                "https://graph.microsoft.com/.default https://vault.azure.net/.default",
            ),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_entra_error(&body, "invalid_scope", 70011);
}

async fn register_cert(env: &crate::support::Env, pem: &str) {
    let (status, body) = env
        .control(
            Method::PATCH,
            env.tenant_url(&format!("/apps/{}", env.client_id)),
            Some(json!({"certificates": [pem]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_rs256_assertion_with_x5t_works_once_and_its_jti_cannot_be_replayed() {
    let env = env(ALL_READ).await;
    let cert = test_cert();
    register_cert(&env, &cert.pem).await;
    let aud = format!(
        "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
        env.tenant
    );
    let jwt = assertion(
        &cert,
        Algorithm::RS256,
        &claims(&env.client_id, &aud, "jti-1"),
    );
    let (status, body) = env
        .token_request(&env.tenant, &assertion_form(&env.client_id, &jwt))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token_claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(
        body["access_token"].as_str().expect("token"),
    )
    .expect("jwt");
    assert_eq!(token_claims["appidacr"], "2");
    let (status, body) = env
        .token_request(&env.tenant, &assertion_form(&env.client_id, &jwt))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ps256_assertion_with_x5t_s256_and_the_simulators_own_token_url_as_audience_works() {
    let env = env(ALL_READ).await;
    let cert = test_cert();
    register_cert(&env, &cert.pem).await;
    let aud = env.sim.token_url(&env.tenant);
    let jwt = assertion(
        &cert,
        Algorithm::PS256,
        &claims(&env.client_id, &aud, "jti-ps"),
    );
    let (status, body) = env
        .token_request(&env.tenant, &assertion_form(&env.client_id, &jwt))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn assertions_from_unregistered_certificates_wrong_audiences_or_expired_are_refused() {
    let env = env(ALL_READ).await;
    let registered = test_cert();
    register_cert(&env, &registered.pem).await;
    let aud = format!(
        "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
        env.tenant
    );

    let stranger = test_cert();
    let jwt = assertion(
        &stranger,
        Algorithm::RS256,
        &claims(&env.client_id, &aud, "a"),
    );
    let (status, body) = env
        .token_request(&env.tenant, &assertion_form(&env.client_id, &jwt))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_entra_error(&body, "invalid_client", 700027);

    let jwt = assertion(
        &registered,
        Algorithm::RS256,
        &claims(&env.client_id, "https://example.com/token", "b"),
    );
    let (status, body) = env
        .token_request(&env.tenant, &assertion_form(&env.client_id, &jwt))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");

    let mut expired = claims(&env.client_id, &aud, "c");
    expired["exp"] = json!(now() - 3600);
    expired["nbf"] = json!(now() - 4000);
    let jwt = assertion(&registered, Algorithm::RS256, &expired);
    let (status, body) = env
        .token_request(&env.tenant, &assertion_form(&env.client_id, &jwt))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_entra_error(&body, "invalid_client", 700024);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_federated_assertion_needs_the_exact_issuer_subject_and_audience() {
    let env = env(ALL_READ).await;
    let issuer_key = test_cert();
    let issuer = "https://oidc.prod-aks.azure.com/abc/";
    let subject = "system:serviceaccount:cardsync:delta-worker";
    let fed = json!({"federatedCredentials": [{"issuer": issuer, "subject": subject, "keys": issuer_key.pem}]});
    let (status, _) = env
        .control(
            Method::PATCH,
            env.tenant_url(&format!("/apps/{}", env.client_id)),
            Some(fed),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let sa_token = |sub: &str, aud: &str| {
        let c = json!({"iss": issuer, "sub": sub, "aud": [aud], "nbf": now(), "exp": now() + 3600});
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(&h, &c, &issuer_key.key).expect("sign")
    };
    let good = sa_token(subject, "api://AzureADTokenExchange");
    let (status, body) = env
        .token_request(&env.tenant, &assertion_form(&env.client_id, &good))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = env
        .token_request(&env.tenant, &assertion_form(&env.client_id, &good))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a projected service-account token may be exchanged repeatedly"
    );

    let (status, body) = env
        .token_request(
            &env.tenant,
            &assertion_form(
                &env.client_id,
                &sa_token(
                    "system:serviceaccount:other:sa",
                    "api://AzureADTokenExchange",
                ),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_entra_error(&body, "invalid_request", 700213);
    let (_, body) = env
        .token_request(
            &env.tenant,
            &assertion_form(&env.client_id, &sa_token(subject, "api://other")),
        )
        .await;
    assert_entra_error(&body, "invalid_request", 700212);

    let impostor = test_cert();
    let c = json!({"iss": issuer, "sub": subject, "aud": "api://AzureADTokenExchange", "nbf": now(), "exp": now() + 3600});
    let forged =
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &c, &impostor.key).expect("sign");
    let (status, body) = env
        .token_request(&env.tenant, &assertion_form(&env.client_id, &forged))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_entra_error(&body, "invalid_client", 700027);
}

fn assert_graph_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string());
    assert!(
        body["error"]["innerError"]["request-id"].is_string(),
        "{body}"
    );
    assert!(body["error"]["innerError"]["date"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn graph_answers_401_without_a_bearer_and_after_expiry() {
    let env = env(ALL_READ).await;
    let resp = env
        .http
        .get(env.graph("/v1.0/users"))
        .send()
        .await
        .expect("call");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get("www-authenticate").is_some());
    assert!(resp.headers().get("request-id").is_some());
    assert_graph_error(
        &resp.json().await.expect("json"),
        "InvalidAuthenticationToken",
    );

    let token = env.token().await;
    assert_eq!(
        env.get(&token, "/v1.0/users").await.status(),
        StatusCode::OK
    );
    env.advance_clock(3600).await;
    let resp = env.get(&token, "/v1.0/users").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("expired")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_of_another_simulator_or_a_deleted_tenant_are_401() {
    let a = env(ALL_READ).await;
    let b = env(ALL_READ).await;
    let foreign = b.token().await;
    assert_eq!(
        a.get(&foreign, "/v1.0/users").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let own = a.token().await;
    let (status, _) = a
        .control(
            Method::DELETE,
            a.control_url(&format!("/tenants/{}", a.tenant)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        a.get(&own, "/v1.0/users").await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_without_the_permission_gets_403() {
    let env = env(&["Group.Read.All"]).await;
    let token = env.token().await;
    let resp = env.get(&token, "/v1.0/users").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_graph_error(
        &resp.json().await.expect("json"),
        "Authorization_RequestDenied",
    );
    assert_eq!(
        env.get(&token, "/v1.0/groups").await.status(),
        StatusCode::OK
    );
    let resp = env
        .get(
            &token,
            "/v1.0/directoryRoles/roleTemplateId=62e90394-69f5-4237-9190-012177145e10/members",
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_jwks_endpoint_publishes_the_key_that_signs_access_tokens() {
    let env = env(ALL_READ).await;
    let jwks: Value = env
        .http
        .get(env.graph(&format!("/{}/discovery/v2.0/keys", env.tenant)))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).expect("jwk set");
    let token = env.token().await;
    let header = jsonwebtoken::decode_header(&token).expect("header");
    let jwk = set
        .find(header.kid.as_deref().expect("kid"))
        .expect("key by kid");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("decoding key");
    let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
    v.set_audience(&["https://graph.microsoft.com"]);
    jsonwebtoken::decode::<Value>(&token, &key, &v).expect("token verifies with the published key");
}
