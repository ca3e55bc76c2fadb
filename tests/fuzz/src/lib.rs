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
//! | `admin_body` | an admin API request body (first byte: which route), parsed and checked |
//! | `jwt` | a bearer token, verified against a fixed JWKS and an HS256 secret (no network) |

use admin_api::requests::Body;
use cardsync_auth::{AuthSettings, KeySet, Verifier};
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
    ("admin_body", admin_body),
    ("jwt", jwt),
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

/// An admin API request body: the first byte picks the route (modulo their number), the rest is
/// the body, parsed and checked by the route's own code. A refusal is a client error (400, 413,
/// 415 or 422) with a code and a detail, never a 5xx.
pub fn admin_body(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let route = Body::ALL[usize::from(selector) % Body::ALL.len()];
    if let Err(problem) = route.check(body) {
        assert!(
            (400..500).contains(&problem.status),
            "{route:?} refused with {}",
            problem.status
        );
        assert!(problem.kind.starts_with("urn:cardsync:problem:"));
        assert!(!problem.detail.is_empty());
    }
}

/// A bearer token as the `Authorization` header carries it, verified by two verifiers (one
/// reading a tenant claim): HS256, and RS256 and ES256 against a fixed JWKS. A refusal is a
/// 401, 403 or 503 problem that never repeats a JWT-shaped token; an accepted token names its caller in
/// at most 200 printable characters.
pub fn jwt(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    for verifier in VERIFIERS.iter() {
        match RUNTIME.block_on(verifier.verify(token)) {
            Ok(principal) => {
                assert!(principal.subject.chars().count() <= 200);
                assert!(!principal.subject.chars().any(char::is_control));
            }
            Err(error) => {
                let problem = cardsync_auth::middleware::problem(&error);
                assert!(matches!(problem.status, 401 | 403 | 503), "{error:?}");
                // A JWT-shaped token (two dots) is never echoed; a shorter text may happen
                // to be a piece of the fixed refusal texts (the fuzzer finds those).
                assert!(token.matches('.').count() < 2 || !problem.detail.contains(token));
            }
        }
    }
}

/// The fixed JWKS the `jwt` target verifies against (an ES256 and an RS256 key; their private
/// halves signed the corpus's seeds and were thrown away).
pub const JWKS: &str = include_str!("jwks.json");

/// The HS256 secret the `jwt` target accepts.
pub const HS256_SECRET: &str = "fuzzing-hs256-secret-0123456789abcdef";

fn auth_settings(tenant_claim: Option<&str>) -> AuthSettings {
    AuthSettings {
        jwks_url: None,
        issuers: vec![
            "https://idp.fuzz".into(),
            "https://sts.windows.net/{tid}/".into(),
        ],
        audiences: vec!["api://cardsync".into()],
        roles_claim: "roles".into(),
        reader_role: "reader".into(),
        admin_role: "admin".into(),
        tenant_claim: tenant_claim.map(str::to_owned),
        leeway: std::time::Duration::from_secs(60),
        jwks_refresh_interval: std::time::Duration::from_secs(60),
        jwks_max_age: std::time::Duration::from_secs(3600),
        jwks_timeout: std::time::Duration::from_secs(1),
        allow_hs256: true,
        hs256_secret: Some(HS256_SECRET.to_owned().into()),
    }
}

/// The `jwt` target's verifiers: every tenant, and tenants from the `tid` claim.
pub static VERIFIERS: LazyLock<[Verifier; 2]> = LazyLock::new(|| {
    let document: Value = serde_json::from_str(JWKS).expect("the fixed JWKS is JSON");
    [None, Some("tid")]
        .map(|claim| Verifier::with_keys(&auth_settings(claim), Some(KeySet::fixed(&document))))
});

/// Runs the verifier's futures (which never wait: the keys are fixed).
pub static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
});

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
