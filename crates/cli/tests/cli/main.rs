//! The `cardsync` binary against a running admin-api (graph-sim as the token issuer): its
//! output and its exit codes.

use admin_api::{Application, Settings};
use cardsync_config::Sources;
use cardsync_testkit::{amqp_url, database_url, unique_prefix};
use graph_sim::control_client::{Control, client_credentials_token};
use serde_json::Value;
use std::process::Output;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Setup {
    _sim: graph_sim::RunningSim,
    server: String,
    admin: String,
    reader: String,
    /// The admin-api's photo store (a directory).
    photos: cardsync_photos::PhotoSettings,
    shutdown: CancellationToken,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn setup() -> Setup {
    cardsync_testkit::init();
    cardsync_testkit::test_pool().await;
    let sim = graph_sim::spawn(graph_sim::SimConfig::default())
        .await
        .expect("graph-sim");
    let control = Control::new(sim.control_url());
    let directory = control.create_tenant().await.expect("directory");
    let uri = "api://cardsync-cli-test";
    let api_app = control
        .create_api_app(&directory, uri, &["reader", "admin"], 1)
        .await
        .expect("api app");
    let mut tokens = Vec::new();
    for role in ["admin", "reader"] {
        let client = control
            .create_api_client(&directory, &api_app.client_id, &[role])
            .await
            .expect("client");
        let secret = client.secret.expect("secret");
        tokens.push(
            client_credentials_token(sim.graph_url(), &directory, &client.client_id, &secret, uri)
                .await
                .expect("token"),
        );
    }
    let prefix = unique_prefix("tcli");
    let photos = std::env::temp_dir().join(format!("cardsync-cli-photos-{prefix}"));
    let env = vec![
        (
            "CARDSYNC__PHOTOS__URL".to_owned(),
            photos.to_string_lossy().into_owned(),
        ),
        (
            "CARDSYNC__HTTP__LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        ("CARDSYNC__TOPOLOGY__PREFIX".to_owned(), prefix),
        ("CARDSYNC__POSTGRES__URL".to_owned(), database_url()),
        (
            "CARDSYNC__SECRETS__DEVELOPMENT".to_owned(),
            "true".to_owned(),
        ),
        ("CARDSYNC__BUS__URL".to_owned(), amqp_url()),
        ("CARDSYNC__BUS__QUEUE_TYPE".to_owned(), "classic".to_owned()),
        (
            "CARDSYNC__BUS__CONNECT_TIMEOUT".to_owned(),
            "20s".to_owned(),
        ),
    ];
    let mut settings = Settings::load(&Sources {
        file: None,
        env: Some(env),
    })
    .expect("settings");
    settings.auth.audiences = vec![uri.to_owned()];
    settings.auth.jwks_url = Some(format!("{}/common/discovery/v2.0/keys", sim.graph_url()));
    let application = Application::build(&settings).await.expect("admin-api");
    let server = format!("http://127.0.0.1:{}", application.port());
    let shutdown = CancellationToken::new();
    tokio::spawn(application.run_until_stopped(shutdown.clone()));
    let reader = tokens.pop().expect("reader");
    let admin = tokens.pop().expect("admin");
    Setup {
        _sim: sim,
        server,
        admin,
        reader,
        photos: settings.photos.clone(),
        shutdown,
    }
}

/// Runs `cardsync` with `args` against `server` with `token` (none when `None`).
async fn cardsync(server: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cardsync"));
    command
        .args(args)
        .env("CARDSYNC_SERVER", server)
        .env_remove("CARDSYNC_TOKEN")
        .env_remove("CARDSYNC_TOKEN_FILE");
    if let Some(token) = token {
        command.env("CARDSYNC_TOKEN", token);
    }
    tokio::task::spawn_blocking(move || command.output().expect("cardsync runs"))
        .await
        .expect("joined")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", stdout(output)))
}

#[tokio::test]
async fn help_shows_examples_and_exit_codes_and_completion_prints_a_script() {
    let help = cardsync("http://127.0.0.1:9", None, &["--help"]).await;
    assert_eq!(help.status.code(), Some(0));
    let text = stdout(&help);
    assert!(
        text.contains("Examples:") && text.contains("Exit codes"),
        "{text}"
    );
    for command in [
        "tenant",
        "connection",
        "scope",
        "rules",
        "cards",
        "sync",
        "runs",
        "subscription",
        "sealing-key",
    ] {
        let help = cardsync("http://127.0.0.1:9", None, &[command, "--help"]).await;
        assert_eq!(help.status.code(), Some(0), "{command}");
        assert!(
            stdout(&help).contains("Example"),
            "{command}: {}",
            stdout(&help)
        );
    }
    let completion = cardsync("http://127.0.0.1:9", None, &["completion", "bash"]).await;
    assert_eq!(completion.status.code(), Some(0));
    assert!(stdout(&completion).contains("cardsync"));
    let usage = cardsync("http://127.0.0.1:9", None, &["tenant", "frobnicate"]).await;
    assert_eq!(usage.status.code(), Some(2));
}

#[tokio::test]
async fn the_cli_creates_shows_and_updates_a_tenant_with_exit_codes_scripts_can_use() {
    let setup = setup().await;
    let server = setup.server.as_str();
    let id = Uuid::new_v4().to_string();

    let denied = cardsync(server, None, &["tenant", "list"]).await;
    assert_eq!(denied.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("CARDSYNC_TOKEN"));

    let created = cardsync(
        server,
        Some(&setup.admin),
        &[
            "tenant", "create", "--id", &id, "--name", "Contoso", "-o", "json",
        ],
    )
    .await;
    assert_eq!(created.status.code(), Some(0), "{created:?}");
    assert_eq!(json(&created)["name"], "Contoso");

    let again = cardsync(
        server,
        Some(&setup.admin),
        &["tenant", "create", "--id", &id, "--name", "Contoso"],
    )
    .await;
    assert_eq!(again.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    let updated = cardsync(
        server,
        Some(&setup.admin),
        &["tenant", "update", &id, "--invites", "true", "-o", "json"],
    )
    .await;
    assert_eq!(updated.status.code(), Some(0), "{updated:?}");
    assert_eq!(json(&updated)["invites_enabled"], true);

    let refused = cardsync(
        server,
        Some(&setup.reader),
        &["tenant", "update", &id, "--invites", "false"],
    )
    .await;
    assert_eq!(refused.status.code(), Some(4));

    let shown = cardsync(server, Some(&setup.reader), &["tenant", "show", &id]).await;
    assert_eq!(shown.status.code(), Some(0));
    let text = stdout(&shown);
    assert!(
        text.lines()
            .any(|line| line.starts_with("name") && line.ends_with("Contoso")),
        "{text}"
    );

    let missing = cardsync(
        server,
        Some(&setup.reader),
        &["tenant", "show", &Uuid::new_v4().to_string()],
    )
    .await;
    assert_eq!(missing.status.code(), Some(3));

    let token_file = std::env::temp_dir().join(format!("cardsync-token-{id}"));
    std::fs::write(&token_file, &setup.reader).expect("token file");
    let listed = cardsync(
        server,
        None,
        &[
            "--token-file",
            token_file.to_str().expect("path"),
            "tenant",
            "list",
        ],
    )
    .await;
    let _ = std::fs::remove_file(&token_file);
    assert_eq!(listed.status.code(), Some(0), "{listed:?}");
    let text = stdout(&listed);
    assert!(text.starts_with("ID"), "{text}");
    assert!(text.contains(&id), "{text}");

    let unreachable = cardsync(
        "http://127.0.0.1:9",
        Some(&setup.admin),
        &["tenant", "list"],
    )
    .await;
    assert_eq!(unreachable.status.code(), Some(1));
}

#[tokio::test]
async fn the_cli_offboards_a_tenant_only_with_its_id_confirmed_and_mapping_help_needs_a_connection()
{
    let setup = setup().await;
    let server = setup.server.as_str();
    let id = Uuid::new_v4().to_string();
    let created = cardsync(
        server,
        Some(&setup.admin),
        &["tenant", "create", "--id", &id, "--name", "Contoso"],
    )
    .await;
    assert_eq!(created.status.code(), Some(0), "{created:?}");
    // Mapping help asks Graph, so it needs the tenant's connection first.
    let unconnected = cardsync(
        server,
        Some(&setup.reader),
        &["extension-attributes", "--tenant", &id],
    )
    .await;
    assert_eq!(unconnected.status.code(), Some(5), "{unconnected:?}");
    assert!(String::from_utf8_lossy(&unconnected.stderr).contains("no Graph connection"));

    let mistyped = cardsync(
        server,
        Some(&setup.admin),
        &[
            "tenant",
            "offboard",
            &id,
            "--confirm",
            &Uuid::new_v4().to_string(),
        ],
    )
    .await;
    assert_eq!(mistyped.status.code(), Some(5), "{mistyped:?}");
    assert!(String::from_utf8_lossy(&mistyped.stderr).contains("confirm must repeat"));

    let offboarded = cardsync(
        server,
        Some(&setup.admin),
        &["tenant", "offboard", &id, "--confirm", &id, "-o", "json"],
    )
    .await;
    assert_eq!(offboarded.status.code(), Some(0), "{offboarded:?}");
    let report = json(&offboarded);
    assert_eq!(report["tenant_id"], id.as_str());
    assert_eq!(report["rows"]["tenants"], 1);

    let gone = cardsync(server, Some(&setup.reader), &["tenant", "show", &id]).await;
    assert_eq!(gone.status.code(), Some(3));
}

#[tokio::test]
async fn the_cli_stores_a_connection_registers_a_subscription_and_asks_for_a_sync() {
    let setup = setup().await;
    let server = setup.server.as_str();
    let admin = Some(setup.admin.as_str());
    let id = Uuid::new_v4().to_string();
    assert_eq!(
        cardsync(
            server,
            admin,
            &["tenant", "create", "--id", &id, "--name", "Fabrikam"]
        )
        .await
        .status
        .code(),
        Some(0)
    );

    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cardsync"));
    command
        .args([
            "connection",
            "put",
            "--tenant",
            &id,
            "--client-id",
            "app-1",
            "-o",
            "json",
        ])
        .env("CARDSYNC_SERVER", server)
        .env("CARDSYNC_TOKEN", &setup.admin)
        .env("CARDSYNC_CREDENTIAL", "the-secret-value");
    let put = tokio::task::spawn_blocking(move || command.output().expect("runs"))
        .await
        .expect("joined");
    assert_eq!(put.status.code(), Some(0), "{put:?}");
    assert_eq!(json(&put)["client_id"], "app-1");
    let shown = cardsync(
        server,
        admin,
        &["connection", "show", "--tenant", &id, "-o", "json"],
    )
    .await;
    assert!(!stdout(&shown).contains("the-secret-value"));

    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cardsync"));
    let subscription = Uuid::new_v4().to_string();
    command
        .args([
            "subscription",
            "register",
            "--tenant",
            &id,
            "--id",
            &subscription,
            "--expires-at",
            "2030-01-01T00:00:00Z",
        ])
        .env("CARDSYNC_SERVER", server)
        .env("CARDSYNC_TOKEN", &setup.admin)
        .env("CARDSYNC_CLIENT_STATE", "state-of-the-art");
    let registered = tokio::task::spawn_blocking(move || command.output().expect("runs"))
        .await
        .expect("joined");
    assert_eq!(registered.status.code(), Some(0), "{registered:?}");
    let listed = cardsync(server, admin, &["subscription", "list", "--tenant", &id]).await;
    assert!(stdout(&listed).contains(&subscription));
    assert!(
        stdout(&listed).contains("registered"),
        "{}",
        stdout(&listed)
    );
    // Registered by hand, so no subscription manager slot to recreate.
    let recreate = cardsync(
        server,
        admin,
        &["subscription", "recreate", "--tenant", &id],
    )
    .await;
    assert_eq!(recreate.status.code(), Some(3), "{recreate:?}");

    let sync = cardsync(server, admin, &["sync", "--tenant", &id, "-o", "json"]).await;
    assert_eq!(sync.status.code(), Some(0), "{sync:?}");
    let run = json(&sync)["run_id"].as_str().expect("run id").to_owned();
    let runs = cardsync(server, admin, &["runs", "--tenant", &id]).await;
    assert!(stdout(&runs).contains(&run), "{}", stdout(&runs));

    let invalid = cardsync(
        server,
        admin,
        &["scope", "set", "--tenant", &id, "--group", "not a group!"],
    )
    .await;
    assert_eq!(invalid.status.code(), Some(5));
    let filtered = cardsync(
        server,
        admin,
        &[
            "scope",
            "set",
            "--tenant",
            &id,
            "--exclude-guests",
            "--condition",
            "department",
            "--in",
            "Sales",
            "--in",
            "Marketing",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(filtered.status.code(), Some(0), "{filtered:?}");
    let scope = json(&filtered);
    assert_eq!(scope["exclude_guests"], true);
    assert_eq!(
        scope["condition"]["in"],
        serde_json::json!(["Sales", "Marketing"])
    );
    let unknown = cardsync(
        server,
        admin,
        &[
            "scope",
            "set",
            "--tenant",
            &id,
            "--condition",
            "departmnt",
            "--in",
            "x",
        ],
    )
    .await;
    assert_eq!(unknown.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown property"));

    // The sealing key: a reader may look, only an admin re-seals.
    let reader = Some(setup.reader.as_str());
    let status = cardsync(server, reader, &["sealing-key", "show", "-o", "json"]).await;
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    assert_eq!(json(&status)["current_key_id"], "primary");
    let refused = cardsync(server, reader, &["sealing-key", "reseal"]).await;
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");
    let resealed = cardsync(server, admin, &["sealing-key", "reseal", "-o", "json"]).await;
    assert_eq!(resealed.status.code(), Some(0), "{resealed:?}");
    assert!(
        json(&resealed)["resealed"].is_u64(),
        "{}",
        stdout(&resealed)
    );
}

#[tokio::test]
async fn rules_dry_run_prints_a_table_or_json_and_refuses_bad_rules_with_their_paths() {
    let setup = setup().await;
    let server = setup.server.as_str();
    let id = Uuid::new_v4().to_string();
    let created = cardsync(
        server,
        Some(&setup.admin),
        &["tenant", "create", "--id", &id, "--name", "Fabrikam"],
    )
    .await;
    assert_eq!(created.status.code(), Some(0), "{created:?}");
    let dir = std::env::temp_dir();
    let good = dir.join(format!("cardsync-rules-{id}.json"));
    std::fs::write(
        &good,
        r#"{"custom_fields": {"office": {"expression": "officeLocation"}}}"#,
    )
    .expect("rules file");
    let bad = dir.join(format!("cardsync-bad-rules-{id}.json"));
    std::fs::write(
        &bad,
        r#"{"custom_fields": {"office": {"expression": "oficeLocation"}}}"#,
    )
    .expect("rules file");
    let file = |path: &std::path::PathBuf| path.to_str().expect("path").to_owned();

    let table = cardsync(
        server,
        Some(&setup.admin),
        &["rules", "dry-run", "--tenant", &id, "-f", &file(&good)],
    )
    .await;
    assert_eq!(table.status.code(), Some(0), "{table:?}");
    let text = stdout(&table);
    assert!(text.starts_with("0 users: 0 cards would change"), "{text}");
    assert!(text.contains("  office: officeLocation"), "{text}");

    let answer = cardsync(
        server,
        Some(&setup.admin),
        &[
            "rules",
            "dry-run",
            "--tenant",
            &id,
            "-f",
            &file(&good),
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(answer.status.code(), Some(0), "{answer:?}");
    let preview = json(&answer);
    assert_eq!(preview["users"], 0);
    assert_eq!(preview["unpreviewable"][0]["field"], "office");
    assert_eq!(preview["enumeration_first"], true);

    let refused = cardsync(
        server,
        Some(&setup.admin),
        &["rules", "dry-run", "--tenant", &id, "-f", &file(&bad)],
    )
    .await;
    assert_eq!(refused.status.code(), Some(5), "{refused:?}");
    let errors = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        errors.contains("- custom_fields.office.expression") && errors.contains("oficeLocation"),
        "{errors}"
    );
    let reader = cardsync(
        server,
        Some(&setup.reader),
        &["rules", "dry-run", "--tenant", &id, "-f", &file(&good)],
    )
    .await;
    assert_eq!(reader.status.code(), Some(4), "{reader:?}");
    // A tenant without a Graph connection is not synced: nothing to apply the rules with.
    let apply = cardsync(
        server,
        Some(&setup.admin),
        &["rules", "apply", "--tenant", &id],
    )
    .await;
    assert_eq!(apply.status.code(), Some(5), "{apply:?}");
    assert!(String::from_utf8_lossy(&apply.stderr).contains("no Graph connection"));
    let missing = cardsync(
        server,
        Some(&setup.admin),
        &[
            "rules",
            "dry-run",
            "--tenant",
            &id,
            "-f",
            "/nonexistent/rules.json",
        ],
    )
    .await;
    assert_eq!(missing.status.code(), Some(1));
    for args in [
        &["rules", "dry-run", "--help"][..],
        &["rules", "apply", "--help"],
    ] {
        let help = cardsync(server, None, args).await;
        assert_eq!(help.status.code(), Some(0));
        assert!(stdout(&help).contains("Example"), "{}", stdout(&help));
    }
    let _ = std::fs::remove_file(&good);
    let _ = std::fs::remove_file(&bad);
}

#[tokio::test]
async fn the_cli_sets_lists_pauses_resumes_and_deletes_schedules() {
    let setup = setup().await;
    let server = setup.server.as_str();
    let (admin, reader) = (Some(setup.admin.as_str()), Some(setup.reader.as_str()));
    let id = Uuid::new_v4().to_string();
    let run = |token, args: &[&str]| {
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cardsync(server, token, &args).await
        }
    };
    assert_eq!(
        run(
            admin,
            &["tenant", "create", "--id", &id, "--name", "Tailspin"]
        )
        .await
        .status
        .code(),
        Some(0)
    );

    // The default, as a table: one row, daily at 00:00 UTC.
    let listed = run(reader, &["schedules", "list", "--tenant", &id]).await;
    assert_eq!(listed.status.code(), Some(0), "{listed:?}");
    let table = stdout(&listed);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("TARGET  CADENCE"), "{table}");
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[1].starts_with("tenant  daily"), "{table}");
    assert!(
        lines[1].contains("00:00") && lines[1].contains("UTC"),
        "{table}"
    );

    let set = run(
        admin,
        &[
            "schedules",
            "set",
            "--tenant",
            &id,
            "--cadence",
            "weekly",
            "--weekday",
            "monday",
            "--time",
            "02:30",
            "--time-zone",
            "Europe/Berlin",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(set.status.code(), Some(0), "{set:?}");
    let set = json(&set);
    assert_eq!(
        (
            &set["cadence"],
            &set["weekday"],
            &set["time"],
            &set["time_zone"],
            &set["default"]
        ),
        (
            &Value::from("weekly"),
            &Value::from("monday"),
            &Value::from("02:30"),
            &Value::from("Europe/Berlin"),
            &Value::from(false)
        )
    );
    let group = run(
        admin,
        &[
            "schedules",
            "set",
            "--tenant",
            &id,
            "--group",
            "group-7",
            "--cadence",
            "quarterly",
            "--day-of-month",
            "31",
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(json(&group)["target"], "group-7");

    let paused = run(
        admin,
        &["schedules", "pause", "--tenant", &id, "-o", "json"],
    )
    .await;
    assert_eq!(json(&paused)["paused"], true);
    let listed = json(
        &run(
            reader,
            &["schedules", "list", "--tenant", &id, "-o", "json"],
        )
        .await,
    );
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{listed}");
    assert_eq!(
        (&items[0]["paused"], &items[1]["paused"]),
        (&Value::from(true), &Value::from(false))
    );
    let resumed = run(
        admin,
        &["schedules", "resume", "--tenant", &id, "-o", "json"],
    )
    .await;
    assert_eq!(json(&resumed)["paused"], false);

    // Refusals: a bad zone (5), a reader changing (4), a group without a schedule (3), and
    // a cadence clap does not know (2).
    let bad_zone = run(
        admin,
        &[
            "schedules",
            "set",
            "--tenant",
            &id,
            "--cadence",
            "daily",
            "--time-zone",
            "Mars/Olympus",
        ],
    )
    .await;
    assert_eq!(bad_zone.status.code(), Some(5), "{bad_zone:?}");
    assert!(
        String::from_utf8_lossy(&bad_zone.stderr).contains("/time_zone"),
        "{bad_zone:?}"
    );
    let denied = run(reader, &["schedules", "pause", "--tenant", &id]).await;
    assert_eq!(denied.status.code(), Some(4));
    let missing = run(
        admin,
        &["schedules", "pause", "--tenant", &id, "--group", "group-8"],
    )
    .await;
    assert_eq!(missing.status.code(), Some(3));
    let usage = run(
        admin,
        &["schedules", "set", "--tenant", &id, "--cadence", "hourly"],
    )
    .await;
    assert_eq!(usage.status.code(), Some(2));

    for args in [
        &["schedules", "delete", "--tenant", &id][..],
        &["schedules", "delete", "--tenant", &id, "--group", "group-7"][..],
    ] {
        assert_eq!(run(admin, args).await.status.code(), Some(0));
    }
    let listed = json(
        &run(
            reader,
            &["schedules", "list", "--tenant", &id, "-o", "json"],
        )
        .await,
    );
    assert_eq!(listed["items"].as_array().expect("items").len(), 1);
    assert_eq!(listed["items"][0]["default"], true, "the default is back");
}

#[tokio::test]
async fn the_cli_saves_a_cards_photo_to_a_file_and_says_when_there_is_none() {
    let setup = setup().await;
    let server = setup.server.as_str();
    let tenant = Uuid::new_v4();
    let created = cardsync(
        server,
        Some(&setup.admin),
        &[
            "tenant",
            "create",
            "--id",
            &tenant.to_string(),
            "--name",
            "Contoso",
        ],
    )
    .await;
    assert_eq!(created.status.code(), Some(0), "{created:?}");
    let store = cardsync_photos::PhotoStore::open(&setup.photos).expect("photo store");
    let bytes = bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\n not really a png");
    let image = store.put(bytes.clone(), "image/png").await.expect("stored");
    let pool = cardsync_testkit::test_pool().await;
    let mut with_photo = cardsync_store::cards::Card::new(tenant);
    with_photo.photo = Some(image);
    let without = cardsync_store::cards::Card::new(tenant);
    let mut tx = pool.begin().await.expect("tx");
    for card in [&with_photo, &without] {
        cardsync_store::cards::insert(&mut tx, card)
            .await
            .expect("card");
    }
    tx.commit().await.expect("commit");

    let file = std::env::temp_dir().join(format!("cardsync-cli-photo-{}.png", Uuid::new_v4()));
    let file_text = file.to_string_lossy().into_owned();
    let card = with_photo.card_id.to_string();
    let saved = cardsync(
        server,
        Some(&setup.reader),
        &[
            "cards",
            "photo",
            "--tenant",
            &tenant.to_string(),
            &card,
            "--file",
            &file_text,
            "-o",
            "json",
        ],
    )
    .await;
    assert_eq!(saved.status.code(), Some(0), "{saved:?}");
    assert_eq!(json(&saved)["content_type"], "image/png");
    assert_eq!(std::fs::read(&file).expect("written"), bytes.to_vec());
    let _ = std::fs::remove_file(&file);

    let none = cardsync(
        server,
        Some(&setup.reader),
        &[
            "cards",
            "photo",
            "--tenant",
            &tenant.to_string(),
            &without.card_id.to_string(),
            "--file",
            &file_text,
        ],
    )
    .await;
    assert_eq!(none.status.code(), Some(3), "{none:?}");
    assert!(!file.exists(), "nothing is written without a photo");
}
