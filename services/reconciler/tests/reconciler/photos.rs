//! The due job's photo sweep (`reconciler::sweep_photos`): an image no card and no snapshot row
//! names is deleted once it is older than `photos.sweep_grace`; a named image, and any image
//! younger than the grace (a round may have stored it a moment before saving the row that names
//! it), stays.

use crate::support;
use bytes::Bytes;
use std::time::{Duration, SystemTime};
use uuid::Uuid;

/// Makes the stored image look `age` old.
fn age(dir: &std::path::Path, sha256: &str, age: Duration) {
    let file = std::fs::File::options()
        .write(true)
        .open(dir.join("photos/sha256").join(sha256))
        .unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

#[tokio::test]
async fn the_due_job_deletes_old_images_nothing_names_and_keeps_named_and_young_ones() {
    let env = support::env().await;
    let dir = std::env::temp_dir().join(format!("cardsync-sweep-{}", env.prefix));
    let url = dir.display().to_string();
    let settings = env.settings_with(&[
        ("CARDSYNC__PHOTOS__URL", url.as_str()),
        ("CARDSYNC__PHOTOS__SWEEP_GRACE", "1h"),
    ]);
    let store = cardsync_photos::PhotoStore::open(&settings.photos).unwrap();
    let put = |text: &str| store.put(Bytes::from(format!("{text} {}", env.prefix)), "image/png");
    let (on_card, in_snapshot, orphan, young_orphan) = (
        put("on a card").await.unwrap(),
        put("in the snapshot").await.unwrap(),
        put("named by nothing").await.unwrap(),
        put("just stored").await.unwrap(),
    );
    sqlx::query(
        "INSERT INTO cards (tenant_id, card_id, photo_sha256, photo_content_type)
         VALUES ($1, $2, $3, 'image/png')",
    )
    .bind(env.tenant)
    .bind(Uuid::new_v4())
    .bind(&on_card.sha256)
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO directory_users
           (tenant_id, user_id, data, presence, in_scope, version, observed_at, photo_sha256,
            photo_content_type)
         VALUES ($1, $2, '{}'::jsonb, 'present', true, 1, now(), $3, 'image/png')",
    )
    .bind(env.tenant)
    .bind(format!("user-{}", env.prefix))
    .bind(&in_snapshot.sha256)
    .execute(&env.pool)
    .await
    .unwrap();

    // Everything is younger than the grace: nothing goes.
    reconciler::sweep_photos(&settings, &env.pool)
        .await
        .unwrap();
    for image in [&on_card, &in_snapshot, &orphan, &young_orphan] {
        assert!(store.get(&image.sha256).await.unwrap().is_some());
    }

    for image in [&on_card, &in_snapshot, &orphan] {
        age(&dir, &image.sha256, Duration::from_secs(2 * 3600));
    }
    reconciler::sweep_photos(&settings, &env.pool)
        .await
        .unwrap();
    assert!(
        store.get(&orphan.sha256).await.unwrap().is_none(),
        "the old orphan is swept"
    );
    assert!(
        store.get(&on_card.sha256).await.unwrap().is_some(),
        "a card names it"
    );
    assert!(
        store.get(&in_snapshot.sha256).await.unwrap().is_some(),
        "a snapshot row names it"
    );
    assert!(
        store.get(&young_orphan.sha256).await.unwrap().is_some(),
        "younger than the grace"
    );
    let _ = std::fs::remove_dir_all(&dir);
    env.teardown().await;
}
