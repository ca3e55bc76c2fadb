//! Property tests: the parser and evaluator are total and deterministic, merging is idempotent.

use cardsync_rules::{
    CustomFieldRule, DeltaEffect, DirectoryUser, Expression, FieldName, FieldRules, FieldState,
    FieldStates, MappedCard, MissingUid, PhoneOrder, UidSource, ValueSource, map_user, plan_create,
    plan_update,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const PROPERTY_NAMES: &[&str] = &[
    "displayName",
    "mail",
    "userPrincipalName",
    "jobTitle",
    "companyName",
    "mobilePhone",
    "businessPhones",
    "streetAddress",
    "city",
    "state",
    "postalCode",
    "country",
    "department",
    "employeeId",
    "accountEnabled",
    "onPremisesExtensionAttributes",
    "extension_abc123_costCenter",
    "DisplayName",
];

fn property_path() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(PROPERTY_NAMES).prop_map(str::to_owned),
        (1u8..=16).prop_map(|n| format!("onPremisesExtensionAttributes.extensionAttribute{n}")),
        (1u8..=16).prop_map(|n| format!("extensionAttribute{n}")),
        "[a-z][a-zA-Z0-9_]{0,8}(\\.[a-z][a-zA-Z0-9_]{0,5}){0,2}",
    ]
}

fn string_literal() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|text| serde_json::to_string(&text).expect("strings serialise"))
}

/// Valid expression sources, nested a few levels.
fn expression_source() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![property_path(), string_literal()];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 1..5)
                .prop_map(|args| format!("coalesce({})", args.join(", "))),
            (
                inner.clone(),
                proptest::collection::vec(inner.clone(), 1..5)
            )
                .prop_map(|(sep, parts)| format!("join({sep}, {})", parts.join(","))),
            (
                proptest::sample::select(&["first", "lower", "upper", "trim"][..]),
                inner
            )
                .prop_map(|(function, arg)| format!("{function}( {arg} )")),
        ]
    })
}

fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        "[ a-zA-Z0-9@.+-]{0,20}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    (1u8..=16).prop_map(|n| format!("extensionAttribute{n}")),
                    "[a-zA-Z]{1,8}",
                ],
                inner,
                0..4
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn graph_user() -> impl Strategy<Value = Value> {
    (
        "[0-9a-fA-F-]{1,36}",
        proptest::collection::btree_map(
            prop_oneof![
                proptest::sample::select(PROPERTY_NAMES).prop_map(str::to_owned),
                "[a-zA-Z@._]{1,12}",
            ],
            json_value(),
            0..12,
        ),
    )
        .prop_map(|(id, properties)| {
            let mut object: Map<String, Value> = properties.into_iter().collect();
            object.insert("id".into(), Value::String(id));
            Value::Object(object)
        })
}

fn optional_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof!["[a-c ]{0,3}", any::<String>()])
}

fn flags() -> impl Strategy<Value = (bool, bool, bool)> {
    (any::<bool>(), any::<bool>(), any::<bool>())
}

const MERGE_FIELDS: &[&str] = &["name", "job_title", "photo", "badge", "nickname"];

fn merge_rules() -> impl Strategy<Value = FieldRules> {
    (flags(), flags(), flags(), flags()).prop_map(|(name, title, photo, badge)| {
        let mut rules = FieldRules::default();
        (
            rules.fields.name.sync,
            rules.fields.name.overwrite,
            rules.fields.name.locked,
        ) = name;
        (
            rules.fields.job_title.sync,
            rules.fields.job_title.overwrite,
            rules.fields.job_title.locked,
        ) = title;
        (
            rules.fields.photo.sync,
            rules.fields.photo.overwrite,
            rules.fields.photo.locked,
        ) = photo;
        let mut rule = CustomFieldRule::new(
            Expression::parse("extensionAttribute1").expect("valid expression"),
        );
        (rule.sync, rule.overwrite, rule.locked) = badge;
        rules.custom_fields.insert("badge".into(), rule);
        rules
    })
}

fn field_state() -> impl Strategy<Value = FieldState> {
    (optional_text(), any::<bool>(), optional_text()).prop_map(|(value, local, last)| FieldState {
        value,
        source: if local {
            ValueSource::Local
        } else {
            ValueSource::Directory
        },
        last_directory: last,
    })
}

fn current_states() -> impl Strategy<Value = FieldStates> {
    proptest::collection::vec(
        (proptest::sample::select(MERGE_FIELDS), field_state()),
        0..6,
    )
    .prop_map(|entries| {
        entries
            .into_iter()
            .map(|(name, state)| (FieldName::from(name), state))
            .collect()
    })
}

fn incoming_card() -> impl Strategy<Value = MappedCard> {
    proptest::collection::btree_map(
        proptest::sample::select(MERGE_FIELDS).prop_map(FieldName::from),
        optional_text(),
        0..6,
    )
    .prop_map(|fields| MappedCard {
        object_id: "u".into(),
        uid: "u".into(),
        link_email: None,
        fields,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_parser_never_panics_on_arbitrary_text(source in any::<String>()) {
        let _ = Expression::parse(&source);
        let _ = Expression::parse_lenient(source).diagnose();
    }

    #[test]
    fn the_parser_never_panics_on_grammar_shaped_text(
        source in "[a-zA-Z_(),.\" \\\\u{}0-9\u{e9}\u{1F600}]{0,48}"
    ) {
        if let Ok(expression) = Expression::parse(&source) {
            let span = expression.ast().expect("parsed").span();
            prop_assert!(span.end <= source.len());
        }
    }

    #[test]
    fn generated_expressions_parse(source in expression_source()) {
        prop_assert!(Expression::parse(&source).is_ok(), "{}", source);
    }

    #[test]
    fn evaluation_is_total_and_deterministic(
        source in expression_source(),
        graph in graph_user(),
    ) {
        let expression = Expression::parse(&source).expect("generated expressions are valid");
        let user = DirectoryUser::from_graph(&graph).expect("generated users have an id");
        let first = expression.evaluate(&user);
        let second = expression.evaluate(&user.clone());
        prop_assert_eq!(&first, &second);
        if let Some(text) = expression.evaluate_text(&user) {
            prop_assert!(!text.is_empty());
            prop_assert_eq!(text.trim(), text.as_str());
        }
    }

    #[test]
    fn mapping_is_total_and_deterministic(
        source in expression_source(),
        graph in graph_user(),
        uid in proptest::sample::select(&[UidSource::ObjectId, UidSource::EmployeeId, UidSource::Mail][..]),
        fallback in any::<bool>(),
        business_first in any::<bool>(),
    ) {
        let mut rules = FieldRules::default();
        rules.uid.source = uid;
        rules.uid.when_missing = if fallback { MissingUid::UseObjectId } else { MissingUid::Skip };
        rules.phone_order = if business_first { PhoneOrder::BusinessFirst } else { PhoneOrder::MobileFirst };
        rules.custom_fields.insert(
            "custom".into(),
            CustomFieldRule::new(Expression::parse(&source).expect("valid")),
        );
        let user = DirectoryUser::from_graph(&graph).expect("generated users have an id");
        let first = map_user(&rules, &user);
        prop_assert_eq!(&first, &map_user(&rules, &user));
        if let Ok(card) = first {
            prop_assert!(!card.uid.is_empty());
            for value in card.fields.values().flatten() {
                prop_assert!(!value.trim().is_empty());
            }
        } else {
            prop_assert!(!fallback && uid != UidSource::ObjectId);
        }
    }

    #[test]
    fn applying_a_delta_twice_changes_nothing_the_second_time(
        base in graph_user(),
        delta in graph_user(),
    ) {
        let mut user = DirectoryUser::from_graph(&base).expect("has id");
        let mut delta = delta;
        delta["id"] = Value::String(user.id().to_owned());
        user.apply_delta(&delta).expect("same id");
        let once = user.clone();
        prop_assert_eq!(user.apply_delta(&delta).expect("same id"), DeltaEffect::Unchanged);
        prop_assert_eq!(user, once);
    }

    #[test]
    fn plan_update_is_idempotent(
        rules in merge_rules(),
        current in current_states(),
        incoming in incoming_card(),
    ) {
        let first = plan_update(&rules, &current, &incoming);
        let second = plan_update(&rules, &first.states, &incoming);
        prop_assert!(second.is_unchanged(), "{:?}", second.changes);
        prop_assert_eq!(&second.states, &first.states);
        for (field, flags) in rules.managed_fields() {
            if flags.locked && let Some(value) = incoming.fields.get(&field) {
                let expected = value.as_deref().map(str::trim).filter(|v| !v.is_empty());
                prop_assert_eq!(first.states.value(field.as_str()), expected);
            }
        }
    }

    #[test]
    fn updating_a_new_card_with_its_own_values_changes_nothing(
        rules in merge_rules(),
        incoming in incoming_card(),
    ) {
        let created = plan_create(&rules, &incoming);
        let plan = plan_update(&rules, &created, &incoming);
        let all_sync = rules.managed_fields().iter().all(|(_, f)| f.sync || !f.overwrite);
        if all_sync {
            prop_assert!(plan.is_unchanged(), "{:?}", plan.changes);
        }
        let again = plan_update(&rules, &plan.states, &incoming);
        prop_assert_eq!(again.states, plan.states);
    }
}
