//! Anthropic's Messages API.
//!
//! [`client`]: the online client behind `batchling run --provider
//! anthropic` ([`AnthropicClient`]), which sends native Messages lines as
//! they are and OpenAI chat lines through [`translate`]: pure functions
//! between OpenAI's chat completions and Anthropic's Messages bodies
//! (docs/providers.md, "Anthropic: Messages API and translation"); and what
//! an answer means: [`classify()`] and the rate-limit [`headers`].
//!
//! [`batches`]: the Message Batches API behind `batchling submit
//! --provider anthropic` ([`MessageBatchClient`]).

pub mod batches;
pub mod classify;
pub mod client;
pub mod headers;
pub mod translate;

pub use batches::MessageBatchClient;
pub use classify::classify;
pub use client::{AnthropicClient, AnthropicConfig};
