//! `--provider azure` against the Azure-shaped fake (both URL forms, online
//! and through `submit`), and OpenAI's clients unchanged against the Azure-
//! and Groq-shaped fakes.

use batchling_mock::{MockConfig, Shape};

use crate::support::*;

fn azure() -> Mock {
    Mock::start(MockConfig {
        shape: Shape::Azure,
        ..MockConfig::default()
    })
}

/// Chat lines, an embeddings line and a completions line: every endpoint
/// both forms map.
fn mixed_file() -> (String, Vec<String>) {
    let (mut input, mut ids) = chat_file("chat", 3);
    for (id, url, body) in [
        (
            "emb",
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-small","input":"hello"}"#,
        ),
        (
            "cmpl",
            "/v1/completions",
            r#"{"model":"gpt-35-turbo-instruct","prompt":"hello","max_tokens":4}"#,
        ),
    ] {
        input.push_str(&line(id, url, body));
        input.push('\n');
        ids.push(id.to_owned());
    }
    (input, ids)
}

#[test]
fn the_dated_form_names_each_lines_deployment_and_sends_the_key_in_api_key() {
    let mock = azure();
    let (input, ids) = mixed_file();
    let o = Run::new(&input)
        .against_azure(&mock, Some("2024-10-21"))
        .run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &ids);
    assert_chat_echo(by_id(&o.out_lines(), "chat-001"), "question chat-001");
    let s = mock.shape_stats();
    // Every line on /openai/deployments/{model}/...?api-version=; the fake
    // refuses a request without api-key or with Authorization, and none was.
    assert_eq!(s.deployment_requests, 5, "{s:?}");
    assert_eq!((s.v1_requests, s.unauthorized, s.not_found), (0, 0, 0));
    assert!(!o.stderr.contains(API_KEY));
}

#[test]
fn the_v1_form_keeps_the_model_in_the_body() {
    let mock = azure();
    let (input, ids) = mixed_file();
    let o = Run::new(&input).against_azure(&mock, None).run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &ids);
    let s = mock.shape_stats();
    assert_eq!(s.v1_requests, 5, "{s:?}");
    assert_eq!((s.deployment_requests, s.unauthorized), (0, 0));
}

#[test]
fn a_content_filter_400_fails_its_line_once_and_the_journal_keeps_the_provider() {
    let mock = Mock::start(MockConfig {
        shape: Shape::Azure,
        content_filter: 1.0,
        ..MockConfig::default()
    });
    let (input, ids) = chat_file("filtered", 2);
    let o = Run::new(&input)
        .against_azure(&mock, Some("2024-10-21"))
        .run();
    o.assert_code(1);
    let errors = o.err_lines();
    assert_each_once(&errors, &ids);
    for e in &errors {
        assert_eq!(e["response"]["status_code"], 400, "{e}");
        let body = &e["response"]["body"]["error"];
        assert_eq!(body["code"], "content_filter", "{e}");
        assert_eq!(
            body["innererror"]["code"], "ResponsibleAIPolicyViolation",
            "{e}"
        );
    }
    // Not retried: a refusal is permanent.
    assert_eq!(mock.shape_stats().content_filtered, 2);

    // The journal says Azure: a resume with another provider is refused.
    let again = o.again().clear_args().against(&mock).run();
    again.assert_code(2);
    assert!(
        again.stderr.contains("--provider azure"),
        "{}",
        again.stderr
    );
}

#[test]
fn azure_needs_its_endpoint() {
    let mock = azure();
    let (input, _) = chat_file("x", 1);
    let o = Run::new(&input)
        .against_azure(&mock, None)
        .clear_args()
        .args(&["--provider", "azure"])
        .run();
    o.assert_code(2);
    assert!(o.stderr.contains("AZURE_OPENAI_ENDPOINT"), "{}", o.stderr);
    let o = Run::new(&input)
        .against_azure(&mock, Some("2024 10 21"))
        .run();
    o.assert_code(2);
    assert!(o.stderr.contains("api-version"), "{}", o.stderr);
}

#[test]
fn submit_to_azure_in_both_url_forms() {
    for version in [Some("2024-10-21"), None] {
        let mock = azure();
        let (input, ids) = chat_file("batch", 4);
        let o = Run::submit(&input).against_azure(&mock, version).run();
        o.assert_code(0);
        assert_each_once(&o.out_lines(), &ids);
        assert!(o.err_lines().is_empty(), "{}", o.err_text());
        assert_chat_echo(by_id(&o.out_lines(), "batch-002"), "question batch-002");
        assert_eq!(mock.batch_stats().batches_created, 1);
        let s = mock.shape_stats();
        assert_eq!(s.unauthorized, 0, "{s:?}");
        match version {
            // Files and batches under /openai/...?api-version=.
            Some(_) => assert!(s.dated_requests >= 3 && s.v1_requests == 0, "{s:?}"),
            None => assert!(s.v1_requests >= 3 && s.dated_requests == 0, "{s:?}"),
        }
    }
}

#[test]
fn the_openai_batch_client_drives_the_azure_fake_unchanged() {
    let mock = azure();
    let (input, ids) = chat_file("plain", 3);
    let endpoint = mock.base_url().trim_end_matches("/v1").to_owned();
    let header = format!("api-key: {API_KEY}");
    let o = Run::submit(&input)
        .without_key()
        .args(&[
            "--base-url",
            &format!("{endpoint}/openai/v1"),
            "--header",
            &header,
        ])
        .run();
    o.assert_code(0);
    assert_each_once(&o.out_lines(), &ids);
    assert!(mock.shape_stats().v1_requests >= 3);
}

#[test]
fn the_openai_clients_drive_the_groq_fake_unchanged() {
    let mock = Mock::start(MockConfig {
        shape: Shape::Groq,
        ..MockConfig::default()
    });
    let base = format!("{}/openai/v1", mock.base_url().trim_end_matches("/v1"));
    let (input, ids) = chat_file("groq", 3);
    let o = Run::submit(&input).args(&["--base-url", &base]).run();
    o.assert_code(0);
    let out = o.out_lines();
    assert_each_once(&out, &ids);
    assert_chat_echo(by_id(&out, "groq-001"), "question groq-001");
    let body = &by_id(&out, "groq-000")["response"]["body"];
    assert!(body["x_groq"]["id"].is_string(), "{body}");
    assert!(body["usage"]["queue_time"].is_number(), "{body}");

    // Online too: the extra fields ride along in the answer.
    let o = Run::new(&input).args(&["--base-url", &base]).run();
    o.assert_code(0);
    let out = o.out_lines();
    assert_each_once(&out, &ids);
    assert!(by_id(&out, "groq-002")["response"]["body"]["x_groq"].is_object());
    assert_eq!(mock.shape_stats().not_found, 0);
}

#[test]
fn a_resume_and_a_cancel_find_the_endpoint_in_the_journal() {
    let mock = azure();
    mock.set_batch_behavior(batchling_mock::BatchBehavior {
        polls_to_finish: 2,
        end: batchling_mock::BatchEnd::Hold,
        answered_before_stop: 1,
    });
    let (input, ids) = chat_file("held", 3);
    let running = Run::submit(&input)
        .against_azure(&mock, Some("2024-10-21"))
        .spawn();
    wait_for("the batch to be polled", || mock.batch_stats().polls >= 2);
    let run = running.kill();
    let state = run.state_path();
    // Only the key: the endpoint is the one the journal records.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_batchling"))
        .args([
            "cancel",
            state.to_str().unwrap(),
            "--poll-interval",
            "5ms",
            "--quiet",
        ])
        .args(["--azure-api-version", "2024-10-21"])
        .env_remove("AZURE_OPENAI_ENDPOINT")
        .env_remove("AZURE_OPENAI_API_VERSION")
        .env_remove("OPENAI_API_KEY")
        .env("AZURE_OPENAI_API_KEY", API_KEY)
        .output()
        .expect("run batchling cancel");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.contains("cancelled 1 batch"), "{out}");
    assert_eq!(mock.batch_objects()[0]["status"], "cancelled");
    let mut all = parse_lines(&std::fs::read_to_string(run.out_path()).unwrap(), "output");
    all.extend(parse_lines(
        &std::fs::read_to_string(run.dir().join("out.errors.jsonl")).unwrap(),
        "error",
    ));
    assert_each_once(&all, &ids);
    assert_eq!(mock.shape_stats().unauthorized, 0);
}

#[test]
fn a_resume_goes_to_the_recorded_endpoint() {
    let mock = azure();
    let (input, ids) = chat_file("again", 2);
    let o = Run::new(&input).against_azure(&mock, None).run();
    o.assert_code(0);
    let again = o.again().clear_args().args(&["--provider", "azure"]).run();
    again.assert_code(0);
    assert!(
        again.stderr.contains("resuming against"),
        "{}",
        again.stderr
    );
    assert_each_once(&again.out_lines(), &ids);
}
