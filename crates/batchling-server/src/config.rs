//! What the server is set up with: where it listens, where it keeps data,
//! which client keys it accepts, and the upstreams batches run on.
//!
//! The simple case comes from flags (one upstream for every model); several
//! upstreams chosen by model come from a TOML file:
//!
//! ```toml
//! auth_keys_env = "BATCHLING_CLIENT_KEYS"   # comma-separated client keys
//!
//! [[upstream]]
//! name = "local"
//! base_url = "http://127.0.0.1:8081/v1"
//! models = ["smollm2*", "llama-*"]          # exact names, or a prefix and *
//! concurrency = 8
//!
//! [[upstream]]
//! name = "openai"
//! base_url = "https://api.openai.com/v1"
//! api_key_env = "OPENAI_API_KEY"
//! models = ["*"]                            # everything else
//! rpm = 5000
//! tpm = 2000000
//! limits = "openai-limits.toml"             # per model and family (`batchling run --limits`)
//!
//! [[upstream]]
//! name = "claude"
//! kind = "anthropic"                        # Anthropic's Messages API
//! base_url = "https://api.anthropic.com"
//! api_key_env = "ANTHROPIC_API_KEY"         # required for this kind
//! models = ["claude-*"]                     # this kind's default
//! anthropic_version = "2023-06-01"          # the default
//! lenient = false                           # true: drop untranslatable fields, with warnings
//! headers = { "anthropic-beta" = "..." }    # passed through
//! ```
//!
//! A `limits` path is read relative to the config file's directory.
//!
//! The same `--config` also takes the routes config every command reads
//! (`batchling_core::routes`: providers, limit groups of keys, models,
//! routes with fallbacks), with serve's own settings in a `[serve]` table:
//!
//! ```toml
//! [serve]
//! auth_keys_env = "BATCHLING_CLIENT_KEYS"
//! concurrency = 64                          # in flight across every batch
//!
//! [providers.local]
//! kind = "openai-compatible"
//! base_url = "http://127.0.0.1:8081/v1"
//! # ... [groups.*], [models.*], [routes.*] as for `batchling run --config`
//! ```
//!
//! [`load_any`] tells the two forms apart; a file with both is refused.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use batchling_core::Endpoint;
use batchling_core::routes::{MAX_ROUTES_FILE_BYTES, MissingKeys, RoutesConfig, RoutesError};
use batchling_providers::ApiKey;
use serde::Deserialize;
use toml::Spanned;

/// The default upload cap (OpenAI's Batch API limit).
pub const DEFAULT_MAX_UPLOAD: u64 = 200 * 1024 * 1024;

/// The server's settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where files, batches and their journals live.
    pub data_dir: PathBuf,
    /// Accepted client keys; empty only with `no_auth`.
    pub auth_keys: Vec<ApiKey>,
    /// Accept any client (one shared owner).
    pub no_auth: bool,
    /// Upstreams, tried in order: the first whose `models` match wins.
    /// Empty when `routes` is given.
    pub upstreams: Vec<UpstreamConfig>,
    /// A routes config every batch runs on instead of `upstreams`.
    pub routes: Option<RoutesSetup>,
    /// Largest accepted upload, in bytes.
    pub max_upload_bytes: u64,
    /// The completion window batches get (OpenAI's: 24 hours).
    pub completion_window: Duration,
    /// Batches running at once; later ones wait their turn.
    pub max_running_batches: usize,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Keep an ended batch's journal (`DATA_DIR/batches/<id>/journal`:
    /// every attempt and, over a routes config, who answered each line),
    /// for `batchling status` and `export`; by default it is removed once
    /// the result files are written.
    pub keep_journals: bool,
    /// Bounds on what one client may send or hold.
    pub http: HttpLimits,
}

/// Bounds on what one HTTP client may send or hold, so a slow, idle or
/// hostile client costs a bounded amount and others are served meanwhile.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Largest JSON request body (`POST /v1/batches`), in bytes (413 beyond).
    pub max_json_bytes: usize,
    /// Most parts in an upload's multipart body (400 beyond).
    pub max_form_parts: usize,
    /// Largest request head (request line and headers), in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Most headers in a request (431 beyond).
    pub max_headers: usize,
    /// Time a client has to send a request's head, also while a kept-alive
    /// connection is idle; the connection is closed after it.
    pub header_read_timeout: Duration,
    /// Time a client has to send a whole request body (408 after it).
    pub body_timeout: Duration,
    /// Longest wait for the next piece of a request body (408 after it).
    pub body_idle_timeout: Duration,
    /// After an answer given before the body was read (401, 413, ...), how
    /// much more of the body is read and discarded, so a client still
    /// sending reads the answer instead of a reset connection...
    pub linger_bytes: u64,
    /// ... and for how long at most.
    pub linger_time: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_json_bytes: 1 << 20,
            max_form_parts: 8,
            max_header_bytes: 32 << 10,
            max_headers: 64,
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(900),
            body_idle_timeout: Duration::from_secs(30),
            linger_bytes: 256 << 20,
            linger_time: Duration::from_secs(10),
        }
    }
}

impl ServeConfig {
    /// Settings with defaults for everything but the data directory and the
    /// upstreams.
    pub fn new(data_dir: PathBuf, upstreams: Vec<UpstreamConfig>) -> Self {
        ServeConfig {
            data_dir,
            auth_keys: Vec::new(),
            no_auth: false,
            upstreams,
            routes: None,
            max_upload_bytes: DEFAULT_MAX_UPLOAD,
            completion_window: Duration::from_secs(24 * 3600),
            max_running_batches: 64,
            max_attempts: 6,
            keep_journals: false,
            http: HttpLimits::default(),
        }
    }
}

/// The API an upstream speaks. Only the client is built from it: the
/// runner, pacer and journal treat every upstream alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamKind {
    /// OpenAI's API, or a server compatible with it (every OpenAI batch
    /// endpoint).
    #[default]
    OpenAi,
    /// Anthropic's Messages API: `/v1/chat/completions` lines translated to
    /// Messages and the answers back to `chat.completion`s, `/v1/messages`
    /// lines forwarded as they are.
    Anthropic,
}

impl UpstreamKind {
    /// Its name in a config file (`kind = "..."`).
    pub fn name(self) -> &'static str {
        match self {
            UpstreamKind::OpenAi => "openai",
            UpstreamKind::Anthropic => "anthropic",
        }
    }

    /// Whether an upstream of this kind can answer lines for `endpoint`.
    pub fn speaks(self, endpoint: Endpoint) -> bool {
        match self {
            UpstreamKind::OpenAi => Endpoint::ALL.contains(&endpoint),
            UpstreamKind::Anthropic => {
                matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Messages)
            }
        }
    }
}

/// One upstream server.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Its name in metrics and logs.
    pub name: String,
    /// The API it speaks.
    pub kind: UpstreamKind,
    /// `anthropic-version` (kind anthropic; `None`: the client's default).
    pub anthropic_version: Option<String>,
    /// Kind anthropic: leave out (or clamp) a field of an OpenAI chat line
    /// that Anthropic cannot take, with a warning in the answer, instead of
    /// failing the line.
    pub lenient: bool,
    /// Base URL: including `/v1` for OpenAI (as its SDKs take it), with or
    /// without it for Anthropic.
    pub base_url: String,
    /// Its API key, if it needs one.
    pub api_key: Option<ApiKey>,
    /// Model patterns it serves: exact names, a prefix ending in `*`, or `*`.
    pub models: Vec<String>,
    /// Requests per minute (else learned from headers).
    pub rpm: Option<u64>,
    /// Tokens per minute (else learned from headers).
    pub tpm: Option<u64>,
    /// Limits per model and family, and defaults under `rpm` / `tpm`
    /// (`--limits FILE`); `rpm` and `tpm` win over its `[default]`.
    pub limits_file: Option<batchling_core::limits::LimitsFile>,
    /// Most requests in flight, across all batches.
    pub concurrency: usize,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Extra headers for every request.
    pub headers: Vec<(String, String)>,
    /// The largest answer read (`--max-response-mb`, `max_response_mb`).
    pub max_response_bytes: u64,
}

impl UpstreamConfig {
    /// An upstream serving every model, with defaults.
    pub fn new(name: &str, base_url: &str) -> Self {
        UpstreamConfig {
            name: name.into(),
            kind: UpstreamKind::OpenAi,
            anthropic_version: None,
            lenient: false,
            base_url: base_url.into(),
            api_key: None,
            models: vec!["*".into()],
            rpm: None,
            tpm: None,
            limits_file: None,
            concurrency: batchling_engine::DEFAULT_CONCURRENCY,
            timeout: Duration::from_secs(600),
            headers: Vec::new(),
            max_response_bytes: batchling_providers::openai::DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// An Anthropic upstream serving every model, with defaults.
    pub fn anthropic(name: &str, base_url: &str) -> Self {
        UpstreamConfig {
            kind: UpstreamKind::Anthropic,
            ..UpstreamConfig::new(name, base_url)
        }
    }

    /// Whether this upstream serves `model` (a request without a model goes
    /// to the first upstream with `*`).
    pub fn serves(&self, model: Option<&str>) -> bool {
        self.models
            .iter()
            .any(|p| match (p.strip_suffix('*'), model) {
                (Some(prefix), Some(m)) => m.starts_with(prefix),
                (Some(""), None) => true,
                (None, Some(m)) => p == m,
                _ => false,
            })
    }
}

/// A config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It is not valid TOML of the expected shape.
    #[error("config file {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, with the line when known.
        message: String,
    },
    /// A routes config that could not be loaded (its error names the
    /// file, line and field).
    #[error(transparent)]
    Routes(#[from] RoutesError),
    /// A routes config's key variables that are not set.
    #[error(transparent)]
    Keys(#[from] MissingKeys),
}

/// A routes config with its keys, read once, and serve's settings for its
/// clients (`[serve]`, else the defaults given).
#[derive(Debug, Clone)]
pub struct RoutesSetup {
    /// The config, checked.
    pub config: RoutesConfig,
    /// (key id, group, key), in the config's order.
    pub keys: Vec<(String, String, ApiKey)>,
    /// Most requests in flight across every batch.
    pub concurrency: usize,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// The largest answer read.
    pub max_response_bytes: u64,
    /// Anthropic providers translate leniently (see
    /// [`UpstreamConfig::lenient`]).
    pub lenient: bool,
}

/// What a config file holds: serve's older `[[upstream]]` tables, or a
/// routes config.
#[derive(Debug)]
pub enum ConfigFile {
    /// `[[upstream]]` tables (and `auth_keys_env`), as [`load`] reads them.
    Upstreams(Loaded),
    /// A routes config with a `[serve]` table or without.
    Routes {
        /// The routes, their keys and client settings.
        setup: Box<RoutesSetup>,
        /// `[serve] auth_keys_env`, if set.
        auth_keys_env: Option<String>,
        /// What the file allows but is probably wrong, one sentence each.
        warnings: Vec<String>,
    },
}

/// The top-level keys of the older form, and of the routes form.
const UPSTREAM_FORM: &[&str] = &["upstream", "auth_keys_env"];
const ROUTES_FORM: &[&str] = &["providers", "groups", "models", "routes", "serve"];

/// Read a config file of either form (at most [`MAX_ROUTES_FILE_BYTES`]).
/// `defaults` gives the routes form's client settings that `[serve]` does
/// not (`keys` and `config` are not read from it); keys are read through
/// `getenv`. A file holding both forms is refused, naming a line of each.
pub fn load_any(
    path: &Path,
    defaults: &RoutesSetupDefaults,
    getenv: impl Fn(&str) -> Option<String>,
) -> Result<ConfigFile, ConfigError> {
    let name = path.display().to_string();
    let text = read_bounded(path).map_err(|source| ConfigError::Read {
        path: name.clone(),
        source,
    })?;
    match form(&name, &text)? {
        Form::Upstreams => load_str(&name, &text, getenv).map(ConfigFile::Upstreams),
        Form::Routes => routes_form(&name, &text, defaults, getenv),
    }
}

/// The routes form's client settings when `[serve]` does not give them.
#[derive(Debug, Clone)]
pub struct RoutesSetupDefaults {
    /// Most requests in flight across every batch.
    pub concurrency: usize,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// The largest answer read.
    pub max_response_bytes: u64,
}

impl Default for RoutesSetupDefaults {
    fn default() -> Self {
        RoutesSetupDefaults {
            concurrency: batchling_engine::DEFAULT_CONCURRENCY,
            timeout: Duration::from_secs(600),
            max_response_bytes: batchling_providers::openai::DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// The file's text, refusing one larger than any config.
fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    let file = std::fs::File::open(path)?;
    file.take(MAX_ROUTES_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_ROUTES_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_ROUTES_FILE_BYTES} bytes, too large for a config file"
        )));
    }
    Ok(text)
}

enum Form {
    Upstreams,
    Routes,
}

/// Which form a file is in, from its top-level keys: the routes form when
/// it has any of its tables, else the older one (whose loader explains an
/// empty file). Both at once is an error naming a line of each.
fn form(name: &str, text: &str) -> Result<Form, ConfigError> {
    // Not TOML: the loader of the older form says where.
    let Ok(table) = toml::de::DeTable::parse(text) else {
        return Ok(Form::Upstreams);
    };
    // The earliest key of a form in the file (a table's keys may not
    // iterate in file order).
    let first_of = |keys: &[&str]| {
        (table.get_ref().iter())
            .filter(|(k, _)| keys.contains(&k.get_ref().as_ref()))
            .min_by_key(|(k, _)| k.span().start)
            .map(|(k, _)| (k.get_ref().to_string(), line_at(text, k.span().start)))
    };
    match (first_of(UPSTREAM_FORM), first_of(ROUTES_FORM)) {
        (Some((old, old_line)), Some((new, new_line))) => Err(ConfigError::Invalid {
            path: name.to_owned(),
            message: format!(
                "line {old_line} has {old} (serve's older [[upstream]] form) and line {new_line} has {new} (the routes form): a file is in one form; move the upstreams into providers, groups, models and routes (with auth_keys_env under [serve]), or leave the routes out"
            ),
        }),
        (None, Some(_)) => Ok(Form::Routes),
        _ => Ok(Form::Upstreams),
    }
}

/// A routes config and its keys, with `[serve]` over `defaults`.
fn routes_form(
    name: &str,
    text: &str,
    defaults: &RoutesSetupDefaults,
    getenv: impl Fn(&str) -> Option<String>,
) -> Result<ConfigFile, ConfigError> {
    let config = RoutesConfig::parse(text, name)?;
    let keys = (config.resolve_keys(getenv)?.into_iter())
        .map(|k| (k.id, k.group, ApiKey::new(k.secret)))
        .collect();
    let serve = config.serve.clone().unwrap_or_default();
    let warnings = config.warnings.iter().map(ToString::to_string).collect();
    let setup = RoutesSetup {
        keys,
        // Bounded by the parser (at most 100,000 and 4096 MiB).
        concurrency: (serve.concurrency)
            .and_then(|c| usize::try_from(c).ok())
            .unwrap_or(defaults.concurrency),
        timeout: (serve.timeout_secs)
            .and_then(|t| Duration::try_from_secs_f64(t).ok())
            .unwrap_or(defaults.timeout),
        max_response_bytes: (serve.max_response_mb)
            .map_or(defaults.max_response_bytes, |mb| mb << 20),
        lenient: serve.lenient,
        config,
    };
    Ok(ConfigFile::Routes {
        setup: Box::new(setup),
        auth_keys_env: serve.auth_keys_env,
        warnings,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    auth_keys_env: Option<String>,
    #[serde(default)]
    upstream: Vec<FileUpstream>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstream {
    name: String,
    kind: Option<Spanned<String>>,
    base_url: String,
    api_key_env: Option<Spanned<String>>,
    models: Option<Vec<String>>,
    anthropic_version: Option<Spanned<String>>,
    lenient: Option<Spanned<bool>>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    limits: Option<PathBuf>,
    concurrency: Option<usize>,
    timeout_secs: Option<f64>,
    max_response_mb: Option<u64>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

/// `models` when a table gives none: everything, or for Anthropic Claude.
fn default_models(kind: UpstreamKind) -> Vec<String> {
    match kind {
        UpstreamKind::OpenAi => vec!["*".into()],
        UpstreamKind::Anthropic => vec!["claude-*".into()],
    }
}

/// What a config file gives: the upstreams and, optionally, the name of the
/// variable holding client keys.
#[derive(Debug)]
pub struct Loaded {
    /// Upstreams in file order.
    pub upstreams: Vec<UpstreamConfig>,
    /// `auth_keys_env`, if set.
    pub auth_keys_env: Option<String>,
}

/// Read a config file. Environment variables it names are read through
/// `getenv` (a named key variable that is unset is an error: a silent
/// keyless upstream would fail every request).
pub fn load(path: &Path, getenv: impl Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: name.clone(),
        source,
    })?;
    load_str(&name, &text, getenv)
}

/// Like [`load`] for text already read; `name` is how errors name it.
pub fn load_str(
    name: &str,
    text: &str,
    getenv: impl Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: name.to_owned(),
        message,
    };
    let file = parse(text).map_err(invalid)?;
    if file.upstream.is_empty() {
        return Err(invalid(
            "no [[upstream]] tables: name at least one upstream with a base_url".into(),
        ));
    }
    let mut seen = HashSet::new();
    let mut upstreams = Vec::new();
    let dir = Path::new(name).parent().unwrap_or(Path::new(""));
    for u in file.upstream {
        if !seen.insert(u.name.clone()) {
            return Err(invalid(format!("upstream name {:?} is used twice", u.name)));
        }
        let limits = match &u.limits {
            Some(path) => Some(
                batchling_core::limits::LimitsFile::load(&dir.join(path))
                    .map_err(|e| invalid(format!("upstream {:?}: {e}", u.name)))?,
            ),
            None => None,
        };
        let mut up = upstream(u, text, &getenv).map_err(invalid)?;
        up.limits_file = limits;
        upstreams.push(up);
    }
    Ok(Loaded {
        upstreams,
        auth_keys_env: file.auth_keys_env,
    })
}

/// The 1-based line of a byte offset in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// An error about one field of an upstream's table: its line, the upstream
/// and the field.
fn field_error<T>(text: &str, at: &Spanned<T>, upstream: &str, field: &str, what: &str) -> String {
    let line = line_at(text, at.span().start);
    format!("line {line}, upstream {upstream:?}, {field}: {what}")
}

/// The `kind` of a table, checked.
fn kind_of(text: &str, u: &FileUpstream) -> Result<UpstreamKind, String> {
    let Some(kind) = &u.kind else {
        return Ok(UpstreamKind::OpenAi);
    };
    [UpstreamKind::OpenAi, UpstreamKind::Anthropic]
        .into_iter()
        .find(|k| k.name() == kind.get_ref())
        .ok_or_else(|| {
            let what = format!(
                "{:?} is not a kind of upstream; use \"openai\" (the default: OpenAI and compatible servers) or \"anthropic\" (Anthropic's Messages API)",
                kind.get_ref()
            );
            field_error(text, kind, &u.name, "kind", &what)
        })
}

/// The TOML, of the expected shape; an error names its line when known.
fn parse(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let line = e.span().map(|s| line_at(text, s.start));
        match line {
            Some(l) => format!("line {l}: {}", e.message()),
            None => e.message().to_owned(),
        }
    })
}

/// One `[[upstream]]` table, checked, with its key read through `getenv`.
fn upstream(
    u: FileUpstream,
    text: &str,
    getenv: impl Fn(&str) -> Option<String>,
) -> Result<UpstreamConfig, String> {
    let kind = kind_of(text, &u)?;
    let name = &u.name;
    let models = u.models.clone().unwrap_or_else(|| default_models(kind));
    if models.is_empty() {
        return Err(format!(
            "upstream {name:?}: models is empty, so it would never be used"
        ));
    }
    if u.rpm == Some(0) || u.tpm == Some(0) || u.concurrency == Some(0) {
        return Err(format!(
            "upstream {name:?}: rpm, tpm and concurrency must be positive"
        ));
    }
    let mut up = UpstreamConfig::new(name, &u.base_url);
    up.kind = kind;
    up.api_key = api_key(text, &u, kind, getenv)?;
    if let Some(v) = &u.anthropic_version {
        if kind != UpstreamKind::Anthropic {
            let what = "only an upstream of kind = \"anthropic\" takes it";
            return Err(field_error(text, v, name, "anthropic_version", what));
        }
        if v.get_ref().trim().is_empty() {
            let what = "empty; leave it out for the default (2023-06-01)";
            return Err(field_error(text, v, name, "anthropic_version", what));
        }
        up.anthropic_version = Some(v.get_ref().clone());
    }
    if let Some(l) = &u.lenient {
        if kind != UpstreamKind::Anthropic {
            let what = "only an upstream of kind = \"anthropic\" takes it (it is about translating OpenAI lines)";
            return Err(field_error(text, l, name, "lenient", what));
        }
        up.lenient = *l.get_ref();
    }
    up.models = models;
    up.rpm = u.rpm;
    up.tpm = u.tpm;
    if let Some(c) = u.concurrency {
        up.concurrency = c;
    }
    if let Some(t) = u.timeout_secs {
        up.timeout = Duration::try_from_secs_f64(t)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                format!(
                    "upstream {name:?}: timeout_secs must be a positive number of seconds, not {t}"
                )
            })?;
    }
    if let Some(mb) = u.max_response_mb {
        up.max_response_bytes =
            mb.checked_mul(1024 * 1024)
                .filter(|&b| b > 0)
                .ok_or_else(|| {
                    format!("upstream {name:?}: max_response_mb must be a positive number of MiB")
                })?;
    }
    up.headers = u.headers.into_iter().collect();
    Ok(up)
}

/// An upstream's key, from the variable `api_key_env` names (required for
/// Anthropic, which refuses every request without one).
fn api_key(
    text: &str,
    u: &FileUpstream,
    kind: UpstreamKind,
    getenv: impl Fn(&str) -> Option<String>,
) -> Result<Option<ApiKey>, String> {
    let name = &u.name;
    let Some(var) = &u.api_key_env else {
        return match (kind, &u.kind) {
            (UpstreamKind::Anthropic, Some(k)) => Err(field_error(
                text,
                k,
                name,
                "api_key_env",
                "missing: an upstream of kind = \"anthropic\" needs the name of the variable holding its key (api_key_env = \"ANTHROPIC_API_KEY\")",
            )),
            _ => Ok(None),
        };
    };
    let key = getenv(var.get_ref()).filter(|k| !k.is_empty());
    let what = format!("${} is not set", var.get_ref());
    let key = key.ok_or_else(|| field_error(text, var, name, "api_key_env", &what))?;
    Ok(Some(ApiKey::new(key)))
}

/// Split a comma-separated list of client keys, ignoring blanks.
pub fn split_keys(list: &str) -> Vec<ApiKey> {
    list.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(|k| ApiKey::new(k.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_patterns() {
        let mut u = UpstreamConfig::new("a", "http://x/v1");
        u.models = vec!["gpt-4o*".into(), "llama".into()];
        assert!(u.serves(Some("gpt-4o-mini")));
        assert!(u.serves(Some("llama")));
        assert!(!u.serves(Some("llama-3")));
        assert!(!u.serves(None));
        u.models = vec!["*".into()];
        assert!(u.serves(None) && u.serves(Some("anything")));
    }

    #[test]
    fn file_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[[upstream]]\nname = \"a\"\nbase_url = \"http://x/v1\"\nmodles = [\"*\"]\n",
        )
        .unwrap();
        let e = load(&p, |_| None).unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("modles"), "{e}");

        std::fs::write(
            &p,
            "[[upstream]]\nname = \"a\"\nbase_url = \"http://x/v1\"\napi_key_env = \"K\"\n",
        )
        .unwrap();
        let e = load(&p, |_| None).unwrap_err().to_string();
        assert!(e.contains("$K is not set"), "{e}");
        let ok = load(&p, |_| Some("sk-secret".into())).unwrap();
        assert_eq!(ok.upstreams[0].models, ["*"]);
        assert!(ok.upstreams[0].api_key.is_some());
    }

    #[test]
    fn a_limits_file_per_upstream_next_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let up = "[[upstream]]\nname = \"a\"\nbase_url = \"http://x/v1\"\nlimits = \"l.toml\"\n";
        std::fs::write(&p, up).unwrap();
        std::fs::write(dir.path().join("l.toml"), "[models.m]\nrpm = 7\n").unwrap();
        let ok = load(&p, |_| None).unwrap();
        let file = ok.upstreams[0].limits_file.as_ref().unwrap();
        assert_eq!(file.table.models[0].rpm, Some(7));
        std::fs::write(dir.path().join("l.toml"), "[models.m]\nrpm = 0\n").unwrap();
        let e = load(&p, |_| None).unwrap_err().to_string();
        assert!(
            e.contains("upstream \"a\": ") && e.contains("l.toml line 2, models.m.rpm"),
            "{e}"
        );
    }

    #[test]
    fn the_answer_cap_per_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        let up = |extra: &str| {
            format!("[[upstream]]\nname = \"a\"\nbase_url = \"http://x/v1\"\n{extra}")
        };
        std::fs::write(&p, up("max_response_mb = 8\n")).unwrap();
        assert_eq!(
            load(&p, |_| None).unwrap().upstreams[0].max_response_bytes,
            8 << 20
        );
        std::fs::write(&p, up("")).unwrap();
        assert_eq!(
            load(&p, |_| None).unwrap().upstreams[0].max_response_bytes,
            batchling_providers::openai::DEFAULT_MAX_RESPONSE_BYTES
        );
        std::fs::write(&p, up("max_response_mb = 0\n")).unwrap();
        let e = load(&p, |_| None).unwrap_err().to_string();
        assert!(e.contains("max_response_mb must be a positive"), "{e}");
    }

    #[test]
    fn an_anthropic_upstream_from_the_file() {
        let text = "[[upstream]]\nname = \"claude\"\nkind = \"anthropic\"\nbase_url = \"https://api.anthropic.com\"\napi_key_env = \"AK\"\nanthropic_version = \"2024-01-01\"\nlenient = true\nheaders = { \"anthropic-beta\" = \"b1\" }\n";
        let getenv = |v: &str| (v == "AK").then(|| "sk-ant".to_owned());
        let ok = load_str("c.toml", text, getenv).unwrap();
        let up = &ok.upstreams[0];
        assert_eq!(up.kind, UpstreamKind::Anthropic);
        assert_eq!(up.models, ["claude-*"], "Claude by default");
        assert_eq!(up.anthropic_version.as_deref(), Some("2024-01-01"));
        assert!(up.lenient);
        assert_eq!(up.headers, [("anthropic-beta".into(), "b1".into())]);
        assert_eq!(up.api_key.as_ref().unwrap().expose(), "sk-ant");
        // An OpenAI upstream still serves everything by default.
        let text = "[[upstream]]\nname = \"o\"\nbase_url = \"http://x/v1\"\n";
        let ok = load_str("c.toml", text, |_| None).unwrap();
        assert_eq!(ok.upstreams[0].kind, UpstreamKind::OpenAi);
        assert_eq!(ok.upstreams[0].models, ["*"]);
    }

    #[test]
    fn anthropic_errors_name_the_file_line_and_field() {
        let err = |text: &str| {
            load_str("conf/c.toml", text, |_| None)
                .unwrap_err()
                .to_string()
        };
        let head = "[[upstream]]\nname = \"claude\"\nbase_url = \"http://x\"\n";
        let e = err(&format!("{head}kind = \"claud\"\n"));
        assert!(
            e.starts_with("config file conf/c.toml: line 4, upstream \"claude\", kind: \"claud\" is not a kind")
                && e.contains("\"anthropic\""),
            "{e}"
        );
        let e = err(&format!("{head}kind = \"anthropic\"\n"));
        assert!(
            e.contains("line 4, upstream \"claude\", api_key_env: missing"),
            "{e}"
        );
        let e = err(&format!(
            "{head}kind = \"anthropic\"\napi_key_env = \"NOPE\"\n"
        ));
        assert!(
            e.contains("line 5, upstream \"claude\", api_key_env: $NOPE is not set"),
            "{e}"
        );
        let e = err(&format!("{head}anthropic_version = \"2023-06-01\"\n"));
        assert!(
            e.contains("line 4, upstream \"claude\", anthropic_version: only an upstream of kind = \"anthropic\""),
            "{e}"
        );
        let e = err(&format!("{head}lenient = true\n"));
        assert!(
            e.contains(
                "line 4, upstream \"claude\", lenient: only an upstream of kind = \"anthropic\""
            ),
            "{e}"
        );
        let e = err(&format!("{head}kind = 3\n"));
        assert!(e.contains("line 4"), "{e}");
    }
}
