//! What asked for a round: the triggers' traces (the round's span continues the first and links
//! to the next few) and the earliest notification's arrival (the freshness SLO's start).

use cardsync_telemetry::propagation::{MAX_LINKS, SpanRef};
use time::OffsetDateTime;

/// What asked for a round, as far as the round's span and the freshness SLO care: the round's
/// span is the child of the first trigger's span and links to the next [`MAX_LINKS`], so the
/// trace of a notification goes on through the round to the card-writer.
#[derive(Debug, Clone, Default)]
pub struct Triggers {
    parent: Option<SpanRef>,
    links: Vec<SpanRef>,
    notified_at: Option<OffsetDateTime>,
}

impl Triggers {
    /// Adds one trigger: its span (if traced) and, for a notification, when the webhook
    /// received it.
    pub fn add(&mut self, span: Option<SpanRef>, notified_at: Option<OffsetDateTime>) {
        if let Some(span) = span {
            if self.parent.is_none() {
                self.parent = Some(span);
            } else if self.links.len() < MAX_LINKS {
                self.links.push(span);
            }
        }
        if let Some(at) = notified_at {
            self.notified_at = Some(self.notified_at.map_or(at, |earliest| earliest.min(at)));
        }
    }

    /// When the earliest notification served arrived; none when no notification asked.
    pub fn notified_at(&self) -> Option<OffsetDateTime> {
        self.notified_at
    }

    /// The trace the round's span continues, when a trigger was traced.
    pub fn parent(&self) -> Option<&SpanRef> {
        self.parent.as_ref()
    }

    /// The other triggers' spans the round's span links to.
    pub fn links(&self) -> &[SpanRef] {
        &self.links
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_keep_the_first_span_as_parent_cap_the_links_and_the_earliest_arrival() {
        cardsync_telemetry::init_for_tests();
        let mut triggers = Triggers::default();
        let at = |s: i64| OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(s);
        let spans: Vec<SpanRef> = (0..MAX_LINKS + 10)
            .map(|_| {
                tracing::info_span!("notification")
                    .in_scope(SpanRef::current)
                    .expect("traced")
            })
            .collect();
        triggers.add(Some(spans[0].clone()), Some(at(50)));
        triggers.add(None, Some(at(20)));
        for span in &spans[1..] {
            triggers.add(Some(span.clone()), Some(at(90)));
        }
        triggers.add(None, None);
        assert_eq!(triggers.parent(), Some(&spans[0]));
        assert_eq!(triggers.links().len(), MAX_LINKS);
        assert_eq!(triggers.links()[0], spans[1]);
        assert_eq!(triggers.notified_at(), Some(at(20)));
        assert_eq!(Triggers::default().notified_at(), None);
    }
}
