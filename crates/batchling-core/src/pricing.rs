//! Model prices and what tokens cost.
//!
//! A [`Catalog`] maps model names to [`ModelPrice`]s, every price in **USD per
//! 1M tokens**. [`Catalog::builtin`] holds current OpenAI and Anthropic
//! models (from `data/prices.toml`, with the date they were checked);
//! [`Catalog::load_file`] adds or replaces models from a user's file.
//!
//! # Price files
//!
//! Our format, TOML:
//!
//! ```toml
//! checked = "2026-11-29"        # optional: when these prices were checked
//!
//! [models."gpt-4o-mini"]
//! provider = "openai"           # optional
//! input = 0.15                  # required
//! cached_input = 0.075          # optional: cache reads (falls back to input)
//! cache_write = 0.1875          # optional: cache writes, 5-minute (falls back to input)
//! cache_write_1h = 0.30         # optional: cache writes, 1-hour (falls back to cache_write)
//! output = 0.60                 # required (0 for embeddings)
//! batch_input = 0.075           # optional: Batch API (falls back to 50%)
//! batch_output = 0.30           # optional: Batch API (falls back to 50%)
//! checked = "2026-11-29"        # optional: overrides the file's date
//! ```
//!
//! The same structure as JSON (`{"checked": "...", "models": {"gpt-4o-mini":
//! {"input": 0.15, ...}}}`) works too, and so does LiteLLM's
//! `model_prices_and_context_window.json` (per-token prices, converted; its
//! `sample_spec` and entries without `input_cost_per_token` are skipped, its
//! other fields ignored; `cache_creation_input_token_cost_above_1hr` is the
//! 1-hour write price). The format comes from the extension (`.toml`,
//! `.json`), otherwise from the first character (`{` means JSON).
//!
//! Our formats are strict: a price must be a finite, non-negative number and
//! an unknown field is an error, reported with the file, the model and the
//! field (and the line, for TOML). A model in a loaded file replaces the whole
//! entry of the same name; a file with an error changes nothing.
//!
//! # Model names
//!
//! [`Catalog::get`] tries the exact name first, then the longest known name
//! that the model extends by one `-` and a snapshot suffix: a date
//! (`2024-07-18`, `20250929`), four digits (`0125`) or `latest`. So
//! `gpt-4o-mini-2024-07-18` costs what `gpt-4o-mini` costs (never `gpt-4o`),
//! and `gpt-4o-mini-audio-preview` is unknown.
//!
//! # Costs
//!
//! [`TokenCounts::input`] counts every input token; the cached and
//! cache-write tokens are parts of it, billed at their own prices (a 1-hour
//! write at `cache_write_1h`, any other at `cache_write`). Batch
//! costs use the batch prices, or [`BATCH_FALLBACK_FACTOR`] of the standard
//! ones; cached and cache-write tokens get the same discount as input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::usage::Usage;

/// The built-in table (our TOML format).
const BUILTIN: &str = include_str!("../data/prices.toml");

/// How error messages name the built-in table.
const BUILTIN_NAME: &str = "built-in prices";

/// Share of the standard price charged by a Batch API when a model lists no
/// batch price (OpenAI and Anthropic both charge 50%).
pub const BATCH_FALLBACK_FACTOR: f64 = 0.5;

/// Fields of a model entry in our formats.
const MODEL_FIELDS: &[&str] = &[
    "provider",
    "input",
    "cached_input",
    "cache_write",
    "cache_write_1h",
    "output",
    "batch_input",
    "batch_output",
    "checked",
];

/// Prices of one model, in USD per 1M tokens.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelPrice {
    /// Who serves the model (`openai`, `anthropic`, ...), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Input (prompt) tokens.
    pub input: f64,
    /// Input tokens read from the provider's prompt cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    /// Input tokens written to the prompt cache (Anthropic, 5-minute TTL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    /// Input tokens written to the prompt cache with a 1-hour TTL
    /// (Anthropic); falls back to `cache_write`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<f64>,
    /// Output tokens, reasoning included.
    pub output: f64,
    /// Input tokens through the Batch API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_input: Option<f64>,
    /// Output tokens through the Batch API.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_output: Option<f64>,
    /// When these prices were checked (`YYYY-MM-DD`), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked: Option<String>,
}

/// Tokens to price. `cached_input` and `cache_write` are parts of `input`,
/// `cache_write_1h` is a part of `cache_write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenCounts {
    /// All input tokens, cached and cache-write ones included.
    pub input: u64,
    /// Input tokens read from the prompt cache.
    pub cached_input: u64,
    /// Input tokens written to the prompt cache, every lifetime.
    pub cache_write: u64,
    /// Output tokens, reasoning included.
    pub output: u64,
    /// The cache writes with a 1-hour lifetime.
    pub cache_write_1h: u64,
}

impl From<Usage> for TokenCounts {
    fn from(u: Usage) -> Self {
        TokenCounts {
            input: u.input,
            cached_input: u.cached_input,
            cache_write: u.cache_write,
            output: u.output,
            cache_write_1h: u.cache_write_1h,
        }
    }
}

impl ModelPrice {
    /// The Batch API input price: `batch_input`, or
    /// [`BATCH_FALLBACK_FACTOR`] of `input`.
    pub fn batch_input_price(&self) -> f64 {
        self.batch_input
            .unwrap_or(self.input * BATCH_FALLBACK_FACTOR)
    }

    /// The Batch API output price: `batch_output`, or
    /// [`BATCH_FALLBACK_FACTOR`] of `output`.
    pub fn batch_output_price(&self) -> f64 {
        self.batch_output
            .unwrap_or(self.output * BATCH_FALLBACK_FACTOR)
    }

    /// USD for `t` at standard (synchronous API) prices. Cached input is
    /// billed at `cached_input`, cache writes at `cache_write` (each falling
    /// back to `input`) or, for 1-hour writes, `cache_write_1h` (falling back
    /// to the 5-minute price), the rest of the input at `input`.
    pub fn cost_online(&self, t: &TokenCounts) -> f64 {
        self.cost_at(t, self.input, self.output, 1.0)
    }

    /// USD for `t` through the Batch API: batch prices, or
    /// [`BATCH_FALLBACK_FACTOR`] of the standard ones. Cached input and cache
    /// writes get the same discount as input.
    pub fn cost_batch(&self, t: &TokenCounts) -> f64 {
        let input = self.batch_input_price();
        let discount = if self.input > 0.0 {
            input / self.input
        } else {
            BATCH_FALLBACK_FACTOR
        };
        self.cost_at(t, input, self.batch_output_price(), discount)
    }

    fn cost_at(&self, t: &TokenCounts, input: f64, output: f64, discount: f64) -> f64 {
        let cached = self.cached_input.map_or(input, |p| p * discount);
        let write = self.cache_write.map_or(input, |p| p * discount);
        let write_1h = self.cache_write_1h.map_or(write, |p| p * discount);
        let plain = t
            .input
            .saturating_sub(t.cached_input)
            .saturating_sub(t.cache_write);
        // Parts that exceed their whole (an odd report) are clamped.
        let long = t.cache_write_1h.min(t.cache_write);
        let short = t.cache_write - long;
        (plain as f64 * input
            + t.cached_input as f64 * cached
            + short as f64 * write
            + long as f64 * write_1h
            + t.output as f64 * output)
            / 1e6
    }
}

/// Why a price file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    /// The file could not be read.
    #[error("cannot read price file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid: bad syntax, a bad or unknown field.
    #[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        /// The file, as given.
        path: String,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// What is wrong, naming the model and field at fault.
        message: String,
    },
}

/// Model names and their prices, sorted by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    models: BTreeMap<String, ModelPrice>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Catalog {
        Catalog::default()
    }

    /// The built-in prices (`data/prices.toml`).
    pub fn builtin() -> Catalog {
        let mut c = Catalog::new();
        // A unit test proves the built-in table parses.
        c.load_as(BUILTIN_NAME, BUILTIN, Format::Toml)
            .expect("the built-in price table is valid");
        c
    }

    /// Add or replace the models of a price file (our TOML or JSON, or
    /// LiteLLM's JSON). Returns how many models it held. On error the catalog
    /// is unchanged.
    pub fn load_file(&mut self, path: &Path) -> Result<usize, PriceError> {
        let bytes = std::fs::read(path).map_err(|source| PriceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path.display().to_string();
        let text = String::from_utf8(bytes).map_err(|e| PriceError::Parse {
            path: name.clone(),
            line: None,
            message: format!(
                "not UTF-8 text (bad byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        })?;
        self.load_as(&name, &text, Format::detect(path, &text))
    }

    /// Like [`Catalog::load_file`] for text already read; `name` is how
    /// errors name it, and its extension (if `.toml` or `.json`) gives the
    /// format, else the text is sniffed.
    pub fn load_str(&mut self, name: &str, text: &str) -> Result<usize, PriceError> {
        self.load_as(name, text, Format::detect(Path::new(name), text))
    }

    fn load_as(&mut self, name: &str, text: &str, format: Format) -> Result<usize, PriceError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let entries = match format {
            Format::Toml => parse_toml(name, text)?,
            Format::Json => parse_json(name, text)?,
        };
        let n = entries.len();
        self.models.extend(entries);
        Ok(n)
    }

    /// Add or replace one model; returns the price it replaced.
    pub fn insert(&mut self, model: impl Into<String>, price: ModelPrice) -> Option<ModelPrice> {
        self.models.insert(model.into(), price)
    }

    /// The price of `model` and the catalog name that matched: the exact
    /// name, else the longest known name that `model` extends with `-` and a
    /// snapshot suffix (see the module docs).
    pub fn get(&self, model: &str) -> Option<(&str, &ModelPrice)> {
        if let Some((k, p)) = self.models.get_key_value(model) {
            return Some((k.as_str(), p));
        }
        // Rightmost split first: the longest prefix wins.
        model
            .match_indices('-')
            .map(|(i, _)| i)
            .rev()
            .filter(|&i| is_snapshot_suffix(&model[i + 1..]))
            .find_map(|i| self.models.get_key_value(&model[..i]))
            .map(|(k, p)| (k.as_str(), p))
    }

    /// Every model and its price, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ModelPrice)> {
        self.models.iter().map(|(k, p)| (k.as_str(), p))
    }

    /// How many models the catalog holds.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether the catalog holds no model.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// The distinct `checked` dates of the models, sorted.
    pub fn checked_dates(&self) -> Vec<&str> {
        let mut d: Vec<&str> = self
            .models
            .values()
            .filter_map(|p| p.checked.as_deref())
            .collect();
        d.sort_unstable();
        d.dedup();
        d
    }
}

/// A suffix that marks a snapshot of a model rather than another model:
/// `2024-07-18`, `20250929`, `0125` or `latest`.
fn is_snapshot_suffix(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    match b.len() {
        4 | 8 => digits(0..b.len()),
        10 => digits(0..4) && b[4] == b'-' && digits(5..7) && b[7] == b'-' && digits(8..10),
        _ => s == "latest",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Toml,
    Json,
}

impl Format {
    /// By extension (`.toml`, `.json`), else `{` first means JSON.
    fn detect(path: &Path, text: &str) -> Format {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("toml") => Format::Toml,
            Some("json") => Format::Json,
            _ if text
                .trim_start_matches('\u{feff}')
                .trim_start()
                .starts_with('{') =>
            {
                Format::Json
            }
            _ => Format::Toml,
        }
    }
}

// ---------------------------------------------------------------------------
// Our format: TOML and JSON become one small tree, validated once.
// ---------------------------------------------------------------------------

/// A value of a price file, whatever its syntax.
enum Val {
    Num(f64),
    Str(String),
    /// A TOML date, accepted for `checked`.
    Date(String),
    Table(Vec<Item>),
    /// Anything else, by type name.
    Other(&'static str),
}

/// A key, its value and (TOML only) the key's line.
struct Item {
    key: String,
    line: Option<usize>,
    val: Val,
}

impl Val {
    fn describe(&self) -> String {
        match self {
            Val::Num(n) => n.to_string(),
            Val::Str(s) => format!("the string {s:?}"),
            Val::Date(d) => format!("the date {d}"),
            Val::Table(_) => "a table".into(),
            Val::Other(t) => format!("a {t}"),
        }
    }
}

fn parse_err(path: &str, line: Option<usize>, message: String) -> PriceError {
    PriceError::Parse {
        path: path.to_string(),
        line,
        message,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn parse_toml(name: &str, text: &str) -> Result<Vec<(String, ModelPrice)>, PriceError> {
    let doc = toml::de::DeTable::parse(text).map_err(|e| {
        parse_err(
            name,
            e.span().map(|s| line_of(text, s.start)),
            format!("invalid TOML: {}", e.message().trim()),
        )
    })?;
    parse_ours(name, toml_items(text, doc.get_ref()))
}

fn toml_items(text: &str, table: &toml::de::DeTable<'_>) -> Vec<Item> {
    table
        .iter()
        .map(|(k, v)| Item {
            key: k.get_ref().to_string(),
            line: Some(line_of(text, k.span().start)),
            val: toml_val(text, v.get_ref()),
        })
        .collect()
}

fn toml_val(text: &str, v: &toml::de::DeValue<'_>) -> Val {
    use toml::de::DeValue;
    match v {
        DeValue::String(s) => Val::Str(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .map_or(Val::Other("too large integer"), |n| Val::Num(n as f64)),
        DeValue::Float(f) => f
            .as_str()
            .parse::<f64>()
            .map_or(Val::Other("float"), Val::Num),
        DeValue::Boolean(_) => Val::Other("boolean"),
        DeValue::Datetime(d) => Val::Date(d.to_string()),
        DeValue::Array(_) => Val::Other("array"),
        DeValue::Table(t) => Val::Table(toml_items(text, t)),
    }
}

fn json_val(v: serde_json::Value) -> Val {
    use serde_json::Value;
    match v {
        Value::Number(n) => n.as_f64().map_or(Val::Other("number"), Val::Num),
        Value::String(s) => Val::Str(s),
        Value::Object(m) => Val::Table(
            m.into_iter()
                .map(|(key, v)| Item {
                    key,
                    line: None,
                    val: json_val(v),
                })
                .collect(),
        ),
        Value::Bool(_) => Val::Other("boolean"),
        Value::Array(_) => Val::Other("array"),
        Value::Null => Val::Other("null"),
    }
}

fn parse_ours(name: &str, items: Vec<Item>) -> Result<Vec<(String, ModelPrice)>, PriceError> {
    let mut checked = None;
    let mut models = None;
    for it in items {
        match it.key.as_str() {
            "checked" => checked = Some(date(name, None, &it)?),
            "models" => match it.val {
                Val::Table(t) => models = Some(t),
                other => {
                    return Err(parse_err(
                        name,
                        it.line,
                        format!("\"models\" must be a table, found {}", other.describe()),
                    ));
                }
            },
            other => {
                return Err(parse_err(
                    name,
                    it.line,
                    format!("unknown field {other:?} (expected \"checked\" or \"models\")"),
                ));
            }
        }
    }
    let models = models.ok_or_else(|| {
        parse_err(
            name,
            None,
            "no \"models\" table: nothing to price (see `batchling prices`)".into(),
        )
    })?;
    models
        .into_iter()
        .map(|m| {
            let price = model_price(name, &m, checked.as_deref())?;
            Ok((m.key, price))
        })
        .collect()
}

fn model_price(name: &str, m: &Item, checked: Option<&str>) -> Result<ModelPrice, PriceError> {
    let model = &m.key;
    let Val::Table(fields) = &m.val else {
        return Err(parse_err(
            name,
            m.line,
            format!(
                "model {model:?} must be a table, found {}",
                m.val.describe()
            ),
        ));
    };
    let mut p = ModelPrice {
        provider: None,
        input: f64::NAN,
        cached_input: None,
        cache_write: None,
        cache_write_1h: None,
        output: f64::NAN,
        batch_input: None,
        batch_output: None,
        checked: checked.map(str::to_string),
    };
    let (mut have_input, mut have_output) = (false, false);
    for f in fields {
        match f.key.as_str() {
            "input" => {
                p.input = price_field(name, model, f)?;
                have_input = true;
            }
            "output" => {
                p.output = price_field(name, model, f)?;
                have_output = true;
            }
            _ => other_model_field(name, model, f, &mut p)?,
        }
    }
    for (have, field) in [(have_input, "input"), (have_output, "output")] {
        if !have {
            return Err(parse_err(
                name,
                m.line,
                format!("model {model:?}: missing field {field:?}"),
            ));
        }
    }
    Ok(p)
}

/// A model's field other than the two required prices.
fn other_model_field(
    name: &str,
    model: &str,
    f: &Item,
    p: &mut ModelPrice,
) -> Result<(), PriceError> {
    match f.key.as_str() {
        "provider" => match &f.val {
            Val::Str(s) => p.provider = Some(s.clone()),
            other => {
                return Err(parse_err(
                    name,
                    f.line,
                    format!(
                        "model {model:?}: field \"provider\" must be a string, found {}",
                        other.describe()
                    ),
                ));
            }
        },
        "cached_input" => p.cached_input = Some(price_field(name, model, f)?),
        "cache_write" => p.cache_write = Some(price_field(name, model, f)?),
        "cache_write_1h" => p.cache_write_1h = Some(price_field(name, model, f)?),
        "batch_input" => p.batch_input = Some(price_field(name, model, f)?),
        "batch_output" => p.batch_output = Some(price_field(name, model, f)?),
        "checked" => p.checked = Some(date(name, Some(model), f)?),
        other => {
            return Err(parse_err(
                name,
                f.line,
                format!(
                    "model {model:?}: unknown field {other:?} (expected one of {})",
                    MODEL_FIELDS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// A price in USD per 1M tokens: finite and not negative.
fn price_field(name: &str, model: &str, f: &Item) -> Result<f64, PriceError> {
    match f.val {
        Val::Num(n) if n.is_finite() && n >= 0.0 => Ok(n),
        ref other => Err(parse_err(
            name,
            f.line,
            format!(
                "model {model:?}: field {:?} must be a non-negative number (USD per 1M tokens), found {}",
                f.key,
                other.describe()
            ),
        )),
    }
}

fn date(name: &str, model: Option<&str>, it: &Item) -> Result<String, PriceError> {
    match &it.val {
        Val::Str(s) | Val::Date(s) => Ok(s.clone()),
        other => {
            let at = model.map(|m| format!("model {m:?}: ")).unwrap_or_default();
            Err(parse_err(
                name,
                it.line,
                format!(
                    "{at}field \"checked\" must be a date string such as \"2026-11-29\", found {}",
                    other.describe()
                ),
            ))
        }
    }
}

// ---------------------------------------------------------------------------
// JSON: ours (a "models" object) or LiteLLM's per-token table.
// ---------------------------------------------------------------------------

fn parse_json(name: &str, text: &str) -> Result<Vec<(String, ModelPrice)>, PriceError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        parse_err(
            name,
            (e.line() > 0).then_some(e.line()),
            format!("invalid JSON: {e}"),
        )
    })?;
    let serde_json::Value::Object(obj) = v else {
        return Err(parse_err(
            name,
            None,
            "expected a JSON object of models".into(),
        ));
    };
    if obj.get("models").is_some_and(serde_json::Value::is_object) {
        let Val::Table(items) = json_val(serde_json::Value::Object(obj)) else {
            unreachable!("an object converts to a table")
        };
        return parse_ours(name, items);
    }
    let entries: Vec<_> = obj
        .iter()
        .filter_map(|(k, v)| litellm_entry(k, v))
        .collect();
    if entries.is_empty() {
        return Err(parse_err(
            name,
            None,
            "no model prices found: expected our format (a \"models\" object) or LiteLLM's \
             model_prices_and_context_window.json (entries with \"input_cost_per_token\")"
                .into(),
        ));
    }
    Ok(entries)
}

/// One entry of LiteLLM's table, or `None` to skip it.
fn litellm_entry(model: &str, v: &serde_json::Value) -> Option<(String, ModelPrice)> {
    if model == "sample_spec" {
        return None;
    }
    let obj = v.as_object()?;
    // Per token -> per 1M tokens, rounded to a billionth of a dollar so that
    // 7.5e-08 reads back as 0.075. Checked after scaling: 1e300 per token
    // would be an infinite price.
    let per_m = |key: &str| {
        obj.get(key)
            .and_then(serde_json::Value::as_f64)
            .map(|n| (n * 1e15).round() / 1e9)
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    let input = per_m("input_cost_per_token")?;
    Some((
        model.to_string(),
        ModelPrice {
            provider: obj
                .get("litellm_provider")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string),
            input,
            cached_input: per_m("cache_read_input_token_cost"),
            cache_write: per_m("cache_creation_input_token_cost"),
            cache_write_1h: per_m("cache_creation_input_token_cost_above_1hr"),
            output: per_m("output_cost_per_token").unwrap_or(0.0),
            batch_input: per_m("input_cost_per_token_batches"),
            batch_output: per_m("output_cost_per_token_batches"),
            checked: None,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_parses_and_is_dated() {
        let mut c = Catalog::new();
        let n = c.load_as(BUILTIN_NAME, BUILTIN, Format::Toml).unwrap();
        assert!((30..=60).contains(&n), "{n} built-in models");
        assert_eq!(c.checked_dates(), vec!["2026-11-29"]);
        for (name, p) in c.iter() {
            assert!(p.provider.is_some(), "{name} has a provider");
            assert!(
                p.batch_input.is_some() && p.batch_output.is_some(),
                "{name} batch"
            );
        }
    }

    #[test]
    fn snapshot_suffixes() {
        for s in ["2024-07-18", "20250929", "0125", "latest"] {
            assert!(is_snapshot_suffix(s), "{s}");
        }
        for s in [
            "mini",
            "18",
            "2024-07",
            "audio-preview",
            "2024-07-1x",
            "",
            "4",
        ] {
            assert!(!is_snapshot_suffix(s), "{s}");
        }
    }

    #[test]
    fn litellm_prices_that_overflow_are_skipped() {
        // Found by the `price_file` fuzz target's finite-price check: 1e300
        // per token was an infinite price per 1M tokens.
        let mut c = Catalog::new();
        let text = r#"{"big":{"input_cost_per_token":1e300},"ok":{"input_cost_per_token":1e-7,"output_cost_per_token":1e300}}"#;
        assert_eq!(c.load_str("p.json", text).unwrap(), 1);
        let (_, ok) = c.get("ok").unwrap();
        assert_eq!((ok.input, ok.output), (0.1, 0.0));
    }

    #[test]
    fn lines_are_one_based() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }
}
