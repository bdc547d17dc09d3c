use std::fmt;
use std::str::FromStr;

use batchling_core::Usage;

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

impl FromStr for FinalState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "done" => Ok(FinalState::Done),
            "failed" => Ok(FinalState::Failed),
            "invalid" => Ok(FinalState::Invalid),
            other => Err(format!("unknown request state {other:?}")),
        }
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
}
