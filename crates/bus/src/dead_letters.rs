//! Dead letters for operators: what is in a work queue's dead-letter queue (each message's
//! type, tenant, error and attempts), replaying one to the work queue it came from, or
//! discarding one. RabbitMQ cannot read a queue without taking messages, so a look takes them
//! unacknowledged and hands every one back (`basic.nack`, requeue) before it returns; only the
//! message replayed (after the broker confirmed its copy) or discarded is acknowledged.

use crate::connection::{connect, connection_name};
use crate::error::BusError;
use crate::message::{header_int, header_str, headers};
use crate::publisher::{Publisher, Raw};
use crate::settings::BusSettings;
use crate::topology::{Topology, WorkQueue};
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

/// The most messages one look or search takes from a dead-letter queue.
pub const MAX_SCAN: usize = 10_000;

/// One dead-lettered message, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The work queue it was dead-lettered from (full name).
    pub queue: String,
    /// The AMQP message id (the envelope's), how replay and discard name it.
    pub message_id: String,
    /// The AMQP type (the protobuf message's name).
    pub message_type: String,
    /// The tenant header, when the message carries one.
    pub tenant: Option<String>,
    /// The last error.
    pub error: Option<String>,
    /// Why it was dead-lettered (`permanent`, `attempts_exhausted`, …).
    pub reason: Option<String>,
    /// Deliveries it had.
    pub attempts: Option<i64>,
    /// Body size in bytes.
    pub bytes: usize,
}

impl DeadLetter {
    fn of(message: &BasicGetMessage, queue: &str) -> Self {
        let properties = &message.delivery.properties;
        let text = |name: &str| header_str(properties, name).map(str::to_owned);
        Self {
            queue: text(headers::SOURCE_QUEUE).unwrap_or_else(|| queue.to_owned()),
            message_id: properties
                .message_id()
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            message_type: properties
                .kind()
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            tenant: text(headers::TENANT_ID),
            error: text(headers::ERROR),
            reason: text(headers::DEAD_LETTER_REASON),
            attempts: header_int(properties, headers::ATTEMPT),
            bytes: message.delivery.data.len(),
        }
    }
}

/// What became of a replay or discard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Done: this message left the dead-letter queue.
    Done(DeadLetter),
    /// No message with that id (that the caller may see) is in the queue.
    NotFound,
}

/// The dead-letter queues of a topology.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    settings: BusSettings,
    topology: Topology,
    publisher: Publisher,
}

impl DeadLetters {
    /// Dead letters of `topology`; replays are published through `publisher` (with confirms).
    pub fn new(settings: &BusSettings, topology: Topology, publisher: Publisher) -> Self {
        Self {
            settings: settings.clone(),
            topology: topology.with_queue_type(settings.queue_type),
            publisher,
        }
    }

    /// The work queue called `short_name` (`card-writer.live`), when the topology has it.
    pub fn queue(&self, short_name: &str) -> Option<WorkQueue> {
        self.topology.queue(short_name).cloned()
    }

    /// Every work queue (each has a dead-letter queue).
    pub fn queues(&self) -> Vec<WorkQueue> {
        self.topology.queues().to_vec()
    }

    async fn open(&self) -> Result<(Connection, Channel), BusError> {
        let connection = connect(
            &self.settings.url,
            &connection_name("dead-letters"),
            self.settings.connect_timeout,
            &self.topology,
        )
        .await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|source| BusError::Channel {
                operation: "channel.open",
                source,
            })?;
        Ok((connection, channel))
    }

    /// Up to `limit` dead letters of `queue` that `visible` lets through, oldest first; every
    /// message stays in the queue.
    pub async fn list(
        &self,
        queue: &WorkQueue,
        limit: usize,
        visible: impl Fn(&DeadLetter) -> bool,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let (connection, channel) = self.open().await?;
        let dlq = queue.dead_letter_queue();
        let mut found = Vec::new();
        let mut taken = 0;
        let result = async {
            while found.len() < limit && taken < MAX_SCAN {
                let Some(message) = get(&channel, &dlq).await? else {
                    break;
                };
                taken += 1;
                let letter = DeadLetter::of(&message, &queue.name);
                if visible(&letter) {
                    found.push(letter);
                }
            }
            Ok::<_, BusError>(())
        }
        .await;
        give_back(&channel, taken).await;
        close(connection, channel).await;
        result.map(|()| found)
    }

    /// Publishes the dead letter `message_id` of `queue` back to the work queue it came from
    /// (its attempts and error cleared), then removes it from the dead-letter queue.
    pub async fn replay(
        &self,
        queue: &WorkQueue,
        message_id: &str,
        visible: impl Fn(&DeadLetter) -> bool,
    ) -> Result<Settled, BusError> {
        self.settle(queue, message_id, visible, true).await
    }

    /// Removes the dead letter `message_id` of `queue` for good.
    pub async fn discard(
        &self,
        queue: &WorkQueue,
        message_id: &str,
        visible: impl Fn(&DeadLetter) -> bool,
    ) -> Result<Settled, BusError> {
        self.settle(queue, message_id, visible, false).await
    }

    async fn settle(
        &self,
        queue: &WorkQueue,
        message_id: &str,
        visible: impl Fn(&DeadLetter) -> bool,
        replay: bool,
    ) -> Result<Settled, BusError> {
        let (connection, channel) = self.open().await?;
        let dlq = queue.dead_letter_queue();
        let mut taken = 0;
        let result = async {
            while taken < MAX_SCAN {
                let Some(message) = get(&channel, &dlq).await? else {
                    return Ok(Settled::NotFound);
                };
                taken += 1;
                let letter = DeadLetter::of(&message, &queue.name);
                if letter.message_id != message_id || !visible(&letter) {
                    continue;
                }
                if replay {
                    self.republish(&message, &letter.queue).await?;
                }
                channel
                    .basic_ack(message.delivery.delivery_tag, BasicAckOptions::default())
                    .await
                    .map_err(|source| BusError::Channel {
                        operation: "basic.ack",
                        source,
                    })?;
                taken -= 1;
                return Ok(Settled::Done(letter));
            }
            Ok(Settled::NotFound)
        }
        .await;
        give_back(&channel, taken).await;
        close(connection, channel).await;
        result
    }

    /// The message again, on the default exchange straight to its work queue, as a first try.
    async fn republish(&self, message: &BasicGetMessage, work_queue: &str) -> Result<(), BusError> {
        let properties = message.delivery.properties.clone();
        let mut table = FieldTable::default();
        if let Some(headers) = properties.headers() {
            for (name, value) in headers.inner() {
                let cleared = [
                    headers::ATTEMPT,
                    headers::ERROR,
                    headers::DEAD_LETTER_REASON,
                    headers::SOURCE_QUEUE,
                ];
                if !cleared.contains(&name.as_str()) && !name.as_str().starts_with("x-") {
                    table.insert(name.clone(), value.clone());
                }
            }
        }
        let raw = Raw::new(
            "",
            work_queue,
            message.delivery.data.clone(),
            properties.with_headers(table),
        )
        .map_err(|error| BusError::Republish {
            target: work_queue.to_owned(),
            source: Box::new(error),
        })?;
        self.publisher
            .publish_raw(vec![raw])
            .await
            .map_err(|error| BusError::Republish {
                target: work_queue.to_owned(),
                source: Box::new(error),
            })
    }
}

async fn get(channel: &Channel, queue: &str) -> Result<Option<BasicGetMessage>, BusError> {
    channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
        .map_err(|source| BusError::Channel {
            operation: "basic.get",
            source,
        })
}

/// Hands every message still held back to the queue (a closing channel would too; this says
/// so at once, so the next look sees them).
async fn give_back(channel: &Channel, held: usize) {
    if held == 0 {
        return;
    }
    let _ = channel
        .basic_nack(
            0,
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        )
        .await;
}

async fn close(connection: Connection, channel: Channel) {
    crate::connection::close_politely([&channel], Some(&connection), "done").await;
}
