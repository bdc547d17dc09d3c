//! The first steps of a submit: open (or resume) the journal, then plan
//! what is pending into parts, in one transaction.

use std::collections::HashSet;

use batchling_core::SeqSet;
use batchling_core::clock::unix_now;
use batchling_store::{FinalState, InputIdentity, Journal, Record, StoreError, check_destination};

use super::job::{SubmitError, SubmitJob};
use super::{line_id, plan};
use crate::report::Reporter;

/// A journal ready for its parts to be launched.
pub(crate) struct Opened {
    pub(crate) journal: Journal,
    /// When the journal was started (unix seconds): the deadline counts
    /// from it, and batches older than it are not this job's.
    pub(crate) started_unix: u64,
    /// The deadline leaves no time for a batch: nothing new was planned.
    pub(crate) no_time: bool,
}

/// The journal key of the Batch API's settings ([`BatchApi::settings`]).
///
/// [`BatchApi::settings`]: batchling_providers::BatchApi::settings
pub const API_SETTINGS: &str = "api_settings";

/// Open the journal (checking the input and the files to write first),
/// check that the Batch API's `settings` are the ones it was started with,
/// and plan what is pending into parts.
pub(crate) fn prepare(
    job: &SubmitJob,
    (place, limits, settings): (plan::Place<'_>, plan::LimitsOf<'_>, Option<&str>),
    reporter: &dyn Reporter,
) -> Result<Opened, SubmitError> {
    let (mut journal, started_unix) = open_journal(job)?;
    keep_settings(&journal, settings)?;
    let no_time = job.deadline.is_some_and(|d| {
        started_unix + d.as_secs().saturating_sub(job.deadline_margin.as_secs()) <= unix_now()
    });
    plan_parts(job, &mut journal, (no_time, place, limits), reporter)?;
    Ok(Opened {
        journal,
        started_unix,
        no_time,
    })
}

fn input_error(job: &SubmitJob) -> impl Fn(std::io::Error) -> SubmitError + '_ {
    |source| SubmitError::Input {
        path: job.input.clone(),
        source,
    }
}

fn open_journal(job: &SubmitJob) -> Result<(Journal, u64), SubmitError> {
    std::fs::File::open(&job.input).map_err(input_error(job))?;
    let identity = InputIdentity::of_file(&job.input).map_err(input_error(job))?;
    // Checked before anything is uploaded, not when the results are in.
    check_destination(&job.output)?;
    check_destination(&job.errors)?;
    let mut journal = Journal::open(&job.state, job.durable)?;
    journal.begin(
        &job.input.display().to_string(),
        Some(&identity),
        &settings_json(job),
        unix_now(),
        job.restart,
    )?;
    // Kept apart from the `settings` meta, which an online run overwrites:
    // `batchling cancel` finds the files here.
    journal.set_submit_value("submit", &settings_json(job))?;
    if let Some(server) = &job.server {
        journal.set_server(server)?;
    }
    let started = journal.meta()?.created_at.unwrap_or_else(unix_now);
    Ok((journal, started))
}

/// Record the Batch API's settings in a new journal; refuse other ones in
/// a journal that has them (one without: an older batchling's, whose
/// parts were made the default way, takes them).
fn keep_settings(journal: &Journal, settings: Option<&str>) -> Result<(), SubmitError> {
    let Some(given) = settings else {
        return Ok(());
    };
    match journal.submit_value(API_SETTINGS)? {
        Some(recorded) if recorded != given => Err(SubmitError::SettingsChanged {
            recorded,
            given: given.to_owned(),
        }),
        Some(_) => Ok(()),
        None => Ok(journal.set_submit_value(API_SETTINGS, given)?),
    }
}

fn settings_json(job: &SubmitJob) -> String {
    serde_json::json!({
        "command": "submit",
        "output": job.output,
        "errors": job.errors,
        "max_requests_per_batch": job.limits.max_requests,
        "max_batch_bytes": job.limits.max_bytes,
        "deadline_s": job.deadline.map(|d| d.as_secs()),
    })
    .to_string()
}

/// Validate the whole input, journal its bad lines (or refuse it), and add
/// parts for the requests [`Selection`] picks.
fn plan_parts(
    job: &SubmitJob,
    journal: &mut Journal,
    (no_time, place, limits): (bool, plan::Place<'_>, plan::LimitsOf<'_>),
    reporter: &dyn Reporter,
) -> Result<(), SubmitError> {
    let select = Selection::read(journal, job.resubmit, no_time)?;
    let round = journal
        .parts()?
        .iter()
        .map(|p| p.round + 1)
        .max()
        .unwrap_or(0);
    let plan::Planned {
        scan,
        mut plans,
        too_large,
        refused,
    } = plan::plan(&job.input, limits, round, |seq| select.wants(seq), place)
        .map_err(input_error(job))?;
    journal.set_total(scan.total)?;
    let new_problems: Vec<_> = scan
        .problems
        .iter()
        .filter(|(seq, _)| !select.finished.contains(*seq))
        .collect();
    if !new_problems.is_empty() && !job.skip_invalid {
        return Err(SubmitError::BadLines {
            path: job.input.clone(),
            problems: new_problems.iter().map(|(_, e)| e.to_string()).collect(),
        });
    }
    if let Some(t) = too_large.first() {
        return Err(SubmitError::LineTooLarge {
            path: job.input.clone(),
            line_no: t.line_no,
            bytes: t.bytes,
            limit: t.limit,
        });
    }
    if !new_problems.is_empty() {
        let records: Vec<Record> = new_problems
            .iter()
            .map(|(seq, e)| Record::invalid(*seq, e, &line_id("invalid", *seq)))
            .collect();
        journal.record_invalid(&records)?;
        reporter.notice(&format!(
            "{} bad line(s) go to the error file (invalid lines are skipped)",
            records.len()
        ));
    }
    record_refused(journal, &refused, reporter)?;
    if plans.is_empty() {
        return Ok(());
    }
    plan::hash_plans(&job.input, &mut plans).map_err(input_error(job))?;
    let resubmitting = plans
        .iter()
        .flat_map(|p| &p.requests)
        .filter(|r| select.retry.contains(&r.seq))
        .count();
    let numbers = journal.add_parts(&plans, job.resubmit)?;
    reporter.notice(&format!(
        "planned {} part(s) ({}–{}) for {} request(s){}",
        numbers.len(),
        numbers.first().unwrap_or(&0),
        numbers.last().unwrap_or(&0),
        plans.iter().map(|p| p.requests.len()).sum::<usize>(),
        if resubmitting > 0 {
            format!(", {resubmitting} of them failed before (resubmitted)")
        } else {
            String::new()
        }
    ));
    Ok(())
}

/// Journal the lines the API refused: each fails alone, in the error file.
fn record_refused(
    journal: &mut Journal,
    refused: &[plan::Refused],
    reporter: &dyn Reporter,
) -> Result<(), SubmitError> {
    if refused.is_empty() {
        return Ok(());
    }
    let records: Vec<Record> = refused
        .iter()
        .map(|r| {
            Record::failure(
                r.seq,
                r.line_no,
                Some(r.custom_id.clone()),
                FinalState::Invalid,
                &line_id("invalid", r.seq),
                r.why.code,
                r.why.message.clone(),
            )
        })
        .collect();
    journal.record_invalid(&records)?;
    reporter.notice(&format!(
        "{} line(s) this Batch API cannot take go to the error file (first: {})",
        records.len(),
        refused[0].why.message
    ));
    Ok(())
}

/// Which requests a planning round puts into new parts.
#[derive(Debug)]
pub(crate) struct Selection {
    /// Requests with a final state.
    finished: SeqSet,
    /// Requests in a part not yet collected: a batch has them.
    live: HashSet<u64>,
    /// Requests that were ever in a part.
    ever: HashSet<u64>,
    /// Failed requests to send again (only with `resubmit`).
    retry: HashSet<u64>,
    resubmit: bool,
    /// The deadline leaves no time for a batch.
    no_time: bool,
}

impl Selection {
    fn read(journal: &Journal, resubmit: bool, no_time: bool) -> Result<Selection, StoreError> {
        Ok(Selection {
            finished: journal.finished_seqs()?,
            live: plan::seq_set(journal.seqs_in_live_parts()?),
            ever: plan::seq_set(journal.seqs_in_any_part()?),
            retry: if resubmit {
                plan::seq_set(journal.failed_seqs()?)
            } else {
                HashSet::new()
            },
            resubmit,
            no_time,
        })
    }

    /// Whether request `seq` goes into a new part. New work is what no
    /// batch ever had. A request a batch had goes to a batch again only on
    /// resubmit: a failed one, or one with no final state (its failure was
    /// forgotten by an online run that was then interrupted). Nothing a
    /// live batch has, and nothing at all when there is no time.
    pub(crate) fn wants(&self, seq: u64) -> bool {
        let finished = self.finished.contains(seq);
        let ever = self.ever.contains(&seq);
        let again = self.resubmit && ever && !finished;
        !self.no_time
            && !self.live.contains(&seq)
            && ((!finished && !ever) || self.retry.contains(&seq) || again)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests 0..6: 0 done; 1 failed in a collected part; 2 in a live
    /// part; 3 never in a part; 4 in a collected part with no final state
    /// (forgotten by an interrupted online run); 5 done in a part.
    fn selection(resubmit: bool, no_time: bool) -> Selection {
        let mut finished = SeqSet::new();
        for seq in [0, 1, 5] {
            finished.insert(seq);
        }
        Selection {
            finished,
            live: HashSet::from([2]),
            ever: HashSet::from([1, 2, 4, 5]),
            retry: if resubmit {
                HashSet::from([1])
            } else {
                HashSet::new()
            },
            resubmit,
            no_time,
        }
    }

    fn wanted(s: &Selection) -> Vec<u64> {
        (0..6).filter(|&seq| s.wants(seq)).collect()
    }

    #[test]
    fn new_work_is_what_no_batch_had() {
        assert_eq!(wanted(&selection(false, false)), [3]);
    }

    #[test]
    fn resubmit_sends_failed_and_forgotten_requests_again() {
        assert_eq!(wanted(&selection(true, false)), [1, 3, 4]);
    }

    #[test]
    fn no_time_plans_nothing() {
        assert!(wanted(&selection(true, true)).is_empty());
        assert!(wanted(&selection(false, true)).is_empty());
    }
}
