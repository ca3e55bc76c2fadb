//! Checking a `CardCommand` once, at the edge, and turning it into a [`ValidCommand`] the rest
//! of the service can trust. Anything wrong here can never work: it is dead-lettered with the
//! reason (invariant 7).

use cardsync_proto::{CardCommand, Cause, Role, card_command::Action as WireAction};
use cardsync_rules::{FieldName, MAX_VALUE_BYTES, MappedCard, StandardField};
use cardsync_store::cards::CardRole;
use cardsync_store::photos::PhotoImage;
use std::collections::BTreeMap;
use time::OffsetDateTime;
use uuid::Uuid;

/// Most fields one command may carry.
pub const MAX_FIELDS: usize = 256;
/// Most teams one command may carry.
pub const MAX_TEAMS: usize = 1024;
/// Longest id (user, group, UID, etag), in bytes.
pub const MAX_ID_BYTES: usize = 1024;

/// What the directory wants for the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The user is present, enabled and in scope: the card exists, is active, and carries these
    /// values.
    Upsert,
    /// The account is disabled: deactivate, whatever the removal policy.
    Deactivate,
    /// The account is enabled again or restored: same as [`Action::Upsert`], said explicitly.
    Reactivate,
    /// The user left the scope or was deleted: the tenant's removal policy decides.
    Delete,
}

impl Action {
    /// Lowercase name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Upsert => "upsert",
            Action::Deactivate => "deactivate",
            Action::Reactivate => "reactivate",
            Action::Delete => "delete",
        }
    }
}

/// A command that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidCommand {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The envelope's message id (the dedup key and the audit reference).
    pub message_id: String,
    /// Why it exists (carried on to the card events and the audit log).
    pub cause: Cause,
    /// What to do.
    pub action: Action,
    /// The Entra object id.
    pub user_id: String,
    /// The tenant's UID (`None` when the command has none).
    pub uid: Option<String>,
    /// The per-user directory version.
    pub version: i64,
    /// The directory's values, photo included when reported.
    pub incoming: MappedCard,
    /// Team (group) ids, sorted and unique.
    pub team_ids: Vec<String>,
    /// Known group names by id.
    pub team_names: BTreeMap<String, String>,
    /// The directory role, when the command states one.
    pub role: Option<CardRole>,
    /// When the directory change was observed.
    pub observed_at: Option<OffsetDateTime>,
    /// When the earliest notification the command's round served arrived.
    pub notified_at: Option<OffsetDateTime>,
    /// The sync run whose counts its outcome adds to.
    pub run_id: Option<Uuid>,
    /// The stored image of the reported photo (`None`: no photo, or not downloaded).
    pub photo: Option<PhotoImage>,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCommand {
    /// No envelope.
    #[error("the command has no envelope")]
    MissingEnvelope,
    /// The envelope's tenant is not a GUID.
    #[error("tenant id {0:?} is not a GUID")]
    BadTenantId(String),
    /// The message's header or routing key names another tenant than its envelope.
    #[error("the {place} names tenant {found:?} but the envelope names {envelope:?}")]
    TenantMismatch {
        /// Header or routing key.
        place: &'static str,
        /// What it says.
        found: String,
        /// What the envelope says.
        envelope: String,
    },
    /// No message id.
    #[error("the envelope has no message id")]
    MissingMessageId,
    /// The action is unspecified or unknown.
    #[error("action {0} is not upsert, deactivate, reactivate or delete")]
    BadAction(i32),
    /// No user id.
    #[error("the command has no user id")]
    MissingUserId,
    /// Version 0 (versions start at 1).
    #[error("version must be at least 1")]
    ZeroVersion,
    /// A version PostgreSQL's bigint cannot hold.
    #[error("version {0} is out of range")]
    VersionOutOfRange(u64),
    /// A field name outside `[a-z][a-z0-9_]*` (at most 64 bytes).
    #[error("field name {0:?} is not valid")]
    BadFieldName(String),
    /// The same field twice.
    #[error("field {0:?} appears twice")]
    DuplicateField(String),
    /// A photo hash that is not 64 lowercase hex digits, or a hash without a content type.
    #[error("the photo image reference is malformed")]
    BadPhotoImage,
    /// A value, id or list over its limit.
    #[error("{0} is too long")]
    TooLong(&'static str),
    /// An unknown role.
    #[error("role {0} is unknown")]
    BadRole(i32),
    /// A run id that is not a UUID.
    #[error("run id {0:?} is not a UUID")]
    BadRunId(String),
}

/// The image a command names: both parts or neither.
fn photo_image(sha256: &str, content_type: &str) -> Result<Option<PhotoImage>, InvalidCommand> {
    let content_type = content_type.trim();
    match (sha256.is_empty(), content_type.is_empty()) {
        (true, true) => Ok(None),
        (false, false)
            if sha256.len() == 64
                && sha256
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                && content_type.len() <= 255 =>
        {
            Ok(Some(PhotoImage {
                sha256: sha256.to_owned(),
                content_type: content_type.to_owned(),
            }))
        }
        _ => Err(InvalidCommand::BadPhotoImage),
    }
}

fn check_len(value: &str, limit: usize, what: &'static str) -> Result<(), InvalidCommand> {
    if value.len() > limit {
        return Err(InvalidCommand::TooLong(what));
    }
    Ok(())
}

/// Where a delivery came from, for the tenant cross-checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    /// The `cardsync-tenant-id` header.
    pub tenant_header: Option<&'a str>,
    /// The routing key when the message came through the `cards` exchange
    /// (`command.<live|bulk>.<tenant>`); `None` for retries.
    pub routing_key: Option<&'a str>,
}

/// Checks a command and builds the trusted form.
pub fn validate(command: CardCommand, origin: Origin<'_>) -> Result<ValidCommand, InvalidCommand> {
    let envelope = command.envelope.ok_or(InvalidCommand::MissingEnvelope)?;
    let tenant_text = envelope.tenant_id.trim().to_owned();
    let tenant_id = Uuid::parse_str(&tenant_text)
        .map_err(|_| InvalidCommand::BadTenantId(tenant_text.clone()))?;
    let same_tenant = |found: &str| Uuid::parse_str(found).is_ok_and(|id| id == tenant_id);
    if let Some(header) = origin.tenant_header
        && !same_tenant(header)
    {
        return Err(InvalidCommand::TenantMismatch {
            place: "tenant header",
            found: header.to_owned(),
            envelope: tenant_text,
        });
    }
    if let Some(key) = origin.routing_key
        && let Some(found) = key.rsplit('.').next()
        && key.starts_with("command.")
        && !same_tenant(found)
    {
        return Err(InvalidCommand::TenantMismatch {
            place: "routing key",
            found: found.to_owned(),
            envelope: tenant_text,
        });
    }
    if envelope.message_id.trim().is_empty() {
        return Err(InvalidCommand::MissingMessageId);
    }
    check_len(&envelope.message_id, 255, "the message id")?;
    let action = match WireAction::try_from(command.action) {
        Ok(WireAction::Upsert) => Action::Upsert,
        Ok(WireAction::Deactivate) => Action::Deactivate,
        Ok(WireAction::Reactivate) => Action::Reactivate,
        Ok(WireAction::Delete) => Action::Delete,
        Ok(WireAction::Unspecified) | Err(_) => {
            return Err(InvalidCommand::BadAction(command.action));
        }
    };
    let user_id = command.user_id.trim().to_owned();
    if user_id.is_empty() {
        return Err(InvalidCommand::MissingUserId);
    }
    check_len(&user_id, 256, "the user id")?;
    if command.version == 0 {
        return Err(InvalidCommand::ZeroVersion);
    }
    let version = i64::try_from(command.version)
        .map_err(|_| InvalidCommand::VersionOutOfRange(command.version))?;
    let uid = Some(command.uid.trim().to_owned()).filter(|uid| !uid.is_empty());
    if let Some(uid) = &uid {
        check_len(uid, MAX_ID_BYTES, "the uid")?;
    }

    if command.fields.len() > MAX_FIELDS {
        return Err(InvalidCommand::TooLong("the field list"));
    }
    let mut fields: BTreeMap<FieldName, Option<String>> = BTreeMap::new();
    for field in command.fields {
        if !FieldName::is_valid(&field.name) {
            return Err(InvalidCommand::BadFieldName(field.name));
        }
        if let Some(value) = &field.value {
            check_len(value, MAX_VALUE_BYTES, "a field value")?;
        }
        let name = FieldName::new(field.name.clone());
        if fields.insert(name, field.value).is_some() {
            return Err(InvalidCommand::DuplicateField(field.name));
        }
    }
    check_len(&command.photo_etag, MAX_ID_BYTES, "the photo etag")?;
    let image = photo_image(&command.photo_sha256, &command.photo_content_type)?;
    let mut incoming =
        MappedCard::from_parts(user_id.clone(), uid.clone().unwrap_or_default(), fields);
    // An explicit `photo` field wins; otherwise a non-empty etag reports the photo. An empty
    // etag without a `photo` field leaves the card's photo alone (not reported).
    let photo: FieldName = StandardField::Photo.into();
    if !incoming.fields.contains_key(&photo) && !command.photo_etag.trim().is_empty() {
        incoming.set_photo(Some(command.photo_etag.trim().to_owned()));
    }

    if command.team_ids.len() > MAX_TEAMS || command.teams.len() > MAX_TEAMS {
        return Err(InvalidCommand::TooLong("the team list"));
    }
    let mut team_ids = Vec::with_capacity(command.team_ids.len());
    for id in command.team_ids {
        let id = id.trim().to_owned();
        check_len(&id, 256, "a team id")?;
        if !id.is_empty() {
            team_ids.push(id);
        }
    }
    team_ids.sort();
    team_ids.dedup();
    let mut team_names = BTreeMap::new();
    for team in command.teams {
        let id = team.group_id.trim().to_owned();
        check_len(&id, 256, "a team id")?;
        check_len(&team.name, MAX_ID_BYTES, "a team name")?;
        let name = team.name.trim().to_owned();
        if !id.is_empty() && !name.is_empty() {
            team_names.insert(id, name);
        }
    }
    let role = match Role::try_from(command.role) {
        Ok(Role::Unspecified) => None,
        Ok(Role::Member) => Some(CardRole::Member),
        Ok(Role::TeamAdmin) => Some(CardRole::TeamAdmin),
        Ok(Role::SubteamAdmin) => Some(CardRole::SubteamAdmin),
        Err(_) => return Err(InvalidCommand::BadRole(command.role)),
    };

    let run_id = match command.run_id.trim() {
        "" => None,
        text => Some(
            Uuid::parse_str(text).map_err(|_| InvalidCommand::BadRunId(command.run_id.clone()))?,
        ),
    };
    Ok(ValidCommand {
        photo: image,
        run_id,
        tenant_id,
        message_id: envelope.message_id,
        cause: Cause::try_from(envelope.cause).unwrap_or(Cause::Unspecified),
        action,
        user_id,
        uid,
        version,
        incoming,
        team_ids,
        team_names,
        role,
        observed_at: command
            .observed_at
            .as_ref()
            .and_then(cardsync_proto::to_datetime),
        notified_at: command
            .notified_at
            .as_ref()
            .and_then(cardsync_proto::to_datetime),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardsync_proto::{Envelope, FieldValue};

    fn command(tenant: &str) -> CardCommand {
        CardCommand {
            envelope: Some(Envelope::new(tenant, Cause::Notification)),
            action: WireAction::Upsert as i32,
            user_id: "u1".into(),
            uid: "u1".into(),
            version: 3,
            fields: vec![FieldValue {
                name: "name".into(),
                value: Some("Ann".into()),
            }],
            ..Default::default()
        }
    }

    const TENANT: &str = "6e5c0b2a-1111-4222-8333-944455556666";

    #[test]
    fn a_well_formed_command_passes() {
        let valid = validate(command(TENANT), Origin::default()).unwrap();
        assert_eq!(valid.action, Action::Upsert);
        assert_eq!(valid.version, 3);
        assert_eq!(valid.cause.as_str(), "notification");
        assert_eq!(valid.incoming.value("name"), Some("Ann"));
    }

    #[test]
    fn a_tenant_that_is_not_a_guid_is_refused() {
        assert!(matches!(
            validate(command("contoso"), Origin::default()),
            Err(InvalidCommand::BadTenantId(_))
        ));
    }

    #[test]
    fn a_routing_key_of_another_tenant_is_refused() {
        let origin = Origin {
            tenant_header: None,
            routing_key: Some("command.live.00000000-0000-0000-0000-000000000001"),
        };
        assert!(matches!(
            validate(command(TENANT), origin),
            Err(InvalidCommand::TenantMismatch { .. })
        ));
    }

    #[test]
    fn version_zero_and_unspecified_actions_are_refused() {
        let mut zero = command(TENANT);
        zero.version = 0;
        assert_eq!(
            validate(zero, Origin::default()),
            Err(InvalidCommand::ZeroVersion)
        );
        let mut huge = command(TENANT);
        huge.version = u64::MAX;
        assert!(validate(huge, Origin::default()).is_err());
        let mut none = command(TENANT);
        none.action = 0;
        assert_eq!(
            validate(none, Origin::default()),
            Err(InvalidCommand::BadAction(0))
        );
    }

    #[test]
    fn bad_field_names_and_duplicates_are_refused() {
        let mut bad = command(TENANT);
        bad.fields.push(FieldValue {
            name: "Name!".into(),
            value: None,
        });
        assert!(matches!(
            validate(bad, Origin::default()),
            Err(InvalidCommand::BadFieldName(_))
        ));
        let mut twice = command(TENANT);
        twice.fields.push(FieldValue {
            name: "name".into(),
            value: None,
        });
        assert!(matches!(
            validate(twice, Origin::default()),
            Err(InvalidCommand::DuplicateField(_))
        ));
    }

    #[test]
    fn a_photo_etag_reports_the_photo_and_an_empty_one_does_not() {
        let mut with = command(TENANT);
        with.photo_etag = "etag-1".into();
        let valid = validate(with, Origin::default()).unwrap();
        assert_eq!(valid.incoming.value("photo"), Some("etag-1"));
        let valid = validate(command(TENANT), Origin::default()).unwrap();
        assert!(!valid.incoming.fields.contains_key("photo"));
    }
}
