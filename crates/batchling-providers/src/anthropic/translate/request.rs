//! An OpenAI chat completions body → a Messages body, field by field.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::conversation::conversation;
use super::members::{Cx, Members, Path, Text, parse, string};
use super::tools::tools;
use super::wire::{MessagesBody, Metadata, Number};
use super::{
    Action, MAX_DEPTH, MAX_REQUEST_BYTES, Mode, RequestError, RequestOptions, Translated,
    depth_within,
};

/// Translate an OpenAI `/v1/chat/completions` body into an Anthropic
/// `/v1/messages` body.
///
/// # Errors
/// A body too large, not a JSON object or nested too deep; `stream: true`;
/// a field OpenAI would refuse; in [`Mode::Strict`], a field with no
/// Anthropic equivalent (in [`Mode::Lenient`] it is dropped and listed in
/// [`Translated::warnings`]).
pub fn request_to_messages(
    body: &[u8],
    options: &RequestOptions,
) -> Result<Translated, RequestError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::TooLarge {
            size: body.len(),
            limit: MAX_REQUEST_BYTES,
        });
    }
    if !depth_within(body, MAX_DEPTH) {
        return Err(RequestError::NotJson(format!(
            "nested deeper than {MAX_DEPTH}"
        )));
    }
    let mut top: Members<'_> =
        serde_json::from_slice(body).map_err(|e| RequestError::NotJson(e.to_string()))?;
    let mut cx = Cx::new(options.mode);
    let root = Path::Root;
    if let Some(stream) = top.take("stream")
        && stream.get() != "false"
    {
        return Err(RequestError::Streaming);
    }
    let model = string(top.require("model", root)?, root.field("model"))?;
    let conv = conversation(
        top.require("messages", root)?,
        root.field("messages"),
        &mut cx,
    )?;
    let max_tokens = max_tokens(&mut top, options.default_max_tokens)?;
    let temperature = temperature(&mut top, &mut cx)?;
    let top_p = top
        .take("top_p")
        .map(|raw| number_in(raw, "top_p", 0.0, 1.0))
        .transpose()?;
    let top_k = top
        .take("top_k")
        .map(|raw| count(raw, "top_k").map(|_| raw))
        .transpose()?;
    let stop_sequences = stop(&mut top, &mut cx)?;
    let (tools, tool_choice) = tools(&mut top, &mut cx)?;
    let metadata = match top.take("user") {
        Some(raw) => Some(Metadata {
            user_id: string(raw, root.field("user"))?,
        }),
        None => None,
    };
    cx.leftovers(top, root)?;
    let out = MessagesBody {
        model,
        max_tokens,
        system: conv.system,
        messages: conv.turns,
        temperature,
        top_p,
        top_k,
        stop_sequences,
        tools,
        tool_choice,
        metadata,
    };
    Ok(Translated {
        body: serde_json::to_vec(&out).map_err(|e| RequestError::NotJson(e.to_string()))?,
        warnings: cx.warnings,
        more_warnings: cx.more_warnings,
    })
}

/// `max_completion_tokens`, else `max_tokens` (OpenAI's older name), else
/// the default; the other one is read and dropped.
fn max_tokens(top: &mut Members<'_>, default: u64) -> Result<u64, RequestError> {
    let completion = top.take("max_completion_tokens");
    let legacy = top.take("max_tokens");
    let (raw, name) = match (completion, legacy) {
        (Some(raw), _) => (raw, "max_completion_tokens"),
        (None, Some(raw)) => (raw, "max_tokens"),
        (None, None) => return Ok(default),
    };
    let n = count(raw, name)?;
    if n == 0 {
        return Err(invalid(name, "must be at least 1"));
    }
    Ok(n)
}

/// OpenAI's range is 0 to 2, Anthropic's 0 to 1: above 1 is untranslatable
/// in strict mode and sent as 1 in lenient mode.
fn temperature<'a>(top: &mut Members<'a>, cx: &mut Cx) -> Result<Option<Number<'a>>, RequestError> {
    let Some(raw) = top.take("temperature") else {
        return Ok(None);
    };
    let t: f64 = parse(raw, Path::Root.field("temperature"))?;
    if !(0.0..=2.0).contains(&t) {
        return Err(invalid("temperature", "must be between 0 and 2"));
    }
    if t <= 1.0 {
        return Ok(Some(Number::Raw(raw)));
    }
    match cx.mode {
        Mode::Strict => Err(RequestError::Unsupported {
            field: "temperature".to_owned(),
            why: Cow::Owned(format!("{t} is above Anthropic's maximum of 1")),
        }),
        Mode::Lenient => {
            cx.warn(
                Path::Root.field("temperature"),
                Action::Clamped { from: t, to: 1.0 },
            );
            Ok(Some(Number::Clamped(1.0)))
        }
    }
}

/// `stop`, a string or a list → `stop_sequences`. Anthropic refuses a
/// sequence of whitespace only: untranslatable.
fn stop<'a>(top: &mut Members<'a>, cx: &mut Cx) -> Result<Vec<Cow<'a, str>>, RequestError> {
    let Some(raw) = top.take("stop") else {
        return Ok(Vec::new());
    };
    let path = Path::Root.field("stop");
    let all: Vec<Text<'a>> = if raw.get().starts_with('"') {
        vec![parse(raw, path)?]
    } else {
        parse(raw, path)?
    };
    let mut kept = Vec::with_capacity(all.len());
    for (i, Text(s)) in all.into_iter().enumerate() {
        if s.trim().is_empty() {
            cx.untranslatable(
                path.index(i),
                "Anthropic refuses stop sequences of whitespace only",
            )?;
        } else {
            kept.push(s);
        }
    }
    Ok(kept)
}

/// A number in `lo..=hi`, forwarded as written.
fn number_in<'a>(
    raw: &'a RawValue,
    name: &str,
    lo: f64,
    hi: f64,
) -> Result<&'a RawValue, RequestError> {
    let x: f64 = parse(raw, Path::Root.field(name))?;
    if (lo..=hi).contains(&x) {
        Ok(raw)
    } else {
        Err(invalid(name, &format!("must be between {lo} and {hi}")))
    }
}

/// A non-negative integer.
fn count(raw: &RawValue, name: &str) -> Result<u64, RequestError> {
    parse(raw, Path::Root.field(name))
}

fn invalid(name: &str, reason: &str) -> RequestError {
    RequestError::Invalid {
        field: name.to_owned(),
        reason: reason.to_owned(),
    }
}
