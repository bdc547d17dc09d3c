//! `batchling mock`: the fake provider as a standalone server.

use std::process::ExitCode;

use anyhow::{Context, Result};
use batchling_mock::MockServer;

use crate::settings::MockSettings;

pub(crate) async fn mock(s: MockSettings) -> Result<ExitCode> {
    let server = MockServer::start(s.config, s.addr)
        .await
        .with_context(|| format!("cannot listen on {}", s.addr))?;
    // The URL is data (scripts read it), so it goes to stdout.
    out!("{}", server.base_url())?;
    eprintln!("batchling mock: fake OpenAI-compatible provider; Ctrl-C to stop");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    let stats = server.stats();
    server.shutdown().await;
    eprintln!(
        "batchling mock: {} requests, {} ok, {} rate limited, {} faults",
        stats.requests, stats.ok, stats.rate_limited, stats.faults
    );
    Ok(ExitCode::SUCCESS)
}
