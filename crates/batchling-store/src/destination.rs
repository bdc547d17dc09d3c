//! Checking where a file will be written before any work is done for it:
//! an answer paid for must not be refused at the end for a missing
//! directory.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// The temporary file an export writes beside `path` before renaming it
/// into place (also the job store's export, `run --store`, names its
/// files so).
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".batchling-tmp");
    path.with_file_name(name)
}

/// Check that a file can be written at `path` the way an export writes it
/// (a temporary file beside it, renamed into place): `path` is not a
/// directory, its directory exists, and a file can be created there.
pub fn check_destination(path: &Path) -> Result<(), StoreError> {
    let refuse = |kind, reason: String| StoreError::Destination {
        path: path.to_owned(),
        source: io::Error::new(kind, reason),
    };
    if path.is_dir() {
        return Err(refuse(
            io::ErrorKind::IsADirectory,
            "it is a directory; name a file".into(),
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(refuse(
            io::ErrorKind::NotFound,
            format!(
                "the directory {} does not exist; create it first",
                dir.display()
            ),
        ));
    }
    let tmp = temp_path(path);
    File::create(&tmp).map_err(|source| StoreError::Destination {
        path: path.to_owned(),
        source,
    })?;
    // Best effort: the probe is empty, and the export would replace it.
    let _ = std::fs::remove_file(&tmp);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_directories_and_missing_parents_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_destination(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = check_destination(&dir.path().join("no/such/out.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        check_destination(&dir.path().join("out.jsonl")).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
