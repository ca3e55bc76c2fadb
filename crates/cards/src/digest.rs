//! Run digests as outbox rows: the bus encoding of `cardsync_store::runs::Digest`, given to the
//! store functions that end runs so that the digest goes in the transaction that ended the run.

use cardsync_bus::{headers, routing};
use cardsync_proto::{BusMessage, Cause, DigestPerson, Envelope, Message as _, RunDigest};
use cardsync_store::outbox::NewMessage;
use cardsync_store::runs::{self, Digest, DigestEncoder};
use cardsync_telemetry::propagation;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Encodes digests for one deployment's `card-events` exchange (full name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestEvents {
    exchange: String,
}

impl DigestEvents {
    /// Digests published on `exchange` (the full `card-events` name, topology prefix included).
    pub fn new(exchange: impl Into<String>) -> Self {
        Self {
            exchange: exchange.into(),
        }
    }
}

impl DigestEncoder for DigestEvents {
    fn encode(&self, digest: &Digest) -> NewMessage {
        outbox_message(digest, &self.exchange)
    }
}

fn person(person: &runs::DigestPerson) -> DigestPerson {
    DigestPerson {
        user_id: person.user_id.clone(),
        card_id: person.card_id.to_string(),
        name: person.name.clone().unwrap_or_default(),
        email: person.email.clone().unwrap_or_default(),
        change: person.change.clone(),
    }
}

/// The outbox row of `digest` for `exchange`: `digest.run.<tenant>` for a run,
/// `digest.daily.<tenant>` for a day of live runs, with a message id fixed now.
pub fn outbox_message(digest: &Digest, exchange: &str) -> NewMessage {
    let tenant = digest.tenant_id.to_string();
    let envelope = Envelope::new(tenant.clone(), Cause::parse(&digest.cause));
    let message_id = Uuid::parse_str(&envelope.message_id).unwrap_or_else(|_| Uuid::now_v7());
    let unsigned = |n: i64| u64::try_from(n).unwrap_or(0);
    let event = RunDigest {
        envelope: Some(envelope),
        run_id: digest.run_id.map(|id| id.to_string()).unwrap_or_default(),
        kind: digest.kind.clone(),
        status: digest.status.as_str().to_owned(),
        started_by: digest.started_by.clone(),
        target: digest.target.clone().unwrap_or_default(),
        detail: digest.detail.clone().unwrap_or_default(),
        from: Some(cardsync_proto::timestamp(digest.from)),
        until: Some(cardsync_proto::timestamp(digest.until)),
        runs: u32::try_from(digest.runs).unwrap_or(u32::MAX),
        added_total: unsigned(digest.added_total),
        removed_total: unsigned(digest.removed_total),
        added: digest.added.iter().map(person).collect(),
        removed: digest.removed.iter().map(person).collect(),
        counts: digest
            .counts
            .iter()
            .map(|(name, count)| (name.clone(), unsigned(*count)))
            .collect(),
    };
    let mut header_map: BTreeMap<String, String> =
        propagation::current_trace_headers().into_iter().collect();
    header_map.insert(headers::TENANT_ID.to_owned(), tenant.clone());
    let routing_key = if digest.run_id.is_some() {
        routing::run_digest(&tenant)
    } else {
        routing::daily_digest(&tenant)
    };
    NewMessage {
        tenant_id: digest.tenant_id,
        message_id,
        exchange: exchange.to_owned(),
        routing_key,
        message_type: RunDigest::TYPE.to_owned(),
        payload: event.encode_to_vec(),
        headers: header_map,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardsync_store::runs::RunStatus;
    use time::OffsetDateTime;

    fn digest(run_id: Option<Uuid>) -> Digest {
        let now = OffsetDateTime::now_utc();
        Digest {
            tenant_id: Uuid::new_v4(),
            run_id,
            kind: "sync_now".into(),
            cause: "manual".into(),
            status: RunStatus::Succeeded,
            started_by: "admin@contoso.example".into(),
            target: None,
            detail: None,
            from: now,
            until: now,
            runs: 1,
            counts: [
                ("created".to_owned(), 2),
                ("error:invalid_command".to_owned(), 1),
            ]
            .into_iter()
            .collect(),
            added_total: 2,
            removed_total: 0,
            added: vec![runs::DigestPerson {
                user_id: "u1".into(),
                card_id: Uuid::nil(),
                name: Some("Ada".into()),
                email: None,
                change: "created".into(),
            }],
            removed: Vec::new(),
        }
    }

    #[test]
    fn a_run_digest_goes_to_its_tenants_run_key_with_everything_it_says() {
        let run = Uuid::now_v7();
        let digest = digest(Some(run));
        let row = outbox_message(&digest, "card-events");
        assert_eq!(row.routing_key, format!("digest.run.{}", digest.tenant_id));
        assert_eq!(row.message_type, "cardsync.v1.RunDigest");
        let event = RunDigest::decode(row.payload.as_slice()).unwrap();
        assert_eq!(
            event.envelope.unwrap().message_id,
            row.message_id.to_string()
        );
        assert_eq!(event.run_id, run.to_string());
        assert_eq!(
            (event.added_total, event.added[0].name.as_str()),
            (2, "Ada")
        );
        assert_eq!(event.counts.get("error:invalid_command"), Some(&1));
        assert_eq!(event.status, "succeeded");
    }

    #[test]
    fn a_day_of_live_runs_goes_to_the_daily_key() {
        let digest = digest(None);
        let row = outbox_message(&digest, "p.card-events");
        assert_eq!(
            row.routing_key,
            format!("digest.daily.{}", digest.tenant_id)
        );
        assert_eq!(row.exchange, "p.card-events");
    }
}
