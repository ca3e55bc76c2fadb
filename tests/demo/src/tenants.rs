//! More tenants on one pipeline: a second graph-sim tenant configured through the admin API as an
//! operator of that tenant would (card tenant, Graph connection, optionally a group scope), and
//! the wait for the subscription manager's Graph subscriptions. Tenants seeded with the same seed
//! share object ids and email addresses, as two tenants of one company's mergers do: whatever
//! keys the pipeline by id or address alone would mix them up.

use crate::operator::Operator;
use crate::pipeline::{Pipeline, section};
use crate::procs::Children;
use anyhow::{Context as _, bail};
use graph_sim::control_client::CARDSYNC_PERMISSIONS;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A tenant to add to a running pipeline.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// Users graph-sim seeds it with.
    pub users: usize,
    /// Seed of its directory: the pipeline's own seed gives it the first tenant's ids and emails.
    pub seed: u64,
    /// Display names of the groups whose (transitive) members alone get cards; empty: everyone.
    pub scope_groups: Vec<String>,
}

impl Pipeline {
    /// Creates, seeds and configures another tenant, waits for its Graph subscriptions and adds
    /// it to [`Pipeline::tenants`]. Its initial sync is left to the caller.
    pub async fn add_tenant(&mut self, new: &NewTenant) -> anyhow::Result<Uuid> {
        section("another tenant");
        let tenant_text = self.control.create_tenant().await?;
        let tenant = Uuid::parse_str(&tenant_text).context("graph-sim tenant id")?;
        let seeded = self.control.seed(&tenant_text, new.users, new.seed).await?;
        let app = self
            .control
            .create_secret_app(&tenant_text, CARDSYNC_PERMISSIONS)
            .await?;
        let secret = app.secret.clone().context("graph-sim returned no secret")?;
        let operator = Operator::sign_in(
            &self.control,
            &self.graph_plain_url,
            &tenant_text,
            self.admin_url.clone(),
        )
        .await?;
        let name = format!(
            "{} {} #{}",
            self.config.label,
            self.config.run_id,
            self.tenants.len() + 1
        );
        let binaries = self.binaries.clone();
        let cli = |args: &[&str], env: &[(&str, &str)]| -> anyhow::Result<()> {
            println!("{}", operator.cli(&binaries, args, env)?);
            Ok(())
        };
        cli(
            &["tenant", "create", "--id", &tenant_text, "--name", &name],
            &[],
        )?;
        if let Some(args) = rail_args(&tenant_text, self.config.rail) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&args, &[])?;
        }
        cli(
            &[
                "connection",
                "put",
                "--tenant",
                &tenant_text,
                "--client-id",
                &app.client_id,
                "--kind",
                "secret",
            ],
            &[("CARDSYNC_CREDENTIAL", &secret)],
        )?;
        if !new.scope_groups.is_empty() {
            let mut args = vec!["scope", "set", "--tenant", &tenant_text];
            let mut ids = Vec::new();
            for group in &new.scope_groups {
                let id = seeded["summary"]["groupIds"][group]
                    .as_str()
                    .with_context(|| format!("graph-sim seeded no group {group:?}"))?;
                ids.push(id.to_owned());
            }
            for id in &ids {
                args.extend(["--group", id.as_str()]);
            }
            cli(&args, &[])?;
        }
        let mut resources = vec!["/users"];
        if !new.scope_groups.is_empty() {
            resources.push("/groups");
        }
        for resource in resources {
            let id = wait_subscription(&self.pool, &mut self.children, tenant, resource).await?;
            println!("subscription {id} on {resource} for tenant {tenant}");
        }
        self.tenants.push(tenant);
        Ok(tenant)
    }
}

/// Waits up to 60 s until the subscription manager holds an active Graph subscription of
/// `tenant` on `resource`, supervising the pipeline's children meanwhile; its id.
pub(crate) async fn wait_subscription(
    pool: &PgPool,
    children: &mut Children,
    tenant: Uuid,
    resource: &str,
) -> anyhow::Result<Uuid> {
    let started = Instant::now();
    loop {
        children.supervise()?;
        let active: Option<Uuid> = sqlx::query_scalar(
            "SELECT subscription_id FROM subscription_slots
              WHERE tenant_id = $1 AND resource = $2 AND state = 'active'",
        )
        .bind(tenant)
        .bind(resource)
        .fetch_optional(pool)
        .await
        .context("reading the subscription registry")?
        .flatten();
        if let Some(id) = active {
            return Ok(id);
        }
        if started.elapsed() > Duration::from_secs(60) {
            let error: Option<String> = sqlx::query_scalar(
                "SELECT last_error FROM subscription_slots WHERE tenant_id = $1 AND resource = $2",
            )
            .bind(tenant)
            .bind(resource)
            .fetch_optional(pool)
            .await?
            .flatten();
            bail!(
                "the subscription manager created no subscription on {resource} in 60 s (last error: {error:?})"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `cardsync` arguments that give `tenant` the safety rail `rail`, if any.
pub(crate) fn rail_args(tenant: &str, rail: Option<(f32, f32, i32)>) -> Option<Vec<String>> {
    let (removal, update, minimum) = rail?;
    Some(
        [
            "tenant",
            "safety",
            tenant,
            "--removal-percent",
            &removal.to_string(),
            "--update-percent",
            &update.to_string(),
            "--minimum",
            &minimum.to_string(),
        ]
        .map(str::to_owned)
        .to_vec(),
    )
}
