//! `batchling serve`: an OpenAI-compatible Files + Batches API that runs
//! batches on any upstream, through the same engine as `batchling run`.
//!
//! # Tour
//! - [`Server`]: start on an address with a [`ServeConfig`], get its base
//!   URL, shut it down gracefully.
//! - [`config`]: settings, upstreams chosen by model, the TOML config file
//!   (its `[[upstream]]` tables, or a routes config with a `[serve]` table).
//! - `api`: routing, client keys (stored only as digests), request ids,
//!   logs, OpenAI's error envelope.
//! - `files`, `batches`: the endpoints, field for field as OpenAI's.
//! - `http`: the connections under the API: caps and timeouts on heads and
//!   bodies ([`config::HttpLimits`]), and early answers (401, 413) that
//!   reach a client still sending its upload.
//! - `runner`: a batch's life: validate, run on the engine with its
//!   upstream's shared limits, close what a cancel or expiry left, write the
//!   result files; resumes whatever was going on at start-up.
//! - `meta`: files and batches in SQLite, with guarded status transitions.
//! - `upstream`: one client, one set of shared limits and counters per
//!   upstream (or one set of routes, limits and counters for a routes
//!   config); `metrics`: `GET /metrics`.
//!
//! # The data directory
//! ```text
//! DATA_DIR/lock                  held while a server runs (one per directory)
//! DATA_DIR/meta.sqlite           files and batches
//! DATA_DIR/files/<file-id>       file contents (uploads and results)
//! DATA_DIR/batches/<batch-id>/   a running batch's engine journal (an
//!                                ended one's too with `keep_journals`)
//! DATA_DIR/tmp/                  uploads in progress
//! ```
//!
//! ```no_run
//! # async fn demo() -> Result<(), batchling_server::ServeError> {
//! use batchling_server::{Server, config::{ServeConfig, UpstreamConfig}};
//! let mut config = ServeConfig::new(
//!     "data".into(),
//!     vec![UpstreamConfig::new("local", "http://127.0.0.1:8081/v1")],
//! );
//! config.no_auth = true;
//! let server = Server::start(config, "127.0.0.1:0".parse().unwrap()).await?;
//! println!("OpenAI base_url: {}", server.base_url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

// Dev-dependencies of the integration tests (`tests/`) only.
#[cfg(test)]
use {batchling_mock as _, futures_util as _, reqwest as _, rustls as _, xxhash_rust as _};

mod api;
mod batches;
pub mod config;
mod files;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod meta;
mod metrics;
mod runner;
mod upstream;

use std::collections::HashSet;
use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use batchling_core::clock::unix_now;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::ServeConfig;
pub use meta::MetaError;

/// The server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The data directory could not be set up.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Another server uses the data directory.
    #[error(
        "data directory {0} is in use by another batchling serve; stop it or choose another data directory"
    )]
    Locked(String),
    /// The metadata database could not be opened.
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
    /// An upstream could not be set up.
    #[error("upstream {name}: {source}")]
    Upstream {
        /// Its name.
        name: String,
        /// Why.
        source: batchling_providers::ProviderError,
    },
    /// Authentication is on ([`ServeConfig::no_auth`] is false) but no
    /// client key is given, so no client could ever be served.
    #[error(
        "no client keys: give the keys clients may use, or turn authentication off to accept any client"
    )]
    NoClientKeys,
    /// No upstream is configured, so no batch could ever run.
    #[error("no upstream: name at least one server to run batches on")]
    NoUpstream,
    /// Both upstreams and a routes config are given: batches would run on
    /// one or the other.
    #[error("both upstreams and a routes config: give one or the other")]
    UpstreamsAndRoutes,
    /// A routes config's routes could not be built.
    #[error("routes: {0}")]
    Routes(#[from] batchling_engine::route::RouteError),
    /// A key of a routes config's group was not read with it.
    #[error("key {id} of group {group} was not read: resolve the config's keys first")]
    MissingKey {
        /// The key's id.
        id: String,
        /// Its group.
        group: String,
    },
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    http: JoinHandle<()>,
    runner: Arc<runner::Runner>,
    janitor: JoinHandle<()>,
    _lock: File,
}

/// How often expired files are looked for.
const JANITOR_EVERY: Duration = Duration::from_secs(60);

impl Server {
    /// Open the data directory, resume unfinished batches and listen.
    pub async fn start(config: ServeConfig, listen: SocketAddr) -> Result<Server, ServeError> {
        check(&config)?;
        let dir = config.data_dir.clone();
        let lock = lock_data_dir(&dir)?;
        let meta = Arc::new(meta::MetaDb::open(&dir.join("meta.sqlite"))?);
        tidy(&dir, &meta, config.keep_journals).map_err(|source| data_dir_error(&dir, source))?;
        let stop = CancellationToken::new();
        let runner = Arc::new(runner::Runner::new(
            meta.clone(),
            stop.child_token(),
            runner::RunnerConfig {
                data_dir: dir.clone(),
                upstreams: connect_upstreams(&config)?,
                routed: config
                    .routes
                    .as_ref()
                    .map(upstream::Routed::new)
                    .transpose()?,
                completion_window: config.completion_window,
                max_attempts: config.max_attempts,
                max_running: config.max_running_batches,
                keep_journals: config.keep_journals,
            },
        ));
        let state = Arc::new(api::AppState {
            meta: meta.clone(),
            runner: runner.clone(),
            data_dir: dir.clone(),
            max_upload_bytes: config.max_upload_bytes,
            limits: Arc::new(config.http.clone()),
            owners: client_owners(&config),
        });
        let (listener, addr) = bind(listen).await?;
        resume_unfinished(&meta, &runner)?;
        let limits = state.limits.clone();
        let http = tokio::spawn(http::serve(
            listener,
            api::router(state),
            limits,
            stop.clone(),
        ));
        let janitor = tokio::spawn(expire_files(meta, runner.clone(), stop.clone()));
        tracing::info!(%addr, data_dir = %dir.display(), "batchling serve listening");
        Ok(Server {
            addr,
            stop,
            http,
            runner,
            janitor,
            _lock: lock,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give an OpenAI SDK: `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Stop accepting requests, stop batches (answers in flight are
    /// journaled; the batches resume at the next start) and wait.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.http.await;
        self.runner.stop().await;
        let _ = self.janitor.await;
    }
}

/// Refuse settings no server could work with.
fn check(config: &ServeConfig) -> Result<(), ServeError> {
    if config.auth_keys.is_empty() && !config.no_auth {
        return Err(ServeError::NoClientKeys);
    }
    match (config.upstreams.is_empty(), &config.routes) {
        (true, None) => Err(ServeError::NoUpstream),
        (false, Some(_)) => Err(ServeError::UpstreamsAndRoutes),
        _ => Ok(()),
    }
}

fn data_dir_error(dir: &Path, source: std::io::Error) -> ServeError {
    ServeError::DataDir {
        path: dir.display().to_string(),
        source,
    }
}

/// Lay out the data directory and take its lock: one server per directory.
fn lock_data_dir(dir: &Path) -> Result<File, ServeError> {
    for sub in ["files", "batches", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| data_dir_error(dir, e))?;
    }
    let lock = File::create(dir.join("lock")).map_err(|e| data_dir_error(dir, e))?;
    if lock.try_lock().is_err() {
        return Err(ServeError::Locked(dir.display().to_string()));
    }
    Ok(lock)
}

/// One client, with its shared limits and counters, per configured upstream.
fn connect_upstreams(config: &ServeConfig) -> Result<Vec<upstream::UpstreamClient>, ServeError> {
    config
        .upstreams
        .iter()
        .map(|u| {
            upstream::UpstreamClient::new(u.clone()).map_err(|source| ServeError::Upstream {
                name: u.name.clone(),
                source,
            })
        })
        .collect()
}

/// The owners the client keys stand for (`None`: authentication is off).
/// Only digests are kept, never the keys.
fn client_owners(config: &ServeConfig) -> Option<HashSet<String>> {
    (!config.no_auth).then(|| {
        config
            .auth_keys
            .iter()
            .map(|k| api::owner_of(k.expose()))
            .collect()
    })
}

async fn bind(listen: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServeError> {
    let listen_err = |source| ServeError::Listen {
        addr: listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(listen_err)?;
    let addr = listener.local_addr().map_err(listen_err)?;
    Ok((listener, addr))
}

/// Drive again every batch that had not ended when the server last stopped.
fn resume_unfinished(meta: &meta::MetaDb, runner: &Arc<runner::Runner>) -> Result<(), ServeError> {
    let resumed = meta.unfinished_batches()?;
    if !resumed.is_empty() {
        tracing::info!(batches = resumed.len(), "resuming unfinished batches");
    }
    for b in resumed {
        runner.start(&b.id);
    }
    Ok(())
}

/// The janitor: every [`JANITOR_EVERY`], mark expired files deleted and
/// remove their contents, until `stop`.
async fn expire_files(
    meta: Arc<meta::MetaDb>,
    runner: Arc<runner::Runner>,
    stop: CancellationToken,
) {
    loop {
        match meta.expire_files(unix_now()) {
            Ok(ids) => ids.iter().for_each(|id| runner.release_file(id)),
            Err(e) => tracing::warn!("cannot expire files: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(JANITOR_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Remove what a crash can leave: half-written uploads, contents no file
/// row points to (a result file moved into place just before a crash), and
/// journals of batches that ended (unless they are kept).
fn tidy(dir: &Path, meta: &meta::MetaDb, keep_journals: bool) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir.join("tmp"))? {
        let _ = std::fs::remove_file(e?.path());
    }
    let live: HashSet<String> = meta
        .live_file_ids()
        .map_err(std::io::Error::other)?
        .into_iter()
        .collect();
    for e in std::fs::read_dir(dir.join("files"))? {
        let e = e?;
        if !live.contains(&*e.file_name().to_string_lossy()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let running: HashSet<String> = meta
        .unfinished_batches()
        .map_err(std::io::Error::other)?
        .into_iter()
        .map(|b| b.id)
        .collect();
    if keep_journals {
        return Ok(());
    }
    for e in std::fs::read_dir(dir.join("batches"))? {
        let e = e?;
        if !running.contains(&*e.file_name().to_string_lossy()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    Ok(())
}
