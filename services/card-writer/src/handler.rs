//! The bus handler of both command queues: validate, apply, count, wake the relay. Transient
//! versus permanent is decided by the errors' `cardsync_bus::Transience`: an invalid command
//! is permanent, an [`ApplyError`] says which it is.
//!
//! Applying goes through a [`Batcher`]: the commands the consumer's concurrent handlers are
//! waiting on are gathered and applied a batch per transaction (group commit), and each handler
//! returns, and so lets its delivery be acknowledged, only after the commit that holds its
//! command. The Redis fast path works per batch too: one pipelined look-up before the
//! transaction, one pipelined write of the applied commands' keys after the commit.

use crate::apply::{Applied, ApplyError, Outcome, apply, apply_all};
use crate::command::{Origin, ValidCommand, validate};
use crate::dedup::Dedup;
use crate::metrics::Metrics;
use cardsync_bus::{Delivery, Handler, HandlerError, Transience as _, names};
use cardsync_cards::DigestEvents;
use cardsync_proto::CardCommand;
use cardsync_store::StoreError;
use cardsync_store::runs::{self, FailedCommand};
use futures_util::FutureExt as _;
use sqlx::PgPool;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tracing::Instrument as _;
use uuid::Uuid;

/// Which command queue a handler serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandQueue {
    /// Real-time commands (`card-writer.live`).
    Live,
    /// Reconcile commands (`card-writer.bulk`).
    Bulk,
}

impl CommandQueue {
    /// The work queue's short name.
    pub fn queue_name(self) -> &'static str {
        match self {
            CommandQueue::Live => names::CARD_WRITER_LIVE,
            CommandQueue::Bulk => names::CARD_WRITER_BULK,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandQueue::Live => "live",
            CommandQueue::Bulk => "bulk",
        }
    }
}

/// How commands are grouped into transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Transactions running at once (each holds one pooled connection while it runs).
    pub transactions: usize,
    /// Most commands in one transaction.
    pub max_commands: usize,
}

/// The Redis dedup fast path as batches use it.
#[derive(Debug, Clone)]
pub struct FastPath {
    /// The keys.
    pub dedup: Dedup,
    /// Counts Redis calls that failed (and were skipped).
    pub errors: prometheus::IntCounter,
}

/// One command waiting for its transaction.
struct Job {
    command: Arc<ValidCommand>,
    /// The delivery's span: the command's events continue its trace.
    span: tracing::Span,
    reply: oneshot::Sender<Result<Applied, ApplyError>>,
}

/// Group commit for card commands. A few workers take whatever commands are waiting (up to
/// `max_commands`) and apply them in one transaction with [`apply_all`]: one commit, one round
/// trip for the locks, the look-ups, the audit rows and the outbox rows, instead of one of each
/// per command. Under light load a batch is a single command, so latency does not wait for a
/// batch to fill. A failed batch is applied again one command per transaction, so every command
/// gets its own answer (a transient error retries only that command).
#[derive(Debug, Clone)]
pub struct Batcher {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("message_id", &self.command.message_id)
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the workers (needs a Tokio runtime). They stop when the last clone is dropped.
    /// With a `fast_path`, commands Redis knows as applied are answered
    /// [`Outcome::DuplicateFast`] without PostgreSQL.
    pub fn start(
        pool: PgPool,
        exchange: String,
        batching: Batching,
        fast_path: Option<FastPath>,
    ) -> Self {
        let workers = batching.transactions.max(1);
        let max_commands = batching.max_commands.max(1);
        let (sender, receiver) = mpsc::channel(workers * max_commands);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..workers {
            tokio::spawn(work(
                receiver.clone(),
                pool.clone(),
                exchange.clone(),
                max_commands,
                fast_path.clone(),
            ));
        }
        Self { jobs: sender }
    }

    /// Applies `command` in the next batch; returns once that batch committed (or failed).
    pub async fn apply(&self, command: Arc<ValidCommand>) -> Result<Applied, ApplyError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            command,
            span: tracing::Span::current(),
            reply,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| ApplyError::WorkerStopped)?;
        answer.await.map_err(|_| ApplyError::WorkerStopped)?
    }
}

/// One worker: waits for a command, takes every other one already waiting (up to
/// `max_commands`), applies them together. The receiver is shared, so while one worker's
/// transaction runs the next batch gathers behind another worker.
async fn work(
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    pool: PgPool,
    exchange: String,
    max_commands: usize,
    fast_path: Option<FastPath>,
) {
    loop {
        let batch = {
            let mut jobs = jobs.lock().await;
            let Some(first) = jobs.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < max_commands {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch
        };
        // A panic drops the batch's reply senders (its handlers see `WorkerStopped`, a
        // transient error) but never the worker.
        let _ = AssertUnwindSafe(run_batch(&pool, &exchange, fast_path.as_ref(), batch))
            .catch_unwind()
            .await;
    }
}

async fn run_batch(pool: &PgPool, exchange: &str, fast_path: Option<&FastPath>, batch: Vec<Job>) {
    // A handler that stopped waiting (its task was cancelled at shutdown) leaves its delivery
    // unacknowledged; it is redelivered and applied then.
    let mut batch: Vec<Job> = batch
        .into_iter()
        .filter(|job| !job.reply.is_closed())
        .collect();
    if let Some(fast_path) = fast_path {
        batch = skip_known(fast_path, batch).await;
    }
    if batch.is_empty() {
        return;
    }
    let answered = apply_batch(pool, exchange, batch).await;
    if let Some(fast_path) = fast_path {
        // Written before the answers, so a redelivery after the ack finds the key. Only a
        // fast path: a key lost here costs a version check in PostgreSQL later.
        let keys: Vec<(uuid::Uuid, &str)> = answered
            .iter()
            .filter(|(_, result)| result.is_ok())
            .map(|(job, _)| (job.command.tenant_id, job.command.message_id.as_str()))
            .collect();
        if let Err(error) = fast_path.dedup.remember_all(&keys).await {
            fast_path.errors.inc();
            tracing::debug!(error = %cardsync_telemetry::error_chain(&error), "redis dedup keys not written");
        }
    }
    for (job, result) in answered {
        let _ = job.reply.send(result);
    }
}

/// Answers the jobs whose commands Redis knows as applied; returns the others.
async fn skip_known(fast_path: &FastPath, batch: Vec<Job>) -> Vec<Job> {
    let keys: Vec<(uuid::Uuid, &str)> = batch
        .iter()
        .map(|job| (job.command.tenant_id, job.command.message_id.as_str()))
        .collect();
    let seen = match fast_path.dedup.seen_all(&keys).await {
        Ok(seen) if seen.len() == batch.len() => seen,
        Ok(_) => return batch,
        Err(error) => {
            fast_path.errors.inc();
            tracing::debug!(error = %cardsync_telemetry::error_chain(&error), "redis dedup check skipped");
            return batch;
        }
    };
    let mut rest = Vec::with_capacity(batch.len());
    for (job, seen) in batch.into_iter().zip(seen) {
        if seen {
            let _ = job.reply.send(Ok(Applied {
                outcome: Outcome::DuplicateFast,
                card_id: None,
                events: 0,
                person: None,
            }));
        } else {
            rest.push(job);
        }
    }
    rest
}

/// Applies the jobs' commands as one batch (one by one if the batch fails); returns each job
/// with its answer, not yet sent.
async fn apply_batch(
    pool: &PgPool,
    exchange: &str,
    batch: Vec<Job>,
) -> Vec<(Job, Result<Applied, ApplyError>)> {
    let commands: Vec<(&ValidCommand, &tracing::Span)> = batch
        .iter()
        .map(|job| (job.command.as_ref(), &job.span))
        .collect();
    let error = match apply_all(pool, &commands, exchange).await {
        Ok(applied) => {
            return batch.into_iter().zip(applied.into_iter().map(Ok)).collect();
        }
        Err(error) => error,
    };
    if batch.len() == 1 {
        return batch.into_iter().zip([Err(error)]).collect();
    }
    tracing::debug!(
        error = %cardsync_telemetry::error_chain(&error),
        commands = batch.len(),
        "card command batch rolled back; applying its commands one by one"
    );
    let mut answered = Vec::with_capacity(batch.len());
    for job in batch {
        let result = apply(pool, &job.command, exchange)
            .instrument(job.span.clone())
            .await;
        answered.push((job, result));
    }
    answered
}

/// When the consumer gives up on a transiently failing message (as `cardsync_bus::decide`
/// decides with the same settings): the card-writer accounts for a run's command before its
/// last failure dead-letters it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retries {
    /// The bus's `max_attempts`.
    pub max_attempts: u32,
    /// The bus's `retry_delays`.
    pub delays: Vec<std::time::Duration>,
}

impl Retries {
    /// Whether a transient failure on `attempt` dead-letters the message.
    pub fn exhausted(&self, attempt: u32) -> bool {
        matches!(
            cardsync_bus::decide(
                cardsync_bus::Outcome::Transient(String::new()),
                attempt,
                self.max_attempts,
                &self.delays,
            ),
            cardsync_bus::Decision::DeadLetter { .. }
        )
    }
}

/// Applies card commands from one queue.
#[derive(Debug, Clone)]
pub struct CommandHandler {
    queue: CommandQueue,
    batcher: Batcher,
    metrics: Metrics,
    relay_wake: Arc<Notify>,
    pool: PgPool,
    events_exchange: String,
    retries: Retries,
}

impl CommandHandler {
    /// A handler for `queue` writing through `pool` in batches as `batching` says; card events
    /// go to `events_exchange` (full name). Starts the batch workers, so it needs a Tokio
    /// runtime.
    #[allow(
        clippy::too_many_arguments,
        reason = "each is a separately built part of the service; startup names them all"
    )]
    pub fn new(
        queue: CommandQueue,
        pool: PgPool,
        dedup: Dedup,
        metrics: Metrics,
        relay_wake: Arc<Notify>,
        events_exchange: String,
        batching: Batching,
        retries: Retries,
    ) -> Self {
        Self {
            queue,
            pool: pool.clone(),
            events_exchange: events_exchange.clone(),
            retries,
            batcher: Batcher::start(
                pool,
                events_exchange,
                batching,
                Some(FastPath {
                    dedup,
                    errors: metrics.dedup_errors.clone(),
                }),
            ),
            metrics,
            relay_wake,
        }
    }

    fn count(&self, outcome: &str, tenant: &str) {
        self.metrics
            .commands
            .with_label_values(&[self.queue.as_str(), outcome, tenant])
            .inc();
    }

    /// Accounts for a run's command that will never be applied as `error:<reason>` on its run,
    /// durably and before the message is dead-lettered or dropped (once per message, however
    /// often it is delivered). When PostgreSQL cannot take it now, the message is retried
    /// instead, so that it is counted when it is dead-lettered.
    async fn account_failed(
        &self,
        failed: Option<&(Uuid, String)>,
        reason: &str,
    ) -> Result<(), HandlerError> {
        let Some((run_id, message_key)) = failed else {
            return Ok(());
        };
        let failed = FailedCommand {
            run_id: *run_id,
            message_key,
            reason,
        };
        let digests = DigestEvents::new(self.events_exchange.as_str());
        let recorded = async {
            let mut tx = self.pool.begin().await?;
            runs::record_failed(&mut tx, &failed, &digests).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(())
        }
        .await;
        match recorded {
            Ok(()) => {
                // The run may have ended: its digest waits in the outbox.
                self.relay_wake.notify_one();
                Ok(())
            }
            Err(error) if error.is_transient() => Err(HandlerError::transient(error)),
            Err(error) => {
                tracing::warn!(%run_id, reason, error = %cardsync_telemetry::error_chain(&error), "failed command not counted on its run");
                Ok(())
            }
        }
    }
}

/// The run of a command and what identifies its message across deliveries (its envelope's
/// message id, else the AMQP one, else its user, version and action), read before validation
/// so an invalid command is accounted for too. `None` when it names no run.
fn failed_key(delivery: &Delivery<CardCommand>) -> Option<(Uuid, String)> {
    let command = &delivery.message;
    let run_id = Uuid::parse_str(&command.run_id).ok()?;
    let from_envelope = command
        .envelope
        .as_ref()
        .map(|envelope| envelope.message_id.as_str())
        .filter(|id| !id.is_empty());
    let key = match from_envelope.or(delivery.message_id.as_deref()) {
        Some(id) => id.to_owned(),
        None => format!("{}:{}:{}", command.user_id, command.version, command.action),
    };
    Some((run_id, clip_key(key)))
}

/// At most 256 bytes (the column's bound), cut on a character boundary.
fn clip_key(mut key: String) -> String {
    if key.len() > 256 {
        let mut end = 256;
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        key.truncate(end);
    }
    key
}

impl Handler for CommandHandler {
    type Message = CardCommand;

    async fn handle(&self, delivery: Delivery<CardCommand>) -> Result<(), HandlerError> {
        let started = Instant::now();
        let routing_key = (!delivery.exchange.is_empty()).then_some(delivery.routing_key.as_str());
        let origin = Origin {
            tenant_header: delivery.tenant_id.as_deref(),
            routing_key,
        };
        let failed = failed_key(&delivery);
        let attempt = delivery.attempt;
        let command = match validate(delivery.message, origin) {
            Ok(command) => Arc::new(command),
            Err(error) => {
                self.count("invalid", "unknown");
                self.account_failed(failed.as_ref(), "invalid_command")
                    .await?;
                return Err(error.into());
            }
        };
        let tenant = command.tenant_id.to_string();

        let applied = match self.batcher.apply(command.clone()).await {
            Ok(applied) => applied,
            Err(ApplyError::UnknownTenant(_)) => {
                // An offboarded (or never configured) tenant: its commands still queued are
                // consumed and counted, never dead-lettered (RabbitMQ cannot delete them).
                self.count(
                    failed_outcome(&ApplyError::UnknownTenant(command.tenant_id)),
                    &tenant,
                );
                self.account_failed(failed.as_ref(), "unknown_tenant")
                    .await?;
                tracing::warn!(%tenant, user_id = %command.user_id, "card command of an unknown tenant dropped");
                return Ok(());
            }
            Err(error) => {
                self.count(failed_outcome(&error), &tenant);
                if !error.is_transient() || self.retries.exhausted(attempt) {
                    self.account_failed(failed.as_ref(), failure_reason(&error))
                        .await?;
                }
                return Err(error.into());
            }
        };
        let elapsed = started.elapsed().as_secs_f64();
        self.count(applied.outcome.as_str(), &tenant);
        self.metrics
            .apply_duration
            .with_label_values(&[self.queue.as_str()])
            .observe(elapsed);
        if applied.outcome.wrote()
            && let Some(observed) = command.observed_at
        {
            let e2e = (time::OffsetDateTime::now_utc() - observed).as_seconds_f64();
            if e2e >= 0.0 {
                self.metrics
                    .end_to_end
                    .with_label_values(&[self.queue.as_str()])
                    .observe(e2e);
            }
        }
        if applied.outcome.wrote()
            && let Some(notified) = command.notified_at
        {
            let freshness = (time::OffsetDateTime::now_utc() - notified).as_seconds_f64();
            self.metrics
                .freshness
                .with_label_values(&[&tenant])
                .observe(freshness.max(0.0));
        }
        if applied.events > 0 {
            self.relay_wake.notify_one();
        }
        tracing::debug!(
            user_id = %command.user_id,
            action = command.action.as_str(),
            version = command.version,
            outcome = applied.outcome.as_str(),
            "card command applied"
        );
        Ok(())
    }
}

/// The metric outcome of a command that could not be applied.
fn failed_outcome(error: &ApplyError) -> &'static str {
    match error {
        ApplyError::UnknownTenant(_) => "unknown_tenant",
        error if error.is_transient() => "failed",
        _ => "invalid",
    }
}

/// The run count reason (`error:<reason>`) of a command that could not be applied.
fn failure_reason(error: &ApplyError) -> &'static str {
    match error {
        ApplyError::UnknownTenant(_) => "unknown_tenant",
        ApplyError::EmailHeld { .. } => "email_held",
        ApplyError::Store(_) => "store_failed",
        ApplyError::WorkerStopped => "worker_stopped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transient_failure_dead_letters_only_on_the_last_attempt() {
        let retries = Retries {
            max_attempts: 3,
            delays: vec![std::time::Duration::from_secs(1)],
        };
        assert!(!retries.exhausted(1) && !retries.exhausted(2));
        assert!(retries.exhausted(3));
    }

    #[test]
    fn a_failed_commands_key_is_its_message_id_clipped_to_the_column() {
        let mut command = CardCommand {
            run_id: Uuid::nil().to_string(),
            user_id: "u1".into(),
            version: 2,
            ..Default::default()
        };
        let delivery = |command: CardCommand, amqp: Option<&str>| Delivery {
            message: command,
            attempt: 1,
            redelivered: false,
            message_id: amqp.map(str::to_owned),
            tenant_id: None,
            exchange: String::new(),
            routing_key: String::new(),
        };
        assert_eq!(
            failed_key(&delivery(command.clone(), None)),
            Some((Uuid::nil(), "u1:2:0".to_owned()))
        );
        assert_eq!(
            failed_key(&delivery(command.clone(), Some("amqp-1"))).map(|(_, key)| key),
            Some("amqp-1".to_owned())
        );
        command.envelope = Some(cardsync_proto::Envelope {
            message_id: "é".repeat(200),
            ..Default::default()
        });
        let (_, key) = failed_key(&delivery(command.clone(), Some("amqp-1"))).unwrap();
        assert!(key.len() <= 256 && key.starts_with('é'));
        command.run_id = "not a uuid".into();
        assert_eq!(failed_key(&delivery(command, None)), None);
    }

    #[test]
    fn a_failed_command_is_counted_as_unknown_tenant_failed_or_invalid() {
        assert_eq!(
            failed_outcome(&ApplyError::UnknownTenant(uuid::Uuid::nil())),
            "unknown_tenant"
        );
        assert_eq!(failed_outcome(&ApplyError::WorkerStopped), "failed");
        let corrupt = sqlx::Error::Decode("not a card status".into());
        assert_eq!(failed_outcome(&ApplyError::from(corrupt)), "invalid");
    }
}
