//! One schema per test, dropped at the end even when the test fails.

use batchling_queue::{JobId, JobSpec, LoadOutcome, NewLine, Queue, QueueError, QueueSettings};

/// The test database; `BATCHLING_TEST_PG_URL` overrides it.
pub(crate) fn base_url() -> String {
    std::env::var("BATCHLING_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema of its own, with a queue on it; dropped with the guard.
pub(crate) struct TestSchema {
    pub(crate) name: String,
    pub(crate) queue: Queue,
}

impl TestSchema {
    pub(crate) async fn new() -> Self {
        Self::with(|s| s).await
    }

    /// With settings adjusted by `tune` (pool size, lease, ...).
    pub(crate) async fn with(tune: impl FnOnce(QueueSettings) -> QueueSettings) -> Self {
        let name = fresh_name();
        let settings = settings(&name);
        // The guard exists before the schema does, so a failed connect
        // that created it half-way still drops it.
        let guard = DropSchema(name.clone());
        let queue = match Queue::connect_with(tune(settings)).await {
            Ok(q) => q,
            Err(e) => unreachable_store(&e),
        };
        std::mem::forget(guard);
        TestSchema { name, queue }
    }

    /// A plain connection to the test database, for what the queue does
    /// not offer (backdating heartbeats, counting rows).
    pub(crate) async fn raw(&self) -> tokio_postgres::Client {
        raw_client().await
    }

    /// Run `sql` with `{s}` replaced by the schema name.
    pub(crate) async fn exec(&self, sql: &str) -> u64 {
        let client = self.raw().await;
        client
            .execute(&sql.replace("{s}", &self.name), &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The first column of the first row of `sql` (`{s}`: the schema).
    pub(crate) async fn scalar(&self, sql: &str) -> i64 {
        let client = self.raw().await;
        client
            .query_one(&sql.replace("{s}", &self.name), &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        drop_schema(&self.name);
    }
}

/// Drops its schema when dropped (for schemas made outside [`TestSchema`]).
pub(crate) struct DropSchema(pub(crate) String);

impl Drop for DropSchema {
    fn drop(&mut self) {
        drop_schema(&self.0);
    }
}

pub(crate) fn fresh_name() -> String {
    format!("bq_test_{:016x}", rand::random::<u64>())
}

pub(crate) fn settings(schema: &str) -> QueueSettings {
    QueueSettings::from_url(&base_url())
        .and_then(|s| s.with_schema(schema))
        .expect("the test URL is well-formed")
}

/// The store is down: fail, saying how to start it.
pub(crate) fn unreachable_store(e: &QueueError) -> ! {
    panic!(
        "the queue tests need PostgreSQL at {} (trust auth, database `test`), and connecting failed: {e}\n\
         start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
         (or point BATCHLING_TEST_PG_URL at another server)",
        base_url()
    )
}

pub(crate) async fn raw_client() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&base_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            unreachable_store(&QueueError::Unreachable {
                target: base_url(),
                reason: e.to_string(),
            })
        });
    tokio::spawn(conn);
    client
}

/// `DROP SCHEMA … CASCADE` on a thread of its own (Drop cannot await).
fn drop_schema(name: &str) {
    let name = name.to_owned();
    let done = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the cleanup");
        rt.block_on(async {
            if let Ok((client, conn)) =
                tokio_postgres::connect(&base_url(), tokio_postgres::NoTls).await
            {
                tokio::spawn(conn);
                // The test's runtime is blocked in this Drop, so its
                // connections cannot finish what they hold: end those
                // holding locks in the schema, then drop it.
                let _ = client
                    .execute(
                        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l
                         JOIN pg_class c ON c.oid = l.relation
                         JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()",
                        &[&name],
                    )
                    .await;
                let _ = client
                    .batch_execute(&format!(
                        "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE"
                    ))
                    .await;
            }
        });
    });
    let _ = done.join();
}

/// `n` small lines, seq 0.., worst 0.01 USD.
pub(crate) fn lines(n: u64) -> impl Iterator<Item = NewLine> {
    (0..n).map(|seq| NewLine {
        seq,
        custom_id: format!("req-{seq}"),
        body: format!("{{\"seq\":{seq}}}").into_bytes(),
        worst_cost: 0.01,
        est_tokens: 10,
    })
}

/// Load `n` lines under a fresh identity; `cap` is the budget.
pub(crate) async fn load(q: &Queue, n: u64, cap: Option<f64>) -> JobId {
    let identity = rand::random::<[u8; 32]>();
    let settings = serde_json::json!({"model": "test-model"});
    let spec = JobSpec {
        identity: &identity,
        settings: &settings,
        budget_cap: cap,
    };
    let LoadOutcome { job, loaded_here } = q.load_job(spec, lines(n)).await.expect("load");
    assert!(loaded_here);
    job.id
}

/// Make `worker` look silent for `secs` (instead of sleeping past its TTL).
pub(crate) async fn backdate_heartbeat(
    s: &TestSchema,
    worker: batchling_queue::WorkerId,
    secs: u32,
) {
    let n = s
        .exec(&format!(
            "UPDATE {{s}}.workers SET heartbeat_at = now() - interval '{secs} seconds' WHERE id = {}",
            worker.0
        ))
        .await;
    assert_eq!(n, 1);
}
