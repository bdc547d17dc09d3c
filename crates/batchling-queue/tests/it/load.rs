//! Loading: idempotent by identity, racing loaders, a crashed loader.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use batchling_queue::{JobSpec, NewLine, QueueError};

use crate::support::{TestSchema, lines};

fn spec<'a>(identity: &'a [u8], settings: &'a serde_json::Value) -> JobSpec<'a> {
    JobSpec {
        identity,
        settings,
        budget_cap: Some(5.0),
    }
}

#[tokio::test]
async fn loading_the_same_input_twice_joins_the_first_job_without_reading_lines() {
    let s = TestSchema::new().await;
    let settings = serde_json::json!({"model": "m", "max_tokens": 5});
    let first = s
        .queue
        .load_job(spec(b"input-a", &settings), lines(300))
        .await
        .unwrap();
    assert!(first.loaded_here);
    assert_eq!(first.job.total, 300);
    let read = Arc::new(AtomicU64::new(0));
    let counted = {
        let read = read.clone();
        lines(300).inspect(move |_| {
            read.fetch_add(1, Ordering::Relaxed);
        })
    };
    let second = s
        .queue
        .load_job(spec(b"input-a", &settings), counted)
        .await
        .unwrap();
    assert!(!second.loaded_here);
    assert_eq!(second.job, first.job);
    assert_eq!(read.load(Ordering::Relaxed), 0, "the joiner read no line");
    assert_eq!(s.scalar("SELECT count(*) FROM {s}.requests").await, 300);
    // A worker without the input joins by id and gets the settings.
    let joined = s.queue.join_job(first.job.id).await.unwrap();
    assert_eq!(joined.settings, settings);
    assert_eq!(joined.budget_cap, Some(5.0));
}

#[tokio::test]
async fn two_racing_loaders_make_one_job() {
    let s = TestSchema::new().await;
    let settings = serde_json::json!({});
    let (a, b) = tokio::join!(
        s.queue.load_job(spec(b"raced", &settings), lines(20_000)),
        s.queue.load_job(spec(b"raced", &settings), lines(20_000)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.job.id, b.job.id);
    assert!(
        a.loaded_here ^ b.loaded_here,
        "exactly one loaded: {a:?} {b:?}"
    );
    assert_eq!(s.scalar("SELECT count(*) FROM {s}.jobs").await, 1);
    assert_eq!(s.scalar("SELECT count(*) FROM {s}.lines").await, 20_000);
    assert_eq!(s.scalar("SELECT count(*) FROM {s}.requests").await, 20_000);
}

#[tokio::test]
async fn a_loader_killed_mid_load_leaves_nothing_and_the_waiting_one_loads() {
    let s = TestSchema::new().await;
    let settings = serde_json::json!({});
    // Loader A: its job row is in, uncommitted, when its backend dies.
    let a = s.raw().await;
    a.batch_execute(&format!(
        "BEGIN; INSERT INTO {}.jobs (identity, settings) VALUES ('\\x6b696c6c6564', '{{}}')",
        s.name
    ))
    .await
    .unwrap();
    let a_pid: i32 = a
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // Loader B waits on A's uncommitted identity.
    let queue = s.queue.clone();
    let b = tokio::spawn(async move {
        let settings = serde_json::json!({});
        queue.load_job(spec(b"killed", &settings), lines(500)).await
    });
    let watcher = s.raw().await;
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                &[&a_pid],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    watcher
        .execute("SELECT pg_terminate_backend($1)", &[&a_pid])
        .await
        .unwrap();
    let b = b.await.unwrap().unwrap();
    assert!(b.loaded_here, "A's half-load vanished; B loaded");
    assert_eq!(b.job.total, 500);
    assert_eq!(s.scalar("SELECT count(*) FROM {s}.jobs").await, 1);
    drop(settings);
}

#[tokio::test]
async fn a_load_that_fails_half_way_commits_nothing_and_can_be_redone() {
    let s = TestSchema::new().await;
    let settings = serde_json::json!({});
    let broken = lines(1_000).map(|mut l| {
        if l.seq == 700 {
            l.worst_cost = f64::NAN;
        }
        l
    });
    let e = s
        .queue
        .load_job(spec(b"half", &settings), broken)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("line seq 700: worst_cost"), "{e}");
    assert_eq!(s.queue.find_job(b"half").await.unwrap(), None);
    assert_eq!(s.scalar("SELECT count(*) FROM {s}.lines").await, 0);
    let again = s
        .queue
        .load_job(spec(b"half", &settings), lines(1_000))
        .await
        .unwrap();
    assert!(again.loaded_here);
    assert_eq!(s.scalar("SELECT count(*) FROM {s}.requests").await, 1_000);
}

#[tokio::test]
async fn two_lines_with_one_seq_are_bad_input() {
    let s = TestSchema::new().await;
    let settings = serde_json::json!({});
    let dup = lines(10).chain(std::iter::once(NewLine {
        seq: 3,
        custom_id: "again".to_owned(),
        body: b"{}".to_vec(),
        worst_cost: 0.0,
        est_tokens: 1,
    }));
    let e = s
        .queue
        .load_job(spec(b"dup", &settings), dup)
        .await
        .unwrap_err();
    assert!(matches!(e, QueueError::BadInput { .. }), "{e:?}");
    assert!(e.to_string().contains("seq"), "{e}");
}

#[tokio::test]
async fn a_line_source_that_fails_half_way_rolls_the_load_back_with_its_error() {
    let s = TestSchema::new().await;
    let settings = serde_json::json!({});
    let failing = lines(500).map(|l| {
        if l.seq == 300 {
            Err(QueueError::BadInput {
                what: "the input changed while it was loaded".to_owned(),
            })
        } else {
            Ok(l)
        }
    });
    let e = s
        .queue
        .try_load_job(spec(b"reread", &settings), failing)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("input changed"), "{e}");
    assert_eq!(s.queue.find_job(b"reread").await.unwrap(), None);
    assert_eq!(s.scalar("SELECT count(*) FROM {s}.lines").await, 0);
}

#[tokio::test]
async fn the_location_names_host_port_and_database_never_the_password() {
    let s = TestSchema::new().await;
    let location = s.queue.location();
    // host:port/database (the test URL's, unless BATCHLING_TEST_PG_URL names another).
    let (addr, database) = location.split_once('/').expect("host:port/database");
    assert!(addr.contains(':') && !database.is_empty(), "{location}");
    assert!(!location.contains('@'), "{location}");
}
