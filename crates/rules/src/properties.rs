//! Which Graph user properties expressions may reference, checked when rules are saved.
//!
//! Evaluation accepts any property name (an unknown one is simply empty); validation uses this
//! catalogue to catch typos. Extension attributes and directory schema extensions are always
//! accepted because their names are tenant-specific.

/// Graph v1.0 `user` properties that hold a value (strings, booleans, numbers, dates and
/// string collections), in their JSON spelling.
pub const KNOWN_USER_PROPERTIES: &[&str] = &[
    "aboutMe",
    "accountEnabled",
    "ageGroup",
    "birthday",
    "businessPhones",
    "city",
    "companyName",
    "consentProvidedForMinor",
    "country",
    "createdDateTime",
    "creationType",
    "department",
    "displayName",
    "employeeHireDate",
    "employeeId",
    "employeeLeaveDateTime",
    "employeeOrgData",
    "employeeType",
    "externalUserState",
    "faxNumber",
    "givenName",
    "hireDate",
    "id",
    "imAddresses",
    "interests",
    "isResourceAccount",
    "jobTitle",
    "legalAgeGroupClassification",
    "mail",
    "mailNickname",
    "mobilePhone",
    "mySite",
    "officeLocation",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesExtensionAttributes",
    "onPremisesImmutableId",
    "onPremisesLastSyncDateTime",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
    "otherMails",
    "pastProjects",
    "postalCode",
    "preferredDataLocation",
    "preferredLanguage",
    "preferredName",
    "proxyAddresses",
    "responsibilities",
    "schools",
    "securityIdentifier",
    "showInAddressList",
    "skills",
    "state",
    "streetAddress",
    "surname",
    "usageLocation",
    "userPrincipalName",
    "userType",
];

/// The complex property holding the fifteen on-premises extension attributes.
pub const ON_PREMISES_EXTENSION_ATTRIBUTES: &str = "onPremisesExtensionAttributes";

/// Members of `employeeOrgData`.
const EMPLOYEE_ORG_DATA: &[&str] = &["costCenter", "division"];

/// The attribute number when `name` is `extensionAttribute1` … `extensionAttribute15`
/// (ASCII case-insensitive).
pub fn extension_attribute_number(name: &str) -> Option<u8> {
    let prefix = "extensionattribute";
    let digits = name
        .get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(prefix))
        .and_then(|_| name.get(prefix.len()..))?;
    if digits.starts_with('0') || digits.is_empty() || digits.len() > 2 {
        return None;
    }
    digits.parse::<u8>().ok().filter(|n| (1..=15).contains(n))
}

/// Whether `name` is a directory schema extension property (`extension_<appid>_<name>`).
pub fn is_schema_extension(name: &str) -> bool {
    name.get(..10)
        .is_some_and(|head| head.eq_ignore_ascii_case("extension_"))
        && name.len() > 10
}

fn known_top_level(name: &str) -> Option<&'static str> {
    KNOWN_USER_PROPERTIES
        .iter()
        .copied()
        .find(|known| known.eq_ignore_ascii_case(name))
}

/// Whether a dotted property path is acceptable in a saved rule.
pub fn is_known_path(path: &[String]) -> bool {
    match path {
        [] => false,
        [only] => {
            known_top_level(only).is_some()
                || extension_attribute_number(only).is_some()
                || is_schema_extension(only)
        }
        [first, second] if first.eq_ignore_ascii_case(ON_PREMISES_EXTENSION_ATTRIBUTES) => {
            extension_attribute_number(second).is_some()
        }
        [first, second] if first.eq_ignore_ascii_case("employeeOrgData") => EMPLOYEE_ORG_DATA
            .iter()
            .any(|member| member.eq_ignore_ascii_case(second)),
        [first, ..] => is_schema_extension(first),
    }
}

/// The name to put in a delta `$select` for a path starting with `first` of `len` segments:
/// the canonical spelling when known, `onPremisesExtensionAttributes` for the
/// `extensionAttributeN` shorthand, else the name as written.
pub(crate) fn select_name(first: &str, len: usize) -> String {
    if let Some(known) = known_top_level(first) {
        return known.to_owned();
    }
    if len == 1 && extension_attribute_number(first).is_some() {
        return ON_PREMISES_EXTENSION_ATTRIBUTES.to_owned();
    }
    first.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> Vec<String> {
        text.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn recognises_extension_attribute_names() {
        assert_eq!(extension_attribute_number("extensionAttribute1"), Some(1));
        assert_eq!(extension_attribute_number("EXTENSIONATTRIBUTE15"), Some(15));
        assert_eq!(extension_attribute_number("extensionAttribute16"), None);
        assert_eq!(extension_attribute_number("extensionAttribute0"), None);
        assert_eq!(extension_attribute_number("extensionAttribute01"), None);
        assert_eq!(extension_attribute_number("extensionAttribute"), None);
        assert_eq!(extension_attribute_number("extensionAttributé1"), None);
    }

    #[test]
    fn accepts_known_extension_and_nested_paths() {
        for ok in [
            "displayName",
            "JOBTITLE",
            "extension_abc_costCenter",
            "extensionAttribute3",
            "onPremisesExtensionAttributes.extensionAttribute15",
            "employeeOrgData.costCenter",
        ] {
            assert!(is_known_path(&path(ok)), "{ok}");
        }
        for bad in [
            "displayNme",
            "extension_",
            "displayName.first",
            "onPremisesExtensionAttributes.extensionAttribute16",
            "employeeOrgData.salary",
        ] {
            assert!(!is_known_path(&path(bad)), "{bad}");
        }
    }
}
