//! Lanes over real HTTP: limits per model and per limit group, the TPM
//! counting rules, and the 429 text and headers of the lane charged. No
//! timing assertions: every test stays far inside one 60 s window.

#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

mod support;
use support::{client, start};

use batchling_core::endpoint::Endpoint;
use batchling_mock::{
    LimitGroup, LimitTable, LimitWindow, LimitsFile, MockConfig, MockServer, ModelLimit, TokenCount,
};
use serde_json::{Value, json};

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<u64> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().parse().unwrap())
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 8})
}

async fn send(c: &reqwest::Client, server: &MockServer, key: Option<&str>, body: &Value) -> Answer {
    let mut req = c
        .post(format!("{}/chat/completions", server.base_url()))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("answer");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    Answer {
        status,
        headers,
        body,
    }
}

/// Statuses of `n` requests of one model with one key.
async fn statuses(
    c: &reqwest::Client,
    server: &MockServer,
    key: Option<&str>,
    model: &str,
    n: usize,
) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(
            send(c, server, key, &chat(model, &format!("hi {i}")))
                .await
                .status,
        );
    }
    out
}

#[tokio::test]
async fn per_model_limits_are_independent_and_families_share() {
    let server = start(MockConfig {
        limits: LimitTable {
            models: vec![
                ModelLimit::new("model-a", Some(2), None),
                ModelLimit::new("model-b", Some(3), None),
                ModelLimit::shared("fam", &["fam-x", "fam-y"], Some(2), None),
            ],
            groups: vec![],
        },
        ..MockConfig::default()
    })
    .await;
    let c = client();
    assert_eq!(
        statuses(&c, &server, None, "model-a", 3).await,
        [200, 200, 429]
    );
    // A's budget is spent; B's is its own.
    assert_eq!(
        statuses(&c, &server, None, "model-b", 4).await,
        [200, 200, 200, 429]
    );
    // The family shares one budget.
    assert_eq!(statuses(&c, &server, None, "fam-x", 1).await, [200]);
    assert_eq!(statuses(&c, &server, None, "fam-y", 2).await, [200, 429]);
    // A model without a limit of its own has the default: none here, so no
    // headers either.
    let free = send(&c, &server, None, &chat("other", "hi")).await;
    assert_eq!(free.status, 200);
    assert_eq!(free.header("x-ratelimit-limit-requests"), None);

    let b = send(&c, &server, None, &chat("model-b", "again")).await;
    assert_eq!(b.status, 429);
    assert_eq!(b.header("x-ratelimit-limit-requests"), Some(3));
    assert_eq!(b.header("x-ratelimit-remaining-requests"), Some(0));
    assert_eq!(b.header("x-ratelimit-limit-tokens"), None);
    assert!(
        b.message().starts_with(
            "Rate limit reached for model-b in organization org-mock on requests per min \
             (RPM): Limit 3, Used 3, Requested 1. Please try again in "
        ),
        "{}",
        b.message()
    );
    assert_eq!(b.body["error"]["type"], "requests");

    let lanes = server.lane_stats();
    let lane = |limit: &str| lanes.iter().find(|l| l.limit == limit).unwrap();
    assert_eq!(
        (lane("model-a").requests, lane("model-a").rate_limited),
        (2, 1)
    );
    assert_eq!(
        (lane("model-b").requests, lane("model-b").rate_limited),
        (3, 2)
    );
    assert_eq!((lane("fam").requests, lane("fam").rate_limited), (2, 1));
    assert_eq!(lanes.len(), 3, "the unlimited default lane is not counted");
    server.shutdown().await;
}

#[tokio::test]
async fn two_keys_of_one_group_share_and_two_groups_add_up() {
    let server = start(MockConfig {
        rpm: Some(2),
        limits: LimitTable {
            models: vec![],
            groups: vec![
                LimitGroup::new("org-a", &["sk-a1", "sk-a2"]),
                LimitGroup::new("org-b", &["sk-b1"]),
            ],
        },
        ..MockConfig::default()
    })
    .await;
    let c = client();
    assert_eq!(statuses(&c, &server, Some("sk-a1"), "m", 1).await, [200]);
    assert_eq!(statuses(&c, &server, Some("sk-a2"), "m", 1).await, [200]);
    let refused = send(&c, &server, Some("sk-a1"), &chat("m", "third")).await;
    assert_eq!(refused.status, 429);
    assert!(
        refused
            .message()
            .starts_with("Rate limit reached for m in organization org-a on requests per min"),
        "{}",
        refused.message()
    );
    assert!(!refused.message().contains("sk-a"), "a key leaked");
    // Another group has budgets of its own, and so has the default group
    // (no key, or a key in no group).
    assert_eq!(
        statuses(&c, &server, Some("sk-b1"), "m", 3).await,
        [200, 200, 429]
    );
    assert_eq!(statuses(&c, &server, None, "m", 1).await, [200]);
    let unknown = send(&c, &server, Some("sk-unknown"), &chat("m", "x")).await;
    assert_eq!(unknown.status, 200);
    assert_eq!(unknown.header("x-ratelimit-remaining-requests"), Some(0));

    let s = server.stats();
    assert_eq!((s.ok, s.rate_limited), (6, 2));
    let mut lanes: Vec<_> = server
        .lane_stats()
        .into_iter()
        .map(|l| (l.group, l.limit, l.requests, l.rate_limited))
        .collect();
    lanes.sort();
    assert_eq!(
        lanes,
        [
            ("org-a".into(), "*".into(), 2, 1),
            ("org-b".into(), "*".into(), 2, 1),
            ("org-mock".into(), "*".into(), 2, 0),
        ]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_openai_rule_charges_characters_over_four_plus_max_tokens() {
    let text = "The quick brown fox jumps over the lazy dog, twice over.";
    let body = chat("gpt-4o-mini", text);
    // Characters of every string but the model: "user" and the text.
    let chars = (4 + text.chars().count()) as u64;
    let openai = chars.div_ceil(4) + 8;
    let exact = batchling_core::tokens::estimate(Endpoint::ChatCompletions, &body, 16)
        .unwrap()
        .total();
    assert_ne!(openai, exact, "the test must tell the rules apart");
    let c = client();
    for (rule, charged) in [(TokenCount::OpenAi, openai), (TokenCount::Exact, exact)] {
        let tpm = 1000;
        let server = start(MockConfig {
            tpm: Some(tpm),
            token_count: rule,
            ..MockConfig::default()
        })
        .await;
        let a = send(&c, &server, None, &body).await;
        assert_eq!(a.status, 200);
        assert_eq!(
            a.header("x-ratelimit-remaining-tokens"),
            Some(tpm - charged)
        );
        assert_eq!(server.stats().tokens_admitted, charged, "{rule}");
        // usage stays the tokenizer's count, whatever the rule.
        assert_eq!(
            a.body["usage"]["prompt_tokens"],
            exact - 8,
            "{rule}: {}",
            a.body
        );
        server.shutdown().await;
    }
}

#[tokio::test]
async fn a_429_names_the_lane_charged_and_its_token_figures() {
    let body = chat("big", "some words to count here");
    let chars = (4 + "some words to count here".len()) as u64;
    let cost = chars.div_ceil(4) + 8;
    let server = start(MockConfig {
        rpm: Some(100),
        tpm: Some(1000),
        token_count: TokenCount::OpenAi,
        limits: LimitTable {
            models: vec![ModelLimit::new("big", None, Some(cost * 2))],
            groups: vec![LimitGroup::new("org-t", &["sk-t"])],
        },
        ..MockConfig::default()
    })
    .await;
    let c = client();
    for _ in 0..2 {
        assert_eq!(send(&c, &server, Some("sk-t"), &body).await.status, 200);
    }
    let a = send(&c, &server, Some("sk-t"), &body).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.body["error"]["type"], "tokens");
    assert_eq!(a.body["error"]["code"], "rate_limit_exceeded");
    let want = format!(
        "Rate limit reached for big in organization org-t on tokens per min (TPM): \
         Limit {}, Used {}, Requested {cost}. Please try again in ",
        cost * 2,
        cost * 2
    );
    assert!(a.message().starts_with(&want), "{}\n{want}", a.message());
    // The lane of "big" has no RPM: only token headers.
    assert_eq!(a.header("x-ratelimit-limit-tokens"), Some(cost * 2));
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), Some(0));
    assert_eq!(a.header("x-ratelimit-limit-requests"), None);
    assert!(a.headers.contains_key("retry-after-ms"));
    // Another model of the same key: the default lane's headers.
    let other = send(&c, &server, Some("sk-t"), &chat("small", "x")).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.header("x-ratelimit-limit-requests"), Some(100));
    assert_eq!(other.header("x-ratelimit-remaining-requests"), Some(99));
    assert_eq!(other.header("x-ratelimit-limit-tokens"), Some(1000));
    server.shutdown().await;
}

#[tokio::test]
async fn per_second_counts_never_exceed_a_lanes_share() {
    // 120 RPM enforced per second: 2 a second.
    let server = start(MockConfig {
        window: LimitWindow::Second,
        limits: LimitTable {
            models: vec![ModelLimit::new("m", Some(120), None)],
            groups: vec![],
        },
        ..MockConfig::default()
    })
    .await;
    let c = client();
    let got = statuses(&c, &server, None, "m", 6).await;
    let ok = got.iter().filter(|&&s| s == 200).count() as u64;
    assert!(ok >= 2, "{got:?}");
    let lane = &server.lane_stats()[0];
    assert_eq!(lane.requests, ok);
    assert_eq!(lane.per_second.iter().map(|s| s.requests).sum::<u64>(), ok);
    assert!(lane.peak().requests <= 2, "{lane:?}");
    // The stats page lists the lanes too.
    let page = c
        .get(format!("http://{}/_mock/stats", server.addr()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let page: Value = serde_json::from_str(&page).unwrap();
    assert_eq!(page["lanes"][0]["limit"], "m");
    assert_eq!(page["lanes"][0]["requests"], ok);
    assert_eq!(page["ok"], ok);
    server.shutdown().await;
}

#[tokio::test]
async fn a_limits_file_configures_the_same_lanes() {
    let file = LimitsFile::parse(
        "limits.toml",
        "[default]\nrpm = 50\n\n[models.mini]\nmodels = [\"m1\", \"m2\"]\nrpm = 1\n\n\
         [groups]\norg-f = [\"sk-f\"]\n",
    )
    .unwrap();
    let mut config = MockConfig {
        rpm: Some(7),
        ..MockConfig::default()
    };
    config.apply_limits(file);
    assert_eq!(config.rpm, Some(50));
    let server = start(config).await;
    let c = client();
    assert_eq!(statuses(&c, &server, Some("sk-f"), "m1", 1).await, [200]);
    assert_eq!(statuses(&c, &server, Some("sk-f"), "m2", 1).await, [429]);
    assert_eq!(statuses(&c, &server, None, "m2", 1).await, [200]);
    let a = send(&c, &server, Some("sk-f"), &chat("m3", "x")).await;
    assert_eq!(a.header("x-ratelimit-limit-requests"), Some(50));
    server.shutdown().await;
}
