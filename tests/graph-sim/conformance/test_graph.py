"""Microsoft's Graph SDK for Python (msgraph-sdk) against graph-sim over HTTPS: paging, $count, delta,
transitive members, subscriptions and throttling, with URLs exactly as the SDK builds them."""

import asyncio
import datetime
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.models.subscription import Subscription
from msgraph.generated.models.user import User
from msgraph.generated.users.delta.delta_request_builder import DeltaRequestBuilder
from msgraph.generated.users.users_request_builder import UsersRequestBuilder
from msgraph_core.tasks.page_iterator import PageIterator

from conftest import graph_client, secret_credential, unique


def run(coro):
    return asyncio.run(coro)


def seed(sim, tenant, users):
    sim.control("POST", f"/tenants/{tenant['id']}/seed", {"users": users, "seed": 5})


def live_user_ids(sim, tenant):
    snapshot = sim.control("GET", f"/tenants/{tenant['id']}/snapshot")
    # The snapshot names the object's life cycle `lifecycleState` (older builds: `state`).
    return {
        u["id"]
        for u in snapshot["directory"]["users"]
        if u.get("lifecycleState", u.get("state")) == "active"
    }


def test_the_page_iterator_lists_every_user_across_pages(sim, tenant):
    seed(sim, tenant, 130)
    expected = live_user_ids(sim, tenant)

    async def go():
        client = graph_client(sim, secret_credential(sim, tenant))
        query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
            top=25, select=["id", "displayName", "userPrincipalName"]
        )
        first = await client.users.get(RequestConfiguration(query_parameters=query))
        assert first.odata_next_link.startswith(f"{sim.https_url}/v1.0/users?"), first.odata_next_link
        pages = [first]
        seen = []
        iterator = PageIterator(first, client.request_adapter)

        def collect(user):
            seen.append(user.id)
            return True

        original_next = iterator.next

        async def counting_next():
            page = await original_next()
            if page:
                pages.append(page)
            return page

        iterator.next = counting_next
        await iterator.iterate(collect)
        return seen, len(pages)

    seen, pages = run(go())
    assert len(seen) == len(set(seen)), "no user twice"
    assert set(seen) == expected
    assert pages >= 6, f"{len(expected)} users at 25 per page must take several pages, took {pages}"


def test_count_needs_consistency_level_eventual(sim, tenant):
    seed(sim, tenant, 12)
    expected = len(live_user_ids(sim, tenant))

    async def go():
        client = graph_client(sim, secret_credential(sim, tenant))
        config = RequestConfiguration()
        config.headers.add("ConsistencyLevel", "eventual")
        count = await client.users.count.get(config)
        query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(count=True, top=5)
        listed = await client.users.get(RequestConfiguration(headers=config.headers, query_parameters=query))
        try:
            await client.users.count.get()
            refused = None
        except Exception as e:  # the SDK raises an ODataError for 400
            refused = e
        return count, listed.odata_count, refused

    count, listed, refused = run(go())
    assert count == expected
    assert listed == expected
    assert refused is not None and getattr(refused, "response_status_code", None) == 400


async def delta_round(client, url=None, page_size=7):
    """Follows nextLinks until the deltaLink; returns (items, deltaLink, pages)."""
    config = RequestConfiguration()
    config.headers.add("Prefer", f"odata.maxpagesize={page_size}")
    builder = client.users.delta if url is None else client.users.delta.with_url(url)
    if url is None:
        config.query_parameters = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
            select=["displayName", "jobTitle", "mail", "userPrincipalName"]
        )
    items, pages = [], 0
    while True:
        page = await builder.get(config)
        pages += 1
        items.extend(page.value or [])
        if page.odata_next_link:
            builder = client.users.delta.with_url(page.odata_next_link)
            continue
        assert page.odata_delta_link, "the last page of a round carries the deltaLink"
        return items, page.odata_delta_link, pages


def test_an_incremental_delta_round_returns_exactly_the_directory_changes(sim, tenant):
    seed(sim, tenant, 30)
    t = tenant["id"]

    async def initial():
        client = graph_client(sim, secret_credential(sim, tenant))
        return await delta_round(client)

    items, delta_link, pages = run(initial())
    assert pages > 1
    assert delta_link.startswith(f"{sim.https_url}/v1.0/users/delta()?"), delta_link
    ids = sorted(u.id for u in items)
    assert set(ids) == live_user_ids(sim, tenant)
    updated, soft, hard = ids[0], ids[1], ids[2]

    name = unique("new")
    created = sim.control(
        "POST",
        f"/tenants/{t}/users",
        {"displayName": name, "userPrincipalName": f"{name}@{tenant['domain']}"},
    )["id"]
    sim.control("PATCH", f"/tenants/{t}/users/{updated}", {"jobTitle": "Conformance Tester"})
    sim.control("DELETE", f"/tenants/{t}/users/{soft}")
    sim.control("DELETE", f"/tenants/{t}/users/{hard}?permanent=true")

    async def incremental():
        client = graph_client(sim, secret_credential(sim, tenant))
        return await delta_round(client, delta_link)

    changes, next_delta, _ = run(incremental())
    by_id = {}
    for u in changes:
        assert isinstance(u, User)
        by_id.setdefault(u.id, u)
    assert set(by_id) == {created, updated, soft, hard}, sorted(by_id)
    assert by_id[created].display_name == name
    assert "@removed" not in (by_id[created].additional_data or {})
    assert by_id[updated].job_title == "Conformance Tester"
    assert by_id[soft].additional_data["@removed"] == {"reason": "changed"}
    assert by_id[hard].additional_data["@removed"] == {"reason": "deleted"}
    assert next_delta != delta_link

    async def quiet():
        client = graph_client(sim, secret_credential(sim, tenant))
        return await delta_round(client, next_delta)

    nothing, _, _ = run(quiet())
    assert nothing == [], "a round with no changes is empty"


def test_transitive_members_flatten_nested_groups(sim, tenant):
    t = tenant["id"]

    def user():
        name = unique("member")
        return sim.control(
            "POST",
            f"/tenants/{t}/users",
            {"displayName": name, "userPrincipalName": f"{name}@{tenant['domain']}"},
        )["id"]

    def group():
        name = unique("group")
        return sim.control("POST", f"/tenants/{t}/groups", {"displayName": name, "mailNickname": name})["id"]

    outer, inner = group(), group()
    u1, u2 = user(), user()
    for g, member in [(outer, u1), (outer, inner), (inner, u2), (inner, u1)]:
        sim.control("POST", f"/tenants/{t}/groups/{g}/members", {"id": member})

    async def go():
        client = graph_client(sim, secret_credential(sim, tenant))
        members = await client.groups.by_group_id(outer).transitive_members.get()
        users = await client.groups.by_group_id(outer).transitive_members.graph_user.get()
        return members, users

    members, users = run(go())
    kinds = {m.id: m.odata_type for m in members.value}
    assert kinds == {
        u1: "#microsoft.graph.user",
        u2: "#microsoft.graph.user",
        inner: "#microsoft.graph.group",
    }
    assert sorted(u.id for u in users.value) == sorted([u1, u2])


class Validator(BaseHTTPRequestHandler):
    """A notification endpoint answering Graph's validation handshake."""

    tokens: list = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        token = parse_qs(urlparse(self.path).query).get("validationToken", [None])[0]
        body = (token or "").encode()
        if token is not None:
            Validator.tokens.append(token)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
        else:
            self.send_response(202)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_subscription_is_created_after_the_handshake_renewed_and_deleted(sim, tenant):
    server = HTTPServer(("127.0.0.1", 0), Validator)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/notify"
    Validator.tokens.clear()
    now = datetime.datetime.now(datetime.timezone.utc)

    async def go():
        client = graph_client(sim, secret_credential(sim, tenant))
        created = await client.subscriptions.post(
            Subscription(
                change_type="updated,deleted",
                notification_url=url,
                lifecycle_notification_url=url,
                resource="/users",
                expiration_date_time=now + datetime.timedelta(hours=1),
                client_state="conformance-state",
            )
        )
        renewed = await client.subscriptions.by_subscription_id(created.id).patch(
            Subscription(expiration_date_time=now + datetime.timedelta(hours=3))
        )
        listed = await client.subscriptions.get()
        await client.subscriptions.by_subscription_id(created.id).delete()
        after = await client.subscriptions.get()
        return created, renewed, listed, after

    try:
        created, renewed, listed, after = run(go())
    finally:
        server.shutdown()
    assert len(Validator.tokens) == 2, "notificationUrl and lifecycleNotificationUrl are both validated"
    assert created.resource == "/users"
    assert created.client_state == "conformance-state"
    assert renewed.expiration_date_time - created.expiration_date_time >= datetime.timedelta(hours=1, minutes=59)
    assert [s.id for s in listed.value] == [created.id]
    assert after.value == []


def test_the_retry_handler_waits_out_a_throttled_request(sim, tenant):
    seed(sim, tenant, 3)
    t = tenant["id"]

    async def warm():
        client = graph_client(sim, secret_credential(sim, tenant))
        await client.users.by_user_id(sorted(live_user_ids(sim, tenant))[0]).get()

    run(warm())
    log_mark = len(sim.log_lines())
    sim.control(
        "PUT", "/faults", [{"endpoint": "users.list", "kind": "throttle", "remaining": 1, "retryAfter": "1"}]
    )
    try:

        async def go():
            client = graph_client(sim, secret_credential(sim, tenant))
            started = time.monotonic()
            users = await client.users.get()
            return users, time.monotonic() - started

        users, elapsed = run(go())
    finally:
        sim.control("PUT", "/faults", [])
    assert {u.id for u in users.value} == live_user_ids(sim, tenant)
    # A refused request is counted before its tenant is known, so read the request log instead.
    calls = [l for l in sim.log_lines()[log_mark:] if "path=/v1.0/users " in l]
    statuses = [l.split("status=")[1].split()[0] for l in calls]
    assert statuses == ["429", "200"], calls
    assert elapsed >= 1.0, f"the retry came after {elapsed:.2f}s, before Retry-After"
