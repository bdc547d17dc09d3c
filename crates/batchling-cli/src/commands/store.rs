//! `status` and `export` of a job shared through a store (`--store URL
//! --job ID`), and deleting one (`status --delete`).

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use batchling_engine::report::LaneSummary;
use batchling_queue::{JobStatus, Queue, WorkerState, WorkerStatus};

use crate::job_store::{export_files, without_password};
use crate::settings::{ExportSettings, StoreJob};

async fn connect(st: &StoreJob) -> Result<Queue> {
    Queue::connect(&st.url)
        .await
        .with_context(|| format!("--store {}", without_password(&st.url)))
}

/// Counts, money and workers of the job; with `delete` (its `force`), the
/// job's rows are deleted after.
pub(crate) async fn status(st: &StoreJob, json: bool, delete: Option<bool>) -> Result<ExitCode> {
    let queue = connect(st).await?;
    let status = queue.status(st.job).await?;
    if json {
        out!(
            "{}",
            serde_json::to_string_pretty(&status_json(&queue, &status))?
        )?;
    } else {
        print_status(&queue, &status)?;
    }
    if let Some(force) = delete {
        if status.running > 0 && !force {
            bail!(
                "job {} has {} request(s) running; stop its workers (or wait for them), or add --force to delete it anyway (requests of live workers are never deleted)",
                st.job,
                status.running
            );
        }
        if !queue.delete_job(st.job).await? {
            bail!("job {} is not in the store (deleted already?)", st.job);
        }
        eprintln!(
            "deleted job {} ({} requests, answers included) from {} schema {}",
            st.job,
            status.total,
            queue.location(),
            queue.schema()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn state_name(s: WorkerState) -> &'static str {
    match s {
        WorkerState::Alive => "alive",
        WorkerState::Dead => "dead",
        WorkerState::Gone => "gone",
    }
}

/// A worker's lanes as it last reported them (none for a report this
/// build cannot read).
fn lanes_of(w: &WorkerStatus) -> Vec<LaneSummary> {
    (w.report.as_deref())
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default()
}

/// The job's lanes over its live workers: the rates and 429s added up,
/// the limit and the longest hold (a pause) as any of them has it.
fn job_lanes(s: &JobStatus) -> Vec<LaneSummary> {
    let mut by_name: std::collections::BTreeMap<Option<String>, LaneSummary> = Default::default();
    let live = s.workers.iter().filter(|w| w.state == WorkerState::Alive);
    for lane in live.flat_map(lanes_of) {
        match by_name.entry(lane.model.clone()) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(lane);
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                let sum = o.get_mut();
                sum.succeeded += lane.succeeded;
                sum.achieved_rpm += lane.achieved_rpm;
                sum.achieved_tpm += lane.achieved_tpm;
                sum.rate_limited += lane.rate_limited;
                sum.rpm_limit = sum.rpm_limit.max(lane.rpm_limit);
                sum.tpm_limit = sum.tpm_limit.max(lane.tpm_limit);
                sum.held_s = match (sum.held_s, lane.held_s) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            }
        }
    }
    by_name.into_values().collect()
}

fn status_json(queue: &Queue, s: &JobStatus) -> serde_json::Value {
    let workers: Vec<_> = (s.workers.iter())
        .map(|w| {
            serde_json::json!({
                "id": w.id.0,
                "host": w.host,
                "pid": w.pid,
                "state": state_name(w.state),
                "seconds_since_heartbeat": w.since_heartbeat.as_secs_f64(),
                "held": w.held,
                "lanes": lanes_of(w),
            })
        })
        .collect();
    serde_json::json!({
        "job": s.job.0,
        "store": queue.location(),
        "schema": queue.schema(),
        "total": s.total,
        "pending": s.pending,
        "not_due": s.not_due,
        "running": s.running,
        "done": s.done,
        "failed": s.failed,
        "late": s.late,
        "spent_usd": s.spent,
        "reserved_usd": s.reserved,
        "budget_cap_usd": s.budget_cap,
        "lanes": job_lanes(s),
        "workers": workers,
    })
}

fn print_status(queue: &Queue, s: &JobStatus) -> std::io::Result<()> {
    out!(
        "job       {} in {} schema {}",
        s.job,
        queue.location(),
        queue.schema()
    )?;
    out!(
        "requests  {} : {} done, {} failed, {} pending ({} not due yet), {} running",
        s.total,
        s.done,
        s.failed,
        s.pending,
        s.not_due,
        s.running
    )?;
    if s.late > 0 {
        out!(
            "late      {} answer(s) paid for but not output (their worker had been declared dead)",
            s.late
        )?;
    }
    let cap = s
        .budget_cap
        .map_or_else(|| "no cap".to_owned(), |c| format!("cap ${c:.4}"));
    out!(
        "money     spent ${:.4}, reserved ${:.4}, {cap}",
        s.spent,
        s.reserved
    )?;
    print_lanes(&job_lanes(s))?;
    if s.workers.is_empty() {
        return out!("workers   none");
    }
    out!("workers   id      state  heartbeat  held  host (pid)")?;
    for w in &s.workers {
        out!(
            "          {:<7} {:<6} {:>7.0}s  {:>4}  {} ({})",
            w.id.0,
            state_name(w.state),
            w.since_heartbeat.as_secs_f64(),
            w.held,
            w.host,
            w.pid
        )?;
    }
    Ok(())
}

/// The job's lanes, as its live workers last reported them (every 10 s).
fn print_lanes(lanes: &[LaneSummary]) -> std::io::Result<()> {
    for l in lanes {
        let name = l.model.as_deref().unwrap_or("(no model)");
        let limit = l
            .rpm_limit
            .map_or_else(|| "no limit".to_owned(), |r| format!("limit {r} rpm"));
        let held = l
            .held_s
            .map_or_else(String::new, |h| format!(", held {h:.1}s (a 429's pause)"));
        out!(
            "lane      {name}: {:.0} requests/min over the live workers ({limit}), {} 429s{held}",
            l.achieved_rpm,
            l.rate_limited
        )?;
    }
    Ok(())
}

/// The job's output and error files, in input order.
pub(crate) async fn export(st: &StoreJob, s: &ExportSettings) -> Result<ExitCode> {
    batchling_store::check_destination(&s.output)?;
    batchling_store::check_destination(&s.errors)?;
    let queue = connect(st).await?;
    let e = export_files(&queue, st.job, &s.output, &s.errors).await?;
    eprintln!(
        "wrote {} lines to {} and {} lines to {}",
        e.output,
        s.output.display(),
        e.errors,
        s.errors.display()
    );
    if e.not_done > 0 {
        eprintln!(
            "note: {} request(s) of job {} have no answer yet (workers still running, or a stopped job)",
            e.not_done, st.job
        );
    }
    Ok(ExitCode::SUCCESS)
}
