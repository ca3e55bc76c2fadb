//! W3C trace context across RabbitMQ: the publisher writes `traceparent` (and `tracestate`) into
//! message headers, the consumer makes its handler span a child of it, so one trace follows a
//! change from the webhook through every worker.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Header name of the W3C trace parent.
pub const TRACEPARENT: &str = "traceparent";
/// Header name of the W3C trace state.
pub const TRACESTATE: &str = "tracestate";

#[derive(Default)]
struct Pairs(Vec<(String, String)>);

impl Injector for Pairs {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

/// Trace headers for the current span. When the current span has no valid context (no
/// telemetry installed, or outside any span) a new root `traceparent` is made up, so every
/// message still starts a trace downstream.
pub fn current_trace_headers() -> Vec<(String, String)> {
    let context = tracing::Span::current().context();
    let mut pairs = Pairs::default();
    if context.span().span_context().is_valid() {
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut pairs));
    }
    if !pairs.0.iter().any(|(k, _)| k == TRACEPARENT) {
        pairs
            .0
            .push((TRACEPARENT.to_owned(), new_root_traceparent()));
    }
    pairs.0
}

/// A syntactically valid, sampled root `traceparent` with random ids.
pub fn new_root_traceparent() -> String {
    let trace: u128 = rand::random::<u128>() | 1;
    let span: u64 = rand::random::<u64>() | 1;
    format!("00-{trace:032x}-{span:016x}-01")
}

struct Lookup<'a, F: Fn(&str) -> Option<&'a str>>(F);

impl<'a, F: Fn(&str) -> Option<&'a str>> Extractor for Lookup<'a, F> {
    fn get(&self, key: &str) -> Option<&str> {
        (self.0)(key)
    }
    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// Makes `span` a child of the trace described by the headers `lookup` finds.
/// Invalid or missing headers leave the span as a root.
pub fn set_parent_from<'a>(span: &tracing::Span, lookup: impl Fn(&str) -> Option<&'a str>) {
    let carrier = Lookup(lookup);
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// A span of another trace, kept so that a later span can follow it: a delta round serves many
/// notifications, each with its own trace, so the round is the child of the first and links to
/// the others.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRef(opentelemetry::trace::SpanContext);

/// Most spans one span links to. A round or a write batch may serve thousands of triggers, and a
/// span with thousands of links helps nobody (OpenTelemetry's default limit is 128).
pub const MAX_LINKS: usize = 64;

impl SpanRef {
    /// The current span, when telemetry gave it a valid context.
    pub fn current() -> Option<SpanRef> {
        Self::of(&tracing::Span::current())
    }

    /// `span`, when telemetry gave it a valid context.
    pub fn of(span: &tracing::Span) -> Option<SpanRef> {
        let context = span.context();
        let span = context.span().span_context().clone();
        span.is_valid().then_some(SpanRef(span))
    }

    /// The trace id, as the W3C `traceparent` writes it.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.0.trace_id())
    }
}

/// Makes `span` the child of the first of `spans` and links it to the next [`MAX_LINKS`]: one
/// span serving many others (a batch of commands, each with its own trace).
pub fn follow_all(span: &tracing::Span, spans: impl IntoIterator<Item = SpanRef>) {
    let mut spans = spans.into_iter();
    let parent = spans.next();
    let links: Vec<SpanRef> = spans.take(MAX_LINKS).collect();
    follow(span, parent.as_ref(), &links);
}

/// Makes `span` a child of `parent` (when there is one) and links it to each of `links`.
pub fn follow(span: &tracing::Span, parent: Option<&SpanRef>, links: &[SpanRef]) {
    if let Some(parent) = parent {
        let context = opentelemetry::Context::new().with_remote_span_context(parent.0.clone());
        let _ = span.set_parent(context);
    }
    for link in links {
        span.add_link(link.0.clone());
    }
}

/// Whether `value` is a well-formed version-00 `traceparent`.
pub fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1] != "0".repeat(32)
        && parts[2] != "0".repeat(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_roots_are_valid_traceparents() {
        for _ in 0..100 {
            assert!(is_valid_traceparent(&new_root_traceparent()));
        }
        assert!(!is_valid_traceparent(
            "00-00000000000000000000000000000000-0000000000000001-01"
        ));
        assert!(!is_valid_traceparent("garbage"));
    }

    #[test]
    fn a_span_context_travels_through_headers_to_a_child() {
        crate::init_for_tests();
        let parent = tracing::info_span!("publish");
        let headers = parent.in_scope(current_trace_headers);
        let traceparent = headers
            .iter()
            .find(|(k, _)| k == TRACEPARENT)
            .map(|(_, v)| v.clone())
            .unwrap();
        assert!(is_valid_traceparent(&traceparent));

        let child = tracing::info_span!("consume");
        set_parent_from(&child, |key| {
            headers
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        });
        let child_trace = child.context().span().span_context().trace_id();
        let parent_trace = parent.context().span().span_context().trace_id();
        assert_eq!(child_trace, parent_trace);
        assert!(traceparent.contains(&format!("{parent_trace:032x}")));
    }

    #[test]
    fn a_span_that_follows_another_continues_its_trace() {
        crate::init_for_tests();
        let first = tracing::info_span!("first notification");
        let second = tracing::info_span!("second notification");
        let (first_ref, second_ref) = (
            first.in_scope(SpanRef::current).expect("traced"),
            second.in_scope(SpanRef::current).expect("traced"),
        );
        assert_ne!(first_ref.trace_id(), second_ref.trace_id());

        let round = tracing::info_span!("round");
        follow(&round, Some(&first_ref), std::slice::from_ref(&second_ref));
        let round_ref = round.in_scope(SpanRef::current).expect("traced");
        assert_eq!(round_ref.trace_id(), first_ref.trace_id());
        let headers = round.in_scope(current_trace_headers);
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == TRACEPARENT && v.contains(&first_ref.trace_id()))
        );
    }

    #[test]
    fn outside_any_span_there_is_nothing_to_follow() {
        crate::init_for_tests();
        assert_eq!(SpanRef::current(), None);
    }
}
