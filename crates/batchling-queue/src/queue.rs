//! The queue handle: a connection pool on one schema, checked and migrated
//! at connect.

use std::fmt;
use std::future::Future;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::error::{QueueError, connect_error, is_conflict};
use crate::ids::JobId;
use crate::migrate;
use crate::settings::{LeaseSettings, QueueSettings};

/// How many times a transaction the server aborted on a deadlock or a
/// serialization conflict is run again before the error is returned.
const CONFLICT_RETRIES: usize = 3;

/// The shared job queue of one schema. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct Queue {
    pub(crate) pool: Pool,
    pub(crate) settings: QueueSettings,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Queue {
    /// Connect to the store a URL names (see [`QueueSettings::from_url`]),
    /// with the default settings.
    pub async fn connect(url: &str) -> Result<Queue, QueueError> {
        Self::connect_with(QueueSettings::from_url(url)?).await
    }

    /// Connect: build the pool, open one connection (so a wrong address,
    /// user or database is reported now), then check the schema's version
    /// and migrate it when allowed.
    pub async fn connect_with(settings: QueueSettings) -> Result<Queue, QueueError> {
        let manager = Manager::from_config(
            settings.pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(settings.connect_timeout))
            .wait_timeout(Some(settings.connect_timeout))
            .build()
            .map_err(|e| QueueError::BadUrl {
                reason: e.to_string(),
            })?;
        let queue = Queue { pool, settings };
        let mut client = queue.client("connecting").await?;
        migrate::prepare(&mut client, &queue.settings.schema, queue.settings.migrate).await?;
        Ok(queue)
    }

    /// The schema this queue works in.
    pub fn schema(&self) -> &str {
        &self.settings.schema
    }

    /// Where the queue lives, for messages: `host:port/database` (never
    /// the user's password).
    pub fn location(&self) -> String {
        format!(
            "{}/{}",
            self.settings.target.addr, self.settings.target.database
        )
    }

    /// The lease settings workers of this queue use.
    pub fn lease_settings(&self) -> LeaseSettings {
        self.settings.lease
    }

    /// A pooled connection; `during` says what for in the error.
    pub(crate) async fn client(&self, during: &'static str) -> Result<Object, QueueError> {
        use deadpool_postgres::PoolError;
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => connect_error(&self.settings.target, &e),
            PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => QueueError::PoolBusy {
                during,
                waited_ms: self.settings.connect_timeout.as_millis(),
            },
            PoolError::Timeout(_) => QueueError::Unreachable {
                target: self.settings.target.addr.clone(),
                reason: format!(
                    "no answer within {} ms",
                    self.settings.connect_timeout.as_millis()
                ),
            },
            other => QueueError::Unreachable {
                target: self.settings.target.addr.clone(),
                reason: other.to_string(),
            },
        })
    }

    pub(crate) fn not_found(&self, job: JobId) -> QueueError {
        QueueError::JobNotFound {
            job,
            schema: self.settings.schema.clone(),
        }
    }
}

/// Run `attempt` again when the server rolled it back on a deadlock or a
/// serialization conflict (nothing of it was committed).
pub(crate) async fn retry_conflicts<T, F, Fut>(mut attempt: F) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QueueError>>,
{
    let mut left = CONFLICT_RETRIES;
    loop {
        match attempt().await {
            Err(QueueError::Database { source, .. })
                if left > 0 && source.code().is_some_and(is_conflict) =>
            {
                left -= 1;
            }
            other => return other,
        }
    }
}
