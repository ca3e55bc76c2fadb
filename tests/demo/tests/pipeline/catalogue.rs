//! Every metric the chart's alerts, recording rules and Grafana dashboards name is one that a
//! service really exports (issue 18 §3): the expressions are parsed by
//! deploy/chart-check/promql_names.py (promql-parser, in the project's .venv), the families come
//! from real `/metrics` scrapes of every service after a pipeline has synced and moved a change.

use crate::support::{self, Setup};
use anyhow::{Context as _, ensure};
use cardsync_demo::Service;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

#[tokio::test]
async fn every_metric_the_chart_names_is_exported_by_a_service() {
    let named = tokio::task::spawn_blocking(chart_metrics)
        .await
        .unwrap()
        .unwrap();
    support::run(Setup::new("catalogue", 20), async |p| {
        p.initial_sync(Duration::from_secs(90)).await?;
        support::retitle_one(p, "Catalogued").await?;

        let mut exported = BTreeSet::new();
        for service in Service::ALL {
            let scrape = p.metrics(service).await?;
            let families = families(&scrape);
            ensure!(!families.is_empty(), "{} exports nothing", service.name());
            exported.extend(families);
        }
        let admin = families(&p.admin_metrics().await?);
        ensure!(!admin.is_empty(), "admin-api exports nothing");
        exported.extend(admin);
        let (metrics, recorded) = named.clone();
        // kube-state-metrics' series (a CronJob's last success) come from the cluster, not from
        // cardsync; everything else must be exported by a service.
        let missing: Vec<&String> = metrics
            .iter()
            .filter(|name| !name.starts_with("kube_"))
            .filter(|name| !exported.contains(*name) && !recorded.contains(*name))
            .collect();
        ensure!(
            missing.is_empty(),
            "the chart names metrics no service exports: {missing:?}\nexported: {exported:?}"
        );
        // The check can fail: the list of named metrics is not empty and covers every service.
        for prefix in [
            "cardsync_webhook_",
            "cardsync_delta_",
            "cardsync_card_writer_",
            "cardsync_bus_",
            "cardsync_graph_",
        ] {
            ensure!(
                metrics.iter().any(|name| name.starts_with(prefix)),
                "the dashboards and rules name no {prefix}* metric"
            );
        }
        Ok(())
    })
    .await;
}

/// Every sample name a scrape may contain: each `# TYPE` family, with a histogram's and a
/// summary's `_bucket`, `_sum` and `_count` series.
fn families(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            names.insert(name.to_owned());
            if kind == "histogram" || kind == "summary" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

/// `(named metrics, recorded series)` of the chart, from promql_names.py.
fn chart_metrics() -> anyhow::Result<(BTreeSet<String>, BTreeSet<String>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    let script = root.join("deploy/chart-check/promql_names.py");
    let output = std::process::Command::new(&python)
        .arg(&script)
        .output()
        .with_context(|| {
            format!(
                "running {} (make test installs deploy/chart-check/requirements.txt into .venv)",
                python.display()
            )
        })?;
    let report: Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "promql_names.py printed no report: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    ensure!(
        output.status.success(),
        "the chart's PromQL does not parse: {}",
        report["errors"]
    );
    let metrics = report["metrics"]
        .as_object()
        .context("no metrics in the report")?
        .keys()
        .cloned()
        .collect();
    let recorded = report["recorded"]
        .as_array()
        .context("no recorded series in the report")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    Ok((metrics, recorded))
}
