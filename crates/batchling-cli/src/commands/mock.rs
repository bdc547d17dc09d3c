//! `batchling mock`: the fake provider as a standalone server.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use batchling_mock::{Faults, LimitWindow, LimitsFile, MockConfig, MockServer};

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
    let mut config = MockConfig {
        latency: Duration::from_millis(a.latency_ms),
        latency_jitter: Duration::from_millis(a.jitter_ms),
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
    };
    if let Some(path) = &a.limits {
        LimitsFile::load(path)?.apply(&mut config);
    }
    // Flags win over the file.
    config.rpm = a.rpm.or(config.rpm);
    config.tpm = a.tpm.or(config.tpm);
    config.token_count = a.token_count.unwrap_or(config.token_count);
    if a.per_second {
        config.window = LimitWindow::Second;
    }
    Ok(config)
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

#[cfg(test)]
mod tests {
    use batchling_mock::{ModelLimit, TokenCount};
    use clap::Parser;

    use super::config_from;
    use crate::args::{Cli, Command};

    fn config(args: &[&str]) -> anyhow::Result<batchling_mock::MockConfig> {
        let cli = Cli::try_parse_from([&["batchling", "mock"], args].concat())?;
        let Command::Mock(a) = cli.command else {
            panic!("not the mock command")
        };
        config_from(&a)
    }

    #[test]
    fn flags_win_over_the_limits_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits.toml");
        std::fs::write(
            &path,
            "token_count = \"openai\"\n[default]\nrpm = 10\ntpm = 99\n[models.m]\nrpm = 2\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let c = config(&["--limits", file]).unwrap();
        assert_eq!(
            (c.rpm, c.tpm, c.token_count),
            (Some(10), Some(99), TokenCount::OpenAi)
        );
        assert_eq!(c.limits.models, [ModelLimit::new("m", Some(2), None)]);
        let c = config(&["--limits", file, "--rpm", "5", "--token-count", "exact"]).unwrap();
        assert_eq!(
            (c.rpm, c.tpm, c.token_count),
            (Some(5), Some(99), TokenCount::Exact)
        );
        // Without a file, the flags alone, as before.
        let c = config(&["--rpm", "7"]).unwrap();
        assert_eq!((c.rpm, c.tpm), (Some(7), None));
        assert!(c.limits.models.is_empty());
    }

    #[test]
    fn a_bad_limits_file_is_named_with_its_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[groups]\norg = [1]\n").unwrap();
        let err = config(&["--limits", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(
                "bad.toml line 2, groups.org: expected a non-empty string, found the integer 1"
            ),
            "{err}"
        );
    }
}
