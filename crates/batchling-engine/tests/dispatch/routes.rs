//! Routes: a line's chain of targets, key pools and what moves a line along
//! (`route/hop.rs`), each upstream a scripted `Upstream` of its own.
//!
//! Prices here are chosen so that every answer costs a whole number of
//! micro-dollars: the summary adds costs in micro-dollars, so its total is
//! exact and compared to 1e-9.

use std::sync::Arc;
use std::time::Duration;

use batchling_core::pricing::{Catalog, ModelPrice};
use batchling_engine::route::GroupId;
use batchling_engine::{RouteSpec, Routes, RoutesBuilder};

use crate::support::{
    Sent, Upstream, Workdir, error, id, ms, ok, rate_limited, refusal, secs, status,
};

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

/// A group of one key on `up`.
fn group(b: &mut RoutesBuilder<Upstream>, name: &str, up: &Arc<Upstream>) -> GroupId {
    b.group(name, vec![(format!("{name}-key"), up.clone())])
}

/// Routes sending every line, as it is, to one target over `groups`: each
/// a list of (key id, upstream) sharing one budget.
fn pool(groups: &[&[(&str, &Arc<Upstream>)]]) -> Routes<Upstream> {
    let mut b = Routes::builder();
    let ids: Vec<GroupId> = (groups.iter().enumerate())
        .map(|(i, keys)| {
            let keys = keys
                .iter()
                .map(|(id, up)| ((*id).to_owned(), (*up).clone()));
            b.group(&format!("g{i}"), keys.collect())
        })
        .collect();
    let t = b.target("t", None, &ids, None);
    b.route_any(RouteSpec {
        chain: vec![t],
        ..RouteSpec::default()
    });
    b.build().expect("valid")
}

/// Sends (of several upstreams) that started in `[from, from + 1 s)`, the
/// most over every `from` at a send: the busiest one-second window.
fn busiest_second(sends: &[Sent]) -> usize {
    let mut at: Vec<Duration> = sends.iter().map(|s| s.at).collect();
    at.sort();
    (0..at.len())
        .map(|i| at[i..].iter().take_while(|t| **t < at[i] + secs(1)).count())
        .max()
        .unwrap_or(0)
}

fn all_sends(ups: &[&Arc<Upstream>]) -> Vec<Sent> {
    ups.iter().flat_map(|u| u.sends()).collect()
}

const OVERLOADED: &str =
    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;

#[tokio::test(start_paused = true)]
async fn a_primary_that_degrades_then_dies_leaves_every_line_answered_once() {
    const N: usize = 4000;
    let mut w = Workdir::with_requests(N);
    w.job.concurrency = 64;
    w.job.prices = Some(Arc::new(Catalog::new()));
    let lat = ms(100);
    let storm: Vec<_> = (0..10)
        .map(|i| match i % 10 {
            2 | 5 | 8 => error(529, OVERLOADED).after(lat),
            _ => ok().after(lat),
        })
        .collect();
    let dies_at = secs(3);
    let primary = Upstream::new(ok().after(lat))
        .starting_at(Duration::ZERO, storm)
        .starting_at(dies_at, [error(529, OVERLOADED).after(lat)])
        .arc();
    let fallback = Upstream::new(ok().usage(100, 20).after(lat)).arc();
    let mut b = Routes::builder();
    let (gp, gf) = (group(&mut b, "p", &primary), group(&mut b, "f", &fallback));
    // $1 and $2 per million in and out: 10 in + 20 out = $50e-6 exactly.
    let tp = b.target("primary", Some("m"), &[gp], Some(price(1.0, 2.0)));
    // $3 and $4: 100 in + 20 out = $380e-6.
    let tf = b.target("fallback", Some("m-mini"), &[gf], Some(price(3.0, 4.0)));
    b.route(
        "m",
        RouteSpec {
            chain: vec![tp, tf],
            ..RouteSpec::default()
        },
    );

    let summary = w.run_routes(b.build().expect("valid")).await;

    assert_eq!((summary.succeeded, summary.failed), (N as u64, 0));
    w.assert_each_answered_once();
    let ok_at = |up: &Upstream| up.sends().iter().filter(|s| s.status == Some(200)).count();
    let (by_primary, by_fallback) = (ok_at(&primary), ok_at(&fallback));
    assert_eq!(
        by_primary + by_fallback,
        N,
        "each line answered by one of them"
    );
    assert!(
        by_primary > 0 && by_fallback > 0,
        "{by_primary} / {by_fallback}"
    );
    for i in 0..N {
        let (on_p, on_f) = (
            primary.sends_of(&id(i)).len(),
            fallback.sends_of(&id(i)).len(),
        );
        assert!(on_p <= 3 && on_p + on_f <= 6, "{}: {on_p} + {on_f}", id(i));
        assert!(on_f <= 1, "the fallback answers at once: {}", id(i));
    }
    // The fallback is sent the model by its own name.
    assert!(fallback.sends().iter().all(|s| s.model == "m-mini"));
    let expected = by_primary as f64 * 50e-6 + by_fallback as f64 * 380e-6;
    let cost = summary.cost_usd.expect("priced");
    assert!((cost - expected).abs() < 1e-9, "{cost} vs {expected}");
    // Once its circuit is open, the dead primary gets one probe per interval
    // (at most). When it opens is found, not assumed: the paused clock jumps
    // ahead while the journal's blocking writes run, so the failures may come
    // back a second or more after the death. It is open from the last send
    // before the first quiet second since then. A request last sent before
    // that may come back after it (a backoff ends later): its next attempt
    // is a straggler, not a probe.
    let sends = primary.sends();
    let since: Vec<Duration> = sends
        .iter()
        .map(|s| s.at)
        .filter(|at| *at > dies_at)
        .collect();
    let opened = (since.windows(2))
        .find(|p| p[1] - p[0] >= secs(1))
        .map(|p| p[0])
        .expect("the dead primary's circuit opens");
    let mut last_sent = std::collections::HashMap::new();
    let mut late = Vec::new();
    for s in sends {
        let before = last_sent.insert(s.custom_id.clone(), s.at);
        if s.at > opened && before.is_none_or(|at| at > opened) {
            late.push(s.at);
        }
    }
    assert!(!late.is_empty(), "the dead primary is probed");
    for pair in late.windows(2) {
        assert!(pair[1] - pair[0] >= secs(5) - ms(1), "{late:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn two_keys_of_one_group_share_its_budget_and_two_groups_add_up() {
    const N: usize = 200;
    let shared = {
        let mut w = Workdir::with_requests(N);
        w.job.pacing.rpm = Some(600);
        let (a, b_up) = (Upstream::new(ok()).arc(), Upstream::new(ok()).arc());
        let s = w.run_routes(pool(&[&[("a", &a), ("b", &b_up)]])).await;
        assert_eq!(s.succeeded, N as u64);
        w.assert_each_answered_once();
        let (na, nb) = (a.sends().len(), b_up.sends().len());
        assert!(na > N / 4 && nb > N / 4, "both keys are used: {na} / {nb}");
        busiest_second(&all_sends(&[&a, &b_up]))
    };
    assert!(
        shared <= 10,
        "one group: 600 rpm for both keys, {shared} in a second"
    );

    let added = {
        let mut w = Workdir::with_requests(N);
        w.job.pacing.rpm = Some(600);
        let (a, b_up) = (Upstream::new(ok()).arc(), Upstream::new(ok()).arc());
        let s = w.run_routes(pool(&[&[("a", &a)], &[("b", &b_up)]])).await;
        assert_eq!(s.succeeded, N as u64);
        w.assert_each_answered_once();
        for up in [&a, &b_up] {
            let one = busiest_second(&up.sends());
            assert!(one <= 10, "each group keeps its own 600 rpm: {one}");
        }
        busiest_second(&all_sends(&[&a, &b_up]))
    };
    assert!(
        added > 10,
        "two groups: their budgets add up, {added} in a second"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dead_key_gets_one_request_and_its_group_goes_on_with_the_other() {
    const N: usize = 300;
    let w = Workdir::with_requests(N);
    let dead = Upstream::new(status(401).after(ms(50))).arc();
    let good = Upstream::new(ok().after(ms(50))).arc();

    let s = w.run_routes(pool(&[&[("k1", &dead), ("k2", &good)]])).await;

    assert_eq!((s.succeeded, s.failed), (N as u64, 0));
    assert!(s.stopped.is_none(), "{:?}", s.stopped);
    w.assert_each_answered_once();
    assert_eq!(dead.sends().len(), 1, "one request ever on the dead key");
    assert_eq!(good.sends().len(), N);
}

#[tokio::test(start_paused = true)]
async fn the_last_dead_key_stops_the_run() {
    let w = Workdir::with_requests(20);
    let (k1, k2) = (
        Upstream::new(status(401)).arc(),
        Upstream::new(status(403)).arc(),
    );

    let s = w.run_routes(pool(&[&[("k1", &k1), ("k2", &k2)]])).await;

    assert!(
        matches!(
            s.stopped,
            Some(batchling_engine::StopCause::Unauthorized { .. })
        ),
        "{:?}",
        s.stopped
    );
    assert_eq!((k1.sends().len(), k2.sends().len()), (1, 1));
    assert_eq!(s.succeeded, 0);
}

const CONTEXT: &str = r#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
const INVALID: &str = r#"{"error":{"message":"Invalid value for 'temperature'","type":"invalid_request_error","param":"temperature","code":null}}"#;
const NOT_FOUND: &str = r#"{"error":{"message":"The model `m` does not exist","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#;

/// Primary, fallback and a large-context target, one group each; the
/// route `m` over the first two, the third its context-window chain.
struct Three {
    primary: Arc<Upstream>,
    fallback: Arc<Upstream>,
    large: Arc<Upstream>,
}

impl Three {
    fn routes(&self, spec: impl FnOnce(&mut RouteSpec)) -> Routes<Upstream> {
        let mut b = Routes::builder();
        let gp = group(&mut b, "p", &self.primary);
        let gf = group(&mut b, "f", &self.fallback);
        let gl = group(&mut b, "l", &self.large);
        let tp = b.target("primary", Some("m"), &[gp], Some(price(1.0, 1.0)));
        let tf = b.target("fallback", Some("m-mini"), &[gf], Some(price(1.0, 1.0)));
        let tl = b.target("large", Some("m-large"), &[gl], Some(price(2.0, 2.0)));
        let mut s = RouteSpec {
            chain: vec![tp, tf],
            context_window_chain: vec![tl],
            ..RouteSpec::default()
        };
        spec(&mut s);
        b.route("m", s);
        b.build().expect("valid")
    }
}

#[tokio::test(start_paused = true)]
async fn a_context_window_failure_goes_to_the_context_chain_only() {
    let w = Workdir::with_requests(20);
    let three = Three {
        primary: Upstream::new(ok())
            .script("r03", [error(400, CONTEXT)])
            .arc(),
        fallback: Upstream::new(ok()).arc(),
        large: Upstream::new(ok()).arc(),
    };

    let s = w.run_routes(three.routes(|_| {})).await;

    assert_eq!((s.succeeded, s.failed), (20, 0));
    w.assert_each_answered_once();
    assert_eq!(three.primary.sends_of("r03").len(), 1);
    assert_eq!(three.large.sends().len(), 1);
    assert_eq!(three.large.sends_of("r03")[0].model, "m-large");
    assert!(
        three.fallback.sends().is_empty(),
        "the main chain is not used"
    );
}

#[tokio::test(start_paused = true)]
async fn an_invalid_request_gets_one_attempt_and_no_fallback() {
    let w = Workdir::with_requests(10);
    let three = Three {
        primary: Upstream::new(ok())
            .script("r05", [error(400, INVALID)])
            .arc(),
        fallback: Upstream::new(ok()).arc(),
        large: Upstream::new(ok()).arc(),
    };

    let s = w.run_routes(three.routes(|_| {})).await;

    assert_eq!((s.succeeded, s.failed), (9, 1));
    assert_eq!(w.failed(), ["r05"]);
    assert_eq!(three.primary.sends_of("r05").len(), 1);
    assert!(three.fallback.sends().is_empty() && three.large.sends().is_empty());
    // Without a context chain, a context-window failure fails the same way.
    let w = Workdir::with_requests(10);
    let three = Three {
        primary: Upstream::new(ok())
            .script("r02", [error(400, CONTEXT)])
            .arc(),
        fallback: Upstream::new(ok()).arc(),
        large: Upstream::new(ok()).arc(),
    };
    let s = w
        .run_routes(three.routes(|s| s.context_window_chain.clear()))
        .await;
    assert_eq!((s.succeeded, s.failed), (9, 1));
    assert!(three.fallback.sends().is_empty() && three.large.sends().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_chain_that_fails_everywhere_stops_each_line_at_the_cap() {
    const N: usize = 30;
    let w = Workdir::with_requests(N);
    let three = Three {
        primary: Upstream::new(status(503).after(ms(20))).arc(),
        fallback: Upstream::new(status(503).after(ms(20))).arc(),
        large: Upstream::new(ok()).arc(),
    };

    let s = w
        .run_routes(three.routes(|s| s.max_attempts = Some(6)))
        .await;

    assert_eq!((s.succeeded, s.failed), (0, N as u64));
    assert!(s.stopped.is_none(), "{:?}", s.stopped);
    for i in 0..N {
        let on_p = three.primary.sends_of(&id(i)).len();
        let on_f = three.fallback.sends_of(&id(i)).len();
        assert_eq!(on_p + on_f, 6, "{}: {on_p} + {on_f}", id(i));
        assert!(on_p <= 3, "{}", id(i));
    }
    assert!(three.large.sends().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_fallback_over_the_price_ceiling_is_never_called() {
    const N: usize = 10;
    let w = Workdir::with_requests(N);
    let primary = Upstream::new(status(503)).arc();
    let dear = Upstream::new(ok()).arc();
    let mut b = Routes::builder();
    let (gp, gd) = (group(&mut b, "p", &primary), group(&mut b, "d", &dear));
    let tp = b.target("primary", Some("m"), &[gp], Some(price(1.0, 1.0)));
    let td = b.target("dear", Some("m-pro"), &[gd], Some(price(10.0, 10.0)));
    b.route(
        "m",
        RouteSpec {
            chain: vec![tp, td],
            max_price_ratio: Some(3.0),
            ..RouteSpec::default()
        },
    );

    let s = w.run_routes(b.build().expect("valid")).await;

    assert_eq!((s.succeeded, s.failed), (0, N as u64));
    assert!(dear.sends().is_empty(), "never called");
    for line in w.failure_lines() {
        assert_eq!(line["error"]["code"], "no_eligible_target", "{line}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_model_not_found_is_out_for_the_run_after_one_request() {
    const N: usize = 100;
    let w = Workdir::with_requests(N);
    let three = Three {
        primary: Upstream::new(error(404, NOT_FOUND).after(ms(30))).arc(),
        fallback: Upstream::new(ok().after(ms(30))).arc(),
        large: Upstream::new(ok()).arc(),
    };

    let s = w.run_routes(three.routes(|_| {})).await;

    assert_eq!((s.succeeded, s.failed), (N as u64, 0));
    w.assert_each_answered_once();
    assert_eq!(
        three.primary.sends().len(),
        1,
        "its first answer took it out"
    );
    assert_eq!(three.fallback.sends().len(), N);
}

#[tokio::test(start_paused = true)]
async fn each_retry_after_is_followed_as_its_own_answer_says() {
    let w = Workdir::with_requests(3);
    let up = Upstream::new(ok())
        .script(
            "r01",
            [
                rate_limited(secs(2)),
                rate_limited(ms(500)),
                rate_limited(secs(3)),
                ok(),
            ],
        )
        .arc();

    let s = w.run_routes(pool(&[&[("k", &up)]])).await;

    assert_eq!(s.succeeded, 3);
    let sends = up.sends_of("r01");
    assert_eq!(sends.len(), 4, "429s cost no attempt");
    let waits = [secs(2), ms(500), secs(3)];
    for (pair, wait) in sends.windows(2).zip(waits) {
        let gap = pair[1].at - pair[0].answered.expect("answered");
        assert!(gap >= wait, "{gap:?} < {wait:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_spilling_route_adds_the_fallbacks_limits_and_a_plain_one_waits() {
    const N: usize = 200;
    let run = |spill: bool| async move {
        let mut w = Workdir::with_requests(N);
        // 600 requests a minute for each (group, model) lane.
        w.job.pacing.rpm = Some(600);
        let (primary, fallback) = (Upstream::new(ok()).arc(), Upstream::new(ok()).arc());
        let mut b = Routes::builder();
        let (gp, gf) = (group(&mut b, "p", &primary), group(&mut b, "f", &fallback));
        let tp = b.target("primary", Some("m"), &[gp], Some(price(1.0, 1.0)));
        let tf = b.target("fallback", Some("m-mini"), &[gf], Some(price(2.0, 2.0)));
        b.route(
            "m",
            RouteSpec {
                chain: vec![tp, tf],
                max_price_ratio: Some(3.0),
                spill,
                ..RouteSpec::default()
            },
        );
        let s = w.run_routes(b.build().expect("valid")).await;
        assert_eq!((s.succeeded, s.failed), (N as u64, 0));
        w.assert_each_answered_once();
        (primary, fallback)
    };

    let (primary, fallback) = run(false).await;
    assert!(
        fallback.sends().is_empty(),
        "without spill, the line waits for its primary"
    );
    assert!(busiest_second(&primary.sends()) <= 10);

    let (primary, fallback) = run(true).await;
    assert!(
        busiest_second(&primary.sends()) <= 10,
        "the primary's limit holds"
    );
    assert!(
        busiest_second(&fallback.sends()) <= 10,
        "and the fallback's"
    );
    let both = busiest_second(&all_sends(&[&primary, &fallback]));
    assert!(both > 10, "their limits add up: {both} in a second");
    assert_eq!(
        primary.sends().len() + fallback.sends().len(),
        N,
        "each line sent once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_the_answer_unless_the_route_has_a_content_policy_chain() {
    const N: usize = 10;
    let run = |with_chain: bool| async move {
        let mut w = Workdir::with_requests(N);
        w.job.prices = Some(Arc::new(Catalog::new()));
        let primary = Upstream::new(ok()).script("r04", [refusal()]).arc();
        let careful = Upstream::new(ok()).arc();
        let mut b = Routes::builder();
        let (gp, gc) = (group(&mut b, "p", &primary), group(&mut b, "c", &careful));
        // $1 per million both ways: the refusal (10 + 5) costs $15e-6,
        // the other target's answer (10 + 20) $30e-6.
        let tp = b.target("primary", Some("m"), &[gp], Some(price(1.0, 1.0)));
        let tc = b.target("careful", Some("m-careful"), &[gc], Some(price(1.0, 1.0)));
        b.route(
            "m",
            RouteSpec {
                chain: vec![tp],
                content_policy_chain: if with_chain { vec![tc] } else { Vec::new() },
                ..RouteSpec::default()
            },
        );
        let s = w.run_routes(b.build().expect("valid")).await;
        assert_eq!((s.succeeded, s.failed), (N as u64, 0));
        w.assert_each_answered_once();
        (s, primary, careful)
    };

    let (s, primary, careful) = run(false).await;
    assert_eq!(primary.sends_of("r04").len(), 1, "one billed attempt");
    assert!(careful.sends().is_empty(), "a refusal is an answer");
    let cost = s.cost_usd.expect("priced");
    assert!((cost - (9.0 * 30e-6 + 15e-6)).abs() < 1e-9, "{cost}");

    let (s, primary, careful) = run(true).await;
    assert_eq!(primary.sends_of("r04").len(), 1);
    assert_eq!(
        careful.sends_of("r04").len(),
        1,
        "the content chain answers it"
    );
    assert_eq!(careful.sends().len(), 1, "and no other line");
    // Both billed attempts count: the refusal and the answer.
    let cost = s.cost_usd.expect("priced");
    assert!((cost - (10.0 * 30e-6 + 15e-6)).abs() < 1e-9, "{cost}");
}
