//! `tools`, `tool_choice`, `parallel_tool_calls` and `response_format`
//! (JSON mode, as a forced tool) → Anthropic's `tools` and `tool_choice`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::members::{Cx, Members, Path, Text, parse, string};
use super::wire::{Tool, ToolChoice};
use super::{JSON_TOOL_NAME, RequestError};

/// The tools and the tool choice of the request `top`.
pub(super) fn tools<'a>(
    top: &mut Members<'a>,
    cx: &mut Cx,
) -> Result<(Vec<Tool<'a>>, Option<ToolChoice<'a>>), RequestError> {
    let root = Path::Root;
    let mut list = match top.take("tools") {
        Some(raw) => tool_list(raw, root.field("tools"), cx)?,
        None => Vec::new(),
    };
    let mut choice = match top.take("tool_choice") {
        Some(raw) => tool_choice(raw, root.field("tool_choice"), cx)?,
        None => None,
    };
    if let Some(raw) = top.take("response_format") {
        json_mode(raw, &mut list, &mut choice, cx)?;
    }
    if let Some(raw) = top.take("parallel_tool_calls") {
        let parallel: bool = parse(raw, root.field("parallel_tool_calls"))?;
        // Anthropic says it the other way round, on the tool choice; without
        // tools there is nothing to say.
        if !parallel && !list.is_empty() {
            disable_parallel(&mut choice);
        }
    }
    Ok((list, choice))
}

fn disable_parallel(choice: &mut Option<ToolChoice<'_>>) {
    match choice {
        None => {
            *choice = Some(ToolChoice::Auto {
                disable_parallel_tool_use: Some(true),
            });
        }
        Some(
            ToolChoice::Auto {
                disable_parallel_tool_use,
            }
            | ToolChoice::Any {
                disable_parallel_tool_use,
            }
            | ToolChoice::Tool {
                disable_parallel_tool_use,
                ..
            },
        ) => *disable_parallel_tool_use = Some(true),
        // Nothing is called, so nothing in parallel either.
        Some(ToolChoice::None) => {}
    }
}

/// `[{type: "function", function: {name, description, parameters}}]` →
/// `[{name, description, input_schema}]`.
fn tool_list<'a>(
    raw: &'a RawValue,
    path: Path<'_>,
    cx: &mut Cx,
) -> Result<Vec<Tool<'a>>, RequestError> {
    let items: Vec<&'a RawValue> = parse(raw, path)?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let path = path.index(i);
        let mut tool = Members::of(item, path)?;
        let kind: Text<'_> = parse(tool.require("type", path)?, path.field("type"))?;
        if kind.0 != "function" {
            cx.untranslatable(path.field("type"), "only function tools translate")?;
            continue;
        }
        let fpath = path.field("function");
        let mut function = Members::of(tool.require("function", path)?, fpath)?;
        let name = string(function.require("name", fpath)?, fpath.field("name"))?;
        let description = match function.take("description") {
            Some(raw) => Some(Cow::Borrowed(string(raw, fpath.field("description"))?)),
            None => None,
        };
        let input_schema = match function.take("parameters") {
            Some(raw) => Cow::Borrowed(object(raw, fpath.field("parameters"))?),
            None => Cow::Owned(raw_json(r#"{"type":"object","properties":{}}"#)),
        };
        strict(&mut function, fpath, cx)?;
        let cache_control = tool.take("cache_control");
        cx.leftovers(function, fpath)?;
        cx.leftovers(tool, path)?;
        out.push(Tool {
            name: Cow::Borrowed(name),
            description,
            input_schema,
            cache_control,
        });
    }
    Ok(out)
}

/// `strict: true` asks for output that always follows the schema, which
/// Anthropic's tool use does not promise.
fn strict(m: &mut Members<'_>, path: Path<'_>, cx: &mut Cx) -> Result<(), RequestError> {
    match m.take("strict") {
        Some(raw) if raw.get() != "false" => cx.untranslatable(
            path.field("strict"),
            "Anthropic's tool use does not guarantee that the input follows the schema",
        ),
        _ => Ok(()),
    }
}

/// `auto` / `none` / `required` / `{type: "function", function: {name}}`
/// → `auto` / `none` / `any` / `{type: "tool", name}`.
fn tool_choice<'a>(
    raw: &'a RawValue,
    path: Path<'_>,
    cx: &mut Cx,
) -> Result<Option<ToolChoice<'a>>, RequestError> {
    if raw.get().starts_with('"') {
        let choice: Text<'_> = parse(raw, path)?;
        let disable_parallel_tool_use = None;
        return match &*choice.0 {
            "auto" => Ok(Some(ToolChoice::Auto {
                disable_parallel_tool_use,
            })),
            "required" => Ok(Some(ToolChoice::Any {
                disable_parallel_tool_use,
            })),
            "none" => Ok(Some(ToolChoice::None)),
            other => Err(RequestError::Invalid {
                field: path.to_string(),
                reason: format!("unknown tool choice {other:?}"),
            }),
        };
    }
    let mut m = Members::of(raw, path)?;
    let kind: Text<'_> = parse(m.require("type", path)?, path.field("type"))?;
    if kind.0 != "function" {
        cx.untranslatable(path.field("type"), "only a named function translates")?;
        return Ok(None);
    }
    let fpath = path.field("function");
    let mut function = Members::of(m.require("function", path)?, fpath)?;
    let name = string(function.require("name", fpath)?, fpath.field("name"))?;
    cx.leftovers(function, fpath)?;
    cx.leftovers(m, path)?;
    Ok(Some(ToolChoice::Tool {
        name: Cow::Borrowed(name),
        disable_parallel_tool_use: None,
    }))
}

/// `response_format`: `text` asks for nothing; `json_object` and
/// `json_schema` become a tool Claude is forced to call, whose input (the
/// schema's object) the answer's translation turns back into content. That
/// needs the tool choice, so it cannot be combined with the request's own
/// tools.
fn json_mode<'a>(
    raw: &'a RawValue,
    list: &mut Vec<Tool<'a>>,
    choice: &mut Option<ToolChoice<'a>>,
    cx: &mut Cx,
) -> Result<(), RequestError> {
    let path = Path::Root.field("response_format");
    let mut m = Members::of(raw, path)?;
    let kind: Text<'_> = parse(m.require("type", path)?, path.field("type"))?;
    let schema = match &*kind.0 {
        "text" => None,
        "json_object" => Some(Cow::Owned(raw_json(r#"{"type":"object"}"#))),
        "json_schema" => match json_schema(&mut m, path, cx)? {
            Some(schema) => Some(schema),
            // Lenient mode dropped JSON mode: its other members go with it.
            None => return Ok(()),
        },
        other => {
            let why = format!("response format {other:?} has no Anthropic equivalent");
            return cx.untranslatable(path, why);
        }
    };
    cx.leftovers(m, path)?;
    let Some(input_schema) = schema else {
        return Ok(());
    };
    if !list.is_empty() || choice.is_some() {
        let why = "JSON mode is sent as a forced tool call, which cannot be combined with tools";
        return cx.untranslatable(path, why);
    }
    list.push(Tool {
        name: Cow::Owned(raw_json(&format!("\"{JSON_TOOL_NAME}\""))),
        description: Some(Cow::Owned(raw_json(
            "\"Give the answer as this tool's input: a JSON object.\"",
        ))),
        input_schema,
        cache_control: None,
    });
    *choice = Some(ToolChoice::Tool {
        name: Cow::Owned(raw_json(&format!("\"{JSON_TOOL_NAME}\""))),
        disable_parallel_tool_use: None,
    });
    Ok(())
}

/// `json_schema: {name, description, schema, strict}` → the schema, which
/// must describe an object (a tool's input is one); `None` when lenient
/// mode dropped a schema that does not.
fn json_schema<'a>(
    m: &mut Members<'a>,
    path: Path<'_>,
    cx: &mut Cx,
) -> Result<Option<Cow<'a, RawValue>>, RequestError> {
    #[derive(Deserialize)]
    struct SchemaType<'s> {
        #[serde(rename = "type", borrow)]
        kind: Option<Cow<'s, str>>,
    }
    let raw = m.require("json_schema", path)?;
    let path = path.field("json_schema");
    let mut js = Members::of(raw, path)?;
    js.take("name");
    js.take("description");
    let schema = match js.take("schema") {
        Some(raw) => {
            let spath = path.field("schema");
            let top: SchemaType<'_> = parse(object(raw, spath)?, spath)?;
            if top.kind.as_deref().is_some_and(|k| k != "object") {
                let why = "a tool's input is a JSON object; wrap the value in one";
                cx.untranslatable(spath.field("type"), why)?;
                return Ok(None);
            }
            Cow::Borrowed(raw)
        }
        None => Cow::Owned(raw_json(r#"{"type":"object"}"#)),
    };
    strict(&mut js, path, cx)?;
    cx.leftovers(js, path)?;
    Ok(Some(schema))
}

/// The raw value at `path`, which must be a JSON object.
fn object<'a>(raw: &'a RawValue, path: Path<'_>) -> Result<&'a RawValue, RequestError> {
    if raw.get().starts_with('{') {
        Ok(raw)
    } else {
        Err(RequestError::Invalid {
            field: path.to_string(),
            reason: "expected a JSON object".to_owned(),
        })
    }
}

/// A constant of this file as a raw value.
fn raw_json(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap_or_else(|_| unreachable!("constant JSON {json}"))
}
