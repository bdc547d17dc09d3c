//! Rate limits as a provider's limits page lists them: per model, some
//! families of models sharing one, and the limits file both
//! `batchling run --limits FILE` (the client side: what to pace by) and
//! `batchling mock --limits FILE` (the fake provider: what to enforce)
//! read, so one file can describe both sides.
//!
//! The file is TOML, read whole (at most [`MAX_LIMITS_FILE_BYTES`]), every
//! error naming the file, the line and the field. A model is in at most one
//! `[models.*]` entry (listed twice is an error).
//!
//! ```toml
//! window = "second"        # optional: "minute" (default) or "second"
//! token_count = "openai"   # optional: "exact" (default) or "openai"
//!
//! [default]                # every model without a limit below, as --rpm/--tpm
//! rpm = 500
//! tpm = 30000
//!
//! [models.gpt-4o]          # a limit of its own, for the model gpt-4o
//! rpm = 5000
//! tpm = 800000
//!
//! [models.mini]            # one limit shared by a family of models
//! models = ["gpt-4o-mini", "gpt-4o-mini-2024-07-18"]
//! rpm = 1000
//!
//! [models.sonnet]          # an Anthropic model class: input and output tokens
//! models = ["claude-sonnet-4-5", "claude-sonnet-4-5-20250929"]
//! rpm = 50
//! itpm = 30000
//! otpm = 8000
//!
//! [groups]                 # limit groups: the keys that share one budget
//! org-a = ["sk-a1", "sk-a2"]
//! org-b = ["sk-b1"]
//! ```

use std::fmt;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::tomlfile::{Doc, Item, Problem, ReadFailure, read_bounded};

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// The largest limits file read: a few lines are expected.
pub const MAX_LIMITS_FILE_BYTES: u64 = 1 << 20;

/// What a limits file says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LimitsFile {
    /// `[models.*]` and `[groups]`.
    pub table: LimitTable,
    /// `[default] rpm`.
    pub rpm: Option<u64>,
    /// `[default] tpm`.
    pub tpm: Option<u64>,
    /// `[default] itpm`.
    pub itpm: Option<u64>,
    /// `[default] otpm`.
    pub otpm: Option<u64>,
    /// `window`.
    pub window: Option<LimitWindow>,
    /// `token_count`.
    pub token_count: Option<TokenCount>,
}

/// Why a limits file was not read.
#[derive(Debug)]
pub enum LimitsFileError {
    /// The file could not be opened or read.
    Read {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_LIMITS_FILE_BYTES`].
    TooLarge {
        /// The file.
        path: String,
    },
    /// The file is not TOML, or a field is wrong.
    Invalid {
        /// The file.
        path: String,
        /// The line (from 1) of the problem, when known.
        line: Option<usize>,
        /// The field, as a dotted path (`models.gpt-4o.rpm`); empty when the
        /// text is not TOML.
        field: String,
        /// What is wrong.
        message: String,
    },
}

impl fmt::Display for LimitsFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitsFileError::Read { path, source } => write!(f, "cannot read {path}: {source}"),
            LimitsFileError::TooLarge { path } => write!(
                f,
                "{path}: larger than {MAX_LIMITS_FILE_BYTES} bytes, too large for a limits file"
            ),
            LimitsFileError::Invalid {
                path,
                line,
                field,
                message,
            } => {
                write!(f, "{path}")?;
                if let Some(line) = line {
                    write!(f, " line {line}")?;
                }
                if !field.is_empty() {
                    write!(f, ", {field}")?;
                }
                write!(f, ": {message}")
            }
        }
    }
}

impl std::error::Error for LimitsFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LimitsFileError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl LimitsFile {
    /// Read and parse a limits file.
    pub fn load(path: &Path) -> Result<Self, LimitsFileError> {
        let name = path.display().to_string();
        let text = read_bounded(path, MAX_LIMITS_FILE_BYTES).map_err(|e| match e {
            ReadFailure::Io(source) => LimitsFileError::Read {
                path: name.clone(),
                source,
            },
            ReadFailure::TooLarge => LimitsFileError::TooLarge { path: name.clone() },
        })?;
        Self::parse(&name, &text)
    }

    /// Parse the text of a limits file; `name` is how errors name it.
    pub fn parse(name: &str, text: &str) -> Result<Self, LimitsFileError> {
        let reader = Reader {
            doc: Doc::new(text),
        };
        let invalid = |p: Problem| LimitsFileError::Invalid {
            path: name.to_owned(),
            line: p.line,
            field: p.field,
            message: p.message,
        };
        let doc = reader.doc.parse().map_err(invalid)?;
        reader.document(doc.get_ref()).map_err(invalid)
    }
}

/// The name of the limit shared by every model without one of its own
/// (the `[default]` table, or `--rpm` / `--tpm`).
pub const DEFAULT_LIMIT: &str = "*";

/// Limits beyond the default `rpm` / `tpm`, the way OpenAI keeps them: per
/// model (some families share one), and per organisation or project, so
/// two keys of one project share a budget and two projects' budgets add up
/// (docs/providers.md, "OpenAI: rate-limit headers").
///
/// A request is charged to one *lane*: the first [`ModelLimit`] listing its
/// model (or the default limit), and for the fake provider its key's
/// [`LimitGroup`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LimitTable {
    /// Limits of their own for some models. A model listed in none shares
    /// the default limit with every other such model (the fake provider)
    /// or has a lane of its own at the default limits (batchling's pacer);
    /// a model listed twice uses the first (a limits file refuses it).
    pub models: Vec<ModelLimit>,
    /// The limit groups keys belong to (the fake provider's: a key in
    /// none, and a request without `Authorization: Bearer`, is in its
    /// default group).
    pub groups: Vec<LimitGroup>,
}

/// One limit: requests and tokens per minute, shared by the models listed
/// (for Anthropic, a model class).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLimit {
    /// The limit's name, shown in reports (the fake provider's lane stats,
    /// batchling's summary for a family).
    pub name: String,
    /// The models (the `model` field of a request) that share it.
    pub models: Vec<String>,
    /// Requests per minute; `None` = unlimited.
    pub rpm: Option<u64>,
    /// Tokens per minute; `None` = unlimited.
    pub tpm: Option<u64>,
    /// Input tokens per minute (Anthropic's ITPM); `None` = unlimited.
    pub itpm: Option<u64>,
    /// Output tokens per minute (Anthropic's OTPM); `None` = unlimited.
    pub otpm: Option<u64>,
}

impl ModelLimit {
    /// A limit for one model, named after it.
    pub fn new(model: &str, rpm: Option<u64>, tpm: Option<u64>) -> Self {
        Self::shared(model, &[model], rpm, tpm)
    }

    /// A limit named `name` shared by a family of models.
    pub fn shared(name: &str, models: &[&str], rpm: Option<u64>, tpm: Option<u64>) -> Self {
        ModelLimit {
            name: name.to_owned(),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            rpm,
            tpm,
            itpm: None,
            otpm: None,
        }
    }

    /// The same limit with Anthropic's input and output token limits.
    pub fn with_input_output(self, itpm: Option<u64>, otpm: Option<u64>) -> Self {
        ModelLimit { itpm, otpm, ..self }
    }
}

/// A limit group (an organisation or project) and the API keys in it.
#[derive(Clone, PartialEq, Eq)]
pub struct LimitGroup {
    /// The group's name: the organisation 429 messages name.
    pub name: String,
    /// The keys (what follows `Bearer ` in `Authorization`) that share its
    /// budgets.
    pub keys: Vec<String>,
}

impl LimitGroup {
    /// A group of keys.
    pub fn new(name: &str, keys: &[&str]) -> Self {
        LimitGroup {
            name: name.to_owned(),
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        }
    }
}

impl fmt::Debug for LimitGroup {
    // Keys are secrets even in a mock's config: debug output counts them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitGroup")
            .field("name", &self.name)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// How a request's tokens are counted against a TPM limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TokenCount {
    /// The tokenizer's count: `batchling_core::tokens::estimate(..).total()`,
    /// the input with chat overhead plus the reserved output (the
    /// `max_output` of the estimate: `n` × the request's `max_tokens`,
    /// `max_completion_tokens` or `max_output_tokens`, else a default).
    #[default]
    Exact,
    /// OpenAI's documented rule (docs/providers.md, "Token counting": "the
    /// maximum of max_tokens and the estimated number of tokens based on
    /// the character count of your request"). Our reading, as the issue
    /// that asked for it reads it: the character estimate is *added* to the
    /// reservation, not compared with it, since a request's input and its
    /// output both take budget. So a request costs `ceil(chars / 4)` plus
    /// the same reserved output as [`TokenCount::Exact`], where `chars`
    /// counts the characters (Unicode scalar values) of every string value
    /// in the body except the top-level `model`: message texts, roles and
    /// names, prompts, inputs, instructions, tool definitions.
    OpenAi,
}

impl fmt::Display for TokenCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenCount::Exact => "exact",
            TokenCount::OpenAi => "openai",
        })
    }
}

impl FromStr for TokenCount {
    type Err = String;

    /// Accepts `exact` / `openai`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "exact" => Ok(TokenCount::Exact),
            "openai" => Ok(TokenCount::OpenAi),
            _ => Err(format!(
                "unknown token count {s:?}: expected exact or openai"
            )),
        }
    }
}

/// How RPM and TPM limits are enforced. Both use fixed windows aligned to
/// the instant the server started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitWindow {
    /// 60 s windows, each allowing `rpm` requests and `tpm` tokens.
    #[default]
    Minute,
    /// 1 s windows, each allowing `rpm / 60` requests and `tpm / 60` tokens
    /// (floor, at least 1). OpenAI documents that it may enforce per-minute
    /// limits in shorter quanta like this. A request costing more tokens than
    /// one quantum (but not more than `tpm`) is admitted only into an empty
    /// window, which it then fills.
    Second,
}

impl LimitWindow {
    /// The length of one window.
    pub fn length(self) -> Duration {
        match self {
            LimitWindow::Minute => Duration::from_secs(60),
            LimitWindow::Second => Duration::from_secs(1),
        }
    }

    /// How much of a per-minute limit one window allows.
    pub fn quantum(self, per_minute: u64) -> u64 {
        match self {
            LimitWindow::Minute => per_minute,
            LimitWindow::Second => (per_minute / 60).max(1),
        }
    }
}

impl fmt::Display for LimitWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LimitWindow::Minute => "minute",
            LimitWindow::Second => "second",
        })
    }
}

impl FromStr for LimitWindow {
    type Err = String;

    /// Accepts `minute` / `second` (and `m`, `s`, `min`, `sec`), any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "minute" | "min" | "m" => Ok(LimitWindow::Minute),
            "second" | "sec" | "s" => Ok(LimitWindow::Second),
            _ => Err(format!(
                "unknown limit window {s:?}: expected minute or second"
            )),
        }
    }
}

/// Walks the parsed document, naming what it finds wrong.
struct Reader<'t> {
    doc: Doc<'t>,
}

impl Reader<'_> {
    fn document(&self, doc: &DeTable<'_>) -> Result<LimitsFile, Problem> {
        let mut file = LimitsFile::default();
        for (key, value) in doc {
            let at = key.span().start;
            match key.get_ref().as_ref() {
                "window" => {
                    let text = self.doc.string(value, "window")?;
                    file.window = Some(text.parse().map_err(|e| self.doc.at(at, "window", e))?);
                }
                "token_count" => {
                    let text = self.doc.string(value, "token_count")?;
                    let rule = text
                        .parse()
                        .map_err(|e| self.doc.at(at, "token_count", e))?;
                    file.token_count = Some(rule);
                }
                "default" => {
                    let limit = self.default_limit(value)?;
                    (file.rpm, file.tpm) = (limit.rpm, limit.tpm);
                    (file.itpm, file.otpm) = (limit.itpm, limit.otpm);
                }
                "models" => {
                    let mut family_of = HashMap::new();
                    for item in self.doc.table(value, "models")? {
                        let limit = model_limit(&self.doc, item, "models", &mut family_of)?;
                        file.table.models.push(limit);
                    }
                }
                "groups" => {
                    for item in self.doc.table(value, "groups")? {
                        file.table.groups.push(self.group(item)?);
                    }
                }
                other => {
                    return Err(self.doc.at(
                        at,
                        other,
                        "unknown field: expected window, token_count, default, models or groups",
                    ));
                }
            }
        }
        Ok(file)
    }

    fn default_limit(&self, value: &Spanned<DeValue<'_>>) -> Result<ModelLimit, Problem> {
        let mut limit = ModelLimit::new(DEFAULT_LIMIT, None, None);
        for (key, v) in self.doc.table(value, "default")? {
            let field = format!("default.{}", key.get_ref());
            if !rate(&self.doc, &mut limit, key.get_ref(), v, &field)? {
                return Err(self.doc.at(
                    key.span().start,
                    &field,
                    "expected rpm, tpm, itpm or otpm",
                ));
            }
        }
        Ok(limit)
    }

    fn group(&self, (name, value): Item<'_>) -> Result<LimitGroup, Problem> {
        let field = format!("groups.{}", name.get_ref());
        Ok(LimitGroup {
            name: name.get_ref().to_string(),
            keys: self.doc.strings(value, &field)?,
        })
    }
}

/// The names of the rates a limit sets.
pub(crate) const RATES: &[&str] = &["rpm", "tpm", "itpm", "otpm"];

/// Set the rate `key` names on `limit`; false when `key` is no rate.
pub(crate) fn rate(
    doc: &Doc<'_>,
    limit: &mut ModelLimit,
    key: &str,
    v: &Spanned<DeValue<'_>>,
    field: &str,
) -> Result<bool, Problem> {
    let slot = match key {
        "rpm" => &mut limit.rpm,
        "tpm" => &mut limit.tpm,
        "itpm" => &mut limit.itpm,
        "otpm" => &mut limit.otpm,
        _ => return Ok(false),
    };
    *slot = Some(doc.positive(v, field)?);
    Ok(true)
}

/// One model's (or family's) limit, the `[models.NAME]` entry of a limits
/// file, in the table at field path `parent`. `family_of` maps every model
/// listed so far to its entry's name, so that a model listed twice is refused.
pub(crate) fn model_limit(
    doc: &Doc<'_>,
    (name, value): Item<'_>,
    parent: &str,
    family_of: &mut HashMap<String, String>,
) -> Result<ModelLimit, Problem> {
    let prefix = &format!("{parent}.{}", name.get_ref());
    let mut limit = ModelLimit::new(name.get_ref(), None, None);
    let mut listed_at = (name.span().start, prefix.to_owned());
    for (key, v) in doc.table(value, prefix)? {
        let field = format!("{prefix}.{}", key.get_ref());
        if key.get_ref() == "models" {
            limit.models = doc.strings(v, &field)?;
            listed_at = (key.span().start, field);
        } else if !rate(doc, &mut limit, key.get_ref(), v, &field)? {
            return Err(doc.at(
                key.span().start,
                &field,
                "unknown field: expected rpm, tpm, itpm, otpm or models",
            ));
        }
    }
    let rates = [limit.rpm, limit.tpm, limit.itpm, limit.otpm];
    if rates.iter().all(Option::is_none) {
        return Err(doc.at(
            name.span().start,
            prefix,
            "sets none of rpm, tpm, itpm and otpm",
        ));
    }
    for model in &limit.models {
        if let Some(other) = family_of.insert(model.clone(), limit.name.clone()) {
            let (at, field) = &listed_at;
            return Err(doc.at(
                *at,
                field,
                format!(
                    "the model {model:?} is already in [{parent}.{other}]: a model shares one limit only"
                ),
            ));
        }
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let text = include_str!("limits.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let file = LimitsFile::parse("limits.toml", &text).unwrap();
        assert_eq!(file.window, Some(LimitWindow::Second));
        assert_eq!(file.token_count, Some(TokenCount::OpenAi));
        assert_eq!((file.rpm, file.tpm), (Some(500), Some(30000)));
        assert_eq!(
            file.table.models,
            vec![
                ModelLimit::new("gpt-4o", Some(5000), Some(800_000)),
                ModelLimit::shared(
                    "mini",
                    &["gpt-4o-mini", "gpt-4o-mini-2024-07-18"],
                    Some(1000),
                    None
                ),
                ModelLimit::shared(
                    "sonnet",
                    &["claude-sonnet-4-5", "claude-sonnet-4-5-20250929"],
                    Some(50),
                    None
                )
                .with_input_output(Some(30000), Some(8000)),
            ]
        );
        assert_eq!(
            file.table.groups,
            vec![
                LimitGroup::new("org-a", &["sk-a1", "sk-a2"]),
                LimitGroup::new("org-b", &["sk-b1"]),
            ]
        );
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let err = |text: &str| LimitsFile::parse("l.toml", text).unwrap_err().to_string();
        assert_eq!(
            err("[models.a]\nrpm = 5\ntpm = \"x\"\n"),
            "l.toml line 3, models.a.tpm: expected a positive integer, found the string \"x\""
        );
        assert_eq!(
            err("[default]\nrpm = 0\n"),
            "l.toml line 2, default.rpm: expected a positive integer, found 0"
        );
        assert_eq!(
            err("\n[models.a]\nrpn = 5\n"),
            "l.toml line 3, models.a.rpn: unknown field: expected rpm, tpm, itpm, otpm or models"
        );
        assert_eq!(
            err("[models.a]\nmodels = [\"b\"]\n"),
            "l.toml line 1, models.a: sets none of rpm, tpm, itpm and otpm"
        );
        assert_eq!(
            err("[groups]\norg = \"sk\"\n"),
            "l.toml line 2, groups.org: expected a list of strings, found the string \"sk\""
        );
        assert_eq!(
            err("window = \"hour\"\n"),
            "l.toml line 1, window: unknown limit window \"hour\": expected minute or second"
        );
        assert_eq!(
            err("[models.a]\nrpm = 5\n[models.fam]\nrpm = 9\nmodels = [\"b\", \"a\"]\n"),
            "l.toml line 5, models.fam.models: the model \"a\" is already in [models.a]: a model shares one limit only"
        );
        assert_eq!(
            err("[models.f1]\nmodels = [\"x\"]\nrpm = 1\n[models.x]\ntpm = 3\n"),
            "l.toml line 4, models.x: the model \"x\" is already in [models.f1]: a model shares one limit only"
        );
        assert_eq!(
            err("[models.a]\nrpm = 1.5\n"),
            "l.toml line 2, models.a.rpm: expected a positive integer, found a float"
        );
        assert!(
            err("rpm = ").starts_with("l.toml line 1: invalid TOML"),
            "{}",
            err("rpm = ")
        );
    }
}
