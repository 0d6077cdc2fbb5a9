//! The file source: a log file, or standard input when the path is `-`.
//!
//! For now this reads to end of file; following a growing file lives here too, behind the same open.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Why a log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open log {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("log {path} is a directory")]
    Directory { path: PathBuf },
    #[error("reading {path} failed after {bytes} bytes")]
    Read {
        path: PathBuf,
        bytes: u64,
        #[source]
        source: io::Error,
    },
}

/// The path that means standard input.
pub const STDIN: &str = "-";

/// Opens `path` for reading, or standard input for `-`.
pub fn open(path: &Path) -> Result<Box<dyn Read>, SourceError> {
    if path.as_os_str() == STDIN {
        return Ok(Box::new(io::stdin().lock()));
    }
    let file = File::open(path).map_err(|source| SourceError::Open { path: path.to_owned(), source })?;
    let is_dir = file.metadata().map(|m| m.is_dir()).unwrap_or(false);
    if is_dir {
        return Err(SourceError::Directory { path: path.to_owned() });
    }
    Ok(Box::new(file))
}
