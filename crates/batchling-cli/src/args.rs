//! Command-line arguments, as clap sees them. Nothing else reads these:
//! `settings` resolves them once into plain values. Each value's own check
//! is a `value_parser` at the end of this file, written once: clap's error
//! names the flag and the bad value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Get thousands to millions of LLM API requests answered: paced to the
/// provider's limits, retried, each exactly once.
#[derive(Debug, Parser)]
#[command(
    name = "batchling",
    version,
    // The doc comment above, not Cargo's description.
    about = "Get thousands to millions of LLM API requests answered: paced to the provider's \
             limits, retried, journaled, each exactly once.",
    max_term_width = 100,
    after_help = AFTER_HELP
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

const AFTER_HELP: &str = "\
Where to start:
  batchling estimate requests.jsonl              tokens, cost and time, nothing sent
  batchling run requests.jsonl -o results.jsonl  answers in results.jsonl, failures in
                                                 results.errors.jsonl, a journal beside them
  batchling status results.jsonl.journal         how far a job got (also while it runs)

The input is OpenAI's batch format (one request per line). Without OPENAI_API_KEY and
--base-url, run and submit send to the built-in fake provider, and say so. Stopped or
crashed? Run the same command again: it resumes from the journal.

Exit codes: 0 every request answered, 1 some failed, 2 usage, configuration or I/O error, or
a run stopped (budget, key, quota, outage), 130 interrupted.";

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Send every request of a JSONL file online, paced, retried, resumable.
    ///
    /// The input is OpenAI's batch input format; the answers are written in
    /// OpenAI's batch output format.
    Run(Box<RunArgs>),
    /// Send a file through a provider's Batch API at batch prices.
    ///
    /// The file is split into parts (Files + Batches API), tracked in the
    /// journal and resumable (the same command again reattaches to the
    /// batches it created; `--restart` does not cancel them: use `batchling
    /// cancel` first); results are merged into the same output and error
    /// files as `run`.
    Submit(Box<SubmitArgs>),
    /// Cancel the live batches of a `submit` journal, keeping what finished.
    ///
    /// Sends to the server the journal records; writes the output and error
    /// files.
    Cancel(CancelArgs),
    /// Show a journal's progress: outcomes, tokens, cost, last errors.
    Status(StatusArgs),
    /// Write the output and error files from a journal.
    Export(ExportArgs),
    /// Price a file before sending it: tokens, cost and time, per model.
    ///
    /// Costs online and through a Batch API, and the time at given limits.
    Estimate(EstimateArgs),
    /// List the price catalog (USD per 1M tokens).
    Prices(PricesArgs),
    /// Check a routes config file (providers, limit groups, models, routes).
    Config(ConfigArgs),
    /// Start the built-in fake provider, to rehearse a run for free.
    ///
    /// An OpenAI-compatible server with limits, latency and faults, and a
    /// fake Files + Batches API.
    Mock(MockArgs),
    /// Serve OpenAI's Files + Batches API, running batches on any upstream.
    ///
    /// Code written for OpenAI's Batch API changes only its base_url.
    Serve(Box<ServeArgs>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OrderArg {
    /// Output lines in the order of the input file.
    Input,
    /// Output lines as requests finish.
    Completion,
}

/// Where requests go and how: shared by `run` and `submit`.
#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    /// API base URL including /v1, as in the official SDKs [default: the
    /// server the journal records when resuming, else $OPENAI_BASE_URL, else
    /// https://api.openai.com/v1 when the API key is set, else the built-in
    /// fake provider (run and submit say so)].
    // The doc comment is the help text: the URL stays bare there.
    #[allow(rustdoc::bare_urls)]
    #[arg(long)]
    pub(crate) base_url: Option<String>,

    /// Name of the environment variable holding the API key [default:
    /// OPENAI_API_KEY; ANTHROPIC_API_KEY for --provider anthropic,
    /// AZURE_OPENAI_API_KEY for --provider azure].
    #[arg(long, value_name = "NAME")]
    pub(crate) api_key_env: Option<String>,

    /// Extra header sent with every request, as 'Name: value' (repeatable).
    #[arg(long = "header", value_name = "'K: V'", value_parser = header)]
    pub(crate) headers: Vec<(String, String)>,

    /// Timeout of each HTTP call in seconds: each attempt of a request, and
    /// for submit and cancel each Files/Batches API call (uploads and
    /// downloads included).
    #[arg(
        long,
        default_value = "600",
        value_name = "SECS",
        value_parser = positive_secs,
        allow_negative_numbers = true
    )]
    pub(crate) timeout: Duration,

    /// Largest answer read, in MiB: a larger one is cut off and becomes a
    /// response_too_large error, not retried.
    #[arg(long, default_value_t = DEFAULT_MAX_RESPONSE_MB, value_name = "MB")]
    pub(crate) max_response_mb: u64,

    /// With --provider azure: the api-version of Azure's dated URLs
    /// (/openai/deployments/{model}/...?api-version=V, the deployment taken
    /// from each line's body.model) [default: $AZURE_OPENAI_API_VERSION,
    /// else the v1 URLs, /openai/v1/..., the model in the body].
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = api_version)]
    pub(crate) azure_api_version: Option<String>,
}

/// `--max-response-mb`'s default (the providers' cap, in MiB).
pub(crate) const DEFAULT_MAX_RESPONSE_MB: u64 =
    batchling_providers::openai::DEFAULT_MAX_RESPONSE_BYTES / (1024 * 1024);

/// Pacing and retries of online requests: shared by `run` and `submit`.
#[derive(Debug, Args)]
pub(crate) struct LimitArgs {
    /// Requests-per-minute limit of each model, as the provider's limits page lists it, not a
    /// total [default: learned from the provider's headers].
    #[arg(long, value_parser = rate_limit)]
    pub(crate) rpm: Option<u64>,

    /// Tokens-per-minute limit of each model, not a total [default: learned from the provider's
    /// headers].
    #[arg(long, value_parser = rate_limit)]
    pub(crate) tpm: Option<u64>,

    /// Limits per model and families sharing one, as the provider's limits page lists them: TOML
    /// with a default table and one per model or family (rpm, tpm, itpm, otpm, models), the same
    /// file `batchling mock --limits` reads (see the README). --rpm/--tpm win over its default.
    #[arg(long = "limits", value_name = "FILE")]
    pub(crate) limits_file: Option<PathBuf>,

    /// Most requests in flight at once.
    #[arg(long, default_value_t = batchling_engine::DEFAULT_CONCURRENCY, value_parser = at_least_one::<usize>)]
    pub(crate) concurrency: usize,

    /// Attempts per request, the first included (429s do not count); for
    /// submit also per Files/Batches API call.
    #[arg(long, default_value_t = 6, value_parser = at_least_one::<u32>)]
    pub(crate) max_attempts: u32,
}

/// The journal and the files written from it: shared by `run` and `submit`.
#[derive(Debug, Args)]
pub(crate) struct JournalArgs {
    /// Order of output lines.
    #[arg(long, value_enum, default_value_t = OrderArg::Input)]
    pub(crate) order: OrderArg,

    /// The journal [default: OUTPUT with .journal appended]. Running the same
    /// command again picks up where it stopped.
    #[arg(long, value_name = "PATH")]
    pub(crate) state: Option<PathBuf>,

    /// Clear the journal and start over.
    #[arg(long)]
    pub(crate) restart: bool,

    /// Commit the journal without fsync: survives a crash of batchling but
    /// not of the machine. Faster on slow disks.
    #[arg(long)]
    pub(crate) no_fsync: bool,

    /// Extra or overriding prices: our TOML/JSON format, or LiteLLM's
    /// model_prices_and_context_window.json.
    #[arg(long, value_name = "FILE")]
    pub(crate) prices: Option<PathBuf>,

    /// Write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) summary_json: Option<PathBuf>,

    /// No progress bar, status lines, notices or summary on stderr (errors
    /// and --summary-json still are written).
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Input JSONL file (one request per line), or - for standard input.
    /// With --store --job ID it may be left out (the job is in the store).
    #[arg(required_unless_present = "job")]
    pub(crate) input: Option<String>,

    /// Output file for successful answers.
    #[arg(short, long)]
    pub(crate) output: PathBuf,

    /// Error file for failed and invalid requests [default: OUTPUT with
    /// .errors before its extension].
    #[arg(long)]
    pub(crate) errors: Option<PathBuf>,

    /// Check the whole file first and refuse to start if any line is bad.
    #[arg(long)]
    pub(crate) strict: bool,

    #[command(flatten)]
    pub(crate) client: ClientArgs,

    #[command(flatten)]
    pub(crate) limits: LimitArgs,

    /// When the upstream fails everything, keep probing this long before
    /// stopping (e.g. 10m, 90s).
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = duration)]
    pub(crate) give_up_after: Duration,

    /// A rate budget shared with other batchling processes, kept in Redis
    /// (redis://HOST:PORT): processes sending with the same key spend its
    /// limits once between them (its lanes: base URL and key, limit group,
    /// model; the limits each process has in force, given or learned).
    #[arg(long, value_name = "URL", env = "BATCHLING_LIMITER")]
    pub(crate) limiter: Option<String>,

    /// The prefix of the shared budget's keys in Redis.
    #[arg(long, value_name = "PREFIX", default_value = "batchling")]
    pub(crate) limiter_prefix: String,

    /// A job shared by many workers, kept in PostgreSQL
    /// (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?schema=NAME&lease_ttl=SECONDS]`): the
    /// input is loaded once (the same file joins the same job), every
    /// worker running this command claims its requests from there and
    /// writes every answer back; --max-cost is the whole job's. The
    /// output files are written from the store.
    #[arg(long, value_name = "URL", env = "BATCHLING_STORE")]
    pub(crate) store: Option<String>,

    /// With --store: join the job with this id (printed by the worker that
    /// loaded it), on a machine without the input.
    #[arg(long, value_name = "ID", requires = "store")]
    pub(crate) job: Option<i64>,

    /// Output tokens assumed for a request that sets no max_tokens /
    /// max_completion_tokens / max_output_tokens: reserved against --tpm and
    /// in --max-cost's worst case.
    #[arg(long, default_value_t = batchling_engine::DEFAULT_MAX_OUTPUT, value_name = "N")]
    pub(crate) default_max_tokens: u64,

    /// Ignore x-ratelimit-* headers: pace only by --rpm/--tpm.
    #[arg(long)]
    pub(crate) ignore_limit_headers: bool,

    /// Use HTTP/2 when the server offers it (one connection per host).
    #[arg(long)]
    pub(crate) http2: bool,

    /// Send to the built-in fake provider instead of a real one.
    #[arg(long, conflicts_with = "base_url")]
    pub(crate) mock: bool,

    /// On resume, send requests that failed before again.
    #[arg(long)]
    pub(crate) retry_failed: bool,

    /// Hard budget in USD for the whole job (earlier runs of the journal
    /// included): each request's worst case is reserved before it is sent
    /// and replaced by its real cost when it is answered. A request that
    /// does not fit waits for those in flight; the run stops when nothing
    /// is in flight and the next still does not fit (resumable with a
    /// higher budget).
    #[arg(
        long,
        value_name = "USD",
        value_parser = positive_usd,
        allow_negative_numbers = true
    )]
    pub(crate) max_cost: Option<f64>,

    /// Response cache shared across runs: a request whose endpoint and body
    /// equal an earlier answered one is answered from it, not sent.
    #[arg(long, value_name = "PATH")]
    pub(crate) cache: Option<PathBuf>,

    /// The journal and what is written from it.
    #[command(flatten)]
    pub(crate) journal: JournalArgs,

    // Provider selection (Anthropic): kept together.
    /// The API the upstream speaks: openai (OpenAI and compatible servers),
    /// anthropic (Claude's Messages API: /v1/messages lines as they are,
    /// /v1/chat/completions lines translated; key from $ANTHROPIC_API_KEY,
    /// base URL from --base-url, $ANTHROPIC_BASE_URL or
    /// https://api.anthropic.com) or azure (Azure OpenAI: key from
    /// $AZURE_OPENAI_API_KEY, sent as api-key; endpoint from --base-url or
    /// $AZURE_OPENAI_ENDPOINT; see --azure-api-version).
    // The doc comment is the help text: the URL stays bare there.
    #[allow(rustdoc::bare_urls)]
    #[arg(long, value_enum, default_value_t = ProviderArg::Openai)]
    pub(crate) provider: ProviderArg,

    /// With --provider anthropic: leave out (or clamp) a field of an OpenAI
    /// chat line that Anthropic cannot take, with a warning in the answer
    /// (x_batchling.warnings) and a count in the summary, instead of
    /// failing the line.
    #[arg(long)]
    pub(crate) lenient: bool,

    /// A routes config (TOML): providers, limit groups of keys (from
    /// environment variables), models and routes with fallback chains. It
    /// names the upstreams, so --provider, --base-url, --api-key-env and
    /// --mock are not given with it; `batchling config check FILE` checks it.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

/// `run --provider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProviderArg {
    /// OpenAI's API, or a server compatible with it.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// Azure OpenAI (OpenAI's API on a resource's endpoint, key in api-key;
    /// key from $AZURE_OPENAI_API_KEY, endpoint from --base-url or
    /// $AZURE_OPENAI_ENDPOINT; see --azure-api-version).
    Azure,
}

#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// Input JSONL file (one request per line).
    pub(crate) input: PathBuf,

    /// Output file for successful answers.
    #[arg(short, long)]
    pub(crate) output: PathBuf,

    /// Error file for failed and invalid requests [default: OUTPUT with
    /// .errors before its extension].
    #[arg(long)]
    pub(crate) errors: Option<PathBuf>,

    /// Submit the valid lines of a file that has bad ones, listing the bad
    /// ones in the error file (by default such a file is refused and
    /// nothing is uploaded).
    #[arg(long)]
    pub(crate) skip_invalid: bool,

    #[command(flatten)]
    pub(crate) client: ClientArgs,

    /// Most requests in one batch [default: the API's: 50,000 for OpenAI,
    /// 100,000 for Anthropic].
    #[arg(long, value_name = "N")]
    pub(crate) max_requests_per_batch: Option<usize>,

    /// Most bytes in one batch (its requests as batch lines) [default: the
    /// API's: 200,000,000 for OpenAI; 240,000,000 for Anthropic, below its
    /// 256 MB as translated bodies can be longer].
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_batch_bytes: Option<u64>,

    // Provider selection (Anthropic): kept together.
    /// The Batch API to submit to: openai (OpenAI's Files + Batches API, or
    /// a compatible server), anthropic (Claude's Message Batches API:
    /// /v1/messages lines as they are, /v1/chat/completions lines
    /// translated; key and base URL as for run --provider anthropic) or
    /// azure (Azure OpenAI's Files + Batches API; key, endpoint and
    /// --azure-api-version as for run --provider azure).
    #[arg(long, value_enum, default_value_t = ProviderArg::Openai)]
    pub(crate) provider: ProviderArg,

    /// With --provider anthropic: leave out (or clamp) a field of an OpenAI
    /// chat line that Anthropic cannot take, as run --lenient does (the
    /// answer lists it in x_batchling.warnings, the summary counts it),
    /// instead of failing the line; also for the online finish. A resume
    /// keeps the journal's choice.
    #[arg(long)]
    pub(crate) lenient: bool,

    /// First wait between polls of the batches (grows ×1.5 while nothing
    /// changes).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = duration)]
    pub(crate) poll_interval: Duration,

    /// Longest wait between polls.
    #[arg(long, default_value = "2m", value_name = "DURATION", value_parser = duration)]
    pub(crate) max_poll_interval: Duration,

    /// Send requests that failed or expired in earlier batches again, as new
    /// batches.
    #[arg(long, conflicts_with = "finish_online")]
    pub(crate) resubmit: bool,

    /// Send requests that failed or expired in a batch through the online
    /// API (as `batchling run` would), once the batches are done.
    #[arg(long)]
    pub(crate) finish_online: bool,

    /// Have everything done this long after the job started (e.g. 6h): when
    /// batches are not done by the deadline minus --deadline-margin, cancel
    /// them and finish the rest online.
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub(crate) deadline: Option<Duration>,

    /// Time kept before --deadline for cancelling and finishing online.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = duration)]
    pub(crate) deadline_margin: Duration,

    /// Limits for requests sent online; --max-attempts also bounds each
    /// Files/Batches API call.
    #[command(flatten)]
    pub(crate) limits: LimitArgs,

    /// Use the built-in fake provider (it serves a fake Batch API too).
    #[arg(long, conflicts_with = "base_url")]
    pub(crate) mock: bool,

    /// A routes config (TOML, as for run --config): each line goes in a
    /// batch of its route's first target, on that target's provider's
    /// Batch API (one key per target: its first group's first); what the
    /// batches leave goes online over the whole chain (--finish-online, the
    /// deadline). It names the upstreams, so --provider, --base-url,
    /// --api-key-env and --mock are not given with it.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// The journal and what is written from it.
    #[command(flatten)]
    pub(crate) journal: JournalArgs,
}

#[derive(Debug, Args)]
#[command(mut_arg("base_url", |a| a.help(
    "API base URL including /v1 [default: the server the journal records; a different one is \
     refused; for a journal of an older batchling, $OPENAI_BASE_URL, else \
     https://api.openai.com/v1]"
)))]
pub(crate) struct CancelArgs {
    /// The journal of a `batchling submit` (e.g. results.jsonl.journal).
    pub(crate) state: PathBuf,

    #[command(flatten)]
    pub(crate) client: ClientArgs,

    /// Wait between polls while batches are cancelling.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = duration)]
    pub(crate) poll_interval: Duration,

    /// The routes config the submit was started with [default: the one its
    /// journal records], for a `submit --config` journal: each part is
    /// cancelled on its target's Batch API.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Extra or overriding prices (TOML, JSON or LiteLLM's JSON).
    #[arg(long, value_name = "FILE")]
    pub(crate) prices: Option<PathBuf>,

    /// No status lines.
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Args)]
pub(crate) struct MockArgs {
    /// Port on 127.0.0.1 (0 picks a free one; the URL is printed on stdout).
    #[arg(long, default_value_t = 8089)]
    pub(crate) port: u16,

    /// Latency added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub(crate) latency_ms: u64,

    /// Extra random latency, 0 to this many milliseconds.
    #[arg(long, default_value_t = 0)]
    pub(crate) jitter_ms: u64,

    /// Requests-per-minute limit to enforce, for every model without a limit
    /// of its own in --limits, for every key (overrides the default table of the file).
    #[arg(long)]
    pub(crate) rpm: Option<u64>,

    /// Tokens-per-minute limit to enforce, likewise.
    #[arg(long)]
    pub(crate) tpm: Option<u64>,

    /// Input-tokens-per-minute limit (Anthropic's ITPM: input and cache
    /// writes, not cache reads), likewise.
    #[arg(long)]
    pub(crate) itpm: Option<u64>,

    /// Output-tokens-per-minute limit (Anthropic's OTPM: max_tokens), likewise.
    #[arg(long)]
    pub(crate) otpm: Option<u64>,

    /// Limits per model and limit groups of keys, as TOML (see the README).
    #[arg(long, value_name = "FILE")]
    pub(crate) limits: Option<PathBuf>,

    /// How requests are counted against TPM: exact (the tokenizer) or openai
    /// (characters/4 plus max tokens) [default: the file's, else exact].
    #[arg(long, value_name = "RULE")]
    pub(crate) token_count: Option<batchling_mock::TokenCount>,

    /// Enforce limits per second (limit/60 each second) instead of per minute.
    #[arg(long)]
    pub(crate) per_second: bool,

    /// Do not send x-ratelimit-* headers.
    #[arg(long)]
    pub(crate) no_limit_headers: bool,

    /// Share of requests answered 500.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub(crate) error_500: f64,

    /// Share of requests answered 503.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub(crate) error_503: f64,

    /// Share of connections dropped without an answer.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub(crate) drop_connection: f64,

    /// Share of 200 answers with a truncated body.
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub(crate) malformed: f64,

    /// Share of requests answered 529 overloaded_error on the Anthropic API
    /// (503 on the OpenAI one).
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub(crate) overloaded: f64,

    /// Seed for faults and jitter.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,

    /// Whose API it looks like: openai (under /v1, and Anthropic's), azure
    /// (/openai/deployments/{d}/...?api-version= and /openai/v1/..., key in
    /// api-key, Azure's headers and 429s) or groq (under /openai/v1, batch
    /// windows up to 7d, x_groq in answers).
    #[arg(long, value_enum, default_value_t = ShapeArg::Openai)]
    pub(crate) shape: ShapeArg,

    /// With --shape azure: share of chat requests its content filter refuses
    /// (400 content_filter).
    #[arg(long, default_value_t = 0.0, value_parser = share)]
    pub(crate) content_filter: f64,
}

/// `mock --shape`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ShapeArg {
    /// OpenAI's API (and Anthropic's).
    Openai,
    /// Azure OpenAI's.
    Azure,
    /// Groq's.
    Groq,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The journal (e.g. results.jsonl.journal); not with --store.
    #[arg(required_unless_present = "store", conflicts_with = "store")]
    pub(crate) state: Option<PathBuf>,

    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,

    /// A shared job's store (see `run --store`): show the job --job names.
    // No `env`: a BATCHLING_STORE set for `run` must not turn a journal's
    // status or export into the store's.
    #[arg(long, value_name = "URL", requires = "job")]
    pub(crate) store: Option<String>,

    /// With --store: the job.
    #[arg(long, value_name = "ID", requires = "store")]
    pub(crate) job: Option<i64>,

    /// With --store: delete the job and all its rows from the store (its
    /// answers too: export them first). Refused while requests are running.
    #[arg(long, requires = "job")]
    pub(crate) delete: bool,

    /// With --delete: delete even with requests running (those of workers
    /// declared dead or gone; live workers' are never deleted).
    #[arg(long, requires = "delete")]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The journal (e.g. results.jsonl.journal); not with --store.
    #[arg(required_unless_present = "store", conflicts_with = "store")]
    pub(crate) state: Option<PathBuf>,

    /// Output file for successful answers.
    #[arg(short, long)]
    pub(crate) output: PathBuf,

    /// Error file [default: OUTPUT with .errors before its extension].
    #[arg(short, long)]
    pub(crate) errors: Option<PathBuf>,

    /// A shared job's store (see `run --store`): export the job --job
    /// names (in input order).
    // No `env`: a BATCHLING_STORE set for `run` must not turn a journal's
    // status or export into the store's.
    #[arg(long, value_name = "URL", requires = "job")]
    pub(crate) store: Option<String>,

    /// With --store: the job.
    #[arg(long, value_name = "ID", requires = "store")]
    pub(crate) job: Option<i64>,

    /// Order of output lines.
    #[arg(long, value_enum, default_value_t = OrderArg::Input)]
    pub(crate) order: OrderArg,

    /// Add to each line an `x_batchling` object: the target that answered
    /// (routes), the answer's own model, the route step, the attempts and
    /// their cost. Off: lines are OpenAI's format exactly.
    #[arg(long)]
    pub(crate) who_answered: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PricesArgs {
    /// Extra or overriding prices (TOML, JSON or LiteLLM's JSON).
    #[arg(long, value_name = "FILE")]
    pub(crate) prices: Option<PathBuf>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    pub(crate) command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Load a routes config, read its keys from the environment, and show
    /// what it defines: providers, groups, models, expanded chains, warnings.
    ///
    /// Exits 0 when the file is valid and every key's variable is set, 2
    /// otherwise. Key values are never printed.
    Check(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ConfigCheckArgs {
    /// The routes config (TOML).
    pub(crate) file: PathBuf,

    /// Extra or overriding prices (TOML, JSON or LiteLLM's JSON), for the
    /// models without a price of their own.
    #[arg(long, value_name = "FILE")]
    pub(crate) prices: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct EstimateArgs {
    /// Input JSONL file.
    pub(crate) input: PathBuf,

    /// Price for this model (repeatable) [default: each line's own model].
    #[arg(long = "model", value_name = "MODEL")]
    pub(crate) models: Vec<String>,

    /// A routes config (as `run --config` takes): each line priced at its
    /// route's primary target, with the dearest fallback the route allows.
    /// Its keys are not needed.
    #[arg(long, value_name = "FILE", conflicts_with = "models")]
    pub(crate) config: Option<PathBuf>,

    /// Expected output tokens per request [default: the average in --state's
    /// journal, else each request's maximum].
    #[arg(long, value_name = "N")]
    pub(crate) output_tokens: Option<u64>,

    /// A journal of an earlier run over similar requests, for the expected
    /// output tokens.
    #[arg(long, value_name = "PATH")]
    pub(crate) state: Option<PathBuf>,

    /// Requests-per-minute limit, for the time estimate.
    #[arg(long)]
    pub(crate) rpm: Option<u64>,

    /// Tokens-per-minute limit, for the time estimate.
    #[arg(long)]
    pub(crate) tpm: Option<u64>,

    /// Output tokens assumed for a request that sets no maximum.
    #[arg(long, default_value_t = batchling_engine::DEFAULT_MAX_OUTPUT, value_name = "N")]
    pub(crate) default_max_tokens: u64,

    /// Extra or overriding prices (TOML, JSON or LiteLLM's JSON).
    #[arg(long, value_name = "FILE")]
    pub(crate) prices: Option<PathBuf>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the base URL is
    /// printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR", value_parser = listen_addr)]
    pub(crate) listen: SocketAddr,

    /// Where files, batches and their journals are kept (created if needed;
    /// one server per directory).
    #[arg(long, default_value = "batchling-data", value_name = "DIR")]
    pub(crate) data_dir: PathBuf,

    /// Upstream base URL including /v1 [default: $OPENAI_BASE_URL; with
    /// --provider anthropic $ANTHROPIC_BASE_URL, else Anthropic's API].
    #[arg(long, conflicts_with_all = ["config", "mock"])]
    pub(crate) base_url: Option<String>,

    /// Name of the environment variable holding the upstream's API key (none
    /// is sent when it is unset) [default: OPENAI_API_KEY; ANTHROPIC_API_KEY
    /// with --provider anthropic].
    #[arg(long, value_name = "NAME")]
    pub(crate) api_key_env: Option<String>,

    /// The upstream's requests-per-minute limit [default: learned from its
    /// headers].
    #[arg(long, conflicts_with = "config", value_parser = rate_limit)]
    pub(crate) rpm: Option<u64>,

    /// The upstream's tokens-per-minute limit [default: learned from its
    /// headers].
    #[arg(long, conflicts_with = "config", value_parser = rate_limit)]
    pub(crate) tpm: Option<u64>,

    /// The upstream's limits per model and families sharing one (the TOML
    /// of `batchling run --limits`); --rpm/--tpm win over its default.
    #[arg(long = "limits", conflicts_with = "config", value_name = "FILE")]
    pub(crate) limits_file: Option<PathBuf>,

    /// Most requests in flight to the upstream, across all batches.
    #[arg(long, conflicts_with = "config", default_value_t = batchling_engine::DEFAULT_CONCURRENCY, value_parser = at_least_one::<usize>)]
    pub(crate) concurrency: usize,

    /// Per-attempt timeout in seconds (a routes config's `[serve]`
    /// timeout_secs wins).
    #[arg(long, default_value = "600", value_name = "SECS", value_parser = positive_secs)]
    pub(crate) timeout: Duration,

    /// Largest upstream answer read, in MiB: a larger one is cut off and
    /// becomes a response_too_large error, not retried (in a --config file:
    /// max_response_mb per upstream, or in `[serve]`).
    #[arg(long, conflicts_with = "config", default_value_t = DEFAULT_MAX_RESPONSE_MB, value_name = "MB")]
    pub(crate) max_response_mb: u64,

    /// Keep each ended batch's journal (DATA_DIR/batches/ID/journal: every
    /// attempt and, over a routes config, who answered each line) for
    /// `batchling status` and `export`; by default it goes once the result
    /// files are written.
    #[arg(long)]
    pub(crate) keep_journals: bool,

    /// A TOML file: the routes config (providers, limit groups, models,
    /// routes with fallbacks, and a `[serve]` table), or the older
    /// `[[upstream]]` tables chosen by model (see the README).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// Run batches on the built-in fake provider (to try the API for free).
    #[arg(long, conflicts_with = "config")]
    pub(crate) mock: bool,

    /// Name of the environment variable holding the accepted client keys,
    /// comma-separated.
    #[arg(long, value_name = "NAME")]
    pub(crate) auth_keys_env: Option<String>,

    /// Accept any client, with or without a key (all share one view).
    #[arg(long, conflicts_with = "auth_keys_env")]
    pub(crate) no_auth: bool,

    /// Largest accepted upload, in MB (413 beyond).
    #[arg(long, default_value_t = 200, value_name = "MB", value_parser = at_least_one::<u64>)]
    pub(crate) max_upload_mb: u64,

    /// Time a client has to send a whole request body, in seconds (408
    /// after it); raise it for large uploads over slow links.
    #[arg(long, default_value = "900", value_name = "SECS", value_parser = positive_secs)]
    pub(crate) body_timeout: Duration,

    /// Batches running at once; later ones wait (in_progress) for a turn.
    #[arg(long, default_value_t = 64, value_name = "N", value_parser = at_least_one::<usize>)]
    pub(crate) max_running_batches: usize,

    /// Attempts per request, the first included (429s do not count).
    #[arg(long, default_value_t = 6, value_parser = at_least_one::<u32>)]
    pub(crate) max_attempts: u32,

    /// How long a batch may run before it expires. The API's
    /// completion_window is always "24h"; a shorter one here is for tests.
    #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = duration)]
    pub(crate) batch_window: Duration,

    /// Log format on stderr (RUST_LOG filters, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,

    // The upstream's API (Anthropic): kept together.
    /// The API the one upstream speaks: openai (OpenAI and compatible
    /// servers) or anthropic (Claude's Messages API: OpenAI chat lines are
    /// translated and answered as chat.completion objects, /v1/messages
    /// lines forwarded). In a --config file: kind per upstream.
    #[arg(long, value_enum, conflicts_with = "config", default_value_t = ProviderArg::Openai)]
    pub(crate) provider: ProviderArg,

    /// Extra header sent with every upstream request, as 'Name: value'
    /// (repeatable; anthropic-beta, say). In a --config file: headers per
    /// upstream.
    #[arg(long = "header", conflicts_with = "config", value_name = "'K: V'", value_parser = header)]
    pub(crate) headers: Vec<(String, String)>,

    /// With --provider anthropic: leave out (or clamp) a field of an OpenAI
    /// chat line that Anthropic cannot take, with a warning in the answer
    /// (x_batchling.warnings), instead of failing the line. In a --config
    /// file: lenient = true per upstream.
    #[arg(long, conflicts_with = "config")]
    pub(crate) lenient: bool,
}

// Value parsers: each flag value's own check and its message, once. Checks
// that need several flags or the environment are in `settings`.

/// A duration such as `90s`, `10m` or `6h`.
fn duration(text: &str) -> Result<Duration, String> {
    batchling_core::duration::parse_duration(text)
        .ok_or_else(|| "expected a duration such as 10s, 90s, 30m or 6h".to_owned())
}

/// A positive number of seconds (NaN, 0, negatives and values past what a
/// `Duration` holds are refused, never a panic).
fn positive_secs(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "expected a positive number of seconds".to_owned())
}

/// A header as `Name: value`, both sides trimmed.
/// An Azure api-version: letters, digits, '-' and '.' (2024-10-21,
/// 2025-04-01-preview).
pub(crate) fn api_version(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not an api-version (like 2024-10-21 or 2025-04-01-preview)"
        ))
    }
}

fn header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| "expected 'Name: value'".to_owned())?;
    if name.trim().is_empty() {
        return Err("the header name is empty".into());
    }
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

/// A count that must be at least 1 (concurrency, attempts, batches, MB).
fn at_least_one<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr<Err = std::num::ParseIntError> + PartialOrd + From<u8>,
{
    let n: T = text
        .parse()
        .map_err(|e: std::num::ParseIntError| e.to_string())?;
    if n < T::from(1) {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

/// An RPM or TPM limit: positive (leaving the flag out means no limit).
fn rate_limit(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("must be positive (leave it out for no limit)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A positive, finite amount of USD.
fn positive_usd(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|usd| usd.is_finite() && *usd > 0.0)
        .ok_or_else(|| "expected a positive amount of USD".to_owned())
}

/// A share of requests, between 0 and 1.
fn share(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|p| (0.0..=1.0).contains(p))
        .ok_or_else(|| "expected a share between 0 and 1".to_owned())
}

/// An address to listen on.
fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| "expected an address such as 127.0.0.1:8080".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_parser_accepts_the_good_and_names_the_problem() {
        assert_eq!(duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(
            duration("soon")
                .unwrap_err()
                .contains("expected a duration")
        );

        assert_eq!(positive_secs("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "NaN", "inf", "1e300", "x"] {
            assert!(
                positive_secs(bad)
                    .unwrap_err()
                    .contains("positive number of seconds"),
                "{bad}"
            );
        }

        assert_eq!(
            header(" X-Team : a: b "),
            Ok(("X-Team".into(), "a: b".into()))
        );
        assert!(header("no colon").unwrap_err().contains("'Name: value'"));
        assert!(header(" : v").unwrap_err().contains("name is empty"));

        assert_eq!(at_least_one::<usize>("3"), Ok(3));
        assert_eq!(at_least_one::<u32>("0"), Err("must be at least 1".into()));
        assert!(at_least_one::<u64>("-1").is_err());
        assert!(rate_limit("0").unwrap_err().contains("leave it out"));
        assert_eq!(rate_limit("600"), Ok(600));

        assert_eq!(positive_usd("2.5"), Ok(2.5));
        for bad in ["0", "-5", "NaN", "inf"] {
            assert!(positive_usd(bad).is_err(), "{bad}");
        }
        assert_eq!(share("1"), Ok(1.0));
        assert!(share("1.5").is_err() && share("NaN").is_err());
        assert!(listen_addr("127.0.0.1:0").is_ok());
        assert!(
            listen_addr("localhost")
                .unwrap_err()
                .contains("127.0.0.1:8080")
        );
    }

    #[test]
    fn the_arguments_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
