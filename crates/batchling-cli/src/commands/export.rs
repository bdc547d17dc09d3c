//! `batchling export STATE -o OUTPUT`: write the output files from a journal.

use std::process::ExitCode;

use anyhow::Result;
use batchling_store::{Journal, LineExtras};

use crate::settings::ExportSettings;

pub(crate) fn export(s: &ExportSettings) -> Result<ExitCode> {
    // Both checked before either is written.
    batchling_store::check_destination(&s.output)?;
    batchling_store::check_destination(&s.errors)?;
    let journal = Journal::open_read_only(&s.state)?;
    let extras = if s.who_answered {
        LineExtras::WhoAnswered
    } else {
        LineExtras::None
    };
    let (out, err) = journal.export_with(&s.output, &s.errors, s.order, extras)?;
    eprintln!(
        "wrote {out} lines to {} and {err} lines to {}",
        s.output.display(),
        s.errors.display()
    );
    Ok(ExitCode::SUCCESS)
}
