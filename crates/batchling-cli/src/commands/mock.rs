//! `batchling mock`: the fake provider as a standalone server.

use std::process::ExitCode;

use anyhow::{Context, Result};
use batchling_mock::{MockServer, Shape};

use crate::settings::MockSettings;

pub(crate) async fn mock(s: MockSettings) -> Result<ExitCode> {
    let server = MockServer::start(s.config, s.addr)
        .await
        .with_context(|| format!("cannot listen on {}", s.addr))?;
    // The URL is data (scripts read it), so it goes to stdout: the base URL
    // an SDK is given (Azure's: the endpoint; Groq's: under /openai/v1).
    let root = server.base_url().trim_end_matches("/v1").to_owned();
    let (url, what) = match server.config().shape {
        Shape::OpenAi => (server.base_url(), "OpenAI-compatible"),
        Shape::Azure => (root, "Azure OpenAI-shaped"),
        Shape::Groq => (format!("{root}/openai/v1"), "Groq-shaped"),
    };
    out!("{url}")?;
    eprintln!("batchling mock: fake {what} provider; Ctrl-C to stop");
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

    use crate::args::{Cli, Command};
    use crate::settings::MockSettings;

    fn config(args: &[&str]) -> anyhow::Result<batchling_mock::MockConfig> {
        let cli = Cli::try_parse_from([&["batchling", "mock"], args].concat())?;
        let Command::Mock(a) = cli.command else {
            panic!("not the mock command")
        };
        MockSettings::resolve(a).map(|s| s.config)
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
