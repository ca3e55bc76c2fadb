//! `GET /v1/tenants/{tenant}/cards/{card}/photo`: a card's image served from the photo store
//! (a real directory store, as the rounds write it) with its stored content type, its hash as
//! the ETag, 304 on a matching If-None-Match, 404 without a photo, and nothing across tenants.

use crate::support::{Issuer, settings_for, spawn};
use bytes::Bytes;
use cardsync_store::cards::{self, Card};
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

/// A stored card of `tenant` showing `photo`.
async fn card_with(
    pool: &sqlx::PgPool,
    tenant: Uuid,
    photo: Option<cardsync_store::photos::PhotoImage>,
) -> Uuid {
    let mut card = Card::new(tenant);
    card.user_id = Some(format!("u-{}", Uuid::new_v4()));
    card.photo_etag = photo.as_ref().map(|_| "etag-1".to_owned());
    card.photo = photo;
    let mut tx = pool.begin().await.expect("tx");
    cards::insert(&mut tx, &card).await.expect("card");
    tx.commit().await.expect("commit");
    card.card_id
}

#[tokio::test]
async fn a_cards_photo_is_served_with_its_type_and_hash_revalidated_and_kept_to_its_tenant() {
    let issuer = Issuer::start().await;
    let contoso = issuer.directory(1).await;
    let fabrikam = issuer.directory(1).await;
    let mut settings = settings_for(&issuer, &[&contoso, &fabrikam]);
    settings.auth.tenant_claim = Some("tid".into());
    let store = cardsync_photos::PhotoStore::open(&settings.photos).expect("photo store");
    let api = spawn(settings).await;
    let contoso_admin = issuer.token(&contoso, &contoso.admin).await;
    let contoso_reader = issuer.token(&contoso, &contoso.reader).await;
    let fabrikam_admin = issuer.token(&fabrikam, &fabrikam.admin).await;
    api.create_tenant(&contoso_admin, contoso.uuid(), "Contoso")
        .await;
    api.create_tenant(&fabrikam_admin, fabrikam.uuid(), "Fabrikam")
        .await;

    let bytes = Bytes::from_static(b"\xff\xd8\xff\xe0 a JPEG of sorts \x00\x01\x02");
    let image = store
        .put(bytes.clone(), "image/jpeg")
        .await
        .expect("stored");
    let with_photo = card_with(&api.pool, contoso.uuid(), Some(image.clone())).await;
    let without = card_with(&api.pool, contoso.uuid(), None).await;
    let theirs = card_with(&api.pool, fabrikam.uuid(), Some(image.clone())).await;
    let url =
        |tenant: &str, card: Uuid| format!("{}/v1/tenants/{tenant}/cards/{card}/photo", api.url);

    let served = api
        .http
        .get(url(&contoso.id, with_photo))
        .bearer_auth(&contoso_reader)
        .send()
        .await
        .expect("answer");
    assert_eq!(served.status(), StatusCode::OK);
    let header = |response: &reqwest::Response, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header(&served, "content-type").as_deref(),
        Some("image/jpeg")
    );
    let etag = format!("\"{}\"", image.sha256);
    assert_eq!(header(&served, "etag"), Some(etag.clone()));
    assert_eq!(
        header(&served, "cache-control").as_deref(),
        Some("private, no-cache")
    );
    assert_eq!(served.bytes().await.expect("body"), bytes);

    // The card shows its image's hash, which is the tag a client revalidates with.
    let shown = api
        .get(
            &format!("/v1/tenants/{}/cards/{with_photo}", contoso.id),
            &contoso_reader,
        )
        .await
        .expect(200);
    assert_eq!(shown["photo_sha256"], Value::String(image.sha256.clone()));

    let revalidated = api
        .http
        .get(url(&contoso.id, with_photo))
        .bearer_auth(&contoso_reader)
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("answer");
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&revalidated, "etag"), Some(etag.clone()));
    assert!(revalidated.bytes().await.expect("body").is_empty());
    let stale = api
        .http
        .get(url(&contoso.id, with_photo))
        .bearer_auth(&contoso_reader)
        .header("if-none-match", format!("\"{}\"", "0".repeat(64)))
        .send()
        .await
        .expect("answer");
    assert_eq!(stale.status(), StatusCode::OK, "another tag gets the image");

    let photo_path = |tenant: &str, card: Uuid| format!("/v1/tenants/{tenant}/cards/{card}/photo");
    api.get(&photo_path(&contoso.id, without), &contoso_reader)
        .await
        .assert_problem(404, "unknown-card-photo");
    api.get(&photo_path(&contoso.id, Uuid::new_v4()), &contoso_reader)
        .await
        .assert_problem(404, "unknown-card");
    // Fabrikam's card under Contoso's path is not Contoso's card; Fabrikam's path is refused.
    api.get(&photo_path(&contoso.id, theirs), &contoso_reader)
        .await
        .assert_problem(404, "unknown-card");
    api.get(&photo_path(&fabrikam.id, theirs), &contoso_admin)
        .await
        .assert_problem(403, "tenant-forbidden");
    let anonymous = api
        .call(
            reqwest::Method::GET,
            &photo_path(&contoso.id, with_photo),
            None,
            None,
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let fabrikams = api
        .http
        .get(url(&fabrikam.id, theirs))
        .bearer_auth(&fabrikam_admin)
        .send()
        .await
        .expect("answer");
    assert_eq!(fabrikams.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_photo_the_store_lost_is_not_found_rather_than_an_error() {
    let issuer = Issuer::start().await;
    let directory = issuer.directory(1).await;
    let api = spawn(settings_for(&issuer, &[&directory])).await;
    let admin = issuer.token(&directory, &directory.admin).await;
    api.create_tenant(&admin, directory.uuid(), "Contoso").await;
    let missing = cardsync_store::photos::PhotoImage {
        sha256: "ab".repeat(32),
        content_type: "image/png".into(),
    };
    let card = card_with(&api.pool, directory.uuid(), Some(missing)).await;
    api.get(
        &format!("/v1/tenants/{}/cards/{card}/photo", directory.id),
        &admin,
    )
    .await
    .assert_problem(404, "unknown-card-photo");
}
