//! The property schema of users and groups: which properties exist, their JSON shapes and limits, `$select`
//! resolution and validation of writes (graph-facts §7).

use serde_json::{Map, Value};

use super::DirectoryError;

/// The two kinds of directory object the simulator tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A `microsoft.graph.user`.
    User,
    /// A `microsoft.graph.group`.
    Group,
}

impl Kind {
    /// The property table of this kind.
    pub fn schema(self) -> &'static [PropDef] {
        match self {
            Kind::User => USER_PROPS,
            Kind::Group => GROUP_PROPS,
        }
    }

    /// The OData type name used in `@odata.type` annotations (`#microsoft.graph.user`).
    pub fn odata_type(self) -> &'static str {
        match self {
            Kind::User => "#microsoft.graph.user",
            Kind::Group => "#microsoft.graph.group",
        }
    }

    /// The entity-set name (`users`, `groups`).
    pub fn set_name(self) -> &'static str {
        match self {
            Kind::User => "users",
            Kind::Group => "groups",
        }
    }
}

/// JSON shape of a property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropType {
    /// A string.
    Str,
    /// A collection of strings.
    StrList,
    /// A boolean.
    Bool,
    /// `onPremisesExtensionAttributes`: an object with `extensionAttribute1..15`.
    OnPremExt,
    /// A timestamp the directory sets when the object is created (`createdDateTime`); read-only.
    CreatedAt,
}

/// One property of a directory object.
#[derive(Debug)]
pub struct PropDef {
    /// Graph's property name.
    pub name: &'static str,
    /// Returned without `$select`.
    pub default: bool,
    /// The JSON shape.
    pub ty: PropType,
    /// Maximum length in characters (graph-facts §7), if Graph documents one.
    pub max_len: Option<usize>,
    /// A `null` is refused (`displayName` can't be cleared).
    pub required: bool,
}

const fn prop(name: &'static str, default: bool, ty: PropType, max_len: Option<usize>) -> PropDef {
    PropDef {
        name,
        default,
        ty,
        max_len,
        required: false,
    }
}

/// User properties: everything in graph-facts §7 plus the extras cardsync maps.
pub const USER_PROPS: &[PropDef] = &[
    prop("accountEnabled", false, PropType::Bool, None),
    prop("businessPhones", true, PropType::StrList, None),
    prop("city", false, PropType::Str, Some(128)),
    prop("companyName", false, PropType::Str, Some(64)),
    prop("country", false, PropType::Str, Some(128)),
    prop("department", false, PropType::Str, Some(64)),
    PropDef {
        name: "displayName",
        default: true,
        ty: PropType::Str,
        max_len: Some(256),
        required: true,
    },
    prop("employeeId", false, PropType::Str, Some(16)),
    prop("employeeType", false, PropType::Str, None),
    prop("givenName", true, PropType::Str, Some(64)),
    prop("jobTitle", true, PropType::Str, Some(128)),
    prop("mail", true, PropType::Str, None),
    prop("mobilePhone", true, PropType::Str, Some(64)),
    prop("officeLocation", true, PropType::Str, None),
    prop(
        "onPremisesExtensionAttributes",
        false,
        PropType::OnPremExt,
        None,
    ),
    prop("postalCode", false, PropType::Str, Some(40)),
    prop("preferredLanguage", true, PropType::Str, None),
    prop("state", false, PropType::Str, Some(128)),
    prop("streetAddress", false, PropType::Str, Some(1024)),
    prop("surname", true, PropType::Str, Some(64)),
    prop("usageLocation", false, PropType::Str, None),
    PropDef {
        name: "userPrincipalName",
        default: true,
        ty: PropType::Str,
        max_len: None,
        required: true,
    },
    // `Member` or `Guest` (B2B); not returned unless selected.
    prop("userType", false, PropType::Str, None),
];

/// Group properties (all returned by default, `createdDateTime` included: the group delta example shows it).
pub const GROUP_PROPS: &[PropDef] = &[
    prop("createdDateTime", true, PropType::CreatedAt, None),
    prop("description", true, PropType::Str, None),
    PropDef {
        name: "displayName",
        default: true,
        ty: PropType::Str,
        max_len: Some(256),
        required: true,
    },
    prop("groupTypes", true, PropType::StrList, None),
    prop("mail", true, PropType::Str, None),
    prop("mailEnabled", true, PropType::Bool, None),
    prop("mailNickname", true, PropType::Str, None),
    prop("securityEnabled", true, PropType::Bool, None),
    prop("visibility", true, PropType::Str, None),
];

/// Number of `onPremisesExtensionAttributes` slots.
pub const ON_PREM_SLOTS: usize = 15;

/// Index of a property in its kind's schema.
pub fn prop_index(kind: Kind, name: &str) -> Option<usize> {
    kind.schema().iter().position(|p| p.name == name)
}

/// A resolved `$select`: schema indexes, directory-extension names, and whether group members are tracked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Select {
    /// Indexes into the kind's schema.
    pub props: Vec<usize>,
    /// Selected `extension_*` properties.
    pub extensions: Vec<String>,
    /// `members` selected (groups, delta only).
    pub members: bool,
}

impl Select {
    /// Resolves `$select` (comma-separated) for a kind; `None` gives the default properties.
    pub fn parse(kind: Kind, select: Option<&str>) -> Result<Self, DirectoryError> {
        let Some(select) = select.filter(|s| !s.trim().is_empty()) else {
            return Ok(Self::default_for(kind));
        };
        let mut sel = Select::default();
        for name in select.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if name == "id" {
                continue;
            }
            if kind == Kind::Group && name == "members" {
                sel.members = true;
            } else if name.starts_with("extension_") {
                sel.extensions.push(name.to_owned());
            } else if let Some(i) = prop_index(kind, name) {
                if !sel.props.contains(&i) {
                    sel.props.push(i);
                }
            } else {
                return Err(DirectoryError::UnknownProperty(
                    name.to_owned(),
                    type_name(kind),
                ));
            }
        }
        Ok(sel)
    }

    /// The properties Graph returns without `$select` (for groups, delta also tracks members by default).
    pub fn default_for(kind: Kind) -> Self {
        let props = kind
            .schema()
            .iter()
            .enumerate()
            .filter(|(_, p)| p.default)
            .map(|(i, _)| i)
            .collect();
        Self {
            props,
            extensions: Vec::new(),
            members: kind == Kind::Group,
        }
    }

    /// Every property of the kind.
    pub fn all(kind: Kind) -> Self {
        Self {
            props: (0..kind.schema().len()).collect(),
            extensions: Vec::new(),
            members: kind == Kind::Group,
        }
    }
}

pub(super) fn type_name(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "microsoft.graph.user",
        Kind::Group => "microsoft.graph.group",
    }
}

/// A validated property write.
pub(super) enum Write {
    Prop(usize, Value),
    OnPrem(Map<String, Value>),
    Ext(String, Value),
}

pub(super) fn validate(
    kind: Kind,
    props: &Map<String, Value>,
) -> Result<Vec<Write>, DirectoryError> {
    let mut writes = Vec::with_capacity(props.len());
    for (name, v) in props {
        if name == "id" {
            continue;
        }
        if name.starts_with("extension_") {
            writes.push(Write::Ext(name.clone(), v.clone()));
            continue;
        }
        let i = prop_index(kind, name)
            .ok_or_else(|| DirectoryError::UnknownProperty(name.clone(), type_name(kind)))?;
        let def = &kind.schema()[i];
        if def.ty == PropType::CreatedAt {
            return Err(DirectoryError::ReadOnly(name.clone()));
        }
        if v.is_null() {
            if def.required {
                return Err(DirectoryError::Required(name.clone()));
            }
            let cleared = match def.ty {
                PropType::StrList => Value::Array(Vec::new()),
                _ => Value::Null,
            };
            writes.push(Write::Prop(i, cleared));
            continue;
        }
        match def.ty {
            PropType::Str => {
                let s = v
                    .as_str()
                    .ok_or_else(|| DirectoryError::InvalidValue(name.clone(), "a string"))?;
                if let Some(max) = def.max_len
                    && s.chars().count() > max
                {
                    return Err(DirectoryError::TooLong(name.clone(), type_name(kind), max));
                }
                writes.push(Write::Prop(i, v.clone()));
            }
            PropType::StrList => {
                let ok = v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
                if !ok {
                    return Err(DirectoryError::InvalidValue(
                        name.clone(),
                        "a collection of strings",
                    ));
                }
                writes.push(Write::Prop(i, v.clone()));
            }
            PropType::Bool => {
                if !v.is_boolean() {
                    return Err(DirectoryError::InvalidValue(name.clone(), "a boolean"));
                }
                writes.push(Write::Prop(i, v.clone()));
            }
            PropType::CreatedAt => return Err(DirectoryError::ReadOnly(name.clone())),
            PropType::OnPremExt => {
                let obj = v
                    .as_object()
                    .ok_or_else(|| DirectoryError::InvalidValue(name.clone(), "an object"))?;
                for (k, slot) in obj {
                    let known = k
                        .strip_prefix("extensionAttribute")
                        .and_then(|n| n.parse::<usize>().ok());
                    if !known.is_some_and(|n| (1..=ON_PREM_SLOTS).contains(&n)) {
                        return Err(DirectoryError::UnknownProperty(
                            k.clone(),
                            "microsoft.graph.onPremisesExtensionAttributes",
                        ));
                    }
                    if !(slot.is_null() || slot.is_string()) {
                        return Err(DirectoryError::InvalidValue(k.clone(), "a string or null"));
                    }
                }
                writes.push(Write::OnPrem(obj.clone()));
            }
        }
    }
    Ok(writes)
}
