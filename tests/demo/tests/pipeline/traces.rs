//! One trace end to end (issue 18 §4): the services export their spans to a real OTLP receiver,
//! and the trace of one notification runs from the webhook through the delta-worker's round to
//! the card-writer's commit, across three processes.

use crate::support::{self, Setup, eventually, unique};
use anyhow::ensure;
use cardsync_demo::otlp::{Receiver, SpanRecord, services_in};
use std::time::Duration;

#[tokio::test]
async fn one_notifications_trace_runs_from_the_webhook_to_the_card_writers_commit() {
    let dir = std::env::temp_dir().join(format!("cardsync-otlp-{}", unique("t").replace(' ', "-")));
    std::fs::create_dir_all(&dir).unwrap();
    let receiver = Receiver::start(&dir).await.unwrap();
    let mut setup = Setup::new("trace", 20);
    setup
        .env
        .push(("CARDSYNC__TELEMETRY__OTLP_ENDPOINT", receiver.url()));
    support::run(setup, async |p| {
        p.initial_sync(Duration::from_secs(90)).await?;
        support::retitle_one(p, "Traced").await?;

        // The services export in batches every few seconds: wait for the whole trace.
        let (trace, spans) = eventually(
            "a notification's trace with spans of all three services",
            Duration::from_secs(60),
            async || {
                let spans = receiver.spans();
                let found = notification_traces(&spans).into_iter().find(|trace| {
                    let services = services_in(&spans, trace);
                    ["webhook", "delta-worker", "card-writer"]
                        .iter()
                        .all(|s| services.contains(*s))
                });
                Ok(found.map(|trace| (trace, spans)))
            },
        )
        .await?;

        let of_trace: Vec<&SpanRecord> = spans.iter().filter(|s| s.trace_id == trace).collect();
        let named = |service: &str, name: &str| {
            of_trace
                .iter()
                .find(|s| s.service == service && s.name == name)
                .copied()
        };
        // The chain of parents: the round is the child of the delta-worker's delivery of the
        // notification, the commit batch of the card-writer's delivery of the command.
        let round = named("delta-worker", "delta round");
        ensure!(
            round.is_some(),
            "no delta round in the trace: {of_trace:#?}"
        );
        let round = round.unwrap();
        let parent_of_round = of_trace.iter().find(|s| s.span_id == round.parent_id);
        ensure!(
            parent_of_round.is_some_and(|s| s.service == "delta-worker" && s.name == "bus.consume"),
            "the round's parent is not the notification's delivery: {of_trace:#?}"
        );
        ensure!(
            of_trace
                .iter()
                .any(|s| s.service == "delta-worker" && s.name == "graph request"),
            "the round's Graph calls are not in the trace: {of_trace:#?}"
        );
        let batch = named("card-writer", "card batch");
        ensure!(
            batch.is_some(),
            "no card-writer commit in the trace: {of_trace:#?}"
        );
        let batch = batch.unwrap();
        ensure!(
            of_trace
                .iter()
                .any(|s| s.span_id == batch.parent_id && s.service == "card-writer"),
            "the commit's parent is not the command's delivery: {of_trace:#?}"
        );
        Ok(())
    })
    .await;
    drop(receiver);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Trace ids of the webhook's notification requests.
fn notification_traces(spans: &[SpanRecord]) -> Vec<String> {
    spans
        .iter()
        .filter(|s| s.service == "webhook" && s.name.contains("/graph/notifications"))
        .map(|s| s.trace_id.clone())
        .collect()
}
