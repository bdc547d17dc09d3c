use proptest::prelude::*;

use super::*;
use crate::pricing::Catalog;

/// One provider, one group, one target: lines 1 to 11.
const BASE: &str = "[providers.openai]
kind = \"openai\"

[groups.main]
provider = \"openai\"
keys = [{ id = \"oa-1\", env = \"OA_KEY_1\" }]

[models.mini]
provider = \"openai\"
model = \"gpt-4o-mini\"
groups = [\"main\"]
";

fn ok(text: &str) -> RoutesConfig {
    match RoutesConfig::parse(text, "r.toml") {
        Ok(c) => c,
        Err(e) => panic!("{e}\n--- in ---\n{text}"),
    }
}

fn err(text: &str) -> String {
    match RoutesConfig::parse(text, "r.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

fn warnings(c: &RoutesConfig) -> Vec<String> {
    c.warnings.iter().map(ToString::to_string).collect()
}

/// The example in the module's docs.
fn doc_example() -> String {
    include_str!("mod.rs")
        .lines()
        .skip_while(|l| !l.starts_with("//! ```toml"))
        .skip(1)
        .take_while(|l| !l.starts_with("//! ```"))
        .map(|l| {
            l.strip_prefix("//! ")
                .unwrap_or(l.trim_start_matches("//!"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_documented_example_parses_and_expands() {
    let c = ok(&doc_example());
    assert_eq!(c.providers["openai"].base_url, "https://api.openai.com/v1");
    assert_eq!(c.providers["claude"].kind, ProviderKind::Anthropic);
    assert_eq!(c.providers["claude"].version.as_deref(), Some("2023-06-01"));
    let g = &c.groups["proj-main"];
    assert_eq!(
        g.keys,
        vec![
            KeyRef {
                id: "oa-1".into(),
                env: "OPENAI_KEY_1".into()
            },
            KeyRef {
                id: "oa-2".into(),
                env: "OPENAI_KEY_2".into()
            },
        ]
    );
    assert_eq!(g.limits.rpm, Some(5000));
    assert_eq!(
        g.limits.table.models,
        vec![crate::limits::ModelLimit::new(
            "gpt-4o-mini",
            Some(10000),
            Some(2_000_000)
        )]
    );
    let mini = &c.models["mini"];
    assert_eq!(mini.model, "gpt-4o-mini");
    assert_eq!(mini.context_window, Some(128_000));
    assert_eq!(
        mini.price.as_ref().map(|p| p.cached_input),
        Some(Some(0.075))
    );
    let route = c.route_for("gpt-4o-mini").expect("the route");
    assert_eq!(route.expanded.chain, ["mini", "haiku"]);
    assert_eq!(route.attempts(), 6);
    assert_eq!(route.attempts_per_target(), 3);
    assert!(c.route_for("mini").is_none());
    assert_eq!(warnings(&c), Vec::<String>::new());
}

#[test]
fn chains_for_falls_back_to_a_target_alone() {
    let c = ok(&with("[routes.r]\nchain = [\"mini\"]\n"));
    assert_eq!(c.chains_for("r").unwrap().chain, ["mini"]);
    let alone = c.chains_for("mini").unwrap();
    assert_eq!(alone.chain, ["mini"]);
    assert!(alone.context_window.is_empty() && alone.content_policy.is_empty());
    assert!(c.chains_for("gpt-4o-mini").is_none());
    assert_eq!(c.provider_of("mini").unwrap().name, "openai");
    let groups: Vec<&str> = c.groups_of("mini").map(|g| g.name.as_str()).collect();
    assert_eq!(groups, ["main"]);
    assert_eq!(c.groups_of("nope").count(), 0);
}

#[test]
fn routes_named_in_chains_expand_in_order() {
    let c = ok(&with(
        "[models.big]\nprovider = \"openai\"\nmodel = \"gpt-4o\"\ngroups = [\"main\"]\n\
         [models.o1]\nprovider = \"openai\"\ngroups = [\"main\"]\n\
         [routes.tail]\nchain = [\"big\", \"o1\"]\n\
         [routes.head]\nchain = [\"mini\", \"tail\"]\ncontext_window_chain = [\"tail\"]\n",
    ));
    let head = &c.routes["head"];
    assert_eq!(head.expanded.chain, ["mini", "big", "o1"]);
    assert_eq!(head.expanded.context_window, ["big", "o1"]);
    assert!(head.expanded.content_policy.is_empty());
    assert_eq!(head.chain, ["mini", "tail"], "as written is kept");
    // `model` defaults to the table's name.
    assert_eq!(c.models["o1"].model, "o1");
    // Without max_attempts every target gets its attempts.
    assert_eq!(head.attempts(), 9);
}

#[test]
fn a_name_that_is_both_target_and_route_is_the_target_in_chains() {
    let c = ok(&with("[routes.mini]\nchain = [\"mini\"]\n"));
    assert_eq!(c.routes["mini"].expanded.chain, ["mini"]);
}

#[test]
fn providers_get_their_kind_s_defaults_and_fields() {
    let c = ok(concat!(
        "[providers.a]\nkind = \"anthropic\"\nbeta = [\"files-api-2025-04-14\"]\n",
        "[providers.z]\nkind = \"azure\"\nbase_url = \"https://res.openai.azure.com/openai/v1/\"\napi_version = \"2025-04-01-preview\"\n",
        "[providers.v]\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:8000/v1\"\n",
    ));
    assert_eq!(c.providers["a"].base_url, "https://api.anthropic.com");
    assert_eq!(c.providers["a"].beta, ["files-api-2025-04-14"]);
    assert_eq!(
        c.providers["z"].base_url, "https://res.openai.azure.com/openai/v1",
        "a trailing slash is dropped"
    );
    assert_eq!(
        c.providers["z"].api_version.as_deref(),
        Some("2025-04-01-preview")
    );
    assert_eq!(c.providers["v"].kind, ProviderKind::OpenAiCompatible);
    // Unused providers are worth a word.
    assert_eq!(c.warnings.len(), 3, "{:?}", warnings(&c));
}

#[test]
fn provider_fields_are_checked() {
    assert_eq!(
        err("[providers.x]\nkind = \"opnai\"\n"),
        "r.toml line 2, providers.x.kind: unknown kind \"opnai\" (did you mean openai?): expected openai, openai-compatible, azure or anthropic"
    );
    assert_eq!(
        err("[providers.x]\nbase_url = \"https://a/v1\"\n"),
        "r.toml line 1, providers.x.kind: missing field: expected openai, openai-compatible, azure or anthropic"
    );
    assert_eq!(
        err("[providers.x]\nkind = \"azure\"\n"),
        "r.toml line 1, providers.x.base_url: missing field: a provider of kind = \"azure\" has no default base_url (such as https://RESOURCE.openai.azure.com/openai/v1)"
    );
    assert_eq!(
        err("[providers.x]\nkind = \"openai\"\napi_version = \"2024-10-21\"\n"),
        "r.toml line 3, providers.x.api_version: only a provider of kind = \"azure\" takes this field"
    );
    assert_eq!(
        err(
            "[providers.x]\nkind = \"azure\"\nbase_url = \"https://r.openai.azure.com\"\nversion = \"2023-06-01\"\n"
        ),
        "r.toml line 4, providers.x.version: only a provider of kind = \"anthropic\" takes this field"
    );
    assert_eq!(
        err("[providers.x]\nkind = \"anthropic\"\nversion = \"June\"\n"),
        "r.toml line 3, providers.x.version: expected a version date such as \"2023-06-01\", found \"June\""
    );
    assert_eq!(
        err("[providers.x]\nkind = \"openai\"\nbase_url = \"api.openai.com\"\n"),
        "r.toml line 3, providers.x.base_url: expected an http:// or https:// URL, such as https://api.openai.com/v1"
    );
    let creds = err("[providers.x]\nkind = \"openai\"\nbase_url = \"https://u:p@h/v1\"\n");
    assert!(creds.contains("takes no credentials"), "{creds}");
    assert_eq!(
        err("[providers.x]\nkind = \"openai\"\nbase = \"https://h\"\n"),
        "r.toml line 3, providers.x.base: unknown field: expected kind, base_url, api_version, version or beta"
    );
    assert_eq!(
        err("[providers.x]\nkind = \"openai\"\nbase_ur = \"https://h\"\n"),
        "r.toml line 3, providers.x.base_ur: unknown field (did you mean base_url?): expected kind, base_url, api_version, version or beta"
    );
}

#[test]
fn unknown_sections_are_refused_with_a_suggestion() {
    assert_eq!(
        err("[route.x]\nchain = [\"a\"]\n"),
        "r.toml line 1, route: unknown field (did you mean routes?): expected providers, groups, models, routes or serve"
    );
    assert!(err("x = ").starts_with("r.toml line 1: invalid TOML"));
}

#[test]
fn group_fields_are_checked() {
    let no_keys =
        "[providers.openai]\nkind = \"openai\"\n[groups.g]\nprovider = \"openai\"\nkeys = []\n";
    assert_eq!(
        err(no_keys),
        "r.toml line 5, groups.g.keys: a group holds at least one key, as { id = \"...\", env = \"VARIABLE\" }"
    );
    let missing = "[providers.openai]\nkind = \"openai\"\n[groups.g]\nprovider = \"openai\"\n";
    assert!(err(missing).starts_with("r.toml line 3, groups.g.keys: missing field"));
    let unknown = "[providers.openai]\nkind = \"openai\"\n[groups.g]\nprovider = \"opena\"\nkeys = [{ env = \"K\" }]\n";
    assert_eq!(
        err(unknown),
        "r.toml line 4, groups.g.provider: unknown provider \"opena\" (did you mean openai?): the file defines openai"
    );
    let bad_env = "[providers.openai]\nkind = \"openai\"\n[groups.g]\nprovider = \"openai\"\nkeys = [{ env = \"MY KEY\" }]\n";
    assert!(
        err(bad_env).starts_with(
            "r.toml line 5, groups.g.keys[0].env: not the name of an environment variable"
        ),
        "{}",
        err(bad_env)
    );
    let no_env = "[providers.openai]\nkind = \"openai\"\n[groups.g]\nprovider = \"openai\"\nkeys = [{ id = \"a\" }]\n";
    assert_eq!(
        err(no_env),
        "r.toml line 5, groups.g.keys[0].env: missing field: the environment variable holding the key"
    );
    let typo = "[providers.openai]\nkind = \"openai\"\n[groups.g]\nprovider = \"openai\"\nkeys = [{ enb = \"K\" }]\n";
    assert_eq!(
        err(typo),
        "r.toml line 5, groups.g.keys[0].enb: unknown field (did you mean env?): expected id or env"
    );
}

#[test]
fn an_id_defaults_to_the_variable() {
    let c = ok(&BASE.replace(
        "{ id = \"oa-1\", env = \"OA_KEY_1\" }",
        "{ env = \"OA_KEY_1\" }",
    ));
    assert_eq!(c.groups["main"].keys[0].id, "OA_KEY_1");
}

#[test]
fn key_ids_and_variables_are_not_shared() {
    let two = |a: &str, b: &str, provider_b: &str| {
        format!(
            "[providers.openai]\nkind = \"openai\"\n[providers.other]\nkind = \"openai-compatible\"\nbase_url = \"http://h/v1\"\n\
             [groups.a]\nprovider = \"openai\"\nkeys = [{a}]\n\
             [groups.b]\nprovider = \"{provider_b}\"\nkeys = [{b}]\n\
             [models.m]\nprovider = \"openai\"\ngroups = [\"a\"]\n"
        )
    };
    assert_eq!(
        err(&two(
            "{ id = \"k\", env = \"A\" }",
            "{ id = \"k\", env = \"B\" }",
            "openai"
        )),
        "r.toml line 11, groups.b.keys[0]: the key id \"k\" is already used by groups.a.keys[0]: ids name keys in journals and errors, so each is unique"
    );
    assert_eq!(
        err(&two(
            "{ id = \"x\", env = \"A\" }",
            "{ id = \"y\", env = \"A\" }",
            "openai"
        )),
        "r.toml line 11, groups.b.keys[0].env: the variable A is also in groups.a: one key in two groups would count its budget twice; a key belongs to one group"
    );
    assert_eq!(
        err(&two(
            "{ id = \"x\", env = \"A\" }, { id = \"y\", env = \"A\" }",
            "{ env = \"B\" }",
            "openai"
        )),
        "r.toml line 8, groups.a.keys[1].env: the variable A is listed twice in this group"
    );
    // Across providers it may be a proxy in front of the same account: a warning.
    let c = ok(&two(
        "{ id = \"x\", env = \"A\" }",
        "{ id = \"y\", env = \"A\" }",
        "other",
    ));
    let w = warnings(&c);
    assert!(
        w.iter().any(|w| w.starts_with("r.toml line 11, groups.b.keys[0].env: the variable A is also in groups.a (provider openai)")),
        "{w:?}"
    );
}

#[test]
fn group_limits_are_a_limits_file_s_default_and_models() {
    let c = ok(&BASE.replace(
        "keys = [",
        "limits = { tpm = 90000, mini-family = { models = [\"gpt-4o-mini\", \"gpt-4o-mini-2024-07-18\"], rpm = 10 } }\nkeys = [",
    ));
    let l = &c.groups["main"].limits;
    assert_eq!((l.rpm, l.tpm), (None, Some(90000)));
    assert_eq!(l.table.models[0].name, "mini-family");
    assert_eq!(l.table.models[0].rpm, Some(10));
    assert!(l.table.groups.is_empty() && l.window.is_none());

    let limit = |l: &str| err(&BASE.replace("keys = [", &format!("limits = {l}\nkeys = [")));
    assert_eq!(
        limit("{ rpm = 0 }"),
        "r.toml line 6, groups.main.limits.rpm: expected a positive integer, found 0"
    );
    assert!(
        limit("{ rmp = 5 }").starts_with(
            "r.toml line 6, groups.main.limits.rmp: unknown field (did you mean rpm?)"
        ),
        "{}",
        limit("{ rmp = 5 }")
    );
    assert_eq!(
        limit("{ gpt-4o = { rpm = 5, tpm = -1 } }"),
        "r.toml line 6, groups.main.limits.gpt-4o.tpm: expected a positive integer, found -1"
    );
    assert_eq!(
        limit("{ tpm = 5000000000000 }"),
        "r.toml line 6, groups.main.limits.tpm: 5000000000000 is beyond any provider's limit (at most 1000000000000)"
    );
}

#[test]
fn a_limit_for_a_model_the_group_never_sends_warns() {
    let c = ok(&BASE.replace(
        "keys = [",
        "limits = { gpt-4o-mni = { rpm = 5 } }\nkeys = [",
    ));
    let w = warnings(&c);
    assert_eq!(
        w,
        [
            "r.toml line 6, groups.main.limits.gpt-4o-mni: no model of this group is gpt-4o-mni: the limit applies to nothing (a limit names the provider's model, the model field of [models.*])"
        ]
    );
}

#[test]
fn model_fields_are_checked() {
    let m = |fields: &str| err(&format!("{BASE}[models.x]\n{fields}\n"));
    assert_eq!(
        m("provider = \"openai\""),
        "r.toml line 12, models.x.groups: missing field: the limit groups whose keys send to this model, such as groups = [\"proj-main\"]"
    );
    assert_eq!(
        m("provider = \"openai\"\ngroups = [\"mian\"]"),
        "r.toml line 14, models.x.groups[0]: unknown group \"mian\" (did you mean main?): the file defines main"
    );
    assert_eq!(
        m("provider = \"openai\"\ngroups = [\"main\", \"main\"]"),
        "r.toml line 14, models.x.groups[1]: the group main is listed twice"
    );
    assert_eq!(
        m("provider = \"openai\"\ngroups = [\"main\"]\ncontext_window = 0"),
        "r.toml line 15, models.x.context_window: expected a positive integer, found 0"
    );
    assert_eq!(
        m("provider = \"openai\"\ngroups = [\"main\"]\ncontext_window = 1000000000"),
        "r.toml line 15, models.x.context_window: 1000000000 tokens is beyond any model's context window (at most 100000000)"
    );
    assert_eq!(
        m("provider = \"openai\"\ngroups = [\"main\"]\ncontext = 5"),
        "r.toml line 15, models.x.context: unknown field: expected provider, model, groups, context_window or price"
    );
}

#[test]
fn a_model_s_groups_are_of_its_provider() {
    let text = with(
        "[providers.claude]\nkind = \"anthropic\"\n\
         [models.x]\nprovider = \"claude\"\ngroups = [\"main\"]\n",
    );
    assert_eq!(
        err(&text),
        "r.toml line 16, models.x.groups[0]: the group main holds keys of the provider openai, not of claude: a model's groups are of its provider"
    );
}

#[test]
fn prices_are_checked_and_fall_back_to_the_catalog() {
    let p = |price: &str| err(&format!("{BASE}price = {price}\n"));
    assert_eq!(
        p("{ input = -1, output = 1 }"),
        "r.toml line 12, models.mini.price.input: expected a price from 0 to 10000 USD per 1M tokens, found -1"
    );
    assert_eq!(
        p("{ input = 1, output = 1e9 }"),
        "r.toml line 12, models.mini.price.output: expected a price from 0 to 10000 USD per 1M tokens, found 1000000000"
    );
    assert_eq!(
        p("{ input = 1 }"),
        "r.toml line 12, models.mini.price.output: missing field: a price gives input and output (USD per 1M tokens)"
    );
    assert_eq!(
        p("{ input = 1, output = 2, cached = 0.5 }"),
        "r.toml line 12, models.mini.price.cached: unknown field: expected input, output, cached_input, cache_write, cache_write_1h, batch_input or batch_output"
    );
    assert_eq!(
        p("{ input = nan, output = 2 }"),
        "r.toml line 12, models.mini.price.input: expected a finite number, found too large or not a number"
    );

    let catalog = Catalog::builtin();
    let c = ok(&format!("{BASE}price = {{ input = 1, output = 2 }}\n"));
    let own = c.price("mini", &catalog).unwrap();
    assert_eq!((own.price.input, own.from), (1.0, PriceFrom::Config));
    let c = ok(BASE);
    let listed = c.price("mini", &catalog).unwrap();
    assert_eq!(listed.from, PriceFrom::Catalog("gpt-4o-mini"));
    assert_eq!(listed.price, catalog.get("gpt-4o-mini").unwrap().1);
    assert!(c.price("nope", &catalog).is_none());
}

#[test]
fn route_fields_are_checked() {
    let r = |fields: &str| err(&format!("{BASE}[routes.r]\n{fields}\n"));
    assert_eq!(
        r("chain = []"),
        "r.toml line 13, routes.r.chain: a route needs a chain of at least one target, such as chain = [\"mini\"]"
    );
    assert_eq!(
        r("max_attempts = 2"),
        "r.toml line 12, routes.r.chain: a route needs a chain of at least one target, such as chain = [\"mini\"]"
    );
    assert_eq!(
        r("chain = [\"mini\"]\nmax_attempts = 0"),
        "r.toml line 14, routes.r.max_attempts: expected a positive integer, found 0"
    );
    assert_eq!(
        r("chain = [\"mini\"]\nmax_attempts_per_target = 1000"),
        "r.toml line 14, routes.r.max_attempts_per_target: at most 100 attempts, found 1000"
    );
    assert_eq!(
        r("chain = [\"mini\"]\nmax_price_ratio = 0.5"),
        "r.toml line 14, routes.r.max_price_ratio: expected a ratio from 1 to 1000 (a fallback may cost at most this many times the primary), found 0.5"
    );
    assert_eq!(
        r("chain = [\"mni\"]"),
        "r.toml line 13, routes.r.chain[0]: unknown target or route \"mni\" (did you mean mini?): the file defines mini and r"
    );
    assert_eq!(
        r("chain = [\"mini\", \"mini\"]"),
        "r.toml line 13, routes.r.chain[1]: the target mini is already in this chain: a chain tries each target once"
    );
    assert_eq!(
        r("chain = [\"mini\"]\ncontent_policy_chain = [\"x\"]"),
        "r.toml line 14, routes.r.content_policy_chain[0]: unknown target or route \"x\": the file defines mini and r"
    );
    assert_eq!(
        r("chain = [\"mini\"]\nfallbacks = [\"mini\"]"),
        "r.toml line 14, routes.r.fallbacks: unknown field: expected chain, context_window_chain, content_policy_chain, max_attempts, max_attempts_per_target, max_price_ratio or spill"
    );
}

#[test]
fn loops_are_refused_naming_the_cycle() {
    let text = with(
        "[routes.a]\nchain = [\"mini\", \"b\"]\n\
         [routes.b]\nchain = [\"a\"]\n",
    );
    assert_eq!(
        err(&text),
        "r.toml line 15, routes.b.chain[0]: the routes loop: a → b → a (a chain may name a route, never one that leads back)"
    );
    let own = with("[routes.a]\nchain = [\"a\"]\n");
    assert_eq!(
        err(&own),
        "r.toml line 13, routes.a.chain[0]: the routes loop: a → a (a chain may name a route, never one that leads back)"
    );
    let through = with(
        "[routes.a]\nchain = [\"mini\", \"b\"]\n\
         [routes.b]\nchain = [\"mini\"]\n",
    );
    assert_eq!(
        err(&through),
        "r.toml line 15, routes.b.chain[0]: the target mini is already in this chain (through a → b): a chain tries each target once"
    );
}

#[test]
fn deep_and_long_chains_are_bounded() {
    let mut text = BASE.to_owned();
    for i in 0..20 {
        text.push_str(&format!("[routes.r{i}]\nchain = [\"r{}\"]\n", i + 1));
    }
    text.push_str("[routes.r20]\nchain = [\"mini\"]\n");
    assert!(err(&text).contains(&format!(
        "routes name routes more than {MAX_ROUTE_DEPTH} deep"
    )));

    let mut text = BASE.to_owned();
    let names: Vec<String> = (0..=MAX_CHAIN_TARGETS)
        .map(|i| format!("\"t{i}\""))
        .collect();
    for i in 0..=MAX_CHAIN_TARGETS {
        text.push_str(&format!(
            "[models.t{i}]\nprovider = \"openai\"\ngroups = [\"main\"]\n"
        ));
    }
    text.push_str(&format!("[routes.r]\nchain = [{}]\n", names.join(", ")));
    assert!(
        err(&text).contains("the chain holds more than 32 targets"),
        "{}",
        err(&text)
    );
}

#[test]
fn literal_keys_are_refused_without_being_repeated() {
    // Built at run time: a key-shaped literal in the source would look
    // like a committed key.
    let secret = format!("sk-{}", "proj-abcdefghijklmnop1234567890");
    let cases = [
        BASE.replace("env = \"OA_KEY_1\"", &format!("key = \"{secret}\"")),
        BASE.replace("env = \"OA_KEY_1\"", &format!("env = \"{secret}\"")),
        BASE.replace(
            "kind = \"openai\"",
            &format!("kind = \"openai\"\napi_key = \"{secret}\""),
        ),
        format!("{BASE}price = {{ input = 1, output = 1, note = \"{secret}\" }}\n"),
        format!("{BASE}[routes.r]\nchain = [\"{secret}\"]\n"),
        BASE.replace(
            "model = \"gpt-4o-mini\"",
            "model = \"0123456789abcdef0123456789abcdef\"",
        ),
    ];
    for text in &cases {
        let e = err(text);
        assert!(
            !e.contains(&secret) && !e.contains("0123456789abcdef"),
            "{e}"
        );
        assert!(e.contains("env"), "{e}");
    }
    assert_eq!(
        err(&cases[0]),
        "r.toml line 6, groups.main.keys[0].key: keys never go in the file: put the key in an environment variable and name it in the group's keys, as { id = \"...\", env = \"VARIABLE\" }"
    );
    assert_eq!(
        err(&cases[1]),
        "r.toml line 6, groups.main.keys[0].env: this looks like an API key, not the name of an environment variable: env names the variable that holds the key (such as OPENAI_API_KEY)"
    );
}

#[test]
fn a_key_in_a_file_that_is_not_toml_is_not_repeated() {
    let key = format!("key = \"sk-{}", "proj-abcdef0123456789");
    let e = err(&BASE.replace("env = \"OA_KEY_1\" }", &key));
    assert!(
        e.starts_with("r.toml line ") && e.contains(": invalid TOML"),
        "{e}"
    );
    assert!(!e.contains("abcdef0123456789"), "{e}");
}

#[test]
fn what_looks_like_a_key() {
    for key in [
        "sk-abc",
        "sk-ant-api03-xyz",
        "gsk_123",
        "AIzaSyD",
        "0123456789abcdef0123456789abcdef",
    ] {
        assert!(secret::looks_like_key(key), "{key}");
    }
    for name in [
        "gpt-4o-mini",
        "claude-3-5-sonnet-20241022-extended-thinking-preview",
        "https://api.openai.com/v1",
        "OPENAI_API_KEY_FOR_THE_BATCH_PROJECT_2",
        "my-deployment",
    ] {
        assert!(!secret::looks_like_key(name), "{name}");
    }
}

#[test]
fn keys_resolve_from_the_environment_and_missing_ones_are_named() {
    let c = ok(&BASE.replace(
        "{ id = \"oa-1\", env = \"OA_KEY_1\" }",
        "{ id = \"oa-1\", env = \"OA_KEY_1\" }, { id = \"oa-2\", env = \"OA_KEY_2\" }, { id = \"oa-3\", env = \"OA_KEY_3\" }",
    ));
    let all = |k: &str| Some(format!("secret-of-{k}"));
    let keys = c.resolve_keys(all).unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(
        (keys[1].id.as_str(), keys[1].group.as_str()),
        ("oa-2", "main")
    );
    assert_eq!(keys[1].secret, "secret-of-OA_KEY_2");
    assert!(
        !format!("{keys:?}").contains("secret-of"),
        "Debug hides secrets"
    );

    let some = |k: &str| match k {
        "OA_KEY_1" => Some("value-1".to_owned()),
        "OA_KEY_2" => Some(String::new()),
        _ => None,
    };
    let missing = c.resolve_keys(some).unwrap_err();
    assert_eq!(
        missing.to_string(),
        "r.toml: the environment variable OA_KEY_2 is empty (key oa-2 of group main); r.toml: the environment variable OA_KEY_3 is not set (key oa-3 of group main)"
    );
    assert!(!missing.to_string().contains("value-1"));
}

#[test]
fn pools_and_unused_tables_warn() {
    let c = ok(&with(
        "[groups.second]\nprovider = \"openai\"\nkeys = [{ env = \"OA_KEY_2\" }]\n\
         [groups.spare]\nprovider = \"openai\"\nkeys = [{ env = \"OA_KEY_3\" }]\n\
         [models.pooled]\nprovider = \"openai\"\nmodel = \"gpt-4o-mini\"\ngroups = [\"main\", \"second\"]\n",
    ));
    assert_eq!(
        warnings(&c),
        [
            "r.toml line 15, groups.spare: no model sends through this group: its keys are never used",
            "r.toml line 18, models.pooled.groups: the groups main and second all send to https://api.openai.com/v1 and their budgets add up: right only if their keys belong to different projects, organisations or resources (keys of one project share its limits; put them in one group)",
        ]
    );
}

#[test]
fn attempt_caps_that_cut_the_chain_warn() {
    let text = with(
        "[models.b]\nprovider = \"openai\"\ngroups = [\"main\"]\n\
         [models.c]\nprovider = \"openai\"\ngroups = [\"main\"]\n\
         [routes.r]\nchain = [\"mini\", \"b\", \"c\"]\nmax_attempts = 4\nmax_attempts_per_target = 5\n",
    );
    let w = warnings(&ok(&text));
    assert_eq!(
        w,
        [
            "r.toml line 21, routes.r.max_attempts_per_target: more than max_attempts (4): a target gets at most 4",
            "r.toml line 20, routes.r.max_attempts: 4 attempts at 5 per target reach 1 of the chain's 3 targets when each fails: the last ones are tried only when others fail fast",
        ]
    );
}

#[test]
fn price_warnings_name_unpriced_and_dear_fallbacks() {
    let text = with(
        "[models.dear]\nprovider = \"openai\"\ngroups = [\"main\"]\nprice = { input = 15, output = 60 }\n\
         [models.unknown]\nprovider = \"openai\"\ngroups = [\"main\"]\n\
         [routes.capped]\nchain = [\"mini\", \"dear\"]\nmax_price_ratio = 3\n\
         [routes.open]\nchain = [\"mini\", \"dear\", \"unknown\"]\n",
    );
    let c = ok(&text);
    let w: Vec<String> = c
        .price_warnings(&Catalog::builtin())
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(
        w[0].starts_with(
            "r.toml line 16, models.unknown: no price: \"unknown\" is not in the price catalog"
        ),
        "{w:?}"
    );
    assert!(w[1].starts_with("r.toml line 19, routes.capped: dear costs more than 3x the primary mini per token (input 100.0x, output 100.0x): max_price_ratio means it is never used"), "{w:?}");
    assert!(w[2].starts_with("r.toml line 22, routes.open: dear costs up to 100.0x the primary mini per token: without max_price_ratio"), "{w:?}");
}

#[test]
fn a_context_window_fallback_no_larger_warns() {
    let text = with(
        "context_window = 128000\n\
         [models.small]\nprovider = \"openai\"\ngroups = [\"main\"]\ncontext_window = 8000\n\
         [routes.r]\nchain = [\"mini\"]\ncontext_window_chain = [\"small\"]\n",
    );
    assert_eq!(
        warnings(&ok(&text)),
        [
            "r.toml line 19, routes.r.context_window_chain: small's context window (8000) is no larger than the primary's (128000): it cannot take what the primary could not"
        ]
    );
}

#[test]
fn names_with_dots_are_quoted_in_fields() {
    let text = with("[routes.\"gpt-4.1-mini\"]\nchain = [\"nope\"]\n");
    assert!(
        err(&text).starts_with(
            "r.toml line 13, routes.\"gpt-4.1-mini\".chain[0]: unknown target or route \"nope\""
        ),
        "{}",
        err(&text)
    );
}

#[test]
fn a_large_file_is_refused_before_it_is_read_whole() {
    let dir = std::env::temp_dir().join(format!("batchling-routes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.toml");
    std::fs::write(&path, vec![b'#'; MAX_ROUTES_FILE_BYTES as usize + 1]).unwrap();
    let e = RoutesConfig::load(&path).unwrap_err();
    assert!(matches!(e, RoutesError::TooLarge { .. }), "{e}");
    let missing = RoutesConfig::load(&dir.join("none.toml")).unwrap_err();
    assert!(missing.to_string().starts_with("cannot read "), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The documented example and a route naming a route: valid.
fn mutation_base() -> String {
    let extra = "[routes.r]\nchain = [\"gpt-4o-mini\"]\ncontext_window_chain = [\"haiku\"]\n";
    format!("{}\n{extra}", doc_example())
}

#[test]
fn the_mutation_base_is_valid() {
    assert_eq!(
        ok(&mutation_base()).routes["r"].expanded.chain,
        ["mini", "haiku"]
    );
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = RoutesConfig::parse(&text, "r.toml");
    }

    #[test]
    fn mutated_configs_never_panic(cut in 0usize..2000, insert in "[\\[\\]{}=\",. a-z0-9\n]{0,12}") {
        let text = mutation_base();
        let at = text.char_indices().map(|(i, _)| i).nth(cut % text.len()).unwrap_or(0);
        let mutated = format!("{}{insert}{}", &text[..at], &text[at..]);
        match RoutesConfig::parse(&mutated, "r.toml") {
            Ok(c) => {
                let _ = c.resolve_keys(|_| None);
                let _ = c.price_warnings(&Catalog::builtin());
                for w in &c.warnings {
                    prop_assert!(w.line.is_some(), "{w}");
                }
            }
            Err(RoutesError::Invalid { line, field, message, .. }) => {
                prop_assert!(line.is_some(), "{field}: {message}");
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for depth in [1_000, 100_000] {
        let arrays = format!("a = {}{}\n", "[".repeat(depth), "]".repeat(depth));
        let _ = RoutesConfig::parse(&arrays, "r.toml");
        let tables = format!("a = {}{}\n", "{ b = ".repeat(depth), "}".repeat(depth));
        let _ = RoutesConfig::parse(&tables, "r.toml");
        let dotted = format!("{} = 1\n", vec!["k"; depth].join("."));
        let _ = RoutesConfig::parse(&dotted, "r.toml");
    }
}

#[test]
fn a_serve_table_holds_serves_own_settings() {
    let c = ok(&with(
        "\n[serve]\nauth_keys_env = \"CLIENT_KEYS\"\nconcurrency = 16\ntimeout_secs = 2.5\nmax_response_mb = 8\nlenient = true\n",
    ));
    let s = c.serve.expect("the [serve] table");
    assert_eq!(s.auth_keys_env.as_deref(), Some("CLIENT_KEYS"));
    assert_eq!(
        (s.concurrency, s.timeout_secs, s.max_response_mb),
        (Some(16), Some(2.5), Some(8))
    );
    assert!(s.lenient);
    assert_eq!(s.line, 13);
    assert_eq!(ok(BASE).serve, None);

    let e = err(&with("\n[serve]\nconcurency = 4\n"));
    assert!(
        e.starts_with(
            "r.toml line 14, serve.concurency: unknown field (did you mean concurrency?)"
        ),
        "{e}"
    );
    let e = err(&with("\n[serve]\ntimeout_secs = 0\n"));
    assert!(
        e.contains("line 14, serve.timeout_secs: expected a timeout"),
        "{e}"
    );
    let e = err(&with("\n[serve]\nauth_keys_env = \"not a var\"\n"));
    assert!(
        e.contains("line 14, serve.auth_keys_env: not the name"),
        "{e}"
    );
}

#[test]
fn the_older_upstream_form_is_named_as_such() {
    let e = err(&with(
        "\n[[upstream]]\nname = \"a\"\nbase_url = \"http://127.0.0.1:1/v1\"\n",
    ));
    assert!(
        e.starts_with(
            "r.toml line 13, upstream: this belongs to `batchling serve`'s older [[upstream]] form"
        ),
        "{e}"
    );
}
