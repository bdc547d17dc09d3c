//! Ending what a stopped run left unfinished: every request without a final
//! state gets an error line (`batch_cancelled`, `batch_expired`), so the
//! output and error files hold exactly one line per input request.

use batchling_store::{FinalState, InputIdentity, Journal, Record};

use crate::reader::{Input, Validator, for_each_line};
use crate::{EngineError, Job};

/// Records per transaction.
const GROUP: usize = 4096;

/// Give every request of `job` that has no final state in its journal a
/// failure line with `code` and `message`, then export the output and error
/// files. Returns how many requests were closed this way. Blocking: run it
/// on a blocking thread, after the job's run has returned.
pub fn close_unfinished(job: &Job, code: &str, message: &str) -> Result<u64, EngineError> {
    let Input::File(path) = &job.input else {
        return Err(EngineError::NotAFile);
    };
    let input_err = |source| EngineError::Input {
        path: path.display().to_string(),
        source,
    };
    let identity = InputIdentity::of_file(path).map_err(input_err)?;
    let mut journal = Journal::open(&job.state, job.durable)?;
    let now_unix = batchling_core::clock::unix_now();
    journal.begin(
        &path.display().to_string(),
        Some(&identity),
        &job.settings_json(),
        now_unix,
        false,
    )?;
    let finished = journal.finished_seqs()?;
    let id_prefix = format!("{:016x}", rand::random::<u64>());
    let mut validator = Validator::default();
    let (mut seq, mut closed) = (0u64, 0u64);
    let mut group = Vec::with_capacity(GROUP);
    let mut failed: Result<(), EngineError> = Ok(());
    let reader = Input::File(path.clone()).open().map_err(input_err)?;
    for_each_line(reader, |line_no, line, _| {
        let this = seq;
        seq += 1;
        let checked = line.and_then(|l| validator.validate(line_no, l));
        if finished.contains(this) {
            return true;
        }
        let line_id = format!("batch_req_{id_prefix}{closed:08x}");
        group.push(match checked {
            Ok(req) => Record::failure(
                this,
                line_no,
                Some(req.custom_id),
                FinalState::Failed,
                &line_id,
                code,
                message.to_owned(),
            ),
            Err(e) => Record::invalid(this, &e, &line_id),
        });
        closed += 1;
        if group.len() >= GROUP {
            if let Err(e) = journal.commit(&group) {
                failed = Err(e.into());
                return false;
            }
            group.clear();
        }
        true
    })
    .map_err(input_err)?;
    failed?;
    if !group.is_empty() {
        journal.commit(&group)?;
    }
    journal.set_total(seq)?;
    journal.export(&job.output, &job.errors, job.order)?;
    Ok(closed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use batchling_core::Usage;
    use std::io::Write;

    #[test]
    fn closes_only_what_is_unfinished() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        let mut f = std::fs::File::create(&input).unwrap();
        for id in ["a", "b", "c"] {
            writeln!(
                f,
                r#"{{"custom_id":"{id}","method":"POST","url":"/v1/embeddings","body":{{"input":"x"}}}}"#
            )
            .unwrap();
        }
        drop(f);
        let job = Job::new(Input::File(input.clone()), dir.path().join("out.jsonl"));
        // "b" finished in an earlier run.
        let mut j = Journal::open(&job.state, false).unwrap();
        let id = InputIdentity::of_file(&input).unwrap();
        j.begin("in", Some(&id), "{}", 0, false).unwrap();
        j.commit(&[Record {
            seq: 1,
            line_no: 2,
            custom_id: Some("b".into()),
            state: FinalState::Done,
            attempts: 1,
            status_code: Some(200),
            error_code: None,
            error_message: None,
            usage: Usage::default(),
            latency_ms: None,
            cost_usd: None,
            line: b"{\"custom_id\":\"b\"}\n".to_vec(),
            route: None,
        }])
        .unwrap();
        drop(j);

        let n = close_unfinished(&job, "batch_cancelled", "cancelled").unwrap();
        assert_eq!(n, 2);
        let out = std::fs::read_to_string(&job.output).unwrap();
        assert_eq!(out, "{\"custom_id\":\"b\"}\n");
        let errors = std::fs::read_to_string(&job.errors).unwrap();
        let ids: Vec<serde_json::Value> = errors
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0]["custom_id"], "a");
        assert_eq!(ids[1]["custom_id"], "c");
        assert_eq!(ids[1]["error"]["code"], "batch_cancelled");
        assert!(ids[1]["response"].is_null());
        // A second close finds nothing left.
        assert_eq!(close_unfinished(&job, "batch_cancelled", "x").unwrap(), 0);
    }
}
