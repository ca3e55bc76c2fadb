//! A tenant's field rules: which card fields come from which directory properties, the per-field
//! sync / overwrite / locked flags, custom fields, the UID and the removal policy.
//!
//! Serialised as JSON for storage; every key has a default, so `{}` is the default mapping.
//! Loading never fails on a bad expression; [`FieldRules::validate`] lists every problem.

use crate::expr::{ExprError, Expression};
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::LazyLock;

/// The name of a card field: a standard field (`name`, `email`, …, `photo`) or a custom one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FieldName(String);

impl FieldName {
    /// Wraps a name as given (the card-writer receives names from card commands).
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The standard field this name denotes, if any.
    pub fn standard(&self) -> Option<StandardField> {
        StandardField::from_name(&self.0)
    }

    /// Whether `name` follows the one field-name grammar of cardsync: `[a-z][a-z0-9_]*`, at
    /// most [`MAX_FIELD_NAME_LEN`] bytes. Rules, card commands and local edits all check it.
    pub fn is_valid(name: &str) -> bool {
        let mut chars = name.chars();
        name.len() <= MAX_FIELD_NAME_LEN
            && chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    }
}

impl Borrow<str> for FieldName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<StandardField> for FieldName {
    fn from(field: StandardField) -> Self {
        Self(field.as_str().to_owned())
    }
}

impl From<&str> for FieldName {
    fn from(name: &str) -> Self {
        Self(name.to_owned())
    }
}

/// The built-in card fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StandardField {
    /// `name` ← `displayName`.
    Name,
    /// `email` ← `mail`, else `userPrincipalName`.
    Email,
    /// `job_title` ← `jobTitle`.
    JobTitle,
    /// `company` ← `companyName`.
    Company,
    /// `phone` ← `mobilePhone`, else the first `businessPhones` (order configurable).
    Phone,
    /// `location` ← `streetAddress`, `city`, `state`, `postalCode`, `country` joined with `", "`.
    Location,
    /// `department` ← `department`.
    Department,
    /// `photo`: the profile photo, carried by its etag; never an expression.
    Photo,
}

impl StandardField {
    /// Every standard field, in card order.
    pub const ALL: [StandardField; 8] = [
        StandardField::Name,
        StandardField::Email,
        StandardField::JobTitle,
        StandardField::Company,
        StandardField::Phone,
        StandardField::Location,
        StandardField::Department,
        StandardField::Photo,
    ];

    /// The field's stable name, on cards and in commands.
    pub fn as_str(self) -> &'static str {
        match self {
            StandardField::Name => "name",
            StandardField::Email => "email",
            StandardField::JobTitle => "job_title",
            StandardField::Company => "company",
            StandardField::Phone => "phone",
            StandardField::Location => "location",
            StandardField::Department => "department",
            StandardField::Photo => "photo",
        }
    }

    /// The standard field with this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|field| field.as_str() == name)
    }
}

/// The per-field flags.
///
/// - `sync`: the directory value is set when the card is created.
/// - `overwrite`: on later syncs the directory value replaces the card's value even when it was
///   edited on the card. Off: a local edit wins, but an empty card value is filled and a value that
///   still comes from the directory keeps following it.
/// - `locked`: directory-managed; implies `sync` and `overwrite`, and local edits are refused.
///
/// With `sync` and `overwrite` both off the directory never writes the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldFlags {
    /// Set when a card is created.
    pub sync: bool,
    /// Directory wins on later syncs, even over a local edit.
    pub overwrite: bool,
    /// Directory-managed: always the directory value, not editable on the card.
    pub locked: bool,
}

impl FieldFlags {
    /// The default for text fields: sync and overwrite on, not locked.
    pub const DEFAULT: FieldFlags = FieldFlags {
        sync: true,
        overwrite: true,
        locked: false,
    };

    /// Whether the directory value is set at creation (`sync`, or implied by `locked`).
    pub fn syncs_on_create(self) -> bool {
        self.sync || self.locked
    }

    /// Whether the directory value replaces a local edit (`overwrite`, or implied by `locked`).
    pub fn overwrites(self) -> bool {
        self.overwrite || self.locked
    }
}

impl Default for FieldFlags {
    fn default() -> Self {
        Self::DEFAULT
    }
}

const fn yes() -> bool {
    true
}

/// Rule for a standard text field: flags and an optional source expression replacing the default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandardFieldRule {
    /// See [`FieldFlags::sync`].
    #[serde(default = "yes")]
    pub sync: bool,
    /// See [`FieldFlags::overwrite`].
    #[serde(default = "yes")]
    pub overwrite: bool,
    /// See [`FieldFlags::locked`].
    #[serde(default)]
    pub locked: bool,
    /// Replaces the default mapping when set (e.g. `join(" ", givenName, surname)` for `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Expression>,
}

impl Default for StandardFieldRule {
    fn default() -> Self {
        Self {
            sync: true,
            overwrite: true,
            locked: false,
            source: None,
        }
    }
}

impl StandardFieldRule {
    /// The flags.
    pub fn flags(&self) -> FieldFlags {
        FieldFlags {
            sync: self.sync,
            overwrite: self.overwrite,
            locked: self.locked,
        }
    }
}

/// Rule for the photo: flags only. By default a photo set on the card is kept (overwrite off):
/// a photo captured or approved locally is worth more than the directory's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhotoRule {
    /// See [`FieldFlags::sync`].
    #[serde(default = "yes")]
    pub sync: bool,
    /// See [`FieldFlags::overwrite`]; off by default for the photo.
    #[serde(default)]
    pub overwrite: bool,
    /// See [`FieldFlags::locked`].
    #[serde(default)]
    pub locked: bool,
}

impl Default for PhotoRule {
    fn default() -> Self {
        Self {
            sync: true,
            overwrite: false,
            locked: false,
        }
    }
}

impl PhotoRule {
    /// The flags.
    pub fn flags(&self) -> FieldFlags {
        FieldFlags {
            sync: self.sync,
            overwrite: self.overwrite,
            locked: self.locked,
        }
    }
}

/// The standard fields' rules.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StandardFields {
    /// `name`.
    pub name: StandardFieldRule,
    /// `email`; its value is also the email used to link an existing card.
    pub email: StandardFieldRule,
    /// `job_title`.
    pub job_title: StandardFieldRule,
    /// `company`.
    pub company: StandardFieldRule,
    /// `phone`.
    pub phone: StandardFieldRule,
    /// `location`.
    pub location: StandardFieldRule,
    /// `department`.
    pub department: StandardFieldRule,
    /// `photo`.
    pub photo: PhotoRule,
}

impl StandardFields {
    /// The rule of a text field; `None` for [`StandardField::Photo`].
    pub fn text_rule(&self, field: StandardField) -> Option<&StandardFieldRule> {
        match field {
            StandardField::Name => Some(&self.name),
            StandardField::Email => Some(&self.email),
            StandardField::JobTitle => Some(&self.job_title),
            StandardField::Company => Some(&self.company),
            StandardField::Phone => Some(&self.phone),
            StandardField::Location => Some(&self.location),
            StandardField::Department => Some(&self.department),
            StandardField::Photo => None,
        }
    }

    /// The flags of any standard field.
    pub fn flags(&self, field: StandardField) -> FieldFlags {
        self.text_rule(field)
            .map_or_else(|| self.photo.flags(), StandardFieldRule::flags)
    }
}

/// A custom field: any expression over the user's properties, with the usual flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomFieldRule {
    /// The source expression.
    pub expression: Expression,
    /// See [`FieldFlags::sync`].
    #[serde(default = "yes")]
    pub sync: bool,
    /// See [`FieldFlags::overwrite`].
    #[serde(default = "yes")]
    pub overwrite: bool,
    /// See [`FieldFlags::locked`].
    #[serde(default)]
    pub locked: bool,
}

impl CustomFieldRule {
    /// A custom field with default flags (sync and overwrite on, not locked).
    pub fn new(expression: Expression) -> Self {
        Self {
            expression,
            sync: true,
            overwrite: true,
            locked: false,
        }
    }

    /// The flags.
    pub fn flags(&self) -> FieldFlags {
        FieldFlags {
            sync: self.sync,
            overwrite: self.overwrite,
            locked: self.locked,
        }
    }
}

/// Which phone the `phone` field prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhoneOrder {
    /// `mobilePhone`, else the first of `businessPhones` (Popl's documented default).
    #[default]
    MobileFirst,
    /// The first of `businessPhones`, else `mobilePhone`.
    BusinessFirst,
}

/// The directory property identifying a person across syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UidSource {
    /// The Entra object id (`id`), lowercased: always present, never changes.
    #[default]
    ObjectId,
    /// `employeeId`, trimmed, case kept.
    EmployeeId,
    /// `mail`, trimmed and lowercased (mail is case-insensitive).
    Mail,
}

impl UidSource {
    /// The Graph property read.
    pub fn property(self) -> &'static str {
        match self {
            UidSource::ObjectId => "id",
            UidSource::EmployeeId => "employeeId",
            UidSource::Mail => "mail",
        }
    }
}

impl fmt::Display for UidSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.property())
    }
}

/// What to do with a user whose UID property is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingUid {
    /// Do not map the user; the run reports why. The safe default: a fallback UID would change
    /// once the property is filled in, and a changed UID is a new person (a duplicate card).
    #[default]
    Skip,
    /// Use the object id instead, accepting that the UID changes when the property is set later.
    UseObjectId,
}

/// The UID rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UidRule {
    /// Where the UID comes from.
    pub source: UidSource,
    /// What happens when it is empty (never for [`UidSource::ObjectId`]).
    pub when_missing: MissingUid,
}

/// What happens to a card when its user leaves the scope or is deleted. A disabled account
/// always only deactivates its card (it can be re-enabled), whatever the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalPolicy {
    /// Deactivate the card; it can be reactivated (default, as all three seeds do by default).
    #[default]
    Deactivate,
    /// Delete the card permanently.
    Delete,
}

/// A tenant's field rules.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FieldRules {
    /// The standard fields.
    pub fields: StandardFields,
    /// Which phone the default `phone` mapping prefers.
    pub phone_order: PhoneOrder,
    /// Custom fields by name (`[a-z][a-z0-9_]*`, at most 64 bytes, not a standard name).
    pub custom_fields: BTreeMap<String, CustomFieldRule>,
    /// The UID rule.
    pub uid: UidRule,
    /// Removal policy.
    pub removal: RemovalPolicy,
}

/// Longest accepted custom field name, in bytes.
pub const MAX_FIELD_NAME_LEN: usize = 64;

/// Longest value a card field holds, in bytes (commands and local edits are refused above it).
pub const MAX_VALUE_BYTES: usize = 8 * 1024;

/// One problem found by [`FieldRules::validate`], displayed as `path: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {kind}")]
pub struct RuleProblem {
    /// Where, as a dotted path into the JSON form (`custom_fields.cost_center.expression`).
    pub path: String,
    /// What.
    pub kind: RuleProblemKind,
}

/// The kinds of rule problems.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleProblemKind {
    /// An expression does not parse or references an unknown property.
    #[error("{0}")]
    Expression(ExprError),
    /// A custom field name is not `[a-z][a-z0-9_]*` of at most 64 bytes.
    #[error(
        "field names must start with a lowercase letter and contain only a-z, 0-9 and _ (at most {MAX_FIELD_NAME_LEN} bytes)"
    )]
    InvalidFieldName,
    /// A custom field uses a standard field's name.
    #[error("{0:?} is a standard field")]
    ReservedFieldName(&'static str),
    /// `locked` with `sync` or `overwrite` off: contradictory, as locked means directory-managed.
    #[error("a locked field is directory-managed: sync and overwrite must be on")]
    LockedNeedsSyncAndOverwrite,
}

fn default_expression(source: &str) -> Expression {
    Expression::parse(source).expect("built-in expressions are valid")
}

static NAME: LazyLock<Expression> = LazyLock::new(|| default_expression("displayName"));
static EMAIL: LazyLock<Expression> =
    LazyLock::new(|| default_expression("coalesce(mail, userPrincipalName)"));
static JOB_TITLE: LazyLock<Expression> = LazyLock::new(|| default_expression("jobTitle"));
static COMPANY: LazyLock<Expression> = LazyLock::new(|| default_expression("companyName"));
static PHONE_MOBILE_FIRST: LazyLock<Expression> =
    LazyLock::new(|| default_expression("coalesce(mobilePhone, first(businessPhones))"));
static PHONE_BUSINESS_FIRST: LazyLock<Expression> =
    LazyLock::new(|| default_expression("coalesce(first(businessPhones), mobilePhone)"));
static LOCATION: LazyLock<Expression> = LazyLock::new(|| {
    default_expression(r#"join(", ", streetAddress, city, state, postalCode, country)"#)
});
static DEPARTMENT: LazyLock<Expression> = LazyLock::new(|| default_expression("department"));

/// The built-in expression of a standard text field; `None` for the photo.
pub fn default_source(
    field: StandardField,
    phone_order: PhoneOrder,
) -> Option<&'static Expression> {
    let expression: &'static LazyLock<Expression> = match field {
        StandardField::Name => &NAME,
        StandardField::Email => &EMAIL,
        StandardField::JobTitle => &JOB_TITLE,
        StandardField::Company => &COMPANY,
        StandardField::Phone => match phone_order {
            PhoneOrder::MobileFirst => &PHONE_MOBILE_FIRST,
            PhoneOrder::BusinessFirst => &PHONE_BUSINESS_FIRST,
        },
        StandardField::Location => &LOCATION,
        StandardField::Department => &DEPARTMENT,
        StandardField::Photo => return None,
    };
    Some(LazyLock::force(expression))
}

fn check_flags(path: String, flags: FieldFlags, problems: &mut Vec<RuleProblem>) {
    if flags.locked && !(flags.sync && flags.overwrite) {
        problems.push(RuleProblem {
            path: format!("{path}.locked"),
            kind: RuleProblemKind::LockedNeedsSyncAndOverwrite,
        });
    }
}

impl FieldRules {
    /// The expression that produces a standard text field: the override, else the default.
    /// `None` for the photo.
    pub fn source_of(&self, field: StandardField) -> Option<&Expression> {
        let rule = self.fields.text_rule(field)?;
        rule.source
            .as_ref()
            .or_else(|| default_source(field, self.phone_order))
    }

    /// Every field the directory manages, with its flags: the standard fields (photo included)
    /// and the custom fields. Fields not listed here are local-only and never touched by sync.
    pub fn managed_fields(&self) -> Vec<(FieldName, FieldFlags)> {
        StandardField::ALL
            .into_iter()
            .map(|field| (FieldName::from(field), self.fields.flags(field)))
            .chain(
                self.custom_fields
                    .iter()
                    .map(|(name, rule)| (FieldName::new(name.clone()), rule.flags())),
            )
            .collect()
    }

    /// The flags of a field, or `None` for a local-only field.
    pub fn flags_of(&self, field: &str) -> Option<FieldFlags> {
        match StandardField::from_name(field) {
            Some(standard) => Some(self.fields.flags(standard)),
            None => self.custom_fields.get(field).map(CustomFieldRule::flags),
        }
    }

    /// The Graph user properties the delta `$select` must include for these rules: `id`,
    /// `accountEnabled`, the UID property and every property the expressions read.
    pub fn graph_select(&self) -> BTreeSet<String> {
        let mut select: BTreeSet<String> = ["id", "accountEnabled", self.uid.source.property()]
            .into_iter()
            .map(str::to_owned)
            .collect();
        for field in StandardField::ALL {
            if let Some(expression) = self.source_of(field) {
                select.extend(expression.referenced_properties());
            }
        }
        for rule in self.custom_fields.values() {
            select.extend(rule.expression.referenced_properties());
        }
        select
    }

    /// Checks the rules as they are saved: every expression parses and references known
    /// properties, custom field names are well formed and free, locked fields are consistent.
    /// Returns every problem, in a stable order.
    pub fn validate(&self) -> Result<(), Vec<RuleProblem>> {
        let mut problems = Vec::new();
        for field in StandardField::ALL {
            let path = format!("fields.{}", field.as_str());
            check_flags(path.clone(), self.fields.flags(field), &mut problems);
            if let Some(source) = self.fields.text_rule(field).and_then(|r| r.source.as_ref()) {
                problems.extend(source.diagnose().into_iter().map(|error| RuleProblem {
                    path: format!("{path}.source"),
                    kind: RuleProblemKind::Expression(error),
                }));
            }
        }
        for (name, rule) in &self.custom_fields {
            let path = format!("custom_fields.{name}");
            if let Some(standard) = StandardField::from_name(name) {
                problems.push(RuleProblem {
                    path: path.clone(),
                    kind: RuleProblemKind::ReservedFieldName(standard.as_str()),
                });
            } else if !FieldName::is_valid(name) {
                problems.push(RuleProblem {
                    path: path.clone(),
                    kind: RuleProblemKind::InvalidFieldName,
                });
            }
            check_flags(path.clone(), rule.flags(), &mut problems);
            problems.extend(
                rule.expression
                    .diagnose()
                    .into_iter()
                    .map(|error| RuleProblem {
                        path: format!("{path}.expression"),
                        kind: RuleProblemKind::Expression(error),
                    }),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests;
