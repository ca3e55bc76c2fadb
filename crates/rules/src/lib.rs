//! Tenant field rules for cardsync: pure functions from directory users to card values.
//!
//! - [`DirectoryUser`]: a Graph user with every property, merged with delta semantics.
//! - [`Expression`]: the small expression language of field sources (`coalesce`, `join`, `first`,
//!   `lower`, `upper`, `trim`, literals, property paths).
//! - [`FieldRules`]: a tenant's mapping, flags, custom fields, UID and removal policy, stored as JSON
//!   and validated with [`FieldRules::validate`].
//! - [`map_user`]: the delta-worker's step, from a user to a [`MappedCard`].
//! - [`plan_create`], [`plan_update`], [`apply_local_edit`]: the card-writer's merge policy.
//!
//! No I/O, no async, no panics on any input. See the crate's README for the user-facing rules.
//!
//! ```
//! use cardsync_rules::{DirectoryUser, FieldRules, map_user, plan_create, plan_update};
//! use serde_json::json;
//!
//! let rules: FieldRules = serde_json::from_value(json!({
//!     "fields": {"job_title": {"overwrite": false}},
//!     "custom_fields": {"building": {"expression": "onPremisesExtensionAttributes.extensionAttribute3"}}
//! })).expect("rules JSON");
//! rules.validate().expect("valid rules");
//!
//! let mut user = DirectoryUser::from_graph(&json!({
//!     "id": "6e5c0b2a-1111-4222-8333-944455556666",
//!     "displayName": "Jessica Swift",
//!     "userPrincipalName": "jswift@contoso.example",
//!     "jobTitle": "Marketing Manager",
//!     "onPremisesExtensionAttributes": {"extensionAttribute3": "B7"}
//! })).expect("a user");
//! let card = map_user(&rules, &user).expect("mappable");
//! assert_eq!(card.value("email"), Some("jswift@contoso.example"));
//! let states = plan_create(&rules, &card);
//!
//! user.apply_delta(&json!({"jobTitle": "Director of Marketing"})).expect("same user");
//! let plan = plan_update(&rules, &states, &map_user(&rules, &user).expect("mappable"));
//! assert_eq!(plan.states.value("job_title"), Some("Director of Marketing"));
//! assert_eq!(plan.states.value("building"), Some("B7"));
//! ```

mod eval;
mod expr;
mod filter;
mod mapping;
mod merge;
pub mod properties;
mod rules;
mod user;

pub use eval::Evaluated;
pub use expr::{
    Arity, ExprError, ExprErrorKind, Expression, Function, MAX_EXPRESSION_LEN, MAX_NESTING, Node,
    Span,
};
pub use filter::{Condition, MAX_CONDITION_VALUES, UserFilter};
pub use mapping::{MappedCard, Unmappable, map_user};
pub use merge::{
    ChangeReason, EditRefused, FieldChange, FieldState, FieldStates, UpdatePlan, ValueSource,
    apply_local_edit, plan_create, plan_update, revert_to_directory,
};
pub use rules::{
    CustomFieldRule, FieldFlags, FieldName, FieldRules, MAX_FIELD_NAME_LEN, MAX_VALUE_BYTES,
    MissingUid, PhoneOrder, PhotoRule, RemovalPolicy, RuleProblem, RuleProblemKind, StandardField,
    StandardFieldRule, StandardFields, UidRule, UidSource, default_source,
};
pub use user::{DeltaEffect, DirectoryUser, UserError};
