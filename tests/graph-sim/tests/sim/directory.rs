//! Directory reads: users, groups, photos, transitive members, role members (graph-facts §7).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ALL_READ, GLOBAL_ADMIN, GROUPS_ADMIN, env};

const DEFAULT_USER_KEYS: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
];

#[tokio::test(flavor = "multi_thread")]
async fn listing_users_returns_the_documented_default_properties_and_pages_with_a_next_link() {
    let env = env(ALL_READ).await;
    for name in ["Ann", "Bob", "Cid"] {
        env.create_user(name).await;
    }
    let token = env.token().await;
    let page = env.get_json(&token, "/v1.0/users?$top=2").await;
    assert_eq!(
        page["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#users"
    );
    let users = page["value"].as_array().expect("value");
    assert_eq!(users.len(), 2);
    let mut keys: Vec<&str> = users[0]
        .as_object()
        .expect("user")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, DEFAULT_USER_KEYS);
    assert!(
        users[0]["jobTitle"].is_null(),
        "unset default properties come back as null"
    );
    let next = page["@odata.nextLink"].as_str().expect("next link");
    let rest = env.get_json(&token, next).await;
    assert_eq!(rest["value"].as_array().expect("value").len(), 1);
    assert!(rest.get("@odata.nextLink").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_is_found_by_id_or_upn_with_select_and_unknown_ids_are_404() {
    let env = env(ALL_READ).await;
    let id = env.create_user("Zoë Müller").await;
    env.patch_user(&id, json!({"employeeId": "E1", "accountEnabled": true, "onPremisesExtensionAttributes": {"extensionAttribute3": "CC-1"}})).await;
    let token = env.token().await;
    let by_id = env.get_json(&token, &format!("/v1.0/users/{id}?$select=displayName,employeeId,accountEnabled,onPremisesExtensionAttributes")).await;
    assert_eq!(by_id["displayName"], "Zoë Müller");
    assert_eq!(by_id["employeeId"], "E1");
    assert_eq!(by_id["accountEnabled"], true);
    assert_eq!(
        by_id["onPremisesExtensionAttributes"]["extensionAttribute3"],
        "CC-1"
    );
    assert!(by_id["onPremisesExtensionAttributes"]["extensionAttribute15"].is_null());
    assert!(by_id.get("mail").is_none(), "$select limits the properties");
    let upn = format!("zoë.müller@{}", env.domain);
    let by_upn = env
        .get_json(
            &token,
            &format!(
                "/v1.0/users/{}",
                url::form_urlencoded::byte_serialize(upn.as_bytes()).collect::<String>()
            ),
        )
        .await;
    assert_eq!(by_upn["id"], id);
    let resp = env
        .get(&token, "/v1.0/users/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "Request_ResourceNotFound");
    let resp = env
        .get(&token, &format!("/v1.0/users/{id}?$select=nope"))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn soft_deleted_users_disappear_from_reads_until_restored() {
    let env = env(ALL_READ).await;
    let id = env.create_user("Gone").await;
    let token = env.token().await;
    env.control(
        Method::DELETE,
        env.tenant_url(&format!("/users/{id}")),
        None,
    )
    .await;
    assert_eq!(
        env.get(&token, &format!("/v1.0/users/{id}")).await.status(),
        StatusCode::NOT_FOUND
    );
    env.post_ok(env.tenant_url(&format!("/users/{id}/restore")), json!({}))
        .await;
    assert_eq!(
        env.get(&token, &format!("/v1.0/users/{id}")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_photo_once_set_is_served_with_metadata_and_bytes_and_gone_once_removed() {
    let env = env(ALL_READ).await;
    let id = env.create_user("Pic").await;
    let token = env.token().await;
    let bytes = vec![0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3];
    let resp = env
        .http
        .put(env.tenant_url(&format!("/users/{id}/photo?width=96&height=96")))
        .header("Content-Type", "image/jpeg")
        .body(bytes.clone())
        .send()
        .await
        .expect("set photo");
    assert_eq!(resp.status(), StatusCode::OK);
    let meta = env
        .get_json(&token, &format!("/v1.0/users/{id}/photo"))
        .await;
    assert_eq!(meta["@odata.mediaContentType"], "image/jpeg");
    assert_eq!(meta["id"], "96x96");
    assert_eq!(meta["width"], 96);
    let etag = meta["@odata.mediaEtag"].as_str().expect("etag").to_owned();
    let resp = env
        .get(&token, &format!("/v1.0/users/{id}/photo/$value"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    assert_eq!(resp.headers()["etag"].to_str().expect("etag"), etag);
    assert_eq!(resp.bytes().await.expect("bytes").to_vec(), bytes);
    env.control(
        Method::DELETE,
        env.tenant_url(&format!("/users/{id}/photo")),
        None,
    )
    .await;
    assert_eq!(
        env.get(&token, &format!("/v1.0/users/{id}/photo/$value"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sized_photos_are_pngs_of_the_size_that_follow_the_photo_and_stop_at_the_upload_size() {
    let env = env(ALL_READ).await;
    let id = env.create_user("Sized").await;
    let token = env.token().await;
    let sized = |size: &str| format!("/v1.0/users/{id}/photos/{size}/$value");
    assert_eq!(
        env.get(&token, &sized("240x240")).await.status(),
        StatusCode::NOT_FOUND,
        "no photo, no rendition"
    );
    let upload = |bytes: Vec<u8>| {
        env.http
            .put(env.tenant_url(&format!("/users/{id}/photo?width=504&height=504")))
            .header("Content-Type", "image/jpeg")
            .body(bytes)
            .send()
    };
    assert_eq!(
        upload(vec![1, 2, 3]).await.expect("set").status(),
        StatusCode::OK
    );
    let first = env.get(&token, &sized("240x240")).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["content-type"], "image/png");
    let first = first.bytes().await.expect("bytes").to_vec();
    assert!(first.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(
        &first[16..24],
        &[0, 0, 0, 240, 0, 0, 0, 240],
        "IHDR says 240x240"
    );
    let again = env.get(&token, &sized("240x240")).await;
    assert_eq!(
        again.bytes().await.expect("bytes").to_vec(),
        first,
        "same photo, same bytes"
    );
    for too_big_or_unknown in ["648x648", "100x100", "240x120"] {
        assert_eq!(
            env.get(&token, &sized(too_big_or_unknown)).await.status(),
            StatusCode::NOT_FOUND,
            "{too_big_or_unknown}"
        );
    }
    assert_eq!(
        upload(vec![4, 5, 6]).await.expect("set").status(),
        StatusCode::OK
    );
    let second = env.get(&token, &sized("240x240")).await;
    assert_ne!(
        second.bytes().await.expect("bytes").to_vec(),
        first,
        "a new photo renders anew"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transitive_members_flatten_nested_groups_and_the_user_cast_keeps_only_users() {
    let env = env(ALL_READ).await;
    let (a, b) = (env.create_user("A").await, env.create_user("B").await);
    let outer = env.create_group("Outer").await;
    let inner = env.create_group("Inner").await;
    env.add_member(&outer, &inner).await;
    env.add_member(&outer, &a).await;
    env.add_member(&inner, &b).await;
    let token = env.token().await;
    let all = env
        .get_json(&token, &format!("/v1.0/groups/{outer}/transitiveMembers"))
        .await;
    let mut types: Vec<(String, String)> = all["value"]
        .as_array()
        .expect("value")
        .iter()
        .map(|m| {
            (
                m["id"].as_str().expect("id").to_owned(),
                m["@odata.type"].as_str().expect("type").to_owned(),
            )
        })
        .collect();
    types.sort();
    let mut expected = vec![
        (a.clone(), "#microsoft.graph.user".to_owned()),
        (b.clone(), "#microsoft.graph.user".to_owned()),
        (inner, "#microsoft.graph.group".to_owned()),
    ];
    expected.sort();
    assert_eq!(types, expected);
    let users = env
        .get_json(
            &token,
            &format!(
                "/v1.0/groups/{outer}/transitiveMembers/microsoft.graph.user?$select=id,displayName"
            ),
        )
        .await;
    assert_eq!(
        users["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#users(id,displayName)"
    );
    let mut ids: Vec<&str> = users["value"]
        .as_array()
        .expect("value")
        .iter()
        .map(|u| u["id"].as_str().expect("id"))
        .collect();
    ids.sort_unstable();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    let resp = env.get(&token, "/v1.0/groups/nope/transitiveMembers").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn role_members_are_listed_by_template_id_and_unactivated_roles_are_404() {
    let env = env(ALL_READ).await;
    let admin = env.create_user("Admin").await;
    let token = env.token().await;
    let path = format!("/v1.0/directoryRoles/roleTemplateId={GLOBAL_ADMIN}/members");
    assert_eq!(env.get(&token, &path).await.status(), StatusCode::NOT_FOUND);
    let (status, _) = env
        .control(
            Method::PUT,
            env.tenant_url(&format!("/roles/{GLOBAL_ADMIN}/members/{admin}")),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let members = env.get_json(&token, &path).await;
    assert_eq!(members["value"][0]["id"], admin);
    assert_eq!(members["value"][0]["@odata.type"], "#microsoft.graph.user");
    env.control(
        Method::DELETE,
        env.tenant_url(&format!("/roles/{GLOBAL_ADMIN}/members/{admin}")),
        None,
    )
    .await;
    let members = env.get_json(&token, &path).await;
    assert_eq!(
        members["value"],
        json!([]),
        "a role stays activated after its last member leaves"
    );
    assert_eq!(
        env.get(
            &token,
            &format!("/v1.0/directoryRoles/roleTemplateId={GROUPS_ADMIN}/members")
        )
        .await
        .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_are_listed_and_read_by_id() {
    let env = env(ALL_READ).await;
    let g = env.create_group("Sales").await;
    let token = env.token().await;
    let list = env.get_json(&token, "/v1.0/groups").await;
    assert_eq!(list["value"][0]["displayName"], "Sales");
    let one = env.get_json(&token, &format!("/v1.0/groups/{g}")).await;
    assert_eq!(
        one["@odata.context"],
        "https://graph.microsoft.com/v1.0/$metadata#groups/$entity"
    );
    assert_eq!(one["id"], g);
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_carry_their_creation_time_by_default_in_reads_and_delta_and_on_select() {
    let env = env(ALL_READ).await;
    let (_, clock) = env
        .control(Method::GET, env.control_url("/clock"), None)
        .await;
    let day = clock["now"].as_str().expect("clock")[..10].to_owned();
    let g = env.create_group("Sales").await;
    let token = env.token().await;
    let created = |v: &Value| v["createdDateTime"].as_str().map(str::to_owned);
    let one = env.get_json(&token, &format!("/v1.0/groups/{g}")).await;
    let stamp = created(&one).expect("createdDateTime is a default group property");
    assert!(stamp.starts_with(&day) && stamp.ends_with('Z'), "{stamp}");
    let delta = env.get_json(&token, "/v1.0/groups/delta").await;
    assert_eq!(created(&delta["value"][0]), Some(stamp.clone()), "{delta}");
    let selected = env
        .get_json(
            &token,
            "/v1.0/groups/delta?$select=displayName,createdDateTime",
        )
        .await;
    assert_eq!(created(&selected["value"][0]), Some(stamp.clone()));
    let listed = env
        .get_json(&token, "/v1.0/groups?$select=createdDateTime")
        .await;
    assert_eq!(created(&listed["value"][0]), Some(stamp));
    let (status, body) = env
        .control(
            Method::PATCH,
            env.tenant_url(&format!("/groups/{g}")),
            Some(json!({"createdDateTime": "2001-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "read-only: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn photo_metadata_carries_its_odata_id() {
    let env = env(ALL_READ).await;
    let id = env.create_user("Pic").await;
    let resp = env
        .http
        .put(env.tenant_url(&format!("/users/{id}/photo")))
        .header("Content-Type", "image/png")
        .body(vec![0x89, b'P', b'N', b'G'])
        .send()
        .await
        .expect("set photo");
    assert_eq!(resp.status(), StatusCode::OK);
    let token = env.token().await;
    let meta = env
        .get_json(&token, &format!("/v1.0/users/{id}/photo"))
        .await;
    assert_eq!(
        meta["@odata.id"],
        format!(
            "https://graph.microsoft.com/v1.0/users('{id}@{}')/photo",
            env.tenant
        )
    );
}

/// The photo answers for a user without a photo: (metadata status, metadata body, `$value` status).
async fn missing_photo_answers(env: &crate::support::Env) -> (StatusCode, Value, StatusCode) {
    let id = env.create_user("NoPic").await;
    let token = env.token().await;
    let meta = env.get(&token, &format!("/v1.0/users/{id}/photo")).await;
    let status = meta.status();
    let mut body: Value = meta.json().await.expect("json");
    if let Some(m) = body.as_object_mut() {
        m.remove("@odata.context");
        m.remove("@odata.id");
    }
    if let Some(inner) = body.get_mut("error").and_then(Value::as_object_mut) {
        inner.remove("innerError");
    }
    let value = env
        .get(&token, &format!("/v1.0/users/{id}/photo/$value"))
        .await
        .status();
    (status, body, value)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_without_a_photo_gets_the_documented_1x1_gif_metadata_and_404_bytes() {
    let env = env(ALL_READ).await;
    let (status, body, value) = missing_photo_answers(&env).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"@odata.mediaContentType": "image/gif", "@odata.mediaEtag": "", "id": "1x1", "width": 1, "height": 1})
    );
    assert_eq!(
        value,
        StatusCode::NOT_FOUND,
        "the bytes are 404 as documented"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_missing_photo_switch_makes_metadata_404_image_not_found_too() {
    let env = env(ALL_READ).await;
    env.put_ok(env.tenant_url("/photos"), json!({"missing": "notFound"}))
        .await;
    let (status, body, value) = missing_photo_answers(&env).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "ImageNotFound");
    assert_eq!(value, StatusCode::NOT_FOUND);
    env.put_ok(env.tenant_url("/photos"), json!({"missing": "placeholder"}))
        .await;
    assert_eq!(missing_photo_answers(&env).await.0, StatusCode::OK);
}
