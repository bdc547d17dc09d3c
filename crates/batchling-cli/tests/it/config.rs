//! `batchling config check`: a good file, each class of refusal with its
//! file, line and field, missing keys, and key values never printed.

use std::path::Path;
use std::process::Command;

/// The variables examples/routes.toml names.
const EXAMPLE_VARS: [&str; 5] = [
    "OPENAI_KEY_MAIN_1",
    "OPENAI_KEY_MAIN_2",
    "OPENAI_KEY_BATCH",
    "ANTHROPIC_KEY_1",
    "AZURE_EAST_KEY",
];

struct Checked {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `batchling config check FILE` with only `env` among the key variables.
fn check(file: &Path, env: &[(&str, &str)]) -> Checked {
    let mut c = Command::new(env!("CARGO_BIN_EXE_batchling"));
    c.args(["config", "check"]).arg(file);
    for var in EXAMPLE_VARS
        .iter()
        .chain(&["K1", "K2", "BATCHLING_CLIENT_KEYS"])
    {
        c.env_remove(var);
    }
    c.envs(env.iter().copied());
    let o = c.output().expect("run batchling");
    Checked {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/routes.toml")
}

/// A secret per example variable, unlike anything else in the output.
fn secrets() -> Vec<(&'static str, String)> {
    (EXAMPLE_VARS.iter())
        .enumerate()
        .map(|(i, v)| (*v, format!("zz-secret-value-{i}-q7")))
        .collect()
}

#[test]
fn the_example_config_is_valid_and_shows_its_chains() {
    let secrets = secrets();
    let env: Vec<(&str, &str)> = secrets.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let o = check(&example(), &env);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    for want in [
        "openai: openai, https://api.openai.com/v1",
        "keys oa-main-1 (OPENAI_KEY_MAIN_1 set), oa-main-2 (OPENAI_KEY_MAIN_2 set)",
        "mini-azure: azure-east gpt-4o-mini-deploy; groups east; USD per 1M: input 0.165, cached 0.083, output 0.66 (config); context window 128000",
        "haiku: claude claude-haiku-4-5; groups ws-default; USD per 1M: input 1,",
        "gpt-4o-mini: mini → mini-azure → haiku; context window: haiku; content policy: none (a refusal is the answer); 8 attempts per line, 3 per target",
        // A route naming a route: expanded in place.
        "gpt-4o: gpt-4o → mini → mini-azure → haiku;",
        "valid; 5 keys, every variable set",
        "serve:\n  client keys from BATCHLING_CLIENT_KEYS (not set); concurrency 64",
    ] {
        assert!(o.stdout.contains(want), "{want:?} not in:\n{}", o.stdout);
    }
    assert_eq!(o.stderr, "");
    for (_, secret) in &secrets {
        assert!(!o.stdout.contains(secret.as_str()), "a key was printed");
    }
}

#[test]
fn missing_variables_are_named_and_exit_2() {
    let secrets = secrets();
    let env: Vec<(&str, &str)> = (secrets.iter())
        .filter(|(k, _)| *k != "OPENAI_KEY_BATCH")
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let o = check(&example(), &env);
    assert_eq!(o.code, 2, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains("routes.toml: the environment variable OPENAI_KEY_BATCH is not set (key oa-batch of group proj-batch)"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("oa-batch (OPENAI_KEY_BATCH NOT SET)"),
        "{}",
        o.stdout
    );
    assert!(
        o.stderr
            .contains("1 of the keys' environment variables not set"),
        "{}",
        o.stderr
    );
    for (_, secret) in &secrets {
        assert!(!o.stdout.contains(secret.as_str()) && !o.stderr.contains(secret.as_str()));
    }
}

const BASE: &str = "[providers.openai]
kind = \"openai\"

[groups.main]
provider = \"openai\"
keys = [{ id = \"k1\", env = \"K1\" }]

[models.mini]
provider = \"openai\"
model = \"gpt-4o-mini\"
groups = [\"main\"]
";

/// Each class of refusal: exit 2, the message naming file, line and field.
#[test]
fn each_refusal_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    let name = path.display().to_string();
    let cases: Vec<(String, String)> = vec![
        (
            BASE.replace("model = ", "modle = "),
            "line 10, models.mini.modle: unknown field (did you mean model?)".into(),
        ),
        (
            format!("{BASE}[routes.r]\nchain = [\"mnii\"]\n"),
            "line 13, routes.r.chain[0]: unknown target or route \"mnii\" (did you mean mini?)".into(),
        ),
        (
            format!("{BASE}[routes.a]\nchain = [\"mini\", \"b\"]\n[routes.b]\nchain = [\"a\"]\n"),
            "line 15, routes.b.chain[0]: the routes loop: a → b → a".into(),
        ),
        (
            BASE.replace("env = \"K1\"", "key = \"sk-live-0123456789\""),
            "line 6, groups.main.keys[0].key: keys never go in the file".into(),
        ),
        (
            format!("{BASE}[providers.claude]\nkind = \"anthropic\"\n[models.h]\nprovider = \"claude\"\ngroups = [\"main\"]\n"),
            "line 16, models.h.groups[0]: the group main holds keys of the provider openai, not of claude".into(),
        ),
        (
            BASE.replace("{ id = \"k1\", env = \"K1\" }", "{ id = \"k1\", env = \"K1\" }, { id = \"k1\", env = \"K2\" }"),
            "line 6, groups.main.keys[1]: the key id \"k1\" is already used by groups.main.keys[0]".into(),
        ),
        (
            BASE.replace("keys = [{ id = \"k1\", env = \"K1\" }]", "keys = []"),
            "line 6, groups.main.keys: a group holds at least one key".into(),
        ),
        (
            format!("{BASE}[routes.r]\nchain = []\n"),
            "line 13, routes.r.chain: a route needs a chain of at least one target".into(),
        ),
        (
            format!("{BASE}[routes.r]\nchain = [\"mini\"]\nmax_attempts = 0\n"),
            "line 14, routes.r.max_attempts: expected a positive integer, found 0".into(),
        ),
        (
            format!("{BASE}[routes.r]\nchain = [\"mini\"]\nmax_price_ratio = 0.9\n"),
            "line 14, routes.r.max_price_ratio: expected a ratio from 1 to 1000".into(),
        ),
        (
            format!("{BASE}price = {{ input = -0.5, output = 1 }}\n"),
            "line 12, models.mini.price.input: expected a price from 0 to 10000 USD per 1M tokens, found -0.5".into(),
        ),
        (
            format!("{BASE}[routes.r]\nchain = [\"mini\", \"mini\"]\n"),
            "line 13, routes.r.chain[1]: the target mini is already in this chain".into(),
        ),
    ];
    for (text, want) in cases {
        std::fs::write(&path, &text).unwrap();
        let o = check(&path, &[("K1", "zz-secret-k1"), ("K2", "zz-secret-k2")]);
        assert_eq!(o.code, 2, "{text}\n{}\n{}", o.stdout, o.stderr);
        let want = format!("error: {name} {want}");
        assert!(
            o.stderr.starts_with(&want),
            "want {want:?}\ngot {:?}",
            o.stderr
        );
        assert_eq!(o.stdout, "", "nothing is listed from an invalid file");
        for secret in ["zz-secret", "sk-live-0123456789"] {
            assert!(!o.stderr.contains(secret), "{}", o.stderr);
        }
    }
}

#[test]
fn a_missing_file_is_an_error() {
    let o = check(Path::new("no-such-routes.toml"), &[]);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr
            .starts_with("error: cannot read no-such-routes.toml"),
        "{}",
        o.stderr
    );
}

#[test]
fn warnings_are_listed_and_the_file_stays_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    let text = format!(
        "{BASE}[models.dear]\nprovider = \"openai\"\nmodel = \"gpt-4o\"\ngroups = [\"main\"]\n[routes.r]\nchain = [\"mini\", \"dear\"]\n"
    );
    std::fs::write(&path, text).unwrap();
    let o = check(&path, &[("K1", "zz-secret-k1")]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("warnings:\n"), "{}", o.stdout);
    assert!(
        o.stdout.contains("line 16, routes.r: dear costs up to 16.7x the primary mini per token: without max_price_ratio nothing bounds what a fallback costs"),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("zz-secret"));
}

#[test]
fn the_readme_s_config_is_valid_without_warnings() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README.md");
    let section = readme
        .split("## One config file: providers, limit groups, models, routes")
        .nth(1)
        .expect("the README's config section");
    let text: String = (section.lines())
        .skip_while(|l| *l != "```toml")
        .skip(1)
        .take_while(|l| *l != "```")
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(text.contains("[routes.gpt-4o-mini]"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, text).unwrap();
    let env = [
        ("OPENAI_KEY_1", "zz-1"),
        ("OPENAI_KEY_2", "zz-2"),
        ("ANTHROPIC_KEY_1", "zz-3"),
    ];
    let mut c = Command::new(env!("CARGO_BIN_EXE_batchling"));
    c.args(["config", "check"]).arg(&path).envs(env);
    let o = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!stdout.contains("warnings:"), "{stdout}");
    assert!(
        stdout.contains("gpt-4o-mini: mini → haiku; context window: haiku;"),
        "{stdout}"
    );
}

/// `batchling estimate IN --config FILE --json`, with no key variable set.
fn estimate_json(input: &Path, config: &Path) -> serde_json::Value {
    let mut c = Command::new(env!("CARGO_BIN_EXE_batchling"));
    c.arg("estimate")
        .arg(input)
        .arg("--config")
        .arg(config)
        .arg("--json");
    for var in EXAMPLE_VARS {
        c.env_remove(var);
    }
    let o = c.output().expect("run batchling");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON")
}

#[test]
fn estimate_prices_a_route_at_its_primary_and_names_the_dearest_fallback_it_allows() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let line = |id: &str, model: &str| {
        format!(
            r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"{model}","messages":[{{"role":"user","content":"Name one moon of Jupiter."}}],"max_tokens":100}}}}"#
        )
    };
    let input = dir.path().join("in.jsonl");
    let lines = [
        line("a", "gpt-4o-mini"),
        line("b", "gpt-4o-mini"),
        line("c", "gpt-4o"),
        line("d", "nowhere"),
    ];
    std::fs::write(&input, lines.join("\n") + "\n").expect("the input is written");

    let e = estimate_json(&input, &example());

    let mini = &e["models"]["gpt-4o-mini"];
    assert_eq!(mini["requests"], 2, "{e}");
    assert_eq!(mini["priced_as"], "mini (gpt-4o-mini)", "{e}");
    assert_eq!(mini["route"]["primary"], "mini");
    // Haiku costs more than 4o-mini and the route allows 10x.
    assert_eq!(mini["route"]["dearest_fallback"], "haiku", "{e}");
    let primary = mini["cost_online_max_usd"].as_f64().expect("priced");
    let dearest = (mini["route"]["cost_online_max_dearest_usd"].as_f64()).expect("priced");
    assert!(dearest > primary && dearest <= 10.0 * primary, "{e}");
    // gpt-4o's route allows no dearer fallback (max_price_ratio = 1).
    let four = &e["models"]["gpt-4o"]["route"];
    assert_eq!(four["dearest_fallback"], serde_json::Value::Null, "{e}");
    let warnings = e["warnings"].to_string();
    assert!(
        warnings.contains("nowhere") && warnings.contains("no_route"),
        "{e}"
    );
}
