//! Arguments and environment resolved once into plain values. Commands take
//! these and never see clap. Each flag's own check is its clap value parser
//! (`args.rs`); what is checked here needs several flags, the environment
//! or the file system.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use batchling_core::RetryPolicy;
use batchling_core::pricing::Catalog;
use batchling_core::routes::RoutesConfig;
use batchling_engine::submit::{PartLimits, SubmitJob};
use batchling_engine::{Input, Job, Order, PacerConfig, default_errors_path};
use batchling_mock::{Faults, LimitWindow, LimitsFile, MockConfig, Shape};
use batchling_providers::ApiKey;
use batchling_providers::openai::ClientConfig;
use batchling_server::config::{
    self as serve_config, ConfigFile, RoutesSetup, RoutesSetupDefaults, ServeConfig, UpstreamConfig,
};

use crate::args::{
    CancelArgs, ClientArgs, EstimateArgs, ExportArgs, JournalArgs, LimitArgs, LogFormat, MockArgs,
    OrderArg, PricesArgs, ProviderArg, RunArgs, ServeArgs, ShapeArg, StatusArgs, SubmitArgs,
};

/// The environment variables batchling reads, in one place. Besides these:
/// the variables `--api-key-env` and `--auth-keys-env` (or a `serve --config`
/// file) name, and the proxy variables (`HTTP_PROXY`, `HTTPS_PROXY`,
/// `ALL_PROXY`, `NO_PROXY`, also in lower case), which the HTTP client reads
/// below the CLI (with `HTTP_PROXY` or `ALL_PROXY` set, plain-http upstreams
/// go through reqwest instead of the lean client).
pub(crate) mod env {
    /// The API key, unless `--api-key-env` names another variable.
    pub(crate) const OPENAI_API_KEY: &str = "OPENAI_API_KEY";
    /// The API base URL when `--base-url` is not given.
    pub(crate) const OPENAI_BASE_URL: &str = "OPENAI_BASE_URL";
    /// `run --provider anthropic`: the API key, unless `--api-key-env`
    /// names another variable.
    pub(crate) const ANTHROPIC_API_KEY: &str = "ANTHROPIC_API_KEY";
    /// `run --provider anthropic`: the base URL when `--base-url` is not
    /// given.
    pub(crate) const ANTHROPIC_BASE_URL: &str = "ANTHROPIC_BASE_URL";
    /// `--provider azure`: the API key, unless `--api-key-env` names
    /// another variable.
    pub(crate) const AZURE_OPENAI_API_KEY: &str = "AZURE_OPENAI_API_KEY";
    /// `--provider azure`: the resource's endpoint when `--base-url` is not
    /// given.
    pub(crate) const AZURE_OPENAI_ENDPOINT: &str = "AZURE_OPENAI_ENDPOINT";
    /// `--provider azure`: the api-version when `--azure-api-version` is
    /// not given (unset: the v1 URLs).
    pub(crate) const AZURE_OPENAI_API_VERSION: &str = "AZURE_OPENAI_API_VERSION";
    /// Set to anything: no progress bar, plain status lines instead.
    pub(crate) const NO_COLOR: &str = "NO_COLOR";
    /// `serve`'s log filter (tracing's `EnvFilter` syntax; `info` when unset).
    pub(crate) const RUST_LOG: &str = "RUST_LOG";
}

/// `--order` as the engine and the store name it.
pub(crate) fn order(o: OrderArg) -> Order {
    match o {
        OrderArg::Input => Order::Input,
        OrderArg::Completion => Order::Completion,
    }
}

const OPENAI_DEFAULT_BASE: &str = "https://api.openai.com/v1";

/// The API an upstream speaks (`run --provider`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ProviderKind {
    /// OpenAI's, or a compatible server's.
    #[default]
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// Azure OpenAI: OpenAI's API on a resource's endpoint.
    Azure,
}

impl ProviderKind {
    /// The flag's value.
    fn flag(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Azure => "azure",
        }
    }

    /// The variables of the key and the base URL.
    fn env(self) -> (&'static str, &'static str) {
        match self {
            ProviderKind::OpenAi => (env::OPENAI_API_KEY, env::OPENAI_BASE_URL),
            ProviderKind::Anthropic => (env::ANTHROPIC_API_KEY, env::ANTHROPIC_BASE_URL),
            ProviderKind::Azure => (env::AZURE_OPENAI_API_KEY, env::AZURE_OPENAI_ENDPOINT),
        }
    }

    fn default_base(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => OPENAI_DEFAULT_BASE,
            ProviderKind::Anthropic => batchling_providers::anthropic::client::DEFAULT_BASE_URL,
            // Every resource has its own: `resolve_for` asks for it.
            ProviderKind::Azure => "",
        }
    }

    /// What a journal records before the server, so that a resume speaks
    /// the same API: nothing for OpenAI (as journals always did),
    /// `anthropic:` for Anthropic, `azure:` for Azure (then the endpoint).
    fn journal_prefix(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "",
            ProviderKind::Anthropic => "anthropic:",
            ProviderKind::Azure => "azure:",
        }
    }

    /// The provider and server a journal records.
    fn of_recorded(recorded: &str) -> (ProviderKind, &str) {
        [ProviderKind::Anthropic, ProviderKind::Azure]
            .into_iter()
            .find_map(|p| Some((p, recorded.strip_prefix(p.journal_prefix())?)))
            .unwrap_or((ProviderKind::OpenAi, recorded))
    }

    /// `--provider`'s value.
    fn of_arg(a: ProviderArg) -> ProviderKind {
        match a {
            ProviderArg::Openai => ProviderKind::OpenAi,
            ProviderArg::Anthropic => ProviderKind::Anthropic,
            ProviderArg::Azure => ProviderKind::Azure,
        }
    }
}

/// Where requests go.
#[derive(Debug, Clone)]
pub(crate) enum Upstream {
    /// A real server.
    Remote(ClientConfig),
    /// The built-in fake provider, started in-process. `implicit` when it
    /// was chosen because no key was set.
    Mock {
        implicit: bool,
        client: ClientConfig,
    },
}

/// Everything `batchling run` needs.
#[derive(Debug, Clone)]
pub(crate) struct RunSettings {
    pub(crate) job: Job,
    pub(crate) upstream: Upstream,
    /// The API `upstream` speaks.
    pub(crate) provider: ProviderKind,
    /// `--lenient` (Anthropic's translation).
    pub(crate) lenient: bool,
    /// Azure's api-version (`--provider azure`): `None` for the v1 URLs.
    pub(crate) azure_api_version: Option<String>,
    pub(crate) strict: bool,
    pub(crate) quiet: bool,
    pub(crate) summary_json: Option<PathBuf>,
    /// Things worth saying before the run starts (the server taken from the
    /// journal).
    pub(crate) notes: Vec<String>,
    /// `--config`: the routes, and their keys read from the environment.
    pub(crate) routes: Option<ConfigRoutes>,
    /// `--limiter URL` and `--limiter-prefix`.
    pub(crate) limiter: Option<(String, String)>,
    /// `--store URL` (and `--job ID`): a job shared by many workers.
    pub(crate) store: Option<StoreRun>,
}

/// `run --store`: where the shared job is and how this worker finds it.
#[derive(Debug, Clone)]
pub(crate) struct StoreRun {
    /// The store URL (it may hold a password: never printed as it is).
    pub(crate) url: String,
    /// Load the input (or join its job), or join a job by id.
    pub(crate) source: crate::job_store::Source,
    /// `--max-cost`: the whole job's budget, kept by the store (not given
    /// to the engine, whose budget would be this worker's alone).
    pub(crate) budget_cap: Option<f64>,
}

/// `--store URL --job ID` of `status` and `export`.
#[derive(Debug, Clone)]
pub(crate) struct StoreJob {
    pub(crate) url: String,
    pub(crate) job: batchling_queue::JobId,
}

impl StoreRun {
    /// `--store` with `--job` and the input: checked together.
    fn resolve(a: &RunArgs, url: String, input: &Input) -> Result<StoreRun> {
        let source = match (a.job, input) {
            (Some(id), _) => crate::job_store::Source::Job(batchling_queue::JobId(id)),
            (None, Input::File(path)) => crate::job_store::Source::File(path.clone()),
            (None, Input::Stdin) => bail!(
                "--store loads the input into the store, so it needs a file path, not - (stdin); save the input to a file (or join a loaded job with --job ID)"
            ),
        };
        if a.journal.restart {
            bail!(
                "--restart would drop this worker's answers not yet handed to the store (--store); leave it out (a job in the store is deleted with `batchling status --store URL --job ID --delete`)"
            );
        }
        Ok(StoreRun {
            url,
            source,
            budget_cap: a.max_cost,
        })
    }
}

/// A routes config with its keys, read once.
#[derive(Debug, Clone)]
pub(crate) struct ConfigRoutes {
    pub(crate) config: RoutesConfig,
    /// (key id, group, key), in the config's order.
    pub(crate) keys: Vec<(String, String, ApiKey)>,
}

impl ConfigRoutes {
    /// Load `path` and read its keys with `getenv`. Its warnings become
    /// notes.
    fn load(
        path: &Path,
        getenv: &impl Fn(&str) -> Option<String>,
        notes: &mut Vec<String>,
    ) -> Result<Self> {
        let config = RoutesConfig::load(path)?;
        notes.extend(config.warnings.iter().map(ToString::to_string));
        let keys = config
            .resolve_keys(getenv)?
            .into_iter()
            .map(|k| (k.id, k.group, ApiKey::new(k.secret)))
            .collect();
        Ok(ConfigRoutes { config, keys })
    }
}

/// How the journal names the built-in fake provider.
const MOCK_SERVER: &str = "mock";

/// How a journal names a routes config's upstreams: this, then its path.
const CONFIG_SERVER: &str = "config:";

/// The routes config a journal was started with (`Some(None)`: it was
/// started on one provider; `None`: no journal to resume).
fn recorded_config(state: &Path, restart: bool) -> Option<Option<PathBuf>> {
    let server = recorded_server(state, restart)?;
    Some(server.and_then(|s| s.strip_prefix(CONFIG_SERVER).map(PathBuf::from)))
}

/// A submit journal is resumed the way it was started: on a routes config
/// (its parts live on their targets' Batch APIs) or on one provider.
fn check_config_resume(state: &Path, restart: bool, config: Option<&Path>) -> Result<()> {
    match (recorded_config(state, restart), config) {
        (Some(Some(was)), None) => bail!(
            "the journal {} was started with --config {}: its batches are on that config's targets; give --config {} to resume it, or start over with --restart",
            state.display(),
            was.display(),
            was.display()
        ),
        (Some(None), Some(_)) => bail!(
            "the journal {} was started without --config (on one provider): leave out --config to resume it, or start over with --restart",
            state.display()
        ),
        _ => Ok(()),
    }
}

/// The server a journal records for an upstream.
fn server_of(u: &Upstream) -> String {
    match u {
        Upstream::Remote(c) => c.base_url.trim_end_matches('/').to_owned(),
        Upstream::Mock { .. } => MOCK_SERVER.into(),
    }
}

/// What an existing journal records about its server: `None` when there is
/// no journal to resume (absent, `--restart`, unreadable: the run reports
/// that itself), `Some(None)` for a journal of an older batchling.
fn recorded_server(state: &Path, restart: bool) -> Option<Option<String>> {
    if restart || !state.exists() {
        return None;
    }
    let meta = batchling_store::Journal::open_read_only(state)
        .and_then(|j| j.meta())
        .ok()?;
    meta.created_at.map(|_| meta.server)
}

/// How a journal records a routes config as its server: the file and a
/// digest of what it said.
pub(crate) fn config_server(path: &Path, digest: u64) -> String {
    format!("config:{}#{digest:016x}", path.display())
}

/// A resume over a config that is not the one of the journal's last run
/// goes on (editing a config to add a fallback mid-job is what it is for),
/// with a note saying what that means.
fn note_config_change(state: &Path, restart: bool, server: &str, notes: &mut Vec<String>) {
    let Some(Some(recorded)) = recorded_server(state, restart) else {
        return;
    };
    if recorded == server {
        return;
    }
    let was = match recorded.strip_prefix("config:") {
        Some(config) => format!("the config {config}"),
        None => format!("the server {recorded}, without --config"),
    };
    notes.push(format!(
        "the journal {} was last run with {was}: what is answered stays as it was, lines not answered yet follow {}",
        state.display(),
        server.trim_start_matches("config:")
    ));
}

/// The upstream of a resume: the server the journal records, unless the
/// flags name another one (refused: answers or batches are there).
/// `named` is whether `--base-url` or `--mock` was given. A journal started
/// with another `--provider` is refused.
fn resume_upstream_of(
    state: &Path,
    restart: bool,
    (upstream, provider): (Upstream, ProviderKind),
    named: bool,
    notes: &mut Vec<String>,
) -> Result<Upstream> {
    let Some(recorded) = recorded_server(state, restart) else {
        return Ok(upstream);
    };
    if let Some(config) = recorded.as_deref().and_then(|r| r.strip_prefix("config:")) {
        let path = config.rsplit_once('#').map_or(config, |(path, _)| path);
        bail!(
            "the journal {} was run with --config {path}; give --config to resume it, or start over with --restart",
            state.display()
        );
    }
    let current = server_of(&upstream);
    if let Some(r) = &recorded
        && let (was, _) = ProviderKind::of_recorded(r)
        && was != provider
    {
        bail!(
            "the journal {} was started with --provider {}; give --provider {} to resume it, or start over with --restart",
            state.display(),
            was.flag(),
            was.flag()
        );
    }
    let recorded = recorded.map(|r| ProviderKind::of_recorded(&r).1.to_owned());
    let Some(recorded) = recorded else {
        notes.push(format!(
            "the journal {} does not record its server (an older batchling wrote it): sending to {current}, as the flags and environment say",
            state.display()
        ));
        return Ok(upstream);
    };
    if recorded == current {
        return Ok(upstream);
    }
    let name = |s: &str| match s {
        MOCK_SERVER => "the built-in fake provider".to_owned(),
        url => url.to_owned(),
    };
    if named {
        bail!(
            "the journal {} was started against {}, not {}; leave out --base-url/--mock to resume there, or start over with --restart",
            state.display(),
            name(&recorded),
            name(&current)
        );
    }
    notes.push(format!(
        "resuming against {}, the server the journal {} records",
        name(&recorded),
        state.display()
    ));
    let client = match upstream {
        Upstream::Remote(c) | Upstream::Mock { client: c, .. } => c,
    };
    Ok(if recorded == MOCK_SERVER {
        Upstream::Mock {
            implicit: false,
            client,
        }
    } else {
        Upstream::Remote(ClientConfig {
            base_url: recorded,
            ..client
        })
    })
}

/// Whether a submit journal's lines are translated leniently: as it was
/// started (a resume without `--lenient` keeps it, with a note), or as
/// `--lenient` says for a new one. A journal started strictly refuses
/// `--lenient`: its untranslatable lines already failed at planning.
fn resume_lenient(
    state: &Path,
    restart: bool,
    lenient: bool,
    notes: &mut Vec<String>,
) -> Result<bool> {
    match recorded_lenient(state, restart) {
        Some(true) if !lenient => {
            notes.push(format!(
                "resuming with --lenient, as the journal {} was started with it",
                state.display()
            ));
            Ok(true)
        }
        Some(false) if lenient => bail!(
            "the journal {} was started without --lenient: its lines were translated strictly (those with a field Anthropic cannot take already failed); leave out --lenient to resume it, or start over with --restart",
            state.display()
        ),
        _ => Ok(lenient),
    }
}

/// The translation mode a submit journal records: `Some(true)` lenient,
/// `Some(false)` strict, `None` when it records none (a new journal, an
/// OpenAI one, or one of an older batchling).
pub(crate) fn recorded_lenient(state: &Path, restart: bool) -> Option<bool> {
    use batchling_providers::anthropic::{batches::recorded_mode, translate::Mode};
    if restart || !state.exists() {
        return None;
    }
    let journal = batchling_store::Journal::open_read_only(state).ok()?;
    let text = journal
        .submit_value(batchling_engine::submit::API_SETTINGS)
        .ok()??;
    if let Some(mode) = recorded_mode(&text) {
        return Some(mode == Mode::Lenient);
    }
    // A `submit --config` journal: its targets' settings by name.
    let targets: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).ok()?;
    let modes: Vec<Mode> = targets
        .values()
        .filter_map(|v| recorded_mode(&v.to_string()))
        .collect();
    (!modes.is_empty()).then(|| modes.contains(&Mode::Lenient))
}

/// `--errors`, or the default next to the output; never the output itself.
pub(crate) fn errors_path(output: &Path, errors: Option<PathBuf>) -> Result<PathBuf> {
    let errors = errors.unwrap_or_else(|| default_errors_path(output));
    if errors == output {
        bail!(
            "--errors and --output name the same file {}",
            output.display()
        );
    }
    Ok(errors)
}

/// [`JournalArgs`] resolved: the journal and the files `run` and `submit`
/// write from it.
struct Journaling {
    state: PathBuf,
    errors: PathBuf,
    order: Order,
    restart: bool,
    durable: bool,
    prices: Arc<Catalog>,
    quiet: bool,
    summary_json: Option<PathBuf>,
}

impl Journaling {
    fn resolve(a: JournalArgs, output: &Path, errors: Option<PathBuf>) -> Result<Self> {
        Ok(Journaling {
            state: a
                .state
                .unwrap_or_else(|| batchling_engine::default_state_path(output)),
            errors: errors_path(output, errors)?,
            order: order(a.order),
            restart: a.restart,
            durable: !a.no_fsync,
            prices: Arc::new(catalog(a.prices.as_deref())?),
            quiet: a.quiet,
            summary_json: a.summary_json,
        })
    }
}

/// The built-in prices, plus a user's file.
pub(crate) fn catalog(file: Option<&Path>) -> Result<Catalog> {
    let mut c = Catalog::builtin();
    if let Some(f) = file {
        c.load_file(f)?;
    }
    Ok(c)
}

impl RunSettings {
    pub(crate) fn resolve(a: RunArgs, getenv: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let input = match a.input.as_deref() {
            Some("-") => Input::Stdin,
            Some(path) => Input::File(PathBuf::from(path)),
            // Only with --job: the job's lines are in the store.
            None if a.job.is_some() => Input::File(PathBuf::new()),
            None => {
                bail!("give the input file (or, with --store, join a loaded job with --job ID)")
            }
        };
        let store = (a.store.clone())
            .map(|url| StoreRun::resolve(&a, url, &input))
            .transpose()?;
        let provider = ProviderKind::of_arg(a.provider);
        if a.lenient && provider != ProviderKind::Anthropic {
            bail!(
                "--lenient is about translating OpenAI lines for Anthropic: it needs --provider anthropic"
            );
        }
        let mut client = ResolvedClient::resolve_for(&a.client, &getenv, provider)?;
        client.config.pool_size = a.limits.concurrency;
        client.config.http2 = a.http2;
        let upstream = client.upstream(a.mock);
        if a.config.is_some() {
            refuse_upstream_flags(&a)?;
        }
        let j = Journaling::resolve(a.journal, &a.output, a.errors)?;
        let mut notes = Vec::new();
        let mut job = Job::new(input, a.output.clone());
        let (upstream, routes) = match &a.config {
            Some(path) => {
                let routes = ConfigRoutes::load(path, &getenv, &mut notes)?;
                let server = config_server(path, routes.config.digest);
                note_config_change(&j.state, j.restart, &server, &mut notes);
                job.server = Some(server);
                // The config names every upstream: no built-in fake is
                // started; its client settings (timeout, pool) are shared.
                let upstream = match upstream {
                    Upstream::Mock { client, .. } => Upstream::Remote(client),
                    remote => remote,
                };
                (upstream, Some(routes))
            }
            None => {
                let named = a.mock || a.client.base_url.is_some();
                let (upstream, server) =
                    plain_upstream(&j, (upstream, provider), named, &mut notes)?;
                job.server = Some(server);
                (upstream, None)
            }
        };
        job.errors = j.errors;
        job.order = j.order;
        job.pacing = PacerConfig {
            learn: !a.ignore_limit_headers,
            ..a.limits.pacing(&mut notes)?
        };
        job.concurrency = a.limits.concurrency;
        job.retry = a.limits.retry();
        job.give_up_after = a.give_up_after;
        job.state = j.state;
        job.restart = j.restart;
        job.retry_failed = a.retry_failed;
        job.durable = j.durable;
        job.cache = a.cache;
        // With a store, the store keeps the job's budget across workers.
        job.max_cost = a.max_cost.filter(|_| store.is_none());
        job.prices = Some(j.prices);
        job.default_max_output = a.default_max_tokens;
        Ok(RunSettings {
            job,
            upstream,
            provider,
            lenient: a.lenient,
            azure_api_version: azure_api_version(&a.client, &getenv, provider)?,
            strict: a.strict,
            quiet: j.quiet,
            summary_json: j.summary_json,
            notes,
            routes,
            limiter: a.limiter.map(|url| (url, a.limiter_prefix)),
            store,
        })
    }
}

/// The upstream of a run without a config (the journal's on a resume) and
/// how the journal records it.
fn plain_upstream(
    j: &Journaling,
    (upstream, provider): (Upstream, ProviderKind),
    named: bool,
    notes: &mut Vec<String>,
) -> Result<(Upstream, String)> {
    let upstream = resume_upstream_of(&j.state, j.restart, (upstream, provider), named, notes)?;
    check_endpoint(&upstream, provider)?;
    let server = format!("{}{}", provider.journal_prefix(), server_of(&upstream));
    Ok((upstream, server))
}

/// A routes config names the upstreams: the flags that name one are not
/// given with it.
fn refuse_upstream_flags(a: &RunArgs) -> Result<()> {
    refuse_flags_with_config(&a.client, a.mock, a.provider)
}

/// [`refuse_upstream_flags`] for any command's flags.
fn refuse_flags_with_config(client: &ClientArgs, mock: bool, provider: ProviderArg) -> Result<()> {
    let given = [
        (client.base_url.is_some(), "--base-url"),
        (client.api_key_env.is_some(), "--api-key-env"),
        (mock, "--mock"),
        (provider != ProviderArg::Openai, "--provider"),
    ];
    if let Some((_, flag)) = given.iter().find(|(on, _)| *on) {
        bail!(
            "{flag} names an upstream, and --config names them all (its [providers.*] and [groups.*]); leave {flag} out"
        );
    }
    Ok(())
}

/// [`ClientArgs`] and the environment resolved.
struct ResolvedClient {
    config: ClientConfig,
    /// The API key's variable is set.
    key_given: bool,
    /// A base URL came from `--base-url` or the environment.
    base_given: bool,
}

impl ResolvedClient {
    /// The key from `--api-key-env` or the provider's variable, the base
    /// URL from `--base-url`, the provider's variable or its default.
    fn resolve_for(
        a: &ClientArgs,
        getenv: &impl Fn(&str) -> Option<String>,
        provider: ProviderKind,
    ) -> Result<Self> {
        let (key_var, base_var) = provider.env();
        let key = getenv(a.api_key_env.as_deref().unwrap_or(key_var))
            .filter(|k| !k.trim().is_empty())
            .map(ApiKey::new);
        let env_base = getenv(base_var).filter(|s| !s.trim().is_empty());
        let base_given = a.base_url.is_some() || env_base.is_some();
        let key_given = key.is_some();
        let config = ClientConfig {
            base_url: a
                .base_url
                .clone()
                .or(env_base)
                .unwrap_or_else(|| provider.default_base().into()),
            api_key: key,
            headers: a.headers.clone(),
            timeout: a.timeout,
            max_response_bytes: max_response_bytes(a.max_response_mb)?,
            ..ClientConfig::default()
        };
        Ok(ResolvedClient {
            config,
            key_given,
            base_given,
        })
    }

    /// `--mock`, or no key and nowhere else to go: rehearse against the
    /// fake provider rather than fail (the command says so loudly).
    fn upstream(self, mock: bool) -> Upstream {
        if mock || !(self.key_given || self.base_given) {
            Upstream::Mock {
                implicit: !mock,
                client: self.config,
            }
        } else {
            Upstream::Remote(self.config)
        }
    }
}

/// Azure has no default endpoint: a key and no endpoint (from the flags,
/// the environment or the journal) is an error that says where to give it.
fn check_endpoint(upstream: &Upstream, provider: ProviderKind) -> Result<()> {
    if let Upstream::Remote(c) = upstream
        && provider == ProviderKind::Azure
        && c.base_url.trim().is_empty()
    {
        bail!(
            "--provider azure needs the resource's endpoint: give --base-url https://NAME.openai.azure.com or set ${}",
            env::AZURE_OPENAI_ENDPOINT
        );
    }
    Ok(())
}

/// `--azure-api-version`, else `$AZURE_OPENAI_API_VERSION` (checked as the
/// flag is), for `--provider azure`; the flag with another provider is
/// refused.
fn azure_api_version(
    a: &ClientArgs,
    getenv: &impl Fn(&str) -> Option<String>,
    provider: ProviderKind,
) -> Result<Option<String>> {
    if provider != ProviderKind::Azure {
        if a.azure_api_version.is_some() {
            bail!("--azure-api-version is Azure's: it needs --provider azure");
        }
        return Ok(None);
    }
    if let Some(v) = &a.azure_api_version {
        return Ok(Some(v.clone()));
    }
    let var = env::AZURE_OPENAI_API_VERSION;
    match getenv(var).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => crate::args::api_version(v.trim())
            .map(Some)
            .map_err(|e| anyhow::anyhow!("${var}: {e}")),
    }
}

/// `--max-response-mb` in bytes.
fn max_response_bytes(mb: u64) -> Result<u64> {
    if mb == 0 {
        bail!("--max-response-mb must be at least 1");
    }
    mb.checked_mul(1024 * 1024)
        .with_context(|| format!("--max-response-mb {mb}: too large"))
}

impl LimitArgs {
    /// The pacer's limits: `--limits FILE`, then `--rpm` / `--tpm` over its
    /// `[default]`.
    fn pacing(&self, notes: &mut Vec<String>) -> Result<PacerConfig> {
        let file = match &self.limits_file {
            Some(path) => Some(limits_file(path, notes)?),
            None => None,
        };
        let mut c =
            (file.as_ref()).map_or_else(PacerConfig::default, PacerConfig::from_limits_file);
        c.rpm = self.rpm.or(c.rpm);
        c.tpm = self.tpm.or(c.tpm);
        Ok(c)
    }

    fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            ..RetryPolicy::default()
        }
    }
}

/// Everything `batchling submit` needs.
#[derive(Debug, Clone)]
pub(crate) struct SubmitSettings {
    pub(crate) job: SubmitJob,
    pub(crate) upstream: Upstream,
    /// The Batch API `upstream` speaks.
    pub(crate) provider: ProviderKind,
    /// `--lenient`, or the journal's (Anthropic's translation).
    pub(crate) lenient: bool,
    /// As for `run`.
    pub(crate) azure_api_version: Option<String>,
    pub(crate) quiet: bool,
    pub(crate) summary_json: Option<PathBuf>,
    /// As for `run`.
    pub(crate) notes: Vec<String>,
    /// `--config`: the routes, and their keys read from the environment.
    pub(crate) routes: Option<ConfigRoutes>,
}

impl SubmitSettings {
    pub(crate) fn resolve(a: SubmitArgs, getenv: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let provider = ProviderKind::of_arg(a.provider);
        if a.config.is_some() {
            refuse_flags_with_config(&a.client, a.mock, a.provider)?;
        } else if a.lenient && provider != ProviderKind::Anthropic {
            bail!(
                "--lenient is about translating OpenAI lines for Anthropic: it needs --provider anthropic (or a --config with an anthropic provider)"
            );
        }
        let mut client = ResolvedClient::resolve_for(&a.client, &getenv, provider)?;
        client.config.pool_size = a.limits.concurrency;
        let upstream = client.upstream(a.mock);
        let azure_api_version = azure_api_version(&a.client, &getenv, provider)?;
        if a.input.as_os_str() == "-" {
            bail!(
                "submit needs a file (parts are rebuilt from it on resume), not - (stdin); save the input to a file"
            );
        }
        if a.max_requests_per_batch == Some(0) {
            bail!("--max-requests-per-batch must be at least 1");
        }
        if a.max_batch_bytes == Some(0) {
            bail!("--max-batch-bytes must be at least 1");
        }
        let j = Journaling::resolve(a.journal, &a.output, a.errors)?;
        let mut notes = Vec::new();
        let named = a.mock || a.client.base_url.is_some();
        let (upstream, server, routes) = submit_upstream(
            (&j.state, j.restart),
            (upstream, provider, named),
            a.config.as_deref(),
            &getenv,
            &mut notes,
        )?;
        let lenient = resume_lenient(&j.state, j.restart, a.lenient, &mut notes)?;
        let server = Some(server);
        let retry = a.limits.retry();
        let mut online = Job::new(Input::File(a.input.clone()), a.output.clone());
        online.pacing = a.limits.pacing(&mut notes)?;
        online.concurrency = a.limits.concurrency;
        online.retry = retry;
        online.server = server.clone();
        let job = SubmitJob {
            input: a.input,
            output: a.output,
            errors: j.errors,
            state: j.state,
            order: j.order,
            restart: j.restart,
            durable: j.durable,
            // The API's own limits apply too (the engine takes the smaller).
            limits: PartLimits {
                max_requests: a.max_requests_per_batch.unwrap_or(usize::MAX),
                max_bytes: a.max_batch_bytes.unwrap_or(u64::MAX),
            },
            skip_invalid: a.skip_invalid,
            poll_interval: a.poll_interval,
            max_poll_interval: a.max_poll_interval.max(a.poll_interval),
            api_retry: retry,
            resubmit: a.resubmit,
            finish_online: a.finish_online,
            deadline: a.deadline,
            deadline_margin: a.deadline_margin,
            prices: Some(j.prices),
            online,
            server,
        };
        Ok(SubmitSettings {
            job,
            upstream,
            provider,
            lenient,
            azure_api_version,
            quiet: j.quiet,
            summary_json: j.summary_json,
            notes,
            routes,
        })
    }
}

/// Where a submit sends: a routes config's upstreams (`config`; no
/// built-in fake is started, its client settings are shared), or the one
/// of the flags, as the journal allows a resume. Also the server the
/// journal records, and the config's routes.
fn submit_upstream(
    (state, restart): (&Path, bool),
    (upstream, provider, named): (Upstream, ProviderKind, bool),
    config: Option<&Path>,
    getenv: &impl Fn(&str) -> Option<String>,
    notes: &mut Vec<String>,
) -> Result<(Upstream, String, Option<ConfigRoutes>)> {
    check_config_resume(state, restart, config)?;
    if let Some(path) = config {
        let routes = ConfigRoutes::load(path, getenv, notes)?;
        let upstream = match upstream {
            Upstream::Mock { client, .. } => Upstream::Remote(client),
            remote => remote,
        };
        let server = format!("{CONFIG_SERVER}{}", path.display());
        return Ok((upstream, server, Some(routes)));
    }
    let upstream = resume_upstream_of(state, restart, (upstream, provider), named, notes)?;
    check_endpoint(&upstream, provider)?;
    let server = format!("{}{}", provider.journal_prefix(), server_of(&upstream));
    Ok((upstream, server, None))
}

/// Everything `batchling cancel` needs.
#[derive(Debug, Clone)]
pub(crate) struct CancelSettings {
    pub(crate) state: PathBuf,
    pub(crate) client: ClientConfig,
    /// The Batch API the submit used, as its journal records.
    pub(crate) provider: ProviderKind,
    /// As for `run`.
    pub(crate) azure_api_version: Option<String>,
    pub(crate) poll_interval: Duration,
    pub(crate) prices: Arc<Catalog>,
    pub(crate) quiet: bool,
    /// As for `run`.
    pub(crate) notes: Vec<String>,
    /// The routes config of a `submit --config` journal: each part is
    /// cancelled on its target's Batch API.
    pub(crate) routes: Option<ConfigRoutes>,
}

impl CancelSettings {
    pub(crate) fn resolve(a: CancelArgs, getenv: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let recorded = recorded_config(&a.state, false).flatten();
        if let Some(path) = a.config.clone().or(recorded) {
            check_config_resume(&a.state, false, Some(&path))?;
            refuse_flags_with_config(&a.client, false, ProviderArg::Openai)?;
            let mut notes = Vec::new();
            let routes = ConfigRoutes::load(&path, &getenv, &mut notes)?;
            let client =
                ResolvedClient::resolve_for(&a.client, &getenv, ProviderKind::OpenAi)?.config;
            return Ok(CancelSettings {
                azure_api_version: None,
                state: a.state,
                client,
                provider: ProviderKind::OpenAi,
                poll_interval: a.poll_interval,
                prices: Arc::new(catalog(a.prices.as_deref())?),
                quiet: a.quiet,
                notes,
                routes: Some(routes),
            });
        }
        // The batches are where the submit sent them, on the API it used:
        // the journal says both.
        let provider = match recorded_server(&a.state, false) {
            Some(Some(r)) => ProviderKind::of_recorded(&r).0,
            _ => ProviderKind::OpenAi,
        };
        let client = ResolvedClient::resolve_for(&a.client, &getenv, provider)?.config;
        let mut notes = Vec::new();
        let named = a.client.base_url.is_some();
        let upstream = resume_upstream_of(
            &a.state,
            false,
            (Upstream::Remote(client), provider),
            named,
            &mut notes,
        )?;
        check_endpoint(&upstream, provider)?;
        let client = match upstream {
            Upstream::Remote(c) => c,
            Upstream::Mock { .. } => bail!(
                "the submit of {} ran on the built-in fake provider, whose batches ended with it: there is nothing to cancel",
                a.state.display()
            ),
        };
        Ok(CancelSettings {
            azure_api_version: azure_api_version(&a.client, &getenv, provider)?,
            state: a.state,
            client,
            provider,
            poll_interval: a.poll_interval,
            prices: Arc::new(catalog(a.prices.as_deref())?),
            quiet: a.quiet,
            notes,
            routes: None,
        })
    }
}

/// Everything `batchling serve` needs.
#[derive(Debug, Clone)]
pub(crate) struct ServeSettings {
    pub(crate) listen: std::net::SocketAddr,
    pub(crate) config: ServeConfig,
    /// Start the fake provider and use it as the one upstream.
    pub(crate) mock: bool,
    pub(crate) log_json: bool,
    /// Things worth saying before the server starts (the config's form,
    /// its warnings).
    pub(crate) notes: Vec<String>,
}

impl ServeSettings {
    pub(crate) fn resolve(a: ServeArgs, getenv: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut notes = Vec::new();
        let (upstreams, routes, file_keys_env) = match &a.config {
            Some(path) => serve_file(path, &a, &getenv, &mut notes)?,
            None => (vec![upstream_from_flags(&a, &getenv)?], None, None),
        };
        let mut config = ServeConfig::new(a.data_dir, upstreams);
        config.routes = routes;
        let keys_env = a.auth_keys_env.or(file_keys_env);
        config.auth_keys = client_keys(keys_env.as_deref(), a.no_auth, &getenv)?;
        config.no_auth = a.no_auth;
        config.max_upload_bytes = a.max_upload_mb * 1024 * 1024;
        config.http.body_timeout = a.body_timeout;
        config.completion_window = a.batch_window;
        config.max_running_batches = a.max_running_batches;
        config.max_attempts = a.max_attempts;
        config.keep_journals = a.keep_journals;
        Ok(ServeSettings {
            listen: a.listen,
            config,
            mock: a.mock,
            log_json: a.log_format == LogFormat::Json,
            notes,
        })
    }
}

/// What `serve --config FILE` gives: the upstreams of the older form (with
/// a note pointing to the routes form), or a routes config; and the
/// variable of the client keys the file names.
type ServeFile = (Vec<UpstreamConfig>, Option<RoutesSetup>, Option<String>);

fn serve_file(
    path: &Path,
    a: &ServeArgs,
    getenv: &impl Fn(&str) -> Option<String>,
    notes: &mut Vec<String>,
) -> Result<ServeFile> {
    let defaults = RoutesSetupDefaults {
        timeout: a.timeout,
        ..RoutesSetupDefaults::default()
    };
    Ok(match serve_config::load_any(path, &defaults, getenv)? {
        ConfigFile::Upstreams(loaded) => {
            notes.push(format!(
                "{}: [[upstream]] tables still work; the routes config (providers, groups, models, routes, and [serve]) adds fallbacks and key pools: README, \"batchling serve\"",
                path.display()
            ));
            (loaded.upstreams, None, loaded.auth_keys_env)
        }
        ConfigFile::Routes {
            setup,
            auth_keys_env,
            warnings,
        } => {
            notes.extend(warnings);
            (Vec::new(), Some(*setup), auth_keys_env)
        }
    })
}

/// A `--limits` file for the client side. Its `[groups]` name the fake
/// provider's keys: ignored here, with a note (a run has one key, so one
/// limit group); `window` and `token_count` describe how the fake provider
/// enforces and counts, and are ignored silently.
fn limits_file(path: &Path, notes: &mut Vec<String>) -> Result<LimitsFile> {
    let file = LimitsFile::load(path)?;
    if !file.table.groups.is_empty() {
        notes.push(format!(
            "{}: [groups] is for `batchling mock` (which keys share a budget); the limits here apply to the one key this command sends with",
            path.display()
        ));
    }
    Ok(file)
}

/// The one upstream `serve` is given by flags (no `--config`): of the
/// kind `--provider` names, with its key and base URL variables.
fn upstream_from_flags(
    a: &ServeArgs,
    getenv: &impl Fn(&str) -> Option<String>,
) -> Result<UpstreamConfig> {
    let provider = ProviderKind::of_arg(a.provider);
    if provider == ProviderKind::Azure {
        bail!("serve does not speak to Azure OpenAI yet: give --provider openai or anthropic");
    }
    let (key_var, base_var) = provider.env();
    let base = a
        .base_url
        .clone()
        .or_else(|| getenv(base_var).filter(|s| !s.trim().is_empty()));
    let base = match (base, a.mock, provider) {
        (Some(b), _, _) => b,
        // Replaced by the fake provider's URL once it has started.
        (None, true, _) => String::new(),
        (None, false, ProviderKind::Anthropic) => provider.default_base().to_owned(),
        (None, false, ProviderKind::OpenAi | ProviderKind::Azure) => bail!(
            "no upstream: give --base-url URL (or $OPENAI_BASE_URL), --config FILE for several, or --mock to try the API on the built-in fake provider"
        ),
    };
    let name = if a.mock { "mock" } else { "default" };
    let mut up = match provider {
        ProviderKind::OpenAi => UpstreamConfig::new(name, &base),
        ProviderKind::Anthropic => UpstreamConfig::anthropic(name, &base),
        ProviderKind::Azure => unreachable!("refused above"),
    };
    let key_var = a.api_key_env.as_deref().unwrap_or(key_var);
    up.api_key = getenv(key_var)
        .filter(|k| !k.trim().is_empty())
        .map(ApiKey::new);
    if provider == ProviderKind::Anthropic && up.api_key.is_none() && !a.mock {
        bail!(
            "--provider anthropic: ${key_var} is not set; Anthropic refuses every request without a key (set it, or name another variable with --api-key-env)"
        );
    }
    if a.lenient && provider != ProviderKind::Anthropic {
        bail!(
            "--lenient is about translating OpenAI lines for Anthropic: it needs --provider anthropic"
        );
    }
    up.lenient = a.lenient;
    up.headers = a.headers.clone();
    up.rpm = a.rpm;
    up.tpm = a.tpm;
    if let Some(path) = &a.limits_file {
        // A serve upstream has one key: its groups are the mock's business.
        up.limits_file = Some(limits_file(path, &mut Vec::new())?);
    }
    up.concurrency = a.concurrency;
    up.timeout = a.timeout;
    up.max_response_bytes = max_response_bytes(a.max_response_mb)?;
    Ok(up)
}

/// The client keys `serve` accepts, from the variable named by
/// `--auth-keys-env` (or the config file); none only with `--no-auth`.
fn client_keys(
    var: Option<&str>,
    no_auth: bool,
    getenv: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<ApiKey>> {
    let Some(var) = var else {
        if no_auth {
            return Ok(Vec::new());
        }
        bail!(
            "no client keys: name the variable holding them with --auth-keys-env NAME (comma-separated), or pass --no-auth to accept any client"
        );
    };
    let keys = serve_config::split_keys(&getenv(var).unwrap_or_default());
    if keys.is_empty() {
        bail!(
            "${var} holds no client keys; set it to a comma-separated list of keys, or pass --no-auth"
        );
    }
    Ok(keys)
}

/// A journal to read: it must exist and be a file (a clearer message than
/// SQLite's).
fn existing_journal(state: PathBuf) -> Result<PathBuf> {
    if !state.exists() {
        bail!(
            "{} does not exist; give the journal of a run (OUTPUT.journal by default)",
            state.display()
        );
    }
    if state.is_dir() {
        bail!(
            "{} is a directory; give the journal file of a run (OUTPUT.journal by default)",
            state.display()
        );
    }
    Ok(state)
}

/// Everything `batchling status` needs.
#[derive(Debug, Clone)]
pub(crate) struct StatusSettings {
    /// The journal (empty with `store`).
    pub(crate) state: PathBuf,
    pub(crate) json: bool,
    /// `--store URL --job ID`: a shared job's status instead.
    pub(crate) store: Option<StoreJob>,
    /// `--delete` (and `--force`).
    pub(crate) delete: Option<bool>,
}

impl StatusSettings {
    pub(crate) fn resolve(a: StatusArgs) -> Result<Self> {
        let store = store_job(a.store, a.job)?;
        let state = match (a.state, &store) {
            (_, Some(_)) => PathBuf::new(),
            (Some(state), None) => existing_journal(state)?,
            (None, None) => bail!("give the journal (or --store URL --job ID)"),
        };
        Ok(StatusSettings {
            state,
            json: a.json,
            store,
            delete: a.delete.then_some(a.force),
        })
    }
}

/// `--store URL --job ID`, both or neither (clap checks that).
fn store_job(url: Option<String>, job: Option<i64>) -> Result<Option<StoreJob>> {
    match (url, job) {
        (Some(url), Some(job)) => Ok(Some(StoreJob {
            url,
            job: batchling_queue::JobId(job),
        })),
        (None, None) => Ok(None),
        _ => bail!("--store and --job go together"),
    }
}

/// Everything `batchling export` needs.
#[derive(Debug, Clone)]
pub(crate) struct ExportSettings {
    /// The journal (empty with `store`).
    pub(crate) state: PathBuf,
    /// `--store URL --job ID`: export a shared job instead.
    pub(crate) store: Option<StoreJob>,
    pub(crate) output: PathBuf,
    pub(crate) errors: PathBuf,
    pub(crate) order: Order,
    pub(crate) who_answered: bool,
}

impl ExportSettings {
    pub(crate) fn resolve(a: ExportArgs) -> Result<Self> {
        let store = store_job(a.store, a.job)?;
        let state = match (a.state, &store) {
            (_, Some(_)) => PathBuf::new(),
            (Some(state), None) => existing_journal(state)?,
            (None, None) => bail!("give the journal (or --store URL --job ID)"),
        };
        Ok(ExportSettings {
            store,
            errors: errors_path(&a.output, a.errors)?,
            state,
            output: a.output,
            order: order(a.order),
            who_answered: a.who_answered,
        })
    }
}

/// Everything `batchling prices` needs.
#[derive(Debug, Clone)]
pub(crate) struct PricesSettings {
    pub(crate) catalog: Catalog,
    pub(crate) json: bool,
}

impl PricesSettings {
    pub(crate) fn resolve(a: PricesArgs) -> Result<Self> {
        Ok(PricesSettings {
            catalog: catalog(a.prices.as_deref())?,
            json: a.json,
        })
    }
}

/// Everything `batchling estimate` needs.
#[derive(Debug, Clone)]
pub(crate) struct EstimateSettings {
    pub(crate) input: PathBuf,
    /// Price for these models instead of each line's own.
    pub(crate) models: Vec<String>,
    pub(crate) output_tokens: Option<u64>,
    /// A journal of an earlier run, for the expected output and the limits.
    pub(crate) state: Option<PathBuf>,
    pub(crate) rpm: Option<u64>,
    pub(crate) tpm: Option<u64>,
    pub(crate) default_max_tokens: u64,
    pub(crate) catalog: Catalog,
    pub(crate) json: bool,
    /// `--config`: lines priced at their routes' targets.
    pub(crate) routes: Option<RoutesConfig>,
}

impl EstimateSettings {
    pub(crate) fn resolve(a: EstimateArgs) -> Result<Self> {
        let catalog = catalog(a.prices.as_deref())?;
        if !a.input.exists() {
            bail!(
                "{} does not exist; give the JSONL input to estimate",
                a.input.display()
            );
        }
        if !a.input.is_file() {
            bail!(
                "{} is not a file; give the JSONL input to estimate",
                a.input.display()
            );
        }
        let routes = match &a.config {
            Some(path) => Some(RoutesConfig::load(path)?),
            None => None,
        };
        Ok(EstimateSettings {
            routes,
            input: a.input,
            models: a.models,
            output_tokens: a.output_tokens,
            state: a.state,
            rpm: a.rpm,
            tpm: a.tpm,
            default_max_tokens: a.default_max_tokens,
            catalog,
            json: a.json,
        })
    }
}

/// Everything `batchling mock` needs.
#[derive(Debug, Clone)]
pub(crate) struct MockSettings {
    pub(crate) addr: SocketAddr,
    pub(crate) config: MockConfig,
}

impl MockSettings {
    /// The fake provider's settings: the flags, over a `--limits` file.
    pub(crate) fn resolve(a: MockArgs) -> Result<Self> {
        let mut config = MockConfig {
            latency: Duration::from_millis(a.latency_ms),
            latency_jitter: Duration::from_millis(a.jitter_ms),
            send_limit_headers: !a.no_limit_headers,
            faults: Faults {
                error_500: a.error_500,
                error_503: a.error_503,
                drop_connection: a.drop_connection,
                malformed_body: a.malformed,
                overloaded: a.overloaded,
                ..Faults::default()
            },
            seed: a.seed,
            shape: match a.shape {
                ShapeArg::Openai => Shape::OpenAi,
                ShapeArg::Azure => Shape::Azure,
                ShapeArg::Groq => Shape::Groq,
            },
            content_filter: a.content_filter,
            // A standalone server may see millions of distinct requests; the
            // per-request table is for in-process tests.
            track_keys: false,
            ..MockConfig::default()
        };
        if let Some(path) = &a.limits {
            config.apply_limits(LimitsFile::load(path)?);
        }
        // Flags win over the file.
        config.rpm = a.rpm.or(config.rpm);
        config.tpm = a.tpm.or(config.tpm);
        config.itpm = a.itpm.or(config.itpm);
        config.otpm = a.otpm.or(config.otpm);
        config.token_count = a.token_count.unwrap_or(config.token_count);
        if a.per_second {
            config.window = LimitWindow::Second;
        }
        Ok(MockSettings {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, a.port)),
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Command};

    fn run_settings(args: &[&str]) -> Result<RunSettings> {
        let cli = Cli::try_parse_from(
            [&["batchling", "run", "in.jsonl", "-o", "out.jsonl"], args].concat(),
        )?;
        let Command::Run(a) = cli.command else {
            panic!("not the run command")
        };
        RunSettings::resolve(*a, |k| {
            (k == env::OPENAI_API_KEY).then(|| "sk-test".to_owned())
        })
    }

    #[test]
    fn run_flags_win_over_the_limits_files_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits.toml");
        std::fs::write(
            &path,
            "[default]\nrpm = 10\ntpm = 99\notpm = 7\n[models.m]\nrpm = 2\n[groups]\norg = [\"sk-a\"]\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let s = run_settings(&["--limits", file]).unwrap();
        let p = &s.job.pacing;
        assert_eq!((p.rpm, p.tpm, p.otpm), (Some(10), Some(99), Some(7)));
        assert!(!p.models.is_empty());
        assert!(
            s.notes
                .iter()
                .any(|n| n.contains("[groups] is for `batchling mock`")),
            "{:?}",
            s.notes
        );
        let s = run_settings(&["--limits", file, "--rpm", "5"]).unwrap();
        let p = &s.job.pacing;
        assert_eq!(
            (p.rpm, p.tpm),
            (Some(5), Some(99)),
            "the flag wins, the file fills in"
        );
        let s = run_settings(&["--tpm", "50"]).unwrap();
        let p = &s.job.pacing;
        assert_eq!((p.rpm, p.tpm), (None, Some(50)));
        assert!(p.models.is_empty());
    }

    #[test]
    fn serve_takes_a_routes_config_and_notes_the_older_form() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.toml");
        let resolve = |text: &str, extra: &[&str]| {
            std::fs::write(&path, text).unwrap();
            let mut args = vec!["batchling", "serve", "--config", path.to_str().unwrap()];
            args.extend_from_slice(extra);
            let Command::Serve(a) = Cli::try_parse_from(args).unwrap().command else {
                panic!("not the serve command")
            };
            let getenv = |v: &str| match v {
                "K1" => Some("test-key".to_owned()),
                "CLIENTS" => Some("client-a,client-b".to_owned()),
                _ => None,
            };
            ServeSettings::resolve(*a, getenv)
        };
        let routes = "[serve]\nauth_keys_env = \"CLIENTS\"\n\n[providers.p]\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:9/v1\"\n\n[groups.g]\nprovider = \"p\"\nkeys = [{ id = \"k1\", env = \"K1\" }]\n\n[models.m]\nprovider = \"p\"\ngroups = [\"g\"]\n";
        let s = resolve(routes, &["--timeout", "9"]).unwrap();
        let setup = s.config.routes.as_ref().expect("the routes");
        assert!(s.config.upstreams.is_empty());
        assert_eq!(
            setup.timeout,
            Duration::from_secs(9),
            "the flag, as [serve] has none"
        );
        assert_eq!(s.config.auth_keys.len(), 2, "client keys named by [serve]");
        assert!(s.notes.is_empty(), "{:?}", s.notes);

        let old = "[[upstream]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:9/v1\"\n";
        let s = resolve(old, &["--no-auth"]).unwrap();
        assert!(s.config.routes.is_none());
        assert_eq!(s.config.upstreams[0].name, "a");
        assert_eq!(s.notes.len(), 1, "{:?}", s.notes);
        assert!(
            s.notes[0].contains("[[upstream]] tables still work"),
            "{:?}",
            s.notes
        );
    }

    #[test]
    fn serve_takes_a_limits_file_for_its_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits.toml");
        std::fs::write(&path, "[default]\nrpm = 10\n[models.m]\ntpm = 3\n").unwrap();
        let args = [
            "batchling",
            "serve",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--no-auth",
            "--limits",
            path.to_str().unwrap(),
            "--tpm",
            "99",
        ];
        let Command::Serve(a) = Cli::try_parse_from(args).unwrap().command else {
            panic!("not the serve command")
        };
        let s = ServeSettings::resolve(*a, |_| None).unwrap();
        let up = &s.config.upstreams[0];
        let file = up.limits_file.as_ref().expect("the file is kept");
        assert_eq!((file.rpm, file.table.models[0].tpm), (Some(10), Some(3)));
        assert_eq!(
            up.tpm,
            Some(99),
            "the flag, which wins over the file's default"
        );
    }

    #[test]
    fn serve_provider_anthropic_is_one_claude_upstream() {
        let resolve = |extra: &[&str], getenv: &dyn Fn(&str) -> Option<String>| {
            let mut args = vec!["batchling", "serve", "--no-auth", "--provider", "anthropic"];
            args.extend_from_slice(extra);
            let Command::Serve(a) = Cli::try_parse_from(args).unwrap().command else {
                panic!("not the serve command")
            };
            ServeSettings::resolve(*a, getenv)
        };
        let env = |v: &str| (v == "ANTHROPIC_API_KEY").then(|| "sk-ant".to_owned());
        let s = resolve(&["--header", "anthropic-beta: b1"], &env).unwrap();
        let up = &s.config.upstreams[0];
        assert_eq!(up.kind, serve_config::UpstreamKind::Anthropic);
        assert_eq!(
            up.base_url,
            batchling_providers::anthropic::client::DEFAULT_BASE_URL
        );
        assert_eq!(up.api_key.as_ref().unwrap().expose(), "sk-ant");
        assert_eq!(up.models, ["*"], "the one upstream serves every model");
        assert_eq!(up.headers, [("anthropic-beta".into(), "b1".into())]);
        assert!(!up.lenient, "strict by default");
        let s = resolve(&["--base-url", "http://127.0.0.1:9", "--lenient"], &env).unwrap();
        assert_eq!(s.config.upstreams[0].base_url, "http://127.0.0.1:9");
        assert!(s.config.upstreams[0].lenient);
        // No key: refused before starting, naming the variable.
        let e = resolve(&[], &|_| None).unwrap_err().to_string();
        assert!(e.contains("$ANTHROPIC_API_KEY is not set"), "{e}");
        let e = resolve(&["--api-key-env", "MY_KEY"], &env).unwrap_err();
        assert!(e.to_string().contains("$MY_KEY is not set"), "{e}");
        // --mock needs none (the fake's key is filled in at start).
        assert!(resolve(&["--mock"], &|_| None).is_ok());
        // OpenAI stays the default, with its variables.
        let Command::Serve(a) = Cli::try_parse_from([
            "batchling",
            "serve",
            "--no-auth",
            "--base-url",
            "http://x/v1",
        ])
        .unwrap()
        .command
        else {
            panic!("not the serve command")
        };
        let s =
            ServeSettings::resolve(*a, |v| (v == "OPENAI_API_KEY").then(|| "sk".into())).unwrap();
        assert_eq!(
            s.config.upstreams[0].kind,
            serve_config::UpstreamKind::OpenAi
        );
        assert!(s.config.upstreams[0].api_key.is_some());
    }

    #[test]
    fn a_bad_run_limits_file_names_its_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits.toml");
        std::fs::write(
            &path,
            "[models.a]\nrpm = 1\n[models.b]\nmodels = [\"a\"]\ntpm = 5\n",
        )
        .unwrap();
        let err = run_settings(&["--limits", path.to_str().unwrap()])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.ends_with("limits.toml line 4, models.b.models: the model \"a\" is already in [models.a]: a model shares one limit only"),
            "{err}"
        );
        std::fs::write(&path, "[models.a]\nrpn = 3\n").unwrap();
        let err = run_settings(&["--limits", path.to_str().unwrap()])
            .err()
            .unwrap()
            .to_string();
        assert!(err.ends_with("limits.toml line 2, models.a.rpn: unknown field: expected rpm, tpm, itpm, otpm or models"), "{err}");
    }
}
