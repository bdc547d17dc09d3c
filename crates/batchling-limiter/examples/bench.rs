//! The shared budget's speed and fill, against the Redis at `REDIS_URL`
//! (default `redis://127.0.0.1:6379`):
//!
//! 1. reserve calls per second from 4 clients (every call books: limits
//!    far above what they can reach), with each call's latency;
//! 2. 4 clients acting as workers for 10 s on one 6,000 RPM lane (reserve,
//!    sleep the wait, "send", reserve again): sends booked in the 10 s
//!    against the ideal 1,000, and the busiest one-second window.
//!
//! `cargo run --release -p batchling-limiter --example bench`

#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use batchling_limiter::{Admission, Cost, Lane, Limiter, Limits, RedisTime, Settings};

const CLIENTS: usize = 4;

#[tokio::main]
async fn main() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("blbench:{}", std::process::id());
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        match Limiter::connect_with(&url, &prefix, Settings::default()).await {
            Ok(l) => clients.push(l),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        }
    }
    let upstream = format!("{:032x}", std::process::id());
    let fast = Lane::new(&upstream, "bench", Some("calls")).unwrap();
    let paced = Lane::new(&upstream, "bench", Some("paced")).unwrap();
    calls_per_second(&clients, &fast).await;
    admitted_rate(&clients, &paced).await;
    for lane in [&fast, &paced] {
        clients[0].forget(lane).await.unwrap();
    }
}

async fn calls_per_second(clients: &[Limiter], lane: &Lane) {
    let limits = Limits {
        rpm: Some(1_000_000_000),
        tpm: Some(1_000_000_000_000),
        ..Limits::default()
    };
    let run = Duration::from_secs(5);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        let (c, lane) = (c.clone(), lane.clone());
        tasks.push(tokio::spawn(async move {
            let mut took = Vec::new();
            while start.elapsed() < run {
                let t = Instant::now();
                let a = c.reserve(&lane, &limits, Cost::tokens(100)).await.unwrap();
                took.push(t.elapsed());
                assert!(matches!(a, Admission::Send(_)));
            }
            took
        }));
    }
    let mut took = Vec::new();
    for t in tasks {
        took.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    took.sort();
    let pct = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
    println!(
        "reserve: {} calls in {secs:.2} s from {CLIENTS} clients = {:.0} calls/s; latency p50 {:?}, p99 {:?}",
        took.len(),
        took.len() as f64 / secs,
        pct(0.5),
        pct(0.99),
    );
}

async fn admitted_rate(clients: &[Limiter], lane: &Lane) {
    const RPM: u64 = 6_000;
    let limits = Limits {
        rpm: Some(RPM),
        ..Limits::default()
    };
    let run = Duration::from_secs(10);
    let t0 = clients[0].view(lane).await.unwrap().now;
    let mut tasks = Vec::new();
    for c in clients {
        let (c, lane) = (c.clone(), lane.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            loop {
                match c.reserve(&lane, &limits, Cost::tokens(100)).await.unwrap() {
                    Admission::Send(r) => {
                        if r.at.since(t0) >= run {
                            return sent;
                        }
                        tokio::time::sleep(r.wait).await;
                        sent.push((r.at, Instant::now()));
                    }
                    Admission::Later { retry_in, .. } => tokio::time::sleep(retry_in).await,
                }
            }
        }));
    }
    let mut booked: Vec<RedisTime> = Vec::new();
    let mut woke: Vec<Instant> = Vec::new();
    for t in tasks {
        for (at, local) in t.await.unwrap() {
            booked.push(at);
            woke.push(local);
        }
    }
    booked.sort();
    woke.sort();
    let ideal = RPM as f64 / 60.0 * run.as_secs_f64();
    let second = Duration::from_secs(1);
    let worst_booked = busiest(&booked, |a, b| b.since(*a) < second);
    let worst_woke = busiest(&woke, |a, b| b.duration_since(*a) < second);
    println!(
        "paced: {} sends booked in {:.0} s at {RPM} RPM from {CLIENTS} clients (ideal {ideal:.0}): ratio {:.4}; busiest second booked {worst_booked}, as the clients woke to send {worst_woke} (cap {})",
        booked.len(),
        run.as_secs_f64(),
        booked.len() as f64 / ideal,
        RPM / 60 + 1,
    );
}

/// The most items of sorted `times` in any window starting at one of them.
fn busiest<T>(times: &[T], within: impl Fn(&T, &T) -> bool) -> usize {
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| within(&times[i], t))
                .count()
        })
        .max()
        .unwrap_or(0)
}
