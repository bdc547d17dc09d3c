//! What can go wrong with the queue, in the queue's words: messages say
//! what to fix. No message or `Debug` output ever holds a password.

use std::error::Error as _;

use tokio_postgres::error::SqlState;

use crate::ids::{JobId, WorkerId};

/// What can go wrong with the job queue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The store URL cannot be read.
    #[error(
        "the store URL is malformed ({reason}); expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?schema=NAME]"
    )]
    BadUrl {
        /// What is wrong with it (never the URL itself: it may hold a password).
        reason: String,
    },
    /// Nothing listens at the store's address.
    #[error(
        "cannot connect to PostgreSQL at {target}: connection refused; is PostgreSQL running there? check the host and port in the store URL"
    )]
    Refused {
        /// `host:port`.
        target: String,
    },
    /// The store's address could not be reached (no route, a timeout, a
    /// name that does not resolve, a connection that dropped).
    #[error(
        "cannot reach PostgreSQL at {target}: {reason}; check the host and port in the store URL and that PostgreSQL is up"
    )]
    Unreachable {
        /// `host:port`.
        target: String,
        /// What the OS or the driver said.
        reason: String,
    },
    /// PostgreSQL refused the user or its password.
    #[error(
        "PostgreSQL at {target} refused user {user:?}: {reason}; check the user and password in the store URL"
    )]
    Auth {
        /// `host:port`.
        target: String,
        /// The user the URL names.
        user: String,
        /// What PostgreSQL said.
        reason: String,
    },
    /// The database the URL names does not exist.
    #[error(
        "database {database:?} does not exist at {target}; create it (createdb {database}) or name another in the store URL"
    )]
    NoDatabase {
        /// `host:port`.
        target: String,
        /// The database the URL names.
        database: String,
    },
    /// A newer batchling migrated the queue schema.
    #[error(
        "the queue schema {schema:?} has version {found}, newer than this batchling understands ({supported}); upgrade batchling on this machine, or use another schema"
    )]
    SchemaTooNew {
        /// The schema.
        schema: String,
        /// The version found.
        found: i32,
        /// The newest this build knows.
        supported: i32,
    },
    /// The queue schema is older than this build and migrations are off.
    #[error(
        "the queue schema {schema:?} has version {found}, older than this batchling's {supported}, and migrations are off; connect once with migrations on to upgrade it (stop workers of older batchlings first)"
    )]
    SchemaTooOld {
        /// The schema.
        schema: String,
        /// The version found (0: no schema yet).
        found: i32,
        /// The version this build needs.
        supported: i32,
    },
    /// A schema name that is not a plain lowercase identifier.
    #[error(
        "the queue schema name {name:?} is not usable: use 1 to 63 of a-z, 0-9 and _, not starting with a digit"
    )]
    BadSchemaName {
        /// The name given.
        name: String,
    },
    /// The worker was declared dead: its heartbeats stopped for longer than
    /// the lease. It is never resurrected.
    #[error(
        "worker {worker} was declared dead (no heartbeat within the lease); stop sending, and register again as a new worker"
    )]
    WorkerDead {
        /// The worker.
        worker: WorkerId,
    },
    /// The job's budget cannot take the next request's worst case.
    #[error(
        "job {job} reached its budget: spent {spent:.6} + reserved {reserved:.6} of {cap:.6} USD leaves no room for the next request's worst case"
    )]
    BudgetReached {
        /// The job.
        job: JobId,
        /// USD spent so far.
        spent: f64,
        /// USD reserved by requests in flight (room may come back when they settle).
        reserved: f64,
        /// The cap, USD.
        cap: f64,
    },
    /// No job has this id in the schema.
    #[error(
        "no job {job} in the queue schema {schema:?}; check the job id and the store URL's schema"
    )]
    JobNotFound {
        /// The job.
        job: JobId,
        /// The schema searched.
        schema: String,
    },
    /// Live workers still hold some of the job's requests.
    #[error(
        "job {job} still has {held} requests held by live workers; stop them (or wait for them to finish) before deleting it"
    )]
    JobInUse {
        /// The job.
        job: JobId,
        /// Requests held.
        held: i64,
    },
    /// A batch or a line handed to the queue is not usable.
    #[error("{what}")]
    BadInput {
        /// What is wrong, naming the request (`seq`) and the field.
        what: String,
    },
    /// A statement failed.
    #[error("PostgreSQL failed while {during}: {source}")]
    Database {
        /// What the queue was doing.
        during: &'static str,
        /// What the driver or the server said.
        source: tokio_postgres::Error,
    },
    /// No pooled connection came free in time.
    #[error(
        "no connection to PostgreSQL came free within {waited_ms} ms while {during}; raise the pool size or lower concurrency"
    )]
    PoolBusy {
        /// What the queue was doing.
        during: &'static str,
        /// How long it waited.
        waited_ms: u128,
    },
    /// The store sent a value this build does not expect.
    #[error("the queue schema holds an unexpected value ({what}); was it changed by hand?")]
    Corrupt {
        /// What was found.
        what: String,
    },
    /// Writing an export failed.
    #[error("cannot write the export: {source}")]
    Write {
        /// What the OS said.
        source: std::io::Error,
    },
}

impl QueueError {
    /// True when trying again later may succeed: the store was unreachable,
    /// a connection dropped, or the server aborted on a conflict. A batch
    /// that failed this way may have committed (an ambiguous commit):
    /// retry it as it was, every write here is idempotent.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Refused { .. } | Self::Unreachable { .. } | Self::PoolBusy { .. } => true,
            Self::Database { source, .. } => transient_db(source),
            _ => false,
        }
    }

    /// The wrapper for a failed statement.
    pub(crate) fn db(during: &'static str) -> impl Fn(tokio_postgres::Error) -> QueueError + Copy {
        move |source| QueueError::Database { during, source }
    }
}

/// A conflict the server resolved by aborting us, or a connection-level
/// failure (no SQLSTATE, or class 08 / 57P).
pub(crate) fn transient_db(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            is_conflict(code) || code.code().starts_with("08") || code.code().starts_with("57P")
        }
    }
}

/// Deadlock or serialization failure: the transaction was rolled back and
/// may simply be run again.
pub(crate) fn is_conflict(code: &SqlState) -> bool {
    *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
}

/// Where we tried to connect, as the messages name it.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// `host:port` (or the socket directory and port).
    pub(crate) addr: String,
    pub(crate) user: String,
    pub(crate) database: String,
}

/// A connection failure, told apart by what PostgreSQL or the OS said.
pub(crate) fn connect_error(target: &Target, e: &tokio_postgres::Error) -> QueueError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::INVALID_CATALOG_NAME {
            return QueueError::NoDatabase {
                target: target.addr.clone(),
                database: target.database.clone(),
            };
        }
        if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            return QueueError::Auth {
                target: target.addr.clone(),
                user: target.user.clone(),
                reason: db.message().to_owned(),
            };
        }
    }
    let mut cause = e.source();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return QueueError::Refused {
                    target: target.addr.clone(),
                };
            }
            return QueueError::Unreachable {
                target: target.addr.clone(),
                reason: io.to_string(),
            };
        }
        cause = c.source();
    }
    QueueError::Unreachable {
        target: target.addr.clone(),
        reason: e.to_string(),
    }
}
