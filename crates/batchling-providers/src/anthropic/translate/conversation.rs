//! `messages` → Anthropic's `system` and turns: system and developer
//! messages hoisted in order, tool calls and results as blocks, images as
//! sources, consecutive turns of one role merged.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::RequestError;
use super::members::{Cx, Members, Path, Text, is_str, parse, string};
use super::wire::{Block, Content, Role, Source, Turn};

/// The translated conversation.
pub(super) struct Conversation<'a> {
    pub(super) system: Vec<Block<'a>>,
    pub(super) turns: Vec<Turn<'a>>,
}

/// Translate the request's `messages` (at `path`).
pub(super) fn conversation<'a>(
    raw: &'a RawValue,
    path: Path<'_>,
    cx: &mut Cx,
) -> Result<Conversation<'a>, RequestError> {
    let items: Vec<&'a RawValue> = parse(raw, path)?;
    if items.is_empty() {
        return Err(invalid(path, "at least one message is needed"));
    }
    let mut conv = Conversation {
        system: Vec::new(),
        turns: Vec::new(),
    };
    for (i, item) in items.into_iter().enumerate() {
        let path = path.index(i);
        let mut m = Members::of(item, path)?;
        let role: Text<'_> = parse(m.require("role", path)?, path.field("role"))?;
        match &*role.0 {
            "system" | "developer" => system(&mut m, path, cx, &mut conv.system)?,
            "user" => {
                let content = user_content(m.require("content", path)?, path.field("content"), cx)?;
                push(&mut conv.turns, Role::User, content);
            }
            "assistant" => {
                let content = assistant(&mut m, path, cx)?;
                push(&mut conv.turns, Role::Assistant, content);
            }
            "tool" => {
                let block = tool_result(&mut m, path, cx)?;
                push(&mut conv.turns, Role::User, Content::Blocks(vec![block]));
            }
            "function" => {
                // The whole message goes: its other members need no verdict.
                cx.untranslatable(
                    path.field("role"),
                    "the deprecated function role; use tools",
                )?;
                continue;
            }
            other => {
                return Err(invalid(
                    path.field("role"),
                    &format!("unknown role {other:?}"),
                ));
            }
        }
        cx.leftovers(m, path)?;
    }
    if conv.turns.is_empty() {
        return Err(invalid(
            path,
            "a user or assistant message is needed besides system ones",
        ));
    }
    Ok(conv)
}

/// Append a turn, merged into the previous one when both have one role:
/// tool results (and text after them) form one user turn.
fn push<'a>(turns: &mut Vec<Turn<'a>>, role: Role, content: Content<'a>) {
    match turns.last_mut() {
        Some(last) if last.role == role => {
            let previous = std::mem::replace(&mut last.content, Content::Blocks(Vec::new()));
            let mut blocks = previous.into_blocks();
            blocks.extend(content.into_blocks());
            last.content = Content::Blocks(blocks);
        }
        _ => turns.push(Turn { role, content }),
    }
}

/// A system or developer message: its text, as blocks, after the ones
/// before it.
fn system<'a>(
    m: &mut Members<'a>,
    path: Path<'_>,
    cx: &mut Cx,
    out: &mut Vec<Block<'a>>,
) -> Result<(), RequestError> {
    let raw = m.require("content", path)?;
    match text_or_parts(raw, path.field("content"), cx, &["text"])? {
        Content::Text(text) => out.push(Block::Text {
            text,
            cache_control: None,
        }),
        Content::Blocks(blocks) => out.extend(blocks),
    }
    Ok(())
}

/// A user message's content: a string, or parts (text, images, PDFs).
fn user_content<'a>(
    raw: &'a RawValue,
    path: Path<'_>,
    cx: &mut Cx,
) -> Result<Content<'a>, RequestError> {
    text_or_parts(raw, path, cx, &["text", "image_url"])
}

/// A string stays a string; an array becomes blocks, each part's type one
/// of `allowed` (others are untranslatable).
fn text_or_parts<'a>(
    raw: &'a RawValue,
    path: Path<'_>,
    cx: &mut Cx,
    allowed: &[&str],
) -> Result<Content<'a>, RequestError> {
    if raw.get().starts_with('"') {
        return Ok(Content::Text(raw));
    }
    let parts: Vec<&'a RawValue> = parse(raw, path)?;
    let mut blocks = Vec::with_capacity(parts.len());
    for (i, part) in parts.into_iter().enumerate() {
        let path = path.index(i);
        if let Some(block) = content_part(part, path, cx, allowed)? {
            blocks.push(block);
        }
    }
    Ok(Content::Blocks(blocks))
}

/// One content part; `None` when lenient mode dropped it.
fn content_part<'a>(
    raw: &'a RawValue,
    path: Path<'_>,
    cx: &mut Cx,
    allowed: &[&str],
) -> Result<Option<Block<'a>>, RequestError> {
    let mut m = Members::of(raw, path)?;
    let kind: Text<'_> = parse(m.require("type", path)?, path.field("type"))?;
    if !allowed.contains(&&*kind.0) {
        let why = format!("a {:?} part has no Anthropic equivalent here", kind.0);
        cx.untranslatable(path.field("type"), why)?;
        return Ok(None);
    }
    let cache_control = m.take("cache_control");
    let block = if kind.0 == "text" {
        let text = string(m.require("text", path)?, path.field("text"))?;
        Block::Text {
            text,
            cache_control,
        }
    } else {
        let inner = path.field("image_url");
        let mut image = Members::of(m.require("image_url", path)?, inner)?;
        let block = image_block(&mut image, inner, cache_control)?;
        if let Some(detail) = image.take("detail")
            && !is_str(detail, "auto")
        {
            cx.untranslatable(
                inner.field("detail"),
                "Anthropic has no image detail setting",
            )?;
        }
        cx.leftovers(image, inner)?;
        block
    };
    cx.leftovers(m, path)?;
    Ok(Some(block))
}

/// An `image_url`: a `data:` URL becomes a base64 source (a PDF a
/// document), an http(s) URL a URL source.
fn image_block<'a>(
    image: &mut Members<'a>,
    path: Path<'_>,
    cache_control: Option<&'a RawValue>,
) -> Result<Block<'a>, RequestError> {
    let raw = string(image.require("url", path)?, path.field("url"))?;
    let url: Text<'a> = parse(raw, path.field("url"))?;
    if url.0.starts_with("https://") || url.0.starts_with("http://") {
        let source = Source::Url { url: raw };
        return Ok(Block::Image {
            source,
            cache_control,
        });
    }
    let Some((media_type, data)) = split_data_url(url.0) else {
        let why = "expected an http(s) URL or a data:<media type>;base64,<data> URL";
        return Err(invalid(path.field("url"), why));
    };
    let is_pdf = media_type == "application/pdf";
    let source = Source::Base64 { media_type, data };
    Ok(if is_pdf {
        Block::Document {
            source,
            cache_control,
        }
    } else {
        Block::Image {
            source,
            cache_control,
        }
    })
}

/// `data:image/png;base64,AAAA` → (`image/png`, `AAAA`), borrowed when the
/// URL was.
fn split_data_url(url: Cow<'_, str>) -> Option<(Cow<'_, str>, Cow<'_, str>)> {
    fn split(url: &str) -> Option<(&str, &str)> {
        let rest = url.strip_prefix("data:")?;
        let (media_type, data) = rest.split_once(";base64,")?;
        (!media_type.is_empty() && !media_type.contains([';', ','])).then_some((media_type, data))
    }
    match url {
        Cow::Borrowed(url) => split(url).map(|(m, d)| (Cow::Borrowed(m), Cow::Borrowed(d))),
        Cow::Owned(url) => {
            split(&url).map(|(m, d)| (Cow::Owned(m.to_owned()), Cow::Owned(d.to_owned())))
        }
    }
}

/// An assistant message: its text (a string stays a string), then a
/// `tool_use` block per tool call.
fn assistant<'a>(
    m: &mut Members<'a>,
    path: Path<'_>,
    cx: &mut Cx,
) -> Result<Content<'a>, RequestError> {
    let content = match m.take("content") {
        Some(raw) => Some(text_or_parts(raw, path.field("content"), cx, &["text"])?),
        None => None,
    };
    let Some(calls) = m.take("tool_calls") else {
        return content
            .ok_or_else(|| invalid(path, "an assistant message needs content or tool_calls"));
    };
    let calls_path = path.field("tool_calls");
    let calls: Vec<&'a RawValue> = parse(calls, calls_path)?;
    let mut blocks = content.map(Content::into_blocks).unwrap_or_default();
    for (i, call) in calls.into_iter().enumerate() {
        blocks.push(tool_use(call, calls_path.index(i), cx)?);
    }
    Ok(Content::Blocks(blocks))
}

/// `{id, type: "function", function: {name, arguments}}` → a `tool_use`
/// block, the arguments string parsed into `input` (empty means `{}`).
fn tool_use<'a>(raw: &'a RawValue, path: Path<'_>, cx: &mut Cx) -> Result<Block<'a>, RequestError> {
    let mut call = Members::of(raw, path)?;
    let id = string(call.require("id", path)?, path.field("id"))?;
    if let Some(kind) = call.take("type")
        && !is_str(kind, "function")
    {
        cx.untranslatable(path.field("type"), "only function tool calls translate")?;
    }
    let fpath = path.field("function");
    let mut function = Members::of(call.require("function", path)?, fpath)?;
    let name = string(function.require("name", fpath)?, fpath.field("name"))?;
    let apath = fpath.field("arguments");
    let arguments: Text<'_> = match function.take("arguments") {
        Some(raw) => parse(raw, apath)?,
        None => Text(Cow::Borrowed("")),
    };
    let input = if arguments.0.trim().is_empty() {
        Cow::Owned(RawValue::from_string("{}".to_owned()).expect("{} is JSON"))
    } else {
        let input: Box<RawValue> = serde_json::from_str(&arguments.0)
            .map_err(|e| invalid(apath, &format!("not JSON: {e}")))?;
        if !input.get().starts_with('{') {
            return Err(invalid(apath, "a tool's input must be a JSON object"));
        }
        Cow::Owned(input)
    };
    cx.leftovers(function, fpath)?;
    cx.leftovers(call, path)?;
    Ok(Block::ToolUse { id, name, input })
}

/// A `tool` message → a `tool_result` block (its user turn is made by
/// [`push`]).
fn tool_result<'a>(
    m: &mut Members<'a>,
    path: Path<'_>,
    cx: &mut Cx,
) -> Result<Block<'a>, RequestError> {
    let tool_use_id = string(m.require("tool_call_id", path)?, path.field("tool_call_id"))?;
    let cpath = path.field("content");
    let raw = m.require("content", path)?;
    let content = text_or_parts(raw, cpath, cx, &["text"])?;
    Ok(Block::ToolResult {
        tool_use_id,
        content,
    })
}

fn invalid(path: Path<'_>, reason: &str) -> RequestError {
    RequestError::Invalid {
        field: path.to_string(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> Option<(String, String)> {
        split_data_url(Cow::Borrowed(url)).map(|(m, d)| (m.into_owned(), d.into_owned()))
    }

    #[test]
    fn only_base64_data_urls_with_a_media_type_split() {
        let png = Some(("image/png".to_owned(), "AAAA".to_owned()));
        assert_eq!(split("data:image/png;base64,AAAA"), png);
        assert_eq!(split("data:;base64,AAAA"), None);
        assert_eq!(split("data:image/png,AAAA"), None);
        assert_eq!(split("data:image/png;charset=x;base64,AAAA"), None);
        assert_eq!(split("image/png;base64,AAAA"), None);
    }

    #[test]
    fn turns_of_one_role_merge_into_blocks() {
        let a = RawValue::from_string("\"a\"".to_owned()).unwrap();
        let b = RawValue::from_string("\"b\"".to_owned()).unwrap();
        let mut turns = Vec::new();
        push(&mut turns, Role::User, Content::Text(&a));
        push(&mut turns, Role::User, Content::Text(&b));
        push(&mut turns, Role::Assistant, Content::Text(&a));
        let json = serde_json::to_string(&turns).unwrap();
        assert_eq!(
            json,
            r#"[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":"a"}]"#
        );
    }
}
