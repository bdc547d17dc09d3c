//! Keys never sit in the file: a field named like a key, or any string that
//! looks like one, is refused before anything else is read, with a message
//! that never repeats it.

use toml::de::{DeTable, DeValue};

use crate::tomlfile::{Doc, Problem};

use super::join;

/// Field names that would hold a key.
const KEY_FIELDS: &[&str] = &[
    "key",
    "api_key",
    "api-key",
    "apikey",
    "secret",
    "token",
    "password",
    "authorization",
];

/// Prefixes of providers' keys (OpenAI, Anthropic `sk-ant-`, Groq,
/// xAI, Google, a pasted header).
const KEY_PREFIXES: &[&str] = &["sk-", "sk_", "gsk_", "xai-", "AIza", "Bearer "];

/// Refuse any key in the document.
pub(super) fn refuse_keys(doc: &Doc<'_>, table: &DeTable<'_>) -> Result<(), Problem> {
    walk_table(doc, table, "")
}

fn walk_table(doc: &Doc<'_>, table: &DeTable<'_>, prefix: &str) -> Result<(), Problem> {
    for (key, value) in table {
        let name = key.get_ref().as_ref();
        let at = key.span().start;
        if looks_like_key(name) {
            return Err(doc.at(at, prefix, "a table key looks like an API key: keys never go in the file; put it in an environment variable and name the variable with env = \"...\""));
        }
        let field = if prefix.is_empty() {
            super::segment(name).into_owned()
        } else {
            join(prefix, name)
        };
        if KEY_FIELDS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(doc.at(
                at,
                &field,
                "keys never go in the file: put the key in an environment variable and name it in the group's keys, as { id = \"...\", env = \"VARIABLE\" }",
            ));
        }
        walk_value(doc, value.get_ref(), value.span().start, &field)?;
    }
    Ok(())
}

fn walk_value(doc: &Doc<'_>, value: &DeValue<'_>, at: usize, field: &str) -> Result<(), Problem> {
    match value {
        DeValue::String(s) if looks_like_key(s) => Err(doc.at(at, field, refusal(field))),
        DeValue::Table(t) => walk_table(doc, t, field),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let field = format!("{field}[{i}]");
                walk_value(doc, item.get_ref(), item.span().start, &field)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn refusal(field: &str) -> &'static str {
    if field.ends_with(".env") {
        "this looks like an API key, not the name of an environment variable: env names the variable that holds the key (such as OPENAI_API_KEY)"
    } else {
        "this looks like an API key: keys never go in the file; put it in an environment variable and name the variable with env = \"...\""
    }
}

/// A provider's key prefix, or a long run of letters and digits mixed (an
/// Azure key: 32 hex digits or 84 letters and digits). Model names,
/// URLs and ids have separators or are short.
pub(super) fn looks_like_key(s: &str) -> bool {
    if KEY_PREFIXES.iter().any(|p| s.starts_with(p)) {
        return true;
    }
    s.len() >= 32
        && s.bytes().all(|b| b.is_ascii_alphanumeric())
        && s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}
