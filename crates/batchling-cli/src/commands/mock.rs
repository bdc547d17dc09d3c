//! `batchling mock`: the fake provider as a standalone server.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use batchling_mock::{Faults, LimitWindow, MockConfig, MockServer};

use crate::args::MockArgs;

pub(crate) fn config_from(a: &MockArgs) -> Result<MockConfig> {
    for (name, p) in [
        ("--error-500", a.error_500),
        ("--error-503", a.error_503),
        ("--drop-connection", a.drop_connection),
        ("--malformed", a.malformed),
    ] {
        if !(0.0..=1.0).contains(&p) {
            bail!("{name} {p}: expected a share between 0 and 1");
        }
    }
    Ok(MockConfig {
        latency: Duration::from_millis(a.latency_ms),
        latency_jitter: Duration::from_millis(a.jitter_ms),
        rpm: a.rpm,
        tpm: a.tpm,
        window: if a.per_second {
            LimitWindow::Second
        } else {
            LimitWindow::Minute
        },
        send_limit_headers: !a.no_limit_headers,
        faults: Faults {
            error_500: a.error_500,
            error_503: a.error_503,
            drop_connection: a.drop_connection,
            malformed_body: a.malformed,
            ..Faults::default()
        },
        seed: a.seed,
        // A standalone server may see millions of distinct requests; the
        // per-request table is for in-process tests.
        track_keys: false,
        ..MockConfig::default()
    })
}

pub(crate) async fn mock(a: MockArgs) -> Result<ExitCode> {
    let config = config_from(&a)?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, a.port));
    let server = MockServer::start(config, addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
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
