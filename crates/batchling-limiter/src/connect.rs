//! Reaching Redis: the URL, the connection (one multiplexed connection
//! that reconnects by itself), short timeouts, and Redis's errors in the
//! limiter's words.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::error::{Down, Error};

/// How the limiter talks to Redis and keeps its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Longest wait for a connection to be made (at start and on
    /// reconnect).
    pub connect_timeout: Duration,
    /// Longest wait for any one call's answer: past it the call fails as
    /// [`Error::Unavailable`], so a Redis blip is reported fast and the
    /// caller falls back.
    pub call_timeout: Duration,
    /// How far ahead of Redis's now a reservation may be booked. Past it
    /// [`reserve`](crate::Limiter::reserve) books nothing and says when to
    /// ask again. Short, so that a pause or a lower limit learned by one
    /// process holds every process back within this long.
    pub max_ahead: Duration,
    /// A lane's state vanishes this long after the last time it holds
    /// (its next admission, its pause): abandoned lanes leave nothing.
    pub idle: Duration,
    /// Limits learned from headers are kept this long after the last
    /// reading.
    pub learned_for: Duration,
    /// Reservations are settled at most this long after their send time;
    /// settled ids are remembered as long, so a replay changes nothing.
    pub settle_horizon: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            connect_timeout: Duration::from_secs(1),
            call_timeout: Duration::from_millis(250),
            max_ahead: Duration::from_secs(1),
            idle: Duration::from_secs(120),
            learned_for: Duration::from_secs(600),
            settle_horizon: Duration::from_secs(600),
        }
    }
}

/// A URL checked and turned into a client, with the `host:port` that
/// messages name (never the password).
pub(crate) fn client(url: &str) -> Result<(redis::Client, String), Error> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("redis" | "redis+unix" | "unix") => {}
        Some("rediss") => {
            return Err(Error::BadUrl {
                reason: "TLS (rediss://) is not built in; reach Redis over loopback or a TLS tunnel with redis://",
            });
        }
        _ => {
            return Err(Error::BadUrl {
                reason: "it does not start with redis://",
            });
        }
    }
    let client = redis::Client::open(url).map_err(|e| Error::BadUrl {
        // Redis's own reason is a fixed phrase, but keep the URL's text
        // (which may hold a password) out of it for certain.
        reason: match e.kind() {
            ErrorKind::InvalidClientConfig => {
                "it is not a valid Redis URL (host, port or database)"
            }
            _ => "it could not be read",
        },
    })?;
    let addr = client.get_connection_info().addr().to_string();
    Ok((client, addr))
}

/// Connect, within `settings.connect_timeout`.
pub(crate) async fn manager(
    client: redis::Client,
    addr: &str,
    settings: &Settings,
) -> Result<ConnectionManager, Error> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.call_timeout))
        .set_number_of_retries(1)
        .set_max_delay(settings.connect_timeout);
    let connecting = ConnectionManager::new_with_config(client, config);
    match tokio::time::timeout(settings.connect_timeout, connecting).await {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(e)) => Err(classify_within(e, addr, settings.connect_timeout)),
        Err(_) => Err(Error::Unavailable {
            addr: addr.to_owned(),
            why: Down::TimedOut(settings.connect_timeout),
        }),
    }
}

/// Run one call within `limit`: past it, or on a broken connection, the
/// call is [`Error::Unavailable`].
pub(crate) async fn within<T>(
    limit: Duration,
    addr: &str,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify_within(e, addr, limit)),
        Err(_) => Err(Error::Unavailable {
            addr: addr.to_owned(),
            why: Down::TimedOut(limit),
        }),
    }
}

/// The longest piece of Redis's error text kept in a message.
const MAX_DETAIL: usize = 200;

/// As [`classify`], for a call bounded by `limit`: the connection's own
/// timeout (the same length) is that limit running out.
fn classify_within(e: RedisError, addr: &str, limit: Duration) -> Error {
    if e.is_timeout() {
        return Error::Unavailable {
            addr: addr.to_owned(),
            why: Down::TimedOut(limit),
        };
    }
    classify(e, addr)
}

/// Redis's error in the limiter's words.
fn classify(e: RedisError, addr: &str) -> Error {
    let addr = addr.to_owned();
    let code = e.code().unwrap_or("");
    if e.kind() == ErrorKind::AuthenticationFailed || matches!(code, "NOAUTH" | "WRONGPASS") {
        return Error::Auth { addr };
    }
    if e.is_connection_refusal() {
        return Error::Unavailable {
            addr,
            why: Down::Refused,
        };
    }
    if e.is_timeout() {
        return Error::Unavailable {
            addr,
            why: Down::Broken("timed out".into()),
        };
    }
    if e.is_io_error() || e.is_connection_dropped() {
        // The I/O error's text names the OS error, never the URL.
        return Error::Unavailable {
            addr,
            why: Down::Broken(bounded(e.to_string())),
        };
    }
    if let ErrorKind::Server(kind) = e.kind()
        && busy(kind)
    {
        return Error::Unavailable {
            addr,
            why: Down::Busy(code.to_owned()),
        };
    }
    let detail = format!("{code} {}", e.detail().unwrap_or(""));
    Error::Redis {
        addr,
        detail: bounded(detail.trim().to_owned()),
    }
}

/// `text`, cut to [`MAX_DETAIL`] bytes.
fn bounded(mut text: String) -> String {
    if text.len() > MAX_DETAIL {
        let mut end = MAX_DETAIL;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Server errors that pass: the caller falls back and tries again.
fn busy(kind: ServerErrorKind) -> bool {
    matches!(
        kind,
        ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
    )
}
