"""Starts one graph-sim with TLS for the session and builds Microsoft's clients against it.

graph-sim is started from GRAPH_SIM_BIN (the Makefile passes the built binary) or with `cargo run`.
Its CA file is exported as SSL_CERT_FILE (httpx, used by msgraph-sdk) and REQUESTS_CA_BUNDLE
(requests, used by azure-identity's synchronous credentials through azure-core) before any client
is built, so the clients trust graph-sim exactly as they would trust a corporate CA.
"""

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
PERMISSIONS = ["User.Read.All", "GroupMember.Read.All", "Group.Read.All"]


class Sim:
    """A running graph-sim process: its URLs, CA file and control API."""

    def __init__(self, proc, graph_url, control_url, https_url, ca_file, log_path):
        self.proc = proc
        self.graph_url = graph_url
        self.control_url = control_url
        self.https_url = https_url
        self.ca_file = ca_file
        self.log_path = log_path

    def control(self, method, path, json=None, expect=(200, 201, 204)):
        resp = requests.request(method, f"{self.control_url}/control{path}", json=json, timeout=30)
        assert resp.status_code in expect, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None

    def counters(self, tenant):
        return self.control("GET", f"/counters?tenant={tenant}")

    def log_lines(self):
        return Path(self.log_path).read_text(errors="replace").splitlines()


def _start_command(ca_file):
    args = [
        "--graph-listen", "127.0.0.1:0",
        "--control-listen", "127.0.0.1:0",
        "--https-listen", "127.0.0.1:0",
        "--tls",
        "--ca-out", str(ca_file),
        "--workers", "2",
    ]
    binary = os.environ.get("GRAPH_SIM_BIN")
    if binary:
        return [binary, *args]
    return ["cargo", "run", "--quiet", "--locked", "-p", "graph-sim", "--", *args]


@pytest.fixture(scope="session")
def sim(tmp_path_factory):
    work = tmp_path_factory.mktemp("graph-sim")
    ca_file = work / "ca.pem"
    log_path = work / "graph-sim.log"
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "graph_sim=info"), NO_COLOR="1")
    log = open(log_path, "w")
    proc = subprocess.Popen(
        _start_command(ca_file), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, text=True
    )
    line = proc.stdout.readline()
    match = re.search(
        r"graph_url=(\S+) control_url=(\S+) https_url=(\S+) ca_file=(\S+)", line or ""
    )
    if not match:
        proc.kill()
        pytest.exit(f"graph-sim did not start: {line!r}; log: {log_path.read_text()[-2000:]}", 2)
    # Keep draining stdout so the process never blocks on a full pipe.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    graph_url, control_url, https_url, ca = match.groups()
    os.environ["SSL_CERT_FILE"] = ca
    os.environ["REQUESTS_CA_BUNDLE"] = ca
    # The control API is plain HTTP on loopback; keep proxies out of every client.
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    running = Sim(proc, graph_url, control_url, https_url, ca, log_path)
    print(f"graph-sim https_url={https_url} ca_file={ca} log={log_path}", file=sys.stderr)
    yield running
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def tenant(sim):
    """A fresh tenant with an app that holds a secret and cardsync's permissions."""
    t = sim.control("POST", "/tenants", {})
    app = sim.control(
        "POST",
        f"/tenants/{t['id']}/apps",
        {"secret": True, "permissions": PERMISSIONS, "displayName": "conformance"},
    )
    return {"id": t["id"], "domain": t["domain"], "client_id": app["clientId"], "secret": app["secret"]}


def secret_credential(sim, tenant):
    from azure.identity import ClientSecretCredential

    return ClientSecretCredential(
        tenant["id"],
        tenant["client_id"],
        tenant["secret"],
        authority=sim.https_url,
        # Instance discovery would ask login.microsoftonline.com about our host; graph-sim serves its own
        # `/common/discovery/instance`, exercised through MSAL directly in test_identity.py.
        disable_instance_discovery=True,
    )


def graph_client(sim, credential):
    """A GraphServiceClient whose base URL and allowed hosts are graph-sim's HTTPS endpoint."""
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient

    host = sim.https_url.split("://", 1)[1].split(":")[0]
    auth = AzureIdentityAuthenticationProvider(
        credential, scopes=[GRAPH_SCOPE], allowed_hosts=[host]
    )
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = f"{sim.https_url}/v1.0"
    return GraphServiceClient(request_adapter=adapter)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(predicate, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
