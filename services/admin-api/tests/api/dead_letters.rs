//! Dead letters: listed with their error and tenant (and left in place), replayed to the work
//! queue they came from, discarded.

use crate::support::Fixture;
use cardsync_bus::lapin::options::{BasicGetOptions, BasicPublishOptions};
use cardsync_bus::lapin::types::{AMQPValue, FieldTable};
use cardsync_bus::lapin::{BasicProperties, Channel};
use cardsync_bus::{header_str, headers, names};
use serde_json::Value;
use std::time::Duration;

async fn channel() -> Channel {
    let connection = cardsync_bus::lapin::Connection::connect(
        &cardsync_testkit::amqp_url(),
        cardsync_bus::lapin::ConnectionProperties::default(),
    )
    .await
    .expect("RabbitMQ must run: run `make services`");
    connection.create_channel().await.expect("channel")
}

/// Dead-letters a message of `tenant` from `card-writer.live` as the consumer runner does.
async fn dead_letter(fixture: &Fixture, channel: &Channel, id: &str, tenant: &str) {
    let queue = fixture.api.topology.name(names::CARD_WRITER_LIVE);
    let mut table = FieldTable::default();
    for (name, value) in [
        (headers::TENANT_ID, tenant),
        (headers::ERROR, "the card command has no user id"),
        (headers::DEAD_LETTER_REASON, "permanent"),
        (headers::SOURCE_QUEUE, queue.as_str()),
    ] {
        table.insert(name.into(), AMQPValue::LongString(value.into()));
    }
    table.insert(headers::ATTEMPT.into(), AMQPValue::LongLongInt(1));
    let properties = BasicProperties::default()
        .with_message_id(id.into())
        .with_type("cardsync.v1.CardCommand".into())
        .with_delivery_mode(2)
        .with_headers(table);
    channel
        .basic_publish(
            fixture.api.topology.dead_letter_exchange().as_str().into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            format!("body of {id}").as_bytes(),
            properties,
        )
        .await
        .expect("published")
        .await
        .expect("confirmed");
}

async fn listed(fixture: &Fixture) -> Vec<Value> {
    // The broker makes a published message visible to basic.get a moment later.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = fixture
            .api
            .get("/v1/dead-letters?queue=card-writer.live", &fixture.reader)
            .await
            .expect(200);
        let items = answer["items"].as_array().cloned().unwrap_or_default();
        if !items.is_empty() || tokio::time::Instant::now() > deadline {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_dead_letter_is_listed_in_place_replayed_to_its_queue_or_discarded() {
    let fixture = Fixture::start().await;
    fixture.api.publisher().await;
    let channel = channel().await;
    let tenant = fixture.directory.id.clone();
    dead_letter(&fixture, &channel, "m-1", &tenant).await;

    for _ in 0..2 {
        let items = listed(&fixture).await;
        assert_eq!(items.len(), 1, "{items:?}");
        let letter = &items[0];
        assert_eq!(letter["message_id"], "m-1");
        assert_eq!(letter["queue"], "card-writer.live");
        assert_eq!(letter["tenant_id"], tenant.as_str());
        assert_eq!(letter["error"], "the card command has no user id");
        assert_eq!(letter["reason"], "permanent");
    }

    let replayed = fixture
        .api
        .post(
            "/v1/dead-letters/card-writer.live/m-1/replay",
            &fixture.admin,
            Value::Null,
        )
        .await
        .expect(200);
    assert_eq!(replayed["message_id"], "m-1");
    let work_queue = fixture.api.topology.name(names::CARD_WRITER_LIVE);
    let message = channel
        .basic_get(work_queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .expect("the replayed message is on its work queue");
    assert_eq!(message.delivery.data, b"body of m-1");
    assert_eq!(
        header_str(&message.delivery.properties, headers::ERROR),
        None
    );
    assert_eq!(
        header_str(&message.delivery.properties, headers::TENANT_ID),
        Some(tenant.as_str())
    );
    assert!(listed_now(&fixture).await.is_empty());

    dead_letter(&fixture, &channel, "m-2", &tenant).await;
    assert_eq!(listed(&fixture).await.len(), 1);
    let gone = fixture
        .api
        .delete("/v1/dead-letters/card-writer.live/m-2", &fixture.admin)
        .await;
    assert_eq!(gone.status.as_u16(), 204, "{gone:?}");
    assert!(listed_now(&fixture).await.is_empty());
    fixture
        .api
        .delete("/v1/dead-letters/card-writer.live/m-2", &fixture.admin)
        .await
        .assert_problem(404, "unknown-dead-letter");
    fixture
        .api
        .get("/v1/dead-letters?queue=nowhere", &fixture.reader)
        .await
        .assert_problem(404, "unknown-queue");
    let audit = fixture
        .api
        .get(&format!("/v1/tenants/{tenant}/audit"), &fixture.admin)
        .await;
    // The directory is no cardsync tenant here: its audit is not readable, but recorded.
    assert_eq!(audit.status.as_u16(), 404);
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM admin_audit WHERE target IN ('m-1', 'm-2') AND tenant_id = $1 ORDER BY id",
    )
    .bind(fixture.directory.uuid())
    .fetch_all(&fixture.api.pool)
    .await
    .expect("audit rows");
    assert_eq!(actions, ["dead_letter.replay", "dead_letter.discard"]);
}

async fn listed_now(fixture: &Fixture) -> Vec<Value> {
    fixture
        .api
        .get("/v1/dead-letters?queue=card-writer.live", &fixture.reader)
        .await
        .expect(200)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}
