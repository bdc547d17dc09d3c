//! The Azure- and Groq-shaped fakes over real HTTP: their URLs, Azure's
//! key header, Groq's batch windows.

// A test crate sees every dependency of its package and uses a few; it may
// print what it measured or skipped.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

mod support;
use support::{client, start};

use batchling_mock::{MockConfig, Shape};
use serde_json::{Value, json};

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

fn root(server: &batchling_mock::MockServer) -> String {
    server.base_url().trim_end_matches("/v1").to_owned()
}

#[tokio::test]
async fn azure_wants_api_key_and_refuses_authorization() {
    let server = start(MockConfig {
        shape: Shape::Azure,
        ..MockConfig::default()
    })
    .await;
    let url = format!(
        "{}/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21",
        root(&server)
    );
    let http = client();
    let post = |headers: &[(&str, &str)]| {
        let mut r = http.post(&url).body(CHAT);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.send()
    };
    let ok = post(&[("api-key", "k")]).await.unwrap();
    assert_eq!(ok.status(), 200);
    for headers in [
        &[("authorization", "Bearer k")][..],
        &[("api-key", "k"), ("authorization", "Bearer k")][..],
        &[][..],
    ] {
        let r = post(headers).await.unwrap();
        assert_eq!(r.status(), 401, "{headers:?}");
        let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "401", "{body}");
    }
    // The dated form needs its api-version; OpenAI's own paths are not Azure's.
    let bare = url.split('?').next().unwrap().to_owned();
    let r = http
        .post(bare)
        .header("api-key", "k")
        .body(CHAT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = (http.post(format!("{}/v1/chat/completions", root(&server))))
        .header("api-key", "k")
        .body(CHAT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let s = server.shape_stats();
    assert_eq!(
        (s.deployment_requests, s.unauthorized, s.not_found),
        (4, 3, 2)
    );
}

#[tokio::test]
async fn groq_takes_batch_windows_up_to_seven_days_under_openai_v1() {
    let server = start(MockConfig {
        shape: Shape::Groq,
        ..MockConfig::default()
    })
    .await;
    let base = format!("{}/openai/v1", root(&server));
    let http = client();
    let line = json!({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
        "body": serde_json::from_str::<Value>(CHAT).unwrap()});
    let upload = format!(
        "--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--b\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\r\n{line}\n\r\n--b--\r\n"
    );
    let r = http
        .post(format!("{base}/files"))
        .header("content-type", "multipart/form-data; boundary=b")
        .body(upload)
        .send()
        .await
        .unwrap();
    let file: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let create = |window: &str| {
        let body = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
            "completion_window": window});
        http.post(format!("{base}/batches"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let made = create("7d").await.unwrap().bytes().await.unwrap();
    let made: Value = serde_json::from_slice(&made).unwrap();
    assert_eq!(made["completion_window"], "7d", "{made}");
    assert_eq!(create("8d").await.unwrap().status(), 400);
    let r = http
        .post(format!("{}/v1/chat/completions", root(&server)))
        .body(CHAT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
