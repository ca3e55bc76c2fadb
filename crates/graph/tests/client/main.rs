//! The Graph client against graph-sim: tokens of every kind, delta rounds, throttling and the
//! errors callers decide on. One test binary; each test spawns its own simulator.
#![allow(
    clippy::unwrap_used,
    reason = "test set-up helpers fail the test by panicking"
)]

use cardsync_graph::{
    AssertionAlgorithm, Credential, GraphClient, GraphError, GraphSettings, PageLink,
    TenantConnection, delta_start_url,
};
use graph_sim::control_client::{CARDSYNC_PERMISSIONS, Control};
use graph_sim::{RunningSim, SimConfig};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

struct Env {
    _sim: RunningSim,
    control: Control,
    graph: GraphClient,
    tenant: String,
    connection: TenantConnection,
}

fn settings_for(sim: &RunningSim) -> GraphSettings {
    let mut settings = GraphSettings::for_endpoints(
        url::Url::parse(sim.graph_url()).unwrap(),
        url::Url::parse(sim.graph_url()).unwrap(),
    );
    settings.backoff_base = Duration::from_millis(20);
    settings.backoff_cap = Duration::from_millis(500);
    settings.request_timeout = Duration::from_secs(10);
    settings
}

async fn env() -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = graph_sim::spawn(SimConfig {
        workers: 1,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let control = Control::new(sim.control_url());
    let tenant = control.create_tenant().await.unwrap();
    let app = control
        .create_secret_app(&tenant, CARDSYNC_PERMISSIONS)
        .await
        .unwrap();
    let connection = TenantConnection {
        tenant_id: tenant.clone(),
        client_id: app.client_id,
        credential: Credential::Secret(SecretString::from(app.secret.unwrap())),
    };
    let graph = GraphClient::new(settings_for(&sim)).unwrap();
    Env {
        _sim: sim,
        control,
        graph,
        tenant,
        connection,
    }
}

/// Runs a whole delta round from `url`; returns the items and the deltaLink.
async fn round(env: &Env, url: &str, minimal: bool) -> (Vec<Value>, String, usize) {
    let mut items = Vec::new();
    let mut next = url.to_owned();
    let mut pages = 0;
    loop {
        let page = env
            .graph
            .delta_page(&env.connection, &next, minimal)
            .await
            .unwrap();
        pages += 1;
        items.extend(page.items);
        match page.link {
            PageLink::Next(link) => next = link,
            PageLink::Done(link) => return (items, link, pages),
        }
    }
}

fn ids(items: &[Value]) -> BTreeSet<String> {
    items
        .iter()
        .filter_map(|i| i["id"].as_str())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_full_round_then_an_incremental_round_returns_exactly_the_changes() {
    let env = env().await;
    env.control.seed(&env.tenant, 250, 7).await.unwrap();
    let start = delta_start_url(
        &env.graph.settings().graph_url,
        "users",
        &["id", "displayName", "jobTitle", "accountEnabled"],
    );
    let (items, delta_link, pages) = round(&env, &start, false).await;
    assert_eq!(ids(&items).len(), 250);
    assert!(
        pages >= 3,
        "the default page size splits 250 users over several pages ({pages})"
    );

    let users: Vec<String> = ids(&items).into_iter().collect();
    env.control
        .update_user(
            &env.tenant,
            &users[0],
            json!({"jobTitle": "Chief Delta Officer"}),
        )
        .await
        .unwrap();
    env.control
        .delete_user(&env.tenant, &users[1], false)
        .await
        .unwrap();
    env.control
        .delete_user(&env.tenant, &users[2], true)
        .await
        .unwrap();
    let created = env
        .control
        .create_user(
            &env.tenant,
            json!({"displayName": "Zoë Ångström", "userPrincipalName": "zoe@example.test"}),
        )
        .await
        .unwrap();
    let created_id = created["user"]["id"]
        .as_str()
        .or(created["id"].as_str())
        .unwrap()
        .to_owned();

    let (changes, _, _) = round(&env, &delta_link, true).await;
    let changed: BTreeSet<String> = ids(&changes);
    let expected: BTreeSet<String> = [
        users[0].clone(),
        users[1].clone(),
        users[2].clone(),
        created_id.clone(),
    ]
    .into_iter()
    .collect();
    assert_eq!(changed, expected);
    let by_id = |id: &str| changes.iter().find(|c| c["id"] == id).unwrap().clone();
    assert_eq!(by_id(&users[0])["jobTitle"], "Chief Delta Officer");
    assert_eq!(by_id(&users[1])["@removed"]["reason"], "changed");
    assert_eq!(by_id(&users[2])["@removed"]["reason"], "deleted");
    assert_eq!(by_id(&created_id)["displayName"], "Zoë Ångström");
}

#[tokio::test]
async fn a_certificate_assertion_gets_a_token_with_either_algorithm() {
    let env = env().await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let certificate = rcgen::CertificateParams::new(vec!["cardsync".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let app = env
        .control
        .create_app(
            &env.tenant,
            json!({"certificates": [certificate.pem()], "permissions": CARDSYNC_PERMISSIONS}),
        )
        .await
        .unwrap();
    // One PEM bundle holding certificate and key, as operators store it, works as both.
    let bundle = format!("{}{}", certificate.pem(), key.serialize_pem());
    for (algorithm, certificate_pem, private_key_pem) in [
        (
            AssertionAlgorithm::Ps256,
            certificate.pem(),
            key.serialize_pem(),
        ),
        (
            AssertionAlgorithm::Rs256,
            certificate.pem(),
            key.serialize_pem(),
        ),
        (AssertionAlgorithm::Ps256, bundle.clone(), bundle.clone()),
    ] {
        let connection = TenantConnection {
            tenant_id: env.tenant.clone(),
            client_id: app.client_id.clone(),
            credential: Credential::Certificate {
                certificate_pem,
                private_key_pem: SecretString::from(private_key_pem),
                algorithm,
            },
        };
        // A fresh client, so the token is not taken from the cache.
        let graph = GraphClient::new(env.graph.settings().clone()).unwrap();
        let users = graph
            .get_all(
                &connection,
                &graph.url("/users?$select=id"),
                cardsync_graph::RequestCost::USERS,
            )
            .await;
        assert!(users.is_ok(), "{algorithm:?}: {users:?}");
    }
}

#[tokio::test]
async fn a_federated_token_file_is_read_afresh_for_every_exchange() {
    let env = env().await;
    let issuer_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let issuer_cert = rcgen::CertificateParams::new(vec!["issuer".into()])
        .unwrap()
        .self_signed(&issuer_key)
        .unwrap();
    let issuer = "https://oidc.cluster.example/issuer";
    let subject = "system:serviceaccount:cardsync:delta-worker";
    let app = env
        .control
        .create_app(
            &env.tenant,
            json!({"permissions": CARDSYNC_PERMISSIONS, "federatedCredentials": [{"issuer": issuer, "subject": subject, "keys": issuer_cert.pem()}]}),
        )
        .await
        .unwrap();
    let file = std::env::temp_dir().join(format!("cardsync-federated-{}", uuid::Uuid::new_v4()));
    let write_token = |sub: &str| {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = json!({"iss": issuer, "sub": sub, "aud": "api://AzureADTokenExchange", "iat": now, "nbf": now, "exp": now + 3600});
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_rsa_pem(issuer_key.serialize_pem().as_bytes())
                .unwrap(),
        )
        .unwrap();
        std::fs::write(&file, token).unwrap();
    };
    let connection = TenantConnection {
        tenant_id: env.tenant.clone(),
        client_id: app.client_id,
        credential: Credential::Federated {
            token_file: file.clone(),
        },
    };
    write_token("system:serviceaccount:other:intruder");
    let refused = GraphClient::new(env.graph.settings().clone())
        .unwrap()
        .check_credentials(&connection)
        .await;
    assert!(
        matches!(
            refused,
            Err(GraphError::Token(
                cardsync_graph::TokenError::Refused { .. }
            ))
        ),
        "{refused:?}"
    );
    // kubelet rotated the file: the next exchange must use the new content.
    write_token(subject);
    let accepted = GraphClient::new(env.graph.settings().clone())
        .unwrap()
        .check_credentials(&connection)
        .await;
    assert!(accepted.is_ok(), "{accepted:?}");
    let _ = std::fs::remove_file(file);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_with_entras_error() {
    let env = env().await;
    let connection = TenantConnection {
        credential: Credential::Secret(SecretString::from("wrong")),
        ..env.connection.clone()
    };
    match env.graph.check_credentials(&connection).await {
        Err(GraphError::Token(cardsync_graph::TokenError::Refused { error, codes })) => {
            assert_eq!(error, "invalid_client");
            assert!(!codes.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn throttling_with_fractional_and_missing_retry_after_is_retried_until_it_passes() {
    let env = env().await;
    env.control.seed(&env.tenant, 5, 1).await.unwrap();
    env.control
        .set_faults(json!([
            {"endpoint": "users.delta", "kind": "throttle", "remaining": 2, "retryAfter": "0.128"},
            {"endpoint": "users.delta", "kind": "throttle", "remaining": 2},
            {"endpoint": "users.delta", "kind": "unavailable", "remaining": 1, "retryAfter": "0"}
        ]))
        .await
        .unwrap();
    let start = env.graph.url("/users/delta?$select=id,displayName");
    let started = std::time::Instant::now();
    let (items, _, _) = round(&env, &start, false).await;
    assert_eq!(ids(&items).len(), 5);
    assert!(
        started.elapsed() >= Duration::from_millis(256),
        "the fractional Retry-After was honoured"
    );
    // Every injected failure was consumed, i.e. really answered and retried.
    let faults = env
        .control
        .call(reqwest::Method::GET, "/faults", None)
        .await
        .unwrap();
    let left: u64 = faults
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["remaining"].as_u64())
        .sum();
    assert_eq!(left, 0, "{faults}");
}

#[tokio::test]
async fn throttling_that_never_ends_becomes_a_throttled_error() {
    let env = env().await;
    env.control
        .set_faults(json!([{"endpoint": "users.delta", "kind": "throttle", "retryAfter": "0.01"}]))
        .await
        .unwrap();
    let result = env
        .graph
        .delta_page(&env.connection, &env.graph.url("/users/delta"), false)
        .await;
    assert!(
        matches!(result, Err(GraphError::Throttled { .. })),
        "{result:?}"
    );
    assert!(result.unwrap_err().is_transient());
}

#[tokio::test]
async fn an_expired_delta_token_and_a_forced_resync_are_told_apart() {
    let env = env().await;
    env.control.seed(&env.tenant, 3, 2).await.unwrap();
    let (_, delta_link, _) = round(&env, &env.graph.url("/users/delta?$select=id"), false).await;

    env.control
        .set_delta(&env.tenant, json!({"resyncNext": 1}))
        .await
        .unwrap();
    match env
        .graph
        .delta_page(&env.connection, &delta_link, true)
        .await
    {
        Err(GraphError::ResyncRequired { location }) => {
            assert!(location.contains("delta"), "{location}")
        }
        other => panic!("{other:?}"),
    }

    env.control.advance_clock(8 * 24 * 3600).await.unwrap();
    match env
        .graph
        .delta_page(&env.connection, &delta_link, true)
        .await
    {
        Err(GraphError::DeltaTokenExpired { code }) => {
            assert!(code.eq_ignore_ascii_case("syncStateNotFound"), "{code}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_once_and_the_call_succeeds() {
    let env = env().await;
    env.control.seed(&env.tenant, 2, 3).await.unwrap();
    env.graph.check_credentials(&env.connection).await.unwrap();
    // The simulator's clock moves past the token's expiry; ours does not, so the cached token is sent and refused.
    env.control.advance_clock(2 * 3600).await.unwrap();
    let users = env
        .graph
        .get_all(
            &env.connection,
            &env.graph.url("/users?$select=id"),
            cardsync_graph::RequestCost::USERS,
        )
        .await;
    assert_eq!(users.unwrap().len(), 2);
}

#[tokio::test]
async fn photos_transitive_members_and_role_members_are_read() {
    let env = env().await;
    let user = env
        .control
        .create_user(
            &env.tenant,
            json!({"displayName": "Photo Person", "userPrincipalName": "photo@example.test"}),
        )
        .await
        .unwrap();
    let user_id = user["user"]["id"]
        .as_str()
        .or(user["id"].as_str())
        .unwrap()
        .to_owned();
    assert_eq!(
        env.graph
            .photo_meta(&env.connection, &user_id)
            .await
            .unwrap(),
        None
    );
    env.control
        .set_photo(
            &env.tenant,
            &user_id,
            vec![0x89, b'P', b'N', b'G', 1, 2, 3],
            "image/png",
        )
        .await
        .unwrap();
    let meta = env
        .graph
        .photo_meta(&env.connection, &user_id)
        .await
        .unwrap()
        .unwrap();
    assert!(meta.etag.is_some());
    let (bytes, content_type) = env
        .graph
        .photo_bytes(&env.connection, &user_id, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (bytes.as_ref(), content_type.as_str()),
        (&[0x89, b'P', b'N', b'G', 1, 2, 3][..], "image/png")
    );

    let outer = env
        .control
        .create_group(&env.tenant, json!({"displayName": "Outer"}))
        .await
        .unwrap();
    let inner = env
        .control
        .create_group(&env.tenant, json!({"displayName": "Inner"}))
        .await
        .unwrap();
    let group_id = |g: &Value| {
        g["group"]["id"]
            .as_str()
            .or(g["id"].as_str())
            .unwrap()
            .to_owned()
    };
    let (outer, inner) = (group_id(&outer), group_id(&inner));
    env.control
        .add_member(&env.tenant, &outer, &inner)
        .await
        .unwrap();
    env.control
        .add_member(&env.tenant, &inner, &user_id)
        .await
        .unwrap();
    assert_eq!(
        env.graph
            .transitive_user_ids(&env.connection, &outer)
            .await
            .unwrap(),
        vec![user_id.clone()]
    );

    let global_admin = "62e90394-69f5-4237-9190-012177145e10";
    env.control
        .assign_role(&env.tenant, global_admin, &user_id)
        .await
        .unwrap();
    assert_eq!(
        env.graph
            .role_member_ids(&env.connection, global_admin)
            .await
            .unwrap(),
        vec![user_id]
    );
}

/// A graph-sim serving HTTPS with its generated CA, and a tenant with a secret app.
async fn https_sim() -> (RunningSim, Control, TenantConnection) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = graph_sim::spawn(SimConfig {
        workers: 1,
        tls: true,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let control = Control::new(sim.control_url());
    let tenant = control.create_tenant().await.unwrap();
    let app = control
        .create_secret_app(&tenant, CARDSYNC_PERMISSIONS)
        .await
        .unwrap();
    let connection = TenantConnection {
        tenant_id: tenant,
        client_id: app.client_id,
        credential: Credential::Secret(SecretString::from(app.secret.unwrap())),
    };
    (sim, control, connection)
}

fn https_settings(sim: &RunningSim) -> GraphSettings {
    let https = url::Url::parse(sim.https_url().unwrap()).unwrap();
    let mut settings = GraphSettings::for_endpoints(https.clone(), https);
    settings.backoff_base = Duration::from_millis(20);
    settings.backoff_cap = Duration::from_millis(100);
    settings.max_attempts = 2;
    settings.request_timeout = Duration::from_secs(10);
    settings
}

#[tokio::test]
async fn graph_sim_is_reached_over_https_when_extra_ca_file_trusts_its_ca() {
    let (sim, control, connection) = https_sim().await;
    control.seed(&connection.tenant_id, 30, 3).await.unwrap();
    let mut settings = https_settings(&sim);
    settings.extra_ca_file = Some(sim.ca_file().unwrap().to_owned());
    let graph = GraphClient::new(settings).unwrap();

    graph.check_credentials(&connection).await.unwrap();
    let start = delta_start_url(&graph.settings().graph_url, "users", &["id"]);
    assert!(start.starts_with("https://"), "{start}");
    let mut next = start;
    let mut items = Vec::new();
    let delta_link = loop {
        let page = graph.delta_page(&connection, &next, false).await.unwrap();
        items.extend(page.items);
        match page.link {
            PageLink::Next(link) => next = link,
            PageLink::Done(link) => break link,
        }
    };
    assert_eq!(ids(&items).len(), 30);
    assert!(
        delta_link.starts_with(&format!("{}/v1.0/users/delta?", sim.https_url().unwrap())),
        "links stay on graph-sim's HTTPS origin: {delta_link}"
    );
}

#[tokio::test]
async fn without_its_ca_graph_sims_https_certificate_is_refused() {
    let (sim, _control, connection) = https_sim().await;
    let graph = GraphClient::new(https_settings(&sim)).unwrap();

    let err = graph.check_credentials(&connection).await.unwrap_err();
    let mut chain = vec![err.to_string()];
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        chain.push(cause.to_string());
        source = cause.source();
    }
    let chain = chain.join(": ");
    assert!(
        matches!(
            err,
            GraphError::Token(cardsync_graph::TokenError::Unavailable(_))
        ),
        "{chain}"
    );
    assert!(
        chain.to_lowercase().contains("certificate"),
        "the cause names the certificate problem: {chain}"
    );
}

#[tokio::test]
async fn every_answer_is_counted_by_status_and_throttling_by_tenant() {
    let env = env().await;
    let registry = prometheus::Registry::new();
    let metrics = cardsync_graph::GraphMetrics::register(&registry).unwrap();
    let graph = GraphClient::new(env.graph.settings().clone())
        .unwrap()
        .with_metrics(&metrics);
    let sample = |name: &str, label: &str| -> f64 {
        registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric().iter())
            .filter(|metric| metric.get_label().iter().any(|l| l.value() == label))
            .map(|metric| metric.get_counter().get_value())
            .sum()
    };
    assert_eq!(sample("cardsync_graph_requests_total", "429"), 0.0);

    graph
        .delta_page(&env.connection, &graph.url("/users/delta"), false)
        .await
        .unwrap();
    assert_eq!(sample("cardsync_graph_requests_total", "200"), 1.0);

    env.control
        .set_faults(json!([{"endpoint": "users.delta", "kind": "throttle", "retryAfter": "0.01"}]))
        .await
        .unwrap();
    let throttled = graph
        .delta_page(&env.connection, &graph.url("/users/delta"), false)
        .await;
    assert!(matches!(throttled, Err(GraphError::Throttled { .. })));
    let attempts = f64::from(graph.settings().max_attempts);
    assert_eq!(sample("cardsync_graph_requests_total", "429"), attempts);
    assert_eq!(
        sample("cardsync_graph_throttled_total", &env.tenant),
        attempts
    );
    assert_eq!(sample("cardsync_graph_requests_total", "200"), 1.0);
}
