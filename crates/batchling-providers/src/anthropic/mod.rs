//! Anthropic's Messages API.
//!
//! For now only [`translate`]: pure functions between OpenAI's chat
//! completions and Anthropic's Messages bodies, so that OpenAI batch lines
//! naming a Claude model can be sent to Claude and answered in OpenAI's shape
//! (docs/providers.md, "Anthropic: Messages API and translation"). The client,
//! its classifier and its rate-limit headers come next, beside it.

pub mod translate;
