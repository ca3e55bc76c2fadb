//! Mapping a directory user to the card values the directory gives, under a tenant's rules.
//!
//! Used by the delta-worker to fill a card command. The photo is not an expression: its etag is
//! added with [`MappedCard::set_photo`] by whoever detected it.

use crate::expr::ExprError;
use crate::rules::{FieldName, FieldRules, MissingUid, StandardField, UidSource};
use crate::user::DirectoryUser;
use std::collections::BTreeMap;

/// The directory's values for one person's card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedCard {
    /// The Entra object id.
    pub object_id: String,
    /// The tenant's UID for this person (see [`crate::UidSource`]).
    pub uid: String,
    /// The email used to find an existing card to link, lowercased (the `email` field's value,
    /// whatever its flags). The card-writer compares it case-insensitively.
    pub link_email: Option<String>,
    /// Every field the rules map, with the directory's value: `None` means the directory has
    /// none (the card value is cleared where the flags allow). A field absent from the map was
    /// not reported (e.g. a photo whose etag is unknown) and is left alone.
    pub fields: BTreeMap<FieldName, Option<String>>,
}

impl MappedCard {
    /// Rebuilds a mapped card from a card command's parts (the card-writer's side); the link
    /// email is derived from the `email` field, lowercased, exactly as [`map_user`] does.
    pub fn from_parts(
        object_id: impl Into<String>,
        uid: impl Into<String>,
        fields: BTreeMap<FieldName, Option<String>>,
    ) -> Self {
        Self {
            object_id: object_id.into(),
            uid: uid.into(),
            link_email: link_email_of(&fields),
            fields,
        }
    }

    /// Records the photo etag: `Some` when the user has a photo, `None` when Graph says none.
    pub fn set_photo(&mut self, etag: Option<String>) {
        self.fields.insert(
            StandardField::Photo.into(),
            etag.filter(|e| !e.trim().is_empty()),
        );
    }

    /// The directory's value of a field (`None` when it has none or the field was not reported).
    pub fn value(&self, field: &str) -> Option<&str> {
        self.fields.get(field).and_then(Option::as_deref)
    }
}

/// Why a user gets no card command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmappable {
    /// The UID property is empty and the rules say to skip such users.
    #[error("user {object_id} has no {uid_source} to use as UID")]
    MissingUid {
        /// The user.
        object_id: String,
        /// The UID source that was empty.
        uid_source: UidSource,
    },
    /// A field's expression is invalid (the rules were stored without validation).
    #[error("field {field} has an invalid expression: {error}")]
    InvalidExpression {
        /// The field.
        field: FieldName,
        /// The parse problem.
        error: ExprError,
    },
}

fn link_email_of(fields: &BTreeMap<FieldName, Option<String>>) -> Option<String> {
    fields
        .get(StandardField::Email.as_str())
        .and_then(Option::as_deref)
        .map(str::trim)
        .filter(|email| !email.is_empty())
        .map(str::to_lowercase)
}

fn uid_of(rules: &FieldRules, user: &DirectoryUser) -> Result<String, Unmappable> {
    let object_id = || user.id().trim().to_lowercase();
    let value = match rules.uid.source {
        UidSource::ObjectId => return Ok(object_id()),
        UidSource::EmployeeId => user.employee_id().map(str::to_owned),
        UidSource::Mail => user.mail().map(str::to_lowercase),
    };
    match (value, rules.uid.when_missing) {
        (Some(uid), _) => Ok(uid),
        (None, MissingUid::UseObjectId) => Ok(object_id()),
        (None, MissingUid::Skip) => Err(Unmappable::MissingUid {
            object_id: user.id().to_owned(),
            uid_source: rules.uid.source,
        }),
    }
}

/// Maps a user through the rules: the UID, the link email and every mapped field's value
/// (trimmed; blank is `None`). Deterministic and total on any user data.
pub fn map_user(rules: &FieldRules, user: &DirectoryUser) -> Result<MappedCard, Unmappable> {
    let uid = uid_of(rules, user)?;
    let mut fields = BTreeMap::new();
    let text_fields = StandardField::ALL.into_iter().filter_map(|field| {
        rules
            .source_of(field)
            .map(|expression| (FieldName::from(field), expression))
    });
    let custom_fields = rules
        .custom_fields
        .iter()
        .map(|(name, rule)| (FieldName::new(name.clone()), &rule.expression));
    for (field, expression) in text_fields.chain(custom_fields) {
        if let Some(error) = expression.error() {
            return Err(Unmappable::InvalidExpression {
                field,
                error: error.clone(),
            });
        }
        fields.insert(field, expression.evaluate_text(user));
    }
    let link_email = link_email_of(&fields);
    Ok(MappedCard {
        object_id: user.id().to_owned(),
        uid,
        link_email,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::Expression;
    use crate::rules::{CustomFieldRule, PhoneOrder, StandardFieldRule};
    use serde_json::{Value, json};

    fn user(properties: Value) -> DirectoryUser {
        let mut object = json!({"id": "6E5C0B2A-1111-4222-8333-944455556666"});
        if let (Value::Object(base), Value::Object(extra)) = (&mut object, properties) {
            base.extend(extra);
        }
        DirectoryUser::from_graph(&object).unwrap()
    }

    fn map(rules: &FieldRules, properties: Value) -> MappedCard {
        map_user(rules, &user(properties)).unwrap()
    }

    fn field(card: &MappedCard, name: &str) -> Option<String> {
        card.fields.get(name).cloned().expect("field is mapped")
    }

    #[test]
    fn name_comes_from_display_name() {
        let card = map(
            &FieldRules::default(),
            json!({"displayName": "  Jessica Swift "}),
        );
        assert_eq!(field(&card, "name").as_deref(), Some("Jessica Swift"));
    }

    #[test]
    fn email_is_mail_else_user_principal_name() {
        let rules = FieldRules::default();
        let card = map(
            &rules,
            json!({"mail": "Jessica.Swift@Contoso.example", "userPrincipalName": "jswift@contoso.example"}),
        );
        assert_eq!(
            field(&card, "email").as_deref(),
            Some("Jessica.Swift@Contoso.example")
        );
        assert_eq!(
            card.link_email.as_deref(),
            Some("jessica.swift@contoso.example")
        );

        let card = map(
            &rules,
            json!({"mail": null, "userPrincipalName": "jswift@contoso.example"}),
        );
        assert_eq!(
            field(&card, "email").as_deref(),
            Some("jswift@contoso.example")
        );

        let card = map(
            &rules,
            json!({"mail": "   ", "userPrincipalName": "u@c.example"}),
        );
        assert_eq!(field(&card, "email").as_deref(), Some("u@c.example"));

        let card = map(&rules, json!({}));
        assert_eq!(field(&card, "email"), None);
        assert_eq!(card.link_email, None);
    }

    #[test]
    fn from_parts_derives_the_same_link_email() {
        let card = map(
            &FieldRules::default(),
            json!({"mail": "Ann@Contoso.example"}),
        );
        let rebuilt = MappedCard::from_parts(&*card.object_id, &*card.uid, card.fields.clone());
        assert_eq!(rebuilt, card);
    }

    #[test]
    fn job_title_company_and_department_map_directly() {
        let card = map(
            &FieldRules::default(),
            json!({"jobTitle": "Director of Marketing", "companyName": "Contoso", "department": "Marketing"}),
        );
        assert_eq!(
            field(&card, "job_title").as_deref(),
            Some("Director of Marketing")
        );
        assert_eq!(field(&card, "company").as_deref(), Some("Contoso"));
        assert_eq!(field(&card, "department").as_deref(), Some("Marketing"));
        let empty = map(&FieldRules::default(), json!({"jobTitle": ""}));
        assert_eq!(field(&empty, "job_title"), None);
        assert_eq!(field(&empty, "company"), None);
        assert_eq!(field(&empty, "department"), None);
    }

    #[test]
    fn phone_is_mobile_first_by_default() {
        let rules = FieldRules::default();
        let both = json!({"mobilePhone": "+1 555 0101", "businessPhones": ["+1 555 0100"]});
        assert_eq!(
            field(&map(&rules, both), "phone").as_deref(),
            Some("+1 555 0101")
        );
        let business_only = json!({"mobilePhone": null, "businessPhones": ["+1 555 0100"]});
        assert_eq!(
            field(&map(&rules, business_only), "phone").as_deref(),
            Some("+1 555 0100")
        );
        let none = json!({"businessPhones": []});
        assert_eq!(field(&map(&rules, none), "phone"), None);
    }

    #[test]
    fn phone_can_prefer_business_phones() {
        let rules = FieldRules {
            phone_order: PhoneOrder::BusinessFirst,
            ..FieldRules::default()
        };
        let both = json!({"mobilePhone": "+1 555 0101", "businessPhones": ["+1 555 0100"]});
        assert_eq!(
            field(&map(&rules, both), "phone").as_deref(),
            Some("+1 555 0100")
        );
        let mobile_only = json!({"mobilePhone": "+1 555 0101", "businessPhones": [" "]});
        assert_eq!(
            field(&map(&rules, mobile_only), "phone").as_deref(),
            Some("+1 555 0101")
        );
    }

    #[test]
    fn location_joins_present_parts_in_order() {
        let rules = FieldRules::default();
        let all = json!({
            "streetAddress": "1 Main St", "city": "Springfield", "state": "IL",
            "postalCode": "62701", "country": "US"
        });
        assert_eq!(
            field(&map(&rules, all), "location").as_deref(),
            Some("1 Main St, Springfield, IL, 62701, US")
        );
        let some =
            json!({"streetAddress": "", "city": "São Paulo", "state": null, "country": "BR"});
        assert_eq!(
            field(&map(&rules, some), "location").as_deref(),
            Some("São Paulo, BR")
        );
        assert_eq!(field(&map(&rules, json!({})), "location"), None);
    }

    #[test]
    fn unicode_values_survive() {
        let card = map(
            &FieldRules::default(),
            json!({"displayName": "李小龍 🐉", "jobTitle": "Ingénieure\u{00A0}", "city": "Zürich"}),
        );
        assert_eq!(field(&card, "name").as_deref(), Some("李小龍 🐉"));
        assert_eq!(field(&card, "job_title").as_deref(), Some("Ingénieure"));
        assert_eq!(field(&card, "location").as_deref(), Some("Zürich"));
    }

    #[test]
    fn photo_is_not_mapped_until_its_etag_is_known() {
        let mut card = map(&FieldRules::default(), json!({}));
        assert!(!card.fields.contains_key("photo"));
        card.set_photo(Some("W/\"etag-1\"".into()));
        assert_eq!(card.value("photo"), Some("W/\"etag-1\""));
        card.set_photo(None);
        assert_eq!(card.fields.get("photo"), Some(&None));
    }

    #[test]
    fn a_source_override_replaces_the_default() {
        let mut rules = FieldRules::default();
        rules.fields.name = StandardFieldRule {
            source: Some(Expression::parse(r#"join(" ", givenName, surname)"#).unwrap()),
            ..StandardFieldRule::default()
        };
        let card = map(
            &rules,
            json!({"displayName": "Swift, Jessica", "givenName": "Jessica", "surname": "Swift"}),
        );
        assert_eq!(field(&card, "name").as_deref(), Some("Jessica Swift"));
    }

    #[test]
    fn custom_fields_read_extension_and_on_premises_attributes() {
        let mut rules = FieldRules::default();
        for (name, source) in [
            (
                "cost_center",
                "extension_0a1b2c3d4e5f60718293a4b5c6d7e8f9_costCenter",
            ),
            (
                "building",
                "onPremisesExtensionAttributes.extensionAttribute3",
            ),
            (
                "badge",
                "coalesce(extensionAttribute5, employeeId, \"n/a\")",
            ),
            ("pronouns", "lower(extensionAttribute9)"),
        ] {
            rules.custom_fields.insert(
                name.into(),
                CustomFieldRule::new(Expression::parse(source).unwrap()),
            );
        }
        assert!(rules.validate().is_ok());
        let card = map(
            &rules,
            json!({
                "extension_0a1b2c3d4e5f60718293a4b5c6d7e8f9_costCenter": "CC-4711",
                "onPremisesExtensionAttributes": {"extensionAttribute3": "B7", "extensionAttribute9": "She/Her"}
            }),
        );
        assert_eq!(field(&card, "cost_center").as_deref(), Some("CC-4711"));
        assert_eq!(field(&card, "building").as_deref(), Some("B7"));
        assert_eq!(field(&card, "badge").as_deref(), Some("n/a"));
        assert_eq!(field(&card, "pronouns").as_deref(), Some("she/her"));
    }

    #[test]
    fn uid_defaults_to_the_lowercased_object_id() {
        let card = map(&FieldRules::default(), json!({"employeeId": "E1"}));
        assert_eq!(card.uid, "6e5c0b2a-1111-4222-8333-944455556666");
        assert_eq!(card.object_id, "6E5C0B2A-1111-4222-8333-944455556666");
    }

    #[test]
    fn uid_can_be_the_employee_id_or_the_lowercased_mail() {
        let mut rules = FieldRules::default();
        rules.uid.source = UidSource::EmployeeId;
        assert_eq!(map(&rules, json!({"employeeId": " E-0042 "})).uid, "E-0042");
        rules.uid.source = UidSource::Mail;
        assert_eq!(
            map(&rules, json!({"mail": "Jessica@Contoso.example"})).uid,
            "jessica@contoso.example"
        );
    }

    #[test]
    fn a_missing_uid_skips_the_user_by_default() {
        let mut rules = FieldRules::default();
        rules.uid.source = UidSource::EmployeeId;
        let err = map_user(&rules, &user(json!({"employeeId": "  "}))).unwrap_err();
        assert_eq!(
            err,
            Unmappable::MissingUid {
                object_id: "6E5C0B2A-1111-4222-8333-944455556666".into(),
                uid_source: UidSource::EmployeeId
            }
        );
        assert_eq!(
            err.to_string(),
            "user 6E5C0B2A-1111-4222-8333-944455556666 has no employeeId to use as UID"
        );
    }

    #[test]
    fn a_missing_uid_can_fall_back_to_the_object_id() {
        let mut rules = FieldRules::default();
        rules.uid.source = UidSource::Mail;
        rules.uid.when_missing = MissingUid::UseObjectId;
        assert_eq!(
            map(&rules, json!({"mail": null})).uid,
            "6e5c0b2a-1111-4222-8333-944455556666"
        );
    }

    #[test]
    fn an_invalid_stored_expression_makes_the_user_unmappable() {
        let mut rules = FieldRules::default();
        rules.custom_fields.insert(
            "broken".into(),
            CustomFieldRule::new(Expression::parse_lenient("cat(mail)")),
        );
        let err = map_user(&rules, &user(json!({}))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field broken has an invalid expression: unknown function \"cat\" at 0..3"
        );
    }
}
