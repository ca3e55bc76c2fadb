//! The `cardsync-admin` binary as an operator runs it: its output, its exit codes and the rows
//! it leaves, against a real PostgreSQL.

use cardsync_testkit::FreshDatabase;
use std::process::{Command, Output};
use uuid::Uuid;

fn admin(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cardsync-admin"))
        .args(args)
        .env_remove("CARDSYNC_CONFIG")
        .env("CARDSYNC__POSTGRES__URL", database_url)
        .envs(env.iter().copied())
        .output()
        .expect("cardsync-admin runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn migrate_brings_a_fresh_database_to_the_schema_the_services_need() {
    let database = FreshDatabase::create().await;
    let output = admin(&database.url, &["migrate"], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let pool = database.pool().await;
    let version = cardsync_store::schema_version(&pool).await.expect("reads");
    assert!(version.current, "{version:?}");
    assert!(
        text(&output.stdout).contains(&format!("version {}", version.required)),
        "{}",
        text(&output.stdout)
    );
    pool.close().await;
    database.drop_database().await;
}

#[tokio::test]
async fn a_tenant_put_is_shown_back_as_json() {
    let database = FreshDatabase::create().await;
    let tenant = Uuid::new_v4().to_string();
    let put = admin(
        &database.url,
        &[
            "tenant",
            "put",
            "--id",
            &tenant,
            "--name",
            "Contoso",
            "--invites",
        ],
        &[],
    );
    assert!(put.status.success(), "{}", text(&put.stderr));
    let show = admin(&database.url, &["tenant", "show", "--id", &tenant], &[]);
    assert!(show.status.success(), "{}", text(&show.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).expect("json");
    assert_eq!(shown["id"], tenant);
    assert_eq!(shown["name"], "Contoso");
    assert_eq!(shown["invites_enabled"], true);
    assert_eq!(shown["admin_roles_enabled"], false);

    let missing = admin(
        &database.url,
        &["tenant", "show", "--id", &Uuid::new_v4().to_string()],
        &[],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("is not configured"));
    database.drop_database().await;
}

#[tokio::test]
async fn a_connection_is_stored_sealed_never_in_clear() {
    let database = FreshDatabase::create().await;
    let tenant = Uuid::new_v4().to_string();
    let secret = "a-client-secret-that-must-never-be-stored-in-clear";
    let put = admin(
        &database.url,
        &[
            "put-connection",
            "--tenant",
            &tenant,
            "--client-id",
            "11111111-2222-3333-4444-555555555555",
        ],
        &[("CARDSYNC_CREDENTIAL", secret)],
    );
    assert!(put.status.success(), "{}", text(&put.stderr));
    assert!(!text(&put.stdout).contains(secret));
    let pool = database.pool().await;
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT row_to_json(c)::text FROM tenant_connections c")
            .fetch_all(&pool)
            .await
            .expect("reads");
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].contains(secret), "{}", rows[0]);
    pool.close().await;
    database.drop_database().await;
}

#[test]
fn an_invalid_configuration_exits_2_naming_the_setting_but_not_its_value() {
    let output = admin(
        "http://operator:hunter2@db.invalid/cardsync",
        &["migrate"],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("postgres.url"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
