//! `batchling status STATE`: what a journal says about its job.

use std::process::ExitCode;

use anyhow::{Result, bail};
use batchling_store::Journal;

use crate::args::StatusArgs;

pub(crate) fn status(a: &StatusArgs) -> Result<ExitCode> {
    if !a.state.exists() {
        bail!(
            "{} does not exist; give the journal of a run (OUTPUT.journal by default)",
            a.state.display()
        );
    }
    if a.state.is_dir() {
        bail!(
            "{} is a directory; give the journal file of a run (OUTPUT.journal by default)",
            a.state.display()
        );
    }
    let journal = Journal::open_read_only(&a.state)?;
    let s = journal.status()?;
    let parts = journal.parts()?;
    if a.json {
        let mut v = serde_json::to_value(&s)?;
        if !parts.is_empty() {
            v["parts"] = serde_json::to_value(&parts)?;
        }
        out!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let total = s
        .meta
        .total
        .map_or("unknown (input not fully read yet)".into(), |t| {
            t.to_string()
        });
    out!("journal   {}", a.state.display())?;
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
    )?;
    if !parts.is_empty() {
        out!("parts     {} (batches on the server)", parts.len())?;
        for p in &parts {
            let counts = p.counts.map_or(String::new(), |c| {
                format!(" {}/{} done, {} failed", c.completed, c.total, c.failed)
            });
            out!(
                "  part {:<4} {:<10} {:<12} {:>7} requests  {}  {}{counts}",
                p.part,
                p.state.as_str(),
                p.batch_status.as_ref().map_or("-", |s| s.as_str()),
                p.requests,
                p.model.as_deref().unwrap_or("-"),
                p.batch_id.as_deref().unwrap_or("(no batch yet)"),
            )?;
        }
    }
    if !s.last_errors.is_empty() {
        out!("last errors")?;
        for (line, id, msg) in &s.last_errors {
            out!(
                "  line {line} ({}): {msg}",
                id.as_deref().unwrap_or("no custom_id")
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
