//! The Messages request body as it is written: borrowed raw JSON wherever a
//! value passes through unchanged.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::value::RawValue;

/// `POST /v1/messages`'s body.
#[derive(Serialize)]
pub(super) struct MessagesBody<'a> {
    pub(super) model: &'a RawValue,
    pub(super) max_tokens: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) system: Vec<Block<'a>>,
    pub(super) messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) temperature: Option<Number<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) top_p: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) top_k: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) stop_sequences: Vec<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_choice: Option<ToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) metadata: Option<Metadata<'a>>,
}

/// A number as given, or one lenient mode changed.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum Number<'a> {
    Raw(&'a RawValue),
    Clamped(f64),
}

#[derive(Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum Role {
    User,
    Assistant,
}

/// One turn of the conversation.
#[derive(Serialize)]
pub(super) struct Turn<'a> {
    pub(super) role: Role,
    pub(super) content: Content<'a>,
}

/// A turn's (or a tool result's) content: a plain string as OpenAI gave
/// it, or blocks.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum Content<'a> {
    Text(&'a RawValue),
    Blocks(Vec<Block<'a>>),
}

impl<'a> Content<'a> {
    /// The content as blocks, to append more to it.
    pub(super) fn into_blocks(self) -> Vec<Block<'a>> {
        match self {
            Content::Text(text) => vec![Block::Text {
                text,
                cache_control: None,
            }],
            Content::Blocks(blocks) => blocks,
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Block<'a> {
    Text {
        text: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
    Image {
        source: Source<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
    Document {
        source: Source<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
    ToolUse {
        id: &'a RawValue,
        name: &'a RawValue,
        input: Cow<'a, RawValue>,
    },
    ToolResult {
        tool_use_id: &'a RawValue,
        content: Content<'a>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Source<'a> {
    Base64 {
        media_type: Cow<'a, str>,
        data: Cow<'a, str>,
    },
    Url {
        url: &'a RawValue,
    },
}

#[derive(Serialize)]
pub(super) struct Tool<'a> {
    pub(super) name: Cow<'a, RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) description: Option<Cow<'a, RawValue>>,
    pub(super) input_schema: Cow<'a, RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cache_control: Option<&'a RawValue>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ToolChoice<'a> {
    Auto {
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: Cow<'a, RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    None,
}

#[derive(Serialize)]
pub(super) struct Metadata<'a> {
    pub(super) user_id: &'a RawValue,
}
