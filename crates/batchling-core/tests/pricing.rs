//! The price catalog: the built-in table, name matching, the three file
//! formats, error messages and cost arithmetic.

// A test crate sees every dependency of its package and uses a few; it may
// print what it measured or skipped.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};

use batchling_core::Usage;
use batchling_core::pricing::{Catalog, ModelPrice, PriceError, TokenCounts};
use batchling_core::usage::{BodyRead, read_body};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pricing")
        .join(name)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[track_caller]
fn assert_close(a: f64, b: f64) {
    assert!(close(a, b), "{a} != {b}");
}

fn price(input: f64, output: f64) -> ModelPrice {
    ModelPrice {
        provider: None,
        input,
        cached_input: None,
        cache_write: None,
        cache_write_1h: None,
        output,
        batch_input: None,
        batch_output: None,
        checked: None,
    }
}

/// The error of loading `text` as file `name`, as displayed.
fn load_err(name: &str, text: &str) -> String {
    let mut c = Catalog::builtin();
    let before = c.clone();
    let e = c.load_str(name, text).expect_err("should fail");
    assert_eq!(c, before, "a failed load changes nothing");
    e.to_string()
}

// ---------------------------------------------------------------------------
// Built-in table
// ---------------------------------------------------------------------------

#[test]
fn builtin_has_gpt_4o_mini_at_the_cited_prices() {
    let c = Catalog::builtin();
    let (name, p) = c.get("gpt-4o-mini").unwrap();
    assert_eq!(name, "gpt-4o-mini");
    assert_eq!(p.provider.as_deref(), Some("openai"));
    assert_close(p.input, 0.15);
    assert_close(p.cached_input.unwrap(), 0.075);
    assert_close(p.output, 0.60);
    assert_close(p.batch_input.unwrap(), 0.075);
    assert_close(p.batch_output.unwrap(), 0.30);
    assert_eq!(p.checked.as_deref(), Some("2026-11-29"));
}

#[test]
fn builtin_matches_the_widely_cited_table() {
    let c = Catalog::builtin();
    // model, input, cached, output
    let cited: &[(&str, f64, Option<f64>, f64)] = &[
        ("gpt-4o", 2.50, Some(1.25), 10.00),
        ("gpt-4.1", 2.00, Some(0.50), 8.00),
        ("gpt-4.1-mini", 0.40, Some(0.10), 1.60),
        ("gpt-4.1-nano", 0.10, Some(0.025), 0.40),
        ("text-embedding-3-small", 0.02, None, 0.0),
        ("text-embedding-3-large", 0.13, None, 0.0),
    ];
    for &(m, input, cached, output) in cited {
        let (_, p) = c.get(m).unwrap_or_else(|| panic!("{m} is built in"));
        assert_close(p.input, input);
        assert_eq!(p.cached_input.is_some(), cached.is_some(), "{m}");
        if let Some(cached) = cached {
            assert_close(p.cached_input.unwrap(), cached);
        }
        assert_close(p.output, output);
    }
    // Claude: standard and Batch prices as Anthropic lists them; cache
    // writes 1.25x and reads 0.1x input.
    for (m, input, output) in [
        ("claude-opus-4-5", 5.0, 25.0),
        ("claude-opus-4-6", 5.0, 25.0),
        ("claude-sonnet-4-5", 3.0, 15.0),
        ("claude-sonnet-4-6", 3.0, 15.0),
        ("claude-haiku-4-5", 1.0, 5.0),
    ] {
        let (_, p) = c.get(m).unwrap_or_else(|| panic!("{m} is built in"));
        assert_eq!(p.provider.as_deref(), Some("anthropic"));
        assert_close(p.input, input);
        assert_close(p.output, output);
        assert_close(p.batch_input.unwrap(), input / 2.0);
        assert_close(p.batch_output.unwrap(), output / 2.0);
        assert_close(p.cache_write.unwrap(), input * 1.25);
        assert_close(p.cached_input.unwrap(), input * 0.1);
    }
}

#[test]
fn builtin_iterates_sorted_and_every_entry_is_sane() {
    let c = Catalog::builtin();
    let names: Vec<&str> = c.iter().map(|(n, _)| n).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    assert_eq!(names.len(), c.len());
    for (n, p) in c.iter() {
        assert!(p.batch_input_price() <= p.input, "{n}");
        assert!(p.batch_output_price() <= p.output, "{n}");
        if let Some(cached) = p.cached_input {
            assert!(cached <= p.input, "{n}");
        }
    }
    for m in [
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "o3",
        "o4-mini",
        "o1",
        "gpt-3.5-turbo",
    ] {
        assert!(c.get(m).is_some(), "{m} is built in");
    }
}

// ---------------------------------------------------------------------------
// Name matching
// ---------------------------------------------------------------------------

#[test]
fn dated_snapshots_use_their_base_name() {
    let c = Catalog::builtin();
    for (model, base) in [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("o3-2025-04-16", "o3"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("omni-moderation-latest", "omni-moderation"),
    ] {
        assert_eq!(c.get(model).map(|(n, _)| n), Some(base), "{model}");
    }
}

#[test]
fn exact_names_win_and_the_longest_prefix_wins() {
    let c = Catalog::builtin();
    // A snapshot with its own price is matched exactly.
    let (n, p) = c.get("gpt-4o-2024-05-13").unwrap();
    assert_eq!(n, "gpt-4o-2024-05-13");
    assert_close(p.input, 5.0);
    // gpt-4o-mini snapshots never fall to gpt-4o.
    let (n, p) = c.get("gpt-4o-mini-2024-07-18").unwrap();
    assert_eq!(n, "gpt-4o-mini");
    assert_close(p.input, 0.15);

    let mut c = Catalog::new();
    c.insert("a", price(1.0, 1.0));
    c.insert("a-b", price(2.0, 2.0));
    assert_eq!(c.get("a-b-2025-01-01").map(|(n, _)| n), Some("a-b"));
    assert_eq!(c.get("a-2025-01-01").map(|(n, _)| n), Some("a"));
}

#[test]
fn other_models_are_not_snapshots() {
    let c = Catalog::builtin();
    for model in [
        "gpt-4o-mini-audio-preview",
        "gpt-4o-minimal",
        "gpt-4o-mini-2024-07",
        "gpt-5-mini-fast",
        "text-embedding-3",
        "llama-3-70b",
        "",
        "-",
    ] {
        assert_eq!(c.get(model).map(|(n, _)| n), None, "{model}");
    }
}

// ---------------------------------------------------------------------------
// File formats
// ---------------------------------------------------------------------------

#[test]
fn our_toml_adds_and_overrides() {
    let mut c = Catalog::builtin();
    let before = c.len();
    assert_eq!(c.load_file(&fixture("ours.toml")).unwrap(), 2);
    assert_eq!(c.len(), before + 1);

    // The whole entry is replaced: no batch price is left over.
    let (_, p) = c.get("gpt-4o-mini-2024-07-18").unwrap();
    assert_close(p.input, 0.20);
    assert_close(p.cached_input.unwrap(), 0.10);
    assert_close(p.output, 0.80);
    assert_eq!(p.batch_input, None);
    assert_close(p.batch_input_price(), 0.10);
    assert_eq!(
        p.checked.as_deref(),
        Some("2026-12-01"),
        "a TOML date works"
    );

    let (_, p) = c.get("my-finetune").unwrap();
    assert_eq!(p.provider, None);
    assert_close(p.input, 1.0);
    assert_close(p.output, 4.0);
    assert_close(p.batch_input.unwrap(), 0.25);
    assert_eq!(
        p.checked.as_deref(),
        Some("2026-12-02"),
        "the model's own date wins"
    );
    assert_eq!(
        c.checked_dates(),
        vec!["2026-11-29", "2026-12-01", "2026-12-02"]
    );
}

#[test]
fn our_json_adds_and_overrides() {
    let mut c = Catalog::builtin();
    assert_eq!(c.load_file(&fixture("ours.json")).unwrap(), 2);
    let (_, p) = c.get("gpt-4o").unwrap();
    assert_close(p.input, 3.0);
    assert_eq!(p.cached_input, None);
    assert_close(p.batch_output.unwrap(), 5.5);
    assert_eq!(p.checked.as_deref(), Some("2026-12-03"));
    let (_, p) = c.get("local-llama").unwrap();
    assert_eq!(p.provider.as_deref(), Some("vllm"));
    assert_close(p.output, 0.0);
}

#[test]
fn litellm_json_is_converted_to_per_million() {
    let mut c = Catalog::new();
    // sample_spec and the image model (no token prices) are skipped.
    assert_eq!(c.load_file(&fixture("litellm.json")).unwrap(), 3);
    assert!(c.get("sample_spec").is_none());
    assert!(c.get("dall-e-2").is_none());

    let (_, p) = c.get("gpt-4o-mini").unwrap();
    assert_eq!(p.provider.as_deref(), Some("openai"));
    // Exact after conversion, so the table prints 0.075, not 0.07500000000000001.
    assert_eq!(p.input, 0.15);
    assert_eq!(p.cached_input, Some(0.075));
    assert_eq!(p.output, 0.6);
    assert_eq!(p.batch_input, Some(0.075));
    assert_eq!(p.batch_output, Some(0.3));
    assert_eq!(p.checked, None);

    let (_, p) = c.get("claude-haiku-4-5-20251001").unwrap();
    assert_eq!(p.provider.as_deref(), Some("anthropic"));
    assert_eq!(p.input, 1.0);
    assert_eq!(p.cached_input, Some(0.1));
    assert_eq!(p.cache_write, Some(1.25));
    assert_eq!(p.output, 5.0);
    assert_eq!(p.batch_input, None);

    let (_, p) = c.get("text-embedding-3-small").unwrap();
    assert_eq!(p.input, 0.02);
    assert_eq!(p.batch_input, Some(0.01));
    assert_eq!(p.output, 0.0);
}

#[test]
fn litellm_overrides_builtin() {
    let mut c = Catalog::builtin();
    let before = c.len();
    c.load_file(&fixture("litellm.json")).unwrap();
    assert_eq!(c.len(), before, "all three are built-in names");
    let (_, p) = c.get("claude-haiku-4-5").unwrap();
    assert_eq!(p.checked, None, "replaced by LiteLLM's undated entry");
}

#[test]
fn format_is_sniffed_without_an_extension() {
    let dir = std::env::temp_dir().join(format!("batchling-pricing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("prices-json");
    let toml = dir.join("prices-toml");
    std::fs::copy(fixture("litellm.json"), &json).unwrap();
    std::fs::copy(fixture("ours.toml"), &toml).unwrap();
    let mut c = Catalog::new();
    assert_eq!(c.load_file(&json).unwrap(), 3);
    assert_eq!(c.load_file(&toml).unwrap(), 2);
    std::fs::remove_dir_all(&dir).unwrap();

    let mut c = Catalog::new();
    let n = c
        .load_str(
            "x",
            "\u{feff}\n  {\"models\": {\"m\": {\"input\": 1, \"output\": 2}}}",
        )
        .unwrap();
    assert_eq!(n, 1);
    let n = c
        .load_str("x", "[models.m]\ninput = 1\noutput = 2\n")
        .unwrap();
    assert_eq!(n, 1);
}

// ---------------------------------------------------------------------------
// Errors name the file, the model and the field
// ---------------------------------------------------------------------------

#[test]
fn negative_price_is_an_error_with_file_and_line() {
    let path = fixture("negative.toml");
    let mut c = Catalog::new();
    let e = c.load_file(&path).unwrap_err();
    match &e {
        PriceError::Parse {
            path: p,
            line,
            message,
        } => {
            assert_eq!(p, &path.display().to_string());
            assert_eq!(*line, Some(3));
            assert!(message.contains("model \"x\""), "{message}");
            assert!(message.contains("field \"input\""), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}:3: ", path.display())),
        "{shown}"
    );
    assert!(
        shown.contains("model \"x\": field \"input\" must be a non-negative number"),
        "{shown}"
    );
    assert!(c.is_empty());
}

#[test]
fn bad_prices_are_errors() {
    let e = load_err(
        "prices.json",
        r#"{"models": {"x": {"input": "0.15", "output": 1}}}"#,
    );
    assert!(
        e.starts_with("prices.json: model \"x\": field \"input\" must be a non-negative number"),
        "{e}"
    );
    assert!(e.contains("the string \"0.15\""), "{e}");

    let e = load_err("prices.toml", "[models.x]\ninput = 1\noutput = \"2\"\n");
    assert!(
        e.starts_with("prices.toml:3: model \"x\": field \"output\" must be a non-negative number"),
        "{e}"
    );

    let e = load_err(
        "prices.toml",
        "[models.x]\ninput = 1\noutput = 2\nbatch_input = -0.5\n",
    );
    assert!(
        e.starts_with("prices.toml:4: model \"x\": field \"batch_input\""),
        "{e}"
    );

    for v in ["inf", "nan", "-inf", "true", "[1]"] {
        let e = load_err("p.toml", &format!("[models.x]\ninput = {v}\noutput = 2\n"));
        assert!(
            e.contains("field \"input\" must be a non-negative number"),
            "{v}: {e}"
        );
    }
}

#[test]
fn unknown_fields_are_errors() {
    let e = load_err("prices.toml", "[models.\"gpt-x\"]\ninput = 1\noutptu = 2\n");
    assert!(
        e.starts_with("prices.toml:3: model \"gpt-x\": unknown field \"outptu\""),
        "{e}"
    );
    assert!(e.contains("expected one of provider, input"), "{e}");

    let e = load_err("prices.json", r#"{"models": {}, "currency": "EUR"}"#);
    assert!(
        e.starts_with("prices.json: unknown field \"currency\""),
        "{e}"
    );

    let e = load_err("prices.toml", "chekced = \"2026-01-01\"\n[models]\n");
    assert!(
        e.starts_with("prices.toml:1: unknown field \"chekced\""),
        "{e}"
    );
}

#[test]
fn missing_fields_and_wrong_shapes_are_errors() {
    let e = load_err("p.toml", "[models.x]\ninput = 1\n");
    assert!(e.contains("model \"x\": missing field \"output\""), "{e}");

    let e = load_err("p.toml", "[models]\nx = 3\n");
    assert!(
        e.starts_with("p.toml:2: model \"x\" must be a table"),
        "{e}"
    );

    let e = load_err("p.toml", "checked = \"2026-01-01\"\n");
    assert!(e.contains("no \"models\" table"), "{e}");

    let e = load_err(
        "p.toml",
        "[models.x]\ninput = 1\noutput = 2\nprovider = 3\n",
    );
    assert!(e.contains("field \"provider\" must be a string"), "{e}");

    let e = load_err("p.toml", "checked = 5\n[models]\n");
    assert!(e.contains("field \"checked\" must be a date"), "{e}");

    let e = load_err("p.json", r#"{"gpt-4o": {"max_tokens": 5}}"#);
    assert!(e.contains("no model prices found"), "{e}");

    let e = load_err("p.json", "[1, 2]");
    assert!(e.contains("expected a JSON object"), "{e}");
}

#[test]
fn syntax_errors_carry_the_line() {
    let e = load_err(
        "prices.toml",
        "checked = \"2026-01-01\"\n\n[models.x]\ninput = 1\noutput = = 2\n",
    );
    assert!(e.starts_with("prices.toml:5: invalid TOML"), "{e}");

    let e = load_err(
        "prices.json",
        "{\n  \"models\": {\n    \"x\": {,}\n  }\n}\n",
    );
    assert!(e.starts_with("prices.json:3: invalid JSON"), "{e}");
}

#[test]
fn unreadable_files_are_io_errors() {
    let mut c = Catalog::new();
    let path = fixture("does-not-exist.toml");
    let e = c.load_file(&path).unwrap_err();
    assert!(matches!(e, PriceError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("does-not-exist.toml"), "{e}");
}

// ---------------------------------------------------------------------------
// Cost arithmetic
// ---------------------------------------------------------------------------

#[test]
fn online_cost_bills_cached_input_at_the_cached_price() {
    let c = Catalog::builtin();
    let (_, p) = c.get("gpt-4o-mini").unwrap();
    // 1M input of which 400k cached, 200k output:
    // 600k * 0.15 + 400k * 0.075 + 200k * 0.60 per 1M = 0.09 + 0.03 + 0.12.
    let t = TokenCounts {
        input: 1_000_000,
        cached_input: 400_000,
        cache_write: 0,
        output: 200_000,
        ..TokenCounts::default()
    };
    assert_close(p.cost_online(&t), 0.24);
    // Batch: explicit batch prices, cached input at half the cached price.
    // 600k * 0.075 + 400k * 0.0375 + 200k * 0.30 = 0.045 + 0.015 + 0.06.
    assert_close(p.cost_batch(&t), 0.12);
}

#[test]
fn cache_writes_and_fallbacks() {
    let mut p = price(3.0, 15.0);
    let t = TokenCounts {
        input: 1_000_000,
        cached_input: 200_000,
        cache_write: 100_000,
        output: 1_000_000,
        ..TokenCounts::default()
    };
    // No cached or cache-write price: everything at the input price.
    assert_close(p.cost_online(&t), 3.0 + 15.0);
    // No batch price: 50% of everything.
    assert_close(p.cost_batch(&t), (3.0 + 15.0) / 2.0);

    p.cached_input = Some(0.3);
    p.cache_write = Some(3.75);
    // 700k * 3 + 200k * 0.3 + 100k * 3.75 + 1M * 15 = 2.1 + 0.06 + 0.375 + 15.
    assert_close(p.cost_online(&t), 17.535);
    assert_close(p.cost_batch(&t), 17.535 / 2.0);

    // Explicit batch prices; the cache prices follow the input discount.
    p.batch_input = Some(0.75); // 25% of input
    p.batch_output = Some(10.0);
    // 700k * 0.75 + 200k * 0.075 + 100k * 0.9375 + 1M * 10.
    assert_close(p.cost_batch(&t), 0.525 + 0.015 + 0.09375 + 10.0);
}

#[test]
fn costs_of_nothing_and_odd_counts() {
    let p = price(2.0, 8.0);
    assert_eq!(p.cost_online(&TokenCounts::default()), 0.0);
    assert_eq!(p.cost_batch(&TokenCounts::default()), 0.0);
    // More cached than input (a provider's odd report): nothing negative.
    let t = TokenCounts {
        input: 10,
        cached_input: 20,
        cache_write: 0,
        output: 0,
        ..TokenCounts::default()
    };
    assert_close(p.cost_online(&t), 20.0 * 2.0 / 1e6);
    // A free model with no batch price stays free.
    let free = price(0.0, 0.0);
    let t = TokenCounts {
        input: 5,
        cached_input: 1,
        cache_write: 1,
        output: 5,
        ..TokenCounts::default()
    };
    assert_eq!(free.cost_batch(&t), 0.0);
}

#[test]
fn token_counts_from_usage() {
    let u = Usage {
        input: 100,
        cached_input: 40,
        output: 7,
        ..Usage::default()
    };
    assert_eq!(
        TokenCounts::from(u),
        TokenCounts {
            input: 100,
            cached_input: 40,
            cache_write: 0,
            output: 7,
            ..TokenCounts::default()
        }
    );
    let u = Usage {
        cache_write: 30,
        cache_write_1h: 10,
        ..u
    };
    let t = TokenCounts::from(u);
    assert_eq!((t.cache_write, t.cache_write_1h), (30, 10));
}

#[track_caller]
fn assert_exact(a: f64, b: f64) {
    assert!((a - b).abs() <= 1e-12, "{a} != {b}");
}

/// The usage of one answer, read as the engine reads it.
fn usage_of(body: &str) -> Usage {
    match read_body(body.as_bytes()) {
        BodyRead::Json(Some(u)) => u,
        other => panic!("no usage in {body}: {other:?}"),
    }
}

#[test]
fn a_claude_answer_with_cache_reads_and_both_writes() {
    let c = Catalog::builtin();
    let (_, p) = c.get("claude-sonnet-4-5-20250929").unwrap();
    // 1,000 plain input, 20,000 read, 3,000 written for 5 minutes and
    // 4,000 for an hour, 500 output.
    let native = r#"{"type":"message","usage":{"input_tokens":1000,"output_tokens":500,"cache_creation_input_tokens":7000,"cache_read_input_tokens":20000,"cache_creation":{"ephemeral_5m_input_tokens":3000,"ephemeral_1h_input_tokens":4000}}}"#;
    // The same answer translated to a chat.completion.
    let chat = r#"{"object":"chat.completion","usage":{"prompt_tokens":28000,"completion_tokens":500,"total_tokens":28500,"prompt_tokens_details":{"cached_tokens":20000,"cache_write_tokens":7000},"cache_creation":{"ephemeral_5m_input_tokens":3000,"ephemeral_1h_input_tokens":4000}}}"#;
    for body in [native, chat] {
        let t = TokenCounts::from(usage_of(body));
        // 1000 * 3 + 20000 * 0.30 + 3000 * 3.75 + 4000 * 6 + 500 * 15, per 1M.
        assert_exact(p.cost_online(&t), 0.051_75);
        // Batch: half of every price, cache ones included.
        assert_exact(p.cost_batch(&t), 0.025_875);
    }
}

#[test]
fn one_hour_writes_fall_back_to_the_five_minute_price() {
    let mut p = price(3.0, 15.0);
    let t = TokenCounts {
        input: 1_000_000,
        cache_write: 1_000_000,
        cache_write_1h: 400_000,
        ..TokenCounts::default()
    };
    // No cache prices at all: the input price.
    assert_exact(p.cost_online(&t), 3.0);
    p.cache_write = Some(3.75);
    assert_exact(p.cost_online(&t), 3.75);
    p.cache_write_1h = Some(6.0);
    // 600k * 3.75 + 400k * 6.
    assert_exact(p.cost_online(&t), 2.25 + 2.4);
    // An explicit batch input price sets the discount (25% here).
    p.batch_input = Some(0.75);
    assert_exact(p.cost_batch(&t), (2.25 + 2.4) / 4.0);
    // More 1-hour writes than writes: clamped to the writes.
    let odd = TokenCounts {
        cache_write_1h: 2_000_000,
        ..t
    };
    assert_exact(p.cost_online(&odd), 6.0);
}

#[test]
fn builtin_claude_cache_prices_follow_anthropics_multipliers() {
    let c = Catalog::builtin();
    let claude: Vec<_> = c
        .iter()
        .filter(|(_, p)| p.provider.as_deref() == Some("anthropic"))
        .collect();
    assert!(claude.len() >= 10, "{} Claude models", claude.len());
    for (name, p) in claude {
        let read = if name == "claude-3-haiku" { 0.12 } else { 0.1 };
        let write = if name == "claude-3-haiku" { 1.2 } else { 1.25 };
        assert!(
            close(p.cached_input.unwrap(), read * p.input),
            "{name} read"
        );
        assert!(close(p.cache_write.unwrap(), write * p.input), "{name} 5m");
        assert!(close(p.cache_write_1h.unwrap(), 2.0 * p.input), "{name} 1h");
        assert!(
            close(p.batch_input.unwrap(), p.input / 2.0),
            "{name} batch in"
        );
        assert!(
            close(p.batch_output.unwrap(), p.output / 2.0),
            "{name} batch out"
        );
    }
    // List prices (Anthropic's batch table doubled, provider-apis.md).
    for (model, input, output) in [
        ("claude-opus-4-5", 5.0, 25.0),
        ("claude-opus-4-6", 5.0, 25.0),
        ("claude-sonnet-4-5", 3.0, 15.0),
        ("claude-sonnet-4-6", 3.0, 15.0),
        ("claude-haiku-4-5", 1.0, 5.0),
    ] {
        let (_, p) = c.get(model).unwrap();
        assert_eq!((p.input, p.output), (input, output), "{model}");
    }
}

#[test]
fn price_files_accept_the_one_hour_write_price() {
    let mut c = Catalog::new();
    let toml = "[models.\"c\"]\ninput = 2\ncache_write = 2.5\ncache_write_1h = 4\noutput = 10\n";
    assert_eq!(c.load_str("p.toml", toml).unwrap(), 1);
    assert_eq!(c.get("c").unwrap().1.cache_write_1h, Some(4.0));

    let json = r#"{"models": {"j": {"input": 1, "output": 2, "cache_write_1h": 2}}}"#;
    assert_eq!(c.load_str("p.json", json).unwrap(), 1);
    assert_eq!(c.get("j").unwrap().1.cache_write_1h, Some(2.0));

    let litellm = r#"{"l": {"input_cost_per_token": 3e-6, "cache_creation_input_token_cost": 3.75e-6, "cache_creation_input_token_cost_above_1hr": 6e-6}}"#;
    assert_eq!(c.load_str("l.json", litellm).unwrap(), 1);
    let (_, p) = c.get("l").unwrap();
    assert_eq!((p.cache_write, p.cache_write_1h), (Some(3.75), Some(6.0)));

    let e = load_err(
        "p.toml",
        "[models.\"c\"]\ninput = 1\noutput = 1\ncache_write_2h = 9\n",
    );
    assert!(
        e.starts_with("p.toml:4: model \"c\": unknown field \"cache_write_2h\""),
        "{e}"
    );
    assert!(e.contains("cache_write, cache_write_1h, output"), "{e}");
    let e = load_err(
        "p.toml",
        "[models.\"c\"]\ninput = 1\noutput = 1\ncache_write_1h = -1\n",
    );
    assert!(
        e.contains("field \"cache_write_1h\" must be a non-negative"),
        "{e}"
    );
}
