//! The commands: each parses its arguments, makes its API calls and prints the answer.

use crate::cli::{
    CardsCommand, Cli, Command, ConnectionCommand, DeadLettersCommand, Depth, Kind, RulesCommand,
    ScheduleTarget, SchedulesCommand, ScopeCommand, SealingKeyCommand, SubscriptionCommand,
    TenantArg, TenantCommand,
};
use crate::client::{Client, ClientError};
use crate::exit;
use crate::output::{Format, dry_run_table, render};
use clap::CommandFactory as _;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;

/// Percent-encodes one path segment or query value (everything but RFC 3986's unreserved
/// characters).
pub(crate) fn enc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn read_file(path: &PathBuf) -> Result<String, ClientError> {
    std::fs::read_to_string(path)
        .map_err(|error| ClientError::Local(format!("cannot read {}: {error}", path.display())))
}

fn read_json(path: &PathBuf) -> Result<Value, ClientError> {
    serde_json::from_str(&read_file(path)?)
        .map_err(|error| ClientError::Local(format!("{} is not JSON: {error}", path.display())))
}

fn token(cli: &Cli) -> Result<Option<String>, ClientError> {
    if let Ok(token) = std::env::var("CARDSYNC_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok(Some(token.trim().to_owned()));
    }
    cli.token_file
        .as_ref()
        .map(|path| read_file(path).map(|token| token.trim().to_owned()))
        .transpose()
}

/// Runs the command; returns the exit code.
pub async fn run(cli: Cli) -> u8 {
    if let Command::Completion { shell } = &cli.command {
        clap_complete::generate(
            *shell,
            &mut Cli::command(),
            "cardsync",
            &mut std::io::stdout(),
        );
        return exit::OK;
    }
    let result = match token(&cli).and_then(|token| Client::new(&cli.server, token)) {
        Ok(client) => execute(&client, &cli.command, cli.output).await,
        Err(error) => Err(error),
    };
    match result {
        Ok((value, columns)) => {
            if !value.is_null() {
                println!("{}", render(&value, cli.output, columns));
            }
            exit::OK
        }
        Err(error) => {
            eprintln!("cardsync: {error}");
            if let ClientError::Refused { errors, .. } = &error {
                for line in errors {
                    eprintln!("  - {line}");
                }
            }
            error.exit_code()
        }
    }
}

pub(crate) type Printed = (Value, &'static [&'static str]);

const TENANT_COLUMNS: &[&str] = &[
    "id",
    "name",
    "syncing",
    "rules_version",
    "invites_enabled",
    "admin_roles_enabled",
];
const CARD_COLUMNS: &[&str] = &["id", "status", "email", "user_id", "updated_at"];
const RUN_COLUMNS: &[&str] = &[
    "id",
    "tenant_id",
    "kind",
    "status",
    "started_by",
    "target",
    "created_at",
    "finished_at",
];

const SCHEDULE_COLUMNS: &[&str] = &[
    "target",
    "cadence",
    "weekday",
    "day_of_month",
    "time",
    "time_zone",
    "paused",
    "default",
    "next_run_at",
];

/// The rules document of a file: bare rules, or the whole answer of `rules show -o json`.
fn read_rules(file: &PathBuf) -> Result<Value, ClientError> {
    let document = read_json(file)?;
    Ok(match document.get("rules") {
        Some(rules) if document.get("version").is_some() => rules.clone(),
        _ => document,
    })
}

async fn execute(
    client: &Client,
    command: &Command,
    format: Format,
) -> Result<Printed, ClientError> {
    let t = |tenant: &TenantArg| format!("/v1/tenants/{}", enc(&tenant.tenant));
    Ok(match command {
        Command::Tenant(command) => return tenant(client, command).await,
        Command::Connection(command) => return connection(client, command).await,
        Command::Scope(ScopeCommand::Show(tenant)) => {
            (client.get(&format!("{}/scope", t(tenant))).await?, &[])
        }
        Command::Scope(ScopeCommand::Set {
            tenant,
            groups,
            exclude_guests,
            condition,
            values,
        }) => {
            let mut body = json!({ "groups": groups, "exclude_guests": exclude_guests });
            if let Some(expression) = condition {
                body["condition"] = json!({ "expression": expression, "in": values });
            }
            (
                client
                    .call(Method::PUT, &format!("{}/scope", t(tenant)), Some(&body))
                    .await?,
                &[],
            )
        }
        Command::Groups { tenant, search } => (
            client
                .get(&format!("{}/groups?search={}", t(tenant), enc(search)))
                .await?,
            &["id", "display_name", "members", "description"],
        ),
        Command::ExtensionAttributes { tenant } => (
            client
                .get(&format!("{}/mapping/extension-attributes", t(tenant)))
                .await?,
            &["name", "data_type", "users_with_value", "samples"],
        ),
        Command::Rules(RulesCommand::Show(tenant)) => {
            (client.get(&format!("{}/rules", t(tenant))).await?, &[])
        }
        Command::Rules(RulesCommand::Put { tenant, file }) => {
            let rules = read_rules(file)?;
            (
                client
                    .call(Method::PUT, &format!("{}/rules", t(tenant)), Some(&rules))
                    .await?,
                &[],
            )
        }
        Command::Rules(RulesCommand::DryRun { tenant, file }) => {
            let rules = read_rules(file)?;
            let preview = client
                .call(
                    Method::POST,
                    &format!("{}/rules/dry-run", t(tenant)),
                    Some(&rules),
                )
                .await?;
            match format {
                Format::Table => (Value::String(dry_run_table(&preview)), &[]),
                Format::Json => (preview, &[]),
            }
        }
        Command::Rules(RulesCommand::Apply(tenant)) => (
            client
                .call(Method::POST, &format!("{}/rules/apply", t(tenant)), None)
                .await?,
            &[],
        ),
        Command::Rules(RulesCommand::History(tenant)) => (
            client.get(&format!("{}/rules/history", t(tenant))).await?,
            &["version", "changed_by", "changed_at"],
        ),
        Command::Cards(command) => return cards(client, command).await,
        Command::Schedules(command) => return schedules(client, command).await,
        Command::Sync { tenant, group } => {
            let body = match group {
                Some(group) => json!({ "group": group }),
                None => json!({}),
            };
            (
                client
                    .call(Method::POST, &format!("{}/sync", t(tenant)), Some(&body))
                    .await?,
                &[],
            )
        }
        Command::SyncUser {
            tenant,
            user,
            depth,
        } => {
            let depth = match depth {
                Depth::Info => "info",
                Depth::Cards => "cards",
                Depth::Full => "full",
            };
            (
                client
                    .call(
                        Method::POST,
                        &format!("{}/users/{}/sync", t(tenant), enc(user)),
                        Some(&json!({ "depth": depth })),
                    )
                    .await?,
                &[],
            )
        }
        Command::Runs {
            action: Some(action),
            ..
        } => crate::rail::runs(client, action).await?,
        Command::Runs { run: Some(run), .. } => {
            (client.get(&format!("/v1/runs/{}", enc(run))).await?, &[])
        }
        Command::Runs {
            tenant,
            run: None,
            held,
            ..
        } => {
            let mut query = Vec::new();
            if let Some(tenant) = tenant {
                query.push(format!("tenant={}", enc(tenant)));
            }
            if *held {
                query.push("status=held".to_owned());
            }
            let path = if query.is_empty() {
                "/v1/runs".to_owned()
            } else {
                format!("/v1/runs?{}", query.join("&"))
            };
            (client.get(&path).await?, RUN_COLUMNS)
        }
        Command::Subscription(SubscriptionCommand::Register {
            tenant,
            id,
            resource,
            expires_at,
            client_state,
        }) => (
            client
                .call(
                    Method::POST,
                    &format!("{}/subscriptions", t(tenant)),
                    Some(&json!({
                        "id": id,
                        "resource": resource,
                        "expires_at": expires_at,
                        "client_state": client_state,
                    })),
                )
                .await?,
            &[],
        ),
        Command::Subscription(SubscriptionCommand::List(tenant)) => (
            client.get(&format!("{}/subscriptions", t(tenant))).await?,
            &[
                "resource",
                "state",
                "id",
                "expires_at",
                "last_notification_at",
                "last_error",
            ],
        ),
        Command::Subscription(SubscriptionCommand::Recreate { tenant, resource }) => (
            client
                .call(
                    Method::POST,
                    &format!("{}/subscriptions/recreate", t(tenant)),
                    Some(&json!({ "resource": resource })),
                )
                .await?,
            &[],
        ),
        Command::DeadLetters(DeadLettersCommand::List { queue }) => {
            let path = match queue {
                Some(queue) => format!("/v1/dead-letters?queue={}", enc(queue)),
                None => "/v1/dead-letters".to_owned(),
            };
            (
                client.get(&path).await?,
                &[
                    "queue",
                    "message_id",
                    "tenant_id",
                    "reason",
                    "attempts",
                    "error",
                ],
            )
        }
        Command::DeadLetters(DeadLettersCommand::Replay { queue, message }) => (
            client
                .call(
                    Method::POST,
                    &format!("/v1/dead-letters/{}/{}/replay", enc(queue), enc(message)),
                    None,
                )
                .await?,
            &[],
        ),
        Command::DeadLetters(DeadLettersCommand::Discard { queue, message }) => {
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/dead-letters/{}/{}", enc(queue), enc(message)),
                    None,
                )
                .await?;
            (json!({ "discarded": message }), &[])
        }
        Command::SealingKey(SealingKeyCommand::Show) => (client.get("/v1/sealing-key").await?, &[]),
        Command::SealingKey(SealingKeyCommand::Reseal) => (
            client
                .call(Method::POST, "/v1/sealing-key/reseal", None)
                .await?,
            &[],
        ),
        Command::Completion { .. } => (Value::Null, &[]),
    })
}

async fn tenant(client: &Client, command: &TenantCommand) -> Result<Printed, ClientError> {
    let path = |id: &str| format!("/v1/tenants/{}", enc(id));
    Ok(match command {
        TenantCommand::List => (client.get("/v1/tenants?limit=500").await?, TENANT_COLUMNS),
        TenantCommand::Show { id } => (client.get(&path(id)).await?, &[]),
        TenantCommand::Create {
            id,
            name,
            invites,
            admin_roles,
            rules,
        } => {
            let mut body = json!({
                "id": id,
                "name": name,
                "invites_enabled": invites,
                "admin_roles_enabled": admin_roles,
            });
            if let Some(rules) = rules {
                body["rules"] = read_json(rules)?;
            }
            (
                client
                    .call(Method::POST, "/v1/tenants", Some(&body))
                    .await?,
                &[],
            )
        }
        TenantCommand::Update {
            id,
            name,
            invites,
            admin_roles,
        } => {
            let mut body = serde_json::Map::new();
            if let Some(name) = name {
                body.insert("name".into(), json!(name));
            }
            if let Some(invites) = invites {
                body.insert("invites_enabled".into(), json!(invites));
            }
            if let Some(admin_roles) = admin_roles {
                body.insert("admin_roles_enabled".into(), json!(admin_roles));
            }
            (
                client
                    .call(Method::PATCH, &path(id), Some(&Value::Object(body)))
                    .await?,
                &[],
            )
        }
        TenantCommand::Disconnect { id } => (
            client
                .call(
                    Method::POST,
                    &format!("{}/disconnect", path(id)),
                    Some(&json!({})),
                )
                .await?,
            &[],
        ),
        TenantCommand::Reconnect { id } => (
            client
                .call(
                    Method::POST,
                    &format!("{}/reconnect", path(id)),
                    Some(&json!({})),
                )
                .await?,
            &[],
        ),
        TenantCommand::Offboard { id, confirm } => (
            client
                .call(
                    Method::POST,
                    &format!("{}/offboard", path(id)),
                    Some(&json!({ "confirm": confirm })),
                )
                .await?,
            &[],
        ),
        TenantCommand::Resume { id } => crate::rail::resume(client, id).await?,
        TenantCommand::Safety {
            id,
            removal_percent,
            update_percent,
            minimum,
        } => crate::rail::safety(client, id, *removal_percent, *update_percent, *minimum).await?,
        TenantCommand::Audit { id } => (
            client.get(&format!("{}/audit", path(id))).await?,
            &["at", "actor", "action", "target"],
        ),
    })
}

async fn connection(client: &Client, command: &ConnectionCommand) -> Result<Printed, ClientError> {
    let path = |tenant: &TenantArg| format!("/v1/tenants/{}/connection", enc(&tenant.tenant));
    Ok(match command {
        ConnectionCommand::Put {
            tenant,
            client_id,
            kind,
            credential_file,
            credential,
        } => {
            let credential = match (credential_file, credential) {
                (Some(file), _) => read_file(file)?,
                (None, Some(credential)) => credential.clone(),
                (None, None) => {
                    return Err(ClientError::Local(
                        "no credential: set CARDSYNC_CREDENTIAL or pass --credential-file".into(),
                    ));
                }
            };
            let kind = match kind {
                Kind::Secret => "secret",
                Kind::Certificate => "certificate",
                Kind::Federated => "federated",
            };
            let body = json!({ "client_id": client_id, "kind": kind, "credential": credential });
            (
                client.call(Method::PUT, &path(tenant), Some(&body)).await?,
                &[],
            )
        }
        ConnectionCommand::Show(tenant) => (client.get(&path(tenant)).await?, &[]),
        ConnectionCommand::Test(tenant) => (
            client
                .call(Method::POST, &format!("{}/test", path(tenant)), None)
                .await?,
            &[],
        ),
        ConnectionCommand::Delete(tenant) => {
            client.call(Method::DELETE, &path(tenant), None).await?;
            (json!({ "deleted": true }), &[])
        }
    })
}

/// An enum value as clap names it (`weekly`, `monday`), which is what the API takes.
fn value_name(value: &impl clap::ValueEnum) -> Option<String> {
    value
        .to_possible_value()
        .map(|value| value.get_name().to_owned())
}

async fn schedules(client: &Client, command: &SchedulesCommand) -> Result<Printed, ClientError> {
    let path = |target: &ScheduleTarget| {
        format!(
            "/v1/tenants/{}/schedules/{}",
            enc(&target.tenant),
            enc(target.group.as_deref().unwrap_or("tenant"))
        )
    };
    Ok(match command {
        SchedulesCommand::List(tenant) => (
            client
                .get(&format!("/v1/tenants/{}/schedules", enc(&tenant.tenant)))
                .await?,
            SCHEDULE_COLUMNS,
        ),
        SchedulesCommand::Set {
            target,
            cadence,
            weekday,
            day_of_month,
            time,
            time_zone,
            paused,
        } => {
            let body = json!({
                "cadence": value_name(cadence),
                "weekday": weekday.as_ref().and_then(value_name),
                "day_of_month": day_of_month,
                "time": time,
                "time_zone": time_zone,
                "paused": paused,
            });
            (
                client.call(Method::PUT, &path(target), Some(&body)).await?,
                &[],
            )
        }
        SchedulesCommand::Pause(target) | SchedulesCommand::Resume(target) => {
            let paused = matches!(command, SchedulesCommand::Pause(_));
            (
                client
                    .call(
                        Method::PATCH,
                        &path(target),
                        Some(&json!({ "paused": paused })),
                    )
                    .await?,
                &[],
            )
        }
        SchedulesCommand::Delete(target) => {
            client.call(Method::DELETE, &path(target), None).await?;
            (
                json!({ "deleted": target.group.as_deref().unwrap_or("tenant") }),
                &[],
            )
        }
    })
}

async fn cards(client: &Client, command: &CardsCommand) -> Result<Printed, ClientError> {
    let base = |tenant: &TenantArg| format!("/v1/tenants/{}/cards", enc(&tenant.tenant));
    Ok(match command {
        CardsCommand::List {
            tenant,
            status,
            email,
            name,
            team,
            limit,
            all,
        } => {
            let mut query = format!("limit={limit}");
            for (key, value) in [
                ("status", status),
                ("email", email),
                ("name", name),
                ("team", team),
            ] {
                if let Some(value) = value {
                    query.push_str(&format!("&{key}={}", enc(value)));
                }
            }
            let mut items = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page_query = match &cursor {
                    Some(cursor) => format!("{query}&cursor={}", enc(cursor)),
                    None => query.clone(),
                };
                let page = client
                    .get(&format!("{}?{page_query}", base(tenant)))
                    .await?;
                items.extend(page["items"].as_array().cloned().unwrap_or_default());
                cursor = page["next_cursor"].as_str().map(str::to_owned);
                if !*all || cursor.is_none() {
                    break;
                }
            }
            let mut page = json!({ "items": items });
            if let Some(cursor) = cursor {
                page["next_cursor"] = json!(cursor);
            }
            (page, CARD_COLUMNS)
        }
        CardsCommand::Show { tenant, card } => (
            client
                .get(&format!("{}/{}", base(tenant), enc(card)))
                .await?,
            &[],
        ),
        CardsCommand::Edit {
            tenant,
            card,
            field,
            value,
        } => (
            client
                .call(
                    Method::PUT,
                    &format!("{}/{}/fields/{}", base(tenant), enc(card), enc(field)),
                    Some(&json!({ "value": value })),
                )
                .await?,
            &[],
        ),
        CardsCommand::Photo { tenant, card, file } => {
            let path = format!("{}/{}/photo", base(tenant), enc(card));
            (crate::photo::save(client, &path, file).await?, &[])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(enc("a b/c+é"), "a%20b%2Fc%2B%C3%A9");
    }
}
