use std::time::Duration;

use batchling_limiter::{Admission, Cost, Limits, RedisTime, Settings};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::support::{Redis, lane};

const RPM: u64 = 6_000;
const TPM: u64 = 1_000_000;
const MAX_COST: u64 = 400;
const CLIENTS: usize = 8;
/// How much of Redis's clock the clients book.
const SPAN: Duration = Duration::from_secs(3);

/// Eight processes book random token costs at 6,000 RPM / 1,000,000 TPM
/// (costs of 1 to 50 or 1 to 400 tokens, so sometimes requests and
/// sometimes tokens hold the lane back). In the schedule the script returned: every
/// one-second window holds at most 100 + 1 requests and 16,666 tokens +
/// one request's cost; consecutive sends are at least the spacing of the
/// dimension that binds apart (no bunching, from any client); and the
/// schedule is dense: its span is within 5% of the spacing it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_clients_share_one_schedule_without_bursts_or_holes() {
    let redis = Redis::new();
    let clients = redis.clients(CLIENTS, &Settings::default()).await;
    let lane = lane("gpt-test");
    let limits = Limits {
        rpm: Some(RPM),
        tpm: Some(TPM),
        ..Limits::default()
    };
    let start = clients[0].view(&lane).await.unwrap().now;
    let mut tasks = Vec::new();
    for c in clients {
        let lane = lane.clone();
        tasks.push(tokio::spawn(async move {
            let mut booked = Vec::new();
            let mut rng = SmallRng::seed_from_u64(rand::random());
            loop {
                // Half small (requests bind), half up to MAX_COST (tokens may).
                let top = if rng.random_bool(0.5) { 50 } else { MAX_COST };
                let cost = Cost::tokens(rng.random_range(1..=top));
                match c.reserve(&lane, &limits, cost).await.unwrap() {
                    Admission::Send(r) => {
                        booked.push((r.at, cost.input, r.seq));
                        if r.at.since(start) >= SPAN {
                            return booked;
                        }
                    }
                    Admission::Later { retry_in, .. } => tokio::time::sleep(retry_in).await,
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    assert!(all.len() > 150, "only {} booked", all.len());
    let mut seqs: Vec<u64> = all.iter().map(|b| b.2).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        all.len(),
        "a reservation id was handed out twice"
    );
    check_windows(&all);
    check_spacing_and_density(&all);
}

/// Every one-second window, starting at each send.
fn check_windows(all: &[(RedisTime, u64, u64)]) {
    let (req_cap, tok_cap) = (RPM / 60 + 1, TPM / 60 + MAX_COST);
    let (mut worst_req, mut worst_tok) = (0, 0);
    for (i, &(t0, _, _)) in all.iter().enumerate() {
        let window = all[i..]
            .iter()
            .take_while(|(t, _, _)| t.since(t0) < Duration::from_secs(1));
        let (n, tokens) = window.fold((0u64, 0u64), |(n, s), b| (n + 1, s + b.1));
        worst_req = worst_req.max(n);
        worst_tok = worst_tok.max(tokens);
        assert!(n <= req_cap, "{n} requests in the second from {t0}");
        assert!(tokens <= tok_cap, "{tokens} tokens in the second from {t0}");
    }
    println!("worst second: {worst_req} requests, {worst_tok} tokens");
}

/// Each send is at least the binding spacing after the one before, and
/// the span is at most 1/0.95 of the sum of those spacings.
fn check_spacing_and_density(all: &[(RedisTime, u64, u64)]) {
    let per_request = 60_000_000 / RPM;
    let mut needed = 0u64;
    for pair in all.windows(2) {
        let ((a, cost, _), (b, _, _)) = (pair[0], pair[1]);
        let spacing = per_request.max((cost * 60_000_000).div_ceil(TPM));
        let gap = b.as_micros() - a.as_micros();
        assert!(gap >= spacing, "{gap} µs after {a}, needs {spacing}");
        needed += spacing;
    }
    let span = all[all.len() - 1].0.as_micros() - all[0].0.as_micros();
    let density = needed as f64 / span as f64;
    println!("{} sends over {span} µs: density {density:.4}", all.len());
    assert!(density >= 0.95, "density {density:.4}");
}

/// Refunds never make a burst: four processes reserve 100 tokens and at
/// once settle for 0 to 10 (each refund pulls the token schedule back to
/// the latest booking), yet no one-second window of the schedule holds
/// more than one second's share (1,000 tokens at 60,000 TPM) plus one
/// reservation: the one-second log holds where the spacing gave way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refunds_never_make_a_burst() {
    const SHARE: u64 = 1_000;
    const RESERVED: u64 = 100;
    let redis = Redis::new();
    let clients = redis.clients(4, &Settings::default()).await;
    let lane = lane("refunds");
    let limits = Limits {
        rpm: Some(60_000),
        tpm: Some(SHARE * 60),
        ..Limits::default()
    };
    let start = clients[0].view(&lane).await.unwrap().now;
    let mut tasks = Vec::new();
    for c in clients {
        let lane = lane.clone();
        tasks.push(tokio::spawn(async move {
            let mut booked = Vec::new();
            let mut rng = SmallRng::seed_from_u64(rand::random());
            loop {
                match c
                    .reserve(&lane, &limits, Cost::tokens(RESERVED))
                    .await
                    .unwrap()
                {
                    Admission::Send(r) => {
                        let actual = Cost::tokens(rng.random_range(0..=10));
                        c.settle(&lane, &r, actual).await.unwrap();
                        booked.push((r.at, RESERVED, r.seq));
                        if r.at.since(start) >= SPAN {
                            return booked;
                        }
                    }
                    Admission::Later { retry_in, .. } => tokio::time::sleep(retry_in).await,
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let mut worst = 0;
    for (i, &(t0, _, _)) in all.iter().enumerate() {
        let tokens: u64 = all[i..]
            .iter()
            .take_while(|(t, _, _)| t.since(t0) < Duration::from_secs(1))
            .map(|b| b.1)
            .sum();
        worst = worst.max(tokens);
        assert!(
            tokens <= SHARE + RESERVED,
            "{tokens} tokens reserved in the second from {t0}"
        );
    }
    println!("{} booked; worst second {worst} tokens reserved", all.len());
    // The log gives way as the window moves: the lane is not stuck.
    assert!(
        all.len() as u64 >= SHARE * 3 / RESERVED,
        "only {} booked",
        all.len()
    );
}
