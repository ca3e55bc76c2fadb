//! One function per parser that takes outside input, each run on arbitrary bytes. A target
//! returns normally on every input (bad input is an error value, never a panic) and checks the
//! properties its parser promises. cargo-fuzz drives them coverage-guided on the nightly
//! toolchain (`make fuzz`, `tests/fuzz/cargo-fuzz`); `cargo test` replays the checked-in corpus
//! (`tests/fuzz/corpus/<target>/`) through them on stable, in `make ci`.
//!
//! | target | outside input |
//! |---|---|
//! | `notification_body` | a change-notification POST body (Graph, or anyone who finds the URL) |
//! | `lifecycle_body` | a lifecycle-notification POST body |
//! | `delta_page` | a Graph delta page, merged into a directory user and mapped to a card |
//! | `rules_document` | a tenant's field rules document, validated and applied |
//! | `expression` | a custom-field expression, parsed, diagnosed and evaluated |

use cardsync_rules::{DirectoryUser, Expression, FieldRules, map_user};
use serde_json::{Value, json};
use std::sync::LazyLock;

/// A fuzz target: takes any bytes, returns only if the parser kept its promises.
pub type Target = fn(&[u8]);

/// The names of the targets, as cargo-fuzz and the corpus folders know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("notification_body", notification_body),
    ("lifecycle_body", lifecycle_body),
    ("delta_page", delta_page),
    ("rules_document", rules_document),
    ("expression", expression),
];

/// The webhook's notification parser: every item of a collection is either a notification or a
/// per-item problem; the count of items is the count of the collection's values.
pub fn notification_body(data: &[u8]) {
    let Ok(items) = webhook::parse_batch(data) else {
        return;
    };
    let values = serde_json::from_slice::<Value>(data)
        .ok()
        .and_then(|root| root.get("value").and_then(Value::as_array).map(Vec::len));
    assert_eq!(Some(items.len()), values, "one result per item");
}

/// The same parser on lifecycle bodies (their own corpus): a lifecycle item never parses as a
/// change, and a change never as a lifecycle event.
pub fn lifecycle_body(data: &[u8]) {
    let Ok(items) = webhook::parse_batch(data) else {
        return;
    };
    let Ok(root) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Some(values) = root.get("value").and_then(Value::as_array) else {
        return;
    };
    for (item, value) in items.iter().zip(values) {
        if let Ok(notification) = item {
            let is_lifecycle = value.get("lifecycleEvent").is_some_and(Value::is_string);
            assert_eq!(
                notification.as_str() == "lifecycle",
                is_lifecycle,
                "a notification's kind follows its fields"
            );
        }
    }
}

/// A delta page as Graph sends it, each item merged into a user (fresh, and over an existing
/// one) and mapped with the default rules.
pub fn delta_page(data: &[u8]) {
    let Ok(page) = cardsync_graph::DeltaPage::parse(data) else {
        return;
    };
    for item in &page.items {
        if let Ok(user) = DirectoryUser::from_graph(item) {
            let _ = map_user(&DEFAULT_RULES, &user);
        }
        let mut existing = SAMPLE_USER.clone();
        if existing.apply_delta(item).is_ok() {
            let _ = map_user(&DEFAULT_RULES, &existing);
        }
    }
}

/// A field rules document: parsed, validated, and when valid applied to a sample user and asked
/// which Graph properties it needs.
pub fn rules_document(data: &[u8]) {
    let Ok(rules) = serde_json::from_slice::<FieldRules>(data) else {
        return;
    };
    if rules.validate().is_ok() {
        let _ = map_user(&rules, &SAMPLE_USER);
        let _ = rules.graph_select();
    }
}

/// A custom-field expression: parsing never panics, a parsed one evaluates and diagnoses, and
/// parsing its own source again gives the same expression.
pub fn expression(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let lenient = Expression::parse_lenient(source);
    let _ = lenient.evaluate_text(&SAMPLE_USER);
    if let Ok(parsed) = Expression::parse(source) {
        let _ = parsed.diagnose();
        let _ = parsed.evaluate_text(&SAMPLE_USER);
        let again = Expression::parse(parsed.source()).expect("a parsed source parses again");
        assert!(again == parsed);
    }
}

static DEFAULT_RULES: LazyLock<FieldRules> = LazyLock::new(FieldRules::default);

static SAMPLE_USER: LazyLock<DirectoryUser> = LazyLock::new(|| {
    DirectoryUser::from_graph(&json!({
        "id": "7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
        "displayName": "Adele Vance",
        "mail": "adele@contoso.example",
        "userPrincipalName": "adele@contoso.example",
        "jobTitle": "Retail Manager",
        "businessPhones": ["+1 425 555 0109"],
        "mobilePhone": null,
        "city": "Bellevue",
        "country": "US",
        "accountEnabled": true,
        "onPremisesExtensionAttributes": {"extensionAttribute1": "North"},
        "extension_0a1b2c3d_costCenter": "CC-42"
    }))
    .expect("the sample user is a user")
});
