//! Evaluation of expressions against a directory user: total, deterministic, allocation-bounded
//! by the input.
//!
//! Directory values are trimmed when read and blank ones count as missing; literals are used as
//! written. Nothing here can panic on any user data.

use crate::expr::{Expression, Function, Node};
use crate::properties::{ON_PREMISES_EXTENSION_ATTRIBUTES, extension_attribute_number};
use crate::user::DirectoryUser;
use serde_json::{Map, Value};

impl Expression {
    /// Evaluates against a user. Total: never panics, deterministic; an invalid expression
    /// evaluates to nothing.
    pub fn evaluate(&self, user: &DirectoryUser) -> Evaluated {
        match self.ast() {
            Some(node) => evaluate(node, user),
            None => Evaluated::Single(None),
        }
    }

    /// Evaluates and renders to one card value: trimmed, blank is `None`, a list is its
    /// non-empty items joined with `", "`.
    pub fn evaluate_text(&self, user: &DirectoryUser) -> Option<String> {
        self.evaluate(user).into_text()
    }
}

/// The value of an expression: a single optional text or a list of texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluated {
    /// One value; `None` when the directory has none.
    Single(Option<String>),
    /// A collection such as `businessPhones`; blank items are already dropped.
    List(Vec<String>),
}

fn non_blank(text: &str) -> Option<&str> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then_some(trimmed)
}

impl Evaluated {
    /// Whether there is no non-blank text in the value.
    pub fn is_empty(&self) -> bool {
        match self {
            Evaluated::Single(text) => text.as_deref().and_then(non_blank).is_none(),
            Evaluated::List(items) => items.iter().all(|item| non_blank(item).is_none()),
        }
    }

    /// The value as one card value: trimmed, blank is `None`, a list is its non-blank items
    /// joined with `", "`.
    pub fn into_text(self) -> Option<String> {
        match self {
            Evaluated::Single(text) => text.as_deref().and_then(non_blank).map(str::to_owned),
            Evaluated::List(items) => {
                let parts: Vec<&str> = items.iter().filter_map(|item| non_blank(item)).collect();
                (!parts.is_empty()).then(|| parts.join(", "))
            }
        }
    }

    /// The items as written (a single value is a list of zero or one item).
    fn into_items(self) -> Vec<String> {
        match self {
            Evaluated::Single(text) => text.into_iter().collect(),
            Evaluated::List(items) => items,
        }
    }

    fn map(self, f: impl Fn(&str) -> String) -> Self {
        match self {
            Evaluated::Single(text) => Evaluated::Single(text.map(|text| f(&text))),
            Evaluated::List(items) => Evaluated::List(
                items
                    .iter()
                    .map(|item| f(item))
                    .filter(|item| non_blank(item).is_some())
                    .collect(),
            ),
        }
    }
}

/// Evaluates a parsed node. Recursion depth is bounded by the parser's nesting limit.
pub(crate) fn evaluate(node: &Node, user: &DirectoryUser) -> Evaluated {
    match node {
        Node::Literal { value, .. } => Evaluated::Single(Some(value.clone())),
        Node::Property { path, .. } => resolve(user, path),
        Node::Call { function, args, .. } => call(*function, args, user),
    }
}

fn call(function: Function, args: &[Node], user: &DirectoryUser) -> Evaluated {
    match function {
        Function::Coalesce => args
            .iter()
            .map(|arg| evaluate(arg, user))
            .find(|value| !value.is_empty())
            .unwrap_or(Evaluated::Single(None)),
        Function::Join => {
            let Some((separator, parts)) = args.split_first() else {
                return Evaluated::Single(None);
            };
            let separator = evaluate(separator, user).into_items().concat();
            let parts: Vec<String> = parts
                .iter()
                .flat_map(|part| evaluate(part, user).into_items())
                .filter(|part| non_blank(part).is_some())
                .collect();
            Evaluated::Single((!parts.is_empty()).then(|| parts.join(&separator)))
        }
        Function::First => match args.first().map(|arg| evaluate(arg, user)) {
            Some(Evaluated::List(items)) => {
                Evaluated::Single(items.into_iter().find(|item| non_blank(item).is_some()))
            }
            Some(single) => single,
            None => Evaluated::Single(None),
        },
        Function::Lower => unary(args, user, str::to_lowercase),
        Function::Upper => unary(args, user, str::to_uppercase),
        Function::Trim => unary(args, user, |text| text.trim().to_owned()),
    }
}

fn unary(args: &[Node], user: &DirectoryUser, f: impl Fn(&str) -> String) -> Evaluated {
    args.first()
        .map_or(Evaluated::Single(None), |arg| evaluate(arg, user).map(f))
}

fn lookup<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

/// Reads a property path. `extensionAttributeN` alone is shorthand for
/// `onPremisesExtensionAttributes.extensionAttributeN` when the user has no such top-level property.
fn resolve(user: &DirectoryUser, path: &[String]) -> Evaluated {
    let Some((first, rest)) = path.split_first() else {
        return Evaluated::Single(None);
    };
    let mut current = user.get(first);
    if current.is_none()
        && rest.is_empty()
        && extension_attribute_number(first).is_some()
        && let Some(Value::Object(attributes)) = user.get(ON_PREMISES_EXTENSION_ATTRIBUTES)
    {
        current = lookup(attributes, first);
    }
    for segment in rest {
        current = match current {
            Some(Value::Object(object)) => lookup(object, segment),
            _ => None,
        };
    }
    current.map_or(Evaluated::Single(None), from_json)
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => non_blank(text).map(str::to_owned),
        Value::Bool(flag) => Some(flag.to_string()),
        Value::Number(number) => Some(number.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Converts a JSON property value: scalars become text, arrays become lists of their scalar
/// items, objects (without a further path segment) are empty.
fn from_json(value: &Value) -> Evaluated {
    match value {
        Value::Array(items) => Evaluated::List(items.iter().filter_map(scalar_text).collect()),
        other => Evaluated::Single(scalar_text(other)),
    }
}

#[cfg(test)]
mod tests {
    use crate::expr::Expression;
    use crate::user::DirectoryUser;
    use serde_json::json;

    fn user() -> DirectoryUser {
        DirectoryUser::from_graph(&json!({
            "id": "u1",
            "displayName": "  Zoë Ünal ",
            "givenName": "Zoë",
            "surname": "",
            "mail": null,
            "userPrincipalName": "zoe@contoso.example",
            "businessPhones": ["", "+47 22 00 00 00", "+47 22 00 00 01"],
            "otherMails": [],
            "accountEnabled": true,
            "employeeOrgData": {"costCenter": "CC1", "division": null},
            "onPremisesExtensionAttributes": {"extensionAttribute3": "Building 7"},
            "extension_abc123_costCenter": 4711
        }))
        .unwrap()
    }

    fn eval(source: &str) -> Option<String> {
        Expression::parse(source).unwrap().evaluate_text(&user())
    }

    #[test]
    fn reads_trimmed_properties_and_literals_verbatim() {
        assert_eq!(eval("displayName").as_deref(), Some("Zoë Ünal"));
        assert_eq!(eval("surname"), None);
        assert_eq!(eval("nonexistent"), None);
        assert_eq!(eval(r#"" x ""#).as_deref(), Some("x"));
        assert_eq!(eval("accountEnabled").as_deref(), Some("true"));
        assert_eq!(eval("extension_abc123_costCenter").as_deref(), Some("4711"));
    }

    #[test]
    fn coalesce_takes_the_first_non_empty() {
        assert_eq!(
            eval("coalesce(mail, surname, userPrincipalName)").as_deref(),
            Some("zoe@contoso.example")
        );
        assert_eq!(
            eval("coalesce(otherMails, businessPhones)").as_deref(),
            Some("+47 22 00 00 00, +47 22 00 00 01")
        );
        assert_eq!(eval("coalesce(mail, surname)"), None);
    }

    #[test]
    fn join_skips_empty_parts_and_flattens_lists() {
        assert_eq!(
            eval(r#"join(" ", givenName, surname, "(", displayName, ")")"#).as_deref(),
            Some("Zoë ( Zoë Ünal )")
        );
        assert_eq!(
            eval(r#"join(" / ", businessPhones, mail)"#).as_deref(),
            Some("+47 22 00 00 00 / +47 22 00 00 01")
        );
        assert_eq!(eval(r#"join(", ", mail, surname)"#), None);
    }

    #[test]
    fn first_takes_the_first_item() {
        assert_eq!(
            eval("first(businessPhones)").as_deref(),
            Some("+47 22 00 00 00")
        );
        assert_eq!(eval("first(displayName)").as_deref(), Some("Zoë Ünal"));
        assert_eq!(eval("first(otherMails)"), None);
    }

    #[test]
    fn case_functions_are_unicode_aware() {
        assert_eq!(eval("lower(displayName)").as_deref(), Some("zoë ünal"));
        assert_eq!(eval("upper(givenName)").as_deref(), Some("ZOË"));
        assert_eq!(eval(r#"trim("  a  ")"#).as_deref(), Some("a"));
    }

    #[test]
    fn reads_nested_and_extension_attributes() {
        assert_eq!(eval("employeeOrgData.costCenter").as_deref(), Some("CC1"));
        assert_eq!(eval("employeeOrgData.division"), None);
        assert_eq!(eval("employeeOrgData"), None);
        assert_eq!(
            eval("onPremisesExtensionAttributes.extensionAttribute3").as_deref(),
            Some("Building 7")
        );
        assert_eq!(eval("extensionAttribute3").as_deref(), Some("Building 7"));
        assert_eq!(eval("displayName.first"), None);
    }
}
