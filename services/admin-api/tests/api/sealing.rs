//! Rotating the key that seals Graph credentials: the old key keeps opening what it sealed, a
//! re-seal moves every connection to the new key, a connection no key opens is named and left
//! alone, and only an admin of every tenant may do it. On a database of its own: a re-seal
//! touches every connection.

use crate::support::{Issuer, settings_for, spawn};
use admin_api::Settings;
use base64::Engine as _;
use cardsync_config::Sources;
use cardsync_store::connections::{self, Connection, CredentialKind, Keyring, SealingKey};
use cardsync_testkit::FreshDatabase;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

fn random_key() -> SecretString {
    let bytes = [*Uuid::new_v4().as_bytes(), *Uuid::new_v4().as_bytes()].concat();
    SecretString::from(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn ring(id: &str, key: &SecretString) -> Keyring {
    Keyring::single(id, SealingKey::from_base64(key).expect("a valid key"))
}

async fn key_ids(pool: &PgPool) -> Vec<(Uuid, Option<String>)> {
    sqlx::query_as("SELECT tenant_id, credential_key_id FROM tenant_connections ORDER BY tenant_id")
        .fetch_all(pool)
        .await
        .expect("connections")
}

async fn credential(pool: &PgPool, keys: &Keyring, tenant: Uuid) -> String {
    connections::get(pool, keys, tenant)
        .await
        .expect("the connection opens")
        .expect("there is a connection")
        .credential
        .expose_secret()
        .to_owned()
}

#[tokio::test]
async fn a_key_rotation_reseals_every_connection_and_names_those_no_key_opens() {
    let database = FreshDatabase::create().await;
    let pool = database.pool().await;
    cardsync_store::migrate(&pool).await.expect("migrations");
    let issuer = Issuer::start().await;
    let directory = issuer.directory(1).await;
    let (old_key, new_key, lost_key) = (random_key(), random_key(), random_key());

    // Before the rotation: "2026-06" seals.
    let mut before = settings_for(&issuer, &[&directory]);
    before.postgres.url = SecretString::from(database.url.clone());
    before.secrets.development = false;
    before.secrets.credential_key = Some(old_key.clone());
    before.secrets.credential_key_id = "2026-06".into();
    let api = spawn(before.clone()).await;
    let admin = issuer.token(&directory, &directory.admin).await;
    let tenants: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    for (n, tenant) in tenants.iter().enumerate() {
        api.create_tenant(&admin, *tenant, &format!("T{n}")).await;
    }
    for (n, tenant) in tenants[..2].iter().enumerate() {
        api.put(
            &format!("/v1/tenants/{tenant}/connection"),
            &admin,
            json!({"client_id": "app", "kind": "secret", "credential": format!("secret-{n}")}),
        )
        .await
        .expect(200);
    }
    // One sealed before key ids were stored, one under a key nobody holds any more.
    let legacy = Connection {
        tenant_id: tenants[2],
        client_id: "app".into(),
        kind: CredentialKind::Secret,
        credential: SecretString::from("secret-2"),
    };
    connections::put(&pool, &ring("2026-06", &old_key), &legacy)
        .await
        .expect("put");
    sqlx::query("UPDATE tenant_connections SET credential_key_id = NULL WHERE tenant_id = $1")
        .bind(tenants[2])
        .execute(&pool)
        .await
        .expect("legacy row");
    let lost = Connection {
        tenant_id: tenants[3],
        credential: SecretString::from("secret-3"),
        ..legacy.clone()
    };
    connections::put(&pool, &ring("2025-01", &lost_key), &lost)
        .await
        .expect("put");
    drop(api);

    // The rotation: "2026-12" is current, "2026-06" still opens.
    let mut after = before;
    after.secrets.credential_key = Some(new_key.clone());
    after.secrets.credential_key_id = "2026-12".into();
    after
        .secrets
        .previous_credential_keys
        .insert("2026-06".into(), old_key.clone());
    let api = spawn(after).await;
    let status = api.get("/v1/sealing-key", &admin).await.expect(200);
    assert_eq!(status["current_key_id"], "2026-12");
    assert_eq!(status["configured_key_ids"], json!(["2026-12", "2026-06"]));
    assert_eq!(status["not_current"], 4);
    assert_eq!(
        status["usage"],
        json!([
            {"key_id": null, "connections": 1, "configured": false},
            {"key_id": "2025-01", "connections": 1, "configured": false},
            {"key_id": "2026-06", "connections": 2, "configured": true},
        ])
    );
    let text = status.to_string();
    for key in [&old_key, &new_key, &lost_key] {
        assert!(!text.contains(key.expose_secret()));
    }

    let report = api
        .post("/v1/sealing-key/reseal", &admin, json!(null))
        .await
        .expect(200);
    assert_eq!(report["resealed"], 3, "{report}");
    assert_eq!(report["unopenable"], json!([tenants[3]]), "{report}");
    assert_eq!(report["status"]["not_current"], 1, "{report}");
    let ids = key_ids(&pool).await;
    for (tenant, key_id) in &ids {
        let expected = if *tenant == tenants[3] {
            "2025-01"
        } else {
            "2026-12"
        };
        assert_eq!(key_id.as_deref(), Some(expected), "{ids:?}");
    }
    // The new key alone opens every re-sealed credential, unchanged.
    let new_only = ring("2026-12", &new_key);
    for (n, tenant) in tenants[..3].iter().enumerate() {
        assert_eq!(
            credential(&pool, &new_only, *tenant).await,
            format!("secret-{n}")
        );
    }
    // A second re-seal has nothing left it can do.
    let again = api
        .post("/v1/sealing-key/reseal", &admin, json!(null))
        .await
        .expect(200);
    assert_eq!(again["resealed"], 0);
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM admin_audit WHERE action = 'sealing_key.reseal'")
            .fetch_one(&pool)
            .await
            .expect("audit");
    assert_eq!(audited, 2);

    // A reader may not re-seal; an admin limited to its tenant may not even look.
    let reader = issuer.token(&directory, &directory.reader).await;
    api.post("/v1/sealing-key/reseal", &reader, json!(null))
        .await
        .assert_problem(403, "admin-role-required");
    drop(api);
    let mut limited = settings_for(&issuer, &[&directory]);
    limited.postgres.url = SecretString::from(database.url.clone());
    limited.auth.tenant_claim = Some("tid".into());
    let api = spawn(limited).await;
    api.get("/v1/sealing-key", &admin)
        .await
        .assert_problem(403, "all-tenants-required");
    drop(api);
    pool.close().await;
    database.drop_database().await;
}

#[test]
fn the_admin_api_refuses_to_start_without_a_key_or_with_the_public_one_outside_development() {
    let missing = Settings::load(&Sources::embedded_only()).expect_err("no key");
    assert!(
        missing
            .problems
            .iter()
            .any(|p| p.starts_with("secrets.credential_key: required")),
        "{missing}"
    );
    let public = Settings::load(&Sources {
        file: None,
        env: Some(vec![(
            "CARDSYNC__SECRETS__CREDENTIAL_KEY".into(),
            "Y2FyZHN5bmMtZGV2ZWxvcG1lbnQta2V5LTMyYnl0ZXM=".into(),
        )]),
    })
    .expect_err("the public key");
    assert!(
        public
            .problems
            .iter()
            .any(|p| p.contains("development key")),
        "{public}"
    );
    assert!(Settings::load(&Sources::development()).is_ok());

    // The chart passes a rotation's keys as environment variables, the old ones as one map.
    let (current, old) = (random_key(), random_key());
    let rotated = Settings::load(&Sources {
        file: None,
        env: Some(vec![
            (
                "CARDSYNC__SECRETS__CREDENTIAL_KEY".into(),
                current.expose_secret().into(),
            ),
            (
                "CARDSYNC__SECRETS__CREDENTIAL_KEY_ID".into(),
                "2026-12".into(),
            ),
            (
                "CARDSYNC__SECRETS__PREVIOUS_CREDENTIAL_KEYS".into(),
                format!("{{2026-06=\"{}\"}}", old.expose_secret()),
            ),
        ]),
    })
    .expect("a rotation's settings");
    let keys = rotated.secrets.keyring().expect("the keyring");
    assert_eq!(keys.ids().collect::<Vec<_>>(), ["2026-12", "2026-06"]);
}
