//! `run --store postgres://...`: the engine's [`JobStore`] over the
//! PostgreSQL job queue (`batchling-queue`), so workers on many machines
//! share one job's requests and answer each once.
//!
//! What runs beside the engine, on its runtime:
//! - the lease: registered at open, renewed every TTL/3; every TTL/2 this
//!   worker also rescues dead workers' requests (any worker may). A worker
//!   the store declared dead registers again, and every claim it held
//!   before becomes void (its tokens are below the *epoch floor*: tokens
//!   come from one sequence, so all older claims are below the next one);
//! - the flusher: answers the engine committed to its local journal go to
//!   the store in batches, retried until taken; what was taken is handed
//!   back through [`JobStore::flushed`], for the journal to forget.

mod load;
mod outbox;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use batchling_core::Order;
use batchling_engine::job_store::{
    Claim, ClaimedLine, Closed, Committed, Exported, Fut, JobStore, MaySend, Unavailable,
};
use batchling_queue::{
    ClaimToken, Completion, JobId, JobInfo, JobSpec, Lease, Outcome, Queue, QueueError,
    QueueSettings, WorkerId,
};
use batchling_store::FinalState;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub(crate) use load::{LoadError, LoadSpec};
pub(crate) use outbox::{Outbox, take_slot, without_password};

/// How long a worker whose lease lapsed waits before asking again.
const LEASE_WAIT: Duration = Duration::from_millis(50);
/// The first wait when nothing is due; it doubles while nothing changes.
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// The longest wait when nothing is due.
const MAX_IDLE_WAIT: Duration = Duration::from_secs(1);
/// Answers per completion batch.
const FLUSH_BATCH: usize = 1_000;
/// The longest pause between two tries of a batch the store did not take.
const MAX_FLUSH_BACKOFF: Duration = Duration::from_secs(1);
/// The longest host name registered.
const MAX_HOST_BYTES: usize = 255;

/// Where a worker's job comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// Load this input (or join its job, when the same input is loaded).
    File(PathBuf),
    /// Join the job with this id (a machine without the input).
    Job(JobId),
}

/// Opening a job on a store went wrong.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// The store said no (its message says what to fix).
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The input cannot be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
}

/// A job on a PostgreSQL store, for one worker.
#[derive(Debug)]
pub(crate) struct PgJobStore {
    shared: Arc<Shared>,
    job: JobInfo,
    loaded_here: bool,
    outbox: mpsc::UnboundedSender<Committed>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the store's calls and its background tasks share.
#[derive(Debug)]
struct Shared {
    queue: Queue,
    job: JobId,
    host: String,
    lease: Mutex<LeaseState>,
    /// Committed answers not yet taken by the store.
    outstanding: AtomicU64,
    /// Seqs taken, for [`JobStore::flushed`].
    taken: Mutex<Vec<u64>>,
    handed_over: AtomicU64,
    late: AtomicU64,
    /// The claim's idle wait, as it grows while nothing changes.
    idle: Mutex<Idle>,
    /// The largest token this worker ever received, under any worker id.
    max_token: AtomicI64,
    /// Held while registering again, so the heartbeat and a claim that
    /// both learn of the death register one new worker, not two.
    reregistering: tokio::sync::Mutex<()>,
    /// The engine's latest lanes report, sent with the next heartbeat.
    report: Mutex<Option<String>>,
}

#[derive(Debug)]
struct LeaseState {
    lease: Lease,
    /// Claims with tokens below this were made by a worker id the store
    /// declared dead: never sent.
    floor: i64,
    /// Tokens claimed and not yet answered (for `release_unknown`).
    held: HashSet<i64>,
}

#[derive(Debug, Default)]
struct Idle {
    wait: Duration,
    last: (u64, u64, u64),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these leaves consistent data (each
    // critical section is one assignment or set operation).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PgJobStore {
    /// Connect to `url`, then load the input or join the job, register
    /// this process as a worker and start the lease and the flusher.
    pub(crate) async fn open(
        url: &str,
        source: Source,
        spec: LoadSpec,
    ) -> Result<Arc<PgJobStore>, OpenError> {
        Self::open_with(QueueSettings::from_url(url)?, source, spec).await
    }

    /// [`PgJobStore::open`] with settings of the caller's (tests: a short
    /// lease).
    pub(crate) async fn open_with(
        settings: QueueSettings,
        source: Source,
        spec: LoadSpec,
    ) -> Result<Arc<PgJobStore>, OpenError> {
        let queue = Queue::connect_with(settings).await?;
        let (job, loaded_here) = match source {
            Source::Job(id) => (queue.join_job(id).await?, false),
            Source::File(path) => load_or_join(&queue, &path, &spec).await?,
        };
        let host = host_name();
        let lease = queue.register(&host, std::process::id()).await?;
        let shared = Arc::new(Shared {
            queue,
            job: job.id,
            host,
            lease: Mutex::new(LeaseState {
                lease,
                floor: 0,
                held: HashSet::new(),
            }),
            outstanding: AtomicU64::new(0),
            taken: Mutex::new(Vec::new()),
            handed_over: AtomicU64::new(0),
            late: AtomicU64::new(0),
            idle: Mutex::new(Idle::default()),
            max_token: AtomicI64::new(0),
            reregistering: tokio::sync::Mutex::new(()),
            report: Mutex::new(None),
        });
        let (outbox, rx) = mpsc::unbounded_channel();
        let tasks = vec![
            tokio::spawn(keep_lease(shared.clone())),
            tokio::spawn(flush(shared.clone(), rx)),
        ];
        Ok(Arc::new(PgJobStore {
            shared,
            job,
            loaded_here,
            outbox,
            tasks,
        }))
    }

    /// The job's id.
    pub(crate) fn job_id(&self) -> JobId {
        self.job.id
    }

    /// The whole job's counts and money, as the store has them now.
    pub(crate) async fn job_status(&self) -> Result<batchling_queue::JobStatus, QueueError> {
        self.shared.queue.status(self.job.id).await
    }

    /// True when this process loaded the job (false: it joined it).
    pub(crate) fn loaded_here(&self) -> bool {
        self.loaded_here
    }

    /// The worker this process is now.
    #[cfg(test)]
    fn worker(&self) -> WorkerId {
        lock(&self.shared.lease).lease.worker()
    }

    async fn claim_lines(&self, max: usize) -> Result<Claim, Unavailable> {
        let s = &*self.shared;
        let lease = lock(&s.lease).lease.clone();
        if !lease.may_send() {
            // Claim nothing that could not be sent: renew first.
            return s.renew_now(lease).await;
        }
        match s.queue.claim(s.job, &lease, max).await {
            Ok(rows) if rows.is_empty() => s.nothing_due().await,
            Ok(rows) => {
                *lock(&s.idle) = Idle::default();
                let mut l = lock(&s.lease);
                if l.lease.worker() != lease.worker() {
                    // Declared dead and registered again while this claim
                    // was answered: its rows are the rescuers', never ours.
                    let top = rows.iter().map(|r| r.token.0).max().unwrap_or(0);
                    s.max_token.fetch_max(top, Relaxed);
                    l.floor = l.floor.max(top.saturating_add(1));
                    return Ok(Claim::Wait(Duration::ZERO));
                }
                let lines = rows
                    .into_iter()
                    .map(|r| {
                        l.held.insert(r.token.0);
                        s.max_token.fetch_max(r.token.0, Relaxed);
                        ClaimedLine {
                            seq: r.seq,
                            token: r.token.0,
                            line: r.body,
                        }
                    })
                    .collect();
                Ok(Claim::Lines(lines))
            }
            Err(QueueError::WorkerDead { worker }) => {
                s.register_again(worker).await?;
                Ok(Claim::Wait(Duration::ZERO))
            }
            Err(e) => {
                s.release_unknown(&lease).await;
                match e {
                    // Requests in flight (any worker's) may settle below
                    // their worst case and make room: not the end yet.
                    QueueError::BudgetReached { reserved, .. } if reserved > 0.0 => {
                        Ok(Claim::Wait(IDLE_WAIT))
                    }
                    QueueError::BudgetReached { cap, spent, .. } => {
                        Ok(Claim::BudgetReached { cap, spent })
                    }
                    e => Err(s.unavailable(&e)),
                }
            }
        }
    }

    async fn close_job(&self, grace: Duration) -> Result<Closed, Unavailable> {
        let s = &*self.shared;
        let deadline = tokio::time::Instant::now() + grace;
        while s.outstanding.load(Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left_local = s.outstanding.load(Relaxed);
        let mut closed = Closed {
            handed_over: s.handed_over.load(Relaxed),
            late: s.late.load(Relaxed),
            released: 0,
            left_local,
        };
        if left_local > 0 {
            // Deregistering would give back claims whose answers are only
            // in the local journal as never sent: they would be paid twice.
            // Stopping the heartbeats lets the worker be declared dead; the
            // same command hands the answers over (they are then late).
            self.stop_tasks();
            return Ok(closed);
        }
        let lease = lock(&s.lease).lease.clone();
        closed.released = s
            .queue
            .deregister(&lease)
            .await
            .map_err(|e| s.unavailable(&e))?;
        self.stop_tasks();
        Ok(closed)
    }

    fn stop_tasks(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for PgJobStore {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

impl Shared {
    /// An empty claim: the job is finished, or others hold the rest (or
    /// retries are not due): wait longer while nothing changes.
    async fn nothing_due(&self) -> Result<Claim, Unavailable> {
        let st = self
            .queue
            .status(self.job)
            .await
            .map_err(|e| self.unavailable(&e))?;
        if st.pending == 0 && st.running == 0 {
            return Ok(Claim::Finished);
        }
        let now = (st.pending, st.running, st.done + st.failed);
        let mut idle = lock(&self.idle);
        idle.wait = if idle.last == now && !idle.wait.is_zero() {
            (idle.wait * 2).min(MAX_IDLE_WAIT)
        } else {
            IDLE_WAIT
        };
        idle.last = now;
        Ok(Claim::Wait(idle.wait))
    }

    /// The store declared worker `dead` (this process, unless it has
    /// registered again since): a new worker id, and every claim made so
    /// far void.
    async fn register_again(&self, dead: WorkerId) -> Result<(), Unavailable> {
        let _one = self.reregistering.lock().await;
        if lock(&self.lease).lease.worker() != dead {
            return Ok(());
        }
        let lease = self
            .queue
            .register(&self.host, std::process::id())
            .await
            .map_err(|e| self.unavailable(&e))?;
        let mut l = lock(&self.lease);
        l.lease = lease;
        l.floor = l.floor.max(self.max_token.load(Relaxed).saturating_add(1));
        l.held.clear();
        tracing::warn!(
            worker = %l.lease.worker(),
            "the job store declared this worker dead; registered again, claims held before are left to their new holders"
        );
        Ok(())
    }

    /// The lease lapsed (heartbeats did not get through): one heartbeat
    /// now; a store that does not take it is unavailable (the engine
    /// counts that against `--give-up-after`).
    async fn renew_now(&self, mut lease: Lease) -> Result<Claim, Unavailable> {
        match self.queue.heartbeat(&mut lease).await {
            Ok(()) => {
                let mut l = lock(&self.lease);
                if l.lease.worker() == lease.worker() {
                    l.lease = lease;
                }
                Ok(Claim::Wait(Duration::ZERO))
            }
            Err(QueueError::WorkerDead { worker }) => {
                self.register_again(worker).await?;
                Ok(Claim::Wait(Duration::ZERO))
            }
            Err(e) => Err(self.unavailable(&e)),
        }
    }

    /// After a claim error: claims that committed without their reply go
    /// back (best effort: a rescue gets them otherwise).
    async fn release_unknown(&self, lease: &Lease) {
        let known: Vec<ClaimToken> = lock(&self.lease)
            .held
            .iter()
            .map(|t| ClaimToken(*t))
            .collect();
        let _ = self.queue.release_unknown(lease.worker(), &known).await;
    }

    fn unavailable(&self, e: &QueueError) -> Unavailable {
        Unavailable(format!("the job store at {}: {e}", self.queue.location()))
    }
}

/// Renew the lease every TTL/3 and rescue dead workers every TTL/2, but
/// only once this worker has reached the store for a whole TTL: a worker
/// that was cut off (or has just started) would otherwise declare dead
/// others that were cut off as well, or a restarted worker's own earlier
/// run before its journaled answers are handed over, and each would be
/// paid again.
async fn keep_lease(s: Arc<Shared>) {
    let ttl = s.queue.lease_settings().ttl;
    let mut steady_since = Some(tokio::time::Instant::now());
    let mut beat = tokio::time::interval(ttl / 3);
    let mut rescue = tokio::time::interval(ttl / 2);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    rescue.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = beat.tick() => {
                let mut lease = lock(&s.lease).lease.clone();
                let report = lock(&s.report).clone();
                match s.queue.heartbeat_with(&mut lease, report.as_deref()).await {
                    Ok(()) => {
                        steady_since.get_or_insert_with(tokio::time::Instant::now);
                        let mut l = lock(&s.lease);
                        // Unless it registered again meanwhile.
                        if l.lease.worker() == lease.worker() {
                            l.lease = lease;
                        }
                    }
                    Err(QueueError::WorkerDead { worker }) => {
                        steady_since = None;
                        let _ = s.register_again(worker).await;
                    }
                    // The lease runs out by itself: sends stop until a
                    // heartbeat gets through.
                    Err(e) => {
                        steady_since = None;
                        tracing::debug!("heartbeat: {e}");
                    }
                }
            }
            _ = rescue.tick(), if steady_since.is_some_and(|t| t.elapsed() >= ttl) => {
                if let Err(e) = s.queue.rescue().await {
                    tracing::debug!("rescue: {e}");
                }
            }
        }
    }
}

/// Hand committed answers to the store in batches, each retried until it
/// is taken.
async fn flush(s: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Committed>) {
    let mut carry: Vec<Committed> = Vec::new();
    loop {
        if carry.is_empty() {
            match rx.recv().await {
                Some(c) => carry.push(c),
                None => return,
            }
        }
        while carry.len() < FLUSH_BATCH
            && let Ok(c) = rx.try_recv()
        {
            carry.push(c);
        }
        let (batch, rest) = one_batch(std::mem::take(&mut carry));
        carry = rest;
        complete(&s, &batch).await;
    }
}

/// Up to [`FLUSH_BATCH`] answers with distinct seqs (the store refuses a
/// seq twice in one batch); the rest waits for the next.
fn one_batch(all: Vec<Committed>) -> (Vec<Completion>, Vec<Committed>) {
    let mut seen = HashSet::new();
    let mut batch = Vec::new();
    let mut rest = Vec::new();
    for c in all {
        if batch.len() < FLUSH_BATCH && seen.insert(c.seq) {
            batch.push(completion(c));
        } else {
            rest.push(c);
        }
    }
    (batch, rest)
}

fn completion(c: Committed) -> Completion {
    let outcome = match c.state {
        FinalState::Done => Outcome::Done { line: c.line },
        FinalState::Failed | FinalState::Invalid => Outcome::Failed { line: c.line },
    };
    Completion {
        seq: c.seq,
        token: ClaimToken(c.token),
        // The store refuses an amount it cannot keep; an answer must not
        // be stuck for its price.
        cost: if c.cost.is_finite() && c.cost >= 0.0 {
            c.cost
        } else {
            0.0
        },
        outcome,
    }
}

/// One batch, until the store takes it (backing off, capped at
/// [`MAX_FLUSH_BACKOFF`]).
async fn complete(s: &Shared, batch: &[Completion]) {
    let mut backoff = Duration::from_millis(50);
    let report = loop {
        // Any ledger of the job keeps the sum right; this worker's own is
        // the one no other worker writes.
        let worker = lock(&s.lease).lease.worker();
        match s.queue.complete(s.job, worker, batch).await {
            Ok(r) => break r,
            Err(e) => {
                tracing::debug!("handing answers to the job store: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_FLUSH_BACKOFF);
            }
        }
    };
    s.handed_over
        .fetch_add(report.accepted + report.replayed, Relaxed);
    s.late.fetch_add(report.late.len() as u64, Relaxed);
    {
        let mut l = lock(&s.lease);
        for c in batch {
            l.held.remove(&c.token.0);
        }
    }
    lock(&s.taken).extend(batch.iter().map(|c| c.seq));
    s.outstanding.fetch_sub(batch.len() as u64, Relaxed);
}

/// Load the file's job, or join it when the same input is loaded.
async fn load_or_join(
    queue: &Queue,
    path: &Path,
    spec: &LoadSpec,
) -> Result<(JobInfo, bool), OpenError> {
    let identity = load::check_and_hash(path)?;
    if let Some(job) = queue.find_job(&identity).await? {
        return Ok((job, false));
    }
    let settings = serde_json::json!({
        "input": path.file_name().map(|n| n.to_string_lossy().into_owned()),
        "default_max_tokens": spec.default_max_output,
    });
    let job_spec = JobSpec {
        identity: &identity,
        settings: &settings,
        budget_cap: spec.budget_cap,
    };
    let lines = load::new_lines(path, spec, identity)?;
    let out = queue.try_load_job(job_spec, lines).await?;
    Ok((out.job, out.loaded_here))
}

/// This machine's name, for `status`: `$HOSTNAME`, else /etc/hostname,
/// bounded.
fn host_name() -> String {
    use std::io::Read as _;
    let from_env = std::env::var("HOSTNAME").ok();
    let from_file = || {
        let mut s = String::new();
        let f = std::fs::File::open("/etc/hostname").ok()?;
        f.take(MAX_HOST_BYTES as u64).read_to_string(&mut s).ok()?;
        Some(s)
    };
    let name = from_env.or_else(from_file).unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_HOST_BYTES)
        .collect();
    if name.is_empty() {
        "unknown".to_owned()
    } else {
        name
    }
}

/// Write the output files through temporary files beside them, renamed
/// into place (as the journal's export does), in seq order.
pub(crate) async fn export_files(
    queue: &Queue,
    job: JobId,
    output: &Path,
    errors: &Path,
) -> Result<Exported, QueueError> {
    let (tmp_out, tmp_err) = (
        batchling_store::temp_path(output),
        batchling_store::temp_path(errors),
    );
    let written = async {
        let create = |p: PathBuf| async move {
            tokio::fs::File::create(&p)
                .await
                .map(tokio::io::BufWriter::new)
                .map_err(|source| QueueError::Write { source })
        };
        let mut out = create(tmp_out.clone()).await?;
        let mut err = create(tmp_err.clone()).await?;
        let counts = queue.export(job, &mut out, &mut err).await?;
        for f in [out, err] {
            let f = f.into_inner();
            f.sync_all()
                .await
                .map_err(|source| QueueError::Write { source })?;
            drop(f);
        }
        tokio::fs::rename(&tmp_out, output)
            .await
            .map_err(|source| QueueError::Write { source })?;
        tokio::fs::rename(&tmp_err, errors)
            .await
            .map_err(|source| QueueError::Write { source })?;
        Ok::<_, QueueError>(counts)
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&tmp_out).await;
        let _ = tokio::fs::remove_file(&tmp_err).await;
    }
    let c = written?;
    Ok(Exported {
        output: c.output,
        errors: c.errors,
        not_done: c.not_done,
    })
}

impl JobStore for PgJobStore {
    fn describe(&self) -> String {
        let q = &self.shared.queue;
        format!(
            "job {} in {} schema {}",
            self.job.id,
            q.location(),
            q.schema()
        )
    }

    /// The schema, the job's id and the identity it was loaded under: not
    /// the address, which another worker (or a restart) may spell otherwise.
    fn journal_key(&self) -> String {
        format!(
            "job {} schema {} identity {}",
            self.job.id,
            self.shared.queue.schema(),
            batchling_core::hex::hex(&self.job.identity)
        )
    }

    fn total(&self) -> u64 {
        self.job.total
    }

    fn report(&self, lanes_json: &str) {
        *lock(&self.shared.report) = Some(lanes_json.to_owned());
    }

    fn claim(&self, max: usize) -> Fut<'_, Result<Claim, Unavailable>> {
        Box::pin(self.claim_lines(max))
    }

    fn may_send(&self, token: i64) -> MaySend {
        let l = lock(&self.shared.lease);
        if token < l.floor {
            MaySend::Void
        } else if l.lease.may_send() {
            MaySend::Send
        } else {
            MaySend::Wait(LEASE_WAIT)
        }
    }

    fn committed(&self, records: Vec<Committed>) {
        let n = records.len() as u64;
        self.shared.outstanding.fetch_add(n, Relaxed);
        for r in records {
            if self.outbox.send(r).is_err() {
                // The flusher is gone (the store is closing): these stay
                // in the local journal for the next run.
                return;
            }
        }
    }

    fn flushed(&self) -> Vec<u64> {
        std::mem::take(&mut *lock(&self.shared.taken))
    }

    fn close(&self, grace: Duration) -> Fut<'_, Result<Closed, Unavailable>> {
        Box::pin(self.close_job(grace))
    }

    /// Both orders write seq order (the input's): the store keeps no
    /// completion time, and `--order completion` is only a convenience.
    fn export<'a>(
        &'a self,
        output: &'a Path,
        errors: &'a Path,
        _order: Order,
    ) -> Fut<'a, Result<Exported, Unavailable>> {
        Box::pin(async move {
            export_files(&self.shared.queue, self.job.id, output, errors)
                .await
                .map_err(|e| self.shared.unavailable(&e))
        })
    }
}
