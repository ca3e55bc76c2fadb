//! `/users/delta` and `/groups/delta` (graph-facts §6).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ALL_READ, Env, env};

/// Follows nextLinks to the end of a round; returns (items, pages, deltaLink).
async fn round(
    env: &Env,
    token: &str,
    start: &str,
    prefer: Option<&str>,
) -> (Vec<Value>, usize, String) {
    let mut url = env.graph(start);
    let mut items = Vec::new();
    let mut pages = 0;
    loop {
        let mut req = env.http.get(&url).bearer_auth(token);
        if let Some(p) = prefer {
            req = req.header("Prefer", p);
        }
        let resp = req.send().await.expect("delta call");
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.expect("json");
        pages += 1;
        assert!(
            !(body.get("@odata.nextLink").is_some() && body.get("@odata.deltaLink").is_some()),
            "a page never has both links"
        );
        items.extend(body["value"].as_array().expect("value").iter().cloned());
        if let Some(next) = body["@odata.nextLink"].as_str() {
            url = next.to_owned();
            continue;
        }
        return (
            items,
            pages,
            body["@odata.deltaLink"]
                .as_str()
                .expect("deltaLink ends the round")
                .to_owned(),
        );
    }
}

async fn seed(env: &Env, users: usize) -> Value {
    env.post_ok(
        env.tenant_url("/seed"),
        json!({"users": users, "seed": 3, "groups": false}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_initial_round_honours_maxpagesize_and_ends_with_a_delta_link() {
    let env = env(ALL_READ).await;
    seed(&env, 25).await;
    let token = env.token().await;
    let resp = env
        .http
        .get(env.graph("/v1.0/users/delta?$select=displayName,mail"))
        .bearer_auth(&token)
        .header("Prefer", "odata.maxpagesize=10")
        .send()
        .await
        .expect("delta");
    assert_eq!(resp.headers()["preference-applied"], "odata.maxpagesize=10");
    let first: Value = resp.json().await.expect("json");
    assert_eq!(
        first["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#users(displayName,mail)"
    );
    assert_eq!(first["value"].as_array().expect("value").len(), 10);
    assert!(
        first["@odata.nextLink"]
            .as_str()
            .expect("next")
            .contains("$skiptoken=")
    );
    let (items, pages, delta_link) = round(
        &env,
        &token,
        "/v1.0/users/delta?$select=displayName,mail",
        Some("odata.maxpagesize=10"),
    )
    .await;
    assert_eq!((items.len(), pages), (25, 3));
    assert!(delta_link.contains("$deltatoken="));
    assert!(
        items.iter().all(|u| u.get("jobTitle").is_none()),
        "only selected properties"
    );
    let (again, _, _) = round(&env, &token, &delta_link, None).await;
    assert!(again.is_empty(), "nothing changed since the delta link");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_round_reports_updates_soft_deletes_restores_and_permanent_deletes() {
    let env = env(ALL_READ).await;
    let (a, b, c, d) = (
        env.create_user("A").await,
        env.create_user("B").await,
        env.create_user("C").await,
        env.create_user("D").await,
    );
    env.patch_user(&a, json!({"mobilePhone": "+1 555 0100"}))
        .await;
    let token = env.token().await;
    let (_, _, link) = round(
        &env,
        &token,
        "/v1.0/users/delta?$select=displayName,jobTitle,mobilePhone",
        None,
    )
    .await;
    env.patch_user(&a, json!({"jobTitle": "CEO", "mobilePhone": null}))
        .await;
    env.control(Method::DELETE, env.tenant_url(&format!("/users/{b}")), None)
        .await;
    env.control(
        Method::DELETE,
        env.tenant_url(&format!("/users/{c}?permanent=true")),
        None,
    )
    .await;
    env.control(Method::DELETE, env.tenant_url(&format!("/users/{d}")), None)
        .await;
    env.post_ok(env.tenant_url(&format!("/users/{d}/restore")), json!({}))
        .await;
    let new = env.create_user("E").await;
    let (items, _, _) = round(&env, &token, &link, None).await;
    let by_id = |id: &str| {
        items
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} missing from {items:?}"))
    };
    let ua = by_id(&a);
    assert_eq!(ua["jobTitle"], "CEO");
    assert_eq!(
        ua["displayName"], "A",
        "default return carries unchanged selected properties"
    );
    assert!(
        ua["mobilePhone"].is_null() && ua.get("mobilePhone").is_some(),
        "a cleared property is null"
    );
    assert_eq!(by_id(&b)["@removed"], json!({"reason": "changed"}));
    assert_eq!(by_id(&c)["@removed"], json!({"reason": "deleted"}));
    assert_eq!(
        by_id(&d)["displayName"],
        "D",
        "restored objects come back in full"
    );
    assert_eq!(by_id(&new)["displayName"], "E");
    assert_eq!(items.len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn return_minimal_sends_only_the_changed_properties() {
    let env = env(ALL_READ).await;
    let a = env.create_user("A").await;
    let token = env.token().await;
    let (_, _, link) = round(
        &env,
        &token,
        "/v1.0/users/delta?$select=displayName,jobTitle,city",
        None,
    )
    .await;
    env.patch_user(&a, json!({"city": "Zürich"})).await;
    let (items, _, _) = round(&env, &token, &link, Some("return=minimal")).await;
    assert_eq!(items, vec![json!({"id": a, "city": "Zürich"})]);
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_to_untracked_properties_produce_no_entry() {
    let env = env(ALL_READ).await;
    let a = env.create_user("A").await;
    let token = env.token().await;
    let (_, _, link) = round(&env, &token, "/v1.0/users/delta?$select=displayName", None).await;
    env.patch_user(&a, json!({"department": "Legal"})).await;
    let (items, _, _) = round(&env, &token, &link, None).await;
    assert!(items.is_empty(), "{items:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deltatoken_latest_returns_no_data_but_tracks_from_now() {
    let env = env(ALL_READ).await;
    seed(&env, 5).await;
    let token = env.token().await;
    let body = env
        .get_json(
            &token,
            "/v1.0/users/delta?$deltatoken=latest&$select=displayName",
        )
        .await;
    assert_eq!(body["value"], json!([]));
    let link = body["@odata.deltaLink"]
        .as_str()
        .expect("delta link")
        .to_owned();
    let id = env.create_user("Late").await;
    let (items, _, _) = round(&env, &token, &link, None).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], id);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_id_filter_limits_the_round_and_more_than_50_ids_are_refused() {
    let env = env(ALL_READ).await;
    let (a, _b, c) = (
        env.create_user("A").await,
        env.create_user("B").await,
        env.create_user("C").await,
    );
    let token = env.token().await;
    let (items, _, _) = round(
        &env,
        &token,
        &format!("/v1.0/users/delta?$filter=id eq '{a}' or id eq '{c}'"),
        None,
    )
    .await;
    let mut ids: Vec<&str> = items
        .iter()
        .map(|i| i["id"].as_str().expect("id"))
        .collect();
    ids.sort_unstable();
    let mut want = vec![a.as_str(), c.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    let many: Vec<String> = (0..51).map(|i| format!("id eq '{i}'")).collect();
    let resp = env
        .get(
            &token,
            &format!("/v1.0/users/delta?$filter={}", many.join(" or ")),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delta_token_older_than_seven_days_gets_410_sync_state_not_found() {
    let env = env(ALL_READ).await;
    env.create_user("A").await;
    let token = env.token().await;
    let (_, _, link) = round(&env, &token, "/v1.0/users/delta", None).await;
    env.advance_clock(7 * 24 * 3600 + 60).await;
    let token = env.token().await;
    let resp = env.get(&token, &link).await;
    assert_eq!(resp.status(), StatusCode::GONE);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "syncStateNotFound");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_resync_switch_answers_410_gone_with_a_location_that_starts_a_full_round() {
    let env = env(ALL_READ).await;
    for n in ["A", "B"] {
        env.create_user(n).await;
    }
    let token = env.token().await;
    let (_, _, link) = round(&env, &token, "/v1.0/users/delta?$select=displayName", None).await;
    env.put_ok(env.tenant_url("/delta"), json!({"resyncNext": 1}))
        .await;
    let resp = env.get(&token, &link).await;
    assert_eq!(resp.status(), StatusCode::GONE);
    let location = resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "resyncRequired");
    let (items, _, _) = round(&env, &token, &location, None).await;
    assert_eq!(items.len(), 2, "the Location URL runs an initial round");
}

#[tokio::test(flavor = "multi_thread")]
async fn group_members_delta_is_split_across_pages_and_reports_removals() {
    let env = env(ALL_READ).await;
    env.put_ok(env.tenant_url("/delta"), json!({"memberSlice": 2}))
        .await;
    let g = env.create_group("Big").await;
    let mut members = Vec::new();
    for n in ["m1", "m2", "m3", "m4", "m5"] {
        let id = env.create_user(n).await;
        env.add_member(&g, &id).await;
        members.push(id);
    }
    let token = env.token().await;
    let (items, pages, link) = round(
        &env,
        &token,
        "/v1.0/groups/delta?$select=displayName,members",
        None,
    )
    .await;
    assert_eq!(pages, 3);
    assert!(
        items
            .iter()
            .all(|i| i["id"] == g && i["displayName"] == "Big")
    );
    let mut seen: Vec<String> = items
        .iter()
        .flat_map(|i| i["members@delta"].as_array().expect("members").clone())
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect();
    seen.sort();
    members.sort();
    assert_eq!(seen, members);
    env.control(
        Method::DELETE,
        env.tenant_url(&format!("/groups/{g}/members/{}", members[0])),
        None,
    )
    .await;
    let (items, _, _) = round(&env, &token, &link, Some("return=minimal")).await;
    assert_eq!(
        items,
        vec![
            json!({"id": g, "members@delta": [{"@odata.type": "#microsoft.graph.user", "id": members[0], "@removed": {"reason": "deleted"}}]})
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_and_empty_first_pages_can_be_switched_on() {
    let env = env(ALL_READ).await;
    seed(&env, 6).await;
    env.put_ok(
        env.tenant_url("/delta"),
        json!({"replayEvery": 3, "emptyFirstPage": true}),
    )
    .await;
    let token = env.token().await;
    let first = env.get_json(&token, "/v1.0/users/delta").await;
    assert_eq!(first["value"], json!([]));
    assert!(
        first["@odata.nextLink"].is_string(),
        "an empty page still carries a nextLink"
    );
    let (items, _, _) = round(&env, &token, "/v1.0/users/delta", None).await;
    assert_eq!(items.len(), 8, "6 users plus 2 replays");
    let mut ids: Vec<&str> = items
        .iter()
        .map(|i| i["id"].as_str().expect("id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn select_with_a_skiptoken_is_refused() {
    let env = env(ALL_READ).await;
    seed(&env, 3).await;
    let token = env.token().await;
    let first: Value = env
        .http
        .get(env.graph("/v1.0/users/delta"))
        .bearer_auth(&token)
        .header("Prefer", "odata.maxpagesize=1")
        .send()
        .await
        .expect("delta")
        .json()
        .await
        .expect("json");
    let next = first["@odata.nextLink"].as_str().expect("next");
    let resp = env
        .get(&token, &format!("{next}&$select=displayName"))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

/// A delta client's picture of the directory: what it holds after applying every entry it was sent.
#[derive(Debug, Default)]
struct ClientView {
    objects: std::collections::BTreeMap<String, serde_json::Map<String, Value>>,
}

impl ClientView {
    /// Applies entries the way a client must: `@removed` drops the object, anything else merges the properties sent.
    fn apply(&mut self, items: &[Value]) {
        for item in items {
            let id = item["id"]
                .as_str()
                .expect("every entry has an id")
                .to_owned();
            if item.get("@removed").is_some() {
                self.objects.remove(&id);
                continue;
            }
            let held = self.objects.entry(id).or_default();
            for (k, v) in item.as_object().expect("entries are objects") {
                held.insert(k.clone(), v.clone());
            }
        }
    }

    fn property(&self, id: &str, name: &str) -> Value {
        self.objects
            .get(id)
            .and_then(|o| o.get(name))
            .cloned()
            .unwrap_or(Value::Null)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_property_changed_again_while_a_minimal_round_is_read_still_reaches_the_client() {
    let env = env(ALL_READ).await;
    let a = env.create_user("A").await;
    let b = env.create_user("B").await;
    let token = env.token().await;
    let start = "/v1.0/users/delta?$select=displayName,jobTitle,department";
    let (items, _, link) = round(&env, &token, start, None).await;
    let mut view = ClientView::default();
    view.apply(&items);
    env.patch_user(&a, json!({"jobTitle": "Analyst"})).await;
    env.patch_user(&b, json!({"jobTitle": "Engineer"})).await;

    // Read the first page of the minimal round, then change B again before reading on.
    let first: Value = env
        .http
        .get(&link)
        .bearer_auth(&token)
        .header("Prefer", "return=minimal, odata.maxpagesize=1")
        .send()
        .await
        .expect("delta")
        .json()
        .await
        .expect("json");
    view.apply(first["value"].as_array().expect("value"));
    let next = first["@odata.nextLink"]
        .as_str()
        .expect("B is still to come in this round");
    env.patch_user(&b, json!({"department": "R&D"})).await;
    let (rest, _, link) = round(
        &env,
        &token,
        next,
        Some("return=minimal, odata.maxpagesize=1"),
    )
    .await;
    view.apply(&rest);
    let (after, _, _) = round(&env, &token, &link, Some("return=minimal")).await;
    view.apply(&after);

    assert_eq!(view.property(&a, "jobTitle"), "Analyst");
    assert_eq!(view.property(&b, "department"), "R&D");
    assert_eq!(
        view.property(&b, "jobTitle"),
        "Engineer",
        "B's first change was lost: rounds sent {:?} then {rest:?} then {after:?}",
        first["value"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn purging_a_member_of_several_groups_reports_the_removal_in_every_group() {
    let env = env(ALL_READ).await;
    let (g1, g2, g3) = (
        env.create_group("One").await,
        env.create_group("Two").await,
        env.create_group("Three").await,
    );
    let user = env.create_user("Member").await;
    for g in [&g1, &g2, &g3] {
        env.add_member(g, &user).await;
    }
    let token = env.token().await;
    let (_, _, link) = round(
        &env,
        &token,
        "/v1.0/groups/delta?$select=displayName,members",
        None,
    )
    .await;
    env.control(
        Method::DELETE,
        env.tenant_url(&format!("/users/{user}?permanent=true")),
        None,
    )
    .await;
    let (items, _, _) = round(&env, &token, &link, Some("return=minimal")).await;
    let mut reported: Vec<&str> = items
        .iter()
        .filter(|i| {
            i["members@delta"].as_array().is_some_and(|m| {
                m.iter()
                    .any(|m| m["id"] == user.as_str() && m["@removed"]["reason"] == "deleted")
            })
        })
        .map(|i| i["id"].as_str().expect("id"))
        .collect();
    reported.sort_unstable();
    let mut want = vec![g1.as_str(), g2.as_str(), g3.as_str()];
    want.sort_unstable();
    assert_eq!(reported, want, "{items:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_skip_token_whose_cursor_lies_past_its_snapshot_gets_400() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let env = env(ALL_READ).await;
    let (a, b) = (env.create_user("A").await, env.create_user("B").await);
    let token = env.token().await;
    let (_, _, link) = round(&env, &token, "/v1.0/users/delta", None).await;
    env.patch_user(&a, json!({"jobTitle": "x"})).await;
    env.patch_user(&b, json!({"jobTitle": "y"})).await;
    let first: Value = env
        .http
        .get(&link)
        .bearer_auth(&token)
        .header("Prefer", "odata.maxpagesize=1")
        .send()
        .await
        .expect("delta")
        .json()
        .await
        .expect("json");
    let next = first["@odata.nextLink"].as_str().expect("a second page");
    let (path, skip) = next.split_once("$skiptoken=").expect("skip token");
    let mut state: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(skip).expect("base64url")).expect("json");
    let past = state["snap"].as_u64().expect("snapshot") + 5;
    state["cursor"]["at"] = json!({"Seq": past});
    let forged = format!(
        "{path}$skiptoken={}",
        URL_SAFE_NO_PAD.encode(state.to_string())
    );
    let resp = env.get(&token, &forged).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["message"], "Badly formed token.");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_initial_round_reports_objects_removed_in_the_last_seven_days() {
    let env = env(ALL_READ).await;
    let live = env.create_user("Live").await;
    let (soft, hard) = (env.create_user("Soft").await, env.create_user("Hard").await);
    let group = env.create_group("Gone").await;
    env.control(
        Method::DELETE,
        env.tenant_url(&format!("/users/{soft}")),
        None,
    )
    .await;
    env.control(
        Method::DELETE,
        env.tenant_url(&format!("/users/{hard}?permanent=true")),
        None,
    )
    .await;
    env.control(
        Method::DELETE,
        env.tenant_url(&format!("/groups/{group}")),
        None,
    )
    .await;
    let token = env.token().await;
    let (users, _, _) = round(&env, &token, "/v1.0/users/delta?$select=displayName", None).await;
    let by_id = |id: &str| users.iter().find(|u| u["id"] == id).cloned();
    assert_eq!(by_id(&live).expect("live user")["displayName"], "Live");
    assert_eq!(
        by_id(&soft),
        Some(json!({"id": soft, "@removed": {"reason": "changed"}}))
    );
    assert_eq!(
        by_id(&hard),
        Some(json!({"id": hard, "@removed": {"reason": "deleted"}}))
    );
    assert_eq!(users.len(), 3);
    let (groups, _, _) = round(&env, &token, "/v1.0/groups/delta", None).await;
    assert_eq!(
        groups,
        vec![json!({"id": group, "@removed": {"reason": "changed"}})]
    );

    env.advance_clock(7 * 24 * 3600 + 60).await;
    let token = env.token().await;
    let (users, _, _) = round(&env, &token, "/v1.0/users/delta?$select=displayName", None).await;
    assert_eq!(
        users,
        vec![json!({"id": live, "displayName": "Live"})],
        "removals older than the window are no longer reported"
    );
    env.put_ok(
        env.tenant_url("/delta"),
        json!({"initialRemovedWindowSecs": 0}),
    )
    .await;
    env.control(
        Method::DELETE,
        env.tenant_url(&format!("/users/{live}")),
        None,
    )
    .await;
    let (users, _, _) = round(&env, &token, "/v1.0/users/delta", None).await;
    assert!(users.is_empty(), "the switch turns it off: {users:?}");
}
