//! A worker's local journal in store mode (its outbox), and the store URL
//! as it may be printed.
//!
//! Each worker on a machine takes the first free slot: the journal
//! `<state>.job<ID>.w<SLOT>`, whose lock file `<that>.lock` it holds
//! exclusively for the run. Several workers started with one command get
//! separate outboxes, and a worker started after one died takes over its
//! outbox (the engine hands its unflushed answers to the store first).

use std::ffi::OsString;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

use batchling_queue::JobId;

/// More slots than workers anyone runs on one machine: past them, the
/// directory is probably not one where locks work.
const MAX_SLOTS: u32 = 4096;

/// A worker's outbox journal, locked while this is alive.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// The journal path.
    pub(crate) path: PathBuf,
    /// Holds the lock (released when the file is closed).
    _lock: File,
}

/// `path` with `suffix` appended to its file name.
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = path.file_name().map(|n| n.to_owned()).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// Take the first free outbox slot of `job` beside `state`.
pub(crate) fn take_slot(state: &Path, job: JobId) -> io::Result<Outbox> {
    for slot in 0..MAX_SLOTS {
        let path = suffixed(state, &format!(".job{job}.w{slot}"));
        let lock_path = suffixed(&path, ".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        match file.try_lock() {
            Ok(()) => return Ok(Outbox { path, _lock: file }),
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(e)) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot lock {}: {e}", lock_path.display()),
                ));
            }
        }
    }
    Err(io::Error::other(format!(
        "every one of {MAX_SLOTS} outbox slots beside {} is locked; name another place with --state",
        state.display()
    )))
}

/// The store URL without its password, for messages and the join command.
pub(crate) fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    format!("{scheme}://{user}@{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_on_one_machine_take_separate_slots_and_a_freed_one_is_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("out.jsonl.journal");
        let a = take_slot(&state, JobId(7)).unwrap();
        let b = take_slot(&state, JobId(7)).unwrap();
        assert_eq!(a.path, dir.path().join("out.jsonl.journal.job7.w0"));
        assert_eq!(b.path, dir.path().join("out.jsonl.journal.job7.w1"));
        drop(a);
        let c = take_slot(&state, JobId(7)).unwrap();
        assert_eq!(c.path, dir.path().join("out.jsonl.journal.job7.w0"));
        let other = take_slot(&state, JobId(8)).unwrap();
        assert_eq!(other.path, dir.path().join("out.jsonl.journal.job8.w0"));
    }

    #[test]
    fn the_printed_url_keeps_everything_but_the_password() {
        let pw = ["s3", "cret"].concat();
        let url = format!("postgres://bob:{pw}@db.example:5433/jobs?schema=x");
        assert_eq!(
            without_password(&url),
            "postgres://bob@db.example:5433/jobs?schema=x"
        );
        let plain = "postgres://postgres@127.0.0.1/test";
        assert_eq!(without_password(plain), plain);
        assert_eq!(
            without_password("postgres://127.0.0.1/test"),
            "postgres://127.0.0.1/test"
        );
    }
}
