//! Grouped acknowledgements for one consuming channel.
//!
//! A handler that finished hands its delivery's acker to an [`AckGroup`] instead of sending
//! `basic.ack` itself. The group sends one `basic.ack` with `multiple` set for every run of
//! finished deliveries that nothing unfinished precedes: a card-writer batch of a hundred
//! commands then costs one ack frame, and one settle in the quorum queue's log, instead of a
//! hundred. Nothing is acknowledged earlier than before: a delivery is acknowledged only after
//! its handler handed it over, which it does only once the effect is durable.
//!
//! The broker numbers a channel's deliveries 1, 2, 3, … and acknowledging tag `n` with
//! `multiple` acknowledges every still unacknowledged delivery up to `n`. So the group keeps the
//! highest tag up to which every delivery is settled (the watermark) and, above it, the finished
//! deliveries waiting for a slower one below them. Those are acknowledged one by one once they
//! have waited [`GROUP_WAIT`], so a slow handler (a long delta round, say) never holds the
//! channel's prefetch window full of finished work. Deliveries settled another way (moved to a
//! retry or dead-letter queue, or returned with `nack`) are reported with [`AckGroup::settled`]
//! so the watermark can pass them.

use lapin::Acker;
use lapin::options::BasicAckOptions;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a finished delivery waits for slower ones below it before it is acknowledged alone.
pub(crate) const GROUP_WAIT: Duration = Duration::from_millis(20);

enum Report<A> {
    /// The handler is done: acknowledge it.
    Ack(u64, A),
    /// Settled some other way already.
    Settled(u64),
}

/// The sending side; cheap to clone into every delivery's task.
#[derive(Clone)]
pub(crate) struct AckGroup {
    reports: mpsc::UnboundedSender<Report<Acker>>,
}

impl AckGroup {
    /// Starts the task that acknowledges the deliveries of one channel (tags from 1). It ends,
    /// after acknowledging everything handed to it, when the last clone of the group is dropped.
    pub(crate) fn start() -> (Self, JoinHandle<()>) {
        let (reports, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(receiver));
        (Self { reports }, task)
    }

    /// Acknowledges the delivery `tag` (with its `acker`) as soon as it can be grouped.
    pub(crate) fn ack(&self, tag: u64, acker: Acker) {
        // The task outlives every sender, so this only fails once the runtime shuts down, when
        // the broker redelivers whatever was not acknowledged.
        let _ = self.reports.send(Report::Ack(tag, acker));
    }

    /// Reports the delivery `tag` as settled by its own `ack`, `nack` or `reject`, already sent.
    pub(crate) fn settled(&self, tag: u64) {
        let _ = self.reports.send(Report::Settled(tag));
    }
}

async fn run(mut reports: mpsc::UnboundedReceiver<Report<Acker>>) {
    let mut window = Window::default();
    loop {
        let report = match window.deadline() {
            Some(deadline) => tokio::select! {
                report = reports.recv() => report,
                _ = tokio::time::sleep_until(deadline) => {
                    send(window.expire(Instant::now())).await;
                    continue;
                }
            },
            None => reports.recv().await,
        };
        let Some(report) = report else {
            // Every handler is done: acknowledge what is left, behind a gap or not.
            send(window.expire(Instant::now() + GROUP_WAIT)).await;
            return;
        };
        // Take every report already waiting, so one ack covers all of them.
        window.add(report, Instant::now());
        while let Ok(report) = reports.try_recv() {
            window.add(report, Instant::now());
        }
        send(window.advance()).await;
    }
}

/// Sends acks in order. A failure means the channel is gone, and with it every unacknowledged
/// delivery, which the broker redelivers; nothing else can be done about it here.
async fn send(acks: Vec<(Acker, bool)>) {
    for (acker, multiple) in acks {
        if let Err(error) = acker.ack(BasicAckOptions { multiple }).await {
            tracing::debug!(%error, "bus ack not sent; the broker redelivers");
        }
    }
}

/// What the group knows about a channel's deliveries above the watermark; `A` is what
/// acknowledges one (an [`Acker`]).
struct Window<A> {
    /// Every delivery up to this tag is settled.
    watermark: u64,
    /// Finished deliveries above the watermark: waiting for an ack (with when they started
    /// waiting) or settled already (`None`).
    above: BTreeMap<u64, Option<(A, Instant)>>,
}

impl<A> Default for Window<A> {
    fn default() -> Self {
        Self {
            watermark: 0,
            above: BTreeMap::new(),
        }
    }
}

impl<A> Window<A> {
    fn add(&mut self, report: Report<A>, now: Instant) {
        match report {
            Report::Ack(tag, acker) => self.above.insert(tag, Some((acker, now))),
            Report::Settled(tag) => self.above.insert(tag, None),
        };
    }

    /// Moves the watermark over every settled or finished delivery right above it; returns the
    /// one `multiple` ack that covers the finished ones (none if they were all settled).
    fn advance(&mut self) -> Vec<(A, bool)> {
        let mut last = None;
        while let Some(entry) = self.above.first_entry() {
            if *entry.key() != self.watermark + 1 {
                break;
            }
            self.watermark += 1;
            if let Some((acker, _)) = entry.remove() {
                last = Some(acker);
            }
        }
        last.map(|acker| vec![(acker, true)]).unwrap_or_default()
    }

    /// When the oldest finished delivery stuck behind a gap must be acknowledged alone.
    fn deadline(&self) -> Option<Instant> {
        self.above
            .values()
            .filter_map(|waiting| waiting.as_ref().map(|(_, since)| *since + GROUP_WAIT))
            .min()
    }

    /// The acks of every finished delivery that has waited [`GROUP_WAIT`] by `now`: alone, since
    /// a delivery below it is unsettled. Each stays above the watermark as settled.
    fn expire(&mut self, now: Instant) -> Vec<(A, bool)> {
        let mut acks = Vec::new();
        for waiting in self.above.values_mut() {
            if waiting
                .as_ref()
                .is_some_and(|(_, since)| *since + GROUP_WAIT <= now)
                && let Some((acker, _)) = waiting.take()
            {
                acks.push((acker, false));
            }
        }
        acks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acks(window: &mut Window<u64>, tags: &[u64], now: Instant) -> Vec<(u64, bool)> {
        for tag in tags {
            window.add(Report::Ack(*tag, *tag), now);
        }
        window.advance()
    }

    #[test]
    fn a_run_of_finished_deliveries_is_one_multiple_ack_at_its_top() {
        let now = Instant::now();
        let mut window = Window::default();
        // Out of order within the run: nothing below is missing, so one ack covers 1..=4.
        assert_eq!(acks(&mut window, &[3, 1, 4, 2], now), vec![(4, true)]);
        assert_eq!(window.watermark, 4);
        assert!(window.above.is_empty());
    }

    #[test]
    fn finished_deliveries_above_an_unfinished_one_wait_for_it() {
        let now = Instant::now();
        let mut window = Window::default();
        assert_eq!(acks(&mut window, &[2, 3], now), vec![]);
        assert_eq!(window.deadline(), Some(now + GROUP_WAIT));
        // 1 finishes: one ack for all three.
        assert_eq!(acks(&mut window, &[1], now), vec![(3, true)]);
        assert_eq!(window.deadline(), None);
    }

    #[test]
    fn deliveries_settled_otherwise_are_passed_but_never_acked_again() {
        let now = Instant::now();
        let mut window = Window::default();
        window.add(Report::Settled(2), now);
        assert_eq!(acks(&mut window, &[1], now), vec![(1, true)]);
        assert_eq!(window.watermark, 2);
        // A settled delivery on top of a run: the ack stops at the last finished one.
        window.add(Report::Settled(4), now);
        assert_eq!(acks(&mut window, &[3], now), vec![(3, true)]);
        assert_eq!(window.watermark, 4);
        window.add(Report::Settled(5), now);
        assert_eq!(window.advance(), vec![]);
        assert_eq!(window.watermark, 5);
    }

    #[test]
    fn deliveries_stuck_behind_a_slow_one_are_acked_alone_after_the_wait() {
        let start = Instant::now();
        let mut window = Window::default();
        assert_eq!(acks(&mut window, &[2, 3], start), vec![]);
        let later = start + GROUP_WAIT / 2;
        assert_eq!(acks(&mut window, &[5], later), vec![]);
        // Not yet: nothing has waited long enough.
        assert_eq!(window.expire(start + GROUP_WAIT / 4), vec![]);
        assert_eq!(
            window.expire(start + GROUP_WAIT),
            vec![(2, false), (3, false)]
        );
        assert_eq!(window.deadline(), Some(later + GROUP_WAIT));
        // When 1 and 4 finish, the watermark passes 2 and 3 without acking them twice.
        assert_eq!(acks(&mut window, &[1, 4], later), vec![(5, true)]);
        assert_eq!(window.watermark, 5);
        assert!(window.above.is_empty());
    }
}
