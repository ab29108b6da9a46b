//! `[access_log]`: where the one line per call goes, in which format, and
//! which share of successful calls is written.

use crate::config::{file, ConfigError, Validator};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Json,
    /// One human-readable line, for development.
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    pub format: Format,
    /// A file appended to; `None`: standard output.
    pub path: Option<PathBuf>,
    /// The share of successful calls logged (failed ones always are).
    pub sample: f64,
}

impl Validator<'_> {
    pub(crate) fn access_log(
        &self,
        a: &file::AccessLogFile,
    ) -> Result<AccessLogConfig, ConfigError> {
        let format = match a.format.as_deref() {
            None | Some("json") => Format::Json,
            Some("text") => Format::Text,
            Some(other) => {
                return Err(self.err(
                    "access_log.format",
                    format!("{other:?} is not a format: \"json\" or \"text\""),
                ))
            }
        };
        let sample = a.sample.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sample) {
            return Err(self.err(
                "access_log.sample",
                format!("{sample} is not a share of calls between 0.0 and 1.0"),
            ));
        }
        let path = match a.path.as_deref() {
            None | Some("-") | Some("stdout") => None,
            Some("") => {
                return Err(self.err(
                    "access_log.path",
                    "is empty; leave it out for standard output",
                ))
            }
            Some(p) => {
                let path = self.output_path(p);
                writable(&path).map_err(|reason| self.err("access_log.path", reason))?;
                Some(path)
            }
        };
        Ok(AccessLogConfig {
            format,
            path,
            sample,
        })
    }
}

#[cfg(unix)]
fn is_pipe_or_socket(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_fifo() || meta.file_type().is_socket()
}

#[cfg(not(unix))]
fn is_pipe_or_socket(_: &std::fs::Metadata) -> bool {
    false
}

/// What `serve` will need of the log's path, checked when the config is
/// (so `portico check` refuses what `serve` would): a regular file that
/// opens for appending, or a folder that exists to make it in (not
/// read-only by its mode bits; finer access rules are seen when `serve`
/// opens it). Creates nothing.
fn writable(path: &std::path::Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(format!("{} is a folder, not a file", path.display())),
        // Only a regular file is opened to try it: opening a named pipe
        // would block without a reader, or end a reader's input.
        Ok(meta) if meta.is_file() => std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| format!("cannot open {} for appending: {e}", path.display())),
        Ok(meta) if is_pipe_or_socket(&meta) => Err(format!(
            "{} is a named pipe or socket, which would hold the gateway until a reader opens it (and again when the reader goes): log to standard output (path = \"-\") and pipe that instead",
            path.display()
        )),
        // A character device (`/dev/null`, a terminal) takes writes as they come.
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let folder = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => std::path::Path::new("."),
            };
            match std::fs::metadata(folder) {
                Ok(meta) if meta.is_dir() && meta.permissions().readonly() => Err(format!(
                    "cannot create {}: its folder {} is read-only",
                    path.display(),
                    folder.display()
                )),
                Ok(meta) if meta.is_dir() => Ok(()),
                Ok(_) => Err(format!("{} is not a folder", folder.display())),
                Err(e) => Err(format!(
                    "cannot create {}: its folder {}: {e}",
                    path.display(),
                    folder.display()
                )),
            }
        }
        Err(e) => Err(format!("cannot open {}: {e}", path.display())),
    }
}
