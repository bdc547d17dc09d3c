//! Anthropic's Messages API.
//!
//! For now [`translate`]: pure functions between OpenAI's chat completions
//! and Anthropic's Messages bodies, so that OpenAI batch lines naming a
//! Claude model can be sent to Claude and answered in OpenAI's shape
//! (docs/providers.md, "Anthropic: Messages API and translation"); and what
//! an answer means: [`classify()`] and the rate-limit [`headers`]. The client
//! that uses them comes next, beside them.

pub mod classify;
pub mod headers;
pub mod translate;

pub use classify::classify;
