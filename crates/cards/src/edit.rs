//! Changes made on the card rather than in the directory: a local field edit (refused for
//! locked fields by `cardsync_rules::apply_local_edit`) and a card created before any sync.
//! Both write the card and journal it (an audit row and an `updated`/`created` event) in one
//! transaction.

use crate::journal::{Entry, Journal, LOCAL_EDIT, Source};
use cardsync_proto::card_event::Kind;
use cardsync_rules::{
    EditRefused, FieldName, FieldRules, FieldStates, MAX_VALUE_BYTES, apply_local_edit,
};
use cardsync_store::cards::{self, Card, CardStatus};
use cardsync_store::{StoreError, tenants};
use sqlx::PgPool;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Why an edit was not made.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The tenant is not configured.
    #[error("tenant {0} is not configured")]
    UnknownTenant(Uuid),
    /// No such card in this tenant.
    #[error("card {0} does not exist")]
    UnknownCard(Uuid),
    /// The card was deleted.
    #[error("card {0} was deleted")]
    Deleted(Uuid),
    /// Not a card field name.
    #[error("{0:?} is not a valid field name")]
    BadFieldName(String),
    /// A value over the limit.
    #[error("the value is longer than {MAX_VALUE_BYTES} bytes")]
    TooLong,
    /// The rules refuse the edit (a locked field).
    #[error(transparent)]
    Refused(#[from] EditRefused),
    /// Another card already has this email.
    #[error("another card already has this email")]
    EmailInUse,
    /// PostgreSQL failed.
    #[error("card store failed")]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for EditError {
    fn from(error: sqlx::Error) -> Self {
        EditError::Store(StoreError::Query(error))
    }
}

impl EditError {
    /// Whether PostgreSQL was unavailable (answer 503) rather than the request being wrong:
    /// the store's one transient classification.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, EditError::Store(error) if error.is_transient())
    }
}

/// `rules` with every field editable (what a disconnected tenant's cards follow).
fn unlocked(rules: &FieldRules) -> FieldRules {
    let mut rules = rules.clone();
    let fields = &mut rules.fields;
    for rule in [
        &mut fields.name,
        &mut fields.email,
        &mut fields.job_title,
        &mut fields.company,
        &mut fields.phone,
        &mut fields.location,
        &mut fields.department,
    ] {
        rule.locked = false;
    }
    fields.photo.locked = false;
    for rule in rules.custom_fields.values_mut() {
        rule.locked = false;
    }
    rules
}

fn email_conflict(error: StoreError) -> EditError {
    match &error {
        StoreError::Query(sqlx::Error::Database(db))
            if db.is_unique_violation() && db.constraint() == Some("cards_by_email") =>
        {
            EditError::EmailInUse
        }
        _ => EditError::Store(error),
    }
}

/// Sets one field of a card as a local edit (`None` or blank clears it); its event goes to
/// `exchange` (full name). Returns the card.
pub async fn edit_field(
    pool: &PgPool,
    exchange: &str,
    tenant_id: Uuid,
    card_id: Uuid,
    field: &str,
    value: Option<&str>,
) -> Result<Card, EditError> {
    if !FieldName::is_valid(field) {
        return Err(EditError::BadFieldName(field.to_owned()));
    }
    if value.is_some_and(|v| v.len() > MAX_VALUE_BYTES) {
        return Err(EditError::TooLong);
    }
    let mut tx = pool.begin().await?;
    let tenant = tenants::get(&mut *tx, tenant_id)
        .await?
        .ok_or(EditError::UnknownTenant(tenant_id))?;
    let mut card = cards::lock(&mut tx, tenant_id, card_id)
        .await?
        .ok_or(EditError::UnknownCard(card_id))?;
    if card.status == CardStatus::Deleted {
        return Err(EditError::Deleted(card_id));
    }
    let name = FieldName::new(field);
    // A disconnected tenant's directory no longer manages its cards: no field is locked.
    let rules = if cardsync_store::admin::is_disconnected(&mut *tx, tenant_id).await? {
        unlocked(&tenant.rules)
    } else {
        tenant.rules
    };
    let states = apply_local_edit(&rules, &card.fields, &name, value)?;
    if states == card.fields {
        return Ok(card);
    }
    let before = card.clone();
    let changed = before.fields.value(field) != states.value(field);
    card.fields = states;
    card.email = card.fields.value("email").map(str::to_owned);
    cards::update(&mut tx, &card)
        .await
        .map_err(email_conflict)?;
    // Every state change is audited; only a changed value is announced.
    let events: &[Kind] = if changed { &[Kind::Updated] } else { &[] };
    let mut journal = Journal::new(exchange);
    journal.record(&Entry {
        source: Source::LocalEdit,
        action: Some(LOCAL_EDIT),
        before: Some(&before),
        after: &card,
        events,
        changed_fields: &[field.to_owned()],
    });
    journal.write(&mut tx).await?;
    tx.commit().await?;
    Ok(card)
}

/// Creates a card that exists before any sync (a person who already has a card): every value
/// is a local value, and a later command with the same email links it.
pub async fn create_local_card(
    pool: &PgPool,
    exchange: &str,
    tenant_id: Uuid,
    values: &BTreeMap<String, Option<String>>,
) -> Result<Card, EditError> {
    for (name, value) in values {
        if !FieldName::is_valid(name) {
            return Err(EditError::BadFieldName(name.clone()));
        }
        if value.as_ref().is_some_and(|v| v.len() > MAX_VALUE_BYTES) {
            return Err(EditError::TooLong);
        }
    }
    let mut tx = pool.begin().await?;
    tenants::get(&mut *tx, tenant_id)
        .await?
        .ok_or(EditError::UnknownTenant(tenant_id))?;
    let mut card = Card::new(tenant_id);
    card.fields = FieldStates::from_local_values(
        values
            .iter()
            .map(|(name, value)| (FieldName::new(name.clone()), value.as_deref())),
    );
    card.email = card.fields.value("email").map(str::to_owned);
    cards::insert(&mut tx, &card)
        .await
        .map_err(email_conflict)?;
    let mut journal = Journal::new(exchange);
    journal.record(&Entry {
        source: Source::LocalEdit,
        action: Some("created"),
        before: None,
        after: &card,
        events: &[Kind::Created],
        changed_fields: &card.fields.filled_names(),
    });
    journal.write(&mut tx).await?;
    tx.commit().await?;
    Ok(card)
}
