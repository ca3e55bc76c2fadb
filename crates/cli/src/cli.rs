//! The command line: every command, its arguments, its `--help` and an example.

use crate::output::Format;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  export CARDSYNC_SERVER=https://cardsync-admin.example.com
  export CARDSYNC_TOKEN=$(az account get-access-token --scope api://cardsync/.default --query accessToken -o tsv)
  cardsync tenant create --id 72f988bf-86f1-41af-91ab-2d7cd011db47 --name Contoso
  CARDSYNC_CREDENTIAL=... cardsync connection put --tenant 72f988bf-86f1-41af-91ab-2d7cd011db47 --client-id 11111111-2222-3333-4444-555555555555
  cardsync connection test --tenant 72f988bf-86f1-41af-91ab-2d7cd011db47
  cardsync sync --tenant 72f988bf-86f1-41af-91ab-2d7cd011db47
  cardsync schedules set --tenant 72f988bf-86f1-41af-91ab-2d7cd011db47 --cadence weekly --weekday monday --time 02:30 --time-zone Europe/Berlin
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
    pub(crate) server: String,
    /// A file holding the bearer token (used when CARDSYNC_TOKEN is not set).
    #[arg(long, global = true, env = "CARDSYNC_TOKEN_FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// How answers are printed.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    pub(crate) output: Format,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Tenants: list, show, create, update, disconnect, reconnect, offboard, audit, resume, safety.
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
    /// The tenant's directory extensions (`extension_<appid>_<name>`) as Graph lists them, with
    /// sample values from the directory snapshot: what a rule can map, without typing names.
    #[command(after_help = "Example:\n  cardsync extension-attributes --tenant <id>")]
    ExtensionAttributes {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// A tenant's field rules: show, dry-run, put (validated, versioned, applied), apply, history.
    #[command(
        subcommand,
        after_help = "Example:\n  cardsync rules show --tenant <id> -o json > rules.json\n  cardsync rules dry-run --tenant <id> -f rules.json\n  cardsync rules put --tenant <id> rules.json && cardsync runs --tenant <id>"
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
    /// When the reconciler reconciles a tenant or a group: list, set, pause, resume, delete.
    #[command(subcommand, after_help = SCHEDULE_EXAMPLES)]
    Schedules(SchedulesCommand),
    /// Sync runs, newest first: a tenant's, every tenant's the token may see, or one run; a held
    /// run's plan, approve, reject.
    #[command(
        subcommand_negates_reqs = true,
        after_help = "Examples:\n  cardsync runs --tenant <id>\n  cardsync runs                # every tenant's\n  cardsync runs --run <run id> -o json\n  cardsync runs --held         # every tenant's held runs\n  cardsync runs plan <run id>\n  cardsync runs approve <run id>\n  cardsync runs reject <run id> --reason \"wrong scope group\"\n  cardsync tenant resume <tenant id>"
    )]
    Runs {
        /// The tenant whose runs are listed (without it: every tenant the token may see).
        #[arg(long)]
        tenant: Option<String>,
        /// Show this run only.
        #[arg(long)]
        run: Option<String>,
        /// Only the runs held by the mass-change safety rail.
        #[arg(long)]
        held: bool,
        #[command(subcommand)]
        action: Option<RunsCommand>,
    },
    /// Dead-lettered messages: list (with their error and tenant), replay, discard.
    #[command(
        subcommand,
        after_help = "Example:\n  cardsync dead-letters list --queue card-writer.live\n  cardsync dead-letters replay card-writer.live <message id>"
    )]
    DeadLetters(DeadLettersCommand),
    /// A tenant's Graph subscriptions: list them (state, expiry, last notification, last error),
    /// have the subscription manager recreate one, or register one by hand.
    #[command(
        subcommand,
        after_help = "Example:\n  cardsync subscription list --tenant <id>\n  cardsync subscription recreate --tenant <id> --resource /users\n  CARDSYNC_CLIENT_STATE=... cardsync subscription register --tenant <id> --id <subscription id> --expires-at 2026-12-09T00:00:00Z"
    )]
    Subscription(SubscriptionCommand),
    /// The key that seals Graph credentials: which one seals, how many connections each key
    /// sealed, and re-sealing them all with the current key (a rotation's middle step: deploy the
    /// new key with the old one among `secrets.previous_credential_keys`, re-seal, drop the old).
    #[command(
        subcommand,
        after_help = "Example:\n  cardsync sealing-key show\n  cardsync sealing-key reseal -o json"
    )]
    SealingKey(SealingKeyCommand),
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  cardsync completion bash > /etc/bash_completion.d/cardsync"
    )]
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

const SCHEDULE_EXAMPLES: &str = "\
Every tenant reconciles daily at 00:00 UTC unless it has a schedule of its own; deleting it
brings that default back, pausing it stops scheduled reconciles. A group's schedule reconciles
the group's (nested) members.

Examples:
  cardsync schedules list --tenant <id>
  cardsync schedules set --tenant <id> --cadence daily --time 02:30 --time-zone Europe/Berlin
  cardsync schedules set --tenant <id> --group <group id> --cadence monthly --day-of-month 31
  cardsync schedules set --tenant <id> --cadence weekly --weekday monday --time 06:00
  cardsync schedules pause --tenant <id>
  cardsync schedules resume --tenant <id>
  cardsync schedules delete --tenant <id> --group <group id>";

/// Which schedule: the tenant's, or a group's.
#[derive(Debug, Args)]
pub(crate) struct ScheduleTarget {
    /// The tenant (its Entra tenant id).
    #[arg(long)]
    pub(crate) tenant: String,
    /// A group's schedule instead of the tenant-wide one.
    #[arg(long)]
    pub(crate) group: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Cadence {
    Daily,
    Weekly,
    Monthly,
    /// January, April, July and October.
    Quarterly,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SchedulesCommand {
    /// The tenant-wide schedule (its own or the default) and the groups', with their next run.
    #[command(after_help = "Example:\n  cardsync schedules list --tenant <id> -o json")]
    List(TenantArg),
    /// Create or replace a schedule.
    #[command(
        after_help = "Examples:\n  cardsync schedules set --tenant <id> --cadence quarterly --day-of-month 1 --time 03:00 --time-zone America/New_York\n  cardsync schedules set --tenant <id> --group <group id> --cadence weekly --weekday friday --time 18:00"
    )]
    Set {
        #[command(flatten)]
        target: ScheduleTarget,
        /// How often.
        #[arg(long, value_enum)]
        cadence: Cadence,
        /// Weekly: the weekday.
        #[arg(long, value_enum)]
        weekday: Option<Weekday>,
        /// Monthly and quarterly: the day (1-31; a shorter month runs on its last day).
        #[arg(long)]
        day_of_month: Option<i64>,
        /// Local time of day, HH:MM.
        #[arg(long, default_value = "00:00")]
        time: String,
        /// IANA time zone.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
        /// Save it paused.
        #[arg(long)]
        paused: bool,
    },
    /// Stop scheduled reconciles (pausing the default makes it the tenant's own, paused).
    #[command(after_help = "Example:\n  cardsync schedules pause --tenant <id> --group <group id>")]
    Pause(ScheduleTarget),
    /// Run again from the next occurrence (missed ones are not run).
    #[command(after_help = "Example:\n  cardsync schedules resume --tenant <id>")]
    Resume(ScheduleTarget),
    /// Delete a group's schedule, or the tenant's own (the default applies again).
    #[command(after_help = "Example:\n  cardsync schedules delete --tenant <id>")]
    Delete(ScheduleTarget),
}

#[derive(Debug, Args)]
pub(crate) struct TenantArg {
    /// The tenant (its Entra tenant id).
    #[arg(long)]
    pub(crate) tenant: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Depth {
    Info,
    Cards,
    Full,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TenantCommand {
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
    /// Remove a tenant for good: every card, snapshot row, run, Redis key and (through the
    /// subscription manager) Graph subscription. Needs an admin token for all tenants.
    #[command(
        after_help = "Example:\n  cardsync tenant offboard 72f988bf-86f1-41af-91ab-2d7cd011db47 --confirm 72f988bf-86f1-41af-91ab-2d7cd011db47"
    )]
    Offboard {
        id: String,
        /// The tenant id once more: nothing of the tenant can be brought back.
        #[arg(long)]
        confirm: String,
    },
    /// Who changed what in a tenant's configuration.
    Audit { id: String },
    /// Resume a tenant the mass-change safety rail paused (after its held run was rejected):
    /// the runs asked for meanwhile, and one round if any was asked for, run now.
    Resume { id: String },
    /// Show the tenant's safety rail (thresholds, paused, held runs), or change thresholds
    /// (the others keep their values).
    Safety {
        id: String,
        /// Hold a run that would deactivate or delete more than this percentage of the cards.
        #[arg(long)]
        removal_percent: Option<f32>,
        /// Hold a run that would update more than this percentage of the cards.
        #[arg(long)]
        update_percent: Option<f32>,
        /// Never hold fewer removals (or updates) than this.
        #[arg(long)]
        minimum: Option<i32>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RunsCommand {
    /// What a held run would change and why, with its first commands.
    Plan {
        run: String,
        /// Commands to show (1 to 100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Send exactly the held run's commands and resume its tenant.
    Approve { run: String },
    /// Send nothing; the tenant stays paused until `cardsync tenant resume`.
    Reject {
        run: String,
        /// Recorded on the run.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Kind {
    Secret,
    Certificate,
    Federated,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConnectionCommand {
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
pub(crate) enum ScopeCommand {
    /// Show the scope.
    Show(TenantArg),
    /// Set the whole scope (what is not given is cleared); no group and no filter means every
    /// user.
    #[command(
        after_help = "Example:\n  cardsync scope set --tenant <id> --group <group id> --exclude-guests --condition department --in Sales --in Marketing"
    )]
    Set {
        #[command(flatten)]
        tenant: TenantArg,
        /// A group id (repeat for several).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Leave out guests (userType Guest).
        #[arg(long)]
        exclude_guests: bool,
        /// Only users for whom this expression (the rules' language) gives one of the --in values.
        #[arg(long, requires = "values")]
        condition: Option<String>,
        /// A value the condition admits (repeat for several; case-insensitive).
        #[arg(long = "in", requires = "condition")]
        values: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RulesCommand {
    /// Show the rules and their version.
    Show(TenantArg),
    /// Save rules from a JSON file (validated; a new version). Rules that changed are applied
    /// to every card at once: the answer names the apply's run.
    #[command(
        after_help = "Example:\n  cardsync rules put --tenant <id> rules.json\n  cardsync runs --run <apply.run_id of the answer>"
    )]
    Put {
        #[command(flatten)]
        tenant: TenantArg,
        /// The rules document (the `rules` object of `rules show -o json`, or the whole answer).
        file: PathBuf,
    },
    /// Preview rules from a JSON file without saving them: per field, how many cards would
    /// change, with a few before/after samples, from the stored directory snapshot and cards
    /// (no Graph call). Fields whose rule reads a property the snapshot lacks are named, not
    /// counted. Needs the admin role.
    #[command(
        after_help = "Examples:\n  cardsync rules show --tenant <id> -o json > rules.json   # then edit rules.json\n  cardsync rules dry-run --tenant <id> -f rules.json\n  cardsync rules dry-run --tenant <id> -f rules.json -o json | jq '.fields[] | {field, changes}'"
    )]
    DryRun {
        #[command(flatten)]
        tenant: TenantArg,
        /// The proposed rules (as for `rules put`).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Apply the rules in force to every card again (saving changed rules does it already);
    /// prints the run id.
    #[command(
        after_help = "Example:\n  cardsync rules apply --tenant <id>\n  cardsync runs --run <run id>"
    )]
    Apply(TenantArg),
    /// Saved versions, newest first.
    History(TenantArg),
}

#[derive(Debug, Subcommand)]
pub(crate) enum CardsCommand {
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
    /// Save the image a card shows (its directory photo) to a file.
    #[command(
        after_help = "Example:\n  cardsync cards photo --tenant <id> <card id> --file ann.jpg"
    )]
    Photo {
        #[command(flatten)]
        tenant: TenantArg,
        card: String,
        /// Where to write the image (`-` for standard output).
        #[arg(long, short = 'f')]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeadLettersCommand {
    /// What the work queues dead-lettered, oldest first (they stay where they are).
    List {
        /// One work queue (`delta-worker.changes`, `card-writer.live`, …).
        #[arg(long)]
        queue: Option<String>,
    },
    /// Publish one to its work queue again (as a first try) and remove it from the dead letters.
    Replay {
        /// The work queue.
        queue: String,
        /// The message id.
        message: String,
    },
    /// Remove one for good.
    Discard {
        /// The work queue.
        queue: String,
        /// The message id.
        message: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SubscriptionCommand {
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
    /// List a tenant's subscriptions: resource, state, expiry, last notification, last error.
    List(TenantArg),
    /// Replace a subscription with a new one (the subscription manager does it on its next pass,
    /// with a catch-up round, and deletes the old one in Graph).
    Recreate {
        #[command(flatten)]
        tenant: TenantArg,
        /// The resource (`/users`, `/groups`).
        #[arg(long, default_value = "/users")]
        resource: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SealingKeyCommand {
    /// The current key id, the keys the API holds, and the connections each key sealed.
    Show,
    /// Seal every connection again with the current key; names the tenants no key opens.
    Reseal,
}
