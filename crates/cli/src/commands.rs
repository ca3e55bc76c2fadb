//! The commands: each parses its arguments, makes its API calls and prints the answer.

use crate::client::{Client, ClientError};
use crate::exit;
use crate::output::{Format, render};
use clap::{Args, CommandFactory as _, Parser, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  export CARDSYNC_SERVER=https://cardsync-admin.example.com
  export CARDSYNC_TOKEN=$(az account get-access-token --scope api://cardsync/.default --query accessToken -o tsv)
  cardsync tenant create --id 72f988bf-86f1-41af-91ab-2d7cd011db47 --name Contoso
  CARDSYNC_CREDENTIAL=... cardsync connection put --tenant 72f988bf-86f1-41af-91ab-2d7cd011db47 --client-id 11111111-2222-3333-4444-555555555555
  cardsync connection test --tenant 72f988bf-86f1-41af-91ab-2d7cd011db47
  cardsync sync --tenant 72f988bf-86f1-41af-91ab-2d7cd011db47
  cardsync runs --tenant 72f988bf-86f1-41af-91ab-2d7cd011db47 -o json

Exit codes: 0 done, 1 failed (server error, unreachable, local file), 2 bad arguments,
3 not found, 4 not authenticated or not allowed, 5 refused (invalid or conflicting request).";

/// The admin API's command-line client.
#[derive(Debug, Parser)]
#[command(name = "cardsync", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// The admin API's base URL.
    #[arg(
        long,
        global = true,
        env = "CARDSYNC_SERVER",
        default_value = "http://127.0.0.1:8083"
    )]
    server: String,
    /// A file holding the bearer token (used when CARDSYNC_TOKEN is not set).
    #[arg(long, global = true, env = "CARDSYNC_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// How answers are printed.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Tenants: list, show, create, update, disconnect, reconnect, audit.
    #[command(
        subcommand,
        after_help = "Example:\n  cardsync tenant update 72f988bf-86f1-41af-91ab-2d7cd011db47 --invites true"
    )]
    Tenant(TenantCommand),
    /// A tenant's Graph connection: put, show, test, delete.
    #[command(
        subcommand,
        after_help = "Example:\n  CARDSYNC_CREDENTIAL=s3cret cardsync connection put --tenant <id> --client-id <app id>"
    )]
    Connection(ConnectionCommand),
    /// Which users a tenant syncs: all, or the nested members of groups.
    #[command(
        subcommand,
        after_help = "Example:\n  cardsync scope set --tenant <id> --group <group id> --group <group id>"
    )]
    Scope(ScopeCommand),
    /// Search a tenant's groups by name (through Graph), with their member counts.
    #[command(after_help = "Example:\n  cardsync groups --tenant <id> sales")]
    Groups {
        #[command(flatten)]
        tenant: TenantArg,
        /// Words the group's name starts with.
        search: String,
    },
    /// A tenant's field rules: show, put (validated, versioned), history.
    #[command(
        subcommand,
        after_help = "Example:\n  cardsync rules show --tenant <id> -o json > rules.json && cardsync rules put --tenant <id> rules.json"
    )]
    Rules(RulesCommand),
    /// Cards: list (with filters), show (with provenance), edit a field.
    #[command(
        subcommand,
        after_help = "Example:\n  cardsync cards list --tenant <id> --status active --name ann"
    )]
    Cards(CardsCommand),
    /// Sync Now: the whole tenant, or one group's members; prints the run id.
    #[command(after_help = "Example:\n  cardsync sync --tenant <id> --group <group id>")]
    Sync {
        #[command(flatten)]
        tenant: TenantArg,
        /// Only this group's (nested) members.
        #[arg(long)]
        group: Option<String>,
    },
    /// Sync one user: info (pull from Entra), cards (push the stored person), or full.
    #[command(
        after_help = "Example:\n  cardsync sync-user --tenant <id> <user object id> --depth info"
    )]
    SyncUser {
        #[command(flatten)]
        tenant: TenantArg,
        /// The user's Entra object id.
        user: String,
        /// How deep.
        #[arg(long, value_enum, default_value = "full")]
        depth: Depth,
    },
    /// A tenant's sync runs, newest first, or one run.
    #[command(
        after_help = "Example:\n  cardsync runs --tenant <id>\n  cardsync runs --run <run id> -o json"
    )]
    Runs {
        /// The tenant whose runs are listed.
        #[arg(long, required_unless_present = "run")]
        tenant: Option<String>,
        /// Show this run only.
        #[arg(long)]
        run: Option<String>,
    },
    /// Graph subscriptions registered by hand (until the subscription-manager does it).
    #[command(
        subcommand,
        after_help = "Example:\n  CARDSYNC_CLIENT_STATE=... cardsync subscription register --tenant <id> --id <subscription id> --expires-at 2026-12-09T00:00:00Z"
    )]
    Subscription(SubscriptionCommand),
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  cardsync completion bash > /etc/bash_completion.d/cardsync"
    )]
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
struct TenantArg {
    /// The tenant (its Entra tenant id).
    #[arg(long)]
    tenant: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Depth {
    Info,
    Cards,
    Full,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// List tenants.
    List,
    /// Show one tenant.
    Show { id: String },
    /// Create a tenant.
    Create {
        /// The Entra tenant id.
        #[arg(long)]
        id: String,
        /// A display name.
        #[arg(long)]
        name: String,
        /// Send `invited` events to new members.
        #[arg(long)]
        invites: bool,
        /// Apply directory admin roles.
        #[arg(long)]
        admin_roles: bool,
        /// Field rules as a JSON file (defaults when omitted).
        #[arg(long)]
        rules: Option<PathBuf>,
    },
    /// Change some of a tenant's settings (the others keep their values).
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        invites: Option<bool>,
        #[arg(long)]
        admin_roles: Option<bool>,
    },
    /// Stop syncing a tenant (its cards stay).
    Disconnect { id: String },
    /// Sync a disconnected tenant again.
    Reconnect { id: String },
    /// Who changed what in a tenant's configuration.
    Audit { id: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Secret,
    Certificate,
    Federated,
}

#[derive(Debug, Subcommand)]
enum ConnectionCommand {
    /// Store the connection; the credential comes from CARDSYNC_CREDENTIAL or a file.
    Put {
        #[command(flatten)]
        tenant: TenantArg,
        /// The app registration's client id.
        #[arg(long)]
        client_id: String,
        #[arg(long, value_enum, default_value = "secret")]
        kind: Kind,
        /// A file holding the credential (a secret, a PEM bundle, a federated token path).
        #[arg(long, conflicts_with = "credential")]
        credential_file: Option<PathBuf>,
        /// The credential itself (kept out of `ps` by its variable).
        #[arg(long, env = "CARDSYNC_CREDENTIAL", hide_env_values = true)]
        credential: Option<String>,
    },
    /// Show the connection (never its credential).
    Show(TenantArg),
    /// Get a token, count users and groups, name missing Graph permissions.
    Test(TenantArg),
    /// Remove the connection.
    Delete(TenantArg),
}

#[derive(Debug, Subcommand)]
enum ScopeCommand {
    /// Show the scope.
    Show(TenantArg),
    /// Set the scope; no group means every user.
    Set {
        #[command(flatten)]
        tenant: TenantArg,
        /// A group id (repeat for several).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Show the rules and their version.
    Show(TenantArg),
    /// Save rules from a JSON file (validated; a new version).
    Put {
        #[command(flatten)]
        tenant: TenantArg,
        /// The rules document (the `rules` object of `rules show -o json`, or the whole answer).
        file: PathBuf,
    },
    /// Saved versions, newest first.
    History(TenantArg),
}

#[derive(Debug, Subcommand)]
enum CardsCommand {
    /// List cards.
    List {
        #[command(flatten)]
        tenant: TenantArg,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// A team's group id.
        #[arg(long)]
        team: Option<String>,
        /// Cards per page.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Follow every page.
        #[arg(long)]
        all: bool,
    },
    /// Show a card with where each value comes from.
    Show {
        #[command(flatten)]
        tenant: TenantArg,
        card: String,
    },
    /// Edit one field as a local edit (locked fields are refused).
    Edit {
        #[command(flatten)]
        tenant: TenantArg,
        card: String,
        field: String,
        /// The new value; omit to clear the field.
        value: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum SubscriptionCommand {
    /// Register a Graph subscription; clientState from CARDSYNC_CLIENT_STATE.
    Register {
        #[command(flatten)]
        tenant: TenantArg,
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "/users")]
        resource: String,
        /// RFC 3339.
        #[arg(long)]
        expires_at: String,
        #[arg(long, env = "CARDSYNC_CLIENT_STATE", hide_env_values = true)]
        client_state: String,
    },
    /// List a tenant's registered subscriptions.
    List(TenantArg),
}

/// Percent-encodes one path segment or query value (everything but RFC 3986's unreserved
/// characters).
fn enc(text: &str) -> String {
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
        Ok(client) => execute(&client, &cli.command).await,
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

type Printed = (Value, &'static [&'static str]);

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
    "kind",
    "status",
    "started_by",
    "target",
    "created_at",
    "finished_at",
];

async fn execute(client: &Client, command: &Command) -> Result<Printed, ClientError> {
    let t = |tenant: &TenantArg| format!("/v1/tenants/{}", enc(&tenant.tenant));
    Ok(match command {
        Command::Tenant(command) => return tenant(client, command).await,
        Command::Connection(command) => return connection(client, command).await,
        Command::Scope(ScopeCommand::Show(tenant)) => {
            (client.get(&format!("{}/scope", t(tenant))).await?, &[])
        }
        Command::Scope(ScopeCommand::Set { tenant, groups }) => (
            client
                .call(
                    Method::PUT,
                    &format!("{}/scope", t(tenant)),
                    Some(&json!({ "groups": groups })),
                )
                .await?,
            &[],
        ),
        Command::Groups { tenant, search } => (
            client
                .get(&format!("{}/groups?search={}", t(tenant), enc(search)))
                .await?,
            &["id", "display_name", "members", "description"],
        ),
        Command::Rules(RulesCommand::Show(tenant)) => {
            (client.get(&format!("{}/rules", t(tenant))).await?, &[])
        }
        Command::Rules(RulesCommand::Put { tenant, file }) => {
            let document = read_json(file)?;
            // `rules show -o json` prints {version, rules}; accept that as well as bare rules.
            let rules = match document.get("rules") {
                Some(rules) if document.get("version").is_some() => rules.clone(),
                _ => document,
            };
            (
                client
                    .call(Method::PUT, &format!("{}/rules", t(tenant)), Some(&rules))
                    .await?,
                &[],
            )
        }
        Command::Rules(RulesCommand::History(tenant)) => (
            client.get(&format!("{}/rules/history", t(tenant))).await?,
            &["version", "changed_by", "changed_at"],
        ),
        Command::Cards(command) => return cards(client, command).await,
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
        Command::Runs { run: Some(run), .. } => {
            (client.get(&format!("/v1/runs/{}", enc(run))).await?, &[])
        }
        Command::Runs { tenant, run: None } => {
            let tenant = tenant.as_deref().unwrap_or_default();
            (
                client
                    .get(&format!("/v1/runs?tenant={}", enc(tenant)))
                    .await?,
                RUN_COLUMNS,
            )
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
            &["id", "resource", "expires_at"],
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
