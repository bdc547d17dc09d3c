//! Where the queue lives and how workers hold their leases: the store URL
//! (read once, never printed: it may hold a password), the schema, the
//! pool, the lease's TTL and margin.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::Host;

use crate::error::{QueueError, Target};

/// The schema used when the URL names none.
pub const DEFAULT_SCHEMA: &str = "batchling";

/// How workers hold their leases. Every worker of one schema should use
/// the same values: the rescuer declares a worker dead after `ttl` of the
/// store's clock without a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// How long a heartbeat keeps a worker alive, on the store's clock.
    pub ttl: Duration,
    /// How much earlier than `ttl` a worker stops sending on its own
    /// (monotonic) clock, so that it stops before anyone can rescue its work.
    pub margin: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(30),
            margin: Duration::from_secs(10),
        }
    }
}

/// Everything [`Queue::connect_with`](crate::Queue::connect_with) needs.
#[derive(Clone)]
pub struct QueueSettings {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) target: Target,
    /// The PostgreSQL schema holding the queue's tables (the URL's
    /// `?schema=`, else [`DEFAULT_SCHEMA`]).
    pub schema: String,
    /// Pooled connections per process.
    pub pool_size: usize,
    /// How long a connection attempt, or a wait for a pooled connection,
    /// may take.
    pub connect_timeout: Duration,
    /// The lease (TTL and margin).
    pub lease: LeaseSettings,
    /// Apply this build's migrations to an older schema (on by default;
    /// off, an older schema is an error).
    pub migrate: bool,
}

impl fmt::Debug for QueueSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueSettings")
            .field("target", &self.target.addr)
            .field("user", &self.target.user)
            .field("database", &self.target.database)
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("lease", &self.lease)
            .field("migrate", &self.migrate)
            .finish_non_exhaustive()
    }
}

impl QueueSettings {
    /// Read a store URL: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`,
    /// with optional `schema=NAME` and `lease_ttl=SECONDS` (2 to 3600; the
    /// margin is a third of it) among its query parameters (the others are
    /// PostgreSQL's own). The lease rides on the URL because every worker
    /// of a schema must hold the same one, and they share the URL. Defaults: pool of 8, 10 s to connect,
    /// lease 30 s with a 10 s margin, migrations on.
    pub fn from_url(url: &str) -> Result<Self, QueueError> {
        let (rest, ours) = split_ours(url)?;
        let schema = ours.schema.unwrap_or_else(|| DEFAULT_SCHEMA.to_owned());
        check_schema_name(&schema)?;
        let mut pg = tokio_postgres::Config::from_str(&rest).map_err(|e| QueueError::BadUrl {
            reason: scrub(&e.to_string(), url),
        })?;
        let target = target_of(&pg)?;
        let connect_timeout = Duration::from_secs(10);
        let lease = ours.lease.unwrap_or_default();
        // Every statement is unqualified: the connection's search path is
        // the schema. A worker stalled inside a transaction (SIGSTOP, a
        // pause of its machine) would hold the job's row lock, and every
        // other worker's claims and completions with it: the server ends
        // such a session well before anyone could rescue its work.
        let idle_ms = (lease.ttl / 3).clamp(Duration::from_secs(1), Duration::from_secs(10));
        let ours = format!(
            "-c search_path={schema} -c idle_in_transaction_session_timeout={}",
            idle_ms.as_millis()
        );
        let options = match pg.get_options() {
            Some(o) => format!("{o} {ours}"),
            None => ours,
        };
        pg.options(options)
            .connect_timeout(connect_timeout)
            // A store that vanishes without a reset (a partition) is noticed
            // in about 30 s, not the OS default of minutes.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(15))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(30))
            .application_name("batchling-queue");
        Ok(Self {
            pg,
            target,
            schema,
            pool_size: 8,
            connect_timeout,
            lease,
            migrate: true,
        })
    }

    /// The same store and settings in another schema (tests give each
    /// case its own).
    pub fn with_schema(mut self, schema: &str) -> Result<Self, QueueError> {
        check_schema_name(schema)?;
        let options = self.pg.get_options().unwrap_or_default().replace(
            &format!("-c search_path={}", self.schema),
            &format!("-c search_path={schema}"),
        );
        self.pg.options(options);
        self.schema = schema.to_owned();
        Ok(self)
    }
}

/// The URL's parameters that are ours, not PostgreSQL's.
#[derive(Default)]
struct Ours {
    schema: Option<String>,
    lease: Option<LeaseSettings>,
}

/// The URL without our parameters (`schema=`, `lease_ttl=`), and them.
fn split_ours(url: &str) -> Result<(String, Ours), QueueError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(QueueError::BadUrl {
            reason: "it must start with postgres:// or postgresql://".to_owned(),
        });
    }
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), Ours::default()));
    };
    let mut ours = Ours::default();
    let mut kept = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        if let Some(name) = param.strip_prefix("schema=") {
            ours.schema = Some(name.to_owned());
        } else if let Some(secs) = param.strip_prefix("lease_ttl=") {
            ours.lease = Some(lease_of(secs)?);
        } else {
            kept.push(param);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, ours))
}

/// `lease_ttl=SECONDS`: a whole number of seconds, 2 to 3600.
fn lease_of(secs: &str) -> Result<LeaseSettings, QueueError> {
    match secs.parse::<u64>() {
        Ok(n @ 2..=3600) => Ok(LeaseSettings {
            ttl: Duration::from_secs(n),
            margin: Duration::from_secs(n) / 3,
        }),
        _ => Err(QueueError::BadUrl {
            reason: format!(
                "lease_ttl={} is not a whole number of seconds from 2 to 3600",
                secs.chars().take(20).collect::<String>()
            ),
        }),
    }
}

fn check_schema_name(name: &str) -> Result<(), QueueError> {
    let mut chars = name.chars();
    let ok = (1..=63).contains(&name.len())
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(QueueError::BadSchemaName {
            name: name.chars().take(80).collect(),
        })
    }
}

/// `host:port`, user and database, for messages.
fn target_of(pg: &tokio_postgres::Config) -> Result<Target, QueueError> {
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => {
            return Err(QueueError::BadUrl {
                reason: "it names no host".to_owned(),
            });
        }
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let user = pg.get_user().unwrap_or("(the login user)").to_owned();
    let database = pg.get_dbname().unwrap_or(&user).to_owned();
    Ok(Target {
        addr: format!("{host}:{port}"),
        user,
        database,
    })
}

/// The driver's complaint about a URL, without the URL's password should
/// the complaint quote it.
fn scrub(reason: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .filter(|p| !p.is_empty());
    match password {
        Some(p) => reason.replace(p, "***"),
        None => reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_parameter_is_ours_and_the_rest_is_postgres() {
        let s = QueueSettings::from_url("postgres://u@h:5433/db?schema=jobs_1&connect_timeout=3")
            .unwrap();
        assert_eq!(s.schema, "jobs_1");
        assert_eq!(s.target.addr, "h:5433");
        assert_eq!(s.target.database, "db");
        assert!(s.pg.get_options().unwrap().contains("search_path=jobs_1"));
        let s = QueueSettings::from_url("postgresql://u@h/db").unwrap();
        assert_eq!(s.schema, DEFAULT_SCHEMA);
        assert_eq!(s.target.addr, "h:5432");
    }

    #[test]
    fn the_lease_rides_on_the_url_and_odd_values_are_refused() {
        let s = QueueSettings::from_url("postgres://u@h/db?lease_ttl=6&schema=s").unwrap();
        assert_eq!(s.lease.ttl, Duration::from_secs(6));
        assert_eq!(s.lease.margin, Duration::from_secs(2));
        assert!(!format!("{:?}", s.pg).contains("lease_ttl"));
        // A session stalled in a transaction ends within a third of the
        // lease, so its locks never outlive it.
        let options = s.pg.get_options().unwrap();
        assert!(
            options.contains("idle_in_transaction_session_timeout=2000"),
            "{options}"
        );
        let s = QueueSettings::from_url("postgres://u@h/db").unwrap();
        assert_eq!(s.lease, LeaseSettings::default());
        for bad in ["1", "0", "3601", "3s", ""] {
            let e =
                QueueSettings::from_url(&format!("postgres://u@h/db?lease_ttl={bad}")).unwrap_err();
            assert!(e.to_string().contains("lease_ttl"), "{bad}: {e}");
        }
    }

    #[test]
    fn passwords_never_reach_debug_or_errors() {
        let pw = ["s3cr", "et-pw"].concat();
        let s = QueueSettings::from_url(&format!("postgres://u:{pw}@h/db")).unwrap();
        assert!(!format!("{s:?}").contains(&pw));
        let e = QueueSettings::from_url(&format!("postgres://u:{pw}@h:notaport/db")).unwrap_err();
        assert!(matches!(e, QueueError::BadUrl { .. }), "{e:?}");
        assert!(!e.to_string().contains(&pw), "{e}");
        assert!(!format!("{e:?}").contains(&pw), "{e:?}");
    }

    #[test]
    fn bad_schema_names_and_other_schemes_are_refused() {
        for bad in ["Jobs", "1x", "a-b", "x;drop", ""] {
            let e =
                QueueSettings::from_url(&format!("postgres://u@h/db?schema={bad}")).unwrap_err();
            assert!(
                matches!(e, QueueError::BadSchemaName { .. }),
                "{bad}: {e:?}"
            );
        }
        let e = QueueSettings::from_url("mysql://u@h/db").unwrap_err();
        assert!(e.to_string().contains("postgres://"), "{e}");
    }
}
