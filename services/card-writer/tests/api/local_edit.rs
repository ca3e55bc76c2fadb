//! Local edits (as the admin API makes them, through `cardsync-cards`) and how later syncs
//! treat them.

use crate::helpers::{kinds, spawn_app, spawn_app_with, upsert};
use cardsync_cards::edit::EditError;
use cardsync_rules::{FieldRules, FieldStates, ValueSource};
use cardsync_store::audit;

#[tokio::test]
async fn overwrite_off_keeps_a_local_edit_and_overwrite_on_replaces_it() {
    let mut rules = FieldRules::default();
    rules.fields.job_title.overwrite = false;
    let mut app = spawn_app_with(rules, false).await;
    app.apply(&upsert(
        app.tenant,
        "u1",
        1,
        &[
            ("name", Some("John Smith")),
            ("job_title", Some("Director of Sales")),
        ],
    ))
    .await;
    let card = app.card_of("u1").await;

    let edited = app
        .edit(card.card_id, "job_title", Some("VP of Sales"))
        .await
        .expect("edited");
    let title = edited.fields.get("job_title").expect("title");
    assert_eq!(title.value.as_deref(), Some("VP of Sales"));
    assert_eq!(title.source, ValueSource::Local);
    app.edit(card.card_id, "name", Some("Johnny"))
        .await
        .expect("edited");

    app.apply(&upsert(
        app.tenant,
        "u1",
        2,
        &[
            ("name", Some("John Smith")),
            ("job_title", Some("Head of Sales")),
        ],
    ))
    .await;
    let card = app.card_of("u1").await;
    // Overwrite off: the local edit stays, and the directory's value is remembered.
    let title = card.fields.get("job_title").expect("title");
    assert_eq!(title.value.as_deref(), Some("VP of Sales"));
    assert_eq!(title.source, ValueSource::Local);
    assert_eq!(title.last_directory.as_deref(), Some("Head of Sales"));
    // Overwrite on: the directory wins.
    assert_eq!(card.fields.value("name"), Some("John Smith"));
    assert_eq!(
        card.fields.get("name").expect("name").source,
        ValueSource::Directory
    );

    let events = app.events().await;
    assert_eq!(
        kinds(&events),
        vec!["created", "updated", "updated", "updated"]
    );
    assert_eq!(events[3].1.changed_fields, vec!["name".to_owned()]);

    // Each audit row holds the fields whose state changed: the edited one for an edit; for
    // the sync, the name it took back and the title whose directory value alone moved.
    let history = audit::for_card(&app.pool, app.tenant, card.card_id)
        .await
        .expect("audit");
    let rows: Vec<(&str, Vec<String>, Vec<String>)> = history
        .iter()
        .map(|row| {
            let names = |states: &Option<sqlx::types::Json<FieldStates>>| {
                states.as_ref().map_or_else(Vec::new, |states| {
                    states.0.iter().map(|(name, _)| name.to_string()).collect()
                })
            };
            (
                row.action.as_str(),
                names(&row.fields_before),
                names(&row.fields_after),
            )
        })
        .collect();
    let both = vec!["job_title".to_owned(), "name".to_owned()];
    assert_eq!(
        rows,
        vec![
            ("created", vec![], both.clone()),
            (
                "local_edit",
                vec!["job_title".into()],
                vec!["job_title".into()]
            ),
            ("local_edit", vec!["name".into()], vec!["name".into()]),
            ("updated", both.clone(), both),
        ]
    );
    let synced = history[3].fields_after.as_ref().expect("after");
    assert_eq!(synced.0.get("job_title"), card.fields.get("job_title"));
    app.teardown().await;
}

#[tokio::test]
async fn a_locked_field_refuses_a_local_edit_with_the_reason() {
    let mut rules = FieldRules::default();
    rules.fields.name.locked = true;
    let app = spawn_app_with(rules, false).await;
    app.apply(&upsert(app.tenant, "u1", 1, &[("name", Some("Ann"))]))
        .await;
    let card = app.card_of("u1").await;

    let refused = app
        .edit(card.card_id, "name", Some("Annie"))
        .await
        .expect_err("a locked field is refused");
    assert!(matches!(refused, EditError::Refused(_)), "{refused:?}");
    assert!(
        refused.to_string().contains("managed by the directory"),
        "{refused}"
    );
    assert_eq!(app.card_of("u1").await.fields.value("name"), Some("Ann"));
    app.teardown().await;
}

#[tokio::test]
async fn edits_of_unknown_cards_and_bad_field_names_are_refused() {
    let app = spawn_app().await;
    let missing = uuid::Uuid::new_v4();
    assert!(matches!(
        app.edit(missing, "name", Some("x")).await,
        Err(EditError::UnknownCard(id)) if id == missing
    ));
    app.apply(&upsert(app.tenant, "u1", 1, &[("name", Some("Ann"))]))
        .await;
    let card = app.card_of("u1").await;
    assert!(matches!(
        app.edit(card.card_id, "Bad-Name", Some("x")).await,
        Err(EditError::BadFieldName(_))
    ));
    assert_eq!(app.card_of("u1").await.fields.value("name"), Some("Ann"));
    app.teardown().await;
}
