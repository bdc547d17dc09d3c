use std::fmt;
use std::str::FromStr;

use batchling_core::Usage;
use batchling_core::output::{LineFailure, write_failure_line};
use batchling_core::request::LineError;
use batchling_core::request::placeholder_custom_id;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};

/// The final states a request can be journaled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinalState {
    /// Answered with a 2xx; its line goes to the output file.
    Done,
    /// A permanent error or no attempts left; its line goes to the error file.
    Failed,
    /// The input line itself was bad; its line goes to the error file.
    Invalid,
}

impl FinalState {
    /// The name stored in the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            FinalState::Done => "done",
            FinalState::Failed => "failed",
            FinalState::Invalid => "invalid",
        }
    }
}

impl fmt::Display for FinalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored request state this batchling does not know (a damaged journal,
/// or one written by a newer batchling).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown request state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for FinalState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "done" => Ok(FinalState::Done),
            "failed" => Ok(FinalState::Failed),
            "invalid" => Ok(FinalState::Invalid),
            other => Err(UnknownState(other.to_owned())),
        }
    }
}

/// Read straight from a `state` column: an unknown state fails the read.
impl FromSql for FinalState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e: UnknownState| FromSqlError::Other(Box::new(e)))
    }
}

/// One request's final state, as committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// 0-based index among non-blank input lines.
    pub seq: u64,
    /// 1-based physical line number.
    pub line_no: u64,
    /// The request's id (None for a line whose id could not be read).
    pub custom_id: Option<String>,
    /// Where it ended.
    pub state: FinalState,
    /// HTTP attempts made for it, in all runs.
    pub attempts: u32,
    /// Last HTTP status, if there was an answer.
    pub status_code: Option<u16>,
    /// `error.code` when the failure had no HTTP answer.
    pub error_code: Option<String>,
    /// The last error, for people.
    pub error_message: Option<String>,
    /// Usage from the answer.
    pub usage: Usage,
    /// Latency of the last attempt.
    pub latency_ms: Option<f64>,
    /// What it cost (USD), when its model's price is known.
    pub cost_usd: Option<f64>,
    /// The output- or error-file line, newline included.
    pub line: Vec<u8>,
    /// Who answered and every attempt, for a request sent over configured
    /// routes (`None` for one provider as it is).
    pub route: Option<Box<RouteRecord>>,
}

/// Attempts of a routed request that is not finished, journaled before it
/// moves on because one was billed (a refusal before the route's
/// content-policy chain). Its final record then carries only the attempts
/// after them, and its cost is the sum of every billed attempt journaled.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PaidAttempts {
    /// The request (as in [`Record::seq`]).
    pub seq: u64,
    /// Its attempts so far, in order.
    pub attempts: Vec<AttemptRow>,
}

/// A routed request's account: who answered it, and each HTTP attempt it
/// took (one row each in the journal's `attempts` table).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteRecord {
    /// The route the line's model named.
    pub route: String,
    /// The target whose answer is the line's (or that failed it last).
    pub target: String,
    /// The answer's own `model` field (a dated snapshot, say), if any.
    pub response_model: Option<String>,
    /// Steps moved along its chains before that answer (0: the primary).
    pub step: u32,
    /// Every attempt, in order.
    pub attempts: Vec<AttemptRow>,
    /// The batch whose result is the line (`submit --config`); `None`: it
    /// was answered online.
    pub batch: Option<String>,
}

/// One HTTP attempt of a routed request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AttemptRow {
    /// The target it was sent to.
    pub target: String,
    /// The limit group and the key's id (never the key).
    pub group: String,
    /// The key's id in its group.
    pub key_id: String,
    /// The HTTP status, if there was an answer.
    pub status: Option<u16>,
    /// What it was, when it did not answer the request: `rate_limited`,
    /// `server_error`, `timeout`, `connection`, `malformed`, `key_refused`,
    /// `invalid_request`, `context_window`, `model_not_found`,
    /// `content_policy`.
    pub error_class: Option<String>,
    /// The server's `Retry-After`, in milliseconds.
    pub retry_after_ms: Option<u64>,
    /// Its usage (a 2xx only).
    pub usage: Usage,
    /// What it cost, when priced and billed.
    pub cost_usd: Option<f64>,
    /// Whether the provider bills it (an answer with usage).
    pub billed: bool,
}

impl Record {
    /// A request that ends with no HTTP answer to show: its error-file line
    /// (`"response": null`, `error: {code, message}`) and the record, with
    /// no attempts counted.
    pub fn failure(
        seq: u64,
        line_no: u64,
        custom_id: Option<String>,
        state: FinalState,
        line_id: &str,
        code: &str,
        message: String,
    ) -> Record {
        let mut line = Vec::with_capacity(160 + message.len());
        let written_id = custom_id
            .clone()
            .unwrap_or_else(|| placeholder_custom_id(line_no));
        write_failure_line(
            &mut line,
            line_id,
            &written_id,
            &LineFailure {
                code,
                message: &message,
            },
        );
        Record {
            seq,
            line_no,
            custom_id,
            state,
            attempts: 0,
            status_code: None,
            error_code: Some(code.to_owned()),
            error_message: Some(message),
            usage: Usage::default(),
            latency_ms: None,
            cost_usd: None,
            line,
            route: None,
        }
    }

    /// A bad input line, as every command writes it to the error file.
    pub fn invalid(seq: u64, e: &LineError, line_id: &str) -> Record {
        Record::failure(
            seq,
            e.line_no,
            e.custom_id.clone(),
            FinalState::Invalid,
            line_id,
            e.problem.code(),
            e.to_string(),
        )
    }
}
