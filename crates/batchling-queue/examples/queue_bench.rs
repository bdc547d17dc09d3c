//! The queue's two figures: how long a 1,000,000-line job takes to load,
//! and claim + complete throughput with several workers.
//!
//! ```text
//! cargo run --release -p batchling-queue --example queue_bench -- \
//!     [URL] [LOAD_LINES=1000000] [RUN_REQUESTS=200000] [WORKERS=4] [BATCH=200]
//! ```
//! URL defaults to postgres://postgres@127.0.0.1:5432/test. Works in a
//! schema of its own (`bq_bench_…`), dropped at the end.
#![allow(unused_crate_dependencies, clippy::print_stdout, clippy::print_stderr)]

use std::time::Instant;

use batchling_queue::{Completion, JobId, JobSpec, NewLine, Outcome, Queue, QueueSettings};

fn lines(n: u64) -> impl Iterator<Item = NewLine> {
    (0..n).map(|seq| NewLine {
        seq,
        custom_id: format!("request-{seq}"),
        body: format!(
            "{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"say {seq}\"}}]}}"
        )
        .into_bytes(),
        worst_cost: 0.0001,
        est_tokens: 20,
    })
}

async fn load(q: &Queue, n: u64, tag: &[u8]) -> JobId {
    let settings = serde_json::json!({"model": "gpt-4o-mini"});
    let spec = JobSpec {
        identity: tag,
        settings: &settings,
        budget_cap: None,
    };
    q.load_job(spec, lines(n)).await.expect("load").job.id
}

/// Claim `batch`, answer every request at once (zero latency), until the
/// job has nothing left; returns how many this worker answered.
async fn work(q: Queue, job: JobId, id: u32, batch: usize) -> u64 {
    let lease = q.register("bench", id).await.expect("register");
    let mut n = 0;
    let (mut in_claim, mut in_complete) = (0.0, 0.0);
    loop {
        let t = Instant::now();
        let claimed = q.claim(job, &lease, batch).await.expect("claim");
        in_claim += t.elapsed().as_secs_f64();
        if claimed.is_empty() {
            eprintln!(
                "worker {id}: {n} answered; {in_claim:.2} s claiming, {in_complete:.2} s completing"
            );
            return n;
        }
        let answers: Vec<_> = claimed
            .iter()
            .map(|c| Completion {
                seq: c.seq,
                token: c.token,
                cost: 0.00002,
                outcome: Outcome::Done {
                    line: format!(
                        "{{\"custom_id\":\"{}\",\"response\":{{\"status_code\":200}}}}\n",
                        c.custom_id
                    )
                    .into_bytes(),
                },
            })
            .collect();
        let t = Instant::now();
        n += q
            .complete(job, lease.worker(), &answers)
            .await
            .expect("complete")
            .accepted;
        in_complete += t.elapsed().as_secs_f64();
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let url = args
        .first()
        .filter(|a| a.starts_with("postgres"))
        .cloned()
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let off = usize::from(args.first().is_some_and(|a| a.starts_with("postgres")));
    let (load_lines, run, workers, batch) = (
        arg(off, 1_000_000),
        arg(off + 1, 200_000),
        arg(off + 2, 4),
        arg(off + 3, 200),
    );
    let schema = format!("bq_bench_{:08x}", rand::random::<u32>());
    let mut settings = QueueSettings::from_url(&url)
        .and_then(|s| s.with_schema(&schema))
        .expect("URL");
    settings.pool_size = (workers as usize * 2).max(8);
    let q = Queue::connect_with(settings)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Named up front: a run that fails half-way leaves the schema behind.
    println!("schema {schema} (dropped at the end)");

    let t = Instant::now();
    load(&q, load_lines, b"bench-load").await;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "load: {load_lines} lines in {secs:.2} s ({:.0} lines/s)",
        load_lines as f64 / secs
    );

    let job = load(&q, run, b"bench-run").await;
    let t = Instant::now();
    let tasks: Vec<_> = (0..workers as u32)
        .map(|w| tokio::spawn(work(q.clone(), job, w, batch as usize)))
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("worker");
    }
    let secs = t.elapsed().as_secs_f64();
    let status = q.status(job).await.expect("status");
    assert_eq!(status.done, run, "every request answered once");
    println!(
        "claim+complete: {total} requests, {workers} workers, batch {batch}: {secs:.2} s ({:.0} requests/s)",
        total as f64 / secs
    );

    if std::env::var_os("BQ_KEEP").is_some() {
        println!("kept schema {schema}");
        return;
    }
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    drop(q);
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .expect("drop the bench schema");
}
