#!/usr/bin/env python3
"""`make api-fuzz`: the admin API's OpenAPI document validated and fuzzed against a running API.

1. graph-sim (the token issuer) and the admin-api run as child processes (the binaries `make`
   built); the database is the test database (CARDSYNC_TEST_DATABASE_URL), the broker the test
   broker, under a topology prefix of this run.
2. graph-sim registers the API's app and an operator granted `admin`; its client-credentials
   token is what schemathesis sends.
3. `/openapi.json` is fetched (no token) and checked with openapi-spec-validator.
4. schemathesis generates requests from the document, valid and invalid, with the token: no
   answer may be a 5xx, every answer must be documented (status, content type, schema), and no
   operation may refuse most of the data its own schema generates (the document must say what
   the API accepts).

Exit 0 when both pass. The children are stopped however the run ends.
"""

import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

API_URI = "api://cardsync-api-fuzz"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(method, url, body=None, headers=None, form=None):
    data = None
    headers = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
        return json.loads(text) if text else None


def wait_ready(url, child, deadline_s=120):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            sys.exit(f"{url}: the process exited ({child.returncode}) before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    sys.exit(f"{url} never answered 200")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", required=True, type=pathlib.Path)
    parser.add_argument("--venv", required=True, type=pathlib.Path)
    parser.add_argument("--max-examples", type=int, default=15)
    args = parser.parse_args()
    args.bin_dir, args.venv = args.bin_dir.resolve(), args.venv.absolute()
    logs = pathlib.Path(tempfile.mkdtemp(prefix="cardsync-api-fuzz-"))
    children = []

    def start(name, argv, env=None):
        log = open(logs / f"{name}.log", "wb")
        child = subprocess.Popen(
            argv, stdout=subprocess.PIPE if name == "graph-sim" else log, stderr=log,
            env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
        )
        children.append(child)
        return child

    try:
        sim = start("graph-sim", [
            str(args.bin_dir / "graph-sim"),
            "--graph-listen", f"127.0.0.1:{free_port()}",
            "--control-listen", f"127.0.0.1:{free_port()}",
        ])
        banner = sim.stdout.readline().decode()
        fields = dict(part.split("=", 1) for part in banner.split() if "=" in part)
        graph, control = fields["graph_url"], fields["control_url"] + "/control"
        tenant = call("POST", f"{control}/tenants", {})["id"]
        api = call("POST", f"{control}/tenants/{tenant}/apps", {
            "identifierUris": [API_URI], "appRoles": ["reader", "admin"],
        })
        operator = call("POST", f"{control}/tenants/{tenant}/apps", {
            "secret": True, "appRoleAssignments": {api["clientId"]: ["admin"]},
        })
        token = call("POST", f"{graph}/{tenant}/oauth2/v2.0/token", form={
            "grant_type": "client_credentials", "client_id": operator["clientId"],
            "client_secret": operator["secret"], "scope": f"{API_URI}/.default",
        })["access_token"]

        port = free_port()
        env = {
            "CARDSYNC__HTTP__LISTEN": f"127.0.0.1:{port}",
            "CARDSYNC__POSTGRES__URL": os.environ.get(
                "CARDSYNC_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/cardsync_test"),
            "CARDSYNC__BUS__URL": os.environ.get(
                "CARDSYNC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            "CARDSYNC__BUS__QUEUE_TYPE": "classic",
            "CARDSYNC__SECRETS__DEVELOPMENT": "true",
            "CARDSYNC__TOPOLOGY__PREFIX": f"apifuzz{uuid.uuid4().hex[:8]}.",
            "CARDSYNC__AUTH__JWKS_URL": f"{graph}/common/discovery/v2.0/keys",
            "CARDSYNC__AUTH__AUDIENCES": json.dumps([API_URI]),
            "CARDSYNC__GRAPH__AUTHORITY_URL": graph,
            "CARDSYNC__GRAPH__GRAPH_URL": graph,
            "CARDSYNC__TELEMETRY__LOG_FILTER": "warn",
        }
        subprocess.run([str(args.bin_dir / "admin-api"), "migrate"], env={**os.environ, **env},
                       check=True, stdout=subprocess.DEVNULL)
        admin = start("admin-api", [str(args.bin_dir / "admin-api"), "serve"], env)
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/health/ready", admin)
        # A tenant of the operator's own, so that reads find something besides 404s.
        call("POST", f"{base}/v1/tenants", {"id": tenant, "name": "api fuzz"},
             headers={"Authorization": f"Bearer {token}"})

        document = logs / "openapi.json"
        with urllib.request.urlopen(f"{base}/openapi.json", timeout=30) as response:
            document.write_bytes(response.read())
        print(f"== openapi-spec-validator {document}", flush=True)
        validated = subprocess.run([str(args.venv / "bin" / "openapi-spec-validator"), str(document)])
        print(f"== schemathesis against {base} ({args.max_examples} examples per operation)", flush=True)
        # Every `{tenant}` (and `?tenant=`) is the operator's own tenant, so requests get past
        # the lookup and reach each operation's own validation and effects.
        config = logs / "schemathesis.toml"
        # The document must say what the API accepts: an operation that refuses most of the data
        # its own schema generates fails the run. The offboard is the one exception: its body
        # must repeat the tenant id, which no schema can say (and a request that did would
        # offboard the tenant every other operation is fuzzed against).
        config.write_text(
            f'[parameters]\n"path.tenant" = "{tenant}"\n"query.tenant" = "{tenant}"\n\n'
            '[warnings]\nfail-on = ["validation_mismatch"]\n\n'
            '[[operations]]\ninclude-operation-id = "tenants_offboard"\nwarnings = false\n'
        )
        fuzzed = subprocess.run([
            str(args.venv / "bin" / "st"), "--config-file", str(config), "run", str(document),
            "--url", base,
            "--header", f"Authorization: Bearer {token}",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                        "response_schema_conformance,response_headers_conformance",
            "--max-examples", str(args.max_examples),
            # One worker: Hypothesis's lambda descriptions are not thread-safe on Python 3.11.
            "--workers", "1",
            "--request-timeout", "30",
            "--no-color",
        ], cwd=logs)  # its cache (.schemathesis/) stays with the run's logs
        if validated.returncode or fuzzed.returncode:
            print(f"logs in {logs}", flush=True)
            return 1
        shutil.rmtree(logs, ignore_errors=True)
        return 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(children):
            try:
                child.wait(timeout=25)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    sys.exit(main())
