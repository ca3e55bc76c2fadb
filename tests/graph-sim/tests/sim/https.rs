//! HTTPS and what Microsoft's SDKs call: OIDC and instance discovery, OData function and `$count` URLs,
//! links on the simulator's own origin, request-id headers (issue 5).

use graph_sim::SimConfig;
use graph_sim::tls::TlsFiles;
use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{ALL_READ, Env, env, env_with};

async fn tls_env() -> Env {
    env_with(
        SimConfig {
            workers: 1,
            tls: true,
            ..SimConfig::default()
        },
        ALL_READ,
    )
    .await
}

fn trusting(pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem).expect("CA PEM"))
        .build()
        .expect("client")
}

async fn json(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.expect("json")
}

#[tokio::test]
async fn https_serves_discovery_tokens_and_graph_with_links_on_its_own_origin() {
    let env = tls_env().await;
    let https = env.sim.https_url().expect("https url").to_owned();
    assert!(https.starts_with("https://127.0.0.1:"));
    assert!(
        env.sim.graph_url().starts_with("http://"),
        "plain HTTP stays"
    );
    let ca = std::fs::read(env.sim.ca_file().expect("ca file")).expect("CA written");
    assert_eq!(ca, env.sim.ca_pem().expect("ca pem").as_bytes());
    let client = trusting(&ca);
    let tenant = &env.tenant;

    let oidc = json(
        client
            .get(format!(
                "{https}/{tenant}/v2.0/.well-known/openid-configuration"
            ))
            .send()
            .await
            .expect("discovery"),
    )
    .await;
    assert_eq!(
        oidc["token_endpoint"],
        format!("{https}/{tenant}/oauth2/v2.0/token")
    );
    assert_eq!(oidc["issuer"], format!("{https}/{tenant}/v2.0"));
    assert!(oidc["authorization_endpoint"].is_string());
    let jwks = json(
        client
            .get(oidc["jwks_uri"].as_str().expect("jwks_uri"))
            .send()
            .await
            .expect("jwks"),
    )
    .await;
    assert_eq!(jwks["keys"][0]["kty"], "RSA");

    // MSAL sends the authority's host without its port.
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("api-version", "1.0")
        .append_pair(
            "authorization_endpoint",
            &format!("https://127.0.0.1/{tenant}/oauth2/v2.0/authorize"),
        )
        .finish();
    let instance = json(
        client
            .get(format!("{https}/common/discovery/instance?{query}"))
            .send()
            .await
            .expect("instance discovery"),
    )
    .await;
    assert_eq!(
        instance["tenant_discovery_endpoint"],
        format!("{https}/{tenant}/v2.0/.well-known/openid-configuration")
    );
    let unknown = client
        .get(format!("{https}/common/discovery/instance?authorization_endpoint=https://evil.example/t/oauth2/v2.0/authorize"))
        .send()
        .await
        .expect("instance discovery");
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);

    for name in ["Ann", "Bob", "Cid"] {
        env.create_user(name).await;
    }
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", env.client_id.as_str()),
        ("client_secret", env.secret.as_str()),
        ("scope", "https://graph.microsoft.com/.default"),
        ("client_info", "1"),
        (
            "claims",
            r#"{"access_token":{"xms_cc":{"values":["CP1"]}}}"#,
        ),
    ];
    let token = client
        .post(oidc["token_endpoint"].as_str().expect("token endpoint"))
        .header("client-request-id", "abc-123")
        .form(&form)
        .send()
        .await
        .expect("token");
    assert_eq!(token.headers()["client-request-id"], "abc-123");
    let token = json(token).await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();

    let page = client
        .get(format!("{https}/v1.0/users/delta()"))
        .bearer_auth(&token)
        .header("Prefer", "odata.maxpagesize=2")
        .header("client-request-id", "req-42")
        .send()
        .await
        .expect("delta");
    assert_eq!(page.headers()["client-request-id"], "req-42");
    assert!(page.headers().contains_key("request-id"));
    let page = json(page).await;
    assert!(
        page["@odata.context"]
            .as_str()
            .expect("context")
            .contains("$metadata#users")
    );
    let next = page["@odata.nextLink"].as_str().expect("nextLink");
    assert!(
        next.starts_with(&format!("{https}/v1.0/users/delta()?$skiptoken=")),
        "{next}"
    );
    let last = json(
        client
            .get(next)
            .bearer_auth(&token)
            .send()
            .await
            .expect("next"),
    )
    .await;
    let delta = last["@odata.deltaLink"].as_str().expect("deltaLink");
    assert!(
        delta.starts_with(&format!("{https}/v1.0/users/delta()?$deltatoken=")),
        "{delta}"
    );

    let listed = json(
        client
            .get(format!("{https}/v1.0/users?$top=2"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("list"),
    )
    .await;
    assert!(
        listed["@odata.nextLink"]
            .as_str()
            .expect("nextLink")
            .starts_with(&format!("{https}/v1.0/users?"))
    );
}

#[tokio::test]
async fn count_needs_consistency_level_eventual_and_casts_accept_the_graph_alias() {
    let env = env(ALL_READ).await;
    let token = env.token().await;
    let (a, b) = (env.create_user("Ann").await, env.create_user("Bob").await);
    let group = env.create_group("Team").await;
    env.add_member(&group, &a).await;
    env.add_member(&group, &b).await;

    let refused = env.get(&token, "/v1.0/users/$count").await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let refused: Value = refused.json().await.expect("json");
    assert_eq!(refused["error"]["code"], "Request_BadRequest");
    assert!(
        refused["error"]["message"]
            .as_str()
            .expect("message")
            .contains("$count")
    );
    let counted = env
        .http
        .get(env.graph("/v1.0/users/$count"))
        .bearer_auth(&token)
        .header("ConsistencyLevel", "eventual")
        .send()
        .await
        .expect("count");
    assert_eq!(counted.status(), StatusCode::OK);
    assert!(
        counted.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain")
    );
    assert_eq!(counted.text().await.expect("text"), "2");

    let listed: Value = env
        .http
        .get(env.graph("/v1.0/users?$count=true&$top=1"))
        .bearer_auth(&token)
        .header("ConsistencyLevel", "eventual")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["@odata.count"], 2);

    for cast in ["graph.user", "microsoft.graph.user"] {
        let users = env
            .get_json(
                &token,
                &format!("/v1.0/groups/{group}/transitiveMembers/{cast}"),
            )
            .await;
        assert_eq!(users["value"].as_array().expect("value").len(), 2, "{cast}");
    }
    let groups = env.get_json(&token, "/v1.0/groups/delta()").await;
    assert!(
        groups["@odata.deltaLink"]
            .as_str()
            .expect("deltaLink")
            .contains("/v1.0/groups/delta()?")
    );
}

#[tokio::test]
async fn given_pem_files_are_served_and_reported_as_the_ca() {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = params.self_signed(&key).expect("cert");
    let dir = std::env::temp_dir().join(format!("graph-sim-pem-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).expect("cert file");
    std::fs::write(&key_path, key.serialize_pem()).expect("key file");

    let env = env_with(
        SimConfig {
            workers: 1,
            tls: true,
            tls_files: Some(TlsFiles {
                cert_chain: cert_path,
                key: key_path,
            }),
            ca_out: Some(dir.join("ca.pem")),
            ..SimConfig::default()
        },
        ALL_READ,
    )
    .await;
    assert_eq!(env.sim.ca_file(), Some(dir.join("ca.pem").as_path()));
    let client = trusting(cert.pem().as_bytes());
    let https = env.sim.https_url().expect("https");
    let keys = client
        .get(format!("{https}/{}/discovery/v2.0/keys", env.tenant))
        .send()
        .await
        .expect("served with the given certificate");
    assert_eq!(keys.status(), StatusCode::OK);
    let _ = std::fs::remove_dir_all(dir);
}
