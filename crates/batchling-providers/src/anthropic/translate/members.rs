//! Reading an OpenAI request one object at a time, so that every member is
//! either translated or reported: [`Members`] hands out the members the
//! translation asks for, and [`Cx::leftovers`] judges the rest.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{Action, MAX_WARNINGS, Mode, RequestError, Warning};

/// Where a value sits in the request, formatted only for a message:
/// `messages[2].content[0].type`.
#[derive(Clone, Copy)]
pub(super) enum Path<'p> {
    Root,
    Field(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl Path<'_> {
    pub(super) fn field<'p>(&'p self, name: &'p str) -> Path<'p> {
        Path::Field(self, name)
    }

    pub(super) fn index(&self, i: usize) -> Path<'_> {
        Path::Index(self, i)
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(Path::Root, name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// A member name, borrowed from the input unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// One JSON object's members, each still raw JSON, none yet read.
pub(super) struct Members<'a> {
    entries: Vec<(Cow<'a, str>, &'a RawValue, bool)>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Members<'de>, M::Error> {
                let mut entries = Vec::new();
                while let Some(Key(name)) = map.next_key::<Key<'de>>()? {
                    entries.push((name, map.next_value::<&'de RawValue>()?, false));
                }
                Ok(Members { entries })
            }
        }
        d.deserialize_map(MembersVisitor)
    }
}

impl<'a> Members<'a> {
    /// The members of the object `raw`, which sits at `path`.
    pub(super) fn of(raw: &'a RawValue, path: Path<'_>) -> Result<Self, RequestError> {
        parse(raw, path)
    }

    /// The member `name`, `None` when absent or `null` (OpenAI reads both the
    /// same). A repeated name yields its last value, as Python's parser does;
    /// all its copies count as read.
    pub(super) fn take(&mut self, name: &str) -> Option<&'a RawValue> {
        let mut found = None;
        for (key, value, taken) in &mut self.entries {
            if key == name {
                *taken = true;
                found = Some(*value);
            }
        }
        found.filter(|v| v.get() != "null")
    }

    /// [`Members::take`] for a member that must be there.
    pub(super) fn require(
        &mut self,
        name: &str,
        path: Path<'_>,
    ) -> Result<&'a RawValue, RequestError> {
        self.take(name).ok_or_else(|| RequestError::Missing {
            field: path.field(name).to_string(),
        })
    }
}

/// The translation's state: the mode and what lenient mode dropped.
pub(super) struct Cx {
    pub(super) mode: Mode,
    pub(super) warnings: Vec<Warning>,
    pub(super) more_warnings: usize,
}

impl Cx {
    pub(super) fn new(mode: Mode) -> Self {
        Cx {
            mode,
            warnings: Vec::new(),
            more_warnings: 0,
        }
    }

    /// A field with no Anthropic equivalent: an error in strict mode, a
    /// warning (and the field left out) in lenient mode.
    pub(super) fn untranslatable(
        &mut self,
        path: Path<'_>,
        why: impl Into<Cow<'static, str>>,
    ) -> Result<(), RequestError> {
        match self.mode {
            Mode::Strict => Err(RequestError::Unsupported {
                field: path.to_string(),
                why: why.into(),
            }),
            Mode::Lenient => {
                self.warn(path, Action::Dropped);
                Ok(())
            }
        }
    }

    pub(super) fn warn(&mut self, path: Path<'_>, action: Action) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(Warning {
                field: path.to_string(),
                action,
            });
        } else {
            self.more_warnings += 1;
        }
    }

    /// The members nobody took: each one that is not `null` and not its
    /// neutral value (`n: 1`, `logprobs: false`, ...) is untranslatable.
    pub(super) fn leftovers(
        &mut self,
        members: Members<'_>,
        path: Path<'_>,
    ) -> Result<(), RequestError> {
        for (name, value, taken) in &members.entries {
            if *taken || value.get() == "null" || is_neutral(name, value) {
                continue;
            }
            self.untranslatable(path.field(name), why_untranslatable(name))?;
        }
        Ok(())
    }
}

/// Parse the raw value at `path` as `T`; a mismatch names the path.
pub(super) fn parse<'a, T: Deserialize<'a>>(
    raw: &'a RawValue,
    path: Path<'_>,
) -> Result<T, RequestError> {
    serde_json::from_str(raw.get()).map_err(|e| RequestError::Invalid {
        field: path.to_string(),
        reason: e.to_string(),
    })
}

/// A string, borrowed from the input unless it had escapes.
#[derive(Deserialize)]
pub(super) struct Text<'a>(#[serde(borrow)] pub(super) Cow<'a, str>);

/// Whether `raw` is the JSON string `want` (escapes decoded).
pub(super) fn is_str(raw: &RawValue, want: &str) -> bool {
    serde_json::from_str::<Text<'_>>(raw.get()).is_ok_and(|t| t.0 == want)
}

/// The raw value at `path`, which must be a JSON string; it is forwarded as
/// its JSON text.
pub(super) fn string<'a>(raw: &'a RawValue, path: Path<'_>) -> Result<&'a RawValue, RequestError> {
    if raw.get().starts_with('"') {
        Ok(raw)
    } else {
        Err(RequestError::Invalid {
            field: path.to_string(),
            reason: "expected a string".to_owned(),
        })
    }
}

/// A member whose value, when it is this one, asks for nothing: it may be
/// dropped in either mode. These are OpenAI's defaults.
fn is_neutral(name: &str, value: &RawValue) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(value.get()) else {
        return false;
    };
    let zero = v.as_f64() == Some(0.0);
    let empty = v.as_object().is_some_and(serde_json::Map::is_empty);
    match name {
        "n" => v.as_u64() == Some(1),
        "logprobs" | "stream" | "store" => v == serde_json::Value::Bool(false),
        "top_logprobs" | "presence_penalty" | "frequency_penalty" => zero,
        "logit_bias" | "metadata" => empty,
        "service_tier" => v.as_str() == Some("auto"),
        "modalities" => v == serde_json::json!(["text"]),
        _ => false,
    }
}

/// Why a member has no Anthropic equivalent, in the error message.
fn why_untranslatable(name: &str) -> &'static str {
    match name {
        "n" => "Anthropic answers one choice per request; send the line n times",
        "logprobs" | "top_logprobs" => "Anthropic returns no log probabilities",
        "logit_bias" => "Anthropic has no token biasing",
        "presence_penalty" | "frequency_penalty" => "Anthropic has no repetition penalties",
        "seed" => "Anthropic has no seeded sampling",
        "audio" | "modalities" | "input_audio" => "Claude answers in text only",
        "name" => "Anthropic's messages carry no participant name",
        "reasoning_effort" => "not translated yet; send a native /v1/messages line with `thinking`",
        "functions" | "function_call" => "the deprecated functions API; use tools",
        _ => "not a field batchling translates",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_as_written_in_json() {
        let root = Path::Root;
        let messages = root.field("messages");
        let first = messages.index(2);
        assert_eq!(
            first.field("content").index(0).field("type").to_string(),
            "messages[2].content[0].type"
        );
        assert_eq!(root.field("n").to_string(), "n");
    }

    #[test]
    fn a_repeated_member_yields_its_last_value_and_null_is_absent() {
        let mut m: Members<'_> =
            serde_json::from_str(r#"{"a":1,"a":2,"b":null,"c\u0064":3}"#).unwrap();
        assert_eq!(m.take("a").map(RawValue::get), Some("2"));
        assert!(m.take("b").is_none());
        assert_eq!(m.take("cd").map(RawValue::get), Some("3"));
        assert!(m.entries.iter().all(|(_, _, taken)| *taken));
    }
}
