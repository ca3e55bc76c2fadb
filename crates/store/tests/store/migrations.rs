//! The migration policy across releases.

use cardsync_testkit::FreshDatabase;

#[tokio::test]
async fn a_database_migrated_further_by_a_newer_release_migrates_and_reads_as_current() {
    let database = FreshDatabase::create().await;
    let pool = database.pool().await;
    cardsync_store::migrate(&pool).await.unwrap();
    // What a newer release's migration leaves behind: a row this binary does not embed.
    let newest: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES ($1, 'from a newer release', true, '\\x00', 1)",
    )
    .bind(newest + 1000)
    .execute(&pool)
    .await
    .unwrap();

    // The older release's migrate (a rollback's hook Job) has nothing to do and says so.
    cardsync_store::migrate(&pool).await.unwrap();
    let schema = cardsync_store::schema_version(&pool).await.unwrap();
    assert_eq!(schema.database, Some(newest + 1000));
    assert!(schema.current, "{schema:?}");

    // A migration whose text changed after it was applied is still refused.
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x01' WHERE version = $1")
        .bind(newest)
        .execute(&pool)
        .await
        .unwrap();
    let refused = cardsync_store::migrate(&pool).await;
    assert!(refused.is_err(), "{refused:?}");
    pool.close().await;
    database.drop_database().await;
}
