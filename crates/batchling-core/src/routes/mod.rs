//! The routes config (`--config FILE`): providers, limit groups of keys,
//! models and the routes that chain them, in one TOML file.
//!
//! ```toml
//! [providers.openai]             # kind: openai | openai-compatible | azure | anthropic
//! kind = "openai"                # base_url: the kind's default
//!
//! [providers.claude]
//! kind = "anthropic"
//! version = "2023-06-01"         # optional: anthropic-version
//!
//! [groups.proj-main]             # one budget shared by all its keys
//! provider = "openai"
//! keys = [{ id = "oa-1", env = "OPENAI_KEY_1" }, { id = "oa-2", env = "OPENAI_KEY_2" }]
//! limits = { rpm = 5000, "gpt-4o-mini" = { rpm = 10000, tpm = 2000000 } }
//!
//! [groups.ws-batch]
//! provider = "claude"
//! keys = [{ id = "ant-1", env = "ANTHROPIC_KEY_1" }]
//!
//! [models.mini]                  # a target: the name chains use
//! provider = "openai"
//! model = "gpt-4o-mini"          # the provider's own name (Azure: the deployment)
//! groups = ["proj-main"]
//! context_window = 128000
//! price = { input = 0.15, output = 0.60, cached_input = 0.075 }   # USD per 1M tokens
//!
//! [models.haiku]
//! provider = "claude"
//! model = "claude-haiku-4-5"     # priced from the built-in catalog
//! groups = ["ws-batch"]
//!
//! [routes.gpt-4o-mini]           # input lines whose body.model is "gpt-4o-mini"
//! chain = ["mini", "haiku"]
//! max_attempts = 6
//! max_attempts_per_target = 3
//! max_price_ratio = 10.0
//!
//! [serve]                        # batchling serve's own settings
//! auth_keys_env = "BATCHLING_CLIENT_KEYS"
//! concurrency = 64               # in flight across every batch
//! ```
//!
//! [`RoutesConfig::load`] reads a file (at most [`MAX_ROUTES_FILE_BYTES`]);
//! every error names the file, the line and the field (a dotted path:
//! `groups.proj-main.keys[1].env`). What is refused and what only warns is
//! listed in the README ("One config file: providers, limit groups,
//! models, routes"). Keys are never in the file: it names environment
//! variables, read by [`RoutesConfig::resolve_keys`]; a string that looks
//! like a key is refused without being repeated.

mod check;
mod parse;
mod secret;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::limits::LimitsFile;
use crate::pricing::{Catalog, ModelPrice};
use crate::tomlfile::{Doc, Problem, ReadFailure, read_bounded};

/// The largest routes config read: a few hundred lines are expected.
pub const MAX_ROUTES_FILE_BYTES: u64 = 1 << 20;

/// The most targets a chain holds once the routes it names are expanded.
pub const MAX_CHAIN_TARGETS: usize = 32;

/// How deep routes may name routes (a route naming a route naming a route
/// is a depth of 3).
pub const MAX_ROUTE_DEPTH: usize = 8;

/// The largest `max_attempts` and `max_attempts_per_target`.
pub const MAX_ATTEMPTS_CAP: u32 = 100;

/// Attempts per target when a route does not say.
pub const DEFAULT_ATTEMPTS_PER_TARGET: u32 = 3;

/// The largest `max_price_ratio`.
pub const MAX_PRICE_RATIO: f64 = 1000.0;

/// The largest price accepted, in USD per 1M tokens (today's dearest model
/// costs a few hundred).
pub const MAX_PRICE: f64 = 10_000.0;

/// The largest `context_window`, in tokens.
pub const MAX_CONTEXT_WINDOW: u64 = 100_000_000;

/// A routes config, checked: every name it uses is defined, every chain
/// expanded, no loop.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutesConfig {
    /// How errors and warnings name the file.
    pub path: String,
    /// `[providers.NAME]`, by name.
    pub providers: BTreeMap<String, ProviderConf>,
    /// `[groups.NAME]`, by name.
    pub groups: BTreeMap<String, GroupConf>,
    /// `[models.NAME]` (targets), by name.
    pub models: BTreeMap<String, ModelConf>,
    /// `[routes.NAME]`, by name (the `model` of the input lines they take).
    pub routes: BTreeMap<String, RouteConf>,
    /// `[serve]`: `batchling serve`'s own settings, when given.
    pub serve: Option<ServeConf>,
    /// What is allowed but probably wrong, in the order found.
    pub warnings: Vec<Warning>,
    /// A digest of the file's text (xxh3), so a resume can tell the file
    /// changed since a journal's last run.
    pub digest: u64,
}

/// The wire protocol of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProviderKind {
    /// OpenAI's API (`Authorization: Bearer`).
    OpenAi,
    /// A server speaking OpenAI's API elsewhere (vLLM, Groq, a proxy):
    /// its `base_url` is required.
    OpenAiCompatible,
    /// Azure OpenAI (`api-key` header, deployment names): its `base_url`
    /// is required.
    Azure,
    /// Anthropic's Messages API (`x-api-key`, `anthropic-version`).
    Anthropic,
}

impl ProviderKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::OpenAi,
        ProviderKind::OpenAiCompatible,
        ProviderKind::Azure,
        ProviderKind::Anthropic,
    ];

    /// The name the file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::OpenAiCompatible => "openai-compatible",
            ProviderKind::Azure => "azure",
            ProviderKind::Anthropic => "anthropic",
        }
    }

    /// The base URL used when the file gives none; `None` when the kind has
    /// no single server.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::OpenAiCompatible | ProviderKind::Azure => None,
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = ();

    /// The names [`ProviderKind::as_str`] gives, exactly.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or(())
    }
}

/// `[providers.NAME]`: where requests go and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConf {
    /// The table's name.
    pub name: String,
    /// `kind`.
    pub kind: ProviderKind,
    /// `base_url`, or the kind's default.
    pub base_url: String,
    /// `api_version` (Azure): the `api-version` query parameter of the
    /// deployment URLs; `None` = the v1 API's URLs.
    pub api_version: Option<String>,
    /// `version` (Anthropic): the `anthropic-version` header; `None` = the
    /// client's default (`2023-06-01`).
    pub version: Option<String>,
    /// `beta` (Anthropic): `anthropic-beta` values.
    pub beta: Vec<String>,
    /// The line of the table's header.
    pub line: usize,
}

/// `[groups.NAME]`: a limit group, the keys that share one budget (an
/// OpenAI project, an Anthropic workspace, an Azure resource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConf {
    /// The table's name.
    pub name: String,
    /// `provider`: the name of a `[providers.*]` table.
    pub provider: String,
    /// `keys`, never empty.
    pub keys: Vec<KeyRef>,
    /// `limits`: the group's limits per model (and a default for its other
    /// models), as a limits file gives them; `window`, `token_count` and
    /// `groups` are never set.
    pub limits: LimitsFile,
    /// The line of the table's header.
    pub line: usize,
}

/// One key of a group: which environment variable holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// `id`, unique in the file (the environment variable's name when not
    /// given): how journals, logs and errors name the key.
    pub id: String,
    /// `env`: the environment variable holding the key.
    pub env: String,
}

/// `[models.NAME]`: a target, one model of one provider behind one or more
/// limit groups.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConf {
    /// The table's name: what chains name.
    pub name: String,
    /// `provider`.
    pub provider: String,
    /// `model`: the provider's name for it (Azure: the deployment), by
    /// default the table's name.
    pub model: String,
    /// `groups`: the limit groups whose keys send to it; several are a key
    /// pool whose budgets add up. Never empty; all of `provider`.
    pub groups: Vec<String>,
    /// `context_window`, in tokens.
    pub context_window: Option<u64>,
    /// `price`; `None` = the price catalog's price of `model`.
    pub price: Option<ModelPrice>,
    /// The line of the table's header.
    pub line: usize,
}

/// `[routes.NAME]`: what answers an input line whose `body.model` is the
/// route's name.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConf {
    /// The table's name.
    pub name: String,
    /// `chain` as written: targets and routes, in order; never empty.
    pub chain: Vec<String>,
    /// `context_window_chain` as written: tried only after a context-window
    /// failure.
    pub context_window_chain: Vec<String>,
    /// `content_policy_chain` as written: tried only after a content-policy
    /// refusal; empty = a refusal is the answer.
    pub content_policy_chain: Vec<String>,
    /// `max_attempts`: HTTP attempts per line over all its chains.
    pub max_attempts: Option<u32>,
    /// `max_attempts_per_target`.
    pub max_attempts_per_target: Option<u32>,
    /// `max_price_ratio`: a fallback may cost at most this many times the
    /// primary (the chain's first target), per line.
    pub max_price_ratio: Option<f64>,
    /// `spill`: while the primary's limits have no room for a line now,
    /// it may go to a later target of the chain that has (within
    /// `max_price_ratio`), so the chain's limits add up; off by default, as
    /// a fallback may cost more than waiting.
    pub spill: bool,
    /// The three chains with the routes they name expanded: target names
    /// only, each at most once per chain.
    pub expanded: Chains,
    /// The line of the table's header.
    pub line: usize,
}

impl RouteConf {
    /// Attempts on one target: `max_attempts_per_target`, or
    /// [`DEFAULT_ATTEMPTS_PER_TARGET`].
    pub fn attempts_per_target(&self) -> u32 {
        self.max_attempts_per_target
            .unwrap_or(DEFAULT_ATTEMPTS_PER_TARGET)
    }

    /// Attempts per line over all its chains: `max_attempts`, or by default
    /// enough for every target of the main chain to get its attempts.
    pub fn attempts(&self) -> u32 {
        self.max_attempts.unwrap_or_else(|| {
            let targets = u32::try_from(self.expanded.chain.len()).unwrap_or(u32::MAX);
            self.attempts_per_target().saturating_mul(targets.max(1))
        })
    }
}

/// A route's chains as target names (`[models.*]` names).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chains {
    /// The main chain; its first target is the primary.
    pub chain: Vec<String>,
    /// After a context-window failure.
    pub context_window: Vec<String>,
    /// After a content-policy refusal.
    pub content_policy: Vec<String>,
}

/// `[serve]`: what `batchling serve` takes besides the routes (other
/// commands ignore it).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServeConf {
    /// `auth_keys_env`: the variable holding the client keys
    /// (comma-separated).
    pub auth_keys_env: Option<String>,
    /// `concurrency`: most requests in flight across every batch.
    pub concurrency: Option<u64>,
    /// `timeout_secs`: per attempt.
    pub timeout_secs: Option<f64>,
    /// `max_response_mb`: the largest answer read, in MiB.
    pub max_response_mb: Option<u64>,
    /// `lenient`: Anthropic providers leave out (or clamp) a field of an
    /// OpenAI chat line they cannot take, with a warning in the answer.
    pub lenient: bool,
    /// The line of the table's header.
    pub line: usize,
}

/// What a file allows but is probably wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file.
    pub path: String,
    /// The line, when one place is at fault.
    pub line: Option<usize>,
    /// The field, as a dotted path.
    pub field: String,
    /// What is probably wrong, and what to do.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        located(f, &self.path, self.line, &self.field)?;
        write!(f, ": {}", self.message)
    }
}

fn located(
    f: &mut fmt::Formatter<'_>,
    path: &str,
    line: Option<usize>,
    field: &str,
) -> fmt::Result {
    write!(f, "{path}")?;
    if let Some(line) = line {
        write!(f, " line {line}")?;
    }
    if !field.is_empty() {
        write!(f, ", {field}")?;
    }
    Ok(())
}

/// Why a routes config was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum RoutesError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_ROUTES_FILE_BYTES`].
    #[error("{path}: larger than {MAX_ROUTES_FILE_BYTES} bytes, too large for a routes config")]
    TooLarge {
        /// The file.
        path: String,
    },
    /// The file is not TOML, or a field is wrong (never quoting a key).
    #[error("{}", Located(path, *line, field, message))]
    Invalid {
        /// The file.
        path: String,
        /// The line (from 1), when known.
        line: Option<usize>,
        /// The field, as a dotted path; empty when the text is not TOML.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// `file line N, field: message`.
struct Located<'a>(&'a str, Option<usize>, &'a str, &'a str);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        located(f, self.0, self.1, self.2)?;
        write!(f, ": {}", self.3)
    }
}

/// A key's environment variable that is not set (or empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingKey {
    /// The config file.
    pub path: String,
    /// The group holding the key.
    pub group: String,
    /// The key's id.
    pub id: String,
    /// The environment variable.
    pub env: String,
    /// Set, but to nothing.
    pub empty: bool,
}

impl fmt::Display for MissingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.empty { "is empty" } else { "is not set" };
        write!(
            f,
            "{}: the environment variable {} {state} (key {} of group {})",
            self.path, self.env, self.id, self.group
        )
    }
}

/// Every key whose variable is missing, in the file's group order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct MissingKeys(pub Vec<MissingKey>);

/// A key read from the environment. Its `Debug` hides the secret; wrap the
/// secret in the caller's own secret type at once.
#[derive(Clone, PartialEq, Eq)]
pub struct ResolvedKey {
    /// The key's id.
    pub id: String,
    /// Its group.
    pub group: String,
    /// The key itself.
    pub secret: String,
}

impl fmt::Debug for ResolvedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedKey")
            .field("id", &self.id)
            .field("group", &self.group)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// A target's price and where it came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TargetPrice<'a> {
    /// USD per 1M tokens.
    pub price: &'a ModelPrice,
    /// Where: the config's `price`, or the catalog entry matched.
    pub from: PriceFrom<'a>,
}

/// Where a target's price comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceFrom<'a> {
    /// The model's `price` in the config.
    Config,
    /// The catalog's entry of this name (maybe a snapshot's base name).
    Catalog(&'a str),
}

impl RoutesConfig {
    /// Read and check a routes config.
    pub fn load(path: &Path) -> Result<Self, RoutesError> {
        let name = path.display().to_string();
        let text = read_bounded(path, MAX_ROUTES_FILE_BYTES).map_err(|e| match e {
            ReadFailure::Io(source) => RoutesError::Read {
                path: name.clone(),
                source,
            },
            ReadFailure::TooLarge => RoutesError::TooLarge { path: name.clone() },
        })?;
        Self::parse(&text, &name)
    }

    /// Parse and check the text of a routes config; `name` is how errors
    /// name the file.
    pub fn parse(text: &str, name: &str) -> Result<Self, RoutesError> {
        let invalid = |p: Problem| RoutesError::Invalid {
            path: name.to_owned(),
            line: p.line,
            field: p.field,
            message: p.message,
        };
        let doc = Doc::new(text);
        let table = doc.parse().map_err(invalid)?;
        secret::refuse_keys(&doc, table.get_ref()).map_err(invalid)?;
        let parsed = parse::document(&doc, table.get_ref()).map_err(invalid)?;
        let mut config = RoutesConfig {
            path: name.to_owned(),
            providers: parsed.providers,
            groups: parsed.groups,
            models: parsed.models,
            routes: parsed.routes,
            serve: parsed.serve,
            warnings: Vec::new(),
            digest: xxhash_rust::xxh3::xxh3_64(text.as_bytes()),
        };
        let warnings = check::check(&mut config, &parsed.spots).map_err(invalid)?;
        config.warnings = warnings.into_iter().map(|p| config.warning(p)).collect();
        Ok(config)
    }

    fn warning(&self, p: Problem) -> Warning {
        Warning {
            path: self.path.clone(),
            line: p.line,
            field: p.field,
            message: p.message,
        }
    }

    /// The route for input lines whose `body.model` is `model`.
    pub fn route_for(&self, model: &str) -> Option<&RouteConf> {
        self.routes.get(model)
    }

    /// The chains a line whose `body.model` is `model` goes through: its
    /// route's, else, when `model` names a target, that target alone (no
    /// fallback); `None` when the config knows neither.
    pub fn chains_for(&self, model: &str) -> Option<Cow<'_, Chains>> {
        if let Some(route) = self.routes.get(model) {
            return Some(Cow::Borrowed(&route.expanded));
        }
        self.models.get(model).map(|_| {
            Cow::Owned(Chains {
                chain: vec![model.to_owned()],
                ..Chains::default()
            })
        })
    }

    /// The limit groups a target sends through, in its `groups` order.
    pub fn groups_of<'a>(&'a self, target: &str) -> impl Iterator<Item = &'a GroupConf> + 'a {
        let names = self.models.get(target).map(|m| m.groups.as_slice());
        (names.unwrap_or_default().iter()).filter_map(|g| self.groups.get(g))
    }

    /// The provider a target sends to.
    pub fn provider_of(&self, target: &str) -> Option<&ProviderConf> {
        let model = self.models.get(target)?;
        self.providers.get(&model.provider)
    }

    /// A target's price: its `price` in the config, else the catalog's
    /// price of its provider model name; `None` when neither knows it.
    pub fn price<'a>(&'a self, target: &str, catalog: &'a Catalog) -> Option<TargetPrice<'a>> {
        let model = self.models.get(target)?;
        if let Some(price) = &model.price {
            return Some(TargetPrice {
                price,
                from: PriceFrom::Config,
            });
        }
        let (name, price) = catalog.get(&model.model)?;
        Some(TargetPrice {
            price,
            from: PriceFrom::Catalog(name),
        })
    }

    /// Warnings that need the price catalog: targets without a price, and
    /// fallbacks dearer than their primary (never used under the route's
    /// `max_price_ratio`, or unbounded without one).
    pub fn price_warnings(&self, catalog: &Catalog) -> Vec<Warning> {
        check::price_warnings(self, catalog)
            .into_iter()
            .map(|p| self.warning(p))
            .collect()
    }

    /// Every key's secret, read with `getenv` (`|k| std::env::var(k).ok()`),
    /// by group then key, in the file's order within a group. Fails with
    /// every key whose variable is not set or empty; never holds a value in
    /// an error.
    pub fn resolve_keys(
        &self,
        getenv: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<ResolvedKey>, MissingKeys> {
        let mut keys = Vec::new();
        let mut missing = Vec::new();
        for group in self.groups.values() {
            for key in &group.keys {
                match getenv(&key.env) {
                    Some(secret) if !secret.is_empty() => keys.push(ResolvedKey {
                        id: key.id.clone(),
                        group: group.name.clone(),
                        secret,
                    }),
                    value => missing.push(MissingKey {
                        path: self.path.clone(),
                        group: group.name.clone(),
                        id: key.id.clone(),
                        env: key.env.clone(),
                        empty: value.is_some(),
                    }),
                }
            }
        }
        if missing.is_empty() {
            Ok(keys)
        } else {
            Err(MissingKeys(missing))
        }
    }
}

/// A name as a dotted path's segment: bare when TOML allows, else quoted.
pub(crate) fn segment(name: &str) -> Cow<'_, str> {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if bare {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("{name:?}"))
    }
}

/// `prefix.name`, the name quoted when it must be.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    format!("{prefix}.{}", segment(name))
}
