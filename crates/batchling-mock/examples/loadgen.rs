//! Throughput check: fire N chat requests with C concurrent workers and
//! report requests/s.
//!
//! `cargo run --release -p batchling-mock --example loadgen -- [N] [C] [BASE_URL]`
//!
//! Without BASE_URL an in-process mock is started on its own runtime thread
//! pool (1 worker thread), so client and server do not share a scheduler.

// An example sees every dependency of its package and uses a few; it prints its
// results.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use batchling_mock::{CUSTOM_ID_HEADER, MockConfig, MockServer};

fn main() {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let concurrency: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    let url = args.next();

    let _ = rustls::crypto::ring::default_provider().install_default();

    // The server, unless one is given.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (base_url, server) = match url {
        Some(u) => (u, None),
        None => {
            let s = server_rt
                .block_on(MockServer::start(
                    MockConfig::default(),
                    "127.0.0.1:0".parse().unwrap(),
                ))
                .unwrap();
            (s.base_url(), Some(s))
        }
    };

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (elapsed, ok, failed) = client_rt.block_on(fire(base_url, total, concurrency));
    println!(
        "{total} requests, concurrency {concurrency}: {:.2}s, {:.0} req/s (ok {ok}, failed {failed})",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    if let Some(s) = server {
        println!("server stats: {:?}", s.stats());
        server_rt.block_on(s.shutdown());
    }
}

/// Send `total` requests from `concurrency` workers: (time taken, ok, failed).
async fn fire(base_url: String, total: u64, concurrency: usize) -> (Duration, u64, u64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let url = format!("{base_url}/chat/completions");
    let next = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, next, ok, failed) = (
                client.clone(),
                url.clone(),
                next.clone(),
                ok.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let counter = if send(&client, &url, i).await {
                        &ok
                    } else {
                        &failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    (
        start.elapsed(),
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    )
}

/// One request; whether it got a 200 (body read).
async fn send(client: &reqwest::Client, url: &str, i: u64) -> bool {
    let body = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"Request number {i}: say something short."}}],"max_tokens":32}}"#
    );
    let res = client
        .post(url)
        .header("content-type", "application/json")
        .header(CUSTOM_ID_HEADER, format!("req-{i}"))
        .body(body)
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => {
            let _ = r.bytes().await;
            true
        }
        _ => false,
    }
}
