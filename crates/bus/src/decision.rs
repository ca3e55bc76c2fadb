//! The one place that decides what happens to a message after a handler ran: acknowledge it,
//! retry it later, dead-letter it, or return it to its queue (the handler was interrupted by
//! shutdown).

use std::fmt;
use std::time::Duration;

/// Why a message went to its dead-letter queue; written to the `cardsync-dead-letter-reason` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// The handler said the message can never succeed.
    Permanent,
    /// Transient failures on every one of `max_attempts` attempts.
    AttemptsExhausted,
    /// The body is not a valid protobuf of the expected type.
    Undecodable,
    /// The AMQP `type` is not the one this queue's handler takes.
    WrongType,
}

impl DeadLetterReason {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::AttemptsExhausted => "attempts-exhausted",
            Self::Undecodable => "undecodable",
            Self::WrongType => "wrong-type",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What came of one delivery, before deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler's effect is durable.
    Handled,
    /// The handler failed but may succeed later (its error text).
    Transient(String),
    /// The handler failed and never will succeed (its error text).
    Permanent(String),
    /// The handler stopped before any effect because the process is shutting down (its text).
    Interrupted(String),
    /// The body did not decode (the decoder's error text).
    Undecodable(String),
    /// The AMQP `type` did not match (the type found).
    WrongType(String),
}

/// What to do with the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Acknowledge: done.
    Ack,
    /// Return it to its queue unacknowledged (`nack` with requeue): not a retry, no attempt
    /// counted, delivered again at once to whichever consumer is still running.
    Requeue {
        /// Why the handler stopped.
        error: String,
    },
    /// Publish to the retry queue of `delay`, marked as attempt `next_attempt`, then acknowledge.
    Retry {
        /// The attempt number the message will carry.
        next_attempt: u32,
        /// How long it waits in the retry queue.
        delay: Duration,
        /// The error that caused the retry.
        error: String,
    },
    /// Publish to the dead-letter queue with the reason and error, then acknowledge.
    DeadLetter {
        /// Why.
        reason: DeadLetterReason,
        /// The last error.
        error: String,
    },
}

/// Decides the fate of a delivery that was on `attempt` (1 = first try). Transient failures are
/// retried after `retry_delays[attempt - 1]` (the last delay repeats) until `max_attempts`
/// attempts were made; everything that can never succeed dead-letters at once.
pub fn decide(
    outcome: Outcome,
    attempt: u32,
    max_attempts: u32,
    retry_delays: &[Duration],
) -> Decision {
    match outcome {
        Outcome::Handled => Decision::Ack,
        Outcome::Interrupted(error) => Decision::Requeue { error },
        Outcome::Permanent(error) => Decision::DeadLetter {
            reason: DeadLetterReason::Permanent,
            error,
        },
        Outcome::Undecodable(error) => Decision::DeadLetter {
            reason: DeadLetterReason::Undecodable,
            error,
        },
        Outcome::WrongType(found) => Decision::DeadLetter {
            reason: DeadLetterReason::WrongType,
            error: format!("unexpected message type {found:?}"),
        },
        Outcome::Transient(error) => {
            let attempt = attempt.max(1);
            match retry_delays.get(tier(attempt, retry_delays.len())) {
                Some(delay) if attempt < max_attempts => Decision::Retry {
                    next_attempt: attempt + 1,
                    delay: *delay,
                    error,
                },
                _ => Decision::DeadLetter {
                    reason: DeadLetterReason::AttemptsExhausted,
                    error,
                },
            }
        }
    }
}

fn tier(attempt: u32, tiers: usize) -> usize {
    let index = usize::try_from(attempt - 1).unwrap_or(usize::MAX);
    index.min(tiers.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delays() -> Vec<Duration> {
        vec![Duration::from_secs(1), Duration::from_secs(10)]
    }

    fn transient(attempt: u32, max: u32) -> Decision {
        decide(Outcome::Transient("boom".into()), attempt, max, &delays())
    }

    #[test]
    fn success_is_acknowledged() {
        assert_eq!(decide(Outcome::Handled, 3, 3, &delays()), Decision::Ack);
    }

    #[test]
    fn an_interrupted_handler_returns_the_message_to_its_queue_on_any_attempt() {
        for attempt in [1, 3, 9] {
            assert_eq!(
                decide(
                    Outcome::Interrupted("stopping".into()),
                    attempt,
                    3,
                    &delays()
                ),
                Decision::Requeue {
                    error: "stopping".into()
                }
            );
        }
    }

    #[test]
    fn a_transient_failure_retries_with_the_next_attempt_and_its_tier() {
        assert_eq!(
            transient(1, 5),
            Decision::Retry {
                next_attempt: 2,
                delay: Duration::from_secs(1),
                error: "boom".into()
            }
        );
        assert!(
            matches!(transient(2, 5), Decision::Retry { next_attempt: 3, delay, .. } if delay == Duration::from_secs(10))
        );
    }

    #[test]
    fn the_last_delay_repeats() {
        assert!(
            matches!(transient(4, 5), Decision::Retry { next_attempt: 5, delay, .. } if delay == Duration::from_secs(10))
        );
    }

    #[test]
    fn the_last_attempt_dead_letters_with_the_error() {
        assert_eq!(
            transient(5, 5),
            Decision::DeadLetter {
                reason: DeadLetterReason::AttemptsExhausted,
                error: "boom".into()
            }
        );
        assert!(matches!(transient(9, 5), Decision::DeadLetter { .. }));
    }

    #[test]
    fn one_attempt_or_no_delays_means_no_retry() {
        assert!(matches!(transient(1, 1), Decision::DeadLetter { .. }));
        assert!(matches!(
            decide(Outcome::Transient("x".into()), 1, 5, &[]),
            Decision::DeadLetter {
                reason: DeadLetterReason::AttemptsExhausted,
                ..
            }
        ));
    }

    #[test]
    fn a_missing_attempt_counts_as_the_first() {
        assert!(matches!(
            transient(0, 5),
            Decision::Retry {
                next_attempt: 2,
                ..
            }
        ));
    }

    #[test]
    fn what_can_never_succeed_dead_letters_at_once() {
        for (outcome, reason) in [
            (Outcome::Permanent("no".into()), DeadLetterReason::Permanent),
            (
                Outcome::Undecodable("bad".into()),
                DeadLetterReason::Undecodable,
            ),
            (Outcome::WrongType("x".into()), DeadLetterReason::WrongType),
        ] {
            assert!(
                matches!(decide(outcome, 1, 5, &delays()), Decision::DeadLetter { reason: r, .. } if r == reason)
            );
        }
    }
}
