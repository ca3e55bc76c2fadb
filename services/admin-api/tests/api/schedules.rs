//! Reconcile schedules: the default every tenant has, schedules of its own and of groups with
//! their next run time, pause and resume, delete back to the default, the audit of each change,
//! and bad cadences, days, times and zones refused with a pointer to the field.

use crate::resources::{connect, with_tenant};
use graph_sim::control_client::CARDSYNC_PERMISSIONS;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, Time, Weekday};

fn at(view: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(
        view["next_run_at"]
            .as_str()
            .unwrap_or_else(|| panic!("a next run time: {view}")),
        &Rfc3339,
    )
    .expect("RFC 3339")
}

#[tokio::test]
async fn a_tenant_runs_the_default_until_it_has_a_schedule_of_its_own_and_again_once_it_is_deleted()
{
    let (fixture, tenant) = with_tenant().await;
    let (api, admin, reader) = (&fixture.api, &fixture.admin, &fixture.reader);
    let list = format!("/v1/tenants/{tenant}/schedules");
    let own = format!("{list}/tenant");

    // Not connected yet: the default is shown, but nothing runs.
    let default = api.get(&own, reader).await.expect(200);
    assert_eq!(default["default"], true);
    assert_eq!(default["next_run_at"], Value::Null);
    connect(&fixture, tenant, CARDSYNC_PERMISSIONS).await;
    let listed = api.get(&list, reader).await.expect(200);
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{listed}");
    let default = &items[0];
    assert_eq!(
        (
            &default["target"],
            &default["cadence"],
            &default["time"],
            &default["time_zone"],
            &default["default"]
        ),
        (
            &json!("tenant"),
            &json!("daily"),
            &json!("00:00"),
            &json!("UTC"),
            &json!(true)
        )
    );
    let next = at(default);
    assert_eq!(next.time(), Time::MIDNIGHT);
    assert!(
        next > OffsetDateTime::now_utc()
            && next - OffsetDateTime::now_utc() <= time::Duration::days(1)
    );

    // A schedule of its own: weekly on Monday, 06:30 in Berlin.
    let weekly = api
        .put(
            &own,
            admin,
            json!({"cadence": "weekly", "weekday": "monday", "time": "06:30", "time_zone": "Europe/Berlin"}),
        )
        .await
        .expect(201);
    assert_eq!(weekly["default"], false);
    // 06:30 in Berlin is 05:30 UTC in winter (CET) and 04:30 in summer (CEST).
    let local = [1, 2]
        .map(|hours| at(&weekly) + time::Duration::hours(hours))
        .into_iter()
        .find(|local| (local.hour(), local.minute()) == (6, 30))
        .unwrap_or_else(|| panic!("06:30 in Berlin: {weekly}"));
    assert_eq!(local.weekday(), Weekday::Monday, "{weekly}");
    assert_eq!(
        api.put(&own, reader, json!({"cadence": "daily"}))
            .await
            .status,
        403
    );

    // A group's schedule beside it: monthly on the 31st.
    let group = api
        .put(
            &format!("{list}/group-1"),
            admin,
            json!({"cadence": "monthly", "day_of_month": 31}),
        )
        .await
        .expect(201);
    assert_eq!(
        (&group["target"], &group["group_id"]),
        (&json!("group-1"), &json!("group-1"))
    );
    let listed = api.get(&list, reader).await.expect(200);
    let targets: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["target"].as_str().expect("target"))
        .collect();
    assert_eq!(targets, ["tenant", "group-1"]);

    // Pause, resume, and a cadence change that keeps the day of the month.
    let paused = api
        .patch(&own, admin, json!({"paused": true}))
        .await
        .expect(200);
    assert_eq!(
        (&paused["paused"], &paused["next_run_at"]),
        (&json!(true), &Value::Null)
    );
    assert_eq!(paused["weekday"], "monday", "a pause changes nothing else");
    let resumed = api
        .patch(&own, admin, json!({"paused": false}))
        .await
        .expect(200);
    assert_eq!(resumed["paused"], false);
    assert_eq!(at(&resumed), at(&weekly));
    let quarterly = api
        .patch(
            &format!("{list}/group-1"),
            admin,
            json!({"cadence": "quarterly"}),
        )
        .await
        .expect(200);
    assert_eq!(quarterly["day_of_month"], 31);
    assert!(
        [1, 4, 7, 10].contains(&u8::from(at(&quarterly).month())),
        "{quarterly}"
    );
    let daily = api
        .patch(
            &format!("{list}/group-1"),
            admin,
            json!({"cadence": "daily", "time": "23:45"}),
        )
        .await
        .expect(200);
    assert_eq!(
        (&daily["day_of_month"], &daily["time"]),
        (&Value::Null, &json!("23:45"))
    );

    // Deleting the tenant's own schedule brings the default back; a group's is gone.
    assert_eq!(api.delete(&own, admin).await.status, 204);
    assert_eq!(api.get(&own, reader).await.expect(200)["default"], true);
    api.delete(&own, admin)
        .await
        .assert_problem(404, "unknown-schedule");
    assert_eq!(
        api.delete(&format!("{list}/group-1"), admin).await.status,
        204
    );
    api.get(&format!("{list}/group-1"), reader)
        .await
        .assert_problem(404, "unknown-schedule");

    let audit = api
        .get(&format!("/v1/tenants/{tenant}/audit"), admin)
        .await
        .expect(200);
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["action"].as_str().expect("action"))
        .filter(|action| action.starts_with("schedule."))
        .collect();
    assert_eq!(
        actions,
        [
            "schedule.delete",
            "schedule.delete",
            "schedule.update",
            "schedule.update",
            "schedule.update",
            "schedule.update",
            "schedule.put",
            "schedule.put"
        ]
    );
    let first = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .rfind(|item| item["action"] == "schedule.put")
        .expect("the first put");
    assert_eq!(first["before"]["default"], true);
    assert_eq!(first["after"]["cadence"], "weekly");
}

#[tokio::test]
async fn bad_cadences_days_times_and_zones_get_422_pointing_at_the_field() {
    let (fixture, tenant) = with_tenant().await;
    let (api, admin) = (&fixture.api, &fixture.admin);
    let own = format!("/v1/tenants/{tenant}/schedules/tenant");
    for (body, pointer) in [
        (json!({"cadence": "hourly"}), "/cadence"),
        (json!({"cadence": "weekly"}), "/weekday"),
        (
            json!({"cadence": "weekly", "weekday": "someday"}),
            "/weekday",
        ),
        (json!({"cadence": "daily", "weekday": "monday"}), "/weekday"),
        (json!({"cadence": "monthly"}), "/day_of_month"),
        (
            json!({"cadence": "quarterly", "day_of_month": 32}),
            "/day_of_month",
        ),
        (
            json!({"cadence": "monthly", "day_of_month": 0}),
            "/day_of_month",
        ),
        (json!({"cadence": "daily", "time": "24:00"}), "/time"),
        (json!({"cadence": "daily", "time": "7:30"}), "/time"),
        (
            json!({"cadence": "daily", "time_zone": "Mars/Olympus"}),
            "/time_zone",
        ),
        (
            json!({"cadence": "daily", "time_zone": "+02:00"}),
            "/time_zone",
        ),
    ] {
        let answer = api.put(&own, admin, body.clone()).await;
        answer.assert_problem(422, "invalid-schedule");
        assert_eq!(answer.body["pointer"], pointer, "{body}: {:?}", answer.body);
    }
    api.patch(&own, admin, json!({"time_zone": "Nowhere/Land"}))
        .await
        .assert_problem(422, "invalid-schedule");
    api.put(&own, admin, json!({"cadence": "daily", "every": "day"}))
        .await
        .assert_problem(422, "invalid-body");
    api.put(
        &format!("/v1/tenants/{tenant}/schedules/bad%20id"),
        admin,
        json!({"cadence": "daily"}),
    )
    .await
    .assert_problem(400, "invalid-id");
    api.patch(
        &format!("/v1/tenants/{tenant}/schedules/no-such-group"),
        admin,
        json!({"paused": true}),
    )
    .await
    .assert_problem(404, "unknown-schedule");
    // Nothing was saved: the tenant still runs the default.
    let shown = api.get(&own, admin).await.expect(200);
    assert_eq!(shown["default"], true, "{shown}");
}
