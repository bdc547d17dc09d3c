//! The Azure OpenAI client against the Azure-shaped fake, over real HTTP on
//! loopback: both URL forms, the `api-key` header, Azure's headers as read,
//! its 429 and its content filter classified.

// A test crate sees every dependency of its package and uses a few; it may
// print what it measured or skipped.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use batchling_core::{Endpoint, FailKind, RetryReason, StopReason, Verdict};
use batchling_mock::{MockConfig, MockServer, Shape};
use batchling_providers::azure::{AzureClient, AzureConfig};
use batchling_providers::openai::ClientConfig;
use batchling_providers::{Answer, ApiKey, Attempt, Outgoing, Provider};
use bytes::Bytes;

const KEY: &str = "azure-test-key-93f1";

async fn start(config: MockConfig) -> MockServer {
    MockServer::start(
        MockConfig {
            shape: Shape::Azure,
            ..config
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("the mock starts")
}

fn client(server: &MockServer, api_version: Option<&str>, key: Option<&str>) -> AzureClient {
    AzureClient::new(AzureConfig {
        client: ClientConfig {
            base_url: server.base_url().trim_end_matches("/v1").to_owned(),
            api_key: key.map(ApiKey::new),
            ..ClientConfig::default()
        },
        api_version: api_version.map(str::to_owned),
    })
    .expect("client")
}

fn chat(id: &str) -> Outgoing {
    Outgoing {
        custom_id: id.into(),
        endpoint: Endpoint::ChatCompletions,
        body: Bytes::from_static(
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
        ),
    }
}

fn answered(a: &Attempt) -> &Answer {
    match a {
        Attempt::Answered(a) => a,
        Attempt::Transport(t) => panic!("expected an answer, got {t:?}"),
    }
}

#[tokio::test]
async fn both_url_forms_answer_and_the_limits_read_as_azure_sends_them() {
    let server = start(MockConfig {
        rpm: Some(600),
        tpm: Some(100_000),
        ..MockConfig::default()
    })
    .await;
    for version in [Some("2024-10-21"), None] {
        let c = client(&server, version, Some(KEY));
        let a = c.send(&chat("a")).await;
        assert_eq!(c.classify(&a), Verdict::Success, "{a:?}");
        let limits = answered(&a).limits;
        assert!(limits.requests.remaining.is_some_and(|r| r < 600));
        // No request limit or reset: Azure sends only what is left.
        assert_eq!((limits.requests.limit, limits.requests.reset), (None, None));
        assert_eq!(limits.tokens.limit, Some(100_000));
        // The reset in whole seconds, read as such.
        let reset = limits.tokens.reset.expect("a token reset");
        assert_eq!(reset.subsec_nanos(), 0, "{reset:?}");
    }
    let s = server.shape_stats();
    assert_eq!(
        (s.deployment_requests, s.v1_requests, s.unauthorized),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn a_429_waits_as_azure_says_and_a_missing_key_stops_the_run() {
    let server = start(MockConfig {
        rpm: Some(1),
        ..MockConfig::default()
    })
    .await;
    let c = client(&server, Some("2024-10-21"), Some(KEY));
    assert_eq!(c.classify(&c.send(&chat("a")).await), Verdict::Success);
    let refused = c.send(&chat("b")).await;
    let body: serde_json::Value = serde_json::from_slice(&answered(&refused).body).unwrap();
    assert_eq!(body["error"]["code"], "429", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("Please retry after"), "{message}");
    match c.classify(&refused) {
        Verdict::Retry {
            after: Some(wait),
            reason: RetryReason::RateLimited,
        } => assert!(wait > Duration::ZERO && wait <= Duration::from_secs(60)),
        v => panic!("{v:?}"),
    }
    let keyless = client(&server, None, None);
    let a = keyless.send(&chat("c")).await;
    assert!(
        matches!(
            keyless.classify(&a),
            Verdict::StopRun(StopReason::Unauthorized { status: 401, .. })
        ),
        "{a:?}"
    );
}

#[tokio::test]
async fn the_content_filter_is_a_content_policy_failure() {
    let server = start(MockConfig {
        content_filter: 1.0,
        ..MockConfig::default()
    })
    .await;
    let c = client(&server, None, Some(KEY));
    let a = c.send(&chat("a")).await;
    assert_eq!(c.classify(&a), Verdict::Fail(FailKind::ContentPolicy));
    assert!(
        c.describe(answered(&a))
            .contains("content management policy")
    );
}
