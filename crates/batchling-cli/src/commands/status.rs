//! `batchling status STATE`: what a journal says about its job.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use batchling_engine::report::LaneSummary;
use batchling_engine::route::{KeyState, RouteHealth};
use batchling_store::{JobStatus, Journal, Part, RouteReport};

use crate::settings::StatusSettings;

pub(crate) fn status(s: &StatusSettings) -> Result<ExitCode> {
    let journal = Journal::open_read_only(&s.state)?;
    let status = journal.status()?;
    let parts = journal.parts()?;
    let lanes = lanes(&status);
    let routes = journal.route_report()?;
    let health = route_health(&status);
    if s.json {
        let mut v = serde_json::to_value(&status)?;
        if !parts.is_empty() {
            v["parts"] = serde_json::to_value(&parts)?;
        }
        if let Some(lanes) = &lanes {
            v["lanes"] = serde_json::to_value(lanes)?;
        }
        if let Some(routes) = &routes {
            v["routes"] = serde_json::to_value(routes)?;
            if let Some(h) = &health {
                v["routes"]["health"] = serde_json::to_value(h)?;
            }
        }
        out!("{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        print_summary(&s.state, &status)?;
        print_lanes(lanes.as_deref())?;
        if let Some(routes) = &routes {
            print_routes(routes)?;
            if let Some(h) = &health {
                print_health(h)?;
            }
        }
        print_parts(&parts)?;
        print_last_errors(&status)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The job as a whole: where, how many, what it cost, whether it is done.
fn print_summary(state: &Path, s: &JobStatus) -> std::io::Result<()> {
    let total = s
        .meta
        .total
        .map_or("unknown (input not fully read yet)".into(), |t| {
            t.to_string()
        });
    out!("journal   {}", state.display())?;
    out!("input     {}", s.meta.input.as_deref().unwrap_or("?"))?;
    out!(
        "server    {}",
        match s.meta.server.as_deref() {
            Some("mock") => "the built-in fake provider",
            Some(url) => url,
            None => "not recorded (an older batchling wrote this journal)",
        }
    )?;
    out!("requests  {total}")?;
    out!(
        "outcomes  {} done, {} failed, {} invalid, {}",
        s.counts.done,
        s.counts.failed,
        s.counts.invalid,
        s.pending
            .map_or("pending unknown".into(), |p| format!("{p} not done"))
    )?;
    out!("attempts  {} (all runs)", s.attempts)?;
    out!(
        "tokens    {} input ({} cached), {} output",
        s.input_tokens,
        s.cached_input_tokens,
        s.output_tokens
    )?;
    out!(
        "cost      ${:.4} (from usage at the prices known when each answer came)",
        s.cost_usd
    )?;
    out!(
        "state     {}",
        if s.finished {
            "finished"
        } else {
            "resumable: run the same command again to continue"
        }
    )
}

/// The last run's lanes, as its end recorded them (`None` in journals of
/// older batchlings, of runs that never ended, or unreadable).
fn lanes(s: &JobStatus) -> Option<Vec<LaneSummary>> {
    serde_json::from_str(s.meta.lanes.as_deref()?).ok()
}

/// The last run's routes' health, as it recorded it last (`None` without
/// a routes config, in older journals, or unreadable).
fn route_health(s: &JobStatus) -> Option<RouteHealth> {
    serde_json::from_str(s.meta.route_health.as_deref()?).ok()
}

/// What is out, as the last run left it: open circuits, models not found,
/// dead keys and keys never tried (nothing when all is well).
fn print_health(h: &RouteHealth) -> std::io::Result<()> {
    for t in &h.targets {
        let mut what = Vec::new();
        if t.circuit_open {
            what.push("circuit open".to_owned());
        }
        if t.opened > 0 {
            what.push(format!("opened {} time(s)", t.opened));
        }
        if t.gone {
            what.push("model not found: out for the run".to_owned());
        }
        if !what.is_empty() {
            out!("  health {:<28} {}", t.target, what.join(", "))?;
        }
    }
    for k in &h.keys {
        let what = match k.state {
            KeyState::Live => continue,
            KeyState::Untried => "not tried",
            KeyState::Dead => "dead (refused): out for the run",
        };
        out!(
            "  health {:<28} {what}",
            format!("{}/{}", k.group, k.key_id)
        )?;
    }
    Ok(())
}

/// The last run's lanes, one line each.
fn print_lanes(lanes: Option<&[LaneSummary]>) -> std::io::Result<()> {
    let Some(lanes) = lanes.filter(|l| !l.is_empty()) else {
        return Ok(());
    };
    out!(
        "lanes     {} in the last run (each model's or family's limits)",
        lanes.len()
    )?;
    for l in lanes {
        out!("  {}", crate::progress::lane_line(l))?;
    }
    Ok(())
}

/// What went over routes: per target, per key (its id, never the key), and
/// the attempts that did not answer by class.
fn print_routes(r: &RouteReport) -> std::io::Result<()> {
    out!("routes    {} requests over routes", r.requests)?;
    for t in &r.targets {
        // A submit --config journal: how many its Batch API answered.
        let in_batch = if t.answered_in_batch > 0 {
            format!(" ({} in a batch)", t.answered_in_batch)
        } else {
            String::new()
        };
        out!(
            "  target {:<28} {} answered{in_batch}, {} failed, {} attempts ({} billed), ${:.4}",
            t.target,
            t.answered,
            t.failed,
            t.attempts,
            t.billed,
            t.cost_usd
        )?;
    }
    for k in &r.keys {
        out!(
            "  key    {:<28} {} attempts, {} ok, {} refused (401/403), {} rate limited (429), ${:.4}",
            format!("{}/{}", k.group, k.key_id),
            k.attempts,
            k.ok,
            k.refused,
            k.rate_limited,
            k.cost_usd
        )?;
    }
    if !r.error_classes.is_empty() {
        let classes: Vec<String> = r
            .error_classes
            .iter()
            .map(|(class, n)| format!("{n} {class}"))
            .collect();
        out!("  not answered: {}", classes.join(", "))?;
    }
    Ok(())
}

/// A `submit` journal's parts, one line each (nothing for a `run`).
fn print_parts(parts: &[Part]) -> std::io::Result<()> {
    if parts.is_empty() {
        return Ok(());
    }
    out!("parts     {} (batches on the server)", parts.len())?;
    for p in parts {
        let counts = p.counts.map_or(String::new(), |c| {
            format!(" {}/{} done, {} failed", c.completed, c.total, c.failed)
        });
        // A submit --config part: the target whose Batch API holds it.
        let model = match (&p.target, &p.model) {
            (Some(t), Some(m)) => format!("{t} ({m})"),
            (Some(t), None) => t.clone(),
            (None, m) => m.clone().unwrap_or_else(|| "-".into()),
        };
        out!(
            "  part {:<4} {:<10} {:<12} {:>7} requests  {model}  {}{counts}",
            p.part,
            p.state.as_str(),
            p.batch_status.as_ref().map_or("-", |s| s.as_str()),
            p.requests,
            p.batch_id.as_deref().unwrap_or("(no batch yet)"),
        )?;
    }
    Ok(())
}

fn print_last_errors(s: &JobStatus) -> std::io::Result<()> {
    if s.last_errors.is_empty() {
        return Ok(());
    }
    out!("last errors")?;
    for e in &s.last_errors {
        out!(
            "  line {} ({}): {}",
            e.line_no,
            e.custom_id.as_deref().unwrap_or("no custom_id"),
            e.message
        )?;
    }
    Ok(())
}
