//! The adapter against the machine's PostgreSQL (database `test`), each
//! test in a schema of its own, dropped at the end.

use std::io::Write as _;
use std::process::Command;

use batchling_queue::NewLine;

use super::*;

/// The test database; `BATCHLING_TEST_PG_URL` overrides it.
fn base_url() -> String {
    std::env::var("BATCHLING_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// SQL through psql, on the test database (`{s}`: the schema).
fn psql(schema: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([&base_url(), "-tAq", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(sql.replace("{s}", schema))
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A schema of the test's own; dropped with the guard.
struct Schema {
    name: String,
    dir: tempfile::TempDir,
}

impl Schema {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = COUNTER.fetch_add(1, Relaxed);
        Schema {
            name: format!("bl_cli_{}_{nanos}_{n}", std::process::id()),
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }

    fn url(&self) -> String {
        format!("{}?schema={}", base_url(), self.name)
    }

    fn settings(&self) -> QueueSettings {
        QueueSettings::from_url(&self.url()).expect("a good URL")
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        let mut f = std::fs::File::create(&p).expect("create");
        f.write_all(text.as_bytes()).expect("write");
        p
    }

    async fn open(&self, source: Source) -> Arc<PgJobStore> {
        PgJobStore::open_with(self.settings(), source, LoadSpec::default())
            .await
            .unwrap_or_else(|e| panic!("open: {e}"))
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl Drop for Schema {
    fn drop(&mut self) {
        // The test's runtime is blocked in this Drop, so a transaction its
        // aborted tasks left open (a rescue pass) is never rolled back:
        // end the connections holding locks in the schema, then drop it.
        let terminate = format!(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l
             JOIN pg_class c ON c.oid = l.relation
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = '{}' AND l.pid <> pg_backend_pid()",
            self.name
        );
        let drop = format!(
            "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {} CASCADE",
            self.name
        );
        for sql in [terminate, drop] {
            let _ = Command::new("psql")
                .args([&base_url(), "-tAq", "-c"])
                .arg(sql)
                .output();
        }
    }
}

fn chat(id: &str) -> String {
    format!(
        r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hi {id}"}}]}}}}"#
    )
}

fn committed(line: &ClaimedLine, state: FinalState) -> Committed {
    Committed {
        seq: line.seq,
        token: line.token,
        state,
        line: format!("answer {}\n", line.seq).into_bytes(),
        cost: 0.001,
    }
}

async fn claim_all(store: &PgJobStore, max: usize) -> Vec<ClaimedLine> {
    match store.claim(max).await.expect("claim") {
        Claim::Lines(lines) => lines,
        other => panic!("expected lines, got {other:?}"),
    }
}

async fn wait_flushed(store: &PgJobStore, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..500 {
        seqs.extend(store.flushed());
        if seqs.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seqs.sort_unstable();
    seqs
}

#[tokio::test]
async fn the_same_input_joins_the_same_job_and_blank_lines_keep_their_numbers() {
    let s = Schema::new();
    let text = format!("{}\n\n{}\nnot json\n", chat("a"), chat("b"));
    let input = s.file("in.jsonl", &text);
    let first = s.open(Source::File(input.clone())).await;
    assert!(first.loaded_here());
    assert_eq!(first.total(), 3);
    let second = s.open(Source::File(input)).await;
    assert!(!second.loaded_here());
    assert_eq!(second.job_id(), first.job_id());
    let by_id = s.open(Source::Job(first.job_id())).await;
    assert_eq!(by_id.total(), 3);
    // seq = line number - 1; the body is the whole line; the bad line too.
    let lines = claim_all(&first, 10).await;
    let seqs: Vec<u64> = lines.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, [0, 2, 3]);
    assert_eq!(lines[1].line, chat("b").into_bytes());
    assert_eq!(lines[2].line, b"not json");
    let describe = first.describe();
    assert!(
        describe.contains(&format!("job {}", first.job_id()))
            && describe.contains(&format!("schema {}", s.name))
            && describe.contains("/test"),
        "{describe}"
    );
}

#[tokio::test]
async fn a_file_with_a_duplicate_custom_id_is_refused_naming_both_lines() {
    let s = Schema::new();
    let text = format!("{}\n{}\n{}\n", chat("a"), chat("b"), chat("a"));
    let input = s.file("dup.jsonl", &text);
    let e = PgJobStore::open_with(s.settings(), Source::File(input), LoadSpec::default())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("lines 1 and 3") && msg.contains("dup.jsonl") && msg.contains("\"a\""),
        "{msg}"
    );
}

#[tokio::test]
async fn claimed_answers_are_flushed_and_exported_in_input_order() {
    let s = Schema::new();
    let text: String = (0..5).map(|i| chat(&format!("r{i}")) + "\n").collect();
    let input = s.file("in.jsonl", &text);
    let store = s.open(Source::File(input)).await;
    let lines = claim_all(&store, 10).await;
    assert_eq!(lines.len(), 5);
    assert!(
        lines
            .iter()
            .all(|l| store.may_send(l.token) == MaySend::Send)
    );
    // Committed out of order, one failed.
    let mut records: Vec<Committed> = lines
        .iter()
        .rev()
        .map(|l| committed(l, FinalState::Done))
        .collect();
    records[0].state = FinalState::Failed;
    store.committed(records);
    assert_eq!(wait_flushed(&store, 5).await, [0, 1, 2, 3, 4]);
    assert!(matches!(store.claim(10).await, Ok(Claim::Finished)));

    let (out, err) = (
        s.dir.path().join("out.jsonl"),
        s.dir.path().join("err.jsonl"),
    );
    let exported = store.export(&out, &err, Order::Completion).await.unwrap();
    assert_eq!(
        exported,
        Exported {
            output: 4,
            errors: 1,
            not_done: 0
        }
    );
    let out = std::fs::read_to_string(out).unwrap();
    assert_eq!(out, "answer 0\nanswer 1\nanswer 2\nanswer 3\n");
    assert_eq!(std::fs::read_to_string(err).unwrap(), "answer 4\n");
    assert!(!s.dir.path().join("out.jsonl.batchling-tmp").exists());

    let closed = store.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        closed,
        Closed {
            handed_over: 5,
            late: 0,
            released: 0,
            left_local: 0
        }
    );
}

#[tokio::test]
async fn a_worker_declared_dead_registers_again_and_its_old_claims_are_void() {
    let s = Schema::new();
    let text: String = (0..4).map(|i| chat(&format!("r{i}")) + "\n").collect();
    let store = s.open(Source::File(s.file("in.jsonl", &text))).await;
    let old = claim_all(&store, 2).await;
    let dead = store.worker();
    psql(
        &s.name,
        &format!(
            "UPDATE {{s}}.workers SET state = 'dead' WHERE id = {}",
            dead.0
        ),
    );
    // The next claim learns it, registers again and asks to come back.
    assert!(matches!(store.claim(10).await, Ok(Claim::Wait(_))));
    assert_ne!(store.worker(), dead);
    for l in &old {
        assert_eq!(store.may_send(l.token), MaySend::Void);
    }
    // A rescue gives the dead worker's claims to the next claimer.
    Queue::connect_with(s.settings())
        .await
        .unwrap()
        .rescue()
        .await
        .unwrap();
    let new = claim_all(&store, 10).await;
    assert_eq!(new.len(), 4);
    assert!(new.iter().all(|l| store.may_send(l.token) == MaySend::Send));
    // An answer under an old token is late: paid, never output.
    store.committed(vec![committed(&old[0], FinalState::Done)]);
    assert_eq!(wait_flushed(&store, 1).await, [old[0].seq]);
    // Two claimed, never answered: given back at close.
    let answered: Vec<Committed> = new[..2]
        .iter()
        .map(|l| committed(l, FinalState::Done))
        .collect();
    store.committed(answered);
    wait_flushed(&store, 2).await;
    let closed = store.close(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        closed,
        Closed {
            handed_over: 2,
            late: 1,
            released: 2,
            left_local: 0
        }
    );
    let pending = psql(&s.name, "SELECT count(*) FROM {s}.requests WHERE state = 0");
    assert_eq!(pending, "2");
}

#[tokio::test]
async fn a_budget_too_small_for_the_next_request_is_budget_reached() {
    let s = Schema::new();
    let text: String = (0..3).map(|i| chat(&format!("r{i}")) + "\n").collect();
    let spec = LoadSpec {
        prices: Some(Arc::new(batchling_core::pricing::Catalog::builtin())),
        default_max_output: 1_000_000,
        budget_cap: Some(0.000_001),
    };
    let store = PgJobStore::open_with(s.settings(), Source::File(s.file("b.jsonl", &text)), spec)
        .await
        .unwrap();
    match store.claim(10).await {
        Ok(Claim::BudgetReached { cap, spent }) => {
            assert!(
                (cap - 0.000_001).abs() < 1e-12 && spent == 0.0,
                "{cap} {spent}"
            );
        }
        other => panic!("expected the budget, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_urls_and_refused_ports_say_what_to_fix_without_the_password() {
    let pw = ["hun", "ter2"].concat();
    let e = PgJobStore::open("mysql://u@h/db", Source::Job(JobId(1)), LoadSpec::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("postgres://"), "{e}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("postgres://postgres:{pw}@127.0.0.1:{closed}/test");
    let e = PgJobStore::open(&url, Source::Job(JobId(1)), LoadSpec::default())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{closed}")) && !msg.contains(&pw),
        "{msg}"
    );
    assert!(!format!("{e:?}").contains(&pw));
}

#[tokio::test]
async fn an_unknown_job_id_is_refused_naming_it() {
    let s = Schema::new();
    let e = PgJobStore::open_with(
        s.settings(),
        Source::Job(JobId(424_242)),
        LoadSpec::default(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("424242"), "{e}");
}

#[tokio::test]
async fn a_budget_held_by_requests_in_flight_is_a_wait_not_the_end() {
    let s = Schema::new();
    let text: String = (0..3).map(|i| chat(&format!("r{i}")) + "\n").collect();
    let catalog = Arc::new(batchling_core::pricing::Catalog::builtin());
    let one = {
        let spec = LoadSpec {
            prices: Some(catalog.clone()),
            default_max_output: 1_000,
            budget_cap: None,
        };
        let line = load::new_lines(&s.file("probe.jsonl", &chat("r0")), &spec, [0; 32])
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        line.worst_cost
    };
    assert!(one > 0.0, "gpt-4o-mini is priced");
    // Room for one request's worst case, not two.
    let spec = LoadSpec {
        prices: Some(catalog),
        default_max_output: 1_000,
        budget_cap: Some(one * 1.5),
    };
    let store = PgJobStore::open_with(s.settings(), Source::File(s.file("b.jsonl", &text)), spec)
        .await
        .unwrap();
    let first = claim_all(&store, 10).await;
    assert_eq!(first.len(), 1);
    // The one in flight may settle below its worst case: wait.
    assert!(matches!(store.claim(10).await, Ok(Claim::Wait(_))));
    let mut spent = committed(&first[0], FinalState::Done);
    spent.cost = one;
    store.committed(vec![spent]);
    wait_flushed(&store, 1).await;
    // Nothing in flight, and the next does not fit what is left.
    assert!(matches!(
        store.claim(10).await,
        Ok(Claim::BudgetReached { .. })
    ));
}

#[tokio::test]
async fn a_worker_without_a_valid_lease_claims_and_sends_nothing() {
    let s = Schema::new();
    let mut settings = s.settings();
    // The whole TTL is margin: no heartbeat ever makes the lease usable.
    settings.lease = batchling_queue::LeaseSettings {
        ttl: Duration::from_secs(30),
        margin: Duration::from_secs(30),
    };
    let text = chat("only") + "\n";
    let store = PgJobStore::open_with(
        settings,
        Source::File(s.file("in.jsonl", &text)),
        LoadSpec::default(),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        assert!(matches!(store.claim(10).await, Ok(Claim::Wait(_))));
    }
    assert_eq!(store.may_send(1), MaySend::Wait(LEASE_WAIT));
    let pending = psql(&s.name, "SELECT count(*) FROM {s}.requests WHERE state = 0");
    assert_eq!(pending, "1", "nothing was claimed");
}

#[tokio::test]
async fn answers_the_store_did_not_take_within_the_grace_stay_local_and_the_worker_stays() {
    let s = Schema::new();
    let text = chat("kept") + "\n";
    let store = s.open(Source::File(s.file("in.jsonl", &text))).await;
    let lines = claim_all(&store, 10).await;
    // The store will not take the answer: its job is gone.
    psql(
        &s.name,
        "DELETE FROM {s}.requests; DELETE FROM {s}.lines; DELETE FROM {s}.jobs",
    );
    store.committed(vec![committed(&lines[0], FinalState::Done)]);
    let closed = store.close(Duration::from_millis(300)).await.unwrap();
    assert_eq!(closed.left_local, 1, "{closed:?}");
    assert_eq!(closed.handed_over, 0, "{closed:?}");
    assert!(store.flushed().is_empty(), "the outbox keeps it");
    // Not deregistered: it is left to be declared dead and rescued.
    let state = psql(
        &s.name,
        &format!(
            "SELECT state FROM {{s}}.workers WHERE id = {}",
            store.worker().0
        ),
    );
    assert_eq!(state, "alive");
}

#[test]
fn lines_are_trimmed_as_the_engine_reads_them_and_a_changed_file_fails_the_load() {
    let s = Schema::new();
    let text = format!("\u{feff}{}\r\n  \r\n{}\r\n", chat("a"), chat("b"));
    let path = s.file("crlf.jsonl", &text);
    let identity = load::check_and_hash(&path).unwrap();
    let lines: Vec<NewLine> = load::new_lines(&path, &LoadSpec::default(), identity)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let got: Vec<(u64, &str, Vec<u8>)> = lines
        .iter()
        .map(|l| (l.seq, l.custom_id.as_str(), l.body.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (0, "a", chat("a").into_bytes()),
            (2, "b", chat("b").into_bytes())
        ]
    );
    // Read against another identity (the file changed in between): the
    // last item is an error, so the load rolls back.
    let last = load::new_lines(&path, &LoadSpec::default(), [0; 32])
        .unwrap()
        .last()
        .unwrap();
    let e = last.unwrap_err();
    assert!(e.to_string().contains("changed"), "{e}");
}
