//! The benchmark's workload: a realistic command stream for one tenant, and for the raw phases
//! exactly what the writer commits for each command (card row, audit row, outbox row), built
//! with the rules merge and the event encoder the writer uses, and written with multi-row
//! statements.

use cardsync_cards::{EventSpec, outbox_message};
use cardsync_proto::card_event::Kind;
use cardsync_proto::{CardCommand, Cause, Envelope, FieldValue, card_command::Action};
use cardsync_rules::{FieldName, FieldRules, FieldStates, MappedCard, plan_create, plan_update};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// A command stream for one tenant: every user created at version 1, then updated round robin
/// with growing versions, each update changing a visible field (so each command writes one
/// audit row and one event, as a real change does).
pub(crate) struct Workload {
    pub(crate) tenant: Uuid,
    pub(crate) commands: Vec<CardCommand>,
    /// Sum over users of their last version: what `sum(applied_version)` reaches when done.
    pub(crate) final_version_sum: i64,
}

impl Workload {
    pub(crate) fn new(tenant: Uuid, users: usize, count: usize, cause: Cause) -> Self {
        let mut commands = Vec::with_capacity(count);
        let mut versions = vec![0_u64; users];
        for index in 0..count {
            let user = index % users;
            versions[user] += 1;
            commands.push(card_command(tenant, user, versions[user], cause));
        }
        let final_version_sum = versions.iter().map(|v| *v as i64).sum();
        Self {
            tenant,
            commands,
            final_version_sum,
        }
    }
}

/// A realistic command: the default mapping's fields with plausible values.
pub(crate) fn card_command(tenant: Uuid, user: usize, version: u64, cause: Cause) -> CardCommand {
    const TITLES: [&str; 6] = [
        "Account Manager",
        "Software Engineer",
        "Sales Director",
        "Product Owner",
        "Support Specialist",
        "Chief Financial Officer",
    ];
    const CITIES: [&str; 4] = [
        "1 Microsoft Way, Redmond, WA, 98052, United States",
        "Friedrichstrasse 68, Berlin, BE, 10117, Germany",
        "20 Bishopsgate, London, ENG, EC2N 4AG, United Kingdom",
        "3-4-1 Shibaura, Minato, Tokyo, 108-0023, Japan",
    ];
    let user_id = Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0000 | user as u128);
    let title = format!(
        "{} (v{version})",
        TITLES[(user + version as usize) % TITLES.len()]
    );
    let fields = [
        ("name", format!("Bench User {user:05}")),
        ("email", format!("bench.user{user:05}@contoso.example")),
        ("job_title", title),
        ("company", "Contoso Ltd".to_owned()),
        ("phone", format!("+1 425 555 {:04}", user % 10_000)),
        ("location", CITIES[user % CITIES.len()].to_owned()),
        ("department", format!("Department {}", user % 40)),
    ];
    CardCommand {
        envelope: Some(Envelope::new(tenant.to_string(), cause)),
        action: Action::Upsert as i32,
        user_id: user_id.to_string(),
        uid: user_id.to_string(),
        version,
        fields: fields
            .into_iter()
            .map(|(name, value)| FieldValue {
                name: name.to_owned(),
                value: Some(value),
            })
            .collect(),
        observed_at: Some(cardsync_proto::timestamp(time::OffsetDateTime::now_utc())),
        notified_at: Some(cardsync_proto::timestamp(time::OffsetDateTime::now_utc())),
        ..Default::default()
    }
}

/// What the writer would commit for each command, precomputed so a raw phase spends its time in
/// PostgreSQL only.
pub(crate) struct RawRow {
    card_id: Uuid,
    user_id: String,
    email: String,
    version: i64,
    fields_before: Option<String>,
    fields_after: String,
    action: &'static str,
    message_id: String,
    event_id: Uuid,
    exchange: String,
    routing_key: String,
    message_type: String,
    payload: Vec<u8>,
    headers: String,
}

pub(crate) fn raw_rows(workload: &Workload, rules: &FieldRules, exchange: &str) -> Vec<RawRow> {
    let mut cards: HashMap<String, (Uuid, FieldStates)> = HashMap::new();
    let mut rows = Vec::with_capacity(workload.commands.len());
    for command in &workload.commands {
        let fields: BTreeMap<FieldName, Option<String>> = command
            .fields
            .iter()
            .map(|f| (FieldName::new(f.name.clone()), f.value.clone()))
            .collect();
        let incoming = MappedCard::from_parts(command.user_id.clone(), command.uid.clone(), fields);
        let (card_id, before, after, kind, changed) = match cards.get(&command.user_id) {
            None => {
                let states = plan_create(rules, &incoming);
                let changed = states.filled_names();
                (Uuid::now_v7(), None, states, Kind::Created, changed)
            }
            Some((card_id, current)) => {
                let plan = plan_update(rules, current, &incoming);
                let changed: Vec<String> =
                    plan.changes.iter().map(|c| c.field.to_string()).collect();
                (
                    *card_id,
                    Some(current.clone()),
                    plan.states,
                    Kind::Updated,
                    changed,
                )
            }
        };
        let (changes_before, changes_after) = FieldStates::audited(before.as_ref(), &after);
        let envelope = command.envelope.as_ref().expect("built with an envelope");
        let message = outbox_message(
            &EventSpec {
                tenant_id: workload.tenant,
                cause: Cause::Notification,
                causation_id: &envelope.message_id,
                kind,
                card_id,
                user_id: &command.user_id,
                version: command.version as i64,
                changed_fields: &changed,
            },
            exchange,
        );
        rows.push(RawRow {
            card_id,
            user_id: command.user_id.clone(),
            email: after.value("email").unwrap_or_default().to_owned(),
            version: command.version as i64,
            // The audit row holds the fields that changed, as the writer's does.
            fields_before: changes_before.map(|b| serde_json::to_string(&b).unwrap_or_default()),
            fields_after: serde_json::to_string(&changes_after).unwrap_or_default(),
            action: if before.is_some() {
                "updated"
            } else {
                "created"
            },
            message_id: envelope.message_id.clone(),
            event_id: message.message_id,
            exchange: message.exchange,
            routing_key: message.routing_key,
            message_type: message.message_type,
            payload: message.payload,
            headers: serde_json::to_string(&message.headers).unwrap_or_default(),
        });
        cards.insert(command.user_id.clone(), (card_id, after));
    }
    rows
}

/// One raw transaction: the card rows upserted only where the version is newer (the writer's
/// check, atomically), then the audit and outbox rows, then the commit (synchronous_commit on).
pub(crate) async fn raw_transaction(
    pool: &sqlx::PgPool,
    tenant: Uuid,
    rows: &[RawRow],
) -> Result<(), sqlx::Error> {
    let column = |f: &dyn Fn(&RawRow) -> String| rows.iter().map(f).collect::<Vec<String>>();
    let card_ids: Vec<Uuid> = rows.iter().map(|r| r.card_id).collect();
    let versions: Vec<i64> = rows.iter().map(|r| r.version).collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO cards (tenant_id, card_id, user_id, uid, email, status, fields,
                            applied_version, role, created_at, updated_at)
         SELECT $1, c, u, u, e, 'active', f::json, v, 'member', now(), now()
           FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::bigint[])
                AS t(c, u, e, f, v)
         ON CONFLICT (tenant_id, user_id) WHERE user_id IS NOT NULL DO UPDATE
            SET email = EXCLUDED.email, fields = EXCLUDED.fields,
                applied_version = EXCLUDED.applied_version, updated_at = now()
          WHERE cards.applied_version < EXCLUDED.applied_version",
    )
    .bind(tenant)
    .bind(&card_ids)
    .bind(column(&|r| r.user_id.clone()))
    .bind(column(&|r| r.email.clone()))
    .bind(column(&|r| r.fields_after.clone()))
    .bind(&versions)
    .execute(&mut *tx)
    .await?;
    let befores: Vec<Option<String>> = rows.iter().map(|r| r.fields_before.clone()).collect();
    sqlx::query(
        "INSERT INTO audit_log (tenant_id, card_id, action, cause, message_id, version,
                                status_before, status_after, fields_before, fields_after)
         SELECT $1, c, a, $2, m, v, CASE WHEN fb IS NULL THEN NULL ELSE 'active' END, 'active',
                fb::json, fa::json
           FROM unnest($3::uuid[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[])
                AS t(c, a, m, v, fb, fa)",
    )
    .bind(tenant)
    .bind(Cause::Notification.as_str())
    .bind(&card_ids)
    .bind(column(&|r| r.action.to_owned()))
    .bind(column(&|r| r.message_id.clone()))
    .bind(&versions)
    .bind(&befores)
    .bind(column(&|r| r.fields_after.clone()))
    .execute(&mut *tx)
    .await?;
    let event_ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
    let payloads: Vec<Vec<u8>> = rows.iter().map(|r| r.payload.clone()).collect();
    sqlx::query(
        "INSERT INTO outbox (tenant_id, message_id, exchange, routing_key, message_type, payload,
                             headers)
         SELECT $1, m, x, k, t, p, h::json
           FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[])
                AS r(m, x, k, t, p, h)",
    )
    .bind(tenant)
    .bind(&event_ids)
    .bind(column(&|r| r.exchange.clone()))
    .bind(column(&|r| r.routing_key.clone()))
    .bind(column(&|r| r.message_type.clone()))
    .bind(&payloads)
    .bind(column(&|r| r.headers.clone()))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}
