//! Run digests: who a run added and removed (recorded by the card-writer in the transaction that
//! made each change, bounded per run), and the digest a finished run is announced with, put in
//! the outbox by the transaction that ended the run (migration 0060). Live runs are announced
//! once a day per tenant instead, when the UTC day is over and all its live runs ended.

use super::RunStatus;
use crate::StoreError;
use crate::outbox::{self, NewMessage};
use sqlx::{FromRow, PgConnection, PgExecutor};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use uuid::Uuid;

/// The kinds of run announced one by one (scheduled or manual work). Live runs are announced
/// as one daily digest per tenant.
pub const DIGEST_KINDS: [&str; 5] = [
    "sync_now",
    "user_sync",
    "group_sync",
    "rules_apply",
    "reconcile",
];

/// Most people named per run (or day) and direction; the totals are exact whatever the number.
pub const MAX_DIGEST_PEOPLE: usize = 100;

/// How many days back a daily digest is still sent for a day that was not announced (the
/// `reconciler due` job was not running when the day ended).
const DAILY_LOOKBACK_DAYS: i64 = 3;

/// A person a run added or removed.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct DigestPerson {
    /// The directory user.
    pub user_id: String,
    /// Their card.
    pub card_id: Uuid,
    /// The card's name, if it has one.
    pub name: Option<String>,
    /// The card's email, if it has one.
    pub email: Option<String>,
    /// The outcome: `created`, `reactivated` (added), `deactivated`, `deleted` (removed).
    pub change: String,
}

/// A person to record on a run (see [`super::record_applied`]).
pub type NewPerson = DigestPerson;

impl DigestPerson {
    /// `added` or `removed`, by the outcome; `None` for an outcome that is neither.
    pub fn direction(&self) -> Option<&'static str> {
        match self.change.as_str() {
            "created" | "reactivated" => Some("added"),
            "deactivated" | "deleted" => Some("removed"),
            _ => None,
        }
    }
}

/// What a finished run (or a tenant's day of live runs) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The run; `None` for a daily digest of live runs.
    pub run_id: Option<Uuid>,
    /// The run's kind (`live` for a daily digest).
    pub kind: String,
    /// The run's cause.
    pub cause: String,
    /// Succeeded or failed.
    pub status: RunStatus,
    /// Who asked.
    pub started_by: String,
    /// The run's narrower target.
    pub target: Option<String>,
    /// Why it failed.
    pub detail: Option<String>,
    /// The run's start (for a day: its first instant, UTC).
    pub from: OffsetDateTime,
    /// The run's end (for a day: the next day's first instant).
    pub until: OffsetDateTime,
    /// The runs it covers.
    pub runs: i64,
    /// Their counts by name, summed.
    pub counts: BTreeMap<String, i64>,
    /// Everyone added (created + reactivated).
    pub added_total: i64,
    /// Everyone removed (deactivated + deleted).
    pub removed_total: i64,
    /// Who was added, at most [`MAX_DIGEST_PEOPLE`].
    pub added: Vec<DigestPerson>,
    /// Who was removed, at most [`MAX_DIGEST_PEOPLE`].
    pub removed: Vec<DigestPerson>,
}

impl Digest {
    fn totals(mut self) -> Self {
        let count = |name: &str| self.counts.get(name).copied().unwrap_or(0);
        self.added_total = count("created") + count("reactivated");
        self.removed_total = count("deactivated") + count("deleted");
        self
    }
}

/// Turns a digest into the outbox row that announces it. The bus encoding lives above the
/// store (`cardsync_cards::digest`), as card events' does.
pub trait DigestEncoder: Sync {
    /// The outbox row of `digest`.
    fn encode(&self, digest: &Digest) -> NewMessage;
}

/// Records who a run's commands added or removed; the caller holds the run's lock, so the bound
/// is exact under concurrent batches. A person already named for the run in that direction (a
/// redelivered command, a second change) is not named again.
pub(super) async fn record_people(
    conn: &mut PgConnection,
    run_id: Uuid,
    people: &[NewPerson],
) -> Result<(), StoreError> {
    if people.is_empty() {
        return Ok(());
    }
    let named: Vec<(String, i64)> = sqlx::query_as(
        "SELECT direction, count(*) FROM sync_run_people WHERE run_id = $1 GROUP BY direction",
    )
    .bind(run_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut room: BTreeMap<&str, usize> = ["added", "removed"]
        .into_iter()
        .map(|direction| {
            let have = named
                .iter()
                .find(|(d, _)| d == direction)
                .map_or(0, |(_, n)| usize::try_from(*n).unwrap_or(usize::MAX));
            (direction, MAX_DIGEST_PEOPLE.saturating_sub(have))
        })
        .collect();
    let mut rows: Vec<(&'static str, &NewPerson)> = Vec::new();
    for person in people {
        let Some(direction) = person.direction() else {
            continue;
        };
        let left = room.entry(direction).or_default();
        if *left > 0 {
            *left -= 1;
            rows.push((direction, person));
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let directions: Vec<&str> = rows.iter().map(|(d, _)| *d).collect();
    let users: Vec<&str> = rows.iter().map(|(_, p)| p.user_id.as_str()).collect();
    let changes: Vec<&str> = rows.iter().map(|(_, p)| p.change.as_str()).collect();
    let cards: Vec<Uuid> = rows.iter().map(|(_, p)| p.card_id).collect();
    let names: Vec<Option<&str>> = rows.iter().map(|(_, p)| p.name.as_deref()).collect();
    let emails: Vec<Option<&str>> = rows.iter().map(|(_, p)| p.email.as_deref()).collect();
    sqlx::query(
        "INSERT INTO sync_run_people (run_id, direction, user_id, change, card_id, name, email)
         SELECT $1, d, u, c, k, n, e
           FROM unnest($2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::text[])
                AS p(d, u, c, k, n, e)
         ON CONFLICT (run_id, direction, user_id) DO NOTHING",
    )
    .bind(run_id)
    .bind(&directions)
    .bind(&users)
    .bind(&changes)
    .bind(&cards)
    .bind(&names)
    .bind(&emails)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(FromRow)]
struct EndedRun {
    run_id: Uuid,
    tenant_id: Uuid,
    kind: String,
    cause: String,
    started_by: String,
    target: Option<String>,
    status: String,
    detail: Option<String>,
    started_at: OffsetDateTime,
    finished_at: OffsetDateTime,
}

#[derive(FromRow)]
struct NamedPerson {
    run_id: Uuid,
    direction: String,
    #[sqlx(flatten)]
    person: DigestPerson,
}

/// Puts the digests of the runs among `run_ids` that ended succeeded or failed and are of a
/// [`DIGEST_KINDS`] kind in the outbox (in the caller's transaction, the one that ended them).
pub(super) async fn announce_runs(
    conn: &mut PgConnection,
    run_ids: &[Uuid],
    digests: &dyn DigestEncoder,
) -> Result<(), StoreError> {
    if run_ids.is_empty() {
        return Ok(());
    }
    let ended: Vec<EndedRun> = sqlx::query_as(
        "SELECT run_id, tenant_id, kind, cause, started_by, target, status, detail,
                coalesce(started_at, created_at) AS started_at, finished_at
           FROM sync_runs
          WHERE run_id = ANY($1) AND kind = ANY($2) AND finished_at IS NOT NULL
            AND status IN ('succeeded', 'failed')
          ORDER BY run_id",
    )
    .bind(run_ids)
    .bind(DIGEST_KINDS.as_slice())
    .fetch_all(&mut *conn)
    .await?;
    if ended.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = ended.iter().map(|run| run.run_id).collect();
    let mut counts = super::counts_of(&mut *conn, &ids).await?;
    let people: Vec<NamedPerson> = sqlx::query_as(
        "SELECT run_id, direction, user_id, card_id, name, email, change
           FROM sync_run_people WHERE run_id = ANY($1)
          ORDER BY recorded_at, user_id",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut messages = Vec::with_capacity(ended.len());
    for run in ended {
        let (added, removed) = split(people.iter().filter(|p| p.run_id == run.run_id));
        let digest = Digest {
            tenant_id: run.tenant_id,
            run_id: Some(run.run_id),
            status: RunStatus::parse(&run.status).unwrap_or(RunStatus::Failed),
            kind: run.kind,
            cause: run.cause,
            started_by: run.started_by,
            target: run.target,
            detail: run.detail,
            from: run.started_at,
            until: run.finished_at,
            runs: 1,
            counts: counts.remove(&run.run_id).unwrap_or_default(),
            added_total: 0,
            removed_total: 0,
            added,
            removed,
        }
        .totals();
        messages.push(digests.encode(&digest));
    }
    outbox::enqueue_all(conn, &messages).await
}

fn split<'a>(
    people: impl Iterator<Item = &'a NamedPerson>,
) -> (Vec<DigestPerson>, Vec<DigestPerson>) {
    let (added, removed): (Vec<&NamedPerson>, Vec<&NamedPerson>) =
        people.partition(|p| p.direction == "added");
    let names = |list: Vec<&NamedPerson>| {
        list.into_iter()
            .take(MAX_DIGEST_PEOPLE)
            .map(|p| p.person.clone())
            .collect()
    };
    (names(added), names(removed))
}

/// Puts in the outbox the daily digest of every tenant's UTC day (of the last few) that is
/// over before `before`, had live runs, all of them ended, and was not announced yet; marks each
/// day announced in the same transaction, so overlapping `reconciler due` jobs announce it once.
pub(super) async fn announce_days(
    conn: &mut PgConnection,
    before: OffsetDateTime,
    digests: &dyn DigestEncoder,
) -> Result<(), StoreError> {
    let days: Vec<(Uuid, time::Date)> = sqlx::query_as(
        "WITH days AS (
             SELECT DISTINCT tenant_id, (scheduled_for AT TIME ZONE 'UTC')::date AS day
               FROM sync_runs
              WHERE kind = 'live'
                AND scheduled_for >= $1 - make_interval(days => $2)
                AND scheduled_for < date_trunc('day', $1 AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
         SELECT d.tenant_id, d.day FROM days d
          WHERE NOT EXISTS (SELECT 1 FROM live_digests l
                             WHERE l.tenant_id = d.tenant_id AND l.day = d.day)
            AND NOT EXISTS (SELECT 1 FROM sync_runs r
                             WHERE r.kind = 'live' AND r.tenant_id = d.tenant_id
                               AND r.finished_at IS NULL
                               AND r.scheduled_for >= d.day::timestamp AT TIME ZONE 'UTC'
                               AND r.scheduled_for < (d.day + 1)::timestamp AT TIME ZONE 'UTC')
          ORDER BY d.tenant_id, d.day",
    )
    .bind(before)
    .bind(i32::try_from(DAILY_LOOKBACK_DAYS).unwrap_or(3))
    .fetch_all(&mut *conn)
    .await?;
    let mut messages = Vec::new();
    for (tenant_id, day) in days {
        let marked = sqlx::query(
            "INSERT INTO live_digests (tenant_id, day) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(tenant_id)
        .bind(day)
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1;
        if marked {
            messages.push(digests.encode(&daily(conn, tenant_id, day).await?));
        }
    }
    outbox::enqueue_all(conn, &messages).await
}

/// The digest of a tenant's live runs of one UTC day.
async fn daily(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    day: time::Date,
) -> Result<Digest, StoreError> {
    let from = day.midnight().assume_utc();
    let until = from + time::Duration::DAY;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT run_id FROM sync_runs
          WHERE tenant_id = $1 AND kind = 'live' AND scheduled_for >= $2 AND scheduled_for < $3",
    )
    .bind(tenant_id)
    .bind(from)
    .bind(until)
    .fetch_all(&mut *conn)
    .await?;
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for (_, of_run) in super::counts_of(&mut *conn, &ids).await? {
        for (name, count) in of_run {
            *counts.entry(name).or_default() += count;
        }
    }
    // A person named by several runs of the day once per direction, by their first change.
    let people: Vec<NamedPerson> = sqlx::query_as(
        "SELECT run_id, direction, user_id, card_id, name, email, change FROM (
             SELECT DISTINCT ON (direction, user_id) *
               FROM sync_run_people WHERE run_id = ANY($1)
              ORDER BY direction, user_id, recorded_at) p
          ORDER BY recorded_at, user_id",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let (added, removed) = split(people.iter());
    Ok(Digest {
        tenant_id,
        run_id: None,
        kind: "live".into(),
        cause: "notification".into(),
        status: RunStatus::Succeeded,
        started_by: "system".into(),
        target: None,
        detail: None,
        from,
        until,
        runs: i64::try_from(ids.len()).unwrap_or(i64::MAX),
        counts,
        added_total: 0,
        removed_total: 0,
        added,
        removed,
    }
    .totals())
}

/// Retention of the daily-digest marks: a day older than the look-back is never announced
/// again, so its mark can go once runs ending before `before` are deleted.
pub(super) async fn forget_days_before(
    executor: impl PgExecutor<'_>,
    before: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM live_digests
          WHERE day < ($1 AT TIME ZONE 'UTC')::date - ($2::int + 1)",
    )
    .bind(before)
    .bind(i32::try_from(DAILY_LOOKBACK_DAYS).unwrap_or(3))
    .execute(executor)
    .await?;
    Ok(())
}
