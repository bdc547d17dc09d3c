//! The file's tables into plain data, each field checked on its own; what
//! needs the whole file (names, chains) is `check`'s.

use std::collections::{BTreeMap, HashMap};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::limits::{self, DEFAULT_LIMIT, LimitsFile, ModelLimit, RATES};
use crate::pricing::ModelPrice;
use crate::tomlfile::{Doc, Item, Problem, closest};

use super::{
    Chains, GroupConf, KeyRef, MAX_ATTEMPTS_CAP, MAX_CONTEXT_WINDOW, MAX_PRICE, MAX_PRICE_RATIO,
    ModelConf, ProviderConf, ProviderKind, RouteConf, ServeConf, join,
};

const TOP: &[&str] = &["providers", "groups", "models", "routes", "serve"];
const SERVE_FIELDS: &[&str] = &[
    "auth_keys_env",
    "concurrency",
    "timeout_secs",
    "max_response_mb",
    "lenient",
];

/// The largest `[serve]` concurrency, `timeout_secs` and `max_response_mb`.
const MAX_SERVE_CONCURRENCY: u64 = 100_000;
const MAX_TIMEOUT_SECS: f64 = 86_400.0;
const MAX_RESPONSE_MB: u64 = 4096;
const PROVIDER_FIELDS: &[&str] = &["kind", "base_url", "api_version", "version", "beta"];
const GROUP_FIELDS: &[&str] = &["provider", "keys", "limits"];
const KEY_FIELDS: &[&str] = &["id", "env"];
const MODEL_FIELDS: &[&str] = &["provider", "model", "groups", "context_window", "price"];
const PRICE_FIELDS: &[&str] = &[
    "input",
    "output",
    "cached_input",
    "cache_write",
    "cache_write_1h",
    "batch_input",
    "batch_output",
];
const ROUTE_FIELDS: &[&str] = &[
    "chain",
    "context_window_chain",
    "content_policy_chain",
    "max_attempts",
    "max_attempts_per_target",
    "max_price_ratio",
    "spill",
];

/// The longest name of a provider, group, model, route or key id.
const MAX_NAME: usize = 256;

/// Where fields are, by dotted path, for errors found later.
#[derive(Debug, Default)]
pub(super) struct Spots(HashMap<String, usize>);

impl Spots {
    fn put(&mut self, doc: &Doc<'_>, field: String, offset: usize) {
        self.0.insert(field, doc.line(offset));
    }

    pub(super) fn line(&self, field: &str) -> Option<usize> {
        self.0.get(field).copied()
    }
}

/// The file's four sections.
pub(super) struct Parsed {
    pub(super) providers: BTreeMap<String, ProviderConf>,
    pub(super) groups: BTreeMap<String, GroupConf>,
    pub(super) models: BTreeMap<String, ModelConf>,
    pub(super) routes: BTreeMap<String, RouteConf>,
    pub(super) serve: Option<ServeConf>,
    pub(super) spots: Spots,
}

pub(super) fn document(doc: &Doc<'_>, table: &DeTable<'_>) -> Result<Parsed, Problem> {
    let mut p = Parsed {
        providers: BTreeMap::new(),
        groups: BTreeMap::new(),
        models: BTreeMap::new(),
        routes: BTreeMap::new(),
        serve: None,
        spots: Spots::default(),
    };
    let mut reader = Reader {
        doc,
        spots: &mut p.spots,
    };
    for (key, value) in table {
        let section = key.get_ref().as_ref();
        match section {
            "providers" => {
                for item in doc.table(value, section)? {
                    let conf = reader.provider(item)?;
                    p.providers.insert(conf.name.clone(), conf);
                }
            }
            "groups" => {
                for item in doc.table(value, section)? {
                    let conf = reader.group(item)?;
                    p.groups.insert(conf.name.clone(), conf);
                }
            }
            "models" => {
                for item in doc.table(value, section)? {
                    let conf = reader.model(item)?;
                    p.models.insert(conf.name.clone(), conf);
                }
            }
            "routes" => {
                for item in doc.table(value, section)? {
                    let conf = reader.route(item)?;
                    p.routes.insert(conf.name.clone(), conf);
                }
            }
            "serve" => p.serve = Some(reader.serve(key.span().start, value)?),
            "upstream" | "auth_keys_env" => {
                return Err(doc.at(
                    key.span().start,
                    section,
                    "this belongs to `batchling serve`'s older [[upstream]] form, which is not a routes config: name providers, groups, models and routes instead (README: \"One config file\"), and put auth_keys_env under [serve]",
                ));
            }
            other => return Err(unknown(doc, key.span().start, other, other, TOP)),
        }
    }
    Ok(p)
}

/// An unknown field, with the closest known one when it is a likely typo.
pub(super) fn unknown(
    doc: &Doc<'_>,
    at: usize,
    field: &str,
    word: &str,
    known: &[&str],
) -> Problem {
    let hint = closest(word, known.iter().copied())
        .map(|k| format!(" (did you mean {k}?)"))
        .unwrap_or_default();
    doc.at(
        at,
        field,
        format!("unknown field{hint}: expected {}", one_of(known)),
    )
}

/// `a, b or c`.
pub(super) fn one_of(names: &[&str]) -> String {
    listed(names, "or")
}

/// `a, b and c`.
pub(super) fn all_of(names: &[&str]) -> String {
    listed(names, "and")
}

fn listed(names: &[&str], word: &str) -> String {
    match names.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} {word} {last}", rest.join(", ")),
        None => String::new(),
    }
}

struct Reader<'d, 't> {
    doc: &'d Doc<'t>,
    spots: &'d mut Spots,
}

impl Reader<'_, '_> {
    /// A section's entry: its name checked, its field path, its fields.
    fn entry<'v>(
        &mut self,
        section: &str,
        (name, value): Item<'v>,
    ) -> Result<(String, String, &'v DeTable<'v>), Problem> {
        let prefix = join(section, name.get_ref());
        let text = name.get_ref().as_ref();
        if text.is_empty() || text.len() > MAX_NAME || text.chars().any(char::is_control) {
            return Err(self.doc.at(
                name.span().start,
                &prefix,
                format!("a name must be 1 to {MAX_NAME} bytes, without control characters"),
            ));
        }
        self.spots.put(self.doc, prefix.clone(), name.span().start);
        let fields = self.doc.table(value, &prefix)?;
        for (key, _) in fields {
            let field = join(&prefix, key.get_ref());
            self.spots.put(self.doc, field, key.span().start);
        }
        Ok((text.to_owned(), prefix, fields))
    }

    fn missing(&self, prefix: &str, field: &str, why: &str) -> Problem {
        let line = self.spots.line(prefix);
        Problem {
            line,
            field: format!("{prefix}.{field}"),
            message: format!("missing field{why}"),
        }
    }

    fn provider(&mut self, item: Item<'_>) -> Result<ProviderConf, Problem> {
        let (name, prefix, fields) = self.entry("providers", item)?;
        let doc = self.doc;
        let mut conf = ProviderConf {
            line: self.spots.line(&prefix).unwrap_or(1),
            name,
            kind: ProviderKind::OpenAi,
            base_url: String::new(),
            api_version: None,
            version: None,
            beta: Vec::new(),
        };
        let mut kind = None;
        for (key, v) in fields {
            let field = join(&prefix, key.get_ref());
            match key.get_ref().as_ref() {
                "kind" => kind = Some(self.kind(v, &field)?),
                "base_url" => conf.base_url = base_url(doc, v, &field)?,
                "api_version" => conf.api_version = Some(date_version(doc, v, &field, true)?),
                "version" => conf.version = Some(date_version(doc, v, &field, false)?),
                "beta" => conf.beta = betas(doc, v, &field)?,
                other => {
                    return Err(unknown(
                        doc,
                        key.span().start,
                        &field,
                        other,
                        PROVIDER_FIELDS,
                    ));
                }
            }
        }
        conf.kind = kind.ok_or_else(|| {
            self.missing(
                &prefix,
                "kind",
                &format!(": expected {}", one_of(&kind_names())),
            )
        })?;
        self.kind_fields(&mut conf, &prefix)?;
        Ok(conf)
    }

    fn kind(&self, v: &Spanned<DeValue<'_>>, field: &str) -> Result<ProviderKind, Problem> {
        let text = self.doc.string(v, field)?;
        text.parse().map_err(|()| {
            let names = kind_names();
            let hint = closest(text, names.iter().copied())
                .map(|k| format!(" (did you mean {k}?)"))
                .unwrap_or_default();
            self.doc.at(
                v.span().start,
                field,
                format!("unknown kind {text:?}{hint}: expected {}", one_of(&names)),
            )
        })
    }

    /// The fields only some kinds take, and the default base URL.
    fn kind_fields(&self, conf: &mut ProviderConf, prefix: &str) -> Result<(), Problem> {
        let only = |field: &str, kind: ProviderKind| {
            let field = join(prefix, field);
            Problem {
                line: self.spots.line(&field),
                message: format!("only a provider of kind = \"{kind}\" takes this field"),
                field,
            }
        };
        if conf.api_version.is_some() && conf.kind != ProviderKind::Azure {
            return Err(only("api_version", ProviderKind::Azure));
        }
        if conf.kind != ProviderKind::Anthropic {
            if conf.version.is_some() {
                return Err(only("version", ProviderKind::Anthropic));
            }
            if !conf.beta.is_empty() {
                return Err(only("beta", ProviderKind::Anthropic));
            }
        }
        if conf.base_url.is_empty() {
            conf.base_url = match conf.kind.default_base_url() {
                Some(url) => url.to_owned(),
                None => {
                    let example = match conf.kind {
                        ProviderKind::Azure => "https://RESOURCE.openai.azure.com/openai/v1",
                        _ => "http://127.0.0.1:8000/v1",
                    };
                    let why = format!(
                        ": a provider of kind = \"{}\" has no default base_url (such as {example})",
                        conf.kind
                    );
                    return Err(self.missing(prefix, "base_url", &why));
                }
            };
        }
        Ok(())
    }

    fn group(&mut self, item: Item<'_>) -> Result<GroupConf, Problem> {
        let (name, prefix, fields) = self.entry("groups", item)?;
        let mut conf = GroupConf {
            line: self.spots.line(&prefix).unwrap_or(1),
            name,
            provider: String::new(),
            keys: Vec::new(),
            limits: LimitsFile::default(),
        };
        let mut has_keys = false;
        for (key, v) in fields {
            let field = join(&prefix, key.get_ref());
            match key.get_ref().as_ref() {
                "provider" => conf.provider = self.reference(v, &field)?,
                "keys" => {
                    conf.keys = self.keys(v, &field)?;
                    has_keys = true;
                }
                "limits" => conf.limits = self.limits(v, &field)?,
                other => {
                    return Err(unknown(
                        self.doc,
                        key.span().start,
                        &field,
                        other,
                        GROUP_FIELDS,
                    ));
                }
            }
        }
        if conf.provider.is_empty() {
            return Err(self.missing(&prefix, "provider", ": the name of a [providers.*] table"));
        }
        if !has_keys {
            return Err(self.missing(
                &prefix,
                "keys",
                ": a group holds at least one key, as { id = \"...\", env = \"VARIABLE\" }",
            ));
        }
        Ok(conf)
    }

    /// A string naming another table.
    fn reference(&self, v: &Spanned<DeValue<'_>>, field: &str) -> Result<String, Problem> {
        let text = self.doc.string(v, field)?;
        if text.is_empty() {
            return Err(self.doc.at(v.span().start, field, "the name is empty"));
        }
        Ok(text.to_owned())
    }

    fn keys(&mut self, v: &Spanned<DeValue<'_>>, field: &str) -> Result<Vec<KeyRef>, Problem> {
        let DeValue::Array(items) = v.get_ref() else {
            return Err(self.doc.found(v, field, "a list of keys", v.get_ref()));
        };
        if items.is_empty() {
            return Err(self.doc.at(
                v.span().start,
                field,
                "a group holds at least one key, as { id = \"...\", env = \"VARIABLE\" }",
            ));
        }
        let mut keys = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let prefix = format!("{field}[{i}]");
            self.spots.put(self.doc, prefix.clone(), item.span().start);
            keys.push(self.key(item, &prefix)?);
        }
        Ok(keys)
    }

    fn key(&mut self, item: &Spanned<DeValue<'_>>, prefix: &str) -> Result<KeyRef, Problem> {
        let table = match item.get_ref() {
            DeValue::Table(t) => t,
            other => {
                let expected = "a key as { id = \"...\", env = \"VARIABLE\" }";
                return Err(self.doc.found(item, prefix, expected, other));
            }
        };
        let (mut id, mut env) = (None, None);
        for (key, v) in table {
            let field = format!("{prefix}.{}", key.get_ref());
            self.spots.put(self.doc, field.clone(), key.span().start);
            match key.get_ref().as_ref() {
                "id" => id = Some(self.id(v, &field)?),
                "env" => env = Some(self.env(v, &field)?),
                other => {
                    return Err(unknown(
                        self.doc,
                        key.span().start,
                        &field,
                        other,
                        KEY_FIELDS,
                    ));
                }
            }
        }
        let env = env.ok_or_else(|| {
            self.missing(prefix, "env", ": the environment variable holding the key")
        })?;
        Ok(KeyRef {
            id: id.unwrap_or_else(|| env.clone()),
            env,
        })
    }

    fn id(&self, v: &Spanned<DeValue<'_>>, field: &str) -> Result<String, Problem> {
        let text = self.doc.string(v, field)?;
        if text.is_empty() || text.len() > MAX_NAME || text.chars().any(char::is_control) {
            return Err(self.doc.at(
                v.span().start,
                field,
                format!("an id must be 1 to {MAX_NAME} bytes, without control characters"),
            ));
        }
        Ok(text.to_owned())
    }

    fn env(&self, v: &Spanned<DeValue<'_>>, field: &str) -> Result<String, Problem> {
        let text = self.doc.string(v, field)?;
        let valid = (1..=MAX_NAME).contains(&text.len())
            && !text.starts_with(|c: char| c.is_ascii_digit())
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            // Not repeated: a mistyped value may be a key after all.
            return Err(self.doc.at(
                v.span().start,
                field,
                "not the name of an environment variable (letters, digits and _, not starting with a digit, such as OPENAI_API_KEY)",
            ));
        }
        Ok(text.to_owned())
    }

    /// `limits`: rates at the top are the default for the group's models,
    /// tables are one model's (or a family's) limits, as in a limits file.
    fn limits(&mut self, v: &Spanned<DeValue<'_>>, field: &str) -> Result<LimitsFile, Problem> {
        let doc = self.doc;
        let mut file = LimitsFile::default();
        let mut default = ModelLimit::new(DEFAULT_LIMIT, None, None);
        let mut family_of = HashMap::new();
        for item in doc.table(v, field)? {
            let (key, value) = item;
            let name = key.get_ref().as_ref();
            let at = key.span().start;
            self.spots.put(doc, join(field, name), at);
            if matches!(value.get_ref(), DeValue::Table(_)) {
                let limit = limits::model_limit(doc, item, field, &mut family_of)?;
                file.table.models.push(limit);
            } else if !limits::rate(doc, &mut default, name, value, &join(field, name))? {
                let hint = closest(name, RATES.iter().copied())
                    .map(|k| format!(" (did you mean {k}?)"))
                    .unwrap_or_default();
                return Err(doc.at(
                    at,
                    &join(field, name),
                    format!("unknown field{hint}: expected rpm, tpm, itpm, otpm (the default of the group's models) or a model's limits, such as \"gpt-4o-mini\" = {{ rpm = 5000 }}"),
                ));
            }
        }
        (file.rpm, file.tpm) = (default.rpm, default.tpm);
        (file.itpm, file.otpm) = (default.itpm, default.otpm);
        Ok(file)
    }

    fn model(&mut self, item: Item<'_>) -> Result<ModelConf, Problem> {
        let (name, prefix, fields) = self.entry("models", item)?;
        let doc = self.doc;
        let mut conf = ModelConf {
            line: self.spots.line(&prefix).unwrap_or(1),
            model: name.clone(),
            name,
            provider: String::new(),
            groups: Vec::new(),
            context_window: None,
            price: None,
        };
        for (key, v) in fields {
            let field = join(&prefix, key.get_ref());
            match key.get_ref().as_ref() {
                "provider" => conf.provider = self.reference(v, &field)?,
                "model" => conf.model = self.reference(v, &field)?,
                "groups" => conf.groups = self.list(v, &field)?,
                "context_window" => conf.context_window = Some(context_window(doc, v, &field)?),
                "price" => conf.price = Some(self.price(v, &field)?),
                other => return Err(unknown(doc, key.span().start, &field, other, MODEL_FIELDS)),
            }
        }
        if conf.provider.is_empty() {
            return Err(self.missing(&prefix, "provider", ": the name of a [providers.*] table"));
        }
        if conf.groups.is_empty() {
            return Err(self.missing(
                &prefix,
                "groups",
                ": the limit groups whose keys send to this model, such as groups = [\"proj-main\"]",
            ));
        }
        Ok(conf)
    }

    /// A list of names, each entry's line kept as `field[i]`.
    fn list(&mut self, v: &Spanned<DeValue<'_>>, field: &str) -> Result<Vec<String>, Problem> {
        let names = self.doc.string_list(v, field)?;
        if let DeValue::Array(items) = v.get_ref() {
            for (i, item) in items.iter().enumerate() {
                self.spots
                    .put(self.doc, format!("{field}[{i}]"), item.span().start);
            }
        }
        Ok(names)
    }

    fn price(&mut self, v: &Spanned<DeValue<'_>>, field: &str) -> Result<ModelPrice, Problem> {
        let doc = self.doc;
        let mut p = ModelPrice {
            provider: None,
            input: f64::NAN,
            cached_input: None,
            cache_write: None,
            cache_write_1h: None,
            output: f64::NAN,
            batch_input: None,
            batch_output: None,
            checked: None,
        };
        for (key, value) in doc.table(v, field)? {
            let name = key.get_ref().as_ref();
            let field = join(field, name);
            let slot = match name {
                "input" => &mut p.input,
                "output" => &mut p.output,
                "cached_input" => p.cached_input.insert(0.0),
                "cache_write" => p.cache_write.insert(0.0),
                "cache_write_1h" => p.cache_write_1h.insert(0.0),
                "batch_input" => p.batch_input.insert(0.0),
                "batch_output" => p.batch_output.insert(0.0),
                other => return Err(unknown(doc, key.span().start, &field, other, PRICE_FIELDS)),
            };
            *slot = usd(doc, value, &field)?;
        }
        for (price, name) in [(p.input, "input"), (p.output, "output")] {
            if price.is_nan() {
                let line = Some(doc.line(v.span().start));
                return Err(Problem {
                    line,
                    field: join(field, name),
                    message: "missing field: a price gives input and output (USD per 1M tokens)"
                        .into(),
                });
            }
        }
        Ok(p)
    }

    /// `[serve]`: `batchling serve`'s own settings (other commands ignore
    /// them).
    fn serve(&mut self, at: usize, v: &Spanned<DeValue<'_>>) -> Result<ServeConf, Problem> {
        let doc = self.doc;
        let mut conf = ServeConf {
            line: doc.line(at),
            ..ServeConf::default()
        };
        for (key, v) in doc.table(v, "serve")? {
            let field = join("serve", key.get_ref());
            self.spots.put(doc, field.clone(), key.span().start);
            let bounded = |max: u64, what: &str| -> Result<u64, Problem> {
                let n = doc.positive(v, &field)?;
                if n > max {
                    let message = format!("at most {max} {what}, found {n}");
                    return Err(doc.at(v.span().start, &field, message));
                }
                Ok(n)
            };
            match key.get_ref().as_ref() {
                "auth_keys_env" => conf.auth_keys_env = Some(self.env(v, &field)?),
                "concurrency" => {
                    conf.concurrency = Some(bounded(MAX_SERVE_CONCURRENCY, "requests in flight")?);
                }
                "max_response_mb" => {
                    conf.max_response_mb = Some(bounded(MAX_RESPONSE_MB, "MiB")?);
                }
                "timeout_secs" => {
                    let t = doc.number(v, &field)?;
                    if !(t > 0.0 && t <= MAX_TIMEOUT_SECS) {
                        let message = format!(
                            "expected a timeout from 0 (not included) to {MAX_TIMEOUT_SECS} seconds, found {t}"
                        );
                        return Err(doc.at(v.span().start, &field, message));
                    }
                    conf.timeout_secs = Some(t);
                }
                "lenient" => conf.lenient = boolean(doc, v, &field)?,
                other => return Err(unknown(doc, key.span().start, &field, other, SERVE_FIELDS)),
            }
        }
        Ok(conf)
    }

    fn route(&mut self, item: Item<'_>) -> Result<RouteConf, Problem> {
        let (name, prefix, fields) = self.entry("routes", item)?;
        let doc = self.doc;
        let mut conf = RouteConf {
            line: self.spots.line(&prefix).unwrap_or(1),
            name,
            chain: Vec::new(),
            context_window_chain: Vec::new(),
            content_policy_chain: Vec::new(),
            max_attempts: None,
            max_attempts_per_target: None,
            max_price_ratio: None,
            spill: false,
            expanded: Chains::default(),
        };
        for (key, v) in fields {
            let field = join(&prefix, key.get_ref());
            match key.get_ref().as_ref() {
                "chain" => conf.chain = self.list(v, &field)?,
                "context_window_chain" => conf.context_window_chain = self.list(v, &field)?,
                "content_policy_chain" => conf.content_policy_chain = self.list(v, &field)?,
                "max_attempts" => conf.max_attempts = Some(attempts(doc, v, &field)?),
                "max_attempts_per_target" => {
                    conf.max_attempts_per_target = Some(attempts(doc, v, &field)?);
                }
                "max_price_ratio" => conf.max_price_ratio = Some(price_ratio(doc, v, &field)?),
                "spill" => conf.spill = boolean(doc, v, &field)?,
                other => return Err(unknown(doc, key.span().start, &field, other, ROUTE_FIELDS)),
            }
        }
        if conf.chain.is_empty() {
            let field = join(&prefix, "chain");
            return Err(Problem {
                line: self.spots.line(&field).or(self.spots.line(&prefix)),
                field,
                message: "a route needs a chain of at least one target, such as chain = [\"mini\"]"
                    .into(),
            });
        }
        Ok(conf)
    }
}

fn kind_names() -> Vec<&'static str> {
    ProviderKind::ALL.iter().map(|k| k.as_str()).collect()
}

/// An `http(s)` URL without credentials, query or fragment (a key in a URL
/// would end up in logs).
fn base_url(doc: &Doc<'_>, v: &Spanned<DeValue<'_>>, field: &str) -> Result<String, Problem> {
    let text = doc.string(v, field)?;
    let bad = |why: &str| doc.at(v.span().start, field, why.to_owned());
    let rest = (text.strip_prefix("https://"))
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| {
            bad("expected an http:// or https:// URL, such as https://api.openai.com/v1")
        })?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty()
        || text.len() > 2048
        || text.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad("not a URL: a host is needed, without spaces"));
    }
    if host.contains('@') || text.contains(['?', '#']) {
        return Err(bad(
            "a base_url takes no credentials, query or fragment: keys come from the group's env variables",
        ));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// `YYYY-MM-DD`, and for Azure's `api_version` an optional `-preview`.
fn date_version(
    doc: &Doc<'_>,
    v: &Spanned<DeValue<'_>>,
    field: &str,
    preview: bool,
) -> Result<String, Problem> {
    let text = doc.string(v, field)?;
    let date = if preview {
        text.strip_suffix("-preview").unwrap_or(text)
    } else {
        text
    };
    let b = date.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let ok = b.len() == 10
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10);
    if !ok {
        let example = if preview {
            "such as \"2024-10-21\" or \"2025-04-01-preview\""
        } else {
            "such as \"2023-06-01\""
        };
        return Err(doc.at(
            v.span().start,
            field,
            format!("expected a version date {example}, found {text:?}"),
        ));
    }
    Ok(text.to_owned())
}

/// `anthropic-beta` values: header tokens.
fn betas(doc: &Doc<'_>, v: &Spanned<DeValue<'_>>, field: &str) -> Result<Vec<String>, Problem> {
    let betas = doc.string_list(v, field)?;
    let token = |s: &str| {
        s.len() <= 128
            && (s.bytes()).all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    match betas.iter().find(|s| !token(s)) {
        Some(bad) => Err(doc.at(
            v.span().start,
            field,
            format!("{bad:?} is not a beta name (letters, digits, -, _ and .)"),
        )),
        None => Ok(betas),
    }
}

fn context_window(doc: &Doc<'_>, v: &Spanned<DeValue<'_>>, field: &str) -> Result<u64, Problem> {
    let n = doc.positive(v, field)?;
    if n > MAX_CONTEXT_WINDOW {
        return Err(doc.at(
            v.span().start,
            field,
            format!(
                "{n} tokens is beyond any model's context window (at most {MAX_CONTEXT_WINDOW})"
            ),
        ));
    }
    Ok(n)
}

fn attempts(doc: &Doc<'_>, v: &Spanned<DeValue<'_>>, field: &str) -> Result<u32, Problem> {
    let n = doc.positive(v, field)?;
    u32::try_from(n)
        .ok()
        .filter(|&n| n <= MAX_ATTEMPTS_CAP)
        .ok_or_else(|| {
            doc.at(
                v.span().start,
                field,
                format!("at most {MAX_ATTEMPTS_CAP} attempts, found {n}"),
            )
        })
}

fn boolean(doc: &Doc<'_>, v: &Spanned<DeValue<'_>>, field: &str) -> Result<bool, Problem> {
    match v.get_ref() {
        DeValue::Boolean(b) => Ok(*b),
        other => Err(doc.found(v, field, "true or false", other)),
    }
}

fn price_ratio(doc: &Doc<'_>, v: &Spanned<DeValue<'_>>, field: &str) -> Result<f64, Problem> {
    let r = doc.number(v, field)?;
    if !(1.0..=MAX_PRICE_RATIO).contains(&r) {
        return Err(doc.at(
            v.span().start,
            field,
            format!("expected a ratio from 1 to {MAX_PRICE_RATIO} (a fallback may cost at most this many times the primary), found {r}"),
        ));
    }
    Ok(r)
}

/// A price in USD per 1M tokens.
fn usd(doc: &Doc<'_>, v: &Spanned<DeValue<'_>>, field: &str) -> Result<f64, Problem> {
    let p = doc.number(v, field)?;
    if !(0.0..=MAX_PRICE).contains(&p) {
        return Err(doc.at(
            v.span().start,
            field,
            format!("expected a price from 0 to {MAX_PRICE} USD per 1M tokens, found {p}"),
        ));
    }
    Ok(p)
}
