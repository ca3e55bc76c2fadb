//! Offboarding: every row and Redis key of the tenant goes, another tenant keeps everything, the
//! connection waits (disconnect requested) for the subscription manager to delete the Graph
//! subscriptions, and only the record of the offboarding stays in the admin audit.

use crate::support::{Fixture, Issuer, settings_for, spawn};
use cardsync_testkit::{redis_url, unique_prefix};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// A row in every table a tenant has rows in (besides those the API itself wrote).
async fn seed_rows(pool: &PgPool, tenant: Uuid) {
    let card = Uuid::new_v4();
    let run = Uuid::new_v4();
    let statements = [
        "INSERT INTO cards (tenant_id, card_id) VALUES ($1, $2)",
        "INSERT INTO teams (tenant_id, group_id) VALUES ($1, 'g1')",
        "INSERT INTO card_teams (tenant_id, card_id, group_id) VALUES ($1, $2, 'g1')",
        "INSERT INTO audit_log (tenant_id, card_id, cause, action) VALUES ($1, $2, 'admin', 'created')",
        "INSERT INTO outbox (tenant_id, message_id, exchange, routing_key, message_type, payload)
         VALUES ($1, $2, 'x', 'k', 't', '\\x00')",
        "INSERT INTO directory_users (tenant_id, user_id, data, presence, in_scope, version, observed_at)
         VALUES ($1, 'u1', '{}', 'present', true, 1, now())",
        "INSERT INTO directory_groups (tenant_id, group_id) VALUES ($1, 'g1')",
        "INSERT INTO tenant_sync_state (tenant_id) VALUES ($1)",
        "INSERT INTO tenant_scopes (tenant_id, group_ids) VALUES ($1, ARRAY['g1'])",
        "INSERT INTO sync_schedules (tenant_id, cadence, updated_by) VALUES ($1, 'daily', 'test')",
        "INSERT INTO subscription_slots (tenant_id, resource, state, subscription_id)
         VALUES ($1, '/users', 'active', $2)",
        "INSERT INTO subscriptions (subscription_id, tenant_id, resource, client_state_sha256, expires_at)
         VALUES ($2, $1, '/users', sha256('x'), now())",
        // Registered by hand: no slot holds it.
        "INSERT INTO subscriptions (subscription_id, tenant_id, resource, client_state_sha256, expires_at)
         VALUES (gen_random_uuid(), $1, '/groups', sha256('y'), now())",
    ];
    for statement in statements {
        sqlx::query(statement)
            .bind(tenant)
            .bind(card)
            .execute(pool)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
    sqlx::query(
        "INSERT INTO sync_runs (tenant_id, run_id, kind, cause, started_by) VALUES ($1, $2, 'sync', 'manual', 'test')",
    )
    .bind(tenant)
    .bind(run)
    .execute(pool)
    .await
    .expect("run");
    sqlx::query("INSERT INTO sync_run_counts (run_id, name, count) VALUES ($1, 'created', 1)")
        .bind(run)
        .execute(pool)
        .await
        .expect("run counts");
    // A run's digest bookkeeping (gone with the run) and a daily-digest mark (the tenant's own).
    let digests = [
        "INSERT INTO sync_run_people (run_id, direction, user_id, change, card_id)
         VALUES ($2, 'added', 'u1', 'created', gen_random_uuid())",
        "INSERT INTO sync_run_failed_commands (run_id, message_key, reason)
         VALUES ($2, 'm1', 'invalid_command')",
        "INSERT INTO live_digests (tenant_id, day) VALUES ($1, current_date)",
    ];
    for statement in digests {
        sqlx::query(statement)
            .bind(tenant)
            .bind(run)
            .execute(pool)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
    // The safety rail's: the tenant paused by a held run whose plan keeps a command, and a
    // request parked behind it.
    let rail = [
        "INSERT INTO tenant_safety (tenant_id, paused_at, paused_by_run) VALUES ($1, now(), $2)",
        "INSERT INTO held_plans (run_id, tenant_id, lane, summary) VALUES ($2, $1, 'bulk', '{}')",
        "INSERT INTO held_commands (run_id, seq, user_id, version, action, command)
         VALUES ($2, 1, 'u1', 1, 'upsert', '\\x00')",
        "INSERT INTO parked_requests (run_id, tenant_id, worker, request)
         VALUES (gen_random_uuid(), $1, 'delta', '\\x00')",
    ];
    for statement in rail {
        sqlx::query(statement)
            .bind(tenant)
            .bind(run)
            .execute(pool)
            .await
            .unwrap_or_else(|error| panic!("{statement}: {error}"));
    }
}

/// The tables this build's migrations create that have a `tenant_id` column (the shared test
/// database may hold other branches' tables too; they are not this build's to offboard).
async fn tenant_tables(pool: &PgPool) -> Vec<String> {
    let created: std::collections::BTreeSet<String> = cardsync_store::MIGRATOR
        .iter()
        .flat_map(|migration| {
            migration
                .sql
                .as_str()
                .split("CREATE TABLE ")
                .skip(1)
                .filter_map(|rest| {
                    let rest = rest.trim_start();
                    let rest = rest.strip_prefix("IF NOT EXISTS ").unwrap_or(rest);
                    rest.split_whitespace().next().map(str::to_owned)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let with_column: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.columns
          WHERE table_schema = current_schema() AND column_name = 'tenant_id'
          ORDER BY table_name",
    )
    .fetch_all(pool)
    .await
    .expect("catalogue");
    with_column
        .into_iter()
        .filter(|table| created.contains(table))
        .collect()
}

/// Rows of `tenant` per table with a `tenant_id` column, plus its runs' counts.
async fn rows_of(pool: &PgPool, tenant: Uuid) -> Vec<(String, i64)> {
    let mut rows = Vec::new();
    for table in tenant_tables(pool).await {
        // The names come from the catalogue, quoted as identifiers.
        let sql = format!("SELECT count(*) FROM \"{table}\" WHERE tenant_id = $1");
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .fetch_one(pool)
            .await
            .expect("count");
        rows.push((table, count));
    }
    let counts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sync_run_counts c JOIN sync_runs r USING (run_id) WHERE r.tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .expect("run counts");
    rows.push(("sync_run_counts".into(), counts));
    for child in ["sync_run_people", "sync_run_failed_commands"] {
        let sql = format!(
            "SELECT count(*) FROM {child} c JOIN sync_runs r USING (run_id) WHERE r.tenant_id = $1"
        );
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .fetch_one(pool)
            .await
            .expect("run children");
        rows.push((child.into(), count));
    }
    rows
}

fn nonzero(rows: &[(String, i64)]) -> Vec<&str> {
    rows.iter()
        .filter(|(_, count)| *count > 0)
        .map(|(table, _)| table.as_str())
        .collect()
}

/// A tenant's Redis keys as each service writes them (delta link, lease, fence, dedup mark).
fn keys_of(prefix: &str, tenant: Uuid) -> Vec<String> {
    vec![
        format!("{prefix}:{{{tenant}}}:users_link"),
        format!("{prefix}:{{{tenant}}}:lease"),
        format!("{prefix}:{{{tenant}}}:fence"),
        format!("{prefix}:{{{tenant}}}:cmd:message-1"),
    ]
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis must run on 127.0.0.1:6379: run `make services`")
}

async fn existing(keys: &[String]) -> usize {
    let mut redis = redis().await;
    let mut found = 0;
    for key in keys {
        let there: bool = redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut redis)
            .await
            .expect("exists");
        found += usize::from(there);
    }
    found
}

#[tokio::test]
async fn offboarding_deletes_every_row_and_redis_key_of_the_tenant_and_spares_another() {
    let issuer = Issuer::start().await;
    let directory = issuer.directory(1).await;
    let mut settings = settings_for(&issuer, &[&directory]);
    let prefix = unique_prefix("tadmr");
    settings.redis.key_prefix = prefix.clone();
    let api = spawn(settings).await;
    let admin = issuer.token(&directory, &directory.admin).await;
    let (gone, kept) = (Uuid::new_v4(), Uuid::new_v4());
    for tenant in [gone, kept] {
        api.create_tenant(&admin, tenant, "Contoso").await;
        api.put(
            &format!("/v1/tenants/{tenant}/connection"),
            &admin,
            json!({"client_id": "app-1", "kind": "secret", "credential": "a-secret"}),
        )
        .await
        .expect(200);
        seed_rows(&api.pool, tenant).await;
        let mut redis = redis().await;
        for key in keys_of(&prefix, tenant) {
            let () = redis::cmd("SET")
                .arg(&key)
                .arg("1")
                .query_async(&mut redis)
                .await
                .expect("set");
        }
    }
    // Offboarding knows every table of the schema that holds tenant rows: a table added
    // without joining `TENANT_TABLES` fails here.
    let known: Vec<&str> = cardsync_store::offboarding::TENANT_TABLES
        .iter()
        .map(|(table, _)| *table)
        .chain(
            cardsync_store::offboarding::LEFT_TO_THE_MANAGER
                .iter()
                .copied(),
        )
        .collect();
    for table in tenant_tables(&api.pool).await {
        assert!(
            known.contains(&table.as_str()),
            "offboarding forgets {table}"
        );
    }
    let before = rows_of(&api.pool, gone).await;
    assert_eq!(
        nonzero(&before).len(),
        before.len(),
        "every table has rows of the tenant: {before:?}"
    );

    let report = api
        .post(
            &format!("/v1/tenants/{gone}/offboard"),
            &admin,
            json!({"confirm": gone.to_string()}),
        )
        .await
        .expect(200);
    assert_eq!(report["redis_keys"], 4, "{report}");
    assert_eq!(report["rows"]["cards"], 1, "{report}");
    assert_eq!(report["subscriptions_pending"], true, "{report}");
    assert_eq!(report["unslotted_subscriptions"], 1, "{report}");

    // Left: the connection (its disconnect requested) and the slot with its registry row,
    // which the subscription manager deletes once the Graph subscription is gone; and the
    // record of the offboarding.
    let after = rows_of(&api.pool, gone).await;
    assert_eq!(
        nonzero(&after),
        [
            "admin_audit",
            "subscription_slots",
            "subscriptions",
            "tenant_connections"
        ],
        "{after:?}"
    );
    let requested: bool = sqlx::query_scalar(
        "SELECT disconnect_requested_at IS NOT NULL FROM tenant_connections WHERE tenant_id = $1",
    )
    .bind(gone)
    .fetch_one(&api.pool)
    .await
    .expect("connection");
    assert!(
        requested,
        "the manager is asked to delete the subscriptions"
    );
    let wanted = cardsync_store::subscription_slots::wanted(&api.pool)
        .await
        .expect("wanted");
    assert!(wanted.iter().all(|w| w.tenant_id != gone));
    assert!(wanted.iter().any(|w| w.tenant_id == kept));
    let audit: Vec<String> =
        sqlx::query_scalar("SELECT action FROM admin_audit WHERE tenant_id = $1")
            .bind(gone)
            .fetch_all(&api.pool)
            .await
            .expect("audit");
    assert_eq!(audit, ["tenant.offboard"]);
    assert_eq!(existing(&keys_of(&prefix, gone)).await, 0);

    // The other tenant keeps every row and key.
    assert_eq!(rows_of(&api.pool, kept).await, before);
    assert_eq!(existing(&keys_of(&prefix, kept)).await, 4);
    api.get(&format!("/v1/tenants/{gone}"), &admin)
        .await
        .assert_problem(404, "unknown-tenant");
    api.get(&format!("/v1/tenants/{kept}"), &admin)
        .await
        .expect(200);
}

#[tokio::test]
async fn an_offboarding_needs_the_tenant_id_confirmed_an_existing_tenant_and_an_all_tenants_admin()
{
    let fixture = Fixture::start().await;
    let (api, admin) = (&fixture.api, &fixture.admin);
    let tenant = fixture.directory.uuid();
    let path = format!("/v1/tenants/{tenant}/offboard");
    api.post(&path, admin, json!({"confirm": tenant.to_string()}))
        .await
        .assert_problem(404, "unknown-tenant");
    api.create_tenant(admin, tenant, "Contoso").await;
    api.post(&path, admin, json!({"confirm": Uuid::new_v4().to_string()}))
        .await
        .assert_problem(422, "confirmation-mismatch");
    api.post(&path, admin, json!({}))
        .await
        .assert_problem(422, "invalid-body");
    api.post(
        &path,
        &fixture.reader,
        json!({"confirm": tenant.to_string()}),
    )
    .await
    .assert_problem(403, "admin-role-required");

    // A tenant-limited admin (a customer's own) may not offboard even its own tenant.
    let mut settings = settings_for(&fixture.issuer, &[&fixture.directory]);
    settings.auth.tenant_claim = Some("tid".into());
    let limited = spawn(settings).await;
    limited
        .post(&path, admin, json!({"confirm": tenant.to_string()}))
        .await
        .assert_problem(403, "all-tenants-required");
    api.get(&format!("/v1/tenants/{tenant}"), admin)
        .await
        .expect(200);
}
