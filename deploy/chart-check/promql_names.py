#!/usr/bin/env python3
"""Every PromQL expression the chart ships, parsed, and the metrics each one names.

The expressions are the rules of the PrometheusRule (rendered with ci/every-feature-values.yaml)
and the targets and variable queries of the Grafana dashboards (dashboards/*.json, Grafana's
variables replaced by sample values). Each is parsed by promql-parser (PyPI, a binding of the
Rust crate of the same name); prints JSON:

    {"expressions": 57, "errors": [...], "recorded": [...], "metrics": {"name": ["where", ...]}}

`make chart-check` fails on any parse error; the pipeline test
`every_metric_the_chart_names_is_exported` (tests/demo) compares "metrics" with a real `/metrics`
scrape of every service.
"""

import json
import pathlib
import re
import sys

import helm_python as helm
import promql_parser
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "cardsync"
# Grafana's variables, replaced by values of the right kind so the expression parses.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${datasource}": "prometheus",
}


def rule_expressions():
    values = yaml.safe_load((CHART / "ci" / "every-feature-values.yaml").read_text())
    manifests = helm.Chart.load(str(CHART)).render(values, name="cardsync", namespace="cardsync",
                                                   is_install=True)
    found, recorded = [], []
    for source, text in manifests.items():
        if source.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if not document or document.get("kind") != "PrometheusRule":
                continue
            for group in document["spec"]["groups"]:
                for rule in group["rules"]:
                    name = rule.get("alert") or rule.get("record")
                    found.append((f"rule {name}", rule["expr"]))
                    if "record" in rule:
                        recorded.append(rule["record"])
    return found, recorded


def dashboard_expressions():
    found = []
    for path in sorted((CHART / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        panels = list(board.get("panels", []))
        while panels:
            panel = panels.pop()
            panels.extend(panel.get("panels", []))
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((f"{path.name}: {panel.get('title')}", target["expr"]))
        for variable in board.get("templating", {}).get("list", []):
            query = variable.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query or "")
            if match:
                found.append((f"{path.name}: variable {variable['name']}", match.group(1)))
    return found


def selectors(node):
    """Every VectorSelector under `node`."""
    stack, out = [node], []
    while stack:
        node = stack.pop()
        if isinstance(node, promql_parser.VectorSelector):
            out.append(node)
            continue
        for attribute in ("lhs", "rhs", "expr", "param", "vector_selector"):
            child = getattr(node, attribute, None)
            if child is not None and type(child).__module__.startswith("promql_parser"):
                stack.append(child)
        stack.extend(getattr(node, "args", None) or [])
    return out


def main():
    rules, recorded = rule_expressions()
    expressions = rules + dashboard_expressions()
    errors, metrics = [], {}
    for where, expr in expressions:
        text = expr
        for variable, value in GRAFANA_VARIABLES.items():
            text = text.replace(variable, value)
        text = re.sub(r"\$\{?(\w+)\}?", r"\1", text)
        try:
            tree = promql_parser.parse(text)
        except Exception as error:  # the binding raises its own exception types
            errors.append(f"{where}: {error}: {expr}")
            continue
        for selector in selectors(tree):
            if selector.name:
                metrics.setdefault(selector.name, []).append(where)
            else:
                errors.append(f"{where}: a selector without a metric name: {expr}")
    json.dump({"expressions": len(expressions), "errors": errors, "recorded": sorted(recorded),
               "metrics": {k: sorted(set(v)) for k, v in sorted(metrics.items())}},
              sys.stdout, indent=2)
    print()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
