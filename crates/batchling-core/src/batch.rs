//! Vocabulary of OpenAI's Batches API, shared by its client (`batchling
//! submit`) and its server (`batchling serve`).

use serde::{Deserialize, Serialize};

/// The error code of a request its batch's completion window left undone,
/// in the output of `batchling submit` and of `batchling serve` alike.
pub const EXPIRED_CODE: &str = "batch_expired";

/// The message that goes with [`EXPIRED_CODE`] (OpenAI's wording).
pub const EXPIRED_MESSAGE: &str =
    "This request could not be executed before the completion window expired.";

/// A batch's status (`Batch.status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchStatus {
    /// The input file is being validated.
    Validating,
    /// Validation failed (`errors` says why).
    Failed,
    /// Running.
    InProgress,
    /// All requests done; result files being prepared.
    Finalizing,
    /// Results ready.
    Completed,
    /// Not finished within the completion window.
    Expired,
    /// Cancellation under way.
    Cancelling,
    /// Cancelled; partial results may be ready.
    Cancelled,
    /// A status this client does not know (treated as live).
    Other(String),
}

impl BatchStatus {
    /// Every status this vocabulary knows, in lifecycle order.
    pub const ALL: [BatchStatus; 8] = [
        BatchStatus::Validating,
        BatchStatus::Failed,
        BatchStatus::InProgress,
        BatchStatus::Finalizing,
        BatchStatus::Completed,
        BatchStatus::Expired,
        BatchStatus::Cancelling,
        BatchStatus::Cancelled,
    ];

    /// Parse the wire name.
    pub fn parse(s: &str) -> BatchStatus {
        match s {
            "validating" => BatchStatus::Validating,
            "failed" => BatchStatus::Failed,
            "in_progress" => BatchStatus::InProgress,
            "finalizing" => BatchStatus::Finalizing,
            "completed" => BatchStatus::Completed,
            "expired" => BatchStatus::Expired,
            "cancelling" => BatchStatus::Cancelling,
            "cancelled" => BatchStatus::Cancelled,
            other => BatchStatus::Other(other.to_owned()),
        }
    }

    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            BatchStatus::Validating => "validating",
            BatchStatus::Failed => "failed",
            BatchStatus::InProgress => "in_progress",
            BatchStatus::Finalizing => "finalizing",
            BatchStatus::Completed => "completed",
            BatchStatus::Expired => "expired",
            BatchStatus::Cancelling => "cancelling",
            BatchStatus::Cancelled => "cancelled",
            BatchStatus::Other(s) => s,
        }
    }

    /// `failed`, `completed`, `expired` or `cancelled`: nothing more will
    /// happen to the batch.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            BatchStatus::Failed
                | BatchStatus::Completed
                | BatchStatus::Expired
                | BatchStatus::Cancelled
        )
    }
}

impl<'de> Deserialize<'de> for BatchStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BatchStatus::parse(&String::deserialize(d)?))
    }
}

impl Serialize for BatchStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_and_know_when_they_are_final() {
        for s in ["failed", "completed", "expired", "cancelled"] {
            assert!(BatchStatus::parse(s).is_terminal(), "{s}");
        }
        for s in [
            "validating",
            "in_progress",
            "finalizing",
            "cancelling",
            "new",
        ] {
            assert!(!BatchStatus::parse(s).is_terminal(), "{s}");
        }
        assert_eq!(BatchStatus::parse("in_progress").as_str(), "in_progress");
    }
}
