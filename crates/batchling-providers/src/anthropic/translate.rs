//! OpenAI chat completions ⇄ Anthropic Messages, as pure functions on bytes.
//!
//! - [`request_to_messages`]: an OpenAI `/v1/chat/completions` body → a
//!   Messages body, with the [`Warning`]s of what lenient mode dropped.
//! - [`message_to_chat_completion`]: Anthropic's message object → a
//!   `chat.completion` object.
//! - [`error_to_openai`]: Anthropic's error body → OpenAI's error envelope.
//!
//! Every rule, and why, is in docs/providers.md, "Anthropic: Messages API and
//! translation". A field of the request that has no Anthropic equivalent is
//! never dropped silently: strict mode (the default) fails the line with a
//! [`RequestError`] naming the field, lenient mode drops it and says so.
//!
//! The input is bytes from outside: each function checks its size before
//! parsing, refuses JSON nested deeper than [`MAX_DEPTH`], and never panics.
//! Strings that pass through unchanged are copied as their raw JSON text.

mod answer;
mod conversation;
mod members;
mod request;
mod tools;
mod wire;

use std::borrow::Cow;
use std::fmt;

pub use answer::{error_to_openai, message_to_chat_completion};
pub use request::request_to_messages;

/// The largest request body translated: Anthropic's own limit on a Messages
/// request (32 MB); a bigger one would be refused there anyway.
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// The largest answer translated; the client's default answer cap.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// The deepest nesting of arrays and objects accepted in either direction.
/// Real bodies (messages, content parts, JSON schemas of tools) stay far
/// below it.
pub const MAX_DEPTH: usize = 64;

/// `max_tokens` when the request gives neither `max_completion_tokens` nor
/// `max_tokens`: Anthropic requires one, OpenAI does not.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// How many [`Warning`]s a translation lists; the rest are only counted.
pub const MAX_WARNINGS: usize = 32;

/// The longest text of one warning in an answer (and in the journal): a
/// longer one (a field with a name of a megabyte) is cut there, so that a
/// line's warnings take at most [`MAX_WARNINGS`] times this.
pub const MAX_WARNING_BYTES: usize = 300;

/// The tool a JSON-mode request (`response_format`) is forced to call; its
/// input is the answer's content. The name marks the call in the answer.
pub const JSON_TOOL_NAME: &str = "batchling_json_response";

/// What to do with a field that cannot be translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Fail the line with [`RequestError::Unsupported`].
    #[default]
    Strict,
    /// Drop the field (clamp `temperature`) and report a [`Warning`].
    Lenient,
}

/// Settings of [`request_to_messages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOptions {
    /// Strict or lenient.
    pub mode: Mode,
    /// `max_tokens` when the request has none.
    pub default_max_tokens: u64,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            mode: Mode::Strict,
            default_max_tokens: DEFAULT_MAX_TOKENS,
        }
    }
}

/// A translated request.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The Messages body, JSON.
    pub body: Vec<u8>,
    /// What lenient mode changed, in the order met (at most
    /// [`MAX_WARNINGS`]).
    pub warnings: Vec<Warning>,
    /// Warnings beyond [`MAX_WARNINGS`], counted only.
    pub more_warnings: usize,
}

/// A field lenient mode did not translate as given.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    /// Where it is, as `messages[2].content[0].image_url.detail`.
    pub field: String,
    /// What was done to it.
    pub action: Action,
}

/// What lenient mode did to a field.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// Left out of the translated body.
    Dropped,
    /// Sent as `to` instead of `from`.
    Clamped {
        /// The value in the request.
        from: f64,
        /// The value sent.
        to: f64,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.action {
            Action::Dropped => write!(f, "`{}` dropped: Anthropic has no equivalent", self.field),
            Action::Clamped { from, to } => {
                write!(
                    f,
                    "`{}` {from} sent as {to}: Anthropic's maximum",
                    self.field
                )
            }
        }
    }
}

/// Why a request body could not be translated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Over [`MAX_REQUEST_BYTES`].
    #[error("the body is {size} bytes, over the {limit}-byte limit of Anthropic's Messages API")]
    TooLarge {
        /// The body's size.
        size: usize,
        /// [`MAX_REQUEST_BYTES`].
        limit: usize,
    },
    /// Not a JSON object, or nested deeper than [`MAX_DEPTH`].
    #[error("the body is not a JSON object: {0}")]
    NotJson(String),
    /// `stream: true`, in either mode: a line is answered whole.
    #[error("`stream` cannot be true: a line's answer is journaled whole, not streamed")]
    Streaming,
    /// A field with no Anthropic equivalent, in strict mode.
    #[error("`{field}` cannot be translated to Anthropic's Messages API: {why}")]
    Unsupported {
        /// Where it is.
        field: String,
        /// Why.
        why: Cow<'static, str>,
    },
    /// A field OpenAI itself would refuse (wrong type, out of range).
    #[error("`{field}` is invalid: {reason}")]
    Invalid {
        /// Where it is.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A field the translation needs is absent.
    #[error("`{field}` is required")]
    Missing {
        /// Where it should be.
        field: String,
    },
}

impl RequestError {
    /// The field the error is about, when it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            RequestError::Unsupported { field, .. }
            | RequestError::Invalid { field, .. }
            | RequestError::Missing { field } => Some(field),
            RequestError::Streaming => Some("stream"),
            RequestError::TooLarge { .. } | RequestError::NotJson(_) => None,
        }
    }
}

/// Why an answer could not be translated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// Over [`MAX_ANSWER_BYTES`].
    #[error("the answer is {size} bytes, over the {limit}-byte translation limit")]
    TooLarge {
        /// The answer's size.
        size: usize,
        /// [`MAX_ANSWER_BYTES`].
        limit: usize,
    },
    /// Not JSON of the expected shape (a message object, or an error body).
    #[error("the answer is not an Anthropic {expected}: {reason}")]
    Malformed {
        /// `message` or `error body`.
        expected: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// A `stop_reason` this build does not know (or none): mapping it to
    /// `stop` would make a cut-off answer look complete.
    #[error("the answer's stop_reason {0:?} is not one batchling knows how to translate")]
    UnknownStopReason(Option<String>),
}

/// Whether `bytes` nest arrays and objects no deeper than `limit`, counted
/// outside strings. serde_json has its own limit (128) where it builds
/// values, but skips raw values without one; this gives one rule for both.
fn depth_within(bytes: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        assert!(depth_within(br#"{"a":[[1]]}"#, 3));
        assert!(!depth_within(br#"{"a":[[1]]}"#, 2));
        assert!(depth_within(br#"{"a":"[[[[\"[["}"#, 1));
    }
}
