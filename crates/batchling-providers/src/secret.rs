//! API keys that never reach a log, a file or an error message.

use std::fmt;

/// An API key. `Debug` and `Display` print a mask; the only way to the value
/// is [`ApiKey::expose`], used when building the auth header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wrap a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself, for the auth header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Remove every occurrence of the key from a text (a provider echoing it
    /// in an error body, say) before that text is shown or stored.
    pub fn redact(&self, text: &str) -> String {
        if self.0.len() < 4 || !text.contains(&self.0) {
            return text.to_owned();
        }
        text.replace(&self.0, "[redacted]")
    }
}

/// [`ApiKey::redact`] when there is a key; the text unchanged when not.
pub fn redact(key: Option<&ApiKey>, text: &str) -> String {
    match key {
        Some(k) => k.redact(text),
        None => text.to_owned(),
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_key() {
        let k = ApiKey::new("sk-test-123456");
        assert!(!format!("{k:?} {k}").contains("123456"));
        assert_eq!(
            k.redact("bad key sk-test-123456 given"),
            "bad key [redacted] given"
        );
    }
}
