use std::path::{Path, PathBuf};

/// What can go wrong with a journal. Messages say what to do about it, in
/// the journal's words: the CLI adds which of its flags does that.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The journal file could not be opened or created.
    #[error("cannot open the journal {}: {source}; check the path and that its directory is writable", path.display())]
    Open {
        /// The journal path.
        path: PathBuf,
        /// What SQLite or the OS said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another process holds the journal.
    #[error("the journal {} is in use by another batchling process; wait for it to finish or stop it", path.display())]
    Locked {
        /// The journal path.
        path: PathBuf,
    },
    /// The file is not a batchling journal (or is damaged).
    #[error("{} is not a usable batchling journal ({reason}); move it aside, or give another journal", path.display())]
    NotAJournal {
        /// The journal path.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },
    /// A newer batchling wrote this journal.
    #[error("the journal {} has schema version {found}, newer than this batchling understands ({supported}); upgrade batchling", path.display())]
    SchemaTooNew {
        /// The journal path.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The input file is not the one the journal was started with.
    #[error("{input} has changed since the journal {} was started ({what}); start the job over, or use another journal", journal.display())]
    InputChanged {
        /// The input's name.
        input: String,
        /// The journal path.
        journal: PathBuf,
        /// What differs.
        what: String,
    },
    /// The journal has a run that this input cannot be checked against
    /// (standard input on either side).
    #[error("the journal {} cannot be resumed from {input}: {reason}; start the job over, or use another journal", journal.display())]
    CannotResume {
        /// The input's name.
        input: String,
        /// The journal path.
        journal: PathBuf,
        /// Why.
        reason: String,
    },
    /// A write failed after opening (disk full, I/O error).
    #[error("cannot write {}: {source}; free disk space (or raise the file-size limit), then run the same command again: everything committed so far is kept", path.display())]
    Write {
        /// The journal path.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A read failed after opening (an I/O error, a damaged page, a value
    /// this batchling does not know).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The journal (or cache) path.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A file that will be written cannot be, found before any work is
    /// done for it ([`check_destination`](crate::check_destination)).
    #[error("cannot write {}: {source}", path.display())]
    Destination {
        /// The file.
        path: PathBuf,
        /// Why not.
        source: std::io::Error,
    },
    /// Writing an exported file failed.
    #[error("cannot write {}: {source}", path.display())]
    Export {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A part of a submit job was asked to move from a state it is not in
    /// (a bug, or two processes on one journal).
    #[error(
        "part {part} of the journal cannot become {to} from {from}; this is a bug in batchling, please report it"
    )]
    PartTransition {
        /// The part number.
        part: u64,
        /// The state it is in.
        from: String,
        /// The state asked for.
        to: &'static str,
    },
    /// A part is in a state this batchling does not know (a newer one
    /// wrote the journal, or it is damaged).
    #[error(
        "part {part} of the journal {} is in state {value:?}, which this batchling does not know; upgrade batchling, or start over with a new journal",
        path.display()
    )]
    UnknownPartState {
        /// The journal path.
        path: PathBuf,
        /// The part number.
        part: u64,
        /// The state found.
        value: String,
    },
}

impl StoreError {
    /// What a failed write to the database at `path` becomes.
    pub(crate) fn writing(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
        move |source| StoreError::Write {
            path: path.to_owned(),
            source,
        }
    }

    /// What a failed read of the database at `path` becomes.
    pub(crate) fn reading(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
        move |source| StoreError::Read {
            path: path.to_owned(),
            source,
        }
    }
}
