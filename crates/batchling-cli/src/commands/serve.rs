//! `batchling serve`: the Files + Batches API server until SIGTERM/Ctrl-C.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use anyhow::{Context, Result};
use batchling_mock::{MockConfig, MockServer};
use batchling_providers::ApiKey;
use batchling_server::Server;
use batchling_server::config::UpstreamKind;

use super::exit;
use crate::settings::{ServeSettings, env};
use crate::signals::Interrupts;

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(env::RUST_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests calling twice) is harmless: keep the first.
    let _ = if json {
        fmt.json().try_init()
    } else {
        fmt.try_init()
    };
}

pub(crate) async fn serve(mut s: ServeSettings) -> Result<ExitCode> {
    init_logs(s.log_json);
    for note in &s.notes {
        eprintln!("note: {note}");
    }
    let _mock = if s.mock {
        let m = MockServer::start(
            MockConfig {
                track_keys: false,
                ..MockConfig::default()
            },
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        )
        .await
        .context("cannot start the built-in fake provider")?;
        eprintln!("note: --mock: batches run on the built-in fake provider (answers are fake)");
        let up = &mut s.config.upstreams[0];
        match up.kind {
            UpstreamKind::OpenAi => up.base_url = m.base_url(),
            UpstreamKind::Anthropic => {
                up.base_url = m.anthropic_base_url();
                // The fake's Messages API wants a key, any key.
                up.api_key
                    .get_or_insert_with(|| ApiKey::new("batchling-fake-provider"));
            }
        }
        Some(m)
    } else {
        None
    };
    let server = Server::start(s.config, s.listen).await?;
    // The base URL is data (scripts and SDK clients read it): stdout.
    out!("{}", server.base_url())?;

    let mut interrupts = Interrupts::listen();
    interrupts.recv().await;
    tracing::info!("shutting down: running batches stop and resume at the next start");
    // A second signal exits at once; batches stay resumable either way.
    interrupts.exit_on_next();
    server.shutdown().await;
    Ok(ExitCode::from(exit::OK))
}
