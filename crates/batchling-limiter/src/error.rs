//! What can go wrong, in words that say what to fix. No message holds the
//! URL's password: addresses are `host:port` only, and Redis's own error
//! text is passed on only for replies to commands (which never echo it).

use std::fmt;
use std::time::Duration;

use crate::budget::Dimension;

/// Why Redis could not be used just now. The caller falls back (the
/// local pacer at a share of the limit) and tries again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// Nothing listens there.
    Refused,
    /// No answer in time.
    TimedOut(Duration),
    /// The connection broke, or could not be made (the I/O error's kind).
    Broken(String),
    /// Redis answered that it cannot serve now (loading, a read-only
    /// replica after a failover, a cluster that is down): its error code.
    Busy(String),
}

impl fmt::Display for Down {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Down::Refused => write!(f, "the connection was refused"),
            Down::TimedOut(d) => write!(f, "no answer within {} ms", d.as_millis()),
            Down::Broken(kind) => write!(f, "the connection failed ({kind})"),
            Down::Busy(code) => write!(f, "Redis cannot serve now ({code})"),
        }
    }
}

/// The limiter's errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not one the limiter can use.
    #[error(
        "the limiter URL is not usable: {reason} (expected redis://[[user]:password@]host[:port][/db])"
    )]
    BadUrl {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Redis is not reachable or cannot answer now: fall back, try later.
    #[error("{}", unavailable(addr, why))]
    Unavailable {
        /// `host:port`.
        addr: String,
        /// What happened.
        why: Down,
    },
    /// Redis refused the URL's credentials.
    #[error(
        "Redis at {addr} refused the limiter's credentials: check the user and password in the limiter URL"
    )]
    Auth {
        /// `host:port`.
        addr: String,
    },
    /// Redis answered a command with an error the limiter does not expect.
    #[error("Redis at {addr} answered the limiter with an error: {detail}")]
    Redis {
        /// `host:port`.
        addr: String,
        /// Redis's error code and text (bounded).
        detail: String,
    },
    /// A script's reply had another shape than its own code returns (a
    /// different script under the same name, or a proxy in between).
    #[error("Redis at {addr} gave the limiter a malformed reply to {script}")]
    Reply {
        /// `host:port`.
        addr: String,
        /// Which script.
        script: &'static str,
    },
    /// The key prefix cannot be used.
    #[error("the limiter key prefix {reason}")]
    BadPrefix {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A lane's name cannot be used.
    #[error("the lane's {field} {reason}")]
    BadLane {
        /// `upstream`, `group` or `model`.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A limit of 0 (nothing would ever pass) or beyond what the scripts
    /// compute exactly.
    #[error(
        "a limit of {per_minute} {} cannot be kept: give 1 to 10^12, or leave it out for no limit",
        dimension.name()
    )]
    BadLimit {
        /// Which limit.
        dimension: Dimension,
        /// Its figure.
        per_minute: u64,
    },
    /// A cost beyond what the scripts compute exactly.
    #[error("a request costing {tokens} {side} tokens is beyond the limiter's 10^12")]
    BadCost {
        /// `input` or `output`.
        side: &'static str,
        /// The figure.
        tokens: u64,
    },
}

impl Error {
    /// Whether this is [`Error::Unavailable`]: Redis may answer again later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

fn unavailable(addr: &str, why: &Down) -> String {
    match why {
        Down::Refused => format!(
            "cannot reach the limiter's Redis at {addr}: the connection was refused; is Redis running on {addr}?"
        ),
        other => format!("the limiter's Redis at {addr} is unavailable: {other}"),
    }
}
