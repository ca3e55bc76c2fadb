#!/usr/bin/env python3
"""`make chart-check`: the Helm chart and the Dockerfile, checked offline by the real tools.

1. hadolint on deploy/Dockerfile.
2. helm lint --strict (Helm v4 through helm-python-sdk) with each values set: the chart's
   defaults and every helm/cardsync/ci/*-values.yaml.
3. Render each values set (helm-python-sdk) to a manifest stream, as `helm template` would.
4. Cases that must fail (must-fail.yaml): wrong values the schema or a template assertion refuses,
   each with the message an operator would see.
5. kubernetes-validate --strict against Kubernetes 1.33 on every rendered object; every built-in
   object must be reported as validated, and only the custom resources below may be skipped.
6. check-jsonschema on every custom resource (ServiceMonitor, PrometheusRule, ScaledObject,
   TriggerAuthentication) against the pinned CRD schemas in crd-schemas/.
7. promtool check rules on every PrometheusRule's rules; promtool test rules on the rules of the
   every-feature values set with the unit tests in rule-tests/, and every alert must have a test
   that expects it to fire.
8. yamllint on the rendered streams.
9. checkov on the rendered streams; a failed check must be listed with its reason in
   checkov-skips.yaml, and every listed check must still fail somewhere.
10. Coverage: every template renders something in at least one values set.

Every step runs even when an earlier one failed, so one run lists every problem. Exit 1 on any.
"""

import argparse
import collections
import copy
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = ROOT / "deploy" / "chart-check"
CHART = ROOT / "helm" / "cardsync"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
KUBERNETES_VERSION = "1.33.0"
RELEASE = "cardsync"
NAMESPACE = "cardsync"
# Custom resources the chart may render, and the schema each is checked against.
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor_monitoring.coreos.com_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule_monitoring.coreos.com_v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject_keda.sh_v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication_keda.sh_v1alpha1.json",
}
CUSTOM_GROUPS = {api.split("/")[0] for api, _ in CRD_SCHEMAS}


class Checks:
    """Runs named steps, records failures, prints a summary with timings."""

    def __init__(self):
        self.failures = []
        self.timings = []

    def step(self, name, function, *args):
        print(f"== {name}", flush=True)
        started = time.monotonic()
        try:
            problems = function(*args) or []
        except Exception as error:  # a crashed step is a failed step, with its reason
            problems = [f"{type(error).__name__}: {error}"]
        elapsed = time.monotonic() - started
        self.timings.append((name, elapsed, not problems))
        for problem in problems:
            print(f"   FAIL {problem}", flush=True)
        self.failures.extend(f"{name}: {p}" for p in problems)

    def summary(self):
        print("== summary")
        for name, elapsed, ok in self.timings:
            print(f"   {'ok  ' if ok else 'FAIL'} {elapsed:6.1f}s  {name}")
        return not self.failures


def run(command, **kwargs):
    """Runs a tool; returns (exit code, combined output)."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    return result.returncode, (result.stdout + result.stderr).strip()


def values_sets():
    """(name, values) for the defaults and every ci/*-values.yaml."""
    sets = [("default", {})]
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        sets.append((path.name.removesuffix("-values.yaml"), yaml.safe_load(path.read_text()) or {}))
    return sets


def hadolint(tools):
    code, output = run([tools.hadolint, str(DOCKERFILE)])
    print(f"   {output or 'no findings'}")
    return [] if code == 0 else [f"hadolint found problems in {DOCKERFILE.relative_to(ROOT)}"]


def lint(sets):
    problems = []
    for name, values in sets:
        report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE,
                           kube_version=f"v{KUBERNETES_VERSION}")
        for message in report.get("messages", []):
            severity = {1: "INFO", 2: "WARNING", 3: "ERROR"}.get(message["severity"], "UNKNOWN")
            print(f"   [{name}] {severity} {message['path']}: {message['error']}")
            if message["severity"] != 1:
                problems.append(f"[{name}] {message['path']}: {message['error']}")
        problems.extend(f"[{name}] {error}" for error in report.get("errors", []))
    return problems


def render(sets, out, rendered):
    """Writes <out>/<name>.yaml per values set; fills rendered[name] = (path, objects, sources)."""
    chart = helm.Chart.load(str(CHART))
    problems = []
    for name, values in sets:
        try:
            manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except helm.HelmError as error:
            problems.append(f"[{name}] does not render: {error}")
            continue
        stream, objects, sources = [], [], set()
        for source, text in sorted(manifests.items()):
            if source.endswith("NOTES.txt") or not text.strip():
                continue
            sources.add(source)
            # Exactly as rendered, but for leading blank lines, so yamllint sees the real output.
            body = text.lstrip("\n")
            stream.append(f"---\n# Source: {source}\n{body}" + ("" if body.endswith("\n") else "\n"))
            for document in yaml.safe_load_all(text):
                if document is None:
                    continue
                missing = [k for k in ("apiVersion", "kind") if k not in document]
                if missing or not document.get("metadata", {}).get("name"):
                    problems.append(f"[{name}] {source}: an object without apiVersion, kind or name")
                    continue
                objects.append(document)
        path = out / f"{name}.yaml"
        path.write_text("".join(stream))
        rendered[name] = (path, objects, sources)
        kinds = collections.Counter(o["kind"] for o in objects)
        print(f"   [{name}] {len(objects)} objects: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    return problems


def must_fail(_sets):
    """Each case's values must be refused, with the expected message."""
    chart = helm.Chart.load(str(CHART))
    problems = []
    for case in yaml.safe_load((HERE / "must-fail.yaml").read_text()):
        try:
            chart.render(case["values"], name=RELEASE, namespace=NAMESPACE, is_install=True)
        except helm.HelmError as error:
            message = str(error)
            if case["expect"] in message:
                first = next(line for line in message.splitlines()[::-1] if line.strip())
                print(f"   refused as expected: {case['name']}: {first.strip()}")
            else:
                problems.append(f"{case['name']}: refused, but without {case['expect']!r}: {message}")
            continue
        problems.append(f"{case['name']}: rendered, but must be refused with {case['expect']!r}")
    return problems


def is_custom(obj):
    return obj["apiVersion"].split("/")[0] in CUSTOM_GROUPS


def kubernetes_validate(rendered, tools):
    problems = []
    for name, (path, objects, _) in rendered.items():
        code, output = run([tools.kubernetes_validate, "--strict", "-k", KUBERNETES_VERSION, str(path)])
        passed = set(re.findall(r"passed for resource (\S+) against", output))
        skipped = set(re.findall(r"Couldn't find schema for kind (\S+) with api version (\S+)", output))
        for line in output.splitlines():
            if not line.startswith("INFO"):
                print(f"   [{name}] {line}")
        if code != 0:
            problems.append(f"[{name}] kubernetes-validate failed (exit {code})")
        for obj in objects:
            ref = f"{obj['kind'].lower()}/{obj['metadata']['name']}"
            if not is_custom(obj) and ref not in passed:
                problems.append(f"[{name}] {ref} was not validated")
        for kind, api_version in skipped:
            if (api_version, kind) not in CRD_SCHEMAS:
                problems.append(f"[{name}] no schema anywhere for {api_version} {kind}")
        built_in = sum(1 for o in objects if not is_custom(o))
        print(f"   [{name}] {len(passed)} of {built_in} built-in objects validated against {KUBERNETES_VERSION}")
    return problems


def custom_resources(rendered, out, tools):
    by_schema = collections.defaultdict(list)
    problems = []
    directory = out / "custom-resources"
    directory.mkdir(exist_ok=True)
    for name, (_, objects, _) in rendered.items():
        for obj in objects:
            if not is_custom(obj):
                continue
            schema = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
            if schema is None:
                problems.append(f"[{name}] no pinned schema for {obj['apiVersion']} {obj['kind']}")
                continue
            path = directory / f"{name}.{obj['kind']}.{obj['metadata']['name']}.yaml"
            path.write_text(yaml.safe_dump(obj, sort_keys=False))
            by_schema[schema].append(path)
    for schema, paths in sorted(by_schema.items()):
        code, output = run([tools.check_jsonschema, "--schemafile", str(HERE / "crd-schemas" / schema)]
                           + [str(p) for p in paths])
        print(f"   {schema}: {len(paths)} object(s): {output.splitlines()[-1] if output else ''}")
        if code != 0:
            problems.append(f"{schema}:\n{output}")
    missing = {kind for _, kind in CRD_SCHEMAS} - {
        obj["kind"] for _, objects, _ in rendered.values() for obj in objects if is_custom(obj)}
    problems.extend(f"no values set renders a {kind}: it goes unchecked" for kind in sorted(missing))
    return problems


def promtool(rendered, out, tools):
    problems, files = [], []
    for name, (_, objects, _) in rendered.items():
        for obj in objects:
            if obj["kind"] == "PrometheusRule":
                path = out / f"{name}.{obj['metadata']['name']}.rules.yaml"
                path.write_text(yaml.safe_dump(obj["spec"], sort_keys=False))
                files.append(path)
    if not files:
        return ["no PrometheusRule rendered: its rules go unchecked"]
    code, output = run([tools.promtool, "check", "rules"] + [str(f) for f in files])
    for line in output.splitlines():
        print(f"   {line}")
    return [] if code == 0 else ["promtool check rules failed"]


def promtool_tests(rendered, out, tools):
    """The alerts' unit tests, on the every-feature render's rules without their annotations (the
    tests are about when an alert fires; `promtool check rules` checks the annotations)."""
    rules = [obj for name, (_, objects, _) in rendered.items() if "every-feature" in name
             for obj in objects if obj["kind"] == "PrometheusRule"]
    if len(rules) != 1:
        return [f"expected one PrometheusRule in the every-feature render, found {len(rules)}"]
    groups = copy.deepcopy(rules[0]["spec"]["groups"])
    alerts = set()
    for group in groups:
        for rule in group["rules"]:
            rule.pop("annotations", None)
            if "alert" in rule:
                alerts.add(rule["alert"])
    workdir = out / "rule-tests"
    workdir.mkdir()
    (workdir / "cardsync.rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    tests, fired = [], set()
    for test in sorted((HERE / "rule-tests").glob("*.test.yaml")):
        shutil.copy(test, workdir / test.name)
        tests.append(test.name)
        for case in yaml.safe_load(test.read_text())["tests"]:
            for expectation in case.get("alert_rule_test", []):
                if expectation.get("exp_alerts"):
                    fired.add(expectation["alertname"])
    promtool = str(pathlib.Path(tools.promtool).resolve())
    code, output = run([promtool, "test", "rules"] + tests, cwd=workdir)
    for line in output.splitlines():
        print(f"   {line}")
    problems = [] if code == 0 else ["promtool test rules failed"]
    problems.extend(f"alert {alert} has no test that expects it to fire (rule-tests/)"
                    for alert in sorted(alerts - fired))
    problems.extend(f"rule-tests expect {alert} to fire, but the chart has no such alert"
                    for alert in sorted(fired - alerts))
    return problems


def yamllint(rendered, tools):
    paths = [str(path) for path, _, _ in rendered.values()]
    code, output = run([tools.yamllint, "--strict", "-c", str(HERE / "yamllint.yaml")] + paths)
    for line in output.splitlines():
        print(f"   {line}")
    return [] if code == 0 else ["yamllint found problems in the rendered manifests"]


def checkov(rendered, tools):
    skips = yaml.safe_load((HERE / "checkov-skips.yaml").read_text()) or {}
    command = [tools.checkov, "--framework", "kubernetes", "--skip-download", "--quiet", "-o", "json"]
    for path, _, _ in rendered.values():
        command += ["-f", str(path)]
    code, output = run(command)
    start = output.find("{")
    try:
        report = json.loads(output[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        report = None
    if report is None:
        return [f"checkov produced no report (exit {code}): {output[:2000]}"]
    reports = report if isinstance(report, list) else [report]
    summary = collections.Counter()
    problems = []
    used = collections.defaultdict(collections.Counter)
    for part in reports:
        for key in ("passed", "failed"):
            summary[key] += part["summary"][key]
        for failed in part["results"]["failed_checks"]:
            render_name = pathlib.Path(failed["file_path"]).name.removesuffix(".yaml")
            skip = skips.get(failed["check_id"])
            where = f"[{render_name}] {failed['check_id']} {failed['check_name']}: {failed['resource']}"
            if skip and render_name in skip.get("renders", [render_name]):
                used[(failed["check_id"], failed["check_name"])][render_name] += 1
            else:
                problems.append(where)
    for (check_id, check_name), renders in sorted(used.items()):
        counts = ", ".join(f"{n} in {r}" for r, n in sorted(renders.items()))
        print(f"   listed in checkov-skips.yaml: {check_id} {check_name} ({counts})")
    for check_id in sorted(set(skips) - {check_id for check_id, _ in used}):
        problems.append(f"checkov-skips.yaml lists {check_id}, which no longer fails: remove it")
    print(f"   checkov: {summary['passed']} passed, {summary['failed']} failed, "
          f"{summary['failed'] - len(problems)} of them with a reason in checkov-skips.yaml")
    return problems


def coverage(rendered):
    templates = {f"cardsync/templates/{p.name}" for p in (CHART / "templates").glob("*.yaml")}
    seen = set().union(*(sources for _, _, sources in rendered.values())) if rendered else set()
    return [f"{t} renders nothing in any values set: add its feature to ci/every-feature-values.yaml"
            for t in sorted(templates - seen)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    venv_bin = pathlib.Path(sys.executable).parent
    parser.add_argument("--hadolint", default=str(venv_bin / "hadolint"))
    parser.add_argument("--kubernetes-validate", default=str(venv_bin / "kubernetes-validate"))
    parser.add_argument("--check-jsonschema", default=str(venv_bin / "check-jsonschema"))
    parser.add_argument("--yamllint", default=str(venv_bin / "yamllint"))
    parser.add_argument("--checkov", required=True)
    parser.add_argument("--promtool", required=True)
    parser.add_argument("--keep", action="store_true", help="keep the rendered manifests")
    tools = parser.parse_args()

    out = pathlib.Path(tempfile.mkdtemp(prefix="chart-check."))
    sets = values_sets()
    rendered = {}
    checks = Checks()
    checks.step("hadolint deploy/Dockerfile", hadolint, tools)
    checks.step("helm lint --strict", lint, sets)
    checks.step("render (helm-python-sdk, Helm v4)", render, sets, out, rendered)
    checks.step("values that must be refused", must_fail, sets)
    checks.step(f"kubernetes-validate --strict -k {KUBERNETES_VERSION}", kubernetes_validate, rendered, tools)
    checks.step("check-jsonschema: custom resources against pinned CRD schemas", custom_resources,
                rendered, out, tools)
    checks.step("promtool check rules", promtool, rendered, out, tools)
    checks.step("promtool test rules (rule-tests/)", promtool_tests, rendered, out, tools)
    checks.step("yamllint", yamllint, rendered, tools)
    checks.step("checkov", checkov, rendered, tools)
    checks.step("every template renders in some values set", coverage, rendered)
    ok = checks.summary()
    if ok and not tools.keep:
        shutil.rmtree(out)
    else:
        print(f"rendered manifests kept in {out}")
    if not ok:
        print(f"chart-check: {len(checks.failures)} problem(s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
