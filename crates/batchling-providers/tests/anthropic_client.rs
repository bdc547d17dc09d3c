//! The Anthropic client (`batchling-providers`) against the mock's fake
//! Messages API (`batchling-mock`), over real HTTP on loopback: native
//! lines byte for byte, OpenAI lines translated there and back, the headers
//! it sends and the ones it reads.

// A test crate sees every dependency of its package and uses a few; it may
// print what it measured or skipped.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use batchling_core::{Endpoint, RetryReason, StopReason, Verdict};
use batchling_mock::{Faults, MockConfig, MockServer};
use batchling_providers::anthropic::{AnthropicClient, AnthropicConfig};
use batchling_providers::{Answer, ApiKey, Attempt, Outgoing, Provider, TransportKind};
use bytes::Bytes;
use serde_json::Value;

const KEY: &str = "sk-ant-test-5d2e9c";

async fn start(config: MockConfig) -> MockServer {
    MockServer::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("the mock starts")
}

fn client(server: &MockServer, headers: &[(&str, &str)]) -> AnthropicClient {
    AnthropicClient::new(AnthropicConfig {
        base_url: server.anthropic_base_url(),
        api_key: Some(ApiKey::new(KEY)),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..AnthropicConfig::default()
    })
    .expect("client")
}

fn outgoing(custom_id: &str, endpoint: Endpoint, body: &str) -> Outgoing {
    Outgoing {
        custom_id: custom_id.into(),
        endpoint,
        body: Bytes::from(body.to_owned()),
    }
}

fn answered(a: Attempt) -> Answer {
    match a {
        Attempt::Answered(a) => a,
        Attempt::Transport(t) => panic!("expected an answer, got {t:?}"),
    }
}

fn json(a: &Answer) -> Value {
    serde_json::from_slice(&a.body).expect("the body is JSON")
}

#[tokio::test]
async fn a_native_line_reaches_the_fake_byte_for_byte() {
    let server = start(MockConfig {
        itpm: Some(50_000),
        otpm: Some(10_000),
        ..MockConfig::default()
    })
    .await;
    let c = client(&server, &[]);
    // Spacing, key order and escapes a re-serialisation would change.
    let body = "{ \"max_tokens\" : 12,\"model\":\"claude-haiku-4-5\",\n \"messages\":[{\"role\":\"user\",\"content\":\"caf\\u00e9  1.50\"}]}";
    let a = answered(c.send(&outgoing("n-1", Endpoint::Messages, body)).await);
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(c.classify(&Attempt::Answered(a.clone())), Verdict::Success);
    let message = json(&a);
    assert_eq!(message["type"], "message", "Anthropic's own message object");
    // The fake names its message after the xxh3 of the bytes it received.
    let hash = xxhash_rust::xxh3::xxh3_64(body.as_bytes());
    let id = message["id"].as_str().unwrap();
    assert!(
        id.starts_with(&format!("msg_{hash:016x}")),
        "{id}: the body was changed on the way"
    );
    assert!(
        a.request_id
            .as_deref()
            .is_some_and(|r| r.starts_with("req_"))
    );
    let usage = a.usage.expect("usage read from the message");
    assert_eq!(
        usage.input,
        message["usage"]["input_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        usage.output,
        message["usage"]["output_tokens"].as_u64().unwrap()
    );
    // The anthropic-ratelimit-* readings, input and output apart.
    assert_eq!(a.limits.input_tokens.limit, Some(50_000));
    assert_eq!(a.limits.output_tokens.limit, Some(10_000));
    assert!(a.limits.input_tokens.remaining.is_some());
    assert_eq!(server.ok_count_for("n-1"), 1);
}

#[tokio::test]
async fn an_openai_line_comes_back_as_a_chat_completion_with_cache_usage() {
    let server = start(MockConfig::default()).await;
    let c = client(&server, &[]);
    let system = "You answer questions about the long document below. ".repeat(20);
    let body = serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_completion_tokens": 40,
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "What is it about?"}
        ]
    })
    .to_string();
    let first = answered(
        c.send(&outgoing("c-1", Endpoint::ChatCompletions, &body))
            .await,
    );
    assert_eq!(
        first.status,
        200,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let completion = json(&first);
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        "echo:What is it about?"
    );
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    let written = first.usage.expect("usage").cache_write;
    assert!(written > 0, "the first request writes the prefix");
    assert_eq!(
        completion["usage"]["prompt_tokens_details"]["cache_write_tokens"],
        written
    );

    let second = answered(
        c.send(&outgoing("c-2", Endpoint::ChatCompletions, &body))
            .await,
    );
    let usage = second.usage.expect("usage");
    assert_eq!(usage.cached_input, written, "the second reads it");
    assert_eq!(usage.cache_write, 0);
    let completion = json(&second);
    assert_eq!(
        completion["usage"]["prompt_tokens_details"]["cached_tokens"],
        written
    );
    assert_eq!(
        completion["usage"]["prompt_tokens"].as_u64(),
        Some(usage.input),
        "prompt_tokens counts cache reads, as OpenAI's does"
    );
}

#[tokio::test]
async fn an_untranslatable_line_fails_unsent_naming_the_field() {
    let server = start(MockConfig::default()).await;
    let c = client(&server, &[]);
    let body = r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}],"logprobs":true}"#;
    let a = c
        .send(&outgoing("u-1", Endpoint::ChatCompletions, body))
        .await;
    let Attempt::Transport(t) = &a else {
        panic!("expected a failure without a call, got {a:?}");
    };
    assert_eq!(t.kind, TransportKind::Invalid);
    assert!(t.message.contains("`logprobs`"), "{}", t.message);
    assert_eq!(
        c.classify(&a),
        Verdict::Fail(batchling_core::FailKind::Invalid)
    );
    assert_eq!(server.attempts_for("u-1"), 0, "nothing was sent");
}

#[tokio::test]
async fn errors_are_classified_and_described_the_anthropic_way() {
    let server = start(MockConfig::default()).await;
    let body =
        r#"{"model":"claude-haiku-4-5","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#;
    // A wrong key: the run stops, and the key is in no message.
    server.require_anthropic_key(Some("sk-ant-the-right-one"));
    let c = client(&server, &[]);
    let a = c.send(&outgoing("k-1", Endpoint::Messages, body)).await;
    let verdict = c.classify(&a);
    assert!(
        matches!(
            verdict,
            Verdict::StopRun(StopReason::Unauthorized { status: 401, .. })
        ),
        "{verdict:?}"
    );
    let a = answered(a);
    assert_eq!(a.status, 401);
    let said = c.describe(&a);
    assert!(said.starts_with("authentication_error: "), "{said}");
    assert!(!said.contains(KEY) && !String::from_utf8_lossy(&a.body).contains(KEY));
    server.require_anthropic_key(None);

    // Every attempt overloaded: retried as the provider's load, not as a
    // rate limit.
    server.set_faults(Faults {
        overloaded: 1.0,
        ..Faults::default()
    });
    let a = c.send(&outgoing("o-1", Endpoint::Messages, body)).await;
    let verdict = c.classify(&a);
    let a = answered(a);
    assert_eq!(a.status, 529);
    assert!(
        matches!(
            verdict,
            Verdict::Retry {
                reason: RetryReason::ServerError,
                ..
            }
        ),
        "{verdict:?}"
    );
    assert_eq!(c.describe(&a), "overloaded_error: Overloaded");
}

#[tokio::test]
async fn user_headers_pass_through_and_v1_bases_are_taken() {
    let server = start(MockConfig::default()).await;
    let body =
        r#"{"model":"claude-haiku-4-5","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#;
    let c = client(
        &server,
        &[
            ("anthropic-version", "2023-01-01"),
            ("anthropic-beta", "x-1"),
        ],
    );
    let a = answered(c.send(&outgoing("v-1", Endpoint::Messages, body)).await);
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let empty = AnthropicClient::new(AnthropicConfig {
        base_url: format!("{}/v1", server.anthropic_base_url()),
        api_key: Some(ApiKey::new(KEY)),
        version: "2023-06-01".into(),
        ..AnthropicConfig::default()
    })
    .unwrap();
    let a = answered(empty.send(&outgoing("v-2", Endpoint::Messages, body)).await);
    assert_eq!(a.status, 200, "a base URL ending in /v1 is taken as well");
}
