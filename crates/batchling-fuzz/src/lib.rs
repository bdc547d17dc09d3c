//! The fuzz targets' bodies: one function per target, each feeding outside
//! bytes to the real parser and asserting what is cheap to assert. A panic
//! anywhere (in the parser or in an assertion) is a finding.
//!
//! `fuzz/` (a cargo-fuzz project outside the workspace) calls these from
//! libFuzzer; `tests/replay.rs` runs every file of `fuzz/corpus/<target>/`
//! and `fuzz/regressions/<target>/` through them, so `cargo test` replays
//! the corpus without fuzzing. [`TARGETS`] is the one list of both.
#![deny(missing_docs)]

use batchling_core::json::{ScanError, scan_object, string_value};
use batchling_core::pricing::{Catalog, TokenCounts};
use batchling_core::usage::{BodyRead, read_body};
use batchling_engine::Validator;
use batchling_providers::openai::headers;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

/// A target's body: one input, a panic when something is wrong.
pub type Target = fn(&[u8]);

/// Every target: its directory name under `fuzz/corpus/` and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("json_scan", json_scan),
    ("input_line", input_line),
    ("ratelimit_headers", ratelimit_headers),
    ("price_file", price_file),
    ("routes_config", routes_config),
    ("serve_config", serve_config),
    ("multipart_upload", multipart_upload),
    ("serve_json_bodies", serve_json_bodies),
    ("usage_body", usage_body),
    ("batch_output", batch_output),
    ("http_response", http_response),
];

/// The lean HTTP/1.1 client's answer reader on a peer's bytes, read whole
/// and in small pieces: never a panic, and both readings agree
/// (`batchling_providers::fuzzing::http_response`).
pub fn http_response(data: &[u8]) {
    batchling_providers::fuzzing::http_response(data);
}

/// The JSON scanner against serde_json: whatever serde_json reads as an
/// object the scanner accepts, with the same member values; what only the
/// scanner accepts is one of the documented differences (`core::json`).
pub fn json_scan(data: &[u8]) {
    const KEYS: [&str; 3] = ["a", "usage", "\u{e9}"];
    let serde = serde_json::from_slice::<Map<String, Value>>(data);
    let Ok(text) = std::str::from_utf8(data) else {
        assert!(serde.is_err(), "serde_json accepted invalid UTF-8");
        return;
    };
    match (scan_object(text, KEYS), serde) {
        (Ok(spans), Ok(map)) => {
            for (key, span) in KEYS.iter().zip(spans) {
                assert_eq!(span.is_some(), map.contains_key(*key), "key {key:?}");
                let Some(span) = span else { continue };
                let raw = text.get(span).expect("a span on char boundaries");
                let value: Value = serde_json::from_str(raw).expect("a span is one value");
                assert_eq!(Some(&value), map.get(*key), "value of {key:?}");
                if let (Some(s), Value::String(want)) = (string_value(raw), &value) {
                    assert_eq!(&*s, want);
                }
            }
        }
        (Ok(_), Err(e)) => assert!(
            is_deliberate_difference(&e),
            "only the scanner accepts {text:?}: serde_json says {e}"
        ),
        // A wanted key twice is refused on purpose; serde_json keeps the last.
        (Err(ScanError::DuplicateKey(_)), Ok(_)) => {}
        (Err(ScanError::Syntax(at)), Ok(_)) => {
            panic!("the scanner refuses {text:?} at {at}, serde_json reads it")
        }
        (Err(_), Err(_)) => {}
    }
}

/// What serde_json refuses and the scanner deliberately accepts (see the
/// module doc of `batchling_core::json`): nesting deeper than serde_json's
/// 128, lone surrogate escapes, numbers beyond f64's range.
fn is_deliberate_difference(e: &serde_json::Error) -> bool {
    let m = e.to_string();
    [
        "recursion limit exceeded",
        "lone leading surrogate",
        "unexpected end of hex escape",
        "invalid unicode code point",
        "number out of range",
    ]
    .iter()
    .any(|d| m.starts_with(d))
}

/// One input line (and, split at newlines, a few) through the reader's
/// validator; a valid line's fields are what the line holds; token counting
/// on its body never panics.
pub fn input_line(data: &[u8]) {
    let mut v = Validator::default();
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        let line_no = i as u64 + 1;
        if batchling_core::request::is_blank(line) {
            continue;
        }
        match v.validate(line_no, line) {
            Ok(req) => {
                assert_eq!(req.line_no, line_no);
                assert!(!req.custom_id.trim().is_empty());
                assert!(req.body.starts_with('{') && req.body.ends_with('}'));
                let at = line
                    .windows(req.body.len())
                    .position(|w| w == req.body.as_bytes());
                assert!(at.is_some(), "the body is not a verbatim slice of the line");
                if let Ok(body) = req.body_value() {
                    let _ = batchling_core::tokens::estimate(req.endpoint, &body, 1000);
                }
            }
            Err(e) => {
                assert_eq!(e.line_no, line_no);
                assert!(!e.problem.code().is_empty());
                let _ = e.to_string();
            }
        }
    }
}

/// The headers the rate-limit readers look at.
const HEADER_NAMES: [&str; 10] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "retry-after-ms",
    "retry-after",
    "x-should-retry",
    "x-request-id",
];

/// Response headers: each line is one header, its first byte choosing the
/// name (of `HEADER_NAMES`) and the rest its value, through the readers
/// of `providers::openai::headers` and `core::duration`.
pub fn ratelimit_headers(data: &[u8]) {
    let mut map = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some((&pick, value)) = line.split_first() else {
            continue;
        };
        let name = HeaderName::from_static(HEADER_NAMES[usize::from(pick) % HEADER_NAMES.len()]);
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(name, value);
        }
        if let Ok(text) = std::str::from_utf8(value)
            && let Some(d) = batchling_core::duration::parse_duration(text)
        {
            let _ = batchling_core::duration::format_duration(d);
        }
    }
    let limits = headers::rate_limits(&map);
    for reading in [limits.requests, limits.tokens] {
        assert_ne!(reading.limit, Some(0), "a zero limit reads as unknown");
    }
    let _ = headers::retry_after(&map);
    let _ = headers::should_retry(&map);
    let _ = headers::request_id(&map);
}

/// A price file, read as TOML, as JSON and sniffed; every loaded price is
/// a finite non-negative number, and a refused file leaves the catalog empty.
pub fn price_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for name in ["prices.toml", "prices.json", "prices"] {
        let mut c = Catalog::new();
        match c.load_str(name, text) {
            Ok(n) => assert!(c.len() <= n),
            Err(e) => {
                assert!(c.is_empty(), "a refused file changed the catalog");
                let _ = e.to_string();
            }
        }
        let most = TokenCounts {
            input: u64::MAX,
            cached_input: u64::MAX,
            cache_write: u64::MAX,
            output: u64::MAX,
            cache_write_1h: u64::MAX,
        };
        for (model, p) in c.iter() {
            let prices = [
                p.input,
                p.output,
                p.batch_input_price(),
                p.batch_output_price(),
            ];
            let more = [
                p.cached_input,
                p.cache_write,
                p.cache_write_1h,
                p.batch_input,
                p.batch_output,
            ];
            assert!(
                prices
                    .into_iter()
                    .chain(more.into_iter().flatten())
                    .all(|x| x.is_finite() && x >= 0.0),
                "{model}: a price that is not a finite non-negative number: {p:?}"
            );
            let _ = (p.cost_online(&most), p.cost_batch(&most));
        }
        let _ = c.checked_dates();
    }
}

/// A routes config (`--config`): never a panic; what loads has every
/// chain expanded to known targets, each once; keys resolve or are named
/// missing; no error or warning repeats a key-looking value.
pub fn routes_config(data: &[u8]) {
    use batchling_core::routes::RoutesConfig;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match RoutesConfig::parse(text, "routes.toml") {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for route in config.routes.values() {
        let c = &route.expanded;
        assert!(!c.chain.is_empty(), "{}: an empty chain loaded", route.name);
        for chain in [&c.chain, &c.context_window, &c.content_policy] {
            for (i, t) in chain.iter().enumerate() {
                assert!(
                    config.models.contains_key(t),
                    "{}: unknown target {t}",
                    route.name
                );
                assert!(!chain[..i].contains(t), "{}: {t} twice", route.name);
            }
        }
        assert!(route.attempts() >= 1);
    }
    let _ = config.price_warnings(&Catalog::builtin());
    let _ = config.resolve_keys(|_| None);
    let _ = config.resolve_keys(|k| Some(format!("v-{k}")));
}

/// `batchling serve`'s config file; what loads has upstreams with unique
/// names and usable limits.
pub fn serve_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match batchling_server::config::load_str("serve.toml", text, |v| {
        (v != "UNSET").then(|| "sk-fuzz".to_owned())
    }) {
        Ok(loaded) => {
            assert!(!loaded.upstreams.is_empty());
            let mut names: Vec<_> = loaded.upstreams.iter().map(|u| &u.name).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), loaded.upstreams.len(), "upstream names repeat");
            for u in &loaded.upstreams {
                assert!(u.concurrency > 0 && !u.timeout.is_zero() && !u.models.is_empty());
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// `POST /v1/files` through serve's real router with a fuzzed multipart
/// body: a client error at worst, never a 5xx.
pub fn multipart_upload(data: &[u8]) {
    let status = batchling_server::fuzzing::upload(data);
    assert!(status < 500, "upload answered {status}");
}

/// serve's JSON bodies and query strings: a body starting with `?` or `&`
/// is a query for `GET /v1/batches` or `GET /v1/files`, `/` a whole
/// request target for GET; anything else is the body of `POST /v1/batches`.
pub fn serve_json_bodies(data: &[u8]) {
    let status = match data.split_first() {
        Some((b'?', q)) => batchling_server::fuzzing::get(&[b"/v1/batches?", q].concat()),
        Some((b'&', q)) => batchling_server::fuzzing::get(&[b"/v1/files?", q].concat()),
        Some((b'/', _)) => batchling_server::fuzzing::get(data),
        _ => batchling_server::fuzzing::batch_request(data),
    };
    assert!(status < 500, "serve answered {status}");
}

/// An answer body: `usage` read in every endpoint's shape; a body reads as
/// JSON exactly when the scanner accepts it.
pub fn usage_body(data: &[u8]) {
    let read = read_body(data);
    let scans = std::str::from_utf8(data).is_ok_and(|t| scan_object(t, ["usage"]).is_ok());
    assert_eq!(matches!(read, BodyRead::Json(_)), scans);
    if let BodyRead::Json(Some(u)) = read {
        let mut sum = u;
        sum.add(u);
        let _ = (u.total(), sum.total(), TokenCounts::from(u));
    }
}

/// A finished batch from the upstream (first line: the batch object; the
/// rest: its result file) through `submit`'s collect: every request of the
/// part gets exactly one record, whatever the file says.
pub fn batch_output(data: &[u8]) {
    let records = batchling_engine::fuzzing::batch_output(data);
    let mut seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    let want: Vec<u64> = (0..batchling_engine::fuzzing::PART_IDS.len() as u64).collect();
    assert_eq!(seqs, want, "one record per request");
    for r in &records {
        assert_eq!(r.line_no, r.seq + 1);
        if r.state == batchling_store::FinalState::Done {
            assert!(
                r.status_code.is_some_and(|s| (200..300).contains(&s)),
                "{r:?}"
            );
        }
        assert!(
            r.cost_usd.is_none_or(|c| c.is_finite() && c >= 0.0),
            "{r:?}"
        );
    }
}
