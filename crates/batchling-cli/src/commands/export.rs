//! `batchling export STATE -o OUTPUT`: write the output files from a journal.

use std::process::ExitCode;

use anyhow::{Result, bail};
use batchling_store::Journal;

use crate::args::ExportArgs;
use crate::settings::order;

pub(crate) fn export(a: &ExportArgs) -> Result<ExitCode> {
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
    let errors = crate::settings::errors_path(&a.output, a.errors.clone())?;
    // Both checked before either is written.
    batchling_store::check_destination(&a.output)?;
    batchling_store::check_destination(&errors)?;
    let journal = Journal::open_read_only(&a.state)?;
    let (out, err) = journal.export(&a.output, &errors, order(a.order))?;
    eprintln!(
        "wrote {out} lines to {} and {err} lines to {}",
        a.output.display(),
        errors.display()
    );
    Ok(ExitCode::SUCCESS)
}
