use super::*;
use serde_json::json;

fn messages(rules: &FieldRules) -> Vec<String> {
    rules
        .validate()
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn empty_json_is_the_default_mapping() {
    let rules: FieldRules = serde_json::from_value(json!({})).unwrap();
    assert_eq!(rules, FieldRules::default());
    assert!(rules.validate().is_ok());
    assert_eq!(rules.fields.flags(StandardField::Name), FieldFlags::DEFAULT);
    assert!(!rules.fields.photo.overwrite);
    assert_eq!(rules.uid.source, UidSource::ObjectId);
    assert_eq!(rules.uid.when_missing, MissingUid::Skip);
    assert_eq!(rules.removal, RemovalPolicy::Deactivate);
    assert_eq!(rules.phone_order, PhoneOrder::MobileFirst);
}

#[test]
fn round_trips_through_json() {
    let rules: FieldRules = serde_json::from_value(json!({
        "fields": {
            "job_title": {"overwrite": false},
            "name": {"source": "join(\" \", givenName, surname)", "locked": true},
            "photo": {"overwrite": true}
        },
        "phone_order": "business_first",
        "custom_fields": {
            "cost_center": {"expression": "extension_abc123_costCenter", "sync": false}
        },
        "uid": {"source": "employee_id", "when_missing": "use_object_id"},
        "removal": "delete"
    }))
    .unwrap();
    assert!(!rules.fields.job_title.overwrite);
    assert!(rules.fields.job_title.sync);
    assert!(rules.fields.name.locked);
    assert!(rules.fields.photo.overwrite);
    assert_eq!(rules.phone_order, PhoneOrder::BusinessFirst);
    assert!(!rules.custom_fields["cost_center"].sync);
    assert_eq!(rules.uid.source, UidSource::EmployeeId);
    assert_eq!(rules.removal, RemovalPolicy::Delete);
    assert!(rules.validate().is_ok());
    let json = serde_json::to_value(&rules).unwrap();
    let back: FieldRules = serde_json::from_value(json).unwrap();
    assert_eq!(back, rules);
}

#[test]
fn validation_lists_every_problem_with_its_path_and_span() {
    let rules: FieldRules = serde_json::from_value(json!({
        "fields": {
            "phone": {"source": "coalesce(mobilePhone,", "locked": true, "overwrite": false},
            "photo": {"locked": true}
        },
        "custom_fields": {
            "cost_center": {"expression": "cat(a, b)"},
            "Bad Name": {"expression": "displayName"},
            "email": {"expression": "mail"},
            "building": {"expression": "coalesce(extensionAttribute3, officeLocaton)"}
        }
    }))
    .unwrap();
    assert_eq!(
        messages(&rules),
        vec![
            "fields.phone.locked: a locked field is directory-managed: sync and overwrite must be on",
            "fields.phone.source: expected an expression, found end of expression at 21..21",
            "fields.photo.locked: a locked field is directory-managed: sync and overwrite must be on",
            "custom_fields.Bad Name: field names must start with a lowercase letter and contain only a-z, 0-9 and _ (at most 64 bytes)",
            "custom_fields.building.expression: unknown property \"officeLocaton\" at 30..43",
            "custom_fields.cost_center.expression: unknown function \"cat\" at 0..3",
            "custom_fields.email: \"email\" is a standard field",
        ]
    );
}

#[test]
fn field_names_are_checked() {
    assert!(FieldName::is_valid("cost_center2"));
    assert!(!FieldName::is_valid("2cost"));
    assert!(!FieldName::is_valid("_x"));
    assert!(!FieldName::is_valid("Cost"));
    assert!(!FieldName::is_valid(""));
    assert!(!FieldName::is_valid(&"a".repeat(65)));
}

#[test]
fn graph_select_covers_defaults_uid_and_custom_fields() {
    let mut rules = FieldRules::default();
    rules.uid.source = UidSource::EmployeeId;
    rules.custom_fields.insert(
        "building".into(),
        CustomFieldRule::new(Expression::parse("extensionAttribute3").unwrap()),
    );
    let select = rules.graph_select();
    for property in [
        "id",
        "accountEnabled",
        "employeeId",
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
        "onPremisesExtensionAttributes",
    ] {
        assert!(select.contains(property), "{property}");
    }
}

#[test]
fn every_builtin_expression_parses() {
    for order in [PhoneOrder::MobileFirst, PhoneOrder::BusinessFirst] {
        for field in StandardField::ALL {
            let source = default_source(field, order);
            assert_eq!(source.is_none(), field == StandardField::Photo);
            if let Some(source) = source {
                assert!(source.diagnose().is_empty(), "{source}");
            }
        }
    }
}
