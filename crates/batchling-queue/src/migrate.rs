//! Versioned embedded migrations, checked at every connect and applied
//! under a transaction-scoped advisory lock, so that workers starting at
//! once neither race nor see a half-made schema.

use deadpool_postgres::Object;

use crate::error::QueueError;

/// Migrations, applied in order; `schema_version` says how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_queue.sql"),
    include_str!("../migrations/0002_worker_report.sql"),
    include_str!("../migrations/0003_ledgers.sql"),
];

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Check the schema's version; create or upgrade it when `apply`.
pub(crate) async fn prepare(
    client: &mut Object,
    schema: &str,
    apply: bool,
) -> Result<(), QueueError> {
    let err = QueueError::db("preparing the queue schema");
    let tx = client.transaction().await.map_err(err)?;
    // Keyed by schema: two schemas migrate independently.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('batchling-queue:' || $1::text))",
        &[&schema],
    )
    .await
    .map_err(QueueError::db("waiting for the migration lock"))?;
    let found = version(&tx, schema).await?;
    // End the transaction before any return: a dropped one holds its locks
    // until the connection's task gets to run the rollback.
    let refusal = if found > SCHEMA_VERSION {
        Some(QueueError::SchemaTooNew {
            schema: schema.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        })
    } else if found < SCHEMA_VERSION && !apply {
        Some(QueueError::SchemaTooOld {
            schema: schema.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        })
    } else {
        None
    };
    if let Some(e) = refusal {
        tx.rollback().await.map_err(err)?;
        return Err(e);
    }
    if found == SCHEMA_VERSION {
        return tx.commit().await.map_err(err);
    }
    let err = QueueError::db("migrating the queue schema");
    // The schema name was checked to be a plain identifier.
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path = {schema};
         CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);"
    ))
    .await
    .map_err(err)?;
    for sql in &MIGRATIONS[found as usize..] {
        tx.batch_execute(sql).await.map_err(err)?;
    }
    tx.execute("DELETE FROM schema_version", &[])
        .await
        .map_err(err)?;
    tx.execute("INSERT INTO schema_version VALUES ($1)", &[&SCHEMA_VERSION])
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)
}

/// The schema's version; 0 when it has no `schema_version` table.
async fn version(tx: &deadpool_postgres::Transaction<'_>, schema: &str) -> Result<i32, QueueError> {
    let err = QueueError::db("reading the queue schema's version");
    let table = format!("{schema}.schema_version");
    let exists: Option<String> = tx
        .query_one("SELECT to_regclass($1)::text", &[&table])
        .await
        .map_err(err)?
        .get(0);
    if exists.is_none() {
        return Ok(0);
    }
    let row = tx
        .query_one(&format!("SELECT max(version) FROM {table}"), &[])
        .await
        .map_err(err)?;
    Ok(row.get::<_, Option<i32>>(0).unwrap_or(0))
}
